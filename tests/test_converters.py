"""Converters of rosinality checkpoints and NVIDIA's StyleGAN2 TF pickles to NVIDIA's torch layout.

The fixtures in ``fixtures/generators/`` were recorded with the public code
(see their README): the rosinality one carries the key set and shapes of
NVIDIA's ``Generator`` for its config, the TF one the whole state dict NVIDIA's
``legacy.py`` converts it to. Image equivalence is tested with the network.
"""

import pathlib
import re
from pathlib import Path

import pytest
import torch

from conftest import rel_err
from generator_files import write_rosinality_checkpoints, write_tf_stylegan2_pickle
from pulse_sr.errors import ModelFormatError, UnsafePickleError
from pulse_sr.formats.rosinality import is_rosinality_state, read_rosinality_checkpoint, rosinality_to_nvidia
from pulse_sr.formats.stylegan2_layout import expected_shapes, fit_channel_base, generator_kwargs
from pulse_sr.formats.tf_network import TFNetworkStub as _TFNetworkStub
from pulse_sr.formats.tf_network import unpickle_tf as _unpickle_restricted
from pulse_sr.formats.tf_pickle import load_tf_pickle
from pulse_sr.formats.tf_stylegan2 import is_tf_stylegan2, read_tf_stylegan2_pickle, tf_sg2_to_nvidia

FIXTURES = Path(__file__).parent / "fixtures" / "generators"
BUILD_SRC = "# the official pickles carry networks_stylegan2.py here\n"


