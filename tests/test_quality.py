"""FD-dlib, precision/recall and `pulse quality` on tiny inputs."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pulse_sr.metrics import fd_dlib


def test_identical_sets_give_zero():
    x = np.random.default_rng(0).normal(size=(400, 8))
    assert abs(fd_dlib.fd(x, x)) < 1e-8


def test_gaussian_sets_match_the_closed_form():
    # N(0, I) against N(m, 4 I) in d dims: |m|^2 + d (1 + 4 - 2 * 2) = |m|^2 + d.
    d, m = 4, np.array([1.0, -2.0, 0.5, 0.0])
    assert fd_dlib.frechet_distance(np.zeros(d), np.eye(d), m, 4 * np.eye(d)) == pytest.approx(m @ m + d)
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200_000, d))
    b = m + 2 * rng.normal(size=(200_000, d))
    assert fd_dlib.fd(a, b) == pytest.approx(m @ m + d, rel=0.02)


def test_precision_recall_of_a_collapsed_set():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(300, 4))
    same = rng.normal(size=(300, 4))
    collapsed = real[0] + 1e-3 * rng.normal(size=(5, 4))  # one mode only: precise, no recall
    p, r = fd_dlib.precision_recall(real, same)
    assert p > 0.8 and r > 0.8
    p, r = fd_dlib.precision_recall(real, collapsed)
    assert p == 1.0 and r < 0.2
    far = real + 100
    assert fd_dlib.precision_recall(real, far) == (0.0, 0.0)


def test_compare_reports_an_interval_around_the_estimate():
    rng = np.random.default_rng(3)
    rep = fd_dlib.compare(rng.normal(size=(300, 4)), 0.5 + rng.normal(size=(300, 4)), bootstrap=50)
    lo, hi = rep.fd_ci95
    assert lo < rep.fd < hi and rep.n_fake == rep.n_real == 300 and rep.bootstrap == 50


needs_dlib = pytest.mark.skipif(fd_dlib.__name__ and __import__("importlib").util.find_spec("dlib") is None,
                                reason="dlib not installed")


@needs_dlib
def test_embeddings_are_128d_and_unit_scale():
    imgs = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    e = fd_dlib.embed(imgs)
    assert e.shape == (3, 128) and np.isfinite(e).all()
    assert ((np.linalg.norm(e, axis=1) > 0.5) & (np.linalg.norm(e, axis=1) < 2)).all()
    assert np.array_equal(e, fd_dlib.embed(imgs))               # deterministic


@needs_dlib
def test_pulse_quality_on_tiny_inputs(tmp_path):
    from pulse_sr.cli import main
    from pulse_sr.formats.safetensors_file import save_generator
    from pulse_sr.images import save_image

    from conftest import tiny_model
    m = tiny_model()
    model_path = save_generator(m.generator, tmp_path / "tiny.safetensors", gaussian_fit=m.gaussian_fit)
    real = tmp_path / "real"
    for k in range(6):
        save_image(torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(k)), real / f"{k}.png")
    out = tmp_path / "q.json"
    r = CliRunner().invoke(main, ["quality", str(real), "--model", str(model_path), "--n", "6", "--bootstrap", "5",
                                  "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    assert rep["n_fake"] == rep["n_real"] == 6 and rep["resolution"] == 16 and rep["fd"] > 0
    assert 0 <= rep["precision"] <= 1 and 0 <= rep["recall"] <= 1 and "FD-dlib" in r.output
    # Real against itself: the floor, 0.
    r = CliRunner().invoke(main, ["quality", str(real), "--images", str(real), "--resolution", "16", "--n", "6",
                                  "--bootstrap", "0", "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert abs(json.loads(out.read_text())["fd"]) < 1e-6
