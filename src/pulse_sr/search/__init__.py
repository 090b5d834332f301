"""The search core: PULSE as tensors in, tensors out.

* :mod:`.options` -- :class:`PulseOptions`, the settings and their defaults;
* :mod:`.prior` -- the Gaussian fit of the mapping network (supplement Sec. 2.4);
* :mod:`.sphere` -- projection onto the spheres of the latent search (Sec. 3.3);
* :mod:`.losses` -- the downscaling and geodesic cross losses;
* :mod:`.schedules` -- optimisers and learning-rate schedules;
* :mod:`.loop` -- :func:`upsample`, the search itself, and :class:`PulseResult`.

Nothing here reads or writes files, converts images, or changes process-wide
settings; importing it imports neither PIL nor tqdm nor click.
"""

from .loop import PulseResult, upsample
from .options import NOISE_TYPES, PulseOptions

__all__ = ["upsample", "PulseOptions", "PulseResult", "NOISE_TYPES"]
