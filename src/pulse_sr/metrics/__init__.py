"""Image-quality metrics used by `pulse eval`.

- :mod:`pulse_sr.metrics.niqe`: NIQE, no-reference, as MATLAB's NIQE release computes it;
- :mod:`pulse_sr.metrics.fidelity`: PSNR and SSIM against the HR image.

Nothing is re-exported here, so that ``pulse_sr.metrics.niqe`` stays the module.
"""
