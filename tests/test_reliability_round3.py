"""Reliability and security, round 3: nothing outside --out is touched, no file is read for a visitor,
a bad state never poisons a folder, loaders stay bounded, every bad value is one line.

Each test is named after the failure it covers (issue "reliability, round 3", items 1-8).
"""

import io
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pulse_sr.cli import main
from pulse_sr.formats.safetensors_file import save_generator
from pulse_sr.images import save_image

from conftest import tiny_model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    m = tiny_model()
    return save_generator(m.generator, tmp_path_factory.mktemp("model") / "tiny.safetensors",
                          gaussian_fit=m.gaussian_fit)


def run(args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], **kw)


def lr(path, seed=0, size=4):
    return save_image(torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed)), path)


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` (links included, not followed): its bytes and mtime."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            st = os.lstat(p)
            out[str(p.relative_to(folder))] = (p.read_bytes() if p.is_file() and not p.is_symlink() else None,
                                               st.st_mtime_ns)
    return out


def strict_json(path):
    def refuse(name):
        raise ValueError(name)
    return json.loads(Path(path).read_text(), parse_constant=refuse)


# ---------------------------------------------------------------------------
# 1. pulse serve reads no file a visitor names


@pytest.fixture(scope="module")
def runner(tmp_path_factory, model_file):
    from pulse_sr.web.app import Runner, ServeSettings

    return Runner(ServeSettings(model=str(model_file), max_steps=5), tmp_path_factory.mktemp("serve"))


def _search(runner, **kw):
    from pulse_sr.web.app import SearchRequest

    events = list(runner.search("session", SearchRequest(model=runner.settings.model, steps=2, samples=1, **kw)))
    return events[-1]


def test_the_page_refuses_every_mask_path_with_the_same_bytes(tmp_path, runner):
    from pulse_sr.errors import UploadError

    upload = lr(tmp_path / "face.png")
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.txt").write_text("not an image")
    real = lr(tmp_path / "secret.png", 1)
    answers = []
    for target in (tmp_path / "missing.png", tmp_path / "folder", tmp_path / "notes.txt", real):
        with pytest.raises(UploadError) as info:
            _search(runner, upload=str(upload), operator=f"gray+mask:{target}")
        answers.append(str(info.value).encode())
    assert len(set(answers)) == 1 and b"mask" in answers[0] and str(tmp_path).encode() not in answers[0]


def test_a_mask_comes_as_an_upload(tmp_path, runner):
    upload = lr(tmp_path / "face.png")
    m = torch.ones(3, 4, 4)
    m[:, :2] = 0
    mask = save_image(m, tmp_path / "mask.png")
    kind, cards, zip_path, text = _search(runner, upload=str(upload), mask=str(mask))
    assert kind == "done" and "mask:" in cards and "within" in text
    with zipfile.ZipFile(zip_path) as z:
        report = json.loads(z.read("report.json"))
    assert report["results"][0]["operator"]["parts"][-1]["name"] == "mask"


def test_a_bad_seed_and_a_decompression_bomb_are_page_messages(tmp_path, runner):
    from PIL import Image

    from pulse_sr.errors import UploadError

    upload = lr(tmp_path / "face.png")
    with pytest.raises(UploadError, match="whole number"):
        _search(runner, upload=str(upload), seed="x")
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # 2 KB on disk, 400 MP decoded
    with pytest.raises(UploadError, match="more pixels than this server takes|MP"):
        _search(runner, upload=str(bomb))


def test_sigterm_stops_pulse_serve_and_removes_its_folder(tmp_path, model_file):
    env = {**os.environ, "TMPDIR": str(tmp_path), "PULSE_DEBUG": ""}
    proc = subprocess.Popen([sys.executable, "-m", "pulse_sr", "serve", "--port", "0", "--model", str(model_file),
                             "--device", "cpu"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 120
        line = ""
        while "PULSE is at" not in line and time.time() < deadline:
            line = proc.stderr.readline()
        assert "PULSE is at" in line, line
        assert list(tmp_path.glob("pulse-serve-*"))
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert not list(tmp_path.glob("pulse-serve-*"))


# ---------------------------------------------------------------------------
# 2. Links planted in --out are never followed


@pytest.fixture
def planted(tmp_path):
    """An output folder and, outside it, another user's files."""
    out, theirs = tmp_path / "out", tmp_path / "theirs"
    out.mkdir()
    theirs.mkdir()
    (theirs / "precious.txt").write_text("do not touch")
    (theirs / "log.jsonl").write_text('{"theirs": 1}\n')
    os.utime(theirs / "precious.txt", ns=(1_000_000_000, 1_000_000_000))
    return out, theirs


def _unchanged(theirs, before):
    assert snapshot(theirs) == before


@pytest.mark.parametrize("link, to", [(".pulse.lock", "precious.txt"), (".pulse-parts", "."),
                                      (".pulse-parts/rank0.jsonl", "log.jsonl"), ("a", "."),
                                      (f".a.{os.getpid()}.tmp.png", "precious.txt"),
                                      (f".report.json.{os.getpid()}.tmp", "precious.txt")])
def test_a_planted_link_is_never_followed(tmp_path, model_file, planted, link, to):
    out, theirs = planted
    (out / link).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(theirs / to, out / link)
    before = snapshot(theirs)
    r = run(["upsample", lr(tmp_path / "in" / "a.png"), "--out", out, "--model", model_file, "--steps", "2",
             "--seed", "0", "--save-intermediate", "--quiet"])
    assert r.exit_code in (0, 3), r.output
    _unchanged(theirs, before)
    assert (out / "a.png").is_file() and strict_json(out / "report.json")["results"]
    assert not (out / link).is_symlink()  # the link itself is gone, replaced by the run's own


# ---------------------------------------------------------------------------
# 3. A bad state never breaks a later run


GOOD = None


def _first_report(tmp_path, model_file):
    out = tmp_path / "out"
    r = run(["upsample", lr(tmp_path / "in" / "a.png"), "--out", out, "--model", model_file, "--steps", "1",
             "--seed", "0", "--quiet"])
    assert r.exit_code in (0, 3), r.output
    return out


@pytest.mark.parametrize("damage", ["nan", "truncated", "non-objects", "runs-type"])
def test_a_bad_report_is_set_aside_and_the_run_goes_on(tmp_path, model_file, damage):
    out = _first_report(tmp_path, model_file)
    text = (out / "report.json").read_text()
    bad = {"nan": text.replace('"best_l2": ', '"best_l2": NaN, "x": ', 1),
           "truncated": text[: len(text) // 2],
           "non-objects": text.replace('"results": [', '"results": [1, "two", null,', 1),
           "runs-type": text.replace('"runs": {', '"runs": [], "was": {', 1)}[damage]
    (out / "report.json").write_text(bad)
    lr(tmp_path / "in" / "b.png", 1)
    r = run(["upsample", tmp_path / "in", "--out", out, "--model", model_file, "--steps", "1", "--seed", "0",
             "--quiet"])
    assert r.exit_code in (0, 3), r.output
    assert "warning:" in r.output and ".bad-" in r.output
    aside = list(out.glob("report.json.bad-*"))
    assert len(aside) == 1 and aside[0].read_text() == bad  # nothing lost: the old bytes are kept
    rep = strict_json(out / "report.json")
    assert {os.path.basename(e["input"]) for e in rep["results"]} == {"a.png", "b.png"}


@pytest.mark.parametrize("record", [{"event": "done", "results": []}, {"event": "error", "unit": "u"},
                                    {"event": "run", "settings": {}}, {"event": "done", "unit": 3, "results": [1]}])
def test_a_bad_part_record_is_set_aside_and_the_run_goes_on(tmp_path, model_file, record):
    out = tmp_path / "out"
    (out / ".pulse-parts").mkdir(parents=True)
    (out / ".pulse-parts" / "rank1.jsonl").write_text(json.dumps(record) + "\n")
    r = run(["upsample", lr(tmp_path / "in" / "a.png"), "--out", out, "--model", model_file, "--steps", "1",
             "--quiet"])
    assert r.exit_code in (0, 3), r.output
    assert strict_json(out / "report.json")["results"]
    assert list((out / ".pulse-parts").glob("rank1.jsonl.bad-*"))


def test_a_bad_eval_part_record_is_set_aside(tmp_path, model_file):
    from pulse_sr.pipelines.shards import digest

    data = tmp_path / "hr"
    save_image(torch.rand(3, 16, 16), data / "a.png")
    out = tmp_path / "out"
    args = ["eval", data, "--out", out, "--model", model_file, "--scale", "4", "--runs", "1", "--steps", "1",
            "--grid", "0"]
    assert run(args).exit_code == 0
    sig = json.loads((out / "per_image" / "a.png.json").read_text())["signature"]
    save_image(torch.rand(3, 16, 16), data / "b.png")
    (out / ".pulse-parts").mkdir(parents=True)
    (out / ".pulse-parts" / "rank0.jsonl").write_text(json.dumps(  # b's unit, done, with a bad data field
        {"event": "done", "unit": f"{digest(sig)}|b.png|clean|0", "file": "b.png", "condition": "clean", "k": 0,
         "data": {"run": "not a dict", "seconds": 1.0, "image": {}}}) + "\n")
    r = run(args)
    assert r.exit_code == 0, r.output
    assert json.loads((out / "results.json").read_text())["images"] == 2 and "warning:" in r.output


def test_a_non_finite_loss_writes_nothing_and_is_recorded(tmp_path, model_file, monkeypatch):
    import pulse_sr.pipelines.upsample.run as pipe

    real = pipe.upsample

    def nan_search(*a, **k):
        res = real(*a, **k)
        res.best_l2[:] = float("nan")
        return res

    monkeypatch.setattr(pipe, "upsample", nan_search)
    out = tmp_path / "out"
    r = run(["upsample", lr(tmp_path / "in" / "a.png"), "--out", out, "--model", model_file, "--steps", "1",
             "--quiet"])
    assert r.exit_code == 2 and "not a finite number" in r.output
    assert not list(out.glob("*.png"))
    rep = strict_json(out / "report.json")
    assert rep["results"] == [] and "not a finite number" in rep["errors"][0]["error"]
    # And the operator of the report ("blur:gauss:1e-200") is refused before any search.
    r = run(["upsample", tmp_path / "in" / "a.png", "--out", tmp_path / "o2", "--model", model_file,
             "--operator", "blur:gauss:1e-200"])
    assert r.exit_code == 2 and "σ must be from" in r.output


# ---------------------------------------------------------------------------
# 4. Loaders: bounded memory, bounded nesting, no advice to disable weights_only


LOAD = """
import resource, sys
# A 2 GiB address-space cap, as a machine with little memory has: a loader that asks for gigabytes
# dies with MemoryError instead of refusing the file. (torch itself maps about 0.7 GiB.)
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from pulse_sr.formats import load_file
try:
    load_file(sys.argv[1])
    print("loaded")
except Exception as exc:
    print(type(exc).__name__ + ": " + str(exc))
# The peak resident memory of this process since it started (VmHWM; getrusage's ru_maxrss also
# counts the pytest process this one was forked from, before its exec).
print("rss_kb", next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")))
"""


def _load_in_child(path):
    out = subprocess.run([sys.executable, "-c", LOAD, str(path)], capture_output=True, text=True, timeout=300)
    lines = out.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("rss_kb"), out.stdout + out.stderr
    return "\n".join(lines[:-1]) + out.stderr, int(lines[-1].split()[1]) * 1024


def _nvidia_snapshot(path, extra=None, kwargs=None, protocol=4):
    """A valid tiny StyleGAN2 snapshot (the equivalence fixture's), with ``extra`` tensors added to its
    state and ``kwargs`` merged into its constructor arguments: what a hostile file would change."""
    sys.path.insert(0, str(Path(__file__).parent))
    import test_stylegan2
    from nvidia_pickles import _fake_modules, hostile_source, network

    fx = test_stylegan2.fixture("stylegan2-64")
    G = network(test_stylegan2.full_state(fx), {**fx["init_kwargs"], **(kwargs or {})},
                hostile_source(path.parent / "executed"))
    G.meta_state["_parameters"].update(extra or {})  # not cloned: a view pickles as its small storage
    if protocol < 4:  # protocols 2 and 3 pickle sets as set() calls (not allowed): lists load the same
        todo = [G]
        while todo:
            node = todo.pop()
            node.meta_state["_non_persistent_buffers_set"] = []
            todo += list(node.meta_state["_modules"].values())
    with _fake_modules():
        raw = pickle.dumps({"G_ema": G}, protocol=protocol)
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize("kind", ["stride0", "overlap", "tf-reconstruct", "zip-bomb", "declared", "deep-pickle",
                                  "deep-header", "deep-config"])
def test_a_tiny_hostile_file_stays_under_1_gb(tmp_path, kind):
    path = tmp_path / "m.bin"
    if kind == "stride0":
        _nvidia_snapshot(path, {"bogus": torch.zeros(1, dtype=torch.half).expand(28000, 28000)})
    elif kind == "overlap":
        _nvidia_snapshot(path, {"bogus": torch.zeros(56000, dtype=torch.half).as_strided((28000, 28000), (1, 1))})
    elif kind == "tf-reconstruct":
        class Bomb:
            def __reduce__(self):
                return np._core.multiarray._reconstruct, (np.ndarray, (27000, 27000), b"f")
        path.write_bytes(pickle.dumps((Bomb(), Bomb(), Bomb()), protocol=3))
    elif kind in ("zip-bomb", "declared"):
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/version", "3\n")
            if kind == "zip-bomb":  # a data.pkl that deflates from under 2 MB to 1.6 GB
                info = zipfile.ZipInfo("archive/data.pkl")
                info.compress_type = zipfile.ZIP_DEFLATED
                with z.open(info, "w", force_zip64=True) as f:
                    f.write(b"\x80\x02}q\x00(X\x05\x00\x00\x00g_ema")
                    chunk = b"\x00" * (16 << 20)
                    for _ in range(100):
                        f.write(chunk)
            else:
                class P(pickle.Pickler):
                    def persistent_id(self, obj):
                        return ("storage", torch.FloatStorage, "0", "cpu", 10 ** 9) if obj == "S" else None
                buf = io.BytesIO()
                P(buf, protocol=2).dump({"g_ema": {"x": "S"}, "latent_avg": None})
                z.writestr("archive/data.pkl", buf.getvalue())
                z.writestr("archive/data/0", b"\x00" * 16)
    elif kind == "deep-pickle":
        # NVIDIA kwargs holding lists nested 200 000 deep, as opcodes (a pickler would recurse that deep).
        _nvidia_snapshot(path, kwargs={"bogus": "DEEPDEEP"}, protocol=3)  # no frames to keep consistent
        raw = path.read_bytes()
        token = b"X\x08\x00\x00\x00DEEPDEEP"
        assert raw.count(token) == 1
        n = 200_000
        path.write_bytes(raw.replace(token, b"]" * n + b"a" * (n - 1)))
    else:
        header = {"__metadata__": {"pulse_sr_format": "pulse-sr/stylegan1", "pulse_sr_config": "{}"}}
        nested = "[" * 200_000 + "]" * 200_000
        if kind == "deep-header":
            text = json.dumps(header)[:-1] + ', "x": ' + nested + "}"
        else:
            header["__metadata__"]["pulse_sr_config"] = nested
            text = json.dumps(header)
        raw = text.encode()
        path.write_bytes(len(raw).to_bytes(8, "little") + raw)
    assert path.stat().st_size < (2 << 20 if kind == "zip-bomb" else 1 << 20)
    said, rss = _load_in_child(path)
    assert rss < 1 << 30, (kind, rss, said)
    assert said.startswith(("ModelFormatError", "UnsafePickleError")), said
    assert "allocat" not in said and "MemoryError" not in said, said  # refused before, not failed during
    assert "weights_only" not in said and "Traceback" not in said and not (tmp_path / "executed").exists()


def test_no_loader_advises_weights_only_false(tmp_path, model_file):
    class System:
        def __reduce__(self):
            return os.system, ("true",)

    evil = tmp_path / "synthesis.pt"
    torch.save({"x": torch.zeros(1)}, evil)  # a valid torch file ...
    with zipfile.ZipFile(evil) as z:
        names = z.namelist()
        members = {n: z.read(n) for n in names}
    pkl = next(n for n in names if n.endswith("data.pkl"))
    members[pkl] = pickle.dumps({"x": System()}, protocol=2)  # ... whose pickle runs os.system
    with zipfile.ZipFile(evil, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    save_image(torch.rand(3, 4, 4), tmp_path / "a.png")
    r = run(["upsample", tmp_path / "a.png", "--out", tmp_path / "o", "--model", evil])
    assert r.exit_code == 2 and "weights_only" not in r.output and r.output.count("\n") == 1
    # The same pickle as a training checkpoint.
    data = tmp_path / "data"
    for k in range(2):
        save_image(torch.rand(3, 16, 16), data / f"{k}.png")
    (tmp_path / "run").mkdir()
    evil.replace(tmp_path / "run" / "checkpoint.pt")
    r = run(["train", data, "--out", tmp_path / "run", "--resolution", "16", "--device", "cpu"])
    assert r.exit_code == 2 and "weights_only" not in r.output and r.output.count("\n") <= 3, r.output


# ---------------------------------------------------------------------------
# 5. One tiny image never aborts an alignment batch


def test_a_tiny_photo_is_one_line_and_the_others_align(tmp_path):
    from pulse_sr.align import FaceDetectorUnavailable, detection

    skimage_data = pytest.importorskip("skimage.data")
    try:
        detection._dlib_models()
    except FaceDetectorUnavailable:
        pytest.skip("dlib is not installed (pulse-sr[align])")
    from PIL import Image

    photos = tmp_path / "in"
    photos.mkdir()
    Image.fromarray(skimage_data.astronaut()).resize((256, 256)).save(photos / "astronaut.png")
    save_image(torch.rand(3, 4, 4), photos / "tiny.png")
    r = run(["align", photos, "--out", tmp_path / "out"])
    assert r.exit_code == 3, r.output  # the tiny one has no face; the astronaut is aligned
    assert (tmp_path / "out" / "astronaut_face0.png").is_file() and "tiny.png: no face found" in r.output


# ---------------------------------------------------------------------------
# 6. Nothing hangs


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
@pytest.mark.parametrize("option", ["--gaussian-fit", "--mapping"])
def test_a_fifo_as_a_file_option_is_refused_not_read(tmp_path, model_file, option):
    os.mkfifo(tmp_path / "fifo.pt")
    lr(tmp_path / "a.png")
    out = subprocess.run([sys.executable, "-m", "pulse_sr", "upsample", str(tmp_path / "a.png"), "--out",
                          str(tmp_path / "o"), "--model", str(model_file), option, str(tmp_path / "fifo.pt")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "FIFO" in out.stderr, out.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_a_fifo_in_a_training_folder_is_skipped(tmp_path):
    data = tmp_path / "data"
    for k in range(2):
        save_image(torch.rand(3, 16, 16), data / f"{k}.png")
    os.mkfifo(data / "fifo.png")
    out = subprocess.run([sys.executable, "-m", "pulse_sr", "train", str(data), "--out", str(tmp_path / "run"),
                          "--resolution", "16", "--total-kimg", "0.004", "--batch", "2", "--latent-dim", "8",
                          "--w-dim", "8", "--mapping-layers", "1", "--fmap-base", "16", "--fmap-max", "8",
                          "--d-channel-base", "16", "--d-channel-max", "8", "--sample-every-kimg", "1",
                          "--checkpoint-every-kimg", "1", "--device", "cpu"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "fifo.png" in out.stderr and (tmp_path / "run" / "generator.safetensors").is_file()


def test_a_rank_without_its_peer_gives_up_and_names_it(tmp_path, model_file):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lr(tmp_path / "a.png")
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "PULSE_DIST_TIMEOUT": "4"}
    t0 = time.time()
    out = subprocess.run([sys.executable, "-m", "pulse_sr", "upsample", str(tmp_path / "a.png"), "--out",
                          str(tmp_path / "o"), "--model", str(model_file), "--device", "cpu"],
                         capture_output=True, text=True, timeout=180, env=env)
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 1 and last.startswith("error: rank 1 of 2: rank 0 never joined within 4 s"), out.stderr
    assert time.time() - t0 < 120 and "Traceback" not in out.stderr  # torch's own C++ log line may precede it


# ---------------------------------------------------------------------------
# 7. Every bad value is one line and exit 2


@pytest.mark.parametrize("args, message", [
    (["--operator", "blur:motion:5,nan"], "not a finite number"),
    (["--operator", "blur:motion:5,inf"], "not a finite number"),
    (["--noise-sigma", "nan"], "noise sigma"),
    (["--seed", str(2 ** 64)], "--seed"),
])
def test_bad_upsample_values_are_one_line(tmp_path, model_file, args, message):
    lr(tmp_path / "a.png")
    r = run(["upsample", tmp_path / "a.png", "--out", tmp_path / "o", "--model", model_file] + args)
    assert r.exit_code == 2 and message in r.output, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.output and len(r.output.splitlines()) <= 2


@pytest.mark.parametrize("args, message", [
    (["--batch", "0"], "--batch"), (["--sample-every-kimg", "0"], "--sample-every-kimg"),
    (["--lr", "nan"], "--lr"), (["--resolution", "63"], "--resolution"), (["--threads", "-1"], "--threads"),
])
def test_bad_train_values_are_one_line(tmp_path, args, message):
    data = tmp_path / "data"
    save_image(torch.rand(3, 16, 16), data / "0.png")
    r = run(["train", data, "--out", tmp_path / "run", "--device", "cpu"] + args)
    assert r.exit_code == 2 and message in r.output and r.output.count("\n") == 1, r.output
    assert not (tmp_path / "run").exists()


def test_a_training_folder_of_truncated_images_is_one_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    good = save_image(torch.rand(3, 16, 16), tmp_path / "x.png").read_bytes()
    (data / "0.png").write_bytes(good[: len(good) // 2])
    r = run(["train", data, "--out", tmp_path / "run", "--resolution", "16", "--device", "cpu"])
    assert r.exit_code == 2 and "none of its 1 images could be read" in r.output, r.output


def test_pulse_quality_with_too_few_or_too_small_images_is_one_line(tmp_path, model_file):
    few = tmp_path / "few"
    for k in range(3):
        save_image(torch.rand(3, 20, 20), few / f"{k}.png")
    r = run(["quality", few, "--model", model_file, "--n", "6", "--bootstrap", "0"])
    assert r.exit_code == 2 and "at least 5" in r.output, r.output
    tiny = tmp_path / "tiny"
    for k in range(6):
        save_image(torch.rand(3, 1, 1), tiny / f"{k}.png")
    r = run(["quality", tiny, "--images", tiny, "--n", "6", "--bootstrap", "0"])
    assert r.exit_code == 2 and "0 usable image(s)" in r.output, r.output


# ---------------------------------------------------------------------------
# 8. Wrong results, said as if right


@pytest.mark.parametrize("spec, message", [
    ("mask:{a}+mask:{b}", "at most one mask"),
    ("nearest:4@1,2,3", "one number or two"),
    ("+".join(["gray"] * 20), "at most 16"),
    ("+".join(["gray"] * 20_001), "at most 512"),
    ("gray+" + "x" * 100_000, "at most 512"),
    ("blur:gauss:64", "σ must be from"),
])
def test_specs_that_ran_wrong_are_refused(tmp_path, model_file, spec, message):
    lr(tmp_path / "a.png")
    m = torch.ones(3, 4, 4)
    spec = spec.format(a=save_image(m, tmp_path / "ma.png"), b=save_image(m, tmp_path / "mb.png"))
    r = run(["upsample", tmp_path / "a.png", "--out", tmp_path / "o", "--model", model_file, "--operator", spec])
    assert r.exit_code == 2 and message in r.output, r.output[:300]
    assert len(r.output) < 600  # a long spec is echoed in at most 80 characters
    assert not (tmp_path / "o" / "report.json").exists() or len((tmp_path / "o" / "report.json").read_text()) < 5000


def test_a_mask_path_may_hold_a_plus(tmp_path, model_file):
    lr(tmp_path / "a.png")
    m = torch.ones(3, 4, 4)
    m[:, 0] = 0
    path = save_image(m, tmp_path / "a+b mask.png")
    r = run(["upsample", tmp_path / "a.png", "--out", tmp_path / "o", "--model", model_file, "--steps", "1",
             "--operator", f"gray+mask:{path}", "--quiet"])
    assert r.exit_code in (0, 3), r.output
    entry = strict_json(tmp_path / "o" / "report.json")["results"][0]
    assert entry["spec"].endswith(f"mask:{path}") and entry["operator"]["parts"][-1]["known"] == 0.75


def test_report_json_that_is_a_folder_is_exit_1(tmp_path, model_file):
    out = tmp_path / "o"
    (out / "report.json").mkdir(parents=True)
    r = run(["upsample", lr(tmp_path / "a.png"), "--out", out, "--model", model_file, "--steps", "1", "--quiet"])
    assert r.exit_code == 1 and "report.json" in r.output, r.output


def test_an_input_swapped_mid_run_is_keyed_by_the_bytes_searched(tmp_path, model_file, monkeypatch):
    import pulse_sr.pipelines.upsample.run as pipe

    lr(tmp_path / "in" / "a.png", 0)
    b = lr(tmp_path / "in" / "b.png", 1)
    original_b = b.read_bytes()
    real = pipe.upsample
    calls = []

    def swapping(*args, **kw):  # while a is searched, b is replaced by another image
        calls.append(1)
        if len(calls) == 1:
            lr(b, 7)
        return real(*args, **kw)

    monkeypatch.setattr(pipe, "upsample", swapping)
    args = ["upsample", tmp_path / "in", "--out", tmp_path / "o", "--model", model_file, "--steps", "1",
            "--seed", "0", "--quiet"]
    assert run(args).exit_code in (0, 3)
    monkeypatch.setattr(pipe, "upsample", real)
    b.write_bytes(original_b)  # back to what the run started with: its result was not for these bytes
    r = run(args)
    assert "a.png: done in an earlier run" in r.output and "b.png: done in an earlier run" not in r.output


def test_eval_refuses_tiny_images_and_checks_labels_first(tmp_path, model_file, monkeypatch):
    data = tmp_path / "hr"
    save_image(torch.rand(3, 16, 16), data / "a.png")
    save_image(torch.rand(3, 1, 1), data / "dot.png")
    r = run(["eval", data, "--out", tmp_path / "o", "--model", model_file, "--scale", "4", "--runs", "1",
             "--steps", "1", "--grid", "0"])
    assert r.exit_code == 2 and "dot.png: 1×1 is too small" in r.output, r.output
    assert json.loads((tmp_path / "o" / "results.json").read_text())["images"] == 1

    import pulse_sr.pipelines.eval.run as ev

    monkeypatch.setattr(ev, "upsample", lambda *a, **k: pytest.fail("searched before checking --labels"))
    r = run(["eval", data, "--out", tmp_path / "o2", "--model", model_file, "--scale", "4", "--runs", "1",
             "--labels", tmp_path / "missing.csv"])
    assert r.exit_code == 2 and "missing.csv" in r.output, r.output
