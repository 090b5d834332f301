"""The synthesis-layer epilogue of StyleGAN v1: noise, bias, leaky ReLU, instance norm, style.

One function, :func:`epilogue`, with the implementation chosen at the call by
``impl`` (the pattern of stylegan3's ``bias_act``):

* ``"ref"``: :func:`epilogue_reference`, the plain, readable version (autograd
  does the rest); the yardstick of the tests.
* ``"torch"``: ``_FusedEpilogue``, torch ops with a hand-written backward. At 512
  and 1024 px these element-wise passes, not the convolutions, dominated a PULSE
  step on CPU, and autograd's generic backward of ``var_mean`` and ``addcmul``
  makes several more full-size passes than needed.
* ``"c"``: ``_NativeEpilogue``, the C kernels of ``epilogue_kernels.c`` (two
  passes each way), built by :mod:`pulse_sr.ops.native`. Only for float32
  channels-last CPU tensors; asking for it elsewhere raises
  :class:`ImplUnavailableError`.
* ``"auto"``: ``"c"`` where it applies and builds, else ``"torch"``; the choice
  is logged at debug level.

:func:`default_impl` is ``"auto"``, or ``"torch"`` when ``PULSE_NO_NATIVE`` is set;
generators read it once, when they are built.

``tests/test_epilogue.py`` and ``tests/test_native.py`` check the implementations
against each other (values, gradients, ``gradcheck``).

Shapes: x (B, C, H, W); noise (B or 1, 1, H, W) or None; noise_strength (C,);
bias (C,) or None (already added by the conv); gamma, beta (B, C) with
gamma = style scale + 1.
"""

from __future__ import annotations

import ctypes
import logging
import os
from importlib import resources
from typing import Optional

import torch
import torch.nn.functional as F

from ..errors import ImplUnavailableError
from . import native

log = logging.getLogger(__name__)

IMPLS = ("auto", "ref", "torch", "c")

_P, _I = ctypes.c_void_p, ctypes.c_int64
KERNEL_NAME = "epilogue"
KERNEL_SOURCES = ("epilogue_kernels.c",)
KERNEL_SIGNATURES = {
    "epi_stats": [_P, _P, _I, _P, _P, _I, _I, _I, _I, _I, _P, _P],
    "epi_forward": [_P, _P, _I, _P, _P, _I, _I, _I, _I, _I, _P, _P, _P, _P],
    "epi_backward_sums": [_P, _P, _P, _I, _P, _P, _I, _I, _I, _I, _I, _P, _P, _P, _P],
    "epi_backward": [_P, _P, _P, _I, _P, _P, _I, _I, _I, _I, _I, _P, _P, _P, _P, _P, _P, _P, _P, _P],
}



def default_impl() -> str:
    """``"torch"`` when the environment variable ``PULSE_NO_NATIVE`` is set, else ``"auto"``."""
    return "torch" if os.environ.get("PULSE_NO_NATIVE") else "auto"


def kernels() -> Optional[ctypes.CDLL]:
    """The C kernels, built on first use; None if they cannot be built (see :func:`kernels_error`)."""
    return native.get_library(KERNEL_NAME, KERNEL_SOURCES, KERNEL_SIGNATURES, resources.files(__package__))


def kernels_error() -> Optional[str]:
    return native.build_error(KERNEL_NAME)


SLOPE = 0.2

# Channels whose mean exceeds this many standard deviations get their variance
# from torch.var_mean instead of E[x^2] - E[x]^2 (see channel_var_mean).
_CANCELLATION_RATIO = 10.0


def _any_wide(mean: torch.Tensor, var: torch.Tensor) -> bool:
    """Whether any channel's mean exceeds _CANCELLATION_RATIO standard deviations."""
    return bool((mean * mean > _CANCELLATION_RATIO ** 2 * var).any())


def channel_var_mean(u: torch.Tensor):
    """Biased variance and mean over (H, W), as ``torch.var_mean(u, (2, 3), keepdim=True, correction=0)``.

    For channels-last CPU tensors torch's var_mean is a strided reduction that
    ran 3-10x slower than memory bandwidth here (74 ms for 16x1024x1024). Viewed
    as (B, H, W*C), the sums over H are contiguous vector adds; the W partial
    sums are then added in float64. The variance comes from E[x^2] - E[x]^2,
    which loses digits when a channel's mean is much larger than its spread, so
    such tensors fall back to var_mean. Measured relative error in the variance
    stays below 1e-5 (var_mean: about 5e-8).
    """
    B, C, H, W = u.shape
    if (u.device.type != "cpu" or u.is_contiguous() or u.dtype != torch.float32
            or not u.is_contiguous(memory_format=torch.channels_last)):
        return torch.var_mean(u, dim=(2, 3), keepdim=True, correction=0)
    v = u.permute(0, 2, 3, 1).reshape(B, H, W * C)           # a view, no copy
    n = H * W
    mean = v.sum(1).view(B, W, C).double().sum(1) / n
    var = (v * v).sum(1).view(B, W, C).double().sum(1) / n - mean * mean
    if _any_wide(mean, var):
        return torch.var_mean(u, dim=(2, 3), keepdim=True, correction=0)
    return var.clamp_min(0).float().view(B, C, 1, 1), mean.float().view(B, C, 1, 1)


