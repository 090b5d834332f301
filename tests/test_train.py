import json

import numpy as np
import torch
from PIL import Image

from pulse_sr.diagnostics import collect
from pulse_sr.formats.safetensors_file import load_saved_generator
from pulse_sr.train.augment import diff_augment
from pulse_sr.train.dataset import load_dataset, write_pack
from pulse_sr.train.loop import TrainOptions, train


def _data(tmp_path, n=8):
    d = tmp_path / "data"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        small = Image.fromarray(rng.integers(0, 255, (3, 3, 3), dtype=np.uint8))
        small.resize((24, 24), Image.BILINEAR).save(d / f"{i}.png")  # smooth, so JPEG keeps it
    return d


def _opts(data, out, kimg):
    return TrainOptions(data=str(data), out=str(out), resolution=16, latent_dim=16, w_dim=16, mapping_layers=2,
                        fmap_base=64, fmap_max=16, d_channel_base=64, d_channel_max=16, batch=4,
                        total_kimg=kimg, log_every=1, sample_every_kimg=0.004, checkpoint_every_kimg=0.004,
                        device="cpu")


def test_train_writes_outputs_and_resumes(tmp_path):
    data = _data(tmp_path)
    out = tmp_path / "run"
    logs = []
    with collect(logs):
        final = train(_opts(data, out, 0.008))
    assert final.exists() and (out / "checkpoint.pt").exists() and (out / "samples_final.png").exists()
    recs = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in recs] == [0.004, 0.008]
    assert all(np.isfinite(r["loss_G"]) and r["img_per_s"] > 0 for r in recs)
    assert Image.open(out / "samples_final.png").size == (8 * 16, 8 * 16)
    loaded = load_saved_generator(final)
    G, extras = loaded.generator, loaded.metadata
    assert G.resolution == 16 and extras["trained_kimg"] == 0.008
    # Resume: starts from the checkpoint's image count, not from zero.
    logs.clear()
    with collect(logs):
        train(_opts(data, out, 0.016))
    assert any("resumed" in l and "at 0.008 kimg" in l for l in logs)
    recs = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in recs][-2:] == [0.012, 0.016]
    loaded2 = load_saved_generator(final)
    G2, extras2 = loaded2.generator, loaded2.metadata
    assert extras2["trained_kimg"] == 0.016
    assert not torch.equal(G.synthesis.layers[1].weight, G2.synthesis.layers[1].weight)


def test_resume_with_other_config_is_refused(tmp_path):
    data = _data(tmp_path)
    out = tmp_path / "run"
    train(_opts(data, out, 0.004))
    other = _opts(data, out, 0.008)
    other.fmap_max = 8
    import pytest
    with pytest.raises(ValueError, match="differs"):
        train(other)


def test_pack_roundtrip_and_augment(tmp_path):
    data = _data(tmp_path, n=3)
    assert write_pack(data, tmp_path / "p.npz", 16, quality=95) == 3
    a = load_dataset(data, 16)
    b = load_dataset(tmp_path / "p.npz", 16)
    assert a.shape == b.shape == (3, 3, 16, 16) and a.dtype == torch.uint8
    assert (a.float() - b.float()).abs().mean() < 6  # the pack is JPEG (chroma subsampled): close, not exact
    x = torch.rand(4, 3, 16, 16)
    assert diff_augment(x, "").equal(x)
    y = diff_augment(x, "color,translation,cutout")
    assert y.shape == x.shape and not torch.equal(x, y)


def test_train_can_start_from_a_saved_generator(tmp_path):
    data = _data(tmp_path)
    first = train(_opts(data, tmp_path / "a", 0.004))
    src = load_saved_generator(first).generator
    opts = _opts(data, tmp_path / "b", 0.004)
    opts.init = str(first)
    logs = []
    with collect(logs):
        train(opts)
    assert any("start from" in line for line in logs)
    ck = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    # One step of batch 4 moves G only slightly away from where it started.
    w0, w1 = src.state_dict()["synthesis.layers.2.weight"], ck["G"]["synthesis.layers.2.weight"]
    assert (w1 - w0).abs().max() < 0.1 * w0.abs().max()
    opts = _opts(data, tmp_path / "c", 0.004)
    opts.init, opts.resolution = str(first), 32
    import pytest
    with pytest.raises(ValueError, match="differs from the requested"):
        train(opts)


def test_half_precision_epilogue_runs_in_float32():
    from pulse_sr.ops.epilogue import epilogue, epilogue_reference
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g) * 3 + 1
    s, b = torch.randn(4, generator=g), torch.randn(4, generator=g)
    gamma, beta = torch.randn(2, 4, generator=g), torch.randn(2, 4, generator=g)
    want = epilogue_reference(x, None, s, b, gamma, beta, 1e-8)
    got = epilogue(x.bfloat16(), None, s, b, gamma, beta, 1e-8, impl="torch")
    assert got.dtype == torch.bfloat16
    assert (got.float() - want).abs().max() < 0.05 * want.abs().max()


def test_pulse_train_on_an_empty_folder_is_one_line_and_exit_2(tmp_path):
    from click.testing import CliRunner

    from pulse_sr.cli import main

    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(main, ["train", str(tmp_path / "empty"), "--out", str(tmp_path / "run"),
                                  "--device", "cpu"])
    assert r.exit_code == 2, r.output
    assert r.output.count("\n") == 1 and r.output.startswith("error: ") and "no PNG/JPEG/WebP/BMP images" in r.output
