"""StyleGAN2 network and NVIDIA's torch pickles.

Fixtures in tests/fixtures/generators/ hold outputs of NVIDIA's own code for
random weights (see the README there); the pickles are written here, in the
persistence layout, by tests/nvidia_pickles.py, each embedding module source
that would write a marker file if anything executed it.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from conftest import rel_err
from nvidia_pickles import hostile_source, write_snapshot
from pulse_sr import upsample
from pulse_sr.errors import ModelFormatError, UnsafePickleError
from pulse_sr.formats import load_file, sniff
from pulse_sr.formats.nvidia_pickle import read_nvidia_pickle
from pulse_sr.model import PulseModel
from pulse_sr.networks.stylegan2 import StyleGAN2Config, StyleGAN2Generator
from pulse_sr.search.prior import compute_gaussian_fit

FIXTURES = Path(__file__).parent / "fixtures" / "generators"


def fixture(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}.pt", map_location="cpu", weights_only=True)


def full_state(fx: dict) -> dict:
    """The fixture's state, with the noise maps it left out (unused: noise is off) refilled."""
    state = dict(fx["state"])
    g = torch.Generator().manual_seed(0)
    cfg = StyleGAN2Config.from_init_kwargs(fx["init_kwargs"])
    for res in cfg.block_resolutions:
        for conv in (["conv1"] if res == 4 else ["conv0", "conv1"]):
            state.setdefault(f"synthesis.b{res}.{conv}.noise_const", torch.randn(res, res, generator=g))
    return state


def load_from_pickle(tmp_path, fx: dict, **kwargs):
    marker = tmp_path / "executed"
    path = write_snapshot(tmp_path / "snapshot.pkl", full_state(fx), fx["init_kwargs"], hostile_source(marker),
                          **kwargs)
    assert sniff.detect_format(path) == "nvidia-pickle"
    loaded = load_file(path)
    assert not marker.exists(), "the embedded module source was executed"
    return loaded


def synthesize_without_noise(G, ws):
    with torch.no_grad():
        return G.synthesize(ws, [None] * len(G.noise_resolutions))


def test_matches_nvidia_at_64px(tmp_path):
    fx = fixture("stylegan2-64")  # stylegan2-ada-pytorch's kwargs form (synthesis_kwargs={...})
    loaded = load_from_pickle(tmp_path, fx)
    G = loaded.generator
    assert isinstance(G, StyleGAN2Generator) and loaded.format == "nvidia-pickle"
    assert loaded.metadata["architecture"] == "stylegan2" and loaded.metadata["alignment"] == "ffhq"
    assert rel_err(G.mapping(fx["z"]), fx["mapping"]) < 1e-4
    img = synthesize_without_noise(G, fx["ws"])
    assert img.shape == fx["image"].shape == (2, 3, 64, 64)
    assert rel_err(img, fx["image"]) < 1e-4


def test_matches_nvidia_at_1024px(tmp_path):
    # stylegan3's kwargs form (flat). The fixture keeps 16x16 block means and 16384 sampled
    # pixels of NVIDIA's 1024-px image; the whole image was compared when it was recorded.
    fx = fixture("stylegan2-1024")
    G = load_from_pickle(tmp_path, fx).generator
    assert G.num_ws == 18 and len(G.noise_resolutions) == 17
    assert rel_err(G.mapping(fx["z"]), fx["mapping"]) < 1e-4
    img = synthesize_without_noise(G, fx["ws"])
    assert img.shape == (1, 3, 1024, 1024)
    scale = max(1.0, float(fx["image_absmax"]))
    assert float((img.flatten()[fx["image_sample_index"]] - fx["image_sample"]).abs().max()) / scale < 1e-4
    assert float((torch.nn.functional.avg_pool2d(img, 16) - fx["image_pool16"]).abs().max()) / scale < 1e-4


