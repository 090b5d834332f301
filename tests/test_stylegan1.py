import pytest
import torch

from pulse_sr.networks.stylegan1 import StyleGAN1Config, StyleGAN1Generator

from conftest import tiny_generator


@pytest.mark.parametrize("res,num_ws", [(8, 4), (16, 6), (64, 10), (1024, 18)])
def test_num_ws(res, num_ws):
    assert StyleGAN1Config(resolution=res).num_ws == num_ws


def test_official_channel_counts():
    cfg = StyleGAN1Config()
    assert [cfg.nf(s) for s in range(1, 10)] == [512, 512, 512, 512, 256, 128, 64, 32, 16]


@pytest.mark.parametrize("res", [12, 4, 2048])
def test_bad_resolution(res):
    with pytest.raises(ValueError, match="power of two"):
        StyleGAN1Config(resolution=res)


def test_too_few_channels():
    with pytest.raises(ValueError, match="no channels"):
        StyleGAN1Config(resolution=256, fmap_base=64)


def test_shapes_and_noise_modes():
    G = tiny_generator(32)
    assert G.num_ws == 8 and G.w_dim == 16 and G.resolution == 32
    assert G.noise_resolutions == [4, 4, 8, 8, 16, 16, 32, 32]
    ws = torch.randn(2, G.num_ws, G.w_dim)
    for mode in ("random", "const", "zero"):
        img = G.synthesize(ws, G.make_noise(2, mode))
        assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()
    a = G.synthesize(ws, G.make_noise(2, "const"))
    b = G.synthesize(ws, G.make_noise(2, "const"))
    assert torch.equal(a, b)
    z = G.mapping(torch.randn(5, 16))
    assert z.shape == (5, 16)
    assert "resolution=32" in repr(G)


def test_noise_changes_output_only_where_strength_nonzero():
    G = tiny_generator(16)
    ws = torch.randn(1, G.num_ws, G.w_dim)
    zero = G.make_noise(1, "zero")
    base = G.synthesize(ws, zero)
    noisy = list(zero)
    noisy[-1] = torch.randn(1, 1, 16, 16)
    assert not torch.allclose(base, G.synthesize(ws, noisy))
    G.synthesis.layers[-1].noise_strength.zero_()
    assert torch.allclose(base, G.synthesize(ws, noisy))


def test_fused_upsampling_used_from_128():
    G = StyleGAN1Generator(resolution=256, fmap_base=2048, fmap_max=8, latent_dim=8, w_dim=8,
                           mapping_layers=1, mapping_fmaps=8)
    kinds = [(l.resolution, l.kind) for l in G.synthesis.layers if l.kind.endswith("up")]
    assert kinds == [(8, "up"), (16, "up"), (32, "up"), (64, "up"), (128, "fused_up"), (256, "fused_up")]


def test_shape_errors_are_clear():
    G = tiny_generator(16)
    with pytest.raises(ValueError, match="ws: expected shape"):
        G.synthesize(torch.randn(1, 3, G.w_dim), G.make_noise(1, "zero"))
    bad = G.make_noise(1, "zero")
    bad[2] = torch.zeros(1, 1, 5, 5)
    with pytest.raises(ValueError, match=r"noise\[2\]"):
        G.synthesize(torch.randn(1, G.num_ws, G.w_dim), bad)
    with pytest.raises(ValueError, match="z: expected shape"):
        G.mapping(torch.randn(2, 7))


def test_truncation_moves_towards_w_avg():
    G = tiny_generator(16)
    G.w_avg.copy_(G.mapping(torch.randn(256, 16)).mean(0))
    z = torch.randn(4, 16)
    full = G.sample(z, truncation_psi=1.0, noise_mode="zero")
    none = G.sample(z, truncation_psi=0.0, truncation_cutoff=G.num_ws, noise_mode="zero")
    assert not torch.allclose(full, none)
    # psi=0 makes every sample the mean image.
    assert torch.allclose(none[0], none[1], atol=1e-5)
