"""One generator base for every family: configs that round-trip, the stage hook, save_model/load_model for
StyleGAN v1, 2 and 3 (T and R, from NVIDIA-layout pickles), the prior computed on the run's device,
--gaussian-fit at any W width, and inspect_model."""

import json

import pytest
import torch
from click.testing import CliRunner

import pulse_sr
from conftest import tiny_generator, tiny_model
from nvidia_pickles import hostile_source, write_snapshot
from pulse_sr.errors import ModelFormatError, SettingsError
from pulse_sr.networks import FAMILIES, build_generator, config_from_dict, generator_class
from pulse_sr.networks.base import Generator
from pulse_sr.search.prior import GaussianPrior, compute_gaussian_fit

import test_stylegan2
import test_stylegan3


def tiny_sg2():
    torch.manual_seed(0)
    return pulse_sr.StyleGAN2Generator(z_dim=8, w_dim=8, img_resolution=16, channel_base=64, channel_max=8,
                                       mapping_layers=2, conv_clamp=256.0).eval().requires_grad_(False)


def tiny_sg3(radial=False):
    torch.manual_seed(0)
    return pulse_sr.StyleGAN3Generator(z_dim=8, w_dim=8, img_resolution=16, img_channels=3, channel_base=256,
                                       channel_max=16, num_layers=4, use_radial_filters=radial,
                                       mapping_kwargs={"num_layers": 2}).eval().requires_grad_(False)


GENERATORS = {"stylegan1": tiny_generator, "stylegan2": tiny_sg2, "stylegan3": tiny_sg3}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_is_a_generator_with_a_config_that_round_trips(family):
    G = GENERATORS[family]()
    assert isinstance(G, Generator) and G.family == family and generator_class(family) is type(G)
    d = G.cfg.to_dict()
    assert d["family"] == family and json.loads(json.dumps(d)) == d  # JSON-able as it is
    again = config_from_dict(json.loads(json.dumps(d)))
    assert again == G.cfg and type(again) is type(G.cfg)
    H = build_generator(again)
    assert {k: v.shape for k, v in H.state_dict().items()} == {k: v.shape for k, v in G.state_dict().items()}
    assert (G.num_ws, G.w_dim, G.z_dim, G.resolution) == (G.cfg.num_ws, G.cfg.w_dim, G.cfg.z_dim, G.cfg.resolution)
    assert G.mapping(torch.randn(2, G.z_dim)).shape == (2, G.w_dim) and G.w_avg.shape == (G.w_dim,)
    assert len(G.make_noise(2, "const")) == len(G.noise_resolutions) == len(G.make_noise(2, "zero"))
    assert G.sample(torch.randn(2, G.z_dim), truncation_psi=0.5).shape == (2, 3, 16, 16)
    # Only StyleGAN v1 has several implementations, so only it can switch them.
    assert hasattr(G, "set_impl") == (family == "stylegan1")
    with pytest.raises(ValueError, match="a 'stylegan9' config"):
        type(G.cfg).from_dict({**d, "family": "stylegan9"})


