"""Convolutions whose autograd node keeps only the weight.

PULSE differentiates with respect to the latents and noise, never the weights.
torch's convolution node still saves its input in case a weight gradient is
wanted, so every conv and FIR filter of a StyleGAN2 layer kept one more
full-size activation alive until the backward pass (at 1024 px that put the
peak memory above NVIDIA's code). A convolution is linear in its input, so its
input gradient is the adjoint convolution of the output gradient: the input is
not needed. With a weight that requires grad (training), the plain op runs.
"""

from __future__ import annotations

from typing import Tuple, Union

import torch
import torch.nn.functional as F

Pair = Union[int, Tuple[int, int]]


class _FrozenConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, transposed: bool, stride: Pair, padding: Pair, groups: int):
        ctx.save_for_backward(weight)
        ctx.setup = (transposed, stride, padding, groups, x.shape)
        if transposed:
            return F.conv_transpose2d(x, weight, stride=stride, padding=padding, groups=groups)
        return F.conv2d(x, weight, stride=stride, padding=padding, groups=groups)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        transposed, stride, padding, groups, shape = ctx.setup
        if transposed:  # the adjoint of a transposed convolution is the convolution
            gx = F.conv2d(grad, weight, stride=stride, padding=padding, groups=groups)
        else:
            gx = torch.nn.grad.conv2d_input(shape, weight, grad, stride=stride, padding=padding, groups=groups)
        if gx.shape != shape:
            raise RuntimeError(f"frozen conv adjoint gave {tuple(gx.shape)}, expected {tuple(shape)}")
        return gx, None, None, None, None, None


def conv2d(x: torch.Tensor, weight: torch.Tensor, stride: Pair = 1, padding: Pair = 0, groups: int = 1):
    """``F.conv2d`` without bias; (B, I, H, W) and (O, I/groups, kh, kw) -> (B, O, H', W')."""
    if weight.requires_grad or not torch.is_grad_enabled() or not x.requires_grad:
        return F.conv2d(x, weight, stride=stride, padding=padding, groups=groups)
    return _FrozenConv.apply(x, weight, False, stride, padding, groups)


def conv_transpose2d(x: torch.Tensor, weight: torch.Tensor, stride: Pair = 1, padding: Pair = 0, groups: int = 1):
    """``F.conv_transpose2d`` without bias or output padding; weight (I, O/groups, kh, kw)."""
    if weight.requires_grad or not torch.is_grad_enabled() or not x.requires_grad:
        return F.conv_transpose2d(x, weight, stride=stride, padding=padding, groups=groups)
    return _FrozenConv.apply(x, weight, True, stride, padding, groups)