@pytest.fixture(scope="module")
def rosi():
    return torch.load(FIXTURES / "rosinality-64.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def tf_fx():
    return torch.load(FIXTURES / "tf-stylegan2-64.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def tf_gs(tf_fx, tmp_path_factory):
    path = write_tf_stylegan2_pickle(tmp_path_factory.mktemp("tf") / "sg2.pkl", tf_fx, BUILD_SRC)
    return read_tf_stylegan2_pickle(path)


def _shapes(state):
    return {k: tuple(v.shape) for k, v in state.items()}


def _check_layout(kwargs, state, resolution):
    """What any converted 64-px generator must look like, independently of expected_shapes()."""
    assert kwargs["c_dim"] == 0 and kwargs["img_resolution"] == resolution
    n = kwargs["mapping_kwargs"]["num_layers"]
    assert {f"mapping.fc{i}.{p}" for i in range(n) for p in ("weight", "bias")} <= set(state)
    assert state["mapping.w_avg"].shape == (kwargs["w_dim"],)
    assert state["synthesis.b4.const"].shape[1:] == (4, 4)
    blocks = sorted({int(m.group(1)) for k in state for m in [re.match(r"synthesis\.b(\d+)\.", k)] if m})
    assert blocks == [2 ** k for k in range(2, resolution.bit_length())]
    for r in blocks:
        for layer in (["conv1"] if r == 4 else ["conv0", "conv1"]):
            assert state[f"synthesis.b{r}.{layer}.noise_const"].shape == (r, r)
            assert state[f"synthesis.b{r}.{layer}.noise_strength"].shape == ()
            assert state[f"synthesis.b{r}.{layer}.weight"].shape[2:] == (3, 3)
        assert state[f"synthesis.b{r}.torgb.weight"].shape == (kwargs["img_channels"],
                                                               state[f"synthesis.b{r}.conv1.weight"].shape[0], 1, 1)
        assert torch.allclose(state[f"synthesis.b{r}.resample_filter"],
                              torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64)
    assert all(v.dtype == torch.float32 and v.is_contiguous() for v in state.values())


# ---------------------------------------------------------------------------
# rosinality


def test_rosinality_layout_matches_recorded_nvidia_shapes(rosi):
    kwargs, state = rosinality_to_nvidia(rosi["g_ema"], rosi["latent_avg"], what="rosinality-64.pt")
    assert _shapes(state) == {k: tuple(v) for k, v in rosi["nvidia_shapes"].items()}
    assert expected_shapes(kwargs) == _shapes(state)
    _check_layout(kwargs, state, 64)
    assert kwargs["z_dim"] == kwargs["w_dim"] == rosi["args"]["latent"] == 32
    assert kwargs["mapping_kwargs"] == {"num_layers": 2, "lr_multiplier": 0.01}
    syn = kwargs["synthesis_kwargs"]
    assert (syn["channel_base"], syn["channel_max"], syn["architecture"]) == (512, 16, "skip")
    g = rosi["g_ema"]
    assert torch.equal(state["synthesis.b4.const"], g["input.input"][0])
    assert torch.equal(state["synthesis.b16.conv0.weight"], g["convs.2.conv.weight"][0])  # no flip
    assert torch.equal(state["synthesis.b64.conv1.noise_const"], g["noises.noise_8"][0, 0])
    assert state["synthesis.b8.conv0.noise_strength"] == g["convs.0.noise.weight"][0]
    assert torch.equal(state["synthesis.b32.torgb.bias"], g["to_rgbs.2.bias"].flatten())
    assert torch.equal(state["mapping.w_avg"], rosi["latent_avg"])


def test_rosinality_recorded_outputs_have_expected_shapes(rosi):
    assert rosi["mapping"].shape == (2, 32) and rosi["image"].shape == (2, 3, 64, 64)


def test_rosinality_without_latent_avg_gets_zeros(rosi):
    _, state = rosinality_to_nvidia(rosi["g_ema"], None)
    assert torch.equal(state["mapping.w_avg"], torch.zeros(32))


def test_rosinality_missing_and_unknown_keys_are_named(rosi):
    g = dict(rosi["g_ema"])
    del g["convs.3.noise.weight"]
    with pytest.raises(ModelFormatError, match=r"rosi\.pt.*missing keys.*convs\.3\.noise\.weight"):
        rosinality_to_nvidia(g, what="rosi.pt")
    g = dict(rosi["g_ema"], **{"convs.3.extra": torch.zeros(1)})
    with pytest.raises(ModelFormatError, match=r"unknown keys.*convs\.3\.extra"):
        rosinality_to_nvidia(g)


def test_rosinality_bad_shapes_and_sizes_are_refused(rosi):
    g = dict(rosi["g_ema"])
    g["convs.2.conv.modulation.bias"] = torch.zeros(7)
    with pytest.raises(ModelFormatError, match=r"convs\.2\.conv\.modulation\.bias.*synthesis\.b16\.conv0\.affine"):
        rosinality_to_nvidia(g)
    g = dict(rosi["g_ema"])
    g["style.1.weight"] = torch.zeros(32, 5000)
    with pytest.raises(ModelFormatError, match="latent.*5000"):
        rosinality_to_nvidia(g)
    g = dict(rosi["g_ema"])
    g["convs.0.conv.blur.kernel"] = torch.ones(4, 4)
    with pytest.raises(ModelFormatError, match="blur kernel"):
        rosinality_to_nvidia(g)
    with pytest.raises(ModelFormatError, match="size=128"):
        rosinality_to_nvidia(rosi["g_ema"], args={"size": 128})
    with pytest.raises(ModelFormatError, match="NaN"):
        rosinality_to_nvidia(dict(rosi["g_ema"], **{"input.input": torch.full((1, 16, 4, 4), float("nan"))}))


def test_rosinality_both_file_forms(rosi, tmp_path):
    converted, training = write_rosinality_checkpoints(tmp_path, rosi)
    a = read_rosinality_checkpoint(converted)
    b = read_rosinality_checkpoint(training)
    assert (a["form"], b["form"]) == ("converted", "training")
    assert torch.equal(a["latent_avg"], rosi["latent_avg"]) and b["latent_avg"] is None
    assert b["args"]["size"] == 64 and b["args"]["r1"] == 10.0 and isinstance(b["args"], dict)
    assert is_rosinality_state(a) and is_rosinality_state(b)
    _, sa = rosinality_to_nvidia(a["g_ema"], a["latent_avg"])
    _, sb = rosinality_to_nvidia(b["g_ema"], b["latent_avg"], args=b["args"])
    assert set(sa) == set(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa if k != "mapping.w_avg")


class _Planted:
    """Unpickling this would touch a marker file: a weights-only load must refuse it first."""

    marker = None

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_rosinality_checkpoint_with_another_class_is_unsafe(rosi, tmp_path):
    planted = _Planted()
    planted.marker = str(tmp_path / "ran")
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": rosi["g_ema"], "latent_avg": rosi["latent_avg"], "g": planted}, path)
    with pytest.raises(UnsafePickleError, match=r"evil\.pt: checkpoint asks for .*refusing") as info:
        read_rosinality_checkpoint(path)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "ran").exists()

    path = tmp_path / "class.pt"
    torch.save({"g_ema": rosi["g_ema"], "args": _Planted}, path)
    with pytest.raises(UnsafePickleError, match="_Planted"):
        read_rosinality_checkpoint(path)


def test_rosinality_other_files_are_refused(rosi, tmp_path):
    path = tmp_path / "psp.pt"
    torch.save({"state_dict": {}, "opts": {}}, path)
    with pytest.raises(ModelFormatError, match=r"has keys \['opts', 'state_dict'\].*g_ema"):
        read_rosinality_checkpoint(path)
    path = tmp_path / "other.pt"
    torch.save({"g_ema": {"layer.weight": torch.zeros(1)}}, path)
    with pytest.raises(ModelFormatError, match="lacks rosinality's generator names"):
        read_rosinality_checkpoint(path)
    path = tmp_path / "swagan.pt"
    torch.save({"g_ema": rosi["g_ema"], "args": {"arch": "swagan"}}, path)
    with pytest.raises(ModelFormatError, match="swagan"):
        read_rosinality_checkpoint(path)
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelFormatError, match="not a readable torch checkpoint"):
        read_rosinality_checkpoint(path)
    assert not is_rosinality_state({"g_ema": {"style.1.weight": 0}}) and not is_rosinality_state([])