@pytest.mark.parametrize("family", FAMILIES)
def test_synthesis_resumes_from_any_stage(family):
    G = GENERATORS[family]()
    ws = torch.randn(2, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(1))
    noise = G.make_noise(2, "random", generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = G.synthesize(ws, noise)
        sizes = []
        for k in range(1, G.num_stages + 1):
            features = G.synthesize_until(ws, noise, k)
            assert isinstance(features, tuple) and torch.is_tensor(features[0])
            sizes.append(G.stage_resolution(k))
            if k < G.num_stages:
                torch.testing.assert_close(G.synthesize_from(features, k, ws, noise), whole, rtol=0, atol=1e-6)
    assert sizes == sorted(sizes) or family == "stylegan3"  # StyleGAN3's layers carry margins
    with pytest.raises(ValueError, match="stage must be from 1"):
        G.synthesize_until(ws, noise, 0)
    # A gradient reaches features set from outside: what an intermediate-feature search needs.
    k = max(1, G.num_stages // 2)
    f = tuple(t.detach().clone().requires_grad_(True) if t is not None else None
              for t in G.synthesize_until(ws, noise, k))
    G.synthesize_from(f, k, ws, noise).square().mean().backward()
    assert f[0].grad is not None and bool(f[0].grad.abs().sum() > 0)


# ---------------------------------------------------------------------------
# save_model / load_model


def _same_model(a, b, z_seed=0):
    assert type(a.generator) is type(b.generator) and a.generator.cfg == b.generator.cfg
    assert torch.equal(a.prior.mean, b.prior.mean) and torch.equal(a.prior.std, b.prior.std)
    sa, sb = a.generator.state_dict(), b.generator.state_dict()
    assert set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    z = torch.randn(2, a.generator.z_dim, generator=torch.Generator().manual_seed(z_seed))
    with torch.no_grad():
        assert torch.equal(a.generator.sample(z, noise_mode="const"), b.generator.sample(z, noise_mode="const"))


def _from_pickle(tmp_path, state, init_kwargs):
    path = write_snapshot(tmp_path / "snap.pkl", state, init_kwargs, hostile_source(tmp_path / "executed"))
    model = pulse_sr.load_model(path)
    assert not (tmp_path / "executed").exists() and model.format == "nvidia-pickle"
    return model


@pytest.mark.parametrize("which", ["stylegan2", "stylegan3-t", "stylegan3-r"])
def test_nvidia_pickles_round_trip_through_save_model(tmp_path, which, monkeypatch):
    monkeypatch.setenv("PULSE_CACHE", str(tmp_path / "cache"))
    if which == "stylegan2":
        fx = test_stylegan2.fixture("stylegan2-64")
        state, kwargs = test_stylegan2.full_state(fx), fx["init_kwargs"]
    else:
        fx = test_stylegan3._load_fixture(which[-1])
        state, kwargs = fx["state"], fx["init_kwargs"]
    original = _from_pickle(tmp_path, state, kwargs)
    saved = pulse_sr.save_model(original, tmp_path / "own.safetensors")
    again = pulse_sr.load_model(saved)
    assert again.format == "pulse-sr" and again.family == original.family == which.split("-")[0]
    _same_model(original, again)
    # The fit travels with the file: nothing is computed on load.
    monkeypatch.setattr("pulse_sr.model.compute_gaussian_fit", lambda *a, **k: pytest.fail("fit recomputed"))
    pulse_sr.load_model(saved)


def test_the_bundled_model_round_trips_through_save_model(tmp_path, default_model):
    again = pulse_sr.load_model(pulse_sr.save_model(default_model, tmp_path / "copy.safetensors"))
    _same_model(default_model, again)
    assert again.crop_template == default_model.crop_template and again.metadata["licence"]
    # half=True stores float16 and loads float32: close, and about half the size.
    small = pulse_sr.save_model(default_model, tmp_path / "half.safetensors", half=True)
    assert small.stat().st_size < 0.6 * (tmp_path / "copy.safetensors").stat().st_size
    G16 = pulse_sr.load_model(small).generator
    assert all(v.dtype == torch.float32 for v in G16.state_dict().values() if v.is_floating_point())


def test_a_tiny_stylegan1_and_its_prior_round_trip(tmp_path):
    m = tiny_model()
    again = pulse_sr.load_model(pulse_sr.save_model(m, tmp_path / "t.safetensors"))
    _same_model(m, again)


def test_files_that_contradict_themselves_are_refused(tmp_path):
    from pulse_sr.formats.safetensors_file import CONFIG_KEY, FORMAT_KEY
    from safetensors.torch import load_file, save_file

    path = pulse_sr.save_model(pulse_sr.PulseModel(tiny_sg2(), compute_gaussian_fit(tiny_sg2(), 512)),
                               tmp_path / "sg2.safetensors")
    from pulse_sr.formats.safetensors_file import read_metadata
    meta = read_metadata(path)
    assert meta[FORMAT_KEY] == "pulse-sr/stylegan2" and json.loads(meta[CONFIG_KEY])["family"] == "stylegan2"
    save_file(load_file(str(path)), str(tmp_path / "bad.safetensors"), metadata={**meta, FORMAT_KEY: "pulse-sr/stylegan3"})
    with pytest.raises(ModelFormatError, match="format says 'pulse-sr/stylegan3' but its config is a 'stylegan2'"):
        pulse_sr.load_model(tmp_path / "bad.safetensors")


def test_impl_is_refused_for_families_with_one_implementation(tmp_path):
    path = pulse_sr.save_model(pulse_sr.PulseModel(tiny_sg3(), compute_gaussian_fit(tiny_sg3(), 512)),
                               tmp_path / "sg3.safetensors")
    with pytest.raises(SettingsError, match="impl applies to StyleGAN v1 only"):
        pulse_sr.load_model(path, impl="c")
    assert pulse_sr.load_model("default", impl="torch").generator.impl == "torch"


# ---------------------------------------------------------------------------
# The prior


def test_the_prior_is_an_object_that_moves_and_maps():
    prior = GaussianPrior(torch.zeros(4), torch.ones(4))
    x = torch.tensor([[-1.0, 2.0, -0.5, 0.0]])
    assert torch.allclose(prior.latent_to_w(x), torch.tensor([[-0.2, 2.0, -0.1, 0.0]]))
    assert prior.to("cpu").w_dim == 4 and torch.equal(prior["std"], prior.std)
    with pytest.raises(ModelFormatError, match="shape \\(5,\\)"):
        GaussianPrior.of({"mean": torch.zeros(4), "std": torch.ones(4)}, 5)
    m = pulse_sr.PulseModel(tiny_generator(), {"mean": torch.zeros(16), "std": torch.ones(16)})
    assert isinstance(m.prior, GaussianPrior) and m.gaussian_fit is m.prior


def test_the_fit_is_computed_on_the_device_the_model_is_loaded_onto(tmp_path, monkeypatch):
    # A device mock: "meta" stands in for a GPU. The fit must run where the weights were moved to,
    # not on the CPU before the move (as it did when the CLI loaded the model before knowing the device).
    from pulse_sr.formats.safetensors_file import save_generator

    file = save_generator(tiny_generator(), tmp_path / "nofit.safetensors")  # a file without a stored fit
    monkeypatch.setenv("PULSE_CACHE", str(tmp_path / "cache"))
    seen = {}

    def fake_fit(G, num_samples, **kwargs):
        seen["device"] = next(G.parameters()).device
        return GaussianPrior(torch.zeros(G.w_dim), torch.ones(G.w_dim))

    monkeypatch.setattr("pulse_sr.model.compute_gaussian_fit", fake_fit)
    monkeypatch.setattr("pulse_sr.model.mapping_hash", lambda G: "0" * 64)  # meta tensors have no bytes to hash
    model = pulse_sr.load_model(file, device="meta")
    assert seen["device"].type == "meta" and model.prior.device.type == "meta" and model.device.type == "meta"


def test_the_fit_cache_is_written_under_a_name_of_its_own_then_renamed(tmp_path, monkeypatch):
    import os

    from pulse_sr.model import cached_gaussian_fit

    names = []
    real = torch.save
    monkeypatch.setattr("torch.save", lambda obj, f: (names.append(str(f)), real(obj, f)))
    cached_gaussian_fit(tiny_generator(), tmp_path, num_samples=512)
    assert len(names) == 1 and f".{os.getpid()}." in names[0]  # two torchrun ranks never share a file
    assert [p.name for p in tmp_path.iterdir()][0].startswith("gaussian_fit-")


def test_gaussian_fit_option_takes_the_models_own_width(tmp_path, default_model):
    from pulse_sr.cli import main
    from pulse_sr.images import save_image

    fit = tmp_path / "fit256.pt"
    torch.save({"mean": default_model.prior.mean.clone(), "std": default_model.prior.std.clone()}, fit)
    save_image(torch.rand(3, 8, 8), tmp_path / "in" / "a.png")
    r = CliRunner().invoke(main, ["upsample", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--gaussian-fit",
                                  str(fit), "--steps", "1", "--seed", "0", "--quiet"])
    assert r.exit_code in (0, 3), r.output
    torch.save({"mean": torch.zeros(512), "std": torch.ones(512)}, tmp_path / "fit512.pt")
    r = CliRunner().invoke(main, ["upsample", str(tmp_path / "in"), "--out", str(tmp_path / "o2"), "--gaussian-fit",
                                  str(tmp_path / "fit512.pt"), "--steps", "1", "--quiet"])
    assert r.exit_code == 2 and "expected (256,)" in r.output and r.output.count("\n") == 1


# ---------------------------------------------------------------------------
# inspect_model


def test_inspect_model_reads_headers_and_the_registry_without_building_anything(monkeypatch, default_model):
    monkeypatch.setattr("pulse_sr.formats.load_file", lambda *a, **k: pytest.fail("a network was built"))
    info = pulse_sr.model.inspect_model("default")
    assert info.resolution == 64 and info.family == "stylegan1" and info.crop_template == default_model.crop_template
    official = pulse_sr.model.inspect_model("stylegan-ffhq-1024")  # not downloaded: the registry says enough
    assert official.resolution == 1024 and official.crop_template == "ffhq"


def test_pulse_align_needs_no_model_load(tmp_path, monkeypatch):
    from pulse_sr.cli import main
    from pulse_sr.images import save_image

    monkeypatch.setattr("pulse_sr.model.load_model", lambda *a, **k: pytest.fail("pulse align loaded the model"))
    save_image(torch.rand(3, 24, 24), tmp_path / "in" / "face.png")
    r = CliRunner().invoke(main, ["align", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--no-detect"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "face.png").is_file() and (tmp_path / "o" / "face_lr.png").is_file()
