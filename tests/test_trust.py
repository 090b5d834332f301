"""The trust object: the out-of-domain p-value, identity determinacy with K >= 2, the verdict and exit code 4."""

import json
import os

import numpy as np
import pytest
import torch

from conftest import tiny_model
from pulse_sr import errors, trust
from pulse_sr.images import save_image
from pulse_sr.ops.operators import as_operator
from pulse_sr.pipelines.upsample import ResultEntry, UpsampleJob, upsample_files
from pulse_sr.search import PulseOptions
from pulse_sr.trust import domain as dom
from pulse_sr.trust.identity import Strangers, pairwise, sentence


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def test4(model, tmp_path_factory):
    op = as_operator("bicubic:4", (4, 4), 16)
    return op, dom.domain_test(model, op, n_fit=600, n_held=600, cache=tmp_path_factory.mktemp("cache"))


def _ks_uniform(p: np.ndarray) -> float:
    p = np.sort(p)
    n = len(p)
    return float(max((np.arange(1, n + 1) / n - p).max(), (p - np.arange(n) / n).max()))


def test_the_p_value_is_uniform_on_held_out_model_samples(model, test4):
    op, t = test4
    # Seeds used neither for the fit (0) nor the null (1_000_003).
    lr = dom.model_samples_lr(model, op, 400, seed=424242)
    p = t.p_value(lr).numpy()
    assert p.min() > 0 and p.max() <= 1
    assert _ks_uniform(p) < 0.1, _ks_uniform(p)   # KS critical value at n=400, 1 %: 0.081, plus the grid of p
    assert 0.0 <= (p < t.alpha).mean() <= 0.03    # the stated false-alarm rate, on samples it never saw


def test_a_constant_or_noise_input_is_out_of_domain(model, test4):
    op, t = test4
    g = torch.Generator().manual_seed(3)
    flat = torch.full((1, 3, 4, 4), 0.5)
    noise = torch.rand(1, 3, 4, 4, generator=g)
    checker = (torch.arange(16).reshape(4, 4) % 2 == torch.arange(4)[:, None] % 2).float().expand(1, 3, 4, 4)
    # (The random tiny model's samples saturate to 0 and 1 in large patches, so black or white squares are
    # typical of it; a mid-gray square is too close to its mean, noise and a checkerboard too far.)
    for x in (flat, noise, checker):
        p = float(t.p_value(x)[0])
        assert p == pytest.approx(2 / (1 + len(t.held))), p   # beyond every held-out score, on one side


def test_the_calibration_is_cached_on_disk_and_a_bad_entry_recomputed(model, tmp_path, monkeypatch):
    op = as_operator("bicubic:4", (4, 4), 16)
    dom._CACHE.clear()
    a = dom.domain_test(model, op, n_fit=200, n_held=100, cache=tmp_path)
    files = list(tmp_path.glob("domain-*.pt"))
    assert len(files) == 1 and (os.stat(files[0]).st_mode & 0o777) == 0o600
    dom._CACHE.clear()
    calls, real = [], dom.calibrate
    monkeypatch.setattr(dom, "calibrate", lambda *a, **k: calls.append(1) or real(*a, **k))
    b = dom.domain_test(model, op, n_fit=200, n_held=100, cache=tmp_path)
    assert not calls and torch.equal(a.held, b.held) and torch.equal(a.mean, b.mean)   # read back, not redone
    files[0].write_bytes(b"not a torch file")
    dom._CACHE.clear()
    c = dom.domain_test(model, op, n_fit=200, n_held=100, cache=tmp_path)
    assert calls == [1] and torch.allclose(c.held, a.held)
    os.chmod(files[0], 0o666)  # writable by others: never trusted
    dom._CACHE.clear()
    dom.domain_test(model, op, n_fit=200, n_held=100, cache=tmp_path)
    assert calls == [1, 1]


def test_a_warp_is_skipped_and_a_large_model_on_the_cpu_too(model, caplog):
    class Warp:
        def key(self):
            return "warp:abc"
    assert trust.domain_fields(model, Warp(), torch.zeros(3, 4, 4)) is None

    class Big:
        generator = type("G", (), {"resolution": 1024})()
        device = torch.device("cpu")
    assert trust.domain_fields(Big(), as_operator("bicubic:4", (4, 4), 16), torch.zeros(3, 4, 4)) is None


def test_identity_fields_and_sentences():
    emb = np.array([[0.0, 0], [3, 4], [6, 8]])
    assert pairwise(emb).tolist() == [5.0, 10.0, 5.0]
    s = Strangers(np.linspace(0.5, 1.0, 101))
    assert s.median == pytest.approx(0.75) and s.close == pytest.approx(0.505)
    assert "as different as strangers" in sentence({"identity_determinacy": 0.05, "identity_determined": False}, 4)
    assert "still not the person" in sentence({"identity_determinacy": 0.8, "identity_determined": True}, 4)
    assert "partly" in sentence({"identity_determinacy": 0.4, "identity_determined": False}, 4)