def test_noise_maps_follow_nvidia_layers():
    G = StyleGAN2Generator(z_dim=8, w_dim=8, img_resolution=32, channel_base=128, channel_max=8,
                           mapping_layers=1)
    assert G.num_ws == 8
    assert G.noise_resolutions == [4, 8, 8, 16, 16, 32, 32]
    ws = torch.randn(2, 8, 8)
    const = G.make_noise(2, "const")
    zero = G.make_noise(2, "zero")
    with torch.no_grad():
        G.synthesis.b32.conv1.noise_strength.fill_(0.5)
        a, b, c = (G.synthesize(ws, n) for n in (const, zero, [None] * 7))
    assert torch.equal(b, c) and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="expected 7 entries"):
        G.synthesize(ws, zero[:-1])
    with pytest.raises(ValueError, match=r"noise\[2\]"):
        G.synthesize(ws, zero[:2] + [torch.zeros(2, 1, 4, 4)] + zero[3:])


@pytest.mark.parametrize("architecture", ["skip", "orig", "resnet"])
def test_parameter_count_is_exact(architecture):
    cfg = StyleGAN2Config(z_dim=16, w_dim=24, img_resolution=32, channel_base=256, channel_max=16,
                          mapping_layers=3, mapping_layer_features=20, architecture=architecture)
    G = StyleGAN2Generator(cfg)
    assert cfg.parameter_count() == sum(t.numel() for t in G.state_dict().values())


def test_kwargs_are_checked(tmp_path):
    fx = fixture("stylegan2-64")
    kw = fx["init_kwargs"]
    state = full_state(fx)
    src = hostile_source(tmp_path / "executed")
    cases = [
        (dict(kw, c_dim=10), "class-conditional"),
        (dict(kw, synthesis_kwargs=dict(kw["synthesis_kwargs"], channel_base=2 ** 40, channel_max=2 ** 20)),
         "4096"),
        (dict(kw, z_dim=512, w_dim=4096, mapping_kwargs={"num_layers": 32}, img_resolution=1024,
              synthesis_kwargs=dict(kw["synthesis_kwargs"], channel_base=2 ** 24, channel_max=4096)),
         "over the 300 M limit"),
        (dict(kw, synthesis_kwargs=dict(kw["synthesis_kwargs"], architecture="wavelet")), "architecture"),
        (dict(kw, synthesis_kwargs=dict(kw["synthesis_kwargs"], magic=1)), "unknown synthesis argument 'magic'"),
        (dict(kw, mapping_kwargs={"num_layers": 2, "activation": "relu"}), "leaky ReLU"),
        (dict(kw, img_resolution=48), "power of two"),
    ]
    for i, (bad, message) in enumerate(cases):
        path = write_snapshot(tmp_path / f"bad{i}.pkl", state, bad, src)
        with pytest.raises(ModelFormatError, match=message):
            load_file(path)
    assert not (tmp_path / "executed").exists()


def test_state_mismatch_is_named(tmp_path):
    fx = fixture("stylegan2-64")
    src = hostile_source(tmp_path / "executed")
    state = full_state(fx)
    missing = {k: v for k, v in state.items() if k != "synthesis.b8.conv0.affine.bias"}
    extra = dict(state, **{"synthesis.b8.conv0.extra": torch.zeros(2)})
    wrong = dict(state, **{"synthesis.b8.conv1.weight": torch.zeros(16, 16, 1, 1)})
    for name, st, message in [("missing", missing, r"missing keys \['synthesis.b8.conv0.affine.bias'\]"),
                              ("extra", extra, "unknown keys"), ("shape", wrong, "shape mismatch")]:
        with pytest.raises(ModelFormatError, match=message):
            load_file(write_snapshot(tmp_path / f"{name}.pkl", st, fx["init_kwargs"], src))


def test_g_when_no_g_ema(tmp_path):
    fx = fixture("stylegan2-64")
    loaded = load_from_pickle(tmp_path, fx, with_g_ema=False)
    assert loaded.metadata["network"] == "G"


class Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.target}",)


