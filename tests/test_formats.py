"""Tests for pulse_sr.formats: official TF pickles, PULSE state dicts, Gaussian fits, sniffing.

Every fixture is built here from tiny random generators; nothing is downloaded.
The layout conversions below are written independently of pulse_sr.formats (from the
official networks_stylegan.py variable names and the PULSE port's module tree),
so a wrong table in the loader cannot cancel out against the same table here.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from pulse_sr.formats import pulse_pt, sniff, tf_network, tf_pickle
from pulse_sr.errors import ModelFormatError, UnsafePickleError
from pulse_sr.formats.safetensors_file import save_generator
from pulse_sr.networks.stylegan1 import StyleGAN1Config, StyleGAN1Generator

FIXTURES = Path(__file__).parent / "fixtures"


# ---------------------------------------------------------------------------
# Tiny random generators


def tiny_config(**overrides) -> StyleGAN1Config:
    # fmap_base 128 / fmap_max 16 gives 16, 16, 16, 8 channels at 4..32 px, so
    # the loaders must recover a non-trivial fmap schedule from the shapes.
    kw = dict(resolution=32, latent_dim=32, w_dim=24, mapping_layers=3, mapping_fmaps=20,
              fmap_base=128, fmap_max=16)
    kw.update(overrides)
    return StyleGAN1Config(**kw)


def random_generator(cfg: StyleGAN1Config, seed: int = 0) -> StyleGAN1Generator:
    """A generator whose every parameter and buffer is random (no zero biases to hide bugs)."""
    torch.manual_seed(seed)
    G = StyleGAN1Generator(cfg)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for t in list(G.parameters()) + list(G.buffers()):
            t.copy_(torch.randn(t.shape, generator=g) * (0.5 if t.ndim == 1 else 1.0))
    return G.eval().requires_grad_(False)


def random_inputs(G: StyleGAN1Generator, batch: int = 2, seed: int = 7):
    g = torch.Generator().manual_seed(seed)
    ws = torch.randn(batch, G.num_ws, G.w_dim, generator=g)
    noise = G.make_noise(batch, "random", generator=g)
    z = torch.randn(batch, G.z_dim, generator=g)
    return ws, noise, z


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# ---------------------------------------------------------------------------
# Fake official pickles
#
# TF names (networks_stylegan.py) of synthesis layer i of a generator with
# log2 resolution L: layer 0 '4x4/Const', 1 '4x4/Conv', then for each
# R = 8..2**L: 'RxR/Conv0_up', 'RxR/Conv1'. Inside each: 'weight' [kh,kw,in,out]
# (layer 0 has 'const' [1,C,4,4] instead), 'bias', 'Noise/weight',
# 'StyleMod/weight' [w_dim, 2C], 'StyleMod/bias'. Mapping 'Dense{i}/weight'
# [in,out], 'Dense{i}/bias'. 'noise{i}' [1,1,r,r], 'ToRGB_lod{k}' for every
# growing stage, 'lod' scalars, and Gs's own 'dlatent_avg'.


@contextlib.contextmanager
def fake_dnnlib():
    """Install minimal ``dnnlib`` modules so pickle writes classes under their official paths."""
    names = ["dnnlib", "dnnlib.tflib", "dnnlib.tflib.network", "dnnlib.util"]
    saved = {n: sys.modules.get(n) for n in names}
    mods = {n: types.ModuleType(n) for n in names}

    class Network:
        def __init__(self, name, func, static_kwargs, components, variables, version=3):
            self._state = dict(version=version, name=name, static_kwargs=static_kwargs,
                               components=components, build_module_src="raise SystemExit('exec!')\n",
                               build_func_name=func, variables=variables)

        def __getstate__(self):
            return self._state

    class EasyDict(dict):
        pass

    Network.__module__, Network.__qualname__ = "dnnlib.tflib.network", "Network"
    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    mods["dnnlib.tflib.network"].Network = Network
    mods["dnnlib.util"].EasyDict = EasyDict
    mods["dnnlib"].tflib, mods["dnnlib"].util = mods["dnnlib.tflib"], mods["dnnlib.util"]
    mods["dnnlib.tflib"].network = mods["dnnlib.tflib.network"]
    sys.modules.update(mods)
    try:
        yield types.SimpleNamespace(Network=Network, EasyDict=EasyDict)
    finally:
        for n in names:
            if saved[n] is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = saved[n]


def tf_variables(G: StyleGAN1Generator):
    """(mapping, synthesis, Gs-own) variable dicts of ``G`` in the official TF layouts."""
    cfg = G.cfg
    arr = lambda t: t.detach().numpy().astype(np.float32).copy()  # noqa: E731
    conv = lambda t: arr(t.permute(2, 3, 1, 0))  # (out,in,kh,kw) -> [kh,kw,in,out]  # noqa: E731
    mapping = {}
    for i, layer in enumerate(G.mapping_network.layers):
        mapping[f"Dense{i}/weight"] = arr(layer.weight.t())
        mapping[f"Dense{i}/bias"] = arr(layer.bias)
    synthesis = {}
    scopes = ["4x4/Const", "4x4/Conv"] + [f"{2 ** k}x{2 ** k}/{n}" for k in range(3, cfg.resolution_log2 + 1)
                                          for n in ("Conv0_up", "Conv1")]
    for i, (scope, layer) in enumerate(zip(scopes, G.synthesis.layers)):
        if i == 0:
            synthesis[f"{scope}/const"] = arr(layer.const)
        else:
            synthesis[f"{scope}/weight"] = conv(layer.weight)
        synthesis[f"{scope}/Noise/weight"] = arr(layer.noise_strength)
        synthesis[f"{scope}/bias"] = arr(layer.bias)
        synthesis[f"{scope}/StyleMod/weight"] = arr(layer.style.weight.t())
        synthesis[f"{scope}/StyleMod/bias"] = arr(layer.style.bias)
    for i in range(len(G.synthesis.layers)):
        synthesis[f"noise{i}"] = arr(getattr(G.synthesis, f"noise_const{i}"))
    synthesis["lod"] = np.float32(0.0)  # a numpy scalar, as tflib.run returns it
    synthesis["ToRGB_lod0/weight"] = conv(G.synthesis.torgb.weight)
    synthesis["ToRGB_lod0/bias"] = arr(G.synthesis.torgb.bias)
    rng = np.random.default_rng(3)
    for lod in range(1, cfg.resolution_log2 - 1):  # progressive-growing leftovers
        c = cfg.nf(cfg.resolution_log2 - lod - 1)
        synthesis[f"ToRGB_lod{lod}/weight"] = rng.standard_normal((1, 1, c, 3)).astype(np.float32)
        synthesis[f"ToRGB_lod{lod}/bias"] = rng.standard_normal(3).astype(np.float32)
    own = {"lod": np.float32(0.0), "dlatent_avg": arr(G.w_avg)}
    return mapping, synthesis, own


def write_tf_pickle(path, G, layout="components", drop=(), extra=None, replace=None,
                    gs_func="G_style", syn_kwargs=None):
    """Write a fake official (G, D, Gs) pickle for ``G``.

    layout: 'components' (official: variables inside the component Networks),
    'prefixed' (all in Gs as 'G_mapping/...', 'G_synthesis/...'), or 'bare'
    (all in Gs without component scopes). ``drop``/``extra``/``replace`` use
    canonical names ('G_synthesis/4x4/Conv/bias', 'dlatent_avg').
    """
    mapping, synthesis, own = tf_variables(G)
    flat = {**{"G_mapping/" + k: v for k, v in mapping.items()},
            **{"G_synthesis/" + k: v for k, v in synthesis.items()}, **own}
    flat.update(replace or {})
    for name in drop:
        del flat[name]
    flat.update(extra or {})

    def part(prefix):
        return [(k[len(prefix):], v) for k, v in flat.items() if k.startswith(prefix)]

    common = dict(num_channels=3, resolution=G.cfg.resolution, label_size=0)
    before = {n: sys.modules.get(n) for n in ("dnnlib", "dnnlib.tflib", "dnnlib.tflib.network", "dnnlib.util")}
    with fake_dnnlib() as dn:
        def build(name, train_scale):
            mvars, svars = part("G_mapping/"), part("G_synthesis/")
            own_vars = [(k, v) for k, v in flat.items() if not k.startswith(("G_mapping/", "G_synthesis/"))]
            if layout == "components":
                gvars = own_vars
            elif layout == "prefixed":
                gvars, mvars, svars = list(flat.items()), [], []
            else:  # 'bare': Gs then holds 'lod' twice (its own and synthesis's), as a flattening would
                gvars, mvars, svars = mvars + svars + own_vars, [], []
            scale = lambda vs: [(k, v * train_scale) for k, v in vs]  # noqa: E731
            mapping_net = dn.Network("G_mapping", "G_mapping",
                                     dict(common, dlatent_broadcast=G.num_ws, mapping_lrmul=G.cfg.mapping_lrmul),
                                     {}, scale(mvars))
            synthesis_net = dn.Network("G_synthesis", "G_synthesis", dict(common, **(syn_kwargs or {})),
                                       {}, scale(svars))
            components = dn.EasyDict(mapping=mapping_net, synthesis=synthesis_net)
            return dn.Network(name, gs_func, dict(common), components, scale(gvars))

        G_train = build("G", 0.0)  # different values: the loader must take Gs, the third element
        D = dn.Network("D", "D_basic", dict(common), {},
                       [("lod", np.float32(0)), ("FromRGB_lod0/weight", np.ones((1, 1, 3, 8), np.float32))])
        Gs = build("Gs", 1.0)
        with open(path, "wb") as f:
            pickle.dump((G_train, D, Gs), f, protocol=4)  # the official files predate protocol 5
    assert {n: sys.modules.get(n) for n in before} == before  # the fake modules are gone again
    return path


class Evil:
    """Unpickling this runs a shell command, unless the loader refuses it."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.target}",))


