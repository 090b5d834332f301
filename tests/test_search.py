import math

import pytest
import torch

from pulse_sr import InputSizeError, upsample
from pulse_sr.ops.resample import bicubic_downscale
from pulse_sr.search.losses import geocross, parse_loss, PulseLoss
from pulse_sr.search.prior import latent_to_w
from pulse_sr.search.schedules import lr_factor
from pulse_sr.ops.resample import valid_lr_sizes
from pulse_sr.search.sphere import project_, vector_norms



def test_projection_keeps_per_vector_norms():
    x = torch.randn(3, 5, 16)
    r = vector_norms(x)
    assert r.shape == (3, 5, 1)
    y = x * torch.rand(3, 5, 1) * 10 + 0.1
    project_(y, r)
    assert torch.allclose(vector_norms(y), r, atol=1e-5)
    noise = torch.randn(2, 1, 8, 8)
    rn = vector_norms(noise)
    assert rn.shape == (2, 1, 1, 1)
    project_(noise.mul_(3), rn)
    assert torch.allclose(vector_norms(noise), rn, atol=1e-5)


def test_parse_loss():
    assert parse_loss("100*L2+0.05*GEOCROSS") == [(100.0, "L2"), (0.05, "GEOCROSS")]
    assert parse_loss("L1") == [(1.0, "L1")]
    for bad in ("100*L3", "GEOCROSS", "a*L2", ""):
        with pytest.raises(ValueError):
            parse_loss(bad)


def test_geocross_values():
    # Two orthogonal unit vectors: angle pi/2 on both off-diagonal pairs.
    v = torch.zeros(1, 2, 4)
    v[0, 0, 0] = 1
    v[0, 1, 1] = 1
    want = (2 * (math.pi / 2) ** 2 / 4) * 4 / 8
    assert abs(geocross(v).item() - want) < 1e-4
    same = torch.ones(2, 3, 4)
    assert geocross(same).abs().max().item() < 1e-3
    assert geocross(torch.randn(2, 1, 4)).tolist() == [0.0, 0.0]


def test_l2_clamped_at_eps():
    loss = PulseLoss("100*L2", eps=2e-3)
    a = torch.zeros(2, 3, 4, 4)
    b = a.clone()
    b[1] += 0.1
    total, parts = loss(torch.zeros(2, 1, 4), a, b)
    assert torch.allclose(parts["L2"], torch.tensor([0.0, 0.01]))
    assert torch.allclose(total, torch.tensor([100 * 2e-3, 100 * 0.01]))


def test_schedules():
    f = lr_factor("linear1cycledrop", 100)
    assert f(0) == pytest.approx(0.1) and f(45) == pytest.approx(1.0)
    assert f(90) == pytest.approx(0.1) and f(99) == pytest.approx(0.1 + 0.9 * (0.001 - 0.1))
    g = lr_factor("linear1cycle", 100)
    assert g(50) == pytest.approx(1.0) and g(0) == pytest.approx(0.1)
    assert lr_factor("fixed", 10)(7) == 1.0
    with pytest.raises(ValueError):
        lr_factor("cosine", 10)


def test_valid_lr_sizes():
    assert valid_lr_sizes(64) == [2, 4, 8, 16, 32, 64]
    assert valid_lr_sizes(1024)[:3] == [2, 4, 8]


@pytest.mark.parametrize("shape", [(3, 17, 17), (3, 8, 20), (1, 4, 4)])
def test_bad_lr_sizes(tiny_G, shape):
    with pytest.raises(InputSizeError) as e:
        upsample(torch.rand(*shape), tiny_G, steps=1)
    if shape[0] == 3:
        assert "larger than the model's 16×16" in str(e.value) and "--align" in str(e.value)


@pytest.mark.parametrize("shape, operator", [((3, 5, 5), {"name": "resize", "size": [5, 5]}),
                                             ((3, 4, 8), {"name": "resize", "size": [4, 8]}),
                                             ((3, 1, 1), {"name": "resize", "size": [1, 1]}),
                                             ((3, 4, 4), {"name": "bicubic", "factor": 4})])
def test_any_lr_size_up_to_the_resolution_runs(tiny_G, shape, operator):
    res = upsample(torch.rand(*shape), tiny_G, steps=1)
    assert res.operator.describe() == operator and res.downscaled.shape[1:] == shape


def test_result_fields_and_best_image(tiny_G):
    lr = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    # A huge learning rate makes the search jump around, so the last iterate
    # is not the best one: the result must still be the best.
    r = upsample(lr, tiny_G, samples=2, seed=3, steps=12, lr=5.0, optimizer="sgd", schedule="fixed", eps=1e-9)
    assert r.images.shape == (4, 3, 16, 16) and r.downscaled.shape == (4, 3, 4, 4)
    assert r.loss_history.shape == (12, 4) and r.l2_history.shape == (12, 4)
    assert r.seeds == [3, 4, 3, 4] and r.steps_taken == 12 and r.seconds > 0
    assert torch.equal(r.best_loss, r.loss_history.min(0).values)
    assert torch.equal(r.best_step, r.loss_history.argmin(0))
    assert torch.equal(r.best_l2, r.l2_history[r.best_step, torch.arange(4)])
    assert (r.loss_history[-1] > r.best_loss).any()
    assert not r.success.any() and r.ws.shape == (4, tiny_G.generator.num_ws, tiny_G.generator.w_dim)
    assert r.images.min() >= 0 and r.images.max() <= 1
    # The returned downscale is DS(image) clamped to [0, 1]; clamping can only
    # bring it closer to an input in [0, 1], so its L2 is at most best_l2.
    l2 = (r.downscaled - lr.repeat_interleave(2, 0)).square().mean((1, 2, 3))
    assert (l2 <= r.best_l2 + 1e-6).all()


