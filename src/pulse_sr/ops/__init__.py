"""Differentiable building blocks, each a plain function (with an ``nn.Module`` wrapper where useful).

* :mod:`.resample` -- the cubic kernel, PULSE's exact bicubic downscale, the LR
  size rule, and the bicubic and nearest upscales;
* :mod:`.color` -- MATLAB's luma and gray conversions;
* :mod:`.epilogue` -- StyleGAN v1's synthesis epilogue, with ``impl=`` choosing a
  reference, torch-op or C implementation;
* :mod:`.native` -- the generic builder for C kernels;
* :mod:`.degrade` -- the degradations of the paper's Sec. 5 (noise, motion blur).

A new operator goes in its own module here, with a reference implementation
and, if it has one, a fast path tested against it.
"""
