"""StyleGAN3 generator: equivalence with recorded outputs of NVIDIA's code, contract, gradients, filters.

The fixtures ``fixtures/generators/stylegan3-{t,r}-64.pt`` hold tiny T and R
generators built and run with NVIDIA's ``training/networks_stylegan3.py``
(commit in the fixture's ``reference``): their init kwargs, state dict (NVIDIA
names, biases and magnitude EMAs randomised, a rotated and shifted user
transform), inputs and outputs.
"""

from pathlib import Path

import pytest
import torch

from conftest import rel_err

from pulse_sr.networks.layers import MappingNetwork
from pulse_sr.networks.fir import upfirdn
from pulse_sr.networks.stylegan3 import StyleGAN3Generator, filtered_lrelu

FIXTURES = Path(__file__).parent / "fixtures" / "generators"
CONFIGS = ("t", "r")


def _load_fixture(config: str) -> dict:
    return torch.load(FIXTURES / f"stylegan3-{config}-64.pt", weights_only=True)


def _our_names(state: dict) -> dict:
    return {("mapping_network." + k[len("mapping."):] if k.startswith("mapping.") else k): v
            for k, v in state.items()}


@pytest.fixture(scope="module")
def loaded():
    """config -> (fixture, generator with the fixture's weights)."""
    out = {}
    for config in CONFIGS:
        fx = _load_fixture(config)
        G = StyleGAN3Generator.from_init_kwargs(fx["init_kwargs"])
        G.load_state_dict(_our_names(fx["state"]), strict=True)
        out[config] = (fx, G.eval().requires_grad_(False))
    return out


# ---------------------------------------------------------------------------
# Equivalence with NVIDIA's code


@pytest.mark.parametrize("config", CONFIGS)
def test_matches_reference(loaded, config):
    fx, G = loaded[config]
    assert fx["kind"] == "stylegan3" and fx["reference"].startswith("NVlabs/stylegan3 ")
    with torch.no_grad():
        assert rel_err(G.mapping(fx["z"]), fx["mapping"]) < 1e-4
        assert rel_err(G.synthesize(fx["ws"]), fx["image"]) < 1e-4
        # A different w per layer catches a layer reading the wrong one.
        assert rel_err(G.synthesize(fx["ws_mixed"]), fx["image_mixed"]) < 1e-4


@pytest.mark.parametrize("config", CONFIGS)
def test_state_dict_names_and_shapes(loaded, config):
    fx, G = loaded[config]
    ours = G.state_dict()
    theirs = _our_names(fx["state"])
    assert list(ours) == list(theirs)  # NVIDIA's order too.
    assert all(ours[k].shape == theirs[k].shape for k in ours)


@pytest.mark.parametrize("config", CONFIGS)
def test_designed_filters_match_reference(config):
    fx = _load_fixture(config)
    torch.manual_seed(0)
    G = StyleGAN3Generator.from_init_kwargs(fx["init_kwargs"]).eval()
    state = G.state_dict()
    names = [k for k in fx["state"] if k.endswith(("up_filter", "down_filter"))]
    assert names and all(k in state for k in names)
    for k in names:
        torch.testing.assert_close(state[k], fx["state"][k], rtol=0, atol=1e-5, msg=k)
    if config == "r":  # Radial down-sampling filters where not critically sampled.
        assert any(fx["state"][k].ndim == 2 for k in names)
    with torch.no_grad():
        img = G.synthesize(torch.randn(1, G.num_ws, G.w_dim))
    assert img.shape == (1, 3, 64, 64) and torch.isfinite(img).all()


# ---------------------------------------------------------------------------
# Contract used by PULSE


