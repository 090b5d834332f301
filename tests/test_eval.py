"""`pulse eval` end to end on a tiny random generator: JSON fields, report tables, resuming."""

import json

import pytest
import torch
from click.testing import CliRunner

from pulse_sr.cli import main
from pulse_sr.errors import InputSizeError
from pulse_sr.ops.resample import upscale_bicubic, upscale_nearest
from pulse_sr.pipelines.eval import EvalSettings, evaluate
from pulse_sr.images import save_image
from pulse_sr.formats.safetensors_file import save_generator
from pulse_sr.search import PulseOptions

from conftest import tiny_model

NAMES = ["25_0_1_20170116174525125.png", "30_1_0_20170116174525126.png", "not_a_utk_name.png"]


def make_data(folder, size=16, names=NAMES):
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for name in names:
        save_image(torch.rand(3, size, size, generator=g), folder / name)
    return folder


@pytest.fixture
def model_file(tmp_path):
    G = tiny_model()
    return save_generator(G.generator, tmp_path / "tiny.safetensors", gaussian_fit=G.gaussian_fit)


def test_cli_eval_writes_results_report_and_figures(tmp_path, model_file):
    data = make_data(tmp_path / "hr")
    out = tmp_path / "out"
    args = ["eval", str(data), "--out", str(out), "--model", str(model_file), "--scale", "4", "--runs", "2",
            "--n", "3", "--steps", "2", "--labels", "utkface", "--degrade", "gaussian:25,motion:3",
            "--batch", "2", "--grid", "2"]
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "clean runs within eps" in r.output

    res = json.loads((out / "results.json").read_text())
    assert res["images"] == 3 and res["errors"] == []
    st = res["settings"]
    assert (st["scale"], st["runs"], st["seed"], st["resolution"]) == (4, 2, 0, 16)
    assert st["degradations"] == ["gaussian:25", "motion:3"]
    assert set(res["conditions"]) == {"clean", "gaussian:25", "motion:3"}
    clean = res["conditions"]["clean"]
    assert clean["runs"]["n"] == 6 and 0 <= clean["runs"]["ci95"][0] <= clean["runs"]["ci95"][1] <= 1
    assert clean["images_any_success"]["n"] == 3
    assert clean["best_l2"]["mean"] > 0 and clean["seconds_per_image"] > 0
    for name in ("gaussian:25", "motion:3"):
        c = res["conditions"][name]
        assert c["l2_to_clean"]["mean"] > 0 and c["l2_to_input"]["median"] > 0
        assert c["l2_input_to_clean"]["mean"] > 0
    # 16 px is below one NIQE block: reported as not computed, not as a number.
    assert res["niqe"]["computed"] is False and res["niqe"]["PULSE"] is None
    for method in ("nearest", "bicubic", "PULSE"):
        assert res["fidelity"][method]["psnr"] > 0 and -1 <= res["fidelity"][method]["ssim"] <= 1
    assert set(res["groups"]) == {"gender", "race", "age", "race_gender"}
    assert set(res["groups"]["race"]) == {"Black", "White", "unknown"}
    assert res["groups"]["gender"]["female"]["images"] == 1
    assert res["groups"]["gender"]["female"]["run_rate"]["n"] == 2
    per = {rec["file"]: rec for rec in res["per_image"]}
    assert set(per) == set(NAMES)
    runs = per[NAMES[0]]["conditions"]["clean"]["runs"]
    assert [run["seed"] for run in runs] == [0, 1]
    assert set(runs[0]) >= {"success", "best_l2", "l2_clean", "l2_input", "psnr", "ssim", "niqe"}

    report = (out / "report.md").read_text()
    for heading in ("## Success and downscaling L2", "## NIQE", "## PSNR / SSIM against HR",
                    "## Success by group", "### race", "## Degraded inputs", "## Figures"):
        assert heading in report
    assert "| gaussian:25 |" in report and "| motion:3 |" in report and "| Black |" in report
    assert "Not computed" in report
    for fig in ("clean.png", "gaussian-25.png", "motion-3.png"):
        assert (out / "figures" / fig).is_file()
    assert len(list((out / "per_image").glob("*.json"))) == 3


