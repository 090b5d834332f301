import pytest
import torch

import shutil

from pulse_sr.ops import epilogue as E
from pulse_sr.ops.epilogue import epilogue, epilogue_reference


def epilogue_torch(*args):
    return epilogue(*args, impl="torch")


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
def test_torch_impl_matches_reference_and_gradcheck(noise, bias, batch_noise):
    args = _inputs(torch.float64, noise, bias, batch_noise)
    ref = epilogue_reference(*args, 1e-8)
    out = epilogue_torch(*args, 1e-8)
    assert torch.allclose(out, ref, atol=1e-12)
    assert torch.autograd.gradcheck(lambda *a: epilogue_torch(*a, 1e-8), args)


def test_torch_impl_float32_grads_match_reference():
    args = _inputs(torch.float32)
    w = torch.randn(2, 3, 5, 5)
    gr = torch.autograd.grad((epilogue_reference(*args, 1e-8) * w).sum(), [a for a in args if a is not None])
    gf = torch.autograd.grad((epilogue_torch(*args, 1e-8) * w).sum(), [a for a in args if a is not None])
    for a, b in zip(gr, gf):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def _channels_last(*shape, offset=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) + offset
    return x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("shape", [(1, 16, 64, 64), (3, 8, 32, 16), (2, 5, 7, 9)])
def test_channel_var_mean_matches_var_mean(shape):
    from pulse_sr.ops.epilogue import channel_var_mean
    x = _channels_last(*shape, offset=1.5)
    assert not x.is_contiguous()
    var, mean = channel_var_mean(x)
    rv, rm = torch.var_mean(x.double(), dim=(2, 3), keepdim=True, correction=0)
    assert var.shape == mean.shape == (shape[0], shape[1], 1, 1) and var.dtype == torch.float32
    assert torch.allclose(mean.double(), rm, rtol=0, atol=1e-6)
    assert ((var.double() - rv) / rv).abs().max() < 1e-5


def test_channel_var_mean_falls_back_when_mean_dwarfs_spread():
    # A channel with mean 1000 and std 0.01: E[x^2] - E[x]^2 in float32 would
    # return noise; the fallback must keep the variance right.
    from pulse_sr.ops.epilogue import channel_var_mean
    x = _channels_last(1, 4, 32, 32) * 0.01
    x[:, 2] += 1000.0
    var, mean = channel_var_mean(x)
    rv, _ = torch.var_mean(x.double(), dim=(2, 3), keepdim=True, correction=0)
    assert ((var.double() - rv) / rv).abs().max() < 1e-3


@pytest.fixture(params=["c", "torch", "auto"])
def impl(request):
    """Run a test with the C kernels (where a compiler exists), the torch ops, and the automatic choice."""
    if request.param == "c" and (shutil.which("cc") is None or E.kernels() is None):
        pytest.skip(f"C kernels unavailable: {E.kernels_error()}")
    return request.param


def test_channels_last_matches_reference(impl):
    x = _channels_last(2, 6, 16, 16).requires_grad_(True)
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(2, 1, 16, 16, generator=g)
    s, b = torch.randn(6, generator=g), torch.randn(6, generator=g)
    gamma, beta = torch.randn(2, 6, generator=g).requires_grad_(True), torch.randn(2, 6, generator=g)
    w = torch.randn(2, 6, 16, 16, generator=g)
    outs = []
    for which in ("ref", impl):
        y = epilogue(x, noise, s, b, gamma, beta, 1e-8, impl=which)
        outs.append((y.detach(),) + torch.autograd.grad((y * w).sum(), [x, gamma]))
    for a, b_ in zip(*outs):
        assert torch.allclose(a, b_, atol=1e-4, rtol=1e-4)


