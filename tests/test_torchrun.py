"""Sharding `pulse upsample` and `pulse eval` over torchrun ranks: 2 CPU ranks over gloo on 127.0.0.1.

The reference for every sharded run is the same command in one process: same
files, same success flags, best L2 within 1e-5, same report order.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from pulse_sr.cli import main

from pulse_sr.formats.safetensors_file import save_generator
from pulse_sr.images import save_image
from pulse_sr.pipelines.shards import PARTS, PartLog, Ranks, interrupted, ranks_from_env, read_parts, split

from conftest import tiny_model

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "pulse_sr"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    m = tiny_model()
    return save_generator(m.generator, tmp_path_factory.mktemp("model") / "tiny.safetensors",
                          gaussian_fit=m.gaussian_fit)


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


class Ran:
    def __init__(self, returncode, stderr):
        self.returncode, self.stderr = returncode, stderr


def pulse(args, world=1, timeout=240):
    """``pulse ARGS`` in one process (here, with one thread, as each of 2 ranks has on 2 cores:
    torch's CPU kernels round differently with other thread counts), or on ``world`` ranks."""
    if world > 1:
        out = subprocess.run(TORCHRUN + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                             env=env())
        return Ran(out.returncode, out.stderr)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    finally:
        torch.set_num_threads(threads)
    return Ran(r.exit_code, r.output)


def lr_inputs(folder, n, size=4, bad=()):
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        save_image(torch.rand(3, size, size, generator=g), folder / f"x{i:02d}.png")
    for name in bad:
        (folder / name).write_text("not an image")
    return folder


def without_timing(report):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in report["results"]]


def assert_same_results(a, b):
    assert [r["output"] for r in a] == [r["output"] for r in b]
    for x, y in zip(a, b):
        assert x["success"] == y["success"] and x["seed"] == y["seed"] and x["key"] == y["key"]
        assert abs(x["best_l2"] - y["best_l2"]) < 1e-5, (x, y)


def pngs(folder):
    return sorted(p.name for p in Path(folder).glob("*.png"))


# ---------------------------------------------------------------------------
# Pure parts