def test_refuses_globals_off_the_allow_list(tmp_path):
    target = tmp_path / "pwned"
    # A snapshot whose structure is right but hides a call to os.system in training_set_kwargs.
    fx = fixture("stylegan2-64")
    good = write_snapshot(tmp_path / "good.pkl", full_state(fx), fx["init_kwargs"], hostile_source(target))
    snap_bytes = good.read_bytes()
    evil = pickle.dumps({"G_ema": Evil(target)}, protocol=4)
    for name, data in [("evil", evil), ("tail", snap_bytes[:-1] + evil[2:])]:
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(data)
        with pytest.raises((UnsafePickleError, ModelFormatError)):
            read_nvidia_pickle(path)
    with pytest.raises(UnsafePickleError, match="posix.system|os.system"):
        read_nvidia_pickle(tmp_path / "evil.pkl")
    assert not target.exists()


def test_truncated_pickle(tmp_path):
    fx = fixture("stylegan2-64")
    good = write_snapshot(tmp_path / "good.pkl", full_state(fx), fx["init_kwargs"], hostile_source(tmp_path / "x"))
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelFormatError, match="not a readable NVIDIA pickle"):
        load_file(cut)


def tiny_stylegan2_model(seed: int = 0) -> PulseModel:
    torch.manual_seed(seed)
    G = StyleGAN2Generator(z_dim=16, w_dim=16, img_resolution=32, channel_base=256, channel_max=16,
                           mapping_layers=2, conv_clamp=256).eval().requires_grad_(False)
    return PulseModel(G, compute_gaussian_fit(G, num_samples=4096, chunk=1024), source="tiny-sg2", format="test")


def test_gradients_reach_ws_and_noise():
    model = tiny_stylegan2_model()
    G = model.generator
    ws = torch.randn(2, G.num_ws, G.w_dim, requires_grad=True)
    noise = [n.requires_grad_(True) for n in G.make_noise(2, "random")]
    with torch.no_grad():
        for layer in G.noise_layers():
            layer.noise_strength.fill_(0.1)
    G.synthesize(ws, noise).square().mean().backward()
    assert ws.grad is not None and bool(ws.grad.isfinite().all()) and float(ws.grad.abs().sum()) > 0
    assert all(float(n.grad.abs().sum()) > 0 for n in noise)


def test_pulse_two_steps_on_a_tiny_stylegan2():
    model = tiny_stylegan2_model()
    lr = torch.rand(1, 3, 8, 8)
    res = upsample(lr, model, steps=2, seed=3, eps=1.0, bad_noise_layers=[-1])
    assert res.images.shape == (1, 3, 32, 32) and res.downscaled.shape == (1, 3, 8, 8)
    assert res.steps_taken == 2 and res.l2_history.shape == (2, 1)
    assert bool(res.l2_history[1, 0] != res.l2_history[0, 0])
    assert res.ws.shape == (1, model.generator.num_ws, 16)


def test_registry_lists_nvidia_torch_and_tf_pickles():
    from pulse_sr.hub.registry import REGISTRY
    nvidia = {n: e for n, e in REGISTRY.items() if n.startswith(("stylegan2-", "stylegan3-"))}
    for name in ("stylegan2-ffhq-1024", "stylegan3-r-ffhqu-256", "stylegan2-afhqcat-512",
                 "stylegan3-t-metfacesu-1024", "stylegan2-tf-ffhq-1024"):
        assert name in nvidia
    for name, e in nvidia.items():
        url = e.files[0].url
        assert url.startswith(("https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan",
                               "https://nvlabs-fi-cdn.nvidia.com/")), url
        assert url.endswith(e.files[0].filename) and "NVIDIA" in e.licence
        assert str(e.resolution) in e.files[0].filename.replace("config-f", "1024")
    faces_256 = [n for n, e in nvidia.items() if e.resolution == 256 and e.domain == "faces"]
    assert len(faces_256) >= 3
    assert nvidia["stylegan2-afhqcat-512"].alignment is None and nvidia["stylegan2-afhqcat-512"].domain == "animals"


