"""Degradations of the paper's Sec. 5, the --degrade parser, group labels and the Wilson interval."""

import math

import pytest
import torch

from pulse_sr.ops.degrade import (Degradation, DegradationSpecError, gaussian_noise, motion_blur, motion_kernel,
                              parse_degradations, salt_and_pepper)
from pulse_sr.errors import PulseError
from pulse_sr.pipelines.eval.labels import (UNKNOWN, group_counts, load_labels, parse_utkface, read_label_csv,
                                  wilson_interval)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------
# Ops

@pytest.mark.parametrize("sigma", [25, 50])
def test_gaussian_noise_has_the_requested_std(sigma):
    x = torch.full((2, 3, 64, 64), 0.5)
    y = gaussian_noise(x, sigma, generator=gen())
    # 24576 samples: the std estimate is within 1.5 % with overwhelming probability.
    # The clamp to [0, 1] sits a = 0.5 / (sigma/255) sd away (5.1 or 2.55); a normal
    # clamped at ±a has variance (2 Phi(a) - 1) - 2 a phi(a) + 2 a^2 (1 - Phi(a)).
    a = 0.5 / (sigma / 255)
    phi = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    tail = 0.5 * math.erfc(a / math.sqrt(2))
    expected = sigma * math.sqrt((1 - 2 * tail) - 2 * a * phi + 2 * a * a * tail)
    measured = float((y - x).std() * 255)
    assert measured == pytest.approx(expected, rel=0.015)
    assert float((y - x).mean() * 255) == pytest.approx(0, abs=0.5)
    assert y.min() >= 0 and y.max() <= 1


