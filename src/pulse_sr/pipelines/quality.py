"""``pulse quality``: FD-dlib, precision and recall of a model's samples (or a folder of images) against real crops."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Callable, Optional

from ..errors import SettingsError
from ..metrics import fd_dlib
from ..safe_paths import write_text

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class QualityJob:
    """What ``pulse quality`` measures: ``n`` samples of a model, or up to ``n`` images of ``images_dir``."""

    images_dir: Optional[Path] = None   # measure these images instead of a model's samples
    resolution: Optional[int] = None    # both sets are resized to this (default: the model's, or 64)
    n: int = 5000                       # generated samples, or images taken from images_dir
    real_n: Optional[int] = None        # a seeded sample of the real crops (default: all)
    seed: int = 0
    bootstrap: int = 200                # resamples for the 95 % interval of FD-dlib


@dataclasses.dataclass
class QualityResult:
    """The comparison, what was compared, and how long it took; :meth:`to_json` is the ``--out`` file."""

    real: str
    generated: str
    resolution: int
    seed: int
    report: fd_dlib.QualityReport
    seconds: float

    def to_json(self) -> dict:
        return {"real": self.real, "generated": self.generated, "resolution": self.resolution, "seed": self.seed,
                **self.report.to_dict(), "seconds": self.seconds}


def measure_quality(real_dir, job: QualityJob = QualityJob(), *, model=None, out: Optional[Path] = None,
                    progress: Optional[Callable[[str, int, int], None]] = None) -> QualityResult:
    """Compare ``model``'s samples (or ``job.images_dir``'s images) with the crops of ``real_dir``.

    Both sets are resized to the model's resolution (or ``job.resolution``) and embedded the same way.
    Writes ``out`` (JSON) if given.
    """
    if (model is None) == (job.images_dir is None):
        raise SettingsError("give either a model or a folder of images to compare with the real crops")
    res = model.resolution if model is not None else int(job.resolution or 64)
    t0 = time.perf_counter()
    real = fd_dlib.load_crops(real_dir, res, job.real_n, job.seed)
    if model is not None:
        fake, what = fd_dlib.sample_faces(model, job.n, job.seed), f"{job.n} samples of {model.source}"
    else:
        fake = fd_dlib.load_crops(job.images_dir, res, job.n, job.seed + 1)
        what = f"{fake.shape[0]} images of {job.images_dir}"
    log.info("embedding %d real crops of %s and %s at %d px", real.shape[0], real_dir, what, res)
    emb_real = fd_dlib.embed(real, progress=(lambda d, t: progress("real", d, t)) if progress else None)
    emb_fake = fd_dlib.embed(fake, progress=(lambda d, t: progress("generated", d, t)) if progress else None)
    rep = fd_dlib.compare(emb_real, emb_fake, bootstrap=job.bootstrap, seed=job.seed)
    result = QualityResult(str(real_dir), what, res, job.seed, rep, round(time.perf_counter() - t0, 1))
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text(out, json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n")
    return result
