"""``pulse eval``: the paper's experiments on a folder of HR images.

* :mod:`.settings` -- :class:`EvalSettings` and the signature that keys resumable records;
* :mod:`.run` -- :func:`evaluate`, the searches and measurements;
* :mod:`.summary` -- success rates (overall and per group) and metric means;
* :mod:`.report` -- ``results.json``, ``report.md`` and figure grids;
* :mod:`.labels` -- group labels (UTKFace file names or a CSV).
"""

from .run import evaluate
from .settings import EvalSettings

__all__ = ["evaluate", "EvalSettings"]
