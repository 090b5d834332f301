"""Bad inputs, kills, full disks and hostile files, made here by the tests themselves (issue: reliability)."""

import errno
import json
import os
import resource
import stat
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pulse_sr.cli import main
from pulse_sr.diagnostics import collect
from pulse_sr.errors import InputImageError, ModelFormatError
from pulse_sr.formats.safetensors_file import CONFIG_KEY, save_generator
from pulse_sr.images import expand_inputs, load_rgb, save_image
from pulse_sr.pipelines.upsample import run as pipe
from pulse_sr.pipelines.upsample import plan_names

from conftest import tiny_model


@pytest.fixture
def model_file(tmp_path):
    m = tiny_model()
    return save_generator(m.generator, tmp_path / "tiny.safetensors", gaussian_fit=m.gaussian_fit)


def run(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def lr_image(path, seed=0, size=4):
    g = torch.Generator().manual_seed(seed)
    return save_image(torch.rand(3, size, size, generator=g), path)


def write_partial(fp, data: bytes) -> None:
    """What a failing PIL save leaves: ``fp`` is a path or the open file save_image hands it."""
    if hasattr(fp, "write"):
        fp.write(data)
        fp.flush()
    else:
        with open(fp, "wb") as f:
            f.write(data)


def strict_json(path):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


# ---------------------------------------------------------------------------
# Data loss


def test_out_may_not_be_the_input_folder(tmp_path, model_file):
    same = tmp_path / "same"
    lr_image(same / "face00.png")
    before = (same / "face00.png").read_bytes()
    r = run(["upsample", same, "--out", same, "--model", model_file, "--steps", "1", "--quiet"])
    assert r.exit_code == 2 and "holds the inputs" in r.output and r.output.count("\n") == 1
    assert (same / "face00.png").read_bytes() == before and sorted(p.name for p in same.iterdir()) == ["face00.png"]
    r = run(["align", same, "--out", same, "--no-detect", "--size", "64"])
    assert r.exit_code == 2 and "holds the inputs" in r.output
    assert (same / "face00.png").read_bytes() == before


def test_out_that_is_a_file_is_one_line(tmp_path, model_file):
    lr_image(tmp_path / "a.png")
    (tmp_path / "taken").write_text("x")
    r = run(["upsample", tmp_path / "a.png", "--out", tmp_path / "taken", "--model", model_file, "--quiet"])
    assert r.exit_code == 2 and r.output.startswith("error: --out") and "is a file" in r.output
    assert "Errno" not in r.output and r.output.count("\n") == 1


def test_inputs_that_share_a_stem_get_unique_outputs(tmp_path, model_file):
    src = tmp_path / "in"
    lr_image(src / "a.png", 0)
    lr_image(src / "a.bmp", 1)
    lr_image(src / "b.png", 2)
    lr_image(src / "b_lr.png", 3)
    out = tmp_path / "out"
    r = run(["upsample", src, "--out", out, "--model", model_file, "--steps", "1", "--seed", "0", "--quiet"])
    assert r.exit_code in (0, 3), r.output
    rep = strict_json(out / "report.json")
    outputs = [e["output"] for e in rep["results"]] + [e["downscaled"] for e in rep["results"]]
    assert len(outputs) == len(set(outputs)) == 8
    by_input = {os.path.basename(e["input"]): e["output"] for e in rep["results"]}
    assert by_input == {"a.bmp": "a.png", "a.png": "a_png.png", "b.png": "b.png", "b_lr.png": "b_lr_png.png"}
    assert all((out / o).is_file() for o in outputs)


def test_plan_names_with_samples_and_faces():
    from pathlib import Path
    files = [Path("x/a.png"), Path("y/a.png"), Path("a_0.png"), Path("a_face0.jpg")]
    names = plan_names(files, samples=2)
    assert names[Path("x/a.png")] == "a" and names[Path("y/a.png")] == "a_png"
    assert names[Path("a_0.png")] == "a_0"  # writes a_0_0.png...: no clash with a_0.png of "a"
    faces = plan_names(files, align=True)
    assert faces[Path("x/a.png")] == "a" and faces[Path("y/a.png")] == "a_png"
    assert faces[Path("a_face0.jpg")] == "a_face0"  # writes a_face0_face0.png: not in the family of "a"
    assert len(set(faces.values())) == 4


def test_report_is_written_after_every_input_and_a_rerun_resumes(tmp_path, model_file, monkeypatch):
    src = tmp_path / "in"
    for k in range(3):
        lr_image(src / f"f{k}.png", k)
    out = tmp_path / "out"
    real = pipe.upsample
    calls = []

    def dies_on_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as Ctrl-C, or a kill between two inputs
        return real(*a, **k)

    monkeypatch.setattr(pipe, "upsample", dies_on_second)
    args = ["upsample", src, "--out", out, "--model", model_file, "--steps", "2", "--quiet"]
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 130
    rep = strict_json(out / "report.json")
    assert [os.path.basename(e["input"]) for e in rep["results"]] == ["f0.png"]
    seed, stamp = rep["seed"], (out / "f0.png").stat().st_mtime_ns

    monkeypatch.setattr(pipe, "upsample", real)
    calls.clear()
    r = run(args)  # no --seed: the run recorded in report.json is resumed with its seed
    assert r.exit_code in (0, 3), r.output
    assert f"with its seed {seed}" in r.output and "f0.png: done in an earlier run" in r.output
    rep = strict_json(out / "report.json")
    assert sorted(os.path.basename(e["input"]) for e in rep["results"]) == ["f0.png", "f1.png", "f2.png"]
    assert {e["seed"] for e in rep["results"]} == {seed}
    assert (out / "f0.png").stat().st_mtime_ns == stamp  # not redone

    # Other settings: redone; a second run on other inputs keeps the first run's results.
    lr_image(tmp_path / "other" / "g.png", 9)
    r = run(["upsample", tmp_path / "other", "--out", out, "--model", model_file, "--steps", "1", "--seed", "5",
             "--quiet"])
    rep = strict_json(out / "report.json")
    assert sorted(os.path.basename(e["input"]) for e in rep["results"]) == ["f0.png", "f1.png", "f2.png", "g.png"]
    assert len(rep["runs"]) == 2 and rep["seed"] == 5


def test_a_live_run_holds_the_folder_and_a_dead_one_does_not(tmp_path, model_file):
    import fcntl
    lr_image(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".pulse.lock", "w") as held:
        held.write("pid 12345 on elsewhere\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = run(["upsample", tmp_path / "a.png", "--out", out, "--model", model_file, "--steps", "1", "--quiet"])
        assert r.exit_code == 2 and "in use by a running pulse upsample (pid 12345 on elsewhere)" in r.output
    # The lock file stays behind, as after a kill, but nobody holds it.
    r = run(["upsample", tmp_path / "a.png", "--out", out, "--model", model_file, "--steps", "1", "--quiet"])
    assert r.exit_code in (0, 3), r.output


def test_a_full_disk_stops_the_batch_and_leaves_no_truncated_file(tmp_path, model_file, monkeypatch):
    src = tmp_path / "in"
    for k in range(3):
        lr_image(src / f"f{k}.png", k)
    out = tmp_path / "out"
    import pulse_sr.images as images
    real_save = Image.Image.save
    writes = []

    def fills_up(self, fp, *a, **k):
        writes.append(fp)
        if len(writes) > 3:  # the first input's three images fit, then the disk is full
            write_partial(fp, b"\x89PNG half")  # a partial file, as a full disk leaves it
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *a, **k)

    monkeypatch.setattr(images.Image.Image, "save", fills_up)
    r = run(["upsample", src, "--out", out, "--model", model_file, "--steps", "1", "--seed", "0", "--quiet"])
    assert r.exit_code == 1 and "No space left on device" in r.output and "stopped" in r.output
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "f0.png", "f0_lr.png", "f0_residual.png", "report.json"]
    assert not [p for p in out.iterdir() if ".tmp" in p.name]  # temporary files cleaned up
    rep = strict_json(out / "report.json")
    assert [os.path.basename(e["input"]) for e in rep["results"]] == ["f0.png"]
    assert rep["errors"][0]["input"].endswith("f1.png") and rep["exit_code"] == 1


