import pytest
import torch

from pulse_sr.networks.epilogue import epilogue_fused, epilogue_reference


def _inputs(dtype, noise=True, bias=True, batch_noise=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 5, 5, generator=g, dtype=dtype, requires_grad=True)
    n = torch.randn(batch_noise, 1, 5, 5, generator=g, dtype=dtype, requires_grad=True) if noise else None
    s = torch.randn(3, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(3, generator=g, dtype=dtype, requires_grad=True) if bias else None
    gamma = torch.randn(2, 3, generator=g, dtype=dtype, requires_grad=True)
    beta = torch.randn(2, 3, generator=g, dtype=dtype, requires_grad=True)
    return x, n, s, b, gamma, beta


@pytest.mark.parametrize("noise,bias,batch_noise", [(True, True, 2), (False, True, 2), (True, False, 2),
                                                    (False, False, 2), (True, True, 1)])
def test_fused_matches_reference_and_gradcheck(noise, bias, batch_noise):
    args = _inputs(torch.float64, noise, bias, batch_noise)
    ref = epilogue_reference(*args, 1e-8)
    out = epilogue_fused(*args, 1e-8)
    assert torch.allclose(out, ref, atol=1e-12)
    assert torch.autograd.gradcheck(lambda *a: epilogue_fused(*a, 1e-8), args)


def test_fused_float32_grads_match_reference():
    args = _inputs(torch.float32)
    w = torch.randn(2, 3, 5, 5)
    gr = torch.autograd.grad((epilogue_reference(*args, 1e-8) * w).sum(), [a for a in args if a is not None])
    gf = torch.autograd.grad((epilogue_fused(*args, 1e-8) * w).sum(), [a for a in args if a is not None])
    for a, b in zip(gr, gf):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