# ---------------------------------------------------------------------------
# Official TF pickle


@pytest.mark.parametrize("layout", ["components", "prefixed", "bare"])
def test_tf_pickle_matches_source_generator(tmp_path, layout):
    cfg = tiny_config()
    src = random_generator(cfg)
    path = write_tf_pickle(tmp_path / "ffhq.pkl", src, layout=layout)
    loaded = tf_pickle.load_tf_pickle(path)
    G = loaded.generator

    assert loaded.has_mapping is True and loaded.format == "tf-pickle"
    assert G.cfg.resolution == 32 and G.cfg.w_dim == 24 and G.cfg.latent_dim == 32
    assert G.cfg.mapping_layers == 3 and G.cfg.mapping_fmaps == 20
    assert [G.cfg.nf(s) for s in range(1, 5)] == [16, 16, 16, 8]
    assert G.cfg.instance_norm_eps == 1e-8 and G.cfg.fused_scale_min_res == 128
    ws, noise, z = random_inputs(src)
    with torch.no_grad():
        assert max_diff(G.synthesize(ws, noise), src.synthesize(ws, noise)) <= 1e-5
        assert max_diff(G.mapping(z), src.mapping(z)) <= 1e-5
        const = src.make_noise(2, "const")
        assert max_diff(G.synthesize(ws, G.make_noise(2, "const")), src.synthesize(ws, const)) <= 1e-5
    assert torch.equal(G.w_avg, src.w_avg)
    for i in range(src.num_ws):
        assert torch.equal(getattr(G.synthesis, f"noise_const{i}"), getattr(src.synthesis, f"noise_const{i}"))