def test_the_verdict_and_the_exit_code_precedence():
    t_out, t_in = {"in_domain": False, "in_domain_p": 0.001}, {"in_domain": True, "in_domain_p": 0.5}
    assert trust.verdict(True, t_out, "report") == "consistent"
    assert trust.verdict(True, t_out, "strict") == "out of domain"
    assert trust.verdict(False, t_out, "strict") == "out of domain"
    assert trust.verdict(False, t_in, "strict") == "not within eps"
    assert trust.verdict(True, None, "strict") == "consistent"
    assert errors.exit_code(False, True, True) == errors.EXIT_OUT_OF_DOMAIN == 4
    assert errors.exit_code(True, True, True) == errors.EXIT_BAD_INPUT
    assert errors.exit_code(False, True, False) == errors.EXIT_NOT_FOUND
    assert errors.exit_code(False, False, False) == errors.EXIT_OK


def _entry(**kw):
    d = {"input": "a.png", "output": "a.png", "downscaled": "a_lr.png", "residual": "a_r.png", "success": True,
         "best_l2": 1e-3, "eps": 2e-3, "operator": {"name": "bicubic"}, "lr_error": {}, "best_step": 1, "steps": 2,
         "seconds": 0.1, "seed": 0, "run": "r", "key": None}
    d.update(kw)
    return d


def test_report_entries_keep_the_trust_object_and_old_ones_get_a_verdict():
    old = ResultEntry.from_json(_entry(success=False))
    assert old.verdict == "not within eps" and old.trust is None and old.to_json()["verdict"] == "not within eps"
    t = {"in_domain_p": 0.002, "in_domain": False, "alpha": 0.01}
    e = ResultEntry.from_json(_entry(trust=t, verdict="out of domain"))
    assert e.to_json()["trust"] == t and ResultEntry.from_json(e.to_json()) == e
    with pytest.raises(ValueError, match="verdict"):
        ResultEntry.from_json(_entry(verdict="fine"))
    with pytest.raises(ValueError, match="trust"):
        ResultEntry.from_json(_entry(trust=[1]))


@pytest.fixture
def small_calibration(monkeypatch, tmp_path):
    monkeypatch.setattr(dom, "DEFAULT_FIT", 300)
    monkeypatch.setattr(dom, "DEFAULT_HELD", 300)
    monkeypatch.setenv("PULSE_CACHE", str(tmp_path / "cache"))


def test_strict_calls_noise_out_of_domain_and_exits_4(model, tmp_path, small_calibration):
    g = torch.Generator().manual_seed(1)
    save_image(torch.rand(3, 4, 4, generator=g), tmp_path / "in" / "noise.png")
    files = [tmp_path / "in" / "noise.png"]
    rep = upsample_files(files, model, tmp_path / "a", UpsampleJob(PulseOptions(steps=2, eps=1.0), seed=0))
    e = rep.results[0]
    assert e.success and e.trust["in_domain"] is False and 0 < e.trust["in_domain_p"] < 0.01
    assert e.verdict == "consistent" and rep.exit_code == 0            # report: recorded, not decisive
    assert "identity_spread" not in e.trust                             # K = 1
    rep = upsample_files(files, model, tmp_path / "b",
                         UpsampleJob(PulseOptions(steps=2, eps=1.0), seed=0, domain="strict"))
    e = rep.results[0]
    assert e.verdict == "out of domain" and rep.exit_code == 4 and rep.consistent() == 0
    on_disk = json.loads((tmp_path / "b" / "report.json").read_text())["results"][0]
    assert on_disk["verdict"] == "out of domain" and on_disk["trust"]["in_domain"] is False
    assert (tmp_path / "b" / e.output).is_file()                        # still written for inspection
    rep = upsample_files(files, model, tmp_path / "c", UpsampleJob(PulseOptions(steps=2), seed=0, domain="off"))
    assert rep.results[0].trust is None
    with pytest.raises(errors.SettingsError, match="domain must be one of"):
        UpsampleJob(domain="lax").validate(model)


def test_identity_fields_appear_only_with_two_or_more_samples(model, tmp_path, small_calibration, monkeypatch):
    pytest.importorskip("dlib")
    from pulse_sr.trust import identity as ident

    monkeypatch.setattr(ident, "STRANGERS", 24)
    lr = dom.model_samples_lr(model, as_operator("bicubic:4", (4, 4), 16), 1, seed=99)[0]
    save_image(lr, tmp_path / "in" / "a.png")
    files = [tmp_path / "in" / "a.png"]
    rep = upsample_files(files, model, tmp_path / "k3", UpsampleJob(PulseOptions(steps=3), samples=3, seed=0))
    t = rep.results[0].trust
    assert {"identity_spread", "identity_determinacy", "identity_determined"} <= set(t)
    assert t["identity_spread"] > 0 and t["identity_determinacy"] <= 1 and isinstance(t["identity_determined"], bool)
    assert all(r.trust == t for r in rep.results)                       # one input, one trust object
    assert any("faces" in line for line in rep.notes)