def epilogue_reference(x: torch.Tensor, noise: Optional[torch.Tensor], noise_strength: torch.Tensor,
                       bias: Optional[torch.Tensor], gamma: torch.Tensor, beta: torch.Tensor,
                       eps: float) -> torch.Tensor:
    if noise is not None:
        x = x + noise_strength.view(1, -1, 1, 1) * noise
    if bias is not None:
        x = x + bias.view(1, -1, 1, 1)
    x = F.leaky_relu(x, SLOPE)
    var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
    x = (x - mean) * torch.rsqrt(var + eps)
    return x * gamma[:, :, None, None] + beta[:, :, None, None]


class _FusedEpilogue(torch.autograd.Function):
    # Memory traffic, not arithmetic, is the cost at 512 and 1024 px, so the
    # passes over full-size tensors are few: the forward keeps the leaky ReLU
    # output u (not the normalised xhat = (u - mean) r) and writes
    # y = u * (r gamma) + (beta - mean r gamma) in one pass; the backward works
    # on u and g with per-channel coefficients. Where a channel's mean dwarfs its
    # spread those coefficients would cancel, so the backward forms xhat first.

    @staticmethod
    def forward(ctx, x, noise, noise_strength, bias, gamma, beta, eps):
        s = noise_strength.view(1, -1, 1, 1)
        if noise is not None:
            u = torch.addcmul(x, noise, s)
            if bias is not None:
                u.add_(bias.view(1, -1, 1, 1))
            F.leaky_relu_(u, SLOPE)
        elif bias is not None:
            u = F.leaky_relu_(x + bias.view(1, -1, 1, 1), SLOPE)
        else:
            u = F.leaky_relu(x, SLOPE)
        var, mean = channel_var_mean(u)
        r = torch.rsqrt(var + eps)
        g4, b4 = gamma[:, :, None, None], beta[:, :, None, None]
        # On a GPU, asking whether any channel is wide would stall the stream once
        # per layer; the xhat form costs one cheap extra pass there, so always use it.
        ctx.wide = u.device.type != "cpu" or _any_wide(mean, var)
        if ctx.wide:
            y = torch.addcmul(b4, (u - mean).mul_(r), g4)
        else:
            a = r * g4
            y = torch.addcmul(b4 - mean * a, u, a)
        ctx.save_for_backward(u, r, mean, gamma, noise, noise_strength)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, g):
        u, r, mean, gamma, noise, noise_strength = ctx.saved_tensors
        need_x, need_noise, need_s, need_b, need_gamma, need_beta, _ = ctx.needs_input_grad
        B, C, H, W = u.shape
        n = H * W
        g_sum = g.sum(dim=(2, 3))                               # d beta
        xhat = (u - mean).mul_(r) if ctx.wide else None
        if xhat is not None:
            gx_sum = (g * xhat).sum(dim=(2, 3))                 # d gamma = sum g xhat
        else:
            gx_sum = r.view(B, C) * ((g * u).sum(dim=(2, 3)) - mean.view(B, C) * g_sum)
        grad_x = grad_noise = grad_s = grad_b = None
        if need_x or need_noise or need_s or need_b:
            # Instance-norm backward on d xhat = g gamma:
            #   r gamma (g - mean(g) - xhat mean(g xhat)), then the leaky ReLU slope.
            a = r * gamma[:, :, None, None]
            k = (gx_sum / n)[:, :, None, None]
            if xhat is not None:
                t = torch.addcmul(g, xhat, -k).sub_((g_sum / n)[:, :, None, None]).mul_(a)
            else:
                t = torch.addcmul(a * (mean * r * k - (g_sum / n)[:, :, None, None]), u, -a * r * k)
                t.addcmul_(g, a)
            du = torch.ops.aten.leaky_relu_backward(t, u, SLOPE, True)
            grad_x = du if need_x else None
            if need_noise and noise is not None:
                grad_noise = (du * noise_strength.view(1, -1, 1, 1)).sum(dim=1, keepdim=True)
                if grad_noise.shape[0] != noise.shape[0]:
                    grad_noise = grad_noise.sum(0, keepdim=True)
            if need_s and noise is not None:
                grad_s = (du * noise).sum(dim=(0, 2, 3))
            if need_b and ctx.has_bias:
                grad_b = du.sum(dim=(0, 2, 3))
        return (grad_x, grad_noise, grad_s, grad_b, gx_sum if need_gamma else None,
                g_sum if need_beta else None, None)