def test_eval_resumes_and_redoes_stale_records(tmp_path):
    G = tiny_model()
    data = make_data(tmp_path / "hr")
    out = tmp_path / "out"
    opts = PulseOptions(steps=2)
    settings = EvalSettings(scale=4, runs=1, n=2, batch=2, grid_images=0)
    first = evaluate(data, G, out, opts, settings)
    assert first.summary["images"] == 2
    first_l2 = {r["file"]: r["conditions"]["clean"]["runs"][0]["best_l2"]
                for r in json.loads((out / "results.json").read_text())["per_image"]}
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "per_image").glob("*.json")}

    again = evaluate(data, G, out, opts, EvalSettings(scale=4, runs=1, n=3, batch=2, grid_images=0))
    logs = again.notes
    assert again.summary["images"] == 3
    assert "2 already done, 1 to run" in logs[0]
    for name, stamp in stamps.items():
        assert (out / "per_image" / name).stat().st_mtime_ns == stamp  # not redone
    second_l2 = {r["file"]: r["conditions"]["clean"]["runs"][0]["best_l2"]
                 for r in json.loads((out / "results.json").read_text())["per_image"]}
    assert {k: second_l2[k] for k in first_l2} == first_l2

    logs = evaluate(data, G, out, PulseOptions(steps=3), EvalSettings(scale=4, runs=1, n=1, grid_images=0)).notes
    assert "0 already done, 1 to run" in logs[0]  # other search settings: the record is redone


def test_eval_niqe_on_a_128px_model(tmp_path):
    # One 96-px block per image: the smallest size NIQE accepts (MATLAB's single-block case).
    torch.manual_seed(0)
    G = tiny_model(resolution=128)
    data = make_data(tmp_path / "hr", size=128, names=["a.png"])
    res = evaluate(data, G, tmp_path / "out", PulseOptions(steps=2),
                   EvalSettings(scale=8, runs=1, n=1, grid_images=1))
    nq = res.summary["niqe"]
    assert nq["computed"] is True
    assert all(isinstance(nq[k], float) and nq[k] > 0 for k in ("HR", "nearest", "bicubic", "PULSE"))
    assert "| HR | nearest | bicubic | PULSE |" in (tmp_path / "out" / "report.md").read_text()


def test_eval_errors(tmp_path):
    G = tiny_model()
    data = make_data(tmp_path / "hr", names=["a.png"])
    save_image(torch.rand(3, 16, 20), data / "wide.png")
    res = evaluate(data, G, tmp_path / "out", PulseOptions(steps=1), EvalSettings(scale=4, runs=1, grid_images=0))
    assert res.summary["images"] == 1 and "not square" in res.errors[0]["error"]
    with pytest.raises(ValueError, match="unknown degradation"):
        evaluate(data, G, tmp_path / "o2", PulseOptions(steps=1), EvalSettings(scale=4, degrade="blur:2"))
    with pytest.raises(InputSizeError, match="does not divide"):
        evaluate(data, G, tmp_path / "o3", PulseOptions(steps=1), EvalSettings(scale=3))
    r = CliRunner().invoke(main, ["eval", str(data), "--out", str(tmp_path / "o4"), "--degrade", "x:1"])
    assert r.exit_code == 2 and "unknown degradation" in r.output


def test_baselines_upscale_exactly():
    lr = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    near = upscale_nearest(lr, 4)
    assert near.shape == (1, 3, 16, 16) and torch.equal(near[..., ::4, ::4], lr)
    flat = torch.full((1, 3, 4, 4), 0.25)
    assert torch.allclose(upscale_bicubic(flat, 8), torch.full((1, 3, 32, 32), 0.25), atol=1e-7)


def test_noise_aware_eps_for_gaussian_degradations(tmp_path):
    G = tiny_model()
    data = make_data(tmp_path / "hr", names=["a.png"])
    res = evaluate(data, G, tmp_path / "out", PulseOptions(steps=1),
                   EvalSettings(scale=4, runs=1, grid_images=0, degrade="gaussian:25,motion:3", noise_aware=True,
                                batch=3))
    rec = json.loads((tmp_path / "out" / "results.json").read_text())["per_image"][0]
    eps = {c: rec["conditions"][c]["runs"][0]["eps"] for c in rec["conditions"]}
    assert eps["clean"] == 2e-3 and eps["motion:3"] == 2e-3
    assert eps["gaussian:25"] == pytest.approx(2e-3 + (25 / 255) ** 2)
    assert res.summary["settings"]["noise_aware"] is True
