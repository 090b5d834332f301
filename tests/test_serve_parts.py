"""The parts of `pulse serve` and the Stop button that need no browser: upload checks, the residual
map, and `stop()` in the search and the pipeline."""

import json

import pytest
import torch

from pulse_sr import upsample
from pulse_sr.images import save_image
from pulse_sr.pipelines.upsample import RunContext, UpsampleJob, upsample_files
from pulse_sr.search import PulseOptions
from pulse_sr.images import residual_map
from pulse_sr.web.app import Runner, ServeSettings, UploadError

from conftest import tiny_model


def test_uploads_are_checked_for_bytes_pixels_and_decoding(tmp_path):
    runner = Runner(ServeSettings(max_bytes=50_000, max_pixels=10_000), tmp_path)
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(UploadError, match="not an image"):
        runner.check_upload(str(tmp_path / "a.txt"))
    big = save_image(torch.rand(3, 200, 200, generator=torch.Generator().manual_seed(0)), tmp_path / "big.png")
    with pytest.raises(UploadError, match=r"at most 0 MB|this server takes at most"):
        runner.check_upload(str(big))
    wide = save_image(torch.zeros(3, 100, 101), tmp_path / "wide.png")
    with pytest.raises(UploadError, match="10100 pixels|0.0 MP|at most 0 MP"):
        runner.check_upload(str(wide))
    ok = save_image(torch.zeros(3, 8, 8), tmp_path / "ok.png")
    assert runner.check_upload(str(ok)) == ok
    with pytest.raises(UploadError, match="Upload an image"):
        runner.check_upload(None)


def test_residual_map_is_black_where_the_downscale_matches_and_white_where_it_is_far():
    lr = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(0))
    ds = lr.clone()
    ds[:, 0, 0] = (lr[:, 0, 0] + 0.5) % 1  # |difference| 0.5 per channel, ×8 saturates
    r = residual_map(ds, lr)
    assert r.shape == (3, 4, 4)
    assert torch.equal(r[:, 1:, :], torch.zeros(3, 3, 4)) and torch.equal(r[:, 0, 1:], torch.zeros(3, 3))
    assert torch.equal(r[:, 0, 0], torch.ones(3))


def test_stop_ends_the_search_with_its_best_so_far():
    m = tiny_model()
    calls = []

    def stop():
        calls.append(1)
        return len(calls) >= 3

    res = upsample(torch.rand(3, 4, 4), m, steps=50, seed=0, stop=stop)
    assert res.steps_taken == 3 and res.images.shape == (1, 3, 16, 16)


def test_a_stopped_input_is_marked_and_redone_by_a_rerun(tmp_path):
    m = tiny_model()
    src = save_image(torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(1)), tmp_path / "in" / "a.png")
    save_image(torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(2)), tmp_path / "in" / "b.png")
    files = [src, tmp_path / "in" / "b.png"]
    out = tmp_path / "out"
    job = UpsampleJob(PulseOptions(steps=20), seed=0)
    report = upsample_files(files, m, out, job, RunContext(stop=lambda: True))
    assert [r.input for r in report.results] == [str(src)]  # b never started
    assert report.results[0].stopped is True and report.results[0].steps == 1
    assert "stopped on request" in json.loads((out / "report.json").read_text())["stopped"]
    again = upsample_files(files, m, out, job)
    assert not any("done in an earlier run" in line for line in again.notes)
    assert [r.steps for r in again.results] == [20, 20] and again.stopped is None


def test_a_port_in_use_is_one_line_and_leaves_no_temp_folder(tmp_path, monkeypatch):
    import socket
    import tempfile

    from click.testing import CliRunner

    from pulse_sr.cli import main

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        r = CliRunner().invoke(main, ["serve", "--port", str(port), "--device", "cpu"])
    assert r.exit_code == 1 and f"cannot serve on 127.0.0.1:{port}" in r.output
    assert not list(tmp_path.glob("pulse-serve-*"))
