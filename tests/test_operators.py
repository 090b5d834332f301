"""Forward operators: shapes, hand-computed values, gradients, composition, PIL agreement, mosaic detection."""

import numpy as np
import pytest
import torch
from PIL import Image

from pulse_sr.errors import InputSizeError
from pulse_sr.images import pil_to_tensor, save_image
from pulse_sr.ops.operators import (Bicubic, Blur, Box, Compose, Gray, Mask, Nearest, OperatorSpecError, Resize,
                                    as_operator, auto_operator, detect_mosaic, is_gray, parse_operator)
from pulse_sr.ops.resample import bicubic_downscale


def smooth(h=64, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.interpolate(torch.rand(1, 3, 6, 6, generator=g), size=(h, w), mode="bicubic",
                                           align_corners=False).clamp(0, 1)


def test_box_takes_block_means_on_an_offset_grid_with_partial_border_blocks():
    x = torch.arange(5.0).repeat(5, 1)[None, None]          # x[..., i, j] = j
    y = Box(2, (1, 0), (5, 5))(x)[0, 0, 0]
    # Boundaries at j = 1, 3, 5: blocks {0}, {1, 2}, {3, 4}.
    assert y.tolist() == pytest.approx([0.0, 1.5, 1.5, 3.5, 3.5])
    y = Box(3, (0, 0), (5, 5))(x.transpose(-1, -2))[0, 0, :, 0]
    assert y.tolist() == pytest.approx([1.0, 1.0, 1.0, 3.5, 3.5])  # {0,1,2}, then the partial {3,4}


def test_box_resizes_by_area_first_and_keeps_the_input_size():
    x = torch.zeros(1, 3, 64, 64)
    x[..., :32, :] = 1
    y = Box(4, (0, 0), (16, 16))(x)
    assert y.shape == (1, 3, 16, 16) and y[..., :8, :].eq(1).all() and y[..., 8:, :].eq(0).all()


def test_nearest_picks_one_pixel_per_cell_at_its_phase():
    x = torch.arange(64.0).view(1, 1, 8, 8).expand(1, 3, 8, 8)
    y = Nearest(4, (1, 2))(x)
    assert y.shape == (1, 3, 2, 2) and y[0, 0].tolist() == [[17.0, 21.0], [49.0, 53.0]]


def test_gray_is_bt601_luma_on_three_channels():
    x = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert torch.allclose(Gray()(x), torch.full((1, 3, 1, 1), 0.299))


def test_blurs_keep_a_flat_image_and_sum_to_one():
    flat = torch.full((1, 3, 16, 16), 0.3)
    for blur in (Blur("gauss", (1.5,)), Blur("motion", (5.0, 30.0))):
        assert torch.allclose(blur(flat), flat, atol=1e-6)
        assert abs(float(blur.kernel.sum()) - 1) < 1e-6
    line = Blur("motion", (5.0, 0.0)).kernel
    assert line.nonzero()[:, 0].unique().tolist() == [line.shape[0] // 2]  # horizontal: one row


@pytest.mark.parametrize("op", [Bicubic(4), Resize((5, 7)), Box(3, (1, 2), (6, 6)), Nearest(4, (1, 0)),
                                Blur("gauss", (1.0,)), Gray(), Compose([Blur("motion", (3.0, 45.0)), Resize((6, 6)),
                                                                         Gray()])])
def test_gradcheck(op):
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    if isinstance(op, Blur):
        op.kernel = op.kernel.double()
    if isinstance(op, Compose):
        op.ops[0].kernel = op.ops[0].kernel.double()
    assert torch.autograd.gradcheck(lambda t: op(t), (x,), eps=1e-6, atol=1e-5)


def test_resize_matches_pil_bicubic_reduce_on_a_smooth_image():
    x = smooth()
    img = Image.fromarray((x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    for h, w in ((13, 13), (24, 24), (11, 17), (40, 31)):
        ref = pil_to_tensor(img.resize((w, h), Image.BICUBIC))
        ours = (Resize((h, w))(x)[0].clamp(0, 1) * 255).round() / 255
        d = (ours - ref).abs() * 255
        assert float(d.mean()) <= 1 and float(d.max()) <= 4, (h, w, float(d.mean()), float(d.max()))


def test_specs_parse_compose_in_a_fixed_order_and_fill_in_the_resampling():
    op = parse_operator("box:8@3,5+gray", (64, 64), 64)
    assert [o.name for o in op.ops] == ["box", "gray"]
    assert op.describe() == {"name": "box+gray", "parts": [
        {"name": "box", "block": 8, "offset": [3, 5], "size": [64, 64]}, {"name": "gray"}]}
    op = parse_operator("gray+blur:gauss:1.5", (8, 8), 64)  # written in any order; bicubic added
    assert [o.name for o in op.ops] == ["blur", "bicubic", "gray"] and op.ops[1].factor == 8
    assert parse_operator("blur:motion:9,30", (13, 13), 64).ops[1].describe() == {"name": "resize", "size": [13, 13]}
    for spec, message in (("box:8@3", "2 numbers"), ("bicubic:3", "divide"), ("bicubic:4", "input is 8×8"),
                          ("nearest:8@9", "phase"), ("blur:box:3", "gauss"), ("wobble", "unknown operator"),
                          ("box:4+bicubic:8", "at most one resampling"), ("resize:9x9", "does not match")):
        with pytest.raises(OperatorSpecError, match=message):
            parse_operator(spec, (8, 8), 64)


def test_a_mask_counts_only_known_pixels(tmp_path):
    m = torch.ones(3, 8, 8)
    m[:, :4] = 0
    save_image(m, tmp_path / "mask.png")
    op = parse_operator(f"mask:{tmp_path / 'mask.png'}", (8, 8), 64)
    assert op.mask.shape == (1, 1, 8, 8) and float(op.mask.sum()) == 32
    from pulse_sr.search.losses import l2_per_sample
    a, b = torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    b[..., :4, :] = 1  # wrong only where unknown
    assert float(l2_per_sample(a, b, op.mask)) == 0 and float(l2_per_sample(a, b)) == 0.5
    with pytest.raises(OperatorSpecError, match="it must be the input's"):
        parse_operator(f"mask:{tmp_path / 'mask.png'}", (16, 16), 64)
    assert isinstance(op.ops[0], Bicubic) and isinstance(op.ops[1], Mask)


def test_the_default_is_bicubic_when_it_fits_else_resize_and_larger_inputs_are_refused():
    assert as_operator(None, (8, 8), 64).describe() == {"name": "bicubic", "factor": 8}
    assert as_operator(None, (11, 11), 64).describe() == {"name": "resize", "size": [11, 11]}
    with pytest.raises(InputSizeError, match="--align"):
        as_operator(None, (65, 65), 64)
    custom = as_operator(lambda hr: hr[..., ::8, ::8], (8, 8), 64)
    assert custom.describe() == {"name": "custom", "fn": "<lambda>"}


def test_mosaics_are_detected_with_block_and_offset_and_smooth_images_are_not():
    for seed, (b, ox, oy) in enumerate([(8, 3, 5), (2, 1, 0), (5, 0, 4), (16, 7, 2), (3, 2, 2)]):
        x = smooth(seed=seed)
        y = Box(b, (ox, oy), (64, 64))(x)[0]
        assert detect_mosaic(y) == (b, (ox, oy)), (b, ox, oy)
        assert auto_operator(y, 64).describe()["name"] == "box"
        assert detect_mosaic(bicubic_downscale(x, 4)[0]) is None and detect_mosaic(x[0]) is None
    assert auto_operator(bicubic_downscale(smooth(), 8)[0], 64).describe() == {"name": "bicubic", "factor": 8}


def test_gray_inputs_get_gray():
    x = smooth()[0]
    g = Gray()(x[None])[0]
    assert is_gray(g) and not is_gray(x)
    assert [o.name for o in auto_operator(bicubic_downscale(g[None], 8)[0], 64).ops] == ["bicubic", "gray"]


# ---------------------------------------------------------------------------
# Through `pulse upsample`


def test_upsample_detects_the_operator_and_writes_its_certificate(tmp_path):
    import json

    from click.testing import CliRunner
    from PIL import Image as PILImage

    from conftest import tiny_model
    from pulse_sr.cli import main
    from pulse_sr.formats.safetensors_file import save_generator

    m = tiny_model()
    model = save_generator(m.generator, tmp_path / "tiny.safetensors", gaussian_fit=m.gaussian_fit)
    x = smooth(16, 16, seed=4)
    save_image(Box(4, (1, 2), (16, 16))(x)[0], tmp_path / "in" / "mosaic.png")
    save_image(Gray()(bicubic_downscale(x, 4))[0], tmp_path / "in" / "gray.png")
    save_image(torch.rand(3, 5, 7), tmp_path / "in" / "odd.png")
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["upsample", str(tmp_path / "in"), "--out", str(out), "--model", str(model),
                                  "--steps", "2", "--samples", "2", "--seed", "0", "--noise-sigma", "10"])
    assert r.exit_code in (0, 3), r.output
    assert "operator bicubic:4+gray, box:4@1,2, resize:5x7" in r.output
    rep = json.loads((out / "report.json").read_text())
    ops = {e["output"]: e["operator"] for e in rep["results"]}
    assert ops["mosaic_0.png"] == {"name": "box", "block": 4, "offset": [1, 2], "size": [16, 16]}
    assert ops["odd_1.png"] == {"name": "resize", "size": [5, 7]}
    assert ops["gray_0.png"]["name"] == "bicubic+gray"
    e = rep["results"][0]
    assert e["eps"] == pytest.approx(2e-3 + (10 / 255) ** 2) and rep["noise_sigma"] == 10
    cert = e["lr_error"]
    assert len(cert["rmse"]) == 3 and len(cert["psnr"]) == 3
    assert cert["mse"] == pytest.approx(sum(v * v for v in cert["rmse"]) / 3, rel=1e-6)
    assert cert["mse"] == pytest.approx(e["best_l2"], rel=0.05, abs=1e-4)  # the saved (8-bit) downscale
    for stem in ("mosaic", "gray", "odd"):
        assert (out / f"{stem}_spread.png").is_file()
        for k in (0, 1):
            assert (out / f"{stem}_{k}_residual.png").is_file()
    text = PILImage.open(out / "mosaic_0.png").text
    assert "not the person in the input" in text["Description"]
    assert text["pulse:operator"] == "box:4@1,2" and text["pulse:seed"] == "0"
    assert float(text["pulse:eps"]) == pytest.approx(e["eps"], rel=1e-5)

    r = CliRunner().invoke(main, ["upsample", str(tmp_path / "in" / "odd.png"), "--out", str(tmp_path / "o2"),
                                  "--model", str(model), "--steps", "1", "--operator", "box:4@9"])
    assert r.exit_code == 2 and "odd.png: box:B@ox,oy: expected 2 numbers" in r.output


# ---------------------------------------------------------------------------
# The warp into a photo (pulse upsample --align on LR photos)


def test_warp_of_an_axis_aligned_frame_is_block_means_and_masks_what_the_frame_misses():
    from pulse_sr.ops.operators import Warp

    hr = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    op = Warp([[4, 0, -40], [0, 4, -80]], (10, 20, 16, 16), 64)  # photo pixel = 4×4 model pixels
    assert torch.allclose(op(hr), torch.nn.functional.avg_pool2d(hr, 4))
    assert op.mask.sum() == 256 and op.describe()["photo_px_per_model_px"] == 0.25
    wide = Warp([[4, 0, -40], [0, 4, -80]], (8, 20, 20, 16), 64)  # two columns each side outside
    assert wide.mask[0, 0, 0].tolist() == [0, 0] + [1] * 16 + [0, 0]
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    small = Warp([[1.9, 0.4, -3], [-0.4, 1.9, 2]], (0, 0, 6, 6), 16)  # rotated: bilinear, differentiable
    assert torch.autograd.gradcheck(lambda t: small(t), (x,), eps=1e-6, atol=1e-5)


def test_align_on_a_lr_photo_measures_its_own_pixels(tmp_path):
    import json

    from click.testing import CliRunner

    from pulse_sr.align import FaceDetectorUnavailable
    from pulse_sr.align import detection
    from pulse_sr.cli import main

    skimage_data = pytest.importorskip("skimage.data")
    try:
        detection._dlib_models()
    except FaceDetectorUnavailable:
        pytest.skip("dlib and its landmark model are not installed (pulse-sr[align])")
    photo = tmp_path / "astronaut96.png"
    Image.fromarray(skimage_data.astronaut()).resize((96, 96), Image.LANCZOS).save(photo)
    for mode, name in (("warp", "warp"), ("resample", "bicubic")):
        out = tmp_path / mode
        r = CliRunner().invoke(main, ["upsample", "--align", "--align-operator", mode, str(photo), "--out", str(out),
                                      "--steps", "2", "--seed", "0"])
        assert r.exit_code in (0, 3), r.output
        e = json.loads((out / "report.json").read_text())["results"][0]
        assert e["operator"]["name"] == name and e["output"] == "astronaut96_face0.png"
        if mode == "warp":
            x0, y0, w, h = e["operator"]["box"]
            assert 10 <= w <= 40 and 10 <= h <= 40  # the face's own pixels in the 96-px photo
            assert Image.open(out / e["downscaled"]).size == (w, h)
