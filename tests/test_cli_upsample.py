import json

import pytest
import torch
from click.testing import CliRunner

from pulse_sr.cli import main
from pulse_sr.images import save_image
from pulse_sr.formats.safetensors_file import save_generator

from conftest import tiny_model
from test_search import _reachable_target


@pytest.fixture
def model_file(tmp_path):
    G = tiny_model()
    return save_generator(G.generator, tmp_path / "tiny.safetensors", gaussian_fit=G.gaussian_fit), G


def run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_reachable_input_exit_0_and_files(tmp_path, model_file):
    path, G = model_file
    save_image(_reachable_target(G), tmp_path / "face.png")
    out = tmp_path / "out"
    # eps 1e-2: the 8-bit PNG round trip moves this tiny model's optimum to about 2e-3.
    r = run(["upsample", str(tmp_path / "face.png"), "--out", str(out), "--model", str(path), "--seed", "0",
             "--eps", "0.01", "--quiet"])
    assert r.exit_code == 0, r.output
    assert (out / "face.png").exists() and (out / "face_lr.png").exists()
    rep = json.loads((out / "report.json").read_text())
    (entry,) = rep["results"]
    assert entry["success"] is True and entry["best_l2"] <= 1e-2 and entry["seed"] == 0
    assert entry["steps"] == 100 and entry["seconds"] > 0
    from PIL import Image
    assert Image.open(out / "face.png").size == (16, 16)
    assert Image.open(out / "face_lr.png").size == (4, 4)


def test_unreached_eps_exit_3_and_samples(tmp_path, model_file):
    path, _ = model_file
    save_image(torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)), tmp_path / "noise.png")
    out = tmp_path / "out"
    r = run(["upsample", str(tmp_path), "--out", str(out), "--model", str(path), "--steps", "2",
             "--samples", "2", "--quiet"])
    assert r.exit_code == 3, r.output
    assert "no image found" in r.output
    for k in (0, 1):
        assert (out / f"noise_{k}.png").exists() and (out / f"noise_{k}_lr.png").exists()
    rep = json.loads((out / "report.json").read_text())
    assert [e["success"] for e in rep["results"]] == [False, False]
    assert rep["exit_code"] == 3


def test_bad_inputs_one_line_errors_others_run(tmp_path, model_file):
    path, _ = model_file
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "broken.png").write_bytes(b"not an image")
    save_image(torch.rand(3, 20, 20), inp / "big.png")
    save_image(torch.rand(3, 4, 4), inp / "good.png")
    out = tmp_path / "out"
    r = run(["upsample", str(inp), str(tmp_path / "missing.png"), "--out", str(out), "--model", str(path),
             "--steps", "1", "--quiet"])
    assert r.exit_code == 2
    lines = [l for l in r.output.splitlines() if l.startswith("error:")]
    assert len(lines) == 3
    assert any("broken.png: not a readable image" in l for l in lines)
    assert any("big.png: 20×20 is larger than the model's 16×16 output" in l for l in lines)
    assert any("missing.png: no such file" in l for l in lines)
    assert (out / "good.png").exists()


def test_lr_size_resizes(tmp_path, model_file):
    path, _ = model_file
    save_image(torch.rand(3, 20, 20), tmp_path / "big.png")
    r = run(["upsample", str(tmp_path / "big.png"), "--out", str(tmp_path / "o"), "--model", str(path),
             "--steps", "1", "--lr-size", "8", "--quiet"])
    assert r.exit_code in (0, 3)
    from PIL import Image
    assert Image.open(tmp_path / "o" / "big_lr.png").size == (8, 8)


def test_usage_errors_exit_2(tmp_path, model_file):
    path, _ = model_file
    save_image(torch.rand(3, 4, 4), tmp_path / "a.png")
    r = run(["upsample", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--model", str(path),
             "--loss", "100*L3"])
    assert r.exit_code == 2 and "bad loss term" in r.output
    r = run(["upsample", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--model",
             str(tmp_path / "nope.safetensors")])
    assert r.exit_code == 2 and r.output.count("\n") == 1
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x00" * 100)
    r = run(["upsample", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--model",
             str(tmp_path / "corrupt.safetensors")])
    assert r.exit_code == 2 and "corrupt.safetensors" in r.output


def test_unexpected_error_exit_1(tmp_path, model_file, monkeypatch):
    path, _ = model_file
    save_image(torch.rand(3, 4, 4), tmp_path / "a.png")
    import pulse_sr.pipelines.upsample.run as uf

    def boom(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(uf, "upsample", boom)
    r = CliRunner().invoke(main, ["upsample", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                                  "--model", str(path), "--quiet"])
    assert r.exit_code == 1 and "RuntimeError: out of memory" in r.output


def test_save_intermediate(tmp_path, model_file):
    path, _ = model_file
    save_image(torch.rand(3, 4, 4), tmp_path / "a.png")
    out = tmp_path / "o"
    run(["upsample", str(tmp_path / "a.png"), "--out", str(out), "--model", str(path), "--steps", "3",
         "--save-intermediate", "--quiet"])
    assert sorted(p.name for p in (out / "a" / "HR").iterdir()) == ["a_0000.png", "a_0001.png", "a_0002.png"]
    assert len(list((out / "a" / "LR").iterdir())) == 3


def test_command_with_missing_dependency_says_so(monkeypatch):
    import pulse_sr.cli as cli

    monkeypatch.setitem(cli.SUBCOMMANDS, "ghost", ("pulse_sr.no_such_module", "ghost"))
    r = CliRunner().invoke(main, ["ghost"])
    assert r.exit_code == 1
    assert "'pulse ghost' is unavailable: No module named 'pulse_sr.no_such_module'" in r.output


@pytest.mark.parametrize("command, prefix", [("upsample", ""), ("eval", "search_")])
def test_search_options_come_from_the_dataclass(command, prefix):
    # Defaults and choices live in PulseOptions alone; the commands are generated from it.
    import dataclasses

    from pulse_sr.cli import SUBCOMMANDS
    from pulse_sr.search import PulseOptions

    module, attr = SUBCOMMANDS[command]
    cmd = getattr(__import__(module, fromlist=[attr]), attr)
    params = {p.name: p for p in cmd.params}
    for f in dataclasses.fields(PulseOptions):
        p = params[prefix + f.name]
        want = ".".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        assert p.default == want, f.name
        if "choices" in f.metadata:
            assert list(p.type.choices) == list(f.metadata["choices"]), f.name


def test_bad_noise_layers_parse_like_the_reference(tmp_path, model_file):
    path, _ = model_file
    save_image(torch.rand(3, 4, 4), tmp_path / "a.png")
    r = run(["upsample", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--model", str(path),
             "--steps", "1", "--bad-noise-layers", "0.1,-1", "--quiet", "--seed", "0"])
    assert r.exit_code in (0, 3), r.output
    assert json.loads((tmp_path / "o" / "report.json").read_text())["options"]["bad_noise_layers"] == [0, 1, -1]
    r = run(["upsample", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--model", str(path),
             "--bad-noise-layers", "x"])
    assert r.exit_code == 2 and "expected integers" in r.output