def test_contract(loaded):
    fx, G = loaded["t"]
    assert (G.num_ws, G.w_dim, G.z_dim, G.resolution) == (16, 32, 32, 64)
    assert G.noise_resolutions == [] and G.make_noise(3) == [] and G.make_noise(2, "const") == []
    assert isinstance(G.mapping_network, MappingNetwork) and G.mapping_network.num_layers == 2
    assert G.w_avg is G.mapping_network.w_avg
    with torch.no_grad():
        assert G.mapping(torch.randn(3, G.z_dim)).shape == (3, G.w_dim)
        ws = fx["ws"][:1]
        assert G.synthesize(ws, []).shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="noise"):
        G.synthesize(ws, [torch.zeros(1, 1, 4, 4)])
    with pytest.raises(ValueError, match="ws"):
        G.synthesize(ws[:, 1:])
    # One implementation, so no impl switch to accept and ignore (only StyleGAN v1 has several).
    assert not hasattr(G, "set_impl") and not hasattr(G, "impl")
    assert "num_ws=16" in repr(G) and "L14_64_3" in repr(G)


def test_sample_truncation(loaded):
    fx, G = loaded["t"]
    # psi = 1: the fixture's image, whose ws are the broadcast mapping output.
    torch.testing.assert_close(G.sample(fx["z"], noise_mode="const"), fx["image"], rtol=0, atol=1e-4)
    # psi = 0 on every layer: every sample becomes the image of w_avg.
    img0 = G.sample(fx["z"], truncation_psi=0.0)
    torch.testing.assert_close(img0[0], img0[1])
    assert not torch.allclose(img0, fx["image"], atol=1e-3)


def test_from_init_kwargs_validation():
    base = _load_fixture("t")["init_kwargs"]
    with pytest.raises(ValueError, match="c_dim"):
        StyleGAN3Generator.from_init_kwargs({**base, "c_dim": 1})
    with pytest.raises(ValueError, match="bogus_width"):
        StyleGAN3Generator.from_init_kwargs({**base, "bogus_width": 3})
    with pytest.raises(ValueError, match="activation"):
        StyleGAN3Generator.from_init_kwargs({**base, "mapping_kwargs": {"num_layers": 2, "activation": "relu"}})
    with pytest.raises(ValueError, match="layer_features"):
        StyleGAN3Generator.from_init_kwargs({**base, "mapping_kwargs": {"layer_features": 8}})
    with pytest.raises(ValueError, match="img_channels"):
        StyleGAN3Generator.from_init_kwargs({k: v for k, v in base.items() if k != "img_channels"})
    # Training-only keys are accepted and ignored.
    G = StyleGAN3Generator.from_init_kwargs({**base, "fused_modconv_default": "inference_only",
                                             "fp16_channels_last": True, "num_fp16_res": 4,
                                             "mapping_kwargs": {"num_layers": 3, "w_avg_beta": 0.995}})
    assert G.mapping_network.num_layers == 3
    # The recorded kwargs rebuild the same architecture.
    H = StyleGAN3Generator.from_init_kwargs(G.init_kwargs)
    assert {k: v.shape for k, v in H.state_dict().items()} == {k: v.shape for k, v in G.state_dict().items()}


# ---------------------------------------------------------------------------
# Gradients and ops


@pytest.mark.parametrize("config", CONFIGS)
def test_gradients_reach_every_w(loaded, config):
    fx, G = loaded[config]
    ws = fx["ws_mixed"].clone().requires_grad_(True)
    G.synthesize(ws).square().mean().backward()
    g = ws.grad
    assert torch.isfinite(g).all()
    assert (g.abs().sum(dim=(0, 2)) > 0).all()  # Every layer's w matters.


@pytest.mark.parametrize("up,down,padding", [(1, 1, (2, 1, 0, 3)), (2, 1, (5, 4, 3, 6)), (1, 2, (0, 0, 0, 0)),
                                             (1, 1, (3, 3, 2, 2)), (4, 2, (-3, 2, 1, -2)),
                                             (2, 2, (0, 0, 0, 0)), (1, 2, (6, 5, 6, 5))])
def test_separable_upfirdn_matches_2d(up, down, padding):
    # The separable path (transposed convolutions) against the explicit
    # zero-insertion path of the same filter as a (K, K) outer product.
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    f = torch.randn(8, dtype=torch.float64)
    a = upfirdn(x, f, up=up, down=down, padding=padding, gain=1.5)
    b = upfirdn(x, torch.outer(f, f), up=up, down=down, padding=padding, gain=1.5)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("radial", [False, True])
