"""Does the input determine who the person is? Identity spread of K results, calibrated on the model.

Every result of one input downscales to it within eps, yet the K faces can be different people.
Each result is embedded with dlib's face network (as ``pulse quality`` does). dlib's 0.6
same-person threshold does not carry over to 64-px crops framed without dlib's own alignment, so
the scale comes from the model itself: the pairwise distances of unrelated samples of the model
(``STRANGERS`` of them, fixed seeds, cached per generator).

* ``identity_spread``: the median pairwise embedding distance of the K results;
* ``identity_determinacy`` = 1 - spread / (median stranger distance): 0 means "no more alike than
  strangers", 1 means "one face";
* ``identity_determined``: the spread is below the ``DETERMINED_QUANTILE`` quantile of stranger
  distances, i.e. the K faces are more alike than 99 % of pairs of strangers.

Even a determined identity is the model's guess, never the person in the input.
"""

from __future__ import annotations

import threading
from typing import Dict, Optional, Tuple

import numpy as np
import torch

STRANGERS = 200
STRANGER_SEED = 2_000_003
DETERMINED_QUANTILE = 0.01
ALIKE_FROM = 0.25          # determinacy at which the sentence stops saying "as different as strangers"

_CACHE: Dict[Tuple[int, float, int], "Strangers"] = {}
_LOCK = threading.Lock()


class Strangers:
    """The model's own scale of identity distances: pairwise distances of unrelated samples."""

    def __init__(self, distances: np.ndarray):
        self.distances = np.sort(np.asarray(distances, dtype=np.float64))
        self.median = float(np.median(self.distances))
        self.close = float(np.quantile(self.distances, DETERMINED_QUANTILE))


def pairwise(emb: np.ndarray) -> np.ndarray:
    """The upper triangle of the Euclidean distance matrix of (N, d) embeddings."""
    d = np.sqrt(np.maximum(((emb[:, None, :] - emb[None, :, :]) ** 2).sum(-1), 0))
    return d[np.triu_indices(len(emb), 1)]


def strangers(model, n: Optional[int] = None) -> Strangers:
    """:class:`Strangers` of ``model`` (dlib needed), cached per generator for the life of the process."""
    from ..metrics.fd_dlib import embed, sample_faces

    n = n or STRANGERS
    G = model.generator
    key = (id(G), float(sum(p.detach().double().sum() for p in G.parameters())), n)
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    faces = sample_faces(model, n, seed=STRANGER_SEED)
    s = Strangers(pairwise(embed(faces)))
    with _LOCK:
        _CACHE[key] = s
    return s


def identity(images: torch.Tensor, model, scale: Optional[Strangers] = None) -> Optional[dict]:
    """The identity fields of K >= 2 results ((K, 3, H, W) in [0, 1]); None for K < 2.

    Raises FaceEmbedderUnavailable without dlib."""
    if images.shape[0] < 2:
        return None
    from ..metrics.fd_dlib import embed

    scale = scale or strangers(model)
    spread = float(np.median(pairwise(embed(images.detach().float().cpu()))))
    det = 1.0 - spread / scale.median if scale.median > 0 else 0.0
    return {"identity_spread": round(spread, 4), "identity_determinacy": round(det, 3),
            "identity_determined": bool(spread < scale.close)}


def sentence(fields: dict, k: int) -> str:
    """The plain sentence for a user, from :func:`identity`'s fields."""
    if fields.get("identity_determined"):
        return f"the {k} faces are alike; they are still not the person in the input"
    if fields.get("identity_determinacy", 0.0) < ALIKE_FROM:
        return f"the input does not determine identity: these {k} faces are as different as strangers"
    return f"the input only partly determines identity: these {k} faces are more alike than strangers, not one person"