def test_tf_pickle_fused_scale_from_static_kwargs(tmp_path):
    # fused_scale=True fuses every upsampling layer; the loader must carry that over.
    cfg = tiny_config(resolution=16, fused_scale_min_res=8)
    src = random_generator(cfg, seed=4)
    G = tf_pickle.load_tf_pickle(write_tf_pickle(tmp_path / "f.pkl", src, syn_kwargs={"fused_scale": True})).generator
    assert G.cfg.fused_scale_min_res == 8
    kinds = [layer.kind for layer in G.synthesis.layers]
    assert kinds == ["const", "conv", "fused_up", "conv", "fused_up", "conv"]
    ws, noise, _ = random_inputs(src)
    with torch.no_grad():
        assert max_diff(G.synthesize(ws, noise), src.synthesize(ws, noise)) <= 1e-5


@pytest.mark.parametrize("name", ["G_synthesis/8x8/Conv1/StyleMod/bias", "G_mapping/Dense1/bias",
                                  "G_synthesis/noise3", "dlatent_avg", "G_synthesis/ToRGB_lod0/weight"])
def test_tf_pickle_missing_variable(tmp_path, name):
    src = random_generator(tiny_config(resolution=16))
    path = write_tf_pickle(tmp_path / "m.pkl", src, drop=[name])
    with pytest.raises(ModelFormatError, match="missing variable") as info:
        tf_pickle.load_tf_pickle(path)
    assert name in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("name", ["G_synthesis/8x8/Conv1/Extra/weight", "G_synthesis/ToRGB_lod7/weight",
                                  "G_mapping/LabelConcat/weight", "truncation"])