def test_save_image_is_atomic(tmp_path, monkeypatch):
    path = save_image(torch.zeros(3, 4, 4), tmp_path / "x.png")
    before = path.read_bytes()

    def broken(self, fp, *a, **k):
        write_partial(fp, b"partial")
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(Image.Image, "save", broken)
    with pytest.raises(OSError):
        save_image(torch.ones(3, 4, 4), path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["x.png"]


def test_eval_keys_records_by_file_name(tmp_path, model_file):
    data = tmp_path / "hr"
    for name, seed in (("a.png", 0), ("a.jpg", 1), ("b.png", 2)):
        img = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(seed))
        save_image(img, data / name)
    out = tmp_path / "out"
    r = run(["eval", data, "--out", out, "--model", model_file, "--scale", "4", "--runs", "1", "--steps", "1",
             "--grid", "0", "--no-niqe"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (out / "per_image").iterdir()) == ["a.jpg.json", "a.png.json", "b.png.json"]
    assert sorted(rec["file"] for rec in strict_json(out / "results.json")["per_image"]) == ["a.jpg", "a.png",
                                                                                            "b.png"]


def test_eval_exits_2_when_images_were_skipped(tmp_path, model_file):
    data = tmp_path / "hr"
    save_image(torch.rand(3, 16, 16), data / "a.png")
    save_image(torch.rand(3, 16, 20), data / "wide.png")
    r = run(["eval", data, "--out", tmp_path / "out", "--model", model_file, "--scale", "4", "--runs", "1",
             "--steps", "1", "--grid", "0", "--no-niqe"])
    assert r.exit_code == 2 and "1 image(s) skipped" in r.output
    assert strict_json(tmp_path / "out" / "results.json")["exit_code"] == 2


# ---------------------------------------------------------------------------
# Hangs and resource bounds


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_a_fifo_is_refused_not_read(tmp_path):
    os.mkfifo(tmp_path / "x.png")
    code = ("from pulse_sr.images import load_rgb\n"
            f"try:\n    load_rgb({str(tmp_path / 'x.png')!r})\nexcept Exception as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "is a FIFO, not an image file" in out.stdout, out.stderr
    notes = []
    lr_image(tmp_path / "ok.png")
    with collect(notes):
        assert expand_inputs([tmp_path]) == [tmp_path / "ok.png"]
    assert notes == [f"skipped {tmp_path / 'x.png'}: a FIFO, not an image file"]


def test_huge_images_are_refused_from_the_header(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("1", (9000, 9000)).save(path)  # 81 MP, a few KB on disk
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InputImageError, match=r"huge.png: 9000×9000 is 81 MP, over the 40 MP limit"):
        load_rgb(path)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100  # decoding it as RGB would take 243 MB


def test_pixel_limit_can_be_set(tmp_path, monkeypatch):
    path = save_image(torch.rand(3, 40, 40), tmp_path / "p.png")
    monkeypatch.setenv("PULSE_MAX_PIXELS", "1000")
    with pytest.raises(InputImageError, match="over the 0 MP limit|PULSE_MAX_PIXELS"):
        load_rgb(path)


def _rewrite_config(src, dst, **changes):
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    cfg = json.loads(meta[CONFIG_KEY])
    cfg.update(changes)
    meta[CONFIG_KEY] = json.dumps(cfg)
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_a_tiny_file_cannot_ask_for_a_huge_generator(tmp_path, model_file):
    from pulse_sr import load_model
    bad = _rewrite_config(model_file, tmp_path / "huge.safetensors", fmap_base=2 ** 30, fmap_max=2 ** 30)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ModelFormatError, match="M parameters .* over the 300 M limit"):
        load_model(bad)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 200
    # Right size, but shapes that disagree with the config: refused before the tensors are read.
    wide = _rewrite_config(model_file, tmp_path / "wide.safetensors", fmap_max=32)
    with pytest.raises(ModelFormatError, match="shape mismatch"):
        load_model(wide)


def test_nan_weights_are_refused(tmp_path):
    from pulse_sr import load_model
    m = tiny_model()
    with torch.no_grad():
        m.generator.synthesis.layers[2].weight[0, 0, 0, 0] = float("nan")
    path = save_generator(m.generator, tmp_path / "nan.safetensors", gaussian_fit=m.gaussian_fit)
    with pytest.raises(ModelFormatError, match=r"NaN or infinite values in \['synthesis.layers.2.weight'\]"):
        load_model(path)


@pytest.mark.parametrize("args, message", [
    (["--samples", "100000"], "100000 is not in the range 1<=x<=256"),
    (["--lr-size", "100000"], "100000 is not in the range 1<=x<=4096"),
    (["--lr-size", "3000"], "--lr-size 3000: LR sizes go from 1 to the model's 16 px"),
    (["--eps", "inf"], "eps must be a positive finite number"),
    (["--lr", "inf"], "lr must be a positive finite number"),
    (["--loss", "1e999*L2"], "weights must be finite numbers"),
])
def test_bounded_and_finite_options(tmp_path, model_file, args, message):
    lr_image(tmp_path / "a.png")
    r = run(["upsample", tmp_path / "a.png", "--out", tmp_path / "o", "--model", model_file, "--quiet", *args])
    assert r.exit_code == 2 and message in r.output, r.output
    assert "MemoryError" not in r.output and "Traceback" not in r.output


# ---------------------------------------------------------------------------
# Security: caches that others can write are never trusted


def test_a_kernel_cache_others_can_write_is_not_used(tmp_path, monkeypatch):
    from pulse_sr import runtime
    from pulse_sr.ops import epilogue as E
    from pulse_sr.ops import native
    monkeypatch.setenv("PULSE_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "_libraries", {})
    shared = tmp_path / "kernels"
    shared.mkdir()
    os.chmod(shared, 0o777)
    private = runtime.trusted_cache("kernels")
    assert private != shared and stat.S_IMODE(private.stat().st_mode) == 0o700
    if E.kernels() is not None:
        assert not list(shared.glob("*.so"))  # built privately, never into the shared folder
    os.chmod(shared, 0o700)
    assert runtime.trusted_cache("kernels") == shared


@pytest.mark.skipif(os.name != "posix", reason="ownership checks are POSIX-only")
def test_a_kernel_file_that_is_not_private_is_rebuilt(tmp_path, monkeypatch):
    from pulse_sr.ops import epilogue as E
    from pulse_sr.ops import native
    monkeypatch.setenv("PULSE_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "_libraries", {})
    if E.kernels() is None:
        pytest.skip(f"no C compiler: {E.kernels_error()}")
    (so,) = (tmp_path / "kernels").glob("epilogue-*.so")
    so.unlink()  # a new file, not the one this process has mapped
    so.write_bytes(b"planted by someone else")
    os.chmod(so, 0o666)
    monkeypatch.setattr(native, "_libraries", {})
    assert E.kernels() is not None, E.kernels_error()  # the planted file was not loaded: rebuilt
    assert so.read_bytes() != b"planted by someone else" and stat.S_IMODE(so.stat().st_mode) == 0o700


def test_a_gaussian_fit_others_can_write_is_recomputed(tmp_path, monkeypatch):
    import pulse_sr.model as model_mod
    from pulse_sr.model import cached_gaussian_fit
    from conftest import tiny_generator
    G = tiny_generator()
    fit = cached_gaussian_fit(G, tmp_path, num_samples=500)
    (path,) = tmp_path.iterdir()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    torch.save({"mean": fit["mean"] + 100, "std": fit["std"]}, path)  # tampered
    os.chmod(path, 0o666)
    calls = []
    real = model_mod.compute_gaussian_fit
    monkeypatch.setattr(model_mod, "compute_gaussian_fit", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = cached_gaussian_fit(G, tmp_path, num_samples=500)
    assert calls == [1] and torch.allclose(again["mean"], fit["mean"])


# ---------------------------------------------------------------------------
# Messages


def test_report_json_is_strict(tmp_path, model_file):
    lr_image(tmp_path / "a.png")
    run(["upsample", tmp_path / "a.png", "--out", tmp_path / "o", "--model", model_file, "--steps", "1", "--quiet"])
    strict_json(tmp_path / "o" / "report.json")


def test_what_a_folder_skips_and_first_frames_are_said(tmp_path, model_file):
    src = tmp_path / "in"
    lr_image(src / "a.png")
    (src / "sub").mkdir()
    (src / "notes.txt").write_text("x")
    os.symlink(src / "loop.png", src / "loop.png")
    frames = [Image.new("RGB", (4, 4), (i * 40, 0, 0)) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    r = run(["upsample", src, tmp_path / "anim.gif", "--out", tmp_path / "o", "--model", model_file,
             "--steps", "1", "--quiet"])
    assert f"skipped {src / 'sub'}: a folder" in r.output
    assert f"skipped {src / 'notes.txt'}: not a PNG/JPG/WEBP/BMP file" in r.output
    assert f"skipped {src / 'loop.png'}: cannot be read" in r.output
    assert f"{tmp_path / 'anim.gif'}: 3 frames; used the first" in r.output
    rep = strict_json(tmp_path / "o" / "report.json")
    assert sorted(os.path.basename(e["input"]) for e in rep["results"]) == ["a.png", "anim.gif"]


def test_wrong_size_names_the_file(tmp_path, model_file):
    save_image(torch.rand(3, 20, 18), tmp_path / "odd.png")
    lr_image(tmp_path / "ok.png")
    r = run(["upsample", tmp_path / "odd.png", tmp_path / "ok.png", "--out", tmp_path / "o", "--model", model_file,
             "--steps", "1", "--quiet"])
    assert r.exit_code == 2 and f"{tmp_path / 'odd.png'}: 18×20 is larger than the model's 16×16" in r.output
    assert (tmp_path / "o" / "ok.png").is_file()  # the others still ran


def test_an_unreadable_folder_is_one_line_and_the_rest_run(tmp_path, model_file, monkeypatch):
    from pathlib import Path
    lr_image(tmp_path / "a.png")
    locked = tmp_path / "locked"
    locked.mkdir()
    real = Path.iterdir

    def denied(self):
        if self == locked:  # root reads every folder, so refuse it here as a 0000 folder would
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "iterdir", denied)
    r = run(["upsample", locked, tmp_path / "a.png", "--out", tmp_path / "o", "--model", model_file,
             "--steps", "1", "--quiet"])
    assert f"skipped {locked}: cannot be read (Permission denied)" in r.output
    assert (tmp_path / "o" / "a.png").is_file() and r.exit_code in (0, 3)


def test_eval_out_that_is_a_file_is_one_line(tmp_path, model_file):
    save_image(torch.rand(3, 16, 16), tmp_path / "hr" / "a.png")
    (tmp_path / "taken").write_text("x")
    r = run(["eval", tmp_path / "hr", "--out", tmp_path / "taken", "--model", model_file, "--scale", "4"])
    assert r.exit_code == 2 and "is a file" in r.output and "Errno" not in r.output


def test_a_corrupt_stored_fit_is_refused(tmp_path):
    from pulse_sr import load_model
    m = tiny_model()
    fit = {"mean": m.gaussian_fit["mean"].clone(), "std": m.gaussian_fit["std"].clone()}
    fit["std"][3] = float("inf")
    path = save_generator(m.generator, tmp_path / "badfit.safetensors", gaussian_fit=fit)
    with pytest.raises(ModelFormatError, match="Gaussian fit is corrupt"):
        load_model(path)