def test_split_covers_every_item_once_in_order():
    items = list(range(11))
    for world in (1, 2, 3, 5, 11, 16):
        shares = [split(items, Ranks(rank=r, world=world)) for r in range(world)]
        assert [x for s in shares for x in s] == items
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_ranks_from_env():
    assert ranks_from_env({}) == Ranks()
    r = ranks_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (r.rank, r.world, r.local_rank, r.local_world, r.main, r.sharded) == (3, 4, 1, 2, False, True)
    assert r.prefix() == "[rank 3/4] "
    with pytest.raises(ValueError, match="inconsistent"):
        ranks_from_env({"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(ValueError, match="not an integer"):
        ranks_from_env({"WORLD_SIZE": "two"})


def test_part_files_survive_a_torn_line_and_name_the_unit_a_rank_died_on(tmp_path):
    with PartLog(tmp_path, Ranks(rank=1, world=2)) as log:
        log.write({"event": "start", "unit": "a", "rank": 1}, {"event": "done", "unit": "a"})
        log.write({"event": "start", "unit": "b", "rank": 1})
    with open(tmp_path / PARTS / "rank1.jsonl", "a") as f:
        f.write('{"event": "done", "unit": "b", "resu')  # killed mid-write
    assert [r["unit"] for r in interrupted(read_parts(tmp_path))] == ["b"]
    with PartLog(tmp_path, Ranks(rank=1, world=2)) as log:  # a rerun appends after the torn line
        log.write({"event": "done", "unit": "b"})
    records = read_parts(tmp_path)
    assert [r["unit"] for r in records] == ["a", "a", "b", "b"] and interrupted(records) == []


def test_python_m_pulse_sr_is_pulse():
    out = subprocess.run([sys.executable, "-m", "pulse_sr", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("Usage: pulse ")
    assert "upsample" in out.stdout and "eval" in out.stdout


# ---------------------------------------------------------------------------
# Two ranks against one process


def test_upsample_on_two_ranks_equals_one_process(tmp_path, model_file):
    data = lr_inputs(tmp_path / "in", 5, bad=["bad.png"])
    args = ["upsample", data, "--model", model_file, "--steps", "15", "--samples", "2", "--quiet"]
    one = pulse(args + ["--out", tmp_path / "one", "--seed", "7"])
    assert one.returncode == 2, one.stderr  # the bad input
    two = pulse(args + ["--out", tmp_path / "two"], world=2)  # no --seed: rank 0 draws and broadcasts it
    assert two.returncode == 0, two.stderr  # ranks exit 0 unless they crash ...
    assert "exit code 2 (in the report" in two.stderr  # ... and the run's exit code is in rank 0's summary
    a = json.loads((tmp_path / "one" / "report.json").read_text())
    b = json.loads((tmp_path / "two" / "report.json").read_text())
    assert b["exit_code"] == 2 and b["errors"] == a["errors"] and "bad.png" in b["errors"][0]["input"]
    assert b["results"] and {r["seed"] for r in b["results"]} == {b["seed"], b["seed"] + 1}
    # Same units with the seed the sharded run drew: rerun one process with it and compare everything.
    same = pulse(args + ["--out", tmp_path / "same", "--seed", str(b["seed"])])
    c = json.loads((tmp_path / "same" / "report.json").read_text())
    assert_same_results(c["results"], b["results"])
    assert pngs(tmp_path / "two") == pngs(tmp_path / "same") == pngs(tmp_path / "one")
    assert len(pngs(tmp_path / "two")) == 5 * (2 * 3 + 1)  # per sample: face, downscale, residual; a spread
    assert not (tmp_path / "two" / PARTS).exists()  # merged into report.json
    assert same.returncode == 2


def test_eval_on_two_ranks_equals_one_process(tmp_path, model_file):
    data = tmp_path / "hr"
    g = torch.Generator().manual_seed(1)
    for i in range(3):
        save_image(torch.rand(3, 16, 16, generator=g), data / f"{20 + i}_{i % 2}_{i}_2017.png")
    save_image(torch.rand(3, 16, 20, generator=g), data / "wide.png")
    args = ["eval", data, "--model", model_file, "--scale", "4", "--runs", "2", "--steps", "8", "--grid", "2",
            "--degrade", "gaussian:25", "--labels", "utkface", "--quiet", "--batch", "3"]
    # 16 units in batches of 3 (the last of 1), split 3 + 3 over the ranks; the bad image's units
    # drop out of their batches in both runs alike.
    one = pulse(args + ["--out", tmp_path / "one"])
    two = pulse(args + ["--out", tmp_path / "two"], world=2)
    assert one.returncode == 2 and two.returncode == 0, two.stderr
    a = json.loads((tmp_path / "one" / "results.json").read_text())
    b = json.loads((tmp_path / "two" / "results.json").read_text())
    assert a["errors"] == b["errors"] and b["exit_code"] == 2 and b["images"] == 3
    assert [r["file"] for r in a["per_image"]] == [r["file"] for r in b["per_image"]]
    for ra, rb in zip(a["per_image"], b["per_image"]):
        for cname in ("clean", "gaussian:25"):
            for x, y in zip(ra["conditions"][cname]["runs"], rb["conditions"][cname]["runs"]):
                assert x["seed"] == y["seed"] and x["success"] == y["success"]
                assert abs(x["best_l2"] - y["best_l2"]) < 1e-5
        assert ra["hr"] == rb["hr"] and ra["bicubic"] == rb["bicubic"]
    assert a["groups"] == b["groups"] and a["conditions"]["clean"]["runs"] == b["conditions"]["clean"]["runs"]
    tree = sorted(str(p.relative_to(tmp_path / "one")) for p in (tmp_path / "one").rglob("*"))
    assert tree == sorted(str(p.relative_to(tmp_path / "two")) for p in (tmp_path / "two").rglob("*"))
    assert "figures/clean.png" in tree and "per_image/wide.png.json" not in tree


# ---------------------------------------------------------------------------
# Kill a rank, then resume at another world size


def _kill_rank_after_one_unit(cmd, out_dir, rank=1, timeout=120):
    """Start a 2-rank run, SIGKILL ``rank`` once its part file records a finished unit; return the launcher."""
    proc = subprocess.Popen(TORCHRUN + [str(a) for a in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env())
    part = Path(out_dir) / PARTS / f"rank{rank}.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = [json.loads(line) for line in (part.read_text().splitlines() if part.is_file() else [])
                   if line.endswith("}")]
        if records and records[-1]["event"] == "start" and any(r["event"] == "done" for r in records):
            os.kill(records[-1]["pid"], signal.SIGKILL)  # inside its second (or later) unit
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    else:
        proc.kill()
        pytest.fail("rank never recorded a unit")
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def test_upsample_resumes_after_a_rank_is_killed(tmp_path, model_file):
    n = 6
    data = lr_inputs(tmp_path / "in", n)
    args = ["upsample", data, "--model", model_file, "--steps", "40", "--seed", "3", "--quiet", "--no-early-stop"]
    rc, err = _kill_rank_after_one_unit(args + ["--out", tmp_path / "out"], tmp_path / "out")
    assert rc != 0  # torchrun turns a dead worker into its own failure
    records = read_parts(tmp_path / "out")
    done = {r["unit"] for r in records if r["event"] == "done"}
    lost = [r for r in interrupted(records) if r["rank"] == 1]
    assert 1 <= len(done) < n and len(lost) == 1  # rank 1 died inside its second unit

    again = pulse(args + ["--out", tmp_path / "out"])  # one process now
    assert again.returncode == 3, again.stderr  # nothing within eps in 40 steps on random 4-px inputs
    assert again.stderr.count("done in an earlier run") == len(done)  # only the missing units ran
    assert f"{lost[0]['input']}: rank 1 of 2 stopped while running it" in again.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert lost[0]["input"] in {r["input"] for r in report["interrupted"]}
    assert pulse(args + ["--out", tmp_path / "ref"]).returncode == 3
    ref_report = json.loads((tmp_path / "ref" / "report.json").read_text())
    assert_same_results(report["results"], ref_report["results"])
    assert pngs(tmp_path / "out") == pngs(tmp_path / "ref") and not (tmp_path / "out" / PARTS).exists()


def test_eval_resumes_after_a_rank_is_killed(tmp_path, model_file):
    data = tmp_path / "hr"
    g = torch.Generator().manual_seed(2)
    for i in range(3):
        save_image(torch.rand(3, 16, 16, generator=g), data / f"im{i}.png")
    args = ["eval", data, "--model", model_file, "--scale", "4", "--runs", "2", "--steps", "40", "--grid", "0",
            "--no-early-stop"]
    units = 3 * 2
    rc, _ = _kill_rank_after_one_unit(args + ["--out", tmp_path / "out"], tmp_path / "out")
    assert rc != 0
    done = {r["unit"] for r in read_parts(tmp_path / "out") if r["event"] == "done"}
    assert 1 <= len(done) < units

    again = pulse(args + ["--out", tmp_path / "out"], world=2)  # two ranks again: the rest is split anew
    assert again.returncode == 0, again.stderr
    assert f"{units} units (image × condition × run): {len(done)} already done, {units - len(done)} to run" \
        in again.stderr
    assert "rank 1 of 2 stopped while running it" in again.stderr
    assert pulse(args + ["--out", tmp_path / "ref"]).returncode == 0
    a = json.loads((tmp_path / "out" / "results.json").read_text())
    b = json.loads((tmp_path / "ref" / "results.json").read_text())
    for ra, rb in zip(a["per_image"], b["per_image"], strict=True):
        assert [x["best_l2"] for x in ra["conditions"]["clean"]["runs"]] == \
            pytest.approx([x["best_l2"] for x in rb["conditions"]["clean"]["runs"]], abs=1e-5)


def test_torchrun_takes_every_option_of_upsample_and_eval_but_n():
    # torchrun's parser reads an option of ours that abbreviates one of its own (as --n does
    # --nnodes/--nproc-per-node) before the module's arguments; eval's --n has --images for it.
    from torch.distributed.run import get_args_parser

    from pulse_sr.cli.eval import eval_cmd
    from pulse_sr.cli.upsample import upsample

    theirs = {o for a in get_args_parser()._actions for o in a.option_strings if o.startswith("--")}
    ours = {o for cmd in (upsample, eval_cmd) for p in cmd.params for o in p.opts + p.secondary_opts}
    clashes = {o for o in ours if any(t.startswith(o) for t in theirs)}
    assert clashes == {"--n"}
    assert "--images" in next(p for p in eval_cmd.params if p.name == "eval_n").opts