def test_gaussian_noise_is_reproducible_and_seeded():
    x = torch.rand(1, 3, 8, 8, generator=gen(3))
    a = gaussian_noise(x, 25, generator=gen(1))
    b = gaussian_noise(x, 25, generator=gen(1))
    c = gaussian_noise(x, 25, generator=gen(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_salt_and_pepper_density_and_values():
    x = torch.full((2, 3, 100, 100), 0.5)
    y = salt_and_pepper(x, 0.05, generator=gen())
    hit = (y != x).any(dim=1)
    # 20000 pixels: std of the fraction is 0.0015, so 0.05 ± 0.006 is a 4-sigma band.
    assert float(hit.float().mean()) == pytest.approx(0.05, abs=0.006)
    # A hit pixel is black or white in all channels; salt and pepper in equal measure.
    hit_px = y.permute(0, 2, 3, 1)[hit]
    assert ((hit_px == 0).all(dim=1) | (hit_px == 1).all(dim=1)).all()
    white = float((hit_px == 1).all(dim=1).float().mean())
    assert white == pytest.approx(0.5, abs=0.05)
    assert torch.equal(y[~hit.unsqueeze(1).expand_as(y)], x[~hit.unsqueeze(1).expand_as(x)])


@pytest.mark.parametrize("length,angle", [(5, 0), (9, 90), (100, 37.0), (1, 0)])
def test_motion_kernel_sums_to_one_and_is_symmetric(length, angle):
    k = motion_kernel(length, angle, dtype=torch.float64)
    assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-12)
    assert (k >= 0).all()
    assert torch.allclose(k, k.flip(0).flip(1), atol=1e-15, rtol=0)


def test_motion_kernel_lies_along_its_direction():
    h = motion_kernel(7, 0)
    c = h.shape[0] // 2
    assert h.shape == (7, 7)
    assert float(h[c].sum()) == pytest.approx(1.0, abs=1e-6)   # all weight in the middle row
    v = motion_kernel(7, 90)
    assert float(v[:, c].sum()) == pytest.approx(1.0, abs=1e-6)  # all in the middle column
    d = motion_kernel(21, 45, dtype=torch.float64)
    r = d.shape[0] // 2
    v, u = torch.meshgrid(torch.arange(d.shape[0]) - r, torch.arange(d.shape[1]) - r, indexing="ij")
    # 45° is counter-clockwise with y up: the line runs from bottom-left to top-right,
    # direction (u, v) = (1, -1)/sqrt(2) in (column, row) coordinates. The end points are
    # 20 px apart, so the variance along the line is 20^2/12; across it, almost none.
    along = (u - v) / math.sqrt(2)
    across = (u + v) / math.sqrt(2)
    assert float((d * along ** 2).sum()) == pytest.approx(20 ** 2 / 12, rel=0.05)
    assert float((d * across ** 2).sum()) < 0.2


def test_motion_blur_blurs_only_along_its_direction():
    # Horizontal stripes are untouched by a horizontal blur and averaged by a vertical one.
    stripes = torch.zeros(1, 3, 32, 32)
    stripes[:, :, ::2] = 1.0
    same = motion_blur(stripes, 9, angle=0)
    assert torch.allclose(same, stripes, atol=1e-5, rtol=0)
    mixed = motion_blur(stripes, 9, angle=90)
    assert float(mixed[:, :, 8:24].std()) < 0.1  # stripes averaged to near-grey
    # A constant image stays constant, borders included (reflect padding).
    flat = torch.full((1, 3, 20, 24), 0.3)
    assert torch.allclose(motion_blur(flat, 15, angle=33), flat, atol=1e-5, rtol=0)


def test_motion_blur_random_direction_and_long_kernel_on_small_image():
    x = torch.rand(2, 3, 16, 16, generator=gen(0))
    a = motion_blur(x, 100, generator=gen(5))  # kernel far larger than the image
    b = motion_blur(x, 100, generator=gen(5))
    assert a.shape == x.shape and torch.equal(a, b)
    assert torch.isfinite(a).all()


# ---------------------------------------------------------------------------
# The --degrade parser

def test_parse_degradations_paper_setting():
    ds = parse_degradations("gaussian:25,gaussian:50,motion:100,saltpepper:0.05")
    assert [d.name for d in ds] == ["gaussian:25", "gaussian:50", "motion:100", "saltpepper:0.05"]
    assert [d.stage for d in ds] == ["lr", "lr", "hr", "lr"]
    assert all(isinstance(d, Degradation) for d in ds)
    x = torch.rand(1, 3, 32, 32, generator=gen(7))
    for d in ds:
        y = d(x, generator=gen())
        assert y.shape == x.shape and not torch.equal(y, x)


@pytest.mark.parametrize("spec", [None, "", "  "])
def test_parse_degradations_empty(spec):
    assert parse_degradations(spec) == []


@pytest.mark.parametrize("spec,message", [
    ("blur:3", "unknown degradation 'blur'"),
    ("gaussian", "needs a value"),
    ("gaussian:abc", "not a number"),
    ("gaussian:-1", "out of range"),
    ("saltpepper:1.5", "out of range"),
    ("motion:0", "out of range"),
    ("gaussian:nan", "out of range"),
    ("gaussian:25,,motion:9", "empty entry"),
    ("gaussian:25,gaussian:25", "listed twice"),
])
def test_parse_degradations_errors(spec, message):
    with pytest.raises(DegradationSpecError, match=message) as info:
        parse_degradations(spec)
    assert isinstance(info.value, ValueError) and isinstance(info.value, PulseError)


def test_parse_degradations_aliases():
    assert parse_degradations("Salt-Pepper:0.1")[0].name == "saltpepper:0.1"
    assert parse_degradations("salt_and_pepper:0.1")[0].stage == "lr"


# ---------------------------------------------------------------------------
# Labels

def test_utkface_labels():
    assert parse_utkface("105_0_0_20170112213001988.jpg") == {
        "gender": "male", "race": "White", "age": "60+", "race_gender": "White male"}
    assert parse_utkface("/data/utk/26_1_3_20170119180021633.jpg.chip.jpg") == {
        "gender": "female", "race": "Indian", "age": "20-39", "race_gender": "Indian female"}
    assert parse_utkface("1_1_2_2016.png")["race"] == "Asian"
    assert parse_utkface("45_0_1_x.jpg")["age"] == UNKNOWN


@pytest.mark.parametrize("name", [
    "61_1_20170109142408075.jpg.chip.jpg",   # race missing (a real UTKFace name)
    "61_3_1_20170109150557335.jpg",          # gender out of range
    "30_0_5_20170109150557335.jpg",          # race out of range
    "200_0_0_20170109150557335.jpg",         # age out of range
    "face.png", "", "a_b_c_d.jpg",
])
def test_utkface_malformed_names_are_unknown(name):
    assert set(parse_utkface(name).values()) == {UNKNOWN}


def test_label_csv(tmp_path):
    csv_path = tmp_path / "groups.csv"
    csv_path.write_text("file,skin,site\nimg/a.png,dark,1\nb.png,light,\n", encoding="utf-8")
    assert read_label_csv(str(csv_path)) == {"a.png": {"skin": "dark", "site": "1"},
                                             "b.png": {"skin": "light", "site": UNKNOWN}}
    labels = load_labels(str(csv_path), ["x/a.png", "b.png", "c.png"])
    assert labels["x/a.png"]["skin"] == "dark"
    assert labels["c.png"] == {"site": UNKNOWN, "skin": UNKNOWN}
    bad = tmp_path / "bad.csv"
    bad.write_text("onlyonecolumn\n")
    with pytest.raises(ValueError, match="header row"):
        read_label_csv(str(bad))
    with pytest.raises(ValueError, match="not 'utkface'"):
        load_labels(str(tmp_path / "missing.csv"), ["a.png"])
    assert load_labels(None, ["a.png"]) == {"a.png": {}}


def test_group_counts():
    labels = {"a": {"race": "Black"}, "b": {"race": "Black"}, "c": {"race": "White"}}
    outcomes = {"a": [True, False], "b": [True, True], "c": [False]}
    assert group_counts(outcomes, labels) == {"race": {"Black": (3, 4), "White": (0, 1)}}


# ---------------------------------------------------------------------------
# Wilson interval

@pytest.mark.parametrize("s,n,low,high", [
    # Values from the closed form with z = 1.96 (Wilson 1927), and checked against
    # scipy.stats.binomtest(s, n).proportion_ci(method="wilson") to 1e-5 (scipy
    # uses z = 1.959964).
    (0, 10, 0.0, 0.277540),
    (10, 10, 0.722460, 1.0),
    (5, 10, 0.236590, 0.763410),
    (8, 10, 0.490157, 0.943319),
    (95, 100, 0.888248, 0.978457),
])
def test_wilson_interval_known_values(s, n, low, high):
    lo, hi = wilson_interval(s, n)
    assert lo == pytest.approx(low, abs=1e-6) and hi == pytest.approx(high, abs=1e-6)


def test_wilson_interval_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(50, 100, z=2.5758)  # 99 %: wider than 95 %
    lo95, hi95 = wilson_interval(50, 100)
    assert lo < lo95 < 0.5 < hi95 < hi
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
