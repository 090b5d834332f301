"""``pulse quality``: FD-dlib, precision and recall of a model's samples (or a folder of images) against real crops."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Optional

from ..metrics import fd_dlib


def measure_quality(real_dir, *, model=None, images_dir=None, resolution: Optional[int] = None, n: int = 5000,
                    real_n: Optional[int] = None, seed: int = 0, bootstrap: int = 200, out: Optional[Path] = None,
                    log: Callable[[str], None] = print,
                    progress: Optional[Callable[[str, int, int], None]] = None) -> dict:
    """Compare ``model``'s n samples (or up to n images of ``images_dir``) with the crops of ``real_dir``.

    Both sets are resized to the model's resolution (or ``resolution``) and embedded the same way.
    Writes ``out`` (JSON) if given and returns the result as a dict.
    """
    if (model is None) == (images_dir is None):
        raise ValueError("give either a model or a folder of images to compare with the real crops")
    res = model.resolution if model is not None else int(resolution or 64)
    t0 = time.perf_counter()
    real = fd_dlib.load_crops(real_dir, res, real_n, seed)
    if model is not None:
        fake, what = fd_dlib.sample_faces(model, n, seed), f"{n} samples of {model.source}"
    else:
        fake = fd_dlib.load_crops(images_dir, res, n, seed + 1)
        what = f"{fake.shape[0]} images of {images_dir}"
    log(f"embedding {real.shape[0]} real crops of {real_dir} and {what} at {res} px")
    emb_real = fd_dlib.embed(real, progress=(lambda d, t: progress("real", d, t)) if progress else None)
    emb_fake = fd_dlib.embed(fake, progress=(lambda d, t: progress("generated", d, t)) if progress else None)
    rep = fd_dlib.compare(emb_real, emb_fake, bootstrap=bootstrap, seed=seed)
    result = {"real": str(real_dir), "generated": what, "resolution": res, "seed": seed, **rep.to_dict(),
              "seconds": round(time.perf_counter() - t0, 1)}
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
        os.replace(tmp, out)
    return result