def test_download_and_load_by_name(tmp_path, monkeypatch):
    import functools
    import http.server

    from conftest import local_http_server
    from pulse_sr.align.templates import TemplateError, template_for
    from pulse_sr.hub import registry
    from pulse_sr.hub.download import download_model
    from pulse_sr.model import load_model

    monkeypatch.setenv("PULSE_CACHE", str(tmp_path / "cache"))
    served = tmp_path / "served"
    served.mkdir()
    fx = fixture("stylegan2-64")
    write_snapshot(served / "tiny-sg2.pkl", full_state(fx), fx["init_kwargs"], hostile_source(tmp_path / "executed"),
                   training_path="/data/afhqcat.zip")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    with local_http_server(handler) as server:
        url = f"http://127.0.0.1:{server.server_address[1]}/tiny-sg2.pkl"
        for name, domain, alignment in [("tiny-sg2-faces", "faces", "ffhq"), ("tiny-sg2-cats", "animals", None)]:
            e = registry.ModelEntry(name=name, description="test", kind="nvidia-pickle",
                                    files=[registry.ModelFile("tiny-sg2.pkl", url, None, None)], resolution=64,
                                    licence="test", alignment=alignment, domain=domain)
            monkeypatch.setitem(registry.REGISTRY, name, e)
            download_model(name, timeout=5)
    faces = load_model("tiny-sg2-faces")
    assert isinstance(faces.generator, StyleGAN2Generator) and faces.format == "nvidia-pickle"
    assert faces.crop_template == "ffhq" and faces.gaussian_fit["mean"].shape == (32,)
    assert rel_err(faces.generator.mapping(fx["z"]), fx["mapping"]) < 1e-4
    cats = load_model("tiny-sg2-cats")
    assert cats.crop_template is None
    with pytest.raises(TemplateError, match="draws animals, not human faces"):
        template_for(cats)
    assert not (tmp_path / "executed").exists()


def test_mapping_ends_in_the_leaky_relu_the_gaussian_fit_inverts():
    # Supplement Sec. 2.4: the fit undoes a final leaky ReLU of slope 0.2 (negatives times 5).
    import math

    import torch.nn.functional as F

    G = tiny_stylegan2_model().generator
    z = torch.randn(256, G.z_dim)
    out = G.mapping(z)
    net = G.mapping_network
    x = net.fc0(torch.nn.functional.normalize(z, dim=1) * math.sqrt(G.z_dim))
    last = getattr(net, f"fc{net.num_layers - 1}")
    pre = F.linear(x, last.weight * last.weight_gain, last.bias * last.bias_gain) * math.sqrt(2)
    assert torch.allclose(F.leaky_relu(out, 5.0), pre, atol=1e-5)
    assert float((out < 0).float().mean()) > 0.2  # the negative side is really there


def _zero_insert_reference(x, f, gain=4.0):
    """NVIDIA's upfirdn2d(up=2) written the slow way: insert zeros, pad, convolve with the flipped filter."""
    b, c, h, w = x.shape
    taps = f.shape[-1]
    if f.ndim == 1:  # a separable filter as NVIDIA stores 8 taps or more
        f = torch.outer(f, f)
    up = torch.zeros(b, c, 2 * h, 2 * w, dtype=x.dtype)
    up[:, :, ::2, ::2] = x
    p0, p1 = (taps + 1) // 2, (taps - 2) // 2
    up = torch.nn.functional.pad(up, [p0, p1, p0, p1])
    k = (f * gain).flip([0, 1])[None, None].expand(c, 1, taps, taps)
    return torch.nn.functional.conv2d(up, k, groups=c)


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 2, 5, 3, 1, 1), (2, 1, 1), (1, 3, 5, 7, 7, 5, 3, 2)])
def test_upsample2d_fast_path_equals_zero_insertion(taps):
    from pulse_sr.networks.fir import setup_filter, upfirdn, upsample2d

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64)
    f = setup_filter(taps).double()
    f = f + 0.01 * torch.arange(f.numel(), dtype=torch.float64).reshape(f.shape)  # asymmetric
    assert torch.allclose(upsample2d(x, f), _zero_insert_reference(x, f), atol=1e-12)
    # The padding folded into the convolution equals an explicit pad.
    f2 = torch.outer(f, f) if f.ndim == 1 else f
    for pad in [(1, 1, 2, 2), (2, 1, 0, 3)]:
        want = torch.nn.functional.conv2d(torch.nn.functional.pad(x, list(pad)),
                                          f2.flip([0, 1])[None, None].expand(3, 1, *f2.shape), groups=3)
        assert torch.allclose(upfirdn(x, f, padding=pad), want, atol=1e-12)