# ---------------------------------------------------------------------------
# NVIDIA's StyleGAN2 TF pickles


def test_tf_conversion_equals_recorded_legacy_state(tf_fx, tf_gs):
    kwargs, state = tf_sg2_to_nvidia(tf_gs, what="sg2.pkl")
    ref = tf_fx["nvidia_state"]
    assert set(state) == set(ref)
    assert all(torch.equal(state[k], ref[k]) for k in ref), [k for k in ref if not torch.equal(state[k], ref[k])]
    _check_layout(kwargs, state, 64)
    nv = tf_fx["nvidia_init_kwargs"]
    for key in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"):
        assert kwargs[key] == nv[key]
    for key in ("channel_base", "channel_max", "architecture", "resample_filter"):
        assert kwargs["synthesis_kwargs"][key] == nv[key]
    for key in ("num_layers", "lr_multiplier"):
        assert kwargs["mapping_kwargs"][key] == nv["mapping_kwargs"][key]


def test_tf_up_conv_is_flipped(tf_fx, tf_gs):
    _, state = tf_sg2_to_nvidia(tf_gs)
    tf_weight = dict(tf_fx["variables"]["synthesis"])["16x16/Conv0_up/weight"]
    assert torch.equal(state["synthesis.b16.conv0.weight"], tf_weight.flip(0, 1).permute(3, 2, 0, 1))
    mod_bias = dict(tf_fx["variables"]["synthesis"])["16x16/Conv1/mod_bias"]
    assert torch.equal(state["synthesis.b16.conv1.affine.bias"], mod_bias + 1)


def test_tf_hostile_build_module_src_does_not_run(tf_fx, tmp_path):
    marker = tmp_path / "marker"
    src = f"open({str(marker)!r}, 'w').write('ran')\n"
    path = write_tf_stylegan2_pickle(tmp_path / "hostile.pkl", tf_fx, src)
    _, _, Gs = _unpickle_restricted(path)
    assert Gs.state["build_module_src"] == src and not marker.exists()
    tf_sg2_to_nvidia(read_tf_stylegan2_pickle(path))
    assert not marker.exists()


def test_is_tf_stylegan2_tells_v1_from_v2(tf_gs, tmp_path, tf_fx):
    v1 = _TFNetworkStub()
    v1.__setstate__({"version": 4, "name": "Gs", "build_func_name": "G_style", "static_kwargs": {},
                     "components": {}, "build_module_src": "",
                     "variables": [("G_synthesis/4x4/Const/StyleMod/weight", torch.zeros(2, 2).numpy())]})
    assert is_tf_stylegan2(tf_gs) and not is_tf_stylegan2(v1) and not is_tf_stylegan2({"name": "Gs"})
    with pytest.raises(ModelFormatError, match="G_style"):
        tf_sg2_to_nvidia(v1)
    # ...and the TF loader hands a StyleGAN2 pickle to the StyleGAN2 conversion
    path = write_tf_stylegan2_pickle(tmp_path / "sg2.pkl", tf_fx, BUILD_SRC)
    assert load_tf_pickle(path).format == "tf-stylegan2"


def _clone(net: _TFNetworkStub) -> _TFNetworkStub:
    """A deep copy of a Network stub (components included) that tests may edit."""
    state = dict(net.state)
    state["static_kwargs"] = dict(net.static_kwargs)
    state["components"] = {role: _clone(c) for role, c in net.components.items()}
    state["variables"] = list(net.variables)
    out = _TFNetworkStub()
    out.__setstate__(state)
    return out


def _with_kwargs(gs, **changes):
    gs = _clone(gs)
    for key, value in changes.items():
        for net in (gs, gs.components["mapping"], gs.components["synthesis"]):
            net.state["static_kwargs"][key] = value
    return gs


@pytest.mark.parametrize("changes, message", [
    ({"label_size": 10}, "label_size=10"),
    ({"nonlinearity": "relu"}, "nonlinearity='relu'"),
    ({"normalize_latents": False}, "normalize_latents=False"),
    ({"synthesis_func": "G_synthesis_stylegan_revised"}, "synthesis_func"),
    ({"fmap_min_channels": 4}, r"unknown static_kwargs \['fmap_min_channels'\]"),
    ({"resolution": 128}, "resolution=128.*64"),
    ({"architecture": "bogus"}, "architecture"),
    ({"resample_kernel": None}, "resample_kernel"),
])
def test_tf_unsupported_static_kwargs_are_refused(tf_gs, changes, message):
    with pytest.raises(ModelFormatError, match=message):
        tf_sg2_to_nvidia(_with_kwargs(tf_gs, **changes))