class _NativeEpilogue(torch.autograd.Function):
    # The same function as _FusedEpilogue, in the C kernels of native.py: two
    # passes forward (statistics, then y) and two backward (sums, then du),
    # each recomputing u from x, and statistics accumulated in float64.

    @staticmethod
    def forward(ctx, x, noise, noise_strength, bias, gamma, beta, eps):
        lib = kernels()
        B, C, H, W = x.shape
        P, T = H * W, torch.get_num_threads()
        args, keep = _kernel_args(x, noise, noise_strength, bias)  # keep: what args point into
        sums = torch.zeros(2, T, B, C, dtype=torch.float64)
        native.parallel(T, P, lambda i, p0, p1: lib.epi_stats(
            *args, p0, p1, sums[0, i].data_ptr(), sums[1, i].data_ptr()))
        mean = sums[0].sum(0) / P
        var = (sums[1].sum(0) / P - mean * mean).clamp_min(0)
        r = torch.rsqrt(var + eps).float()
        mean = mean.float()
        a = (r * gamma.detach().float()).contiguous()
        be = beta.detach().float().contiguous()
        y = torch.empty_like(x)
        native.parallel(T, P, lambda i, p0, p1: lib.epi_forward(
            *args, p0, p1, mean.data_ptr(), a.data_ptr(), be.data_ptr(), y.data_ptr()))
        ctx.save_for_backward(x, noise, noise_strength, bias, gamma)
        ctx.stats = (mean, r)
        return y

    @staticmethod
    def backward(ctx, g):
        lib = kernels()
        x, noise, noise_strength, bias, gamma = ctx.saved_tensors
        mean, r = ctx.stats
        need_x, need_noise, need_s, need_b, need_gamma, need_beta, _ = ctx.needs_input_grad
        B, C, H, W = x.shape
        P, T = H * W, torch.get_num_threads()
        g = g.float().contiguous(memory_format=torch.channels_last)
        args, keep = _kernel_args(x, noise, noise_strength, bias)
        nz = keep[0]
        sums = torch.zeros(2, T, B, C, dtype=torch.float64)
        native.parallel(T, P, lambda i, p0, p1: lib.epi_backward_sums(
            g.data_ptr(), *args, p0, p1, mean.data_ptr(), r.data_ptr(), sums[0, i].data_ptr(),
            sums[1, i].data_ptr()))
        g_sum, gx_sum = sums[0].sum(0), sums[1].sum(0)          # d beta, d gamma
        grad_x = grad_noise = grad_s = grad_b = None
        if need_x or need_noise or need_s or need_b:
            a = (r * gamma.detach().float()).contiguous()
            k1, k2 = (g_sum / P).float(), (gx_sum / P).float()
            du = torch.empty_like(x)
            gnoise = torch.empty(B, P) if need_noise and nz is not None else None
            gs = torch.zeros(T, B, C, dtype=torch.float64) if need_s and nz is not None else None
            gb = torch.zeros(T, B, C, dtype=torch.float64) if need_b and bias is not None else None
            native.parallel(T, P, lambda i, p0, p1: lib.epi_backward(
                g.data_ptr(), *args, p0, p1, mean.data_ptr(), r.data_ptr(), a.data_ptr(), k1.data_ptr(),
                k2.data_ptr(), du.data_ptr(), gnoise.data_ptr() if gnoise is not None else None,
                gs[i].data_ptr() if gs is not None else None, gb[i].data_ptr() if gb is not None else None))
            grad_x = du if need_x else None
            if gnoise is not None:
                grad_noise = gnoise.view(B, 1, H, W)
                if nz.shape[0] != B:
                    grad_noise = grad_noise.sum(0, keepdim=True)
            grad_s = gs.sum((0, 1)).float() if gs is not None else None
            grad_b = gb.sum((0, 1)).float() if gb is not None else None
        return (grad_x, grad_noise, grad_s, grad_b, gx_sum.float() if need_gamma else None,
                g_sum.float() if need_beta else None, None)