def test_layers_match_reference_layers(impl):
    # The fast paths move the bias into the last convolution (the blur after
    # upsampling) and uses the fast channel statistics; whole-network outputs
    # and gradients must match the reference ops, for 'up' and 'fused_up' layers.
    from pulse_sr.networks.stylegan1 import StyleGAN1Generator
    torch.manual_seed(0)
    G = StyleGAN1Generator(resolution=32, fmap_base=64, fmap_max=16, latent_dim=16, w_dim=16,
                           mapping_layers=2, fused_scale_min_res=16)
    assert {layer.kind for layer in G.synthesis.layers} == {"const", "conv", "up", "fused_up"}
    with torch.no_grad():
        for layer in G.synthesis.layers:
            layer.bias.normal_()
            layer.noise_strength.normal_()
    ws = torch.randn(2, G.num_ws, 16)
    noise = G.make_noise(2, generator=torch.Generator().manual_seed(3))
    noise[-1] = None
    results = []
    for which in ("ref", impl):
        G.set_impl(which)
        assert all(layer.impl == which for layer in G.synthesis.layers)
        wsv = ws.clone().requires_grad_(True)
        nv = noise[0].clone().requires_grad_(True)
        img = G.synthesize(wsv, [nv] + noise[1:])
        results.append((img.detach(),) + torch.autograd.grad(img.square().mean(), [wsv, nv]))
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()


def test_torch_impl_when_mean_dwarfs_spread():
    # One channel sits far from zero with a small spread (mean ~49, std ~0.01):
    # per-channel coefficients would cancel there, so the fused op must form
    # xhat first. In float64 it must pass gradcheck; in float32 it must be no
    # less accurate than the reference ops (both measured against float64).
    x, n, s, b, gamma, beta = _inputs(torch.float64)
    with torch.no_grad():
        x[:, 1] = x[:, 1] * 0.01 + 50.0
    args = (x, n, s, b, gamma, beta)
    assert torch.allclose(epilogue_torch(*args, 1e-8), epilogue_reference(*args, 1e-8), atol=1e-10)
    assert torch.autograd.gradcheck(lambda *a: epilogue_torch(*a, 1e-8), args)

    w = torch.randn(2, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(5))

    def run(fn, tensors):
        y = fn(*tensors, 1e-8)
        return (y,) + torch.autograd.grad((y * w.to(y.dtype)).sum(), [tensors[0], tensors[4]])

    truth = run(epilogue_reference, args)
    args32 = tuple(a.detach().float().requires_grad_(True) for a in args)
    for ref, fused, want in zip(run(epilogue_reference, args32), run(epilogue_torch, args32), truth):
        ref_err = (ref.double() - want).abs().max()
        fused_err = (fused.double() - want).abs().max()
        assert fused_err <= 2 * ref_err + 1e-6, (fused_err, ref_err)


def test_impl_is_checked_and_the_default_comes_from_the_environment(monkeypatch):
    args = _inputs(torch.float32)
    with pytest.raises(ValueError, match="unknown epilogue impl"):
        epilogue(*args, 1e-8, impl="cuda")
    from pulse_sr.networks.stylegan1 import StyleGAN1Generator
    with pytest.raises(ValueError, match="unknown epilogue impl"):
        StyleGAN1Generator(resolution=8, fmap_base=16, fmap_max=4, latent_dim=4, w_dim=4, impl="fast")
    monkeypatch.delenv("PULSE_NO_NATIVE", raising=False)
    assert E.default_impl() == "auto"
    monkeypatch.setenv("PULSE_NO_NATIVE", "1")
    assert E.default_impl() == "torch"
    G = StyleGAN1Generator(resolution=8, fmap_base=16, fmap_max=4, latent_dim=4, w_dim=4)
    assert G.impl == "torch" and "impl=torch" in repr(G)
    assert StyleGAN1Generator(resolution=8, fmap_base=16, fmap_max=4, latent_dim=4, w_dim=4, impl="ref").impl == "ref"


def test_auto_says_what_it_runs_at_debug_level(caplog, monkeypatch):
    import logging
    monkeypatch.setattr(E, "_last_auto", None)
    args = _inputs(torch.float64)  # float64: not for the C kernels
    with caplog.at_level(logging.DEBUG, logger="pulse_sr.ops.epilogue"):
        epilogue(*args, 1e-8, impl="auto")
        epilogue(*args, 1e-8, impl="auto")  # said once per change, not per call
    lines = [r.getMessage() for r in caplog.records if "impl='auto'" in r.getMessage()]
    assert len(lines) == 1 and "'torch'" in lines[0] and "float32" in lines[0]