def test_tf_missing_variable_and_wrong_architecture_are_named(tf_gs):
    gs = _clone(tf_gs)
    synthesis = gs.components["synthesis"]
    synthesis.state["variables"] = [(n, v) for n, v in synthesis.variables if n != "32x32/Conv1/noise_strength"]
    with pytest.raises(ModelFormatError, match=r"missing variables.*G_synthesis/32x32/Conv1/noise_strength"):
        tf_sg2_to_nvidia(gs)
    # Every block has a ToRGB, so 'orig' (only the last one) must find unknown ones.
    with pytest.raises(ModelFormatError, match=r"architecture .orig.*unknown variables.*x16/ToRGB"):
        tf_sg2_to_nvidia(_with_kwargs(tf_gs, architecture="orig"))


# ---------------------------------------------------------------------------
# The NVIDIA layout itself


def test_channel_base_fits_and_explicit_channels():
    config_f = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32}
    assert fit_channel_base(config_f) == (32768, 512)
    assert fit_channel_base({r: c for r, c in config_f.items() if r <= 256}) == (32768, 512)
    assert fit_channel_base({4: 16, 8: 16, 16: 16, 32: 16, 64: 8}) == (512, 16)
    rising = {4: 512, 8: 512, 16: 512, 32: 512, 64: 1024}  # rosinality's channel_multiplier=4
    assert fit_channel_base(rising) is None
    kwargs = generator_kwargs(z_dim=8, w_dim=8, resolution=64, img_channels=3, channels=rising, mapping_layers=2,
                              lr_multiplier=0.01)
    syn = kwargs["synthesis_kwargs"]
    assert syn["channels"] == rising and "channel_base" not in syn
    assert expected_shapes(kwargs)["synthesis.b64.conv0.weight"] == (1024, 512, 3, 3)


# ---------------------------------------------------------------------------
# End to end: the file as its authors' tools write it -> load_file -> our StyleGAN2
# against the outputs of rosinality's / NVIDIA's own code (the 1e-4 measure).

def _check_outputs(path, fx, fmt):
    """Load ``path`` with load_file; its StyleGAN2 must reproduce the fixture's mapping and image."""
    from pulse_sr.formats import load_file
    from pulse_sr.networks.stylegan2 import StyleGAN2Generator

    loaded = load_file(path)
    G = loaded.generator
    assert isinstance(G, StyleGAN2Generator) and loaded.format == fmt
    assert rel_err(G.mapping(fx["z"]), fx["mapping"]) < 1e-4
    ws = G.mapping(fx["z"])[:, None].repeat(1, G.num_ws, 1)
    with torch.no_grad():
        img = G.synthesize(ws, [None] * len(G.noise_resolutions))
    assert img.shape == fx["image"].shape
    assert rel_err(img, fx["image"]) < 1e-4
    return loaded


def test_rosinality_files_match_rosinality_outputs(rosi, tmp_path):
    from pulse_sr.formats import sniff

    for path in write_rosinality_checkpoints(tmp_path, rosi):
        assert sniff.detect_format(path) == "rosinality"
        loaded = _check_outputs(path, rosi, "rosinality")
    assert loaded.metadata["checkpoint"] == "training"


def test_tf_stylegan2_pickle_matches_nvidia_conversion(tf_fx, tmp_path):
    from pulse_sr.formats import sniff

    marker = tmp_path / "marker"
    path = write_tf_stylegan2_pickle(tmp_path / "sg2.pkl", tf_fx, f"open({str(marker)!r}, 'w').write('ran')\n")
    assert sniff.detect_format(path) == "tf-pickle"
    _check_outputs(path, tf_fx, "tf-stylegan2")
    assert not marker.exists()


def test_legacy_converted_kwargs_build_our_network(tf_fx):
    # legacy.py writes the mapping/synthesis kwargs of NVIDIA's converted pickles (ffhq.pkl and
    # friends): embed_features, layer_features, activation, w_avg_beta, use_noise, ... are all known.
    from pulse_sr.networks.stylegan2 import StyleGAN2Generator

    G = StyleGAN2Generator.from_init_kwargs(tf_fx["nvidia_init_kwargs"])
    own = {k.replace("mapping_network.", "mapping.", 1): tuple(v.shape) for k, v in G.state_dict().items()}
    assert own == {k: tuple(v.shape) for k, v in tf_fx["nvidia_state"].items()}
