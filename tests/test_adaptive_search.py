"""The adaptive search: its rules alone, then the loop on tiny generators of every family."""

import hashlib

import pytest
import torch

from conftest import tiny_generator, tiny_model
from pulse_sr import PulseModel, PulseOptions, upsample
from pulse_sr.errors import SettingsError
from pulse_sr.search.adaptive import adaptive_loop
from pulse_sr.search.loop import adaptive_plan, initial_state
from pulse_sr.search.plan import DERIVED_BASE, AdaptivePlan, Continuation, SuccessiveHalving, candidate_seed
from pulse_sr.search.prior import compute_gaussian_fit
from pulse_sr.search.schedules import RowAdam
from pulse_sr.search.stages import (FeatureStage, LatentStage, NoiseStage, default_stages, project_l1_,
                                    usable_stages)
from test_generator_base import tiny_sg2, tiny_sg3


# -- seeds --------------------------------------------------------------------------


def test_candidate_seeds_follow_the_documented_hash():
    assert candidate_seed(7, 0) == 7  # candidate 0 starts where the paper's search starts
    digest = hashlib.sha256(b"pulse-sr/candidate/7/3").digest()
    assert candidate_seed(7, 3) == 2 ** 63 + int.from_bytes(digest[:8], "big") % 2 ** 63
    seeds = {candidate_seed(s, j) for s in range(200) for j in range(1, 8)}
    assert len(seeds) == 200 * 7 and min(seeds) >= DERIVED_BASE and max(seeds) < 2 ** 64
    # none of them is a user seed (those are below 2**63), so no other sample s + k starts there
    torch.Generator().manual_seed(max(seeds))  # and torch takes every one of them


# -- successive halving ----------------------------------------------------------


def test_halving_keeps_the_better_half_at_each_rung_and_one_after_the_last():
    h = SuccessiveHalving(starts=4, rungs=(10, 25))
    assert h.keep(5, [3.0, 1.0, 2.0, 0.5]) == [0, 1, 2, 3]          # not a rung: everyone goes on
    assert h.keep(10, [3.0, 1.0, 2.0, 0.5]) == [1, 3]              # the better half
    assert h.keep(25, [2.0, 1.0]) == [1]                           # the last rung leaves one
    assert h.keep(10, [1.0, 1.0, 1.0, 1.0]) == [0, 1]              # ties: the lower candidates
    assert h.passes_to(10) == 40 and h.passes_to(25) == 40 + 2 * 15 and h.passes_to(30) == 75
    assert SuccessiveHalving(1, (10,)).passes_to(30) == 30 and SuccessiveHalving(1).keep(10, [1.0]) == [0]
    assert SuccessiveHalving(2, (10, 25)).used_rungs() == (10,)   # two starts need one rung
    assert h.alive_after(1) == 2 and h.alive_after(2) == 1
    with pytest.raises(SettingsError):
        SuccessiveHalving(0)
    with pytest.raises(SettingsError):
        SuccessiveHalving(4, (25, 10))


def test_the_first_phase_fits_its_share_of_the_budget():
    plan = AdaptivePlan(100, SuccessiveHalving(4, (10, 25)), first=0.7)
    t = plan.first_horizon()
    assert plan.halving.passes_to(t) <= 70 < plan.halving.passes_to(t + 1)
    assert AdaptivePlan(100, SuccessiveHalving(1), first=1.0).first_horizon() == 100
    with pytest.raises(SettingsError):
        AdaptivePlan(0)


# -- continuation -----------------------------------------------------------------


def test_continuation_continues_while_improving_and_expands_on_a_plateau():
    c = Continuation(window=3, min_gain=0.1, min_phase=5)
    falling = [8.0, 6.0, 4.0, 3.0, 2.0]
    flat = [8.0, 4.0, 3.0, 3.0, 3.0, 3.0]
    assert c.improving(falling) and not c.improving(flat)
    assert c.next_phase(falling, left=50, has_next_stage=True) == "continue"
    assert c.next_phase(flat, left=50, has_next_stage=True) == "expand"
    assert c.next_phase(flat, left=50, has_next_stage=False) == "continue"  # nowhere wider: keep going
    assert c.next_phase(falling, left=4, has_next_stage=True) is None  # too little budget for a phase
    assert c.plateaued(flat, horizon=10) and not c.plateaued(flat[:3], horizon=10)


# -- stages -------------------------------------------------------------------------