def test_tf_pickle_unknown_variable(tmp_path, name):
    src = random_generator(tiny_config(resolution=16))
    path = write_tf_pickle(tmp_path / "x.pkl", src, extra={name: np.zeros(4, np.float32)})
    with pytest.raises(ModelFormatError, match="unknown variables") as info:
        tf_pickle.load_tf_pickle(path)
    assert name in str(info.value)


def test_tf_pickle_wrong_shape(tmp_path):
    src = random_generator(tiny_config(resolution=16))
    name = "G_synthesis/8x8/Conv0_up/StyleMod/bias"
    path = write_tf_pickle(tmp_path / "s.pkl", src, replace={name: np.zeros(5, np.float32)})
    with pytest.raises(ModelFormatError, match="shape") as info:
        tf_pickle.load_tf_pickle(path)
    assert name in str(info.value)


def test_tf_pickle_rejects_other_architectures(tmp_path):
    src = random_generator(tiny_config(resolution=16))
    with pytest.raises(ModelFormatError, match="StyleGAN2 pickles are version 4"):
        tf_pickle.load_tf_pickle(write_tf_pickle(tmp_path / "a.pkl", src, gs_func="G_main"))
    with pytest.raises(ModelFormatError, match="use_pixel_norm"):
        tf_pickle.load_tf_pickle(write_tf_pickle(tmp_path / "b.pkl", src, syn_kwargs={"use_pixel_norm": True}))


def test_tf_pickle_refuses_code(tmp_path):
    target = tmp_path / "pwned"
    for i, payload in enumerate([Evil(target), (Evil(target), 1, 2), {"variables": [("x", Evil(target))]}]):
        path = tmp_path / f"evil{i}.pkl"
        path.write_bytes(pickle.dumps(payload, protocol=4))
        with pytest.raises(UnsafePickleError, match="system") as info:
            tf_pickle.load_tf_pickle(path)
        assert str(path) in str(info.value)
    assert not target.exists()
    # Anything else off the allow-list is refused too, harmless or not.
    path = tmp_path / "builtin.pkl"
    path.write_bytes(pickle.dumps(Path("x"), protocol=4))
    with pytest.raises(UnsafePickleError, match="pathlib"):
        tf_pickle.load_tf_pickle(path)


def test_restricted_unpickler_accepts_numpy1_names():
    # Official pickles were written by numpy 1 ('numpy.core.multiarray'); numpy 2 says 'numpy._core'.
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    data = pickle.dumps((a, np.float32(2.5)), protocol=3)  # GLOBAL opcodes spell the module out
    for old, new in ((b"numpy._core.multiarray", b"numpy.core.multiarray"),
                     (b"numpy.core.multiarray", b"numpy._core.multiarray")):
        b, s = tf_network.RestrictedUnpickler(io.BytesIO(data.replace(old, new))).load()
        assert np.array_equal(a, b) and float(s) == 2.5