def test_samples_independent_of_batching(tiny_G):
    lr = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(1))
    both = upsample(lr, tiny_G, samples=2, seed=10, steps=3)
    second = upsample(lr, tiny_G, samples=1, seed=11, steps=3)
    assert torch.allclose(both.images[1], second.images[0], atol=1e-5)
    assert torch.allclose(both.loss_history[:, 1], second.loss_history[:, 0], rtol=1e-4, atol=1e-6)


def _reachable_target(model, seed=0, lr_size=4):
    G = model.generator
    g = torch.Generator().manual_seed(seed)
    ws = latent_to_w(torch.randn(1, G.num_ws, G.w_dim, generator=g), model.gaussian_fit)
    img = (G.synthesize(ws, G.make_noise(1, "zero")) + 1) / 2
    return bicubic_downscale(img, G.resolution // lr_size)[0]


def test_finds_reachable_target_and_early_stop(tiny_G):
    target = _reachable_target(tiny_G)
    r = upsample(target, tiny_G, seed=0, steps=100)
    assert r.success.all() and r.best_l2.item() <= 2e-3
    assert r.steps_taken == 100
    early = upsample(target, tiny_G, seed=0, steps=100, early_stop=True)
    assert early.success.all() and early.steps_taken < 100
    assert early.steps_taken == int(early.best_step) + 1


def test_noise_modes_and_options(tiny_G):
    lr = torch.rand(3, 8, 8)
    for kw in ({"noise": "zero"}, {"noise": "fixed"}, {"tile_latent": True}, {"optimizer": "sgdm"},
               {"optimizer": "adamax", "schedule": "linear1cycle"}, {"loss": "100*L1+0.05*GEOCROSS"},
               {"bad_noise_layers": (0, 1, -1)}):
        r = upsample(lr, tiny_G, seed=0, steps=2, **kw)
        assert r.images.shape == (1, 3, 16, 16) and torch.isfinite(r.best_loss).all(), kw
    r = upsample(lr, tiny_G, seed=0, steps=1, bad_noise_layers=(17,))
    assert r.warnings and "17" in r.warnings[0]
    with pytest.raises(ValueError, match="unknown noise type"):
        upsample(lr, tiny_G, noise="pink")
    with pytest.raises(ValueError, match="unknown optimizer"):
        upsample(lr, tiny_G, optimizer="lbfgs")


def test_trainable_noise_is_optimised_and_stays_on_sphere(tiny_G, monkeypatch):
    seen = {}
    import pulse_sr.search.loop as search

    real = search.make_optimizer

    def spy(name, params, lr):
        seen["params"] = params
        return real(name, params, lr)

    monkeypatch.setattr(search, "make_optimizer", spy)
    upsample(torch.rand(3, 4, 4), tiny_G, seed=0, steps=3, trainable_noise_layers=3)
    params = seen["params"]
    assert len(params) == 1 + 3  # latent + the first three noise maps
    g = torch.Generator().manual_seed(0)
    start = torch.randn(tiny_G.generator.num_ws, tiny_G.generator.w_dim, generator=g)
    assert torch.allclose(vector_norms(params[0])[0], vector_norms(start[None])[0], atol=1e-4)
    assert not torch.allclose(params[0][0], start)


def test_missing_fit_without_mapping_is_an_error(tmp_path):
    # PULSE's synthesis.pt alone has no mapping network: no fit can be computed.
    from pulse_sr import ModelFormatError, load_model
    from test_formats import pulse_state_dicts, random_generator, tiny_config

    syn, _ = pulse_state_dicts(random_generator(tiny_config(instance_norm_eps=1e-5, resolution=16)))
    torch.save(syn, tmp_path / "synthesis.pt")
    with pytest.raises(ModelFormatError, match="gaussian_fit"):
        load_model(tmp_path / "synthesis.pt")


def test_upsample_takes_tensors_and_a_model(tiny_G):
    from PIL import Image
    with pytest.raises(TypeError, match="pil_to_tensor"):
        upsample(Image.new("RGB", (4, 4)), tiny_G, steps=1)
    with pytest.raises(TypeError, match="PulseModel"):
        upsample(torch.rand(3, 4, 4), tiny_G.generator, steps=1)


def test_search_runs_on_the_device_given_and_leaves_the_model_alone(tiny_G):
    before = {k: v.clone() for k, v in tiny_G.generator.state_dict().items()}
    r = upsample(torch.rand(3, 4, 4), tiny_G, seed=0, steps=2, device="cpu")
    assert r.images.shape == (1, 3, 16, 16) and tiny_G.device.type == "cpu"
    after = tiny_G.generator.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert tiny_G.to("cpu") is tiny_G


def test_one_seed_per_input_starts_each_input_as_it_starts_alone(tiny_G):
    lr = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    both = upsample(lr, tiny_G, steps=1, samples=2, seed=[5, 9])
    assert both.seeds == [5, 6, 9, 10]
    alone = upsample(lr[1], tiny_G, steps=1, samples=2, seed=9)
    # Step 0 is the start itself: the same latent gives the same first image.
    assert torch.allclose(both.images[2:], alone.images, atol=1e-5)
    with pytest.raises(ValueError, match="2 seeds for 1 inputs"):
        upsample(lr[0], tiny_G, steps=1, seed=[1, 2])