def test_stages_say_what_they_train_and_skip_what_a_generator_lacks():
    opts = PulseOptions()
    assert LatentStage().noise_layers(opts, 10, {9}) == {0, 1, 2, 3, 4}
    assert NoiseStage().noise_layers(opts, 10, {9}) == set(range(9))
    assert NoiseStage().noise_layers(PulseOptions(noise="zero"), 10, set()) == set()
    G = tiny_generator(32)
    k = FeatureStage().feature_stage(G)
    assert G.stage_resolution(k) <= 8 and G.stage_resolution(k + 1) > 8
    assert FeatureStage(stage=2).feature_stage(G) == 2
    names = [s.name for s in usable_stages(default_stages(True), tiny_sg3(), opts)]
    assert names == ["w+", "features"]  # StyleGAN3 has no noise inputs
    assert [s.name for s in usable_stages(default_stages(True), G, PulseOptions(noise="zero"))] == ["w+", "features"]


def test_l1_projection_is_the_nearest_point_of_the_ball():
    v = torch.tensor([[3.0, -1.0, 0.5], [0.1, 0.2, -0.1]])
    out = project_l1_(v.clone(), torch.tensor([2.0, 1.0]))
    assert torch.allclose(out[0], torch.tensor([2.0, 0.0, 0.0]))  # |v| - theta with theta = 1
    assert torch.equal(out[1], v[1])                                # already inside: unchanged
    x = torch.randn(4, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    r = torch.tensor([1.0, 5.0, 20.0, 100.0])
    p = project_l1_(x.clone(), r)
    norms = p.flatten(1).abs().sum(1)
    assert torch.all(norms <= r + 1e-4)
    assert torch.allclose(norms[:3], r[:3], rtol=1e-4)  # outside points land on the sphere of the ball
    assert (torch.sign(p) * torch.sign(x) >= 0).all()   # no sign flips


# -- the row-wise Adam -----------------------------------------------------------


def test_row_adam_is_torch_adam_per_row_and_drops_rows():
    torch.manual_seed(0)
    a = torch.randn(3, 4, 5)
    b = a.clone().requires_grad_(True)
    ours = RowAdam([a])
    ref = torch.optim.Adam([b], lr=0.1)
    for _ in range(5):
        g = torch.randn(3, 4, 5)
        ours.step([g], torch.full((3,), 0.1))
        b.grad = g.clone()
        ref.step()
    assert torch.allclose(a, b.detach(), atol=1e-6)
    ours.keep(torch.tensor([0, 2]), [a[[0, 2]]])
    assert ours.m[0].shape == (2, 4, 5) and ours.t[0].tolist() == [5.0, 5.0]
    # an inactive row does not move and does not count steps
    c = torch.zeros(2, 3)
    opt = RowAdam([c])
    opt.step([torch.ones(2, 3)], torch.full((2,), 0.5), [torch.tensor([True, False])])
    assert torch.allclose(c[0], torch.full((3,), -0.5)) and torch.equal(c[1], torch.zeros(3))
    assert opt.t[0].tolist() == [1.0, 0.0]


# -- the loop -------------------------------------------------------------------------


def _model(G):
    return PulseModel(G, compute_gaussian_fit(G, num_samples=2048, chunk=1024), source="tiny", format="test")


def _reachable(model, size, seed=0):
    """A target the generator can make: its own image from a Gaussian-fit latent, downscaled."""
    from pulse_sr.ops.resample import bicubic_downscale
    from pulse_sr.search.prior import latent_to_w

    G = model.generator
    ws = latent_to_w(torch.randn(1, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(seed)), model.prior)
    noise = G.make_noise(1, "zero") if G.noise_resolutions else []
    return bicubic_downscale(((G.synthesize(ws, noise) + 1) / 2).clamp(0, 1), G.resolution // size)


def _sg2_with_noise():
    G = tiny_sg2()
    with torch.no_grad():  # NVIDIA's noise strengths start at 0: give the noise maps some effect
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)
    return G


FAMILIES = {"stylegan1": lambda: tiny_generator(16), "stylegan2": _sg2_with_noise, "stylegan3": tiny_sg3}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("stage", [LatentStage(), NoiseStage(), FeatureStage()], ids=lambda s: s.name)
def test_two_steps_in_each_stage_on_each_family(family, stage):
    model = _model(FAMILIES[family]())
    G = model.generator
    opts = PulseOptions(preset="adaptive", eps=1e-9, loss="100*L2", trainable_noise_layers=1)  # noise adds more
    if not stage.available(G, opts):
        assert family == "stylegan3" and stage.name == "noise"
        return
    lr = _reachable(model, 4)
    from pulse_sr.ops.measurement import Measurement
    from pulse_sr.ops.operators import as_operator

    op = as_operator(None, (4, 4), G.resolution)
    bad = {len(G.noise_resolutions) - 1} if G.noise_resolutions else set()
    def run(st):
        plan = AdaptivePlan(3, SuccessiveHalving(1), first=1.0, stages=(st,))
        return adaptive_loop(G, model.prior, op, Measurement.of(op, lr), 1e-9, opts, plan, [5], bad, "cpu")

    out = run(stage)
    assert out["steps_taken"] == 3 and out["passes"] == [3] and out["stages"] == [stage.name]
    assert out["images"].shape == (1, 3, G.resolution, G.resolution) and torch.isfinite(out["images"]).all()
    assert out["best_step"][0] > 0  # the steps improved on the start
    if stage.name != "w+":  # what the stage trains moved: the same start and steps give another image
        assert (run(LatentStage())["images"] - out["images"]).abs().max() > 1e-5


def test_a_plateau_walks_through_every_stage_and_progress_says_so():
    model = tiny_model(16)
    lr = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    seen = []
    plan = AdaptivePlan(24, SuccessiveHalving(2, (2,)), first=0.25,
                        continuation=Continuation(window=1, min_gain=0.99, patience=1.0, min_phase=1, phase=4),
                        stages=default_stages(True))
    from pulse_sr.ops.measurement import Measurement
    from pulse_sr.ops.operators import as_operator

    G = model.generator
    op = as_operator(None, (4, 4), G.resolution)
    out = adaptive_loop(G, model.prior, op, Measurement.of(op, lr), 1e-9, PulseOptions(preset="adaptive"), plan,
                        [0], {len(G.noise_resolutions) - 1}, "cpu",
                        progress=lambda done, total, info: seen.append((done, total, info["alive"], info["stage"])))
    assert [s[3] for s in seen][0] == "w+" and "noise" in {s[3] for s in seen} and seen[-1][3] == "features"
    assert seen[0][2] == 2 and seen[-1][2] <= 1          # two candidates, then one after the rung
    assert all(total == 24 for _, total, _, _ in seen) and out["passes"][0] <= 24
    assert [s[0] for s in seen] == sorted(s[0] for s in seen)  # passes only grow


def test_adaptive_results_do_not_depend_on_the_batch_and_candidates_never_share_a_start(tiny_G):
    lr = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    opts = PulseOptions(preset="adaptive", steps=12, starts=4, eps=1e-9)
    both = upsample(lr, tiny_G, opts, samples=2, seed=[10, 20])
    alone = upsample(lr[1], tiny_G, opts, samples=2, seed=20)
    assert torch.allclose(both.images[2:], alone.images, atol=1e-5)
    assert both.best_l2[2:].tolist() == pytest.approx(alone.best_l2.tolist(), rel=1e-4)
    assert both.passes[2:] == alone.passes and max(both.passes) <= 12 and both.seeds == [10, 11, 20, 21]
    starts = [candidate_seed(s, j) for s in both.seeds for j in range(opts.starts)]
    assert len(set(starts)) == len(starts)
    lat, _, _ = initial_state(tiny_G.generator, opts, starts, set(), "cpu")
    flat = lat.flatten(1)
    assert torch.cdist(flat, flat).add(torch.eye(len(starts)) * 1e9).min() > 1e-3  # distinct start points


def test_a_sample_within_eps_stops_and_the_budget_splits_over_samples(tiny_G):
    target = _reachable(tiny_G, 4)[0]
    r = upsample(target, tiny_G, PulseOptions(preset="adaptive", budget=400, starts=1), seed=0)
    assert r.success.all() and r.passes[0] < 400 and r.sample_steps[0] == r.passes[0]  # stopped at eps
    assert r.stages == ["w+"] and r.preset == "adaptive"
    assert adaptive_plan(PulseOptions(preset="adaptive", budget=400), samples=2).budget == 200
    assert adaptive_plan(PulseOptions(preset="adaptive", steps=70), samples=3).budget == 70


def test_the_paper_preset_refuses_adaptive_options():
    for kw in ({"budget": 100}, {"expand": False}, {"starts": 3}):
        with pytest.raises(SettingsError, match="adaptive"):
            PulseOptions(preset="paper", **kw).validate()
    with pytest.raises(SettingsError, match="preset"):
        PulseOptions(preset="fast").validate()
    with pytest.raises(SettingsError, match="budget"):
        PulseOptions(preset="adaptive", budget=0).validate()