def test_filtered_lrelu_gradcheck(radial):
    torch.manual_seed(0)
    fu = torch.rand(4, dtype=torch.float64)
    fd = torch.rand(4, 4, dtype=torch.float64) if radial else torch.rand(4, dtype=torch.float64)
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    y = filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=(3, 2, 3, 2), clamp=3.0)
    assert y.shape == (1, 2, 5, 5)
    assert torch.autograd.gradcheck(
        lambda x, b: filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=(3, 2, 3, 2), clamp=3.0), (x, b))


# ---------------------------------------------------------------------------
# NVIDIA pickles of StyleGAN3 networks, and PULSE on them


@pytest.mark.parametrize("config", ["t", "r"])
def test_nvidia_pickle_matches_reference(config, tmp_path):
    from nvidia_pickles import hostile_source, write_snapshot
    from pulse_sr.formats import load_file, sniff
    from pulse_sr.formats.common import stylegan3_parameter_bound

    fx = _load_fixture(config)
    marker = tmp_path / "executed"
    path = write_snapshot(tmp_path / "sg3.pkl", fx["state"], fx["init_kwargs"], hostile_source(marker),
                          training_path="~/datasets/ffhqu-64x64.zip")
    assert sniff.detect_format(path) == "nvidia-pickle"
    loaded = load_file(path)
    assert not marker.exists()
    G = loaded.generator
    assert isinstance(G, StyleGAN3Generator) and loaded.metadata["architecture"] == "stylegan3"
    assert rel_err(G.mapping(fx["z"]), fx["mapping"]) < 1e-4
    with torch.no_grad():
        assert rel_err(G.synthesize(fx["ws_mixed"]), fx["image_mixed"]) < 1e-4
    n = sum(t.numel() for t in G.state_dict().values())
    assert n <= stylegan3_parameter_bound(fx["init_kwargs"], "x") < 50 * n


def test_nvidia_pickle_sizes_are_bounded_before_building(tmp_path):
    from nvidia_pickles import hostile_source, write_snapshot
    from pulse_sr.errors import ModelFormatError
    from pulse_sr.formats import load_file

    fx = _load_fixture("t")
    src = hostile_source(tmp_path / "executed")
    for i, (change, message) in enumerate([({"channel_max": 4096, "num_layers": 32}, "over the 300 M limit"),
                                           ({"conv_kernel": 99}, "conv_kernel=99"),
                                           ({"c_dim": 5}, "class-conditional"),
                                           ({"img_resolution": 100}, "power of two")]):
        path = write_snapshot(tmp_path / f"bad{i}.pkl", fx["state"], {**fx["init_kwargs"], **change}, src)
        with pytest.raises(ModelFormatError, match=message):
            load_file(path)
    assert not (tmp_path / "executed").exists()


def test_pulse_two_steps_on_a_tiny_stylegan3():
    from pulse_sr import upsample
    from pulse_sr.model import PulseModel
    from pulse_sr.search.prior import compute_gaussian_fit

    torch.manual_seed(0)
    G = StyleGAN3Generator(z_dim=16, w_dim=16, img_resolution=16, img_channels=3, channel_base=256,
                           channel_max=16, num_layers=4, mapping_kwargs={"num_layers": 2}).eval().requires_grad_(False)
    model = PulseModel(G, compute_gaussian_fit(G, num_samples=4096, chunk=1024), source="tiny-sg3", format="test")
    lr = torch.rand(2, 3, 4, 4)
    res = upsample(lr, model, steps=2, seed=1)  # default noise options: nothing to say
    assert res.images.shape == (2, 3, 16, 16) and res.steps_taken == 2 and res.warnings == []
    assert bool((res.l2_history[1] != res.l2_history[0]).all())
    res = upsample(lr, model, steps=2, seed=1, noise="zero")
    assert res.warnings == ["noise options have no effect: this generator has no noise inputs (StyleGAN3)"]