@pytest.mark.parametrize("kind", ["random", "truncated", "empty", "torch-zip"])
def test_tf_pickle_corrupt(tmp_path, kind):
    path = tmp_path / f"{kind}.pkl"
    if kind == "random":
        path.write_bytes(b"\x13\x37" + np.random.default_rng(0).bytes(2000))
    elif kind == "truncated":
        full = write_tf_pickle(tmp_path / "full.pkl", random_generator(tiny_config(resolution=16))).read_bytes()
        path.write_bytes(full[: len(full) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        torch.save({"a": torch.ones(2)}, path)
    with pytest.raises(ModelFormatError) as info:
        tf_pickle.load_tf_pickle(path)
    assert str(path) in str(info.value)
    assert not isinstance(info.value, UnsafePickleError)


# ---------------------------------------------------------------------------
# PULSE state dicts
#
# Key mapping of the PULSE port (G_synthesis with an nn.ModuleDict 'blocks'):
#   layer 0   <- blocks.4x4.const, blocks.4x4.bias, blocks.4x4.epi1.*
#   layer 1   <- blocks.4x4.conv.{weight,bias}, blocks.4x4.epi2.*
#   layer 2k  <- blocks.RxR.conv0_up.{weight,bias}, blocks.RxR.epi1.*   (R = 2**(k+2))
#   layer 2k+1<- blocks.RxR.conv1.{weight,bias}, blocks.RxR.epi2.*
#   epiN.noise.weight -> noise_strength; epiN.style_mod.lin.{weight,bias} -> style.{weight,bias}
#   blocks.RxR.conv0_up.intermediate.kernel: the [1,2,1] blur buffer; torgb.{weight,bias}.
# Mapping (nn.Sequential): dense{i}.{weight,bias} -> mapping_network.layers.{i}.
# All tensors are already in torch layout.

BLUR = (torch.tensor([1.0, 2.0, 1.0])[:, None] * torch.tensor([1.0, 2.0, 1.0])[None, :] / 16)[None, None]


def pulse_layer_prefixes(resolution_log2: int):
    """(conv prefix or None for the const layer, epilogue prefix) for each synthesis layer."""
    out = [(None, "blocks.4x4.epi1"), ("blocks.4x4.conv", "blocks.4x4.epi2")]
    for k in range(3, resolution_log2 + 1):
        b = f"blocks.{2 ** k}x{2 ** k}"
        out += [(f"{b}.conv0_up", f"{b}.epi1"), (f"{b}.conv1", f"{b}.epi2")]
    return out


def pulse_state_dicts(G: StyleGAN1Generator):
    syn = {}
    for (conv, epi), layer in zip(pulse_layer_prefixes(G.cfg.resolution_log2), G.synthesis.layers):
        if conv is None:
            syn["blocks.4x4.const"] = layer.const.clone()
            syn["blocks.4x4.bias"] = layer.bias.clone()
        else:
            syn[f"{conv}.weight"] = layer.weight.clone()
            syn[f"{conv}.bias"] = layer.bias.clone()
            if conv.endswith("conv0_up"):
                syn[f"{conv}.intermediate.kernel"] = BLUR.clone()
        syn[f"{epi}.noise.weight"] = layer.noise_strength.clone()
        syn[f"{epi}.style_mod.lin.weight"] = layer.style.weight.clone()
        syn[f"{epi}.style_mod.lin.bias"] = layer.style.bias.clone()
    syn["torgb.weight"] = G.synthesis.torgb.weight.clone()
    syn["torgb.bias"] = G.synthesis.torgb.bias.clone()
    mapping = {}
    for i, layer in enumerate(G.mapping_network.layers):
        mapping[f"dense{i}.weight"] = layer.weight.clone()
        mapping[f"dense{i}.bias"] = layer.bias.clone()
    return syn, mapping


def test_pulse_state_dicts_match_source_generator(tmp_path):
    src = random_generator(tiny_config(instance_norm_eps=1e-5, resolution=32))
    syn, mapping = pulse_state_dicts(src)
    torch.save(syn, tmp_path / "synthesis.pt")
    torch.save(mapping, tmp_path / "mapping.pt")

    loaded = pulse_pt.load_pulse_state_dicts(tmp_path / "synthesis.pt", tmp_path / "mapping.pt")
    G = loaded.generator
    assert loaded.has_mapping is True
    assert G.cfg.instance_norm_eps == 1e-5
    assert (G.cfg.resolution, G.cfg.w_dim, G.cfg.latent_dim, G.cfg.mapping_layers) == (32, 24, 32, 3)
    assert [G.cfg.nf(s) for s in range(1, 5)] == [16, 16, 16, 8]
    ws, noise, z = random_inputs(src)
    with torch.no_grad():
        assert max_diff(G.synthesize(ws, noise), src.synthesize(ws, noise)) <= 1e-5
        assert max_diff(G.mapping(z), src.mapping(z)) <= 1e-5
    # The port stores no w_avg or noise maps: zero, and fixed seeded maps.
    assert torch.equal(G.w_avg, torch.zeros(24))
    G2 = pulse_pt.load_pulse_state_dicts(tmp_path / "synthesis.pt", tmp_path / "mapping.pt").generator
    assert torch.equal(G2.synthesis.noise_const5, G.synthesis.noise_const5)

    loaded3 = pulse_pt.load_pulse_state_dicts(tmp_path / "synthesis.pt")
    G3 = loaded3.generator
    assert loaded3.has_mapping is False
    with torch.no_grad():
        assert max_diff(G3.synthesize(ws, noise), src.synthesize(ws, noise)) <= 1e-5


def test_pulse_state_dicts_legacy_torch_serialization(tmp_path):
    # PULSE's files date from 2020; accept the pre-zip torch.save format too.
    src = random_generator(tiny_config(instance_norm_eps=1e-5, resolution=16))
    syn, _ = pulse_state_dicts(src)
    path = tmp_path / "synthesis.pt"
    torch.save(syn, path, _use_new_zipfile_serialization=False)
    assert sniff.detect_format(path) == "pulse-state-dict"
    G = pulse_pt.load_pulse_state_dicts(path).generator
    ws, noise, _ = random_inputs(src)
    with torch.no_grad():
        assert max_diff(G.synthesize(ws, noise), src.synthesize(ws, noise)) <= 1e-5


@pytest.mark.parametrize("change", ["missing", "unknown", "shape", "blur", "mapping-missing", "mapping-width"])
def test_pulse_state_dicts_mismatch(tmp_path, change):
    src = random_generator(tiny_config(resolution=16))
    syn, mapping = pulse_state_dicts(src)
    expect = {"missing": "blocks.8x8.epi2.style_mod.lin.bias", "unknown": "blocks.8x8.epi2.extra",
              "shape": "synthesis.layers.3.style.bias", "blur": "blocks.16x16.conv0_up.intermediate.kernel",
              "mapping-missing": "dense2.bias", "mapping-width": "expects 24-d"}[change]
    if change == "missing":
        del syn[expect]
    elif change == "unknown":
        syn[expect] = torch.zeros(3)
    elif change == "shape":
        syn["blocks.8x8.epi2.style_mod.lin.bias"] = torch.zeros(5)
    elif change == "blur":
        syn[expect] = torch.ones(1, 1, 3, 3) / 9
    elif change == "mapping-missing":
        del mapping[expect]
    else:
        mapping["dense2.weight"] = torch.zeros(30, 20)
    torch.save(syn, tmp_path / "synthesis.pt")
    torch.save(mapping, tmp_path / "mapping.pt")
    with pytest.raises(ModelFormatError) as info:
        pulse_pt.load_pulse_state_dicts(tmp_path / "synthesis.pt", tmp_path / "mapping.pt")
    assert expect in str(info.value)


@pytest.mark.parametrize("which", ["synthesis", "mapping"])
def test_pulse_state_dicts_refuse_code(tmp_path, which):
    target = tmp_path / "pwned"
    good, _ = pulse_state_dicts(random_generator(tiny_config(resolution=16)))
    torch.save(good, tmp_path / "synthesis.pt")
    evil = tmp_path / f"{which}_evil.pt"
    torch.save({"dense0.weight": Evil(target)}, evil)
    args = (evil,) if which == "synthesis" else (tmp_path / "synthesis.pt", evil)
    with pytest.raises(UnsafePickleError, match="system") as info:
        pulse_pt.load_pulse_state_dicts(*args)
    assert str(evil) in str(info.value)
    assert not target.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the plain pickle
@pytest.mark.parametrize("kind", ["random", "truncated", "empty", "plain-pickle", "not-a-dict", "missing"])
def test_torch_files_corrupt(tmp_path, kind):
    path = tmp_path / "synthesis.pt"
    if kind == "random":
        path.write_bytes(b"\x13\x37" + np.random.default_rng(1).bytes(2000))
    elif kind == "truncated":
        torch.save({"a": torch.ones(1000)}, path)
        path.write_bytes(path.read_bytes()[:1500])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "plain-pickle":
        path.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    elif kind == "not-a-dict":
        torch.save([torch.ones(2)], path)
    for load in (pulse_pt.load_pulse_state_dicts, pulse_pt.load_gaussian_fit_pt):
        with pytest.raises(ModelFormatError) as info:
            load(path)
        assert str(path) in str(info.value)
        assert not isinstance(info.value, UnsafePickleError)


# ---------------------------------------------------------------------------
# Gaussian fit


def test_gaussian_fit(tmp_path):
    g = torch.Generator().manual_seed(5)
    mean, std = torch.randn(512, generator=g), torch.rand(512, generator=g) + 0.1
    torch.save({"mean": mean, "std": std}, tmp_path / "gaussian_fit.pt")
    fit = pulse_pt.load_gaussian_fit_pt(tmp_path / "gaussian_fit.pt")
    assert set(fit) == {"mean", "std"}
    assert torch.equal(fit["mean"], mean) and torch.equal(fit["std"], std)
    assert fit["mean"].dtype == torch.float32


@pytest.mark.parametrize("content, message", [
    ({"mean": torch.zeros(512)}, "missing keys \\['std'\\]"),
    ({"mean": torch.zeros(256), "std": torch.ones(256)}, "expected \\(512,\\)"),
    ({"mean": torch.zeros(512), "std": torch.zeros(512)}, "non-positive std"),
    ({"mean": torch.zeros(512), "std": torch.ones(512), "n": torch.ones(1)}, "unknown keys \\['n'\\]"),
    ({"mean": torch.zeros(512, dtype=torch.long), "std": torch.ones(512)}, "1-D float tensor"),
])
def test_gaussian_fit_invalid(tmp_path, content, message):
    path = tmp_path / "gaussian_fit.pt"
    torch.save(content, path)
    with pytest.raises(ModelFormatError, match=message) as info:
        pulse_pt.load_gaussian_fit_pt(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------
# Format detection


def test_detect_format(tmp_path):
    G = random_generator(tiny_config(resolution=8))
    assert sniff.detect_format(write_tf_pickle(tmp_path / "g.pkl", G)) == "tf-pickle"
    torch.save({"a": torch.ones(2)}, tmp_path / "s.pt")
    assert sniff.detect_format(tmp_path / "s.pt") == "pulse-state-dict"
    assert sniff.detect_format(save_generator(G, tmp_path / "g.safetensors")) == "pulse-sr"
    for name, data in [("empty", b""), ("random", b"\x13\x37" + np.random.default_rng(2).bytes(500)),
                       ("text", b"hello world, not a model\n"), ("short-header", b"\x05" + b"\x00" * 7 + b"{}")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ModelFormatError) as info:
            sniff.detect_format(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)
    with pytest.raises(ModelFormatError, match="cannot read"):
        sniff.detect_format(tmp_path / "does-not-exist.pkl")


# ---------------------------------------------------------------------------
# Equivalence with the PULSE reference port
#
# tests/fixtures/reference_port.json holds outputs of the reference port
# (adamian98/pulse G_synthesis) for deterministic weights; its 'description'
# says how they were made. The recipe is repeated here from key names and
# shapes alone: parameters in sorted key order, each torch.randn(shape) from
# one torch.Generator seeded with R (times 0.5 for 1-D ones), blur buffers kept
# at [1,2,1]; then ws (1, num_ws, 512) and one (1, 1, r, r) noise map per layer.


def reference_parameter_shapes(resolution: int, fmap_base=8192, fmap_max=512, w_dim=512):
    nf = lambda s: min(int(fmap_base / 2.0 ** s), fmap_max)  # noqa: E731
    shapes = {}

    def epilogue(prefix, c):
        shapes[f"{prefix}.noise.weight"] = (c,)
        shapes[f"{prefix}.style_mod.lin.weight"] = (2 * c, w_dim)
        shapes[f"{prefix}.style_mod.lin.bias"] = (2 * c,)

    c = nf(1)
    shapes["blocks.4x4.const"], shapes["blocks.4x4.bias"] = (1, c, 4, 4), (c,)
    epilogue("blocks.4x4.epi1", c)
    shapes["blocks.4x4.conv.weight"], shapes["blocks.4x4.conv.bias"] = (c, c, 3, 3), (c,)
    epilogue("blocks.4x4.epi2", c)
    for k in range(3, resolution.bit_length()):
        b, cin, c = f"blocks.{2 ** k}x{2 ** k}", c, nf(k - 1)
        shapes[f"{b}.conv0_up.weight"], shapes[f"{b}.conv0_up.bias"] = (c, cin, 3, 3), (c,)
        epilogue(f"{b}.epi1", c)
        shapes[f"{b}.conv1.weight"], shapes[f"{b}.conv1.bias"] = (c, c, 3, 3), (c,)
        epilogue(f"{b}.epi2", c)
    shapes["torgb.weight"], shapes["torgb.bias"] = (3, c, 1, 1), (3,)
    return shapes


@pytest.mark.parametrize("resolution", [64, 1024])
def test_matches_reference_port(tmp_path, resolution):
    case = json.loads((FIXTURES / "reference_port.json").read_text())["cases"][str(resolution)]
    shapes = reference_parameter_shapes(resolution)
    listing = "\n".join(f"{k}:{tuple(s)}" for k, s in sorted(shapes.items()))
    assert hashlib.sha256(listing.encode()).hexdigest() == case["parameter_keys_sha256"]

    g = torch.Generator().manual_seed(case["seed"])
    sd = {k: torch.randn(shapes[k], generator=g) * (0.5 if len(shapes[k]) == 1 else 1.0) for k in sorted(shapes)}
    sd.update({k: BLUR.clone() for k in case["buffer_keys"]})
    num_ws = 2 * (resolution.bit_length() - 1) - 2
    ws = torch.randn(1, num_ws, 512, generator=g)
    noise = [torch.randn(1, 1, 2 ** (i // 2 + 2), 2 ** (i // 2 + 2), generator=g) for i in range(num_ws)]
    torch.save(sd, tmp_path / "synthesis.pt")
    del sd

    G = pulse_pt.load_pulse_state_dicts(tmp_path / "synthesis.pt").generator
    assert G.cfg.resolution == resolution and G.cfg.instance_norm_eps == 1e-5
    with torch.inference_mode():
        out = G.synthesize(ws, noise)
    s = resolution // 8
    got = out[0, :, ::s, ::s].flatten()
    want = torch.tensor(case["slice"])
    assert got.shape == want.shape == (192,)
    assert max_diff(got, want) <= 1e-4
    assert abs(out.double().mean().item() - case["mean"]) <= 1e-5
    assert abs(out.double().abs().mean().item() - case["abs_mean"]) <= 1e-5