def test_clamp_abs_skips_only_when_nothing_binds():
    from pulse_sr.networks.layers import clamp_abs

    x = torch.tensor([-3.0, -0.5, 0.25, 2.0], requires_grad=True)
    assert clamp_abs(x, None) is x and clamp_abs(x, 3.0) is x
    y = clamp_abs(x, 1.0)
    assert torch.equal(y.detach(), torch.tensor([-1.0, -0.5, 0.25, 1.0]))
    y.sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 0.0]))


def test_frozen_convolutions_give_torchs_input_gradients():
    from pulse_sr.networks import frozen_conv

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(5, 4, 3, 3, dtype=torch.float64, generator=g)
    dw = torch.randn(4, 1, 4, 4, dtype=torch.float64, generator=g)
    cases = [(frozen_conv.conv2d, torch.nn.functional.conv2d, w, dict(padding=1)),
             (frozen_conv.conv2d, torch.nn.functional.conv2d, dw, dict(padding=(1, 2), groups=4)),
             (frozen_conv.conv_transpose2d, torch.nn.functional.conv_transpose2d, w.transpose(0, 1).contiguous(),
              dict(stride=2)),
             (frozen_conv.conv_transpose2d, torch.nn.functional.conv_transpose2d, dw, dict(stride=2, padding=1, groups=4))]
    for ours, theirs, weight, kw in cases:
        assert torch.autograd.gradcheck(lambda t: ours(t, weight, **kw), (x,))
        y = ours(x, weight, **kw)
        assert y.grad_fn is not None and type(y.grad_fn).__name__ == "_FrozenConvBackward"
        gy = torch.randn_like(y)
        (a,) = torch.autograd.grad(y, x, gy)
        (b,) = torch.autograd.grad(theirs(x, weight, **kw), x, gy)
        assert torch.allclose(a, b, atol=1e-12)
    # A weight that trains gets torch's own op (and its weight gradient).
    wt = w.clone().requires_grad_(True)
    assert "FrozenConv" not in type(frozen_conv.conv2d(x, wt, padding=1).grad_fn).__name__


def test_latent_gradients_match_with_trainable_weights():
    # Frozen weights take the adjoint-only path; trainable ones torch's: the W+ gradient is the same.
    model = tiny_stylegan2_model()
    G = model.generator
    ws = torch.randn(1, G.num_ws, G.w_dim)
    noise = G.make_noise(1, "const")
    grads = []
    for trainable in (False, True):
        G.requires_grad_(trainable)
        w = ws.clone().requires_grad_(True)
        (gw,) = torch.autograd.grad(G.synthesize(w, noise).square().mean(), w)
        grads.append(gw)
    G.requires_grad_(False)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-7) and float(grads[0].abs().sum()) > 0


def test_scale_channels_values_and_gradients():
    from pulse_sr.networks.layers import scale_channels

    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=g, requires_grad=True)
    s = torch.randn(2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    for shift in (None, torch.randn(3, dtype=torch.float64, generator=g, requires_grad=True),
                  torch.randn(2, 3, dtype=torch.float64, generator=g, requires_grad=True)):
        want = x * s[..., None, None] + (0 if shift is None else shift.reshape(-1 if shift.ndim == 1 else 2,
                                                                               *([] if shift.ndim == 1 else [3]), 1, 1))
        assert torch.allclose(scale_channels(x, s, shift), want)
        inputs = (x, s) if shift is None else (x, s, shift)
        assert torch.autograd.gradcheck(lambda *t: scale_channels(*t), inputs)
    # Non-contiguous input (a channels-last view) gives the same.
    xc = x.detach().contiguous(memory_format=torch.channels_last)
    assert torch.allclose(scale_channels(xc, s.detach()), x.detach() * s.detach()[..., None, None])
