import json

import torch
from click.testing import CliRunner

import pulse_sr
from pulse_sr.cli import main


def test_default_model_loads_offline(default_model):
    model = default_model
    G = model.generator
    assert G.resolution == 64 and G.num_ws == 10 and G.w_dim == 256
    assert model.gaussian_fit["mean"].shape == (256,) and (model.gaussian_fit["std"] > 0).all()
    assert "non-commercial" in model.metadata["licence"]
    assert model.source == "default" and model.format == "pulse-sr" and model.resolution == 64
    assert set(model.crop_template) >= {"left_eye", "right_eye", "nose", "mouth_left", "mouth_right", "size"}
    with torch.no_grad():
        img = G.sample(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0)), noise_mode="const")
    assert img.shape == (2, 3, 64, 64) and torch.isfinite(img).all()
    # A trained model: bounded outputs with real contrast, deterministic with const noise.
    assert img.abs().max() < 3 and (img.clamp(-1, 1).flatten(1).std(1) > 0.2).all()
    with torch.no_grad():
        again = G.sample(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0)), noise_mode="const")
    assert torch.equal(img, again)


def test_generator_carries_no_loader_state(default_model):
    G = default_model.generator
    fresh = pulse_sr.StyleGAN1Generator(G.cfg)
    assert set(vars(G)) == set(vars(fresh))
    for name in ("gaussian_fit", "extras", "has_mapping", "source"):
        assert not hasattr(G, name)


def test_load_generator_is_a_deprecated_alias():
    import pytest
    with pytest.warns(DeprecationWarning, match="load_model"):
        model = pulse_sr.load_generator("default")
    assert isinstance(model, pulse_sr.PulseModel) and model.resolution == 64


def test_two_step_pulse_on_default_model(default_model):
    G = default_model
    lr = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    r = pulse_sr.upsample(lr, G, samples=2, seed=0, steps=2)
    assert r.images.shape == (2, 3, 64, 64) and r.downscaled.shape == (2, 3, 8, 8)
    assert r.loss_history.shape == (2, 2) and torch.isfinite(r.best_l2).all()


def test_demo_command_two_steps(tmp_path):
    res = CliRunner().invoke(main, ["demo", "--out", str(tmp_path), "--steps", "2", "--samples", "2",
                                    "--no-photo"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    grid = tmp_path / "demo_sampled_grid.png"
    assert grid.exists() and str(grid) in res.output
    from PIL import Image
    w, h = Image.open(grid).size
    assert (w, h) == (2 + 4 * 66, 2 + 2 * 66)  # 2 rows of LR, bicubic/HR and 2 samples, 2-px padding
    rep = json.loads((tmp_path / "demo_sampled_report.json").read_text())
    assert rep["steps"] == 2 and len(rep["samples"]) == 2