def _kernel_args(x, noise, noise_strength, bias):
    """The leading C arguments (x, noise, noise batch, s, bias, B, P, C), and the tensors they point into."""
    B, C, H, W = x.shape
    s = noise_strength.detach().float().contiguous()
    b = bias.detach().float().contiguous() if bias is not None else x.new_zeros(C)
    nz = noise.detach().contiguous() if noise is not None else None
    args = (x.data_ptr(), nz.data_ptr() if nz is not None else None, nz.shape[0] if nz is not None else 1,
            s.data_ptr(), b.data_ptr(), B, H * W, C)
    return args, (nz, s, b)  # the caller keeps these alive while the kernels run


def _c_mismatch(x: torch.Tensor, noise: Optional[torch.Tensor], noise_strength: torch.Tensor,
                bias: Optional[torch.Tensor], gamma: torch.Tensor, beta: torch.Tensor) -> Optional[str]:
    """Why the C kernels cannot take these inputs, or None if they can.

    The kernels index raw memory, so every shape is checked here.
    """
    if x.device.type != "cpu":
        return f"the C kernels run on the CPU, not {x.device.type}"
    if x.dtype != torch.float32 or x.dim() != 4:
        return f"the C kernels take a float32 (B, C, H, W) tensor, not {x.dtype} with {x.dim()} dims"
    if not x.is_contiguous(memory_format=torch.channels_last):
        return "the C kernels take channels-last (NHWC) activations; this tensor is NCHW"
    B, C, H, W = x.shape
    others = [t for t in (noise, noise_strength, bias, gamma, beta) if t is not None]
    if not all(t.device.type == "cpu" and t.dtype == torch.float32 for t in others):
        return "the C kernels take float32 CPU tensors for every argument"
    if noise is not None and not (noise.dim() == 4 and noise.shape[0] in (1, B) and noise.shape[1:] == (1, H, W)):
        return f"noise of shape {tuple(noise.shape)} does not match x {tuple(x.shape)}"
    if noise_strength.shape != (C,) or (bias is not None and bias.shape != (C,)):
        return "noise_strength and bias must have shape (C,)"
    if gamma.shape != (B, C) or beta.shape != (B, C):
        return "gamma and beta must have shape (B, C) (no broadcasting)"
    return None


def native_applies(x: torch.Tensor, noise: Optional[torch.Tensor], noise_strength: torch.Tensor,
                   bias: Optional[torch.Tensor], gamma: torch.Tensor, beta: torch.Tensor) -> bool:
    """Whether the C kernels can take these inputs (built or not)."""
    return _c_mismatch(x, noise, noise_strength, bias, gamma, beta) is None


_last_auto: Optional[str] = None


def _log_auto(choice: str, why: str) -> None:
    # Said once per change of choice, not once per layer and step.
    global _last_auto
    if choice != _last_auto:
        _last_auto = choice
        log.debug("epilogue impl='auto' runs %r: %s", choice, why)


def epilogue(x: torch.Tensor, noise: Optional[torch.Tensor], noise_strength: torch.Tensor,
             bias: Optional[torch.Tensor], gamma: torch.Tensor, beta: torch.Tensor,
             eps: float, impl: str = "auto") -> torch.Tensor:
    """noise, bias, leaky ReLU, instance norm, style: (B, C, H, W) -> (B, C, H, W).

    ``impl`` is one of :data:`IMPLS`; see the module docstring. Half-precision inputs
    (under autocast) are computed in float32: instance-norm statistics in bf16 lose too much.
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        def up(t):
            return None if t is None else t.float()
        return epilogue(x.float(), up(noise), noise_strength.float(), up(bias), gamma.float(), beta.float(), eps,
                        impl).to(x.dtype)
    if impl == "ref":
        return epilogue_reference(x, noise, noise_strength, bias, gamma, beta, eps)
    if impl == "c":
        why = _c_mismatch(x, noise, noise_strength, bias, gamma, beta)
        if why is None and kernels() is None:
            why = f"they could not be built ({kernels_error()})"
        if why is not None:
            raise ImplUnavailableError(f"epilogue impl='c' cannot run: {why}; use impl='auto' or 'torch'")
        return _NativeEpilogue.apply(x, noise, noise_strength, bias, gamma, beta, eps)
    if impl == "auto":
        why = _c_mismatch(x, noise, noise_strength, bias, gamma, beta)
        if why is None and kernels() is not None:
            _log_auto("c", "float32 channels-last CPU inputs")
            return _NativeEpilogue.apply(x, noise, noise_strength, bias, gamma, beta, eps)
        _log_auto("torch", why or f"C kernels unavailable ({kernels_error()})")
    elif impl != "torch":
        raise ValueError(f"unknown epilogue impl {impl!r}; choose from {', '.join(IMPLS)}")
    return _FusedEpilogue.apply(x, noise, noise_strength, bias, gamma, beta, eps)
