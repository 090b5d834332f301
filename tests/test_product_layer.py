"""The product layer: typed jobs and reports, the report store, one error path and one log path."""

import dataclasses
import json
import logging

import click
import pytest
import torch
from click.testing import CliRunner

from pulse_sr import errors
from pulse_sr.cli import main
from pulse_sr.diagnostics import collect
from pulse_sr.images import read_image, save_image
from pulse_sr.pipelines.upsample import (AlignMode, ResultEntry, RunContext, UpsampleJob, UpsampleReport,
                                         upsample_files)
from pulse_sr.search import PulseOptions

from conftest import tiny_model


def test_the_job_is_a_frozen_value_with_one_settings_dict():
    job = UpsampleJob(PulseOptions(steps=7), samples=2, seed=3, operator=" Gray + box:8@3,5 ", align=True)
    assert job.operator == "box:8@3,5+gray" and job.align is AlignMode.WARP
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.samples = 4
    m = tiny_model()
    settings = job.settings(m)
    assert list(settings) == ["model", "resolution", "options", "samples", "lr_size", "align", "seed", "operator",
                              "noise_sigma"]
    assert settings["options"]["steps"] == 7 and settings["align"] == "warp" and settings["seed"] == 3
    assert UpsampleJob().settings(m)["align"] is False and UpsampleJob(align="resample").align is AlignMode.RESAMPLE
    with pytest.raises(errors.SettingsError, match="align must be one of"):
        UpsampleJob(align="sideways")
    with pytest.raises(errors.InputSizeError, match="--lr-size 17"):
        UpsampleJob(lr_size=17).validate(m)
    with pytest.raises(errors.SettingsError, match="noise sigma"):
        UpsampleJob(noise_sigma=float("nan")).validate(m)


def test_a_run_returns_a_typed_report_that_keeps_its_tensors_and_lines(tmp_path):
    m = tiny_model()
    g = torch.Generator().manual_seed(0)
    save_image(torch.rand(3, 4, 4, generator=g), tmp_path / "in" / "a.png")
    (tmp_path / "in" / "notes.txt").write_text("x")
    from pulse_sr.images import expand_inputs

    files = expand_inputs([tmp_path / "in"])
    out = tmp_path / "out"
    report = upsample_files(files, m, out, UpsampleJob(PulseOptions(steps=2), samples=2, seed=5))
    assert isinstance(report, UpsampleReport) and report.exit_code == 3 and len(report.results) == 2
    assert report.to_json() == json.loads((out / "report.json").read_text())  # to_json() is the file
    e = report.results[0]
    assert isinstance(e, ResultEntry) and e.spec == "bicubic:4" and e.seed == 5
    assert e.images["image"].shape == (3, 16, 16) and e.images["input"].shape == (3, 4, 4)
    # The tensors are what was written (PNG rounds to 1/255).
    assert (e.images["image"] - read_image(out / e.output)).abs().max() <= 0.5 / 255 + 1e-6
    assert e.images["spread"].shape == (3, 16, 16)
    assert any(line == "a: operator bicubic:4" for line in report.notes)
    assert any("no image found" in line for line in report.notes)
    # Entries read back from JSON are the same entries (without tensors).
    back = ResultEntry.from_json(json.loads(json.dumps(e.to_json())))
    assert back == e and back.images is None
    with pytest.raises(ValueError, match="lacks"):
        ResultEntry.from_json({"input": "x"})


def test_a_report_entry_this_version_cannot_read_is_redone_not_fatal(tmp_path):
    m = tiny_model()
    save_image(torch.rand(3, 4, 4), tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    job = UpsampleJob(PulseOptions(steps=1), seed=0)
    upsample_files([tmp_path / "in" / "a.png"], m, out, job)
    rep = json.loads((out / "report.json").read_text())
    rep["results"].append(["not", "an", "entry"])
    (out / "report.json").write_text(json.dumps(rep))
    again = upsample_files([tmp_path / "in" / "a.png"], m, out, job)
    assert [r.input for r in again.results] == [str(tmp_path / "in" / "a.png")]
    assert any("done in an earlier run" in line for line in again.notes)


def test_stop_from_the_context_ends_the_run_with_its_best(tmp_path):
    m = tiny_model()
    for k in range(2):
        save_image(torch.rand(3, 4, 4), tmp_path / "in" / f"{k}.png")
    report = upsample_files(sorted((tmp_path / "in").iterdir()), m, tmp_path / "out", UpsampleJob(seed=0),
                            RunContext(stop=lambda: True))
    assert report.stopped.startswith("stopped on request") and len(report.results) == 1
    assert report.results[0].stopped and report.results[0].steps == 1


# ---------------------------------------------------------------------------
# One error path


@click.command("boom")
@click.argument("name")
def boom(name):
    raise getattr(errors, name)(f"{name} happened; do this instead")


@pytest.mark.parametrize("name", ["SettingsError", "OperatorSpecError", "InputImageError", "OutputFolderError",
                                  "UploadError", "ModelFormatError", "UnknownModelError", "DownloadError",
                                  "ModelNotDownloadedError", "ImplUnavailableError", "TemplateError"])
def test_every_error_is_one_line_and_its_own_exit_code(monkeypatch, name):
    import pulse_sr.cli as cli

    monkeypatch.setitem(cli.SUBCOMMANDS, "boom", ("test_product_layer", "boom"))
    r = CliRunner().invoke(main, ["boom", name])
    cls = getattr(errors, name)
    assert r.exit_code == cls.exit_code == (1 if name == "DownloadError" else 2)
    assert r.output == f"error: {name} happened; do this instead\n"


def test_a_model_that_is_not_downloaded_is_exit_2_and_a_failed_download_exit_1(tmp_path, monkeypatch):
    monkeypatch.setenv("PULSE_CACHE", str(tmp_path / "cache"))
    save_image(torch.rand(3, 16, 16), tmp_path / "a.png")
    r = CliRunner().invoke(main, ["upsample", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                                  "--model", "stylegan2-ffhq-256"])
    assert r.exit_code == 2 and r.output.count("\n") == 1
    assert "is not downloaded" in r.output and "pulse models download stylegan2-ffhq-256" in r.output


# ---------------------------------------------------------------------------
# One log path


def test_the_library_logs_and_the_cli_prints_each_record_once(tmp_path):
    log = logging.getLogger("pulse_sr.test")
    lines = []
    with collect(lines):
        log.info("plain")
        log.warning("careful")
        log.error("broken")
    assert lines == ["plain", "warning: careful", "error: broken"]
    # Without a handler the library is silent (a NullHandler on "pulse_sr").
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("pulse_sr").handlers)

    m = tiny_model()
    from pulse_sr.formats.safetensors_file import save_generator

    model = save_generator(m.generator, tmp_path / "tiny.safetensors", gaussian_fit=m.gaussian_fit)
    save_image(torch.rand(3, 4, 4), tmp_path / "in" / "a.png")
    (tmp_path / "in" / "b.txt").write_text("x")
    r = CliRunner().invoke(main, ["upsample", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--model",
                                  str(model), "--steps", "1", "--quiet"])
    assert r.output.count("skipped") == 1 and r.output.count("a: operator bicubic:4") == 1
