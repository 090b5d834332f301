"""The synthesis-layer epilogue: noise, bias, leaky ReLU, instance norm, style.

``epilogue_reference`` is the plain, readable version (autograd does the rest).
``epilogue_fused`` computes the same function with a hand-written backward:
at 512 and 1024 px these element-wise passes, not the convolutions, dominate a
PULSE step on CPU, and autograd's generic backward of ``var_mean`` and
``addcmul`` makes several more full-size passes than needed. Both are checked
against each other (values and ``gradcheck``) in ``tests/test_epilogue.py``.

Shapes: x (B, C, H, W); noise (B or 1, 1, H, W) or None; noise_strength (C,);
bias (C,) or None (already added by the conv); gamma, beta (B, C) with
gamma = style scale + 1.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

SLOPE = 0.2

# Channels whose mean exceeds this many standard deviations get their variance
# from torch.var_mean instead of E[x^2] - E[x]^2 (see channel_var_mean).
_CANCELLATION_RATIO = 10.0


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
    if bool((mean * mean > _CANCELLATION_RATIO ** 2 * var).any()):
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
        xhat = torch.addcmul(-mean * r, u, r)
        del u
        g4 = gamma[:, :, None, None]
        y = torch.addcmul(beta[:, :, None, None], xhat, g4)
        ctx.save_for_backward(xhat, r, mean, gamma, noise, noise_strength)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, g):
        xhat, r, mean, gamma, noise, noise_strength = ctx.saved_tensors
        need_x, need_noise, need_s, need_b, need_gamma, need_beta, _ = ctx.needs_input_grad
        n = xhat.shape[2] * xhat.shape[3]
        g_sum = g.sum(dim=(2, 3))                               # d beta
        gx_sum = (g * xhat).sum(dim=(2, 3))                     # d gamma
        grad_x = grad_noise = grad_s = grad_b = None
        if need_x or need_noise or need_s or need_b:
            g4 = gamma[:, :, None, None]
            # Instance-norm backward on d xhat = g * gamma, then the leaky ReLU
            # slope; u >= 0 exactly where xhat >= -mean * r.
            t = torch.addcmul(g, xhat, (-gx_sum / n)[:, :, None, None])
            t.sub_((g_sum / n)[:, :, None, None])
            coef = r * g4
            du = t.mul_(torch.where(xhat >= -mean * r, coef, coef * SLOPE))
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


def epilogue_fused(x: torch.Tensor, noise: Optional[torch.Tensor], noise_strength: torch.Tensor,
                   bias: Optional[torch.Tensor], gamma: torch.Tensor, beta: torch.Tensor,
                   eps: float) -> torch.Tensor:
    return _FusedEpilogue.apply(x, noise, noise_strength, bias, gamma, beta, eps)
