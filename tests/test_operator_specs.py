"""Operator specs: every printable kind round-trips through its spec, specs are canonical, the rest have keys,
and the recipe for a new operator in docs/architecture.md works as written (a toy operator follows it)."""

import json
import math
from dataclasses import dataclass

import pytest
import torch
from click.testing import CliRunner

from pulse_sr.errors import OperatorSpecError
from pulse_sr.images import save_image
from pulse_sr.ops.operators import (OPERATORS, Blur, Compose, Custom, Gray, Mask, Operator, SpecContext, Stage, Warp,
                                    parse_operator, register, unregister)

R = 64
ROTATED = [[2.9, 0.41, -31.0], [-0.41, 2.9, 7.5]]  # a photo-to-frame similarity, as --align finds them


def _mask_file(tmp_path, size):
    h, w = size
    m = torch.ones(3, h, w)
    m[:, : h // 2, : w // 3] = 0
    return save_image(m, tmp_path / f"mask{h}x{w}.png")


def _same(a: Operator, b: Operator, lr_size):
    """Equal as objects, as printed, and on a tensor: outputs and the pixels that count."""
    x = torch.rand(2, 3, R, R, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert a.spec() == b.spec()
    assert a == b and a.key() == b.key()
    ya, yb = a(x), b(x)
    assert ya.shape[-2:] == tuple(lr_size) and torch.equal(ya, yb)
    assert (a.mask is None) == (b.mask is None)
    if a.mask is not None:
        assert torch.equal(a.mask, b.mask)


# Every registered kind, alone and in compositions; (spec as written, input size).
SPECS = [
    ("bicubic:8", (8, 8)),
    ("resize:13x13", (13, 13)),
    ("resize", (11, 17)),
    ("box:8@3,5", (64, 64)),
    ("box:5@12,-1", (30, 30)),
    ("nearest:8@1", (8, 8)),
    ("nearest:4@3,0", (16, 16)),
    ("blur:gauss:1.5", (8, 8)),
    ("blur:gauss:0.30000000000000004+resize:24x24", (24, 24)),
    ("blur:motion:9,30+resize:13x13", (13, 13)),
    ("gray", (8, 8)),
    ("GRAY + Box:4@1,2", (16, 16)),
    ("gray+blur:gauss:0.7+box:4@1,2+mask:{mask}", (16, 16)),  # a mask term comes last: its path may hold +
    ("warp:22x20@3,4:2.9,0.41,-31,-0.41,2.9,7.5+gray", (20, 22)),
]


@pytest.mark.parametrize("spec, size", SPECS)
def test_every_printable_operator_rebuilds_from_its_spec(tmp_path, spec, size):
    spec = spec.format(mask=_mask_file(tmp_path, size))
    op = parse_operator(spec, size, R)
    again = parse_operator(op.spec(), size, R)  # today's signature: spec, (h, w), resolution
    _same(op, again, size)
    assert parse_operator(again.spec(), size, R).spec() == op.spec()  # a fixed point


def test_every_registered_kind_is_covered_above():
    covered = {t.split(":")[0].strip().lower() for spec, _ in SPECS for t in spec.split("+")}
    assert set(OPERATORS) <= covered, set(OPERATORS) - covered


def test_operators_built_in_python_print_exactly():
    sigma = 0.1 + 0.2  # not a short decimal: the spec must carry every bit
    for op, size in ((Compose([Blur("gauss", (sigma,)), parse_operator("bicubic:4", (16, 16), R).ops[0]]), (16, 16)),
                     (Compose([Warp(ROTATED, (3, 4, 22, 20), R), Gray()]), (20, 22)),
                     (Compose([Blur("motion", (math.pi, -17.25)), parse_operator("resize", (9, 9), R).ops[0]]),
                      (9, 9))):
        _same(op, parse_operator(op.spec(), size, R), size)
    assert Blur("gauss", (sigma,)).spec() == "blur:gauss:0.30000000000000004"
    assert Warp(ROTATED, (3, 4, 22, 20), R).spec() == "warp:22x20@3,4:2.9,0.41,-31,-0.41,2.9,7.5"


@pytest.mark.parametrize("a, b", [("gray+box:8@3,5", "box:8@3,5+gray"),
                                  ("blur:gauss:2+gray", "gray+blur:gauss:2.0+bicubic:8"),
                                  ("box:8@11,13", "box:8@3,5"),
                                  ("nearest:8@2", "nearest:8@2,2"),
                                  (" Gray + BICUBIC:8 ", "bicubic:8+gray")])
def test_equal_operators_print_the_same(a, b):
    size = (64, 64) if "box" in a else (8, 8)
    pa, pb = parse_operator(a, size, R), parse_operator(b, size, R)
    assert pa.spec() == pb.spec() and pa == pb


def test_gray_box_written_either_way_prints_one_canonical_spec():
    assert parse_operator("gray+box:8@3,5", (64, 64), R).spec() == "box:8@3,5+gray"
    assert parse_operator("box:8@3,5+gray", (64, 64), R).spec() == "box:8@3,5+gray"


def test_tensor_masks_and_callables_have_keys_not_specs():
    known = torch.zeros(8, 8, dtype=torch.bool)
    known[2:, :] = True
    mask = Mask(known)
    with pytest.raises(OperatorSpecError, match="no spec"):
        mask.spec()
    assert mask.key().startswith("mask:") and mask.key() == Mask(known.clone()).key()
    assert mask.key() != Mask(~known).key()
    custom = Custom(lambda hr: hr[..., ::8, ::8])
    with pytest.raises(OperatorSpecError, match="no spec"):
        custom.spec()
    assert custom.key() == Custom(custom.fn).key() and custom.key().startswith("custom:")
    both = Compose([custom, mask])
    with pytest.raises(OperatorSpecError):
        both.spec()
    assert both.key() == f"{custom.key()}+{mask.key()}"


def test_a_mask_file_prints_its_path_and_keys_its_pixels(tmp_path):
    path = _mask_file(tmp_path, (8, 8))
    op = parse_operator(f"mask:{path}", (8, 8), R)
    assert op.spec() == f"bicubic:8+mask:{path}"
    assert op.key().split("+")[1] == Mask(op.ops[1].known).key()  # the content, not the path
    # The pixels come from the reader the caller gives: ops/ itself opens no file.
    ones = parse_operator("mask:anything", (8, 8), R, read_mask=lambda p: torch.ones(3, 8, 8))
    assert float(ones.mask.sum()) == 64
    with pytest.raises(OperatorSpecError, match="mask:anything: refused"):
        parse_operator("mask:anything", (8, 8), R,
                       read_mask=lambda p: (_ for _ in ()).throw(OperatorSpecError("refused")))


def test_two_masks_count_the_pixels_both_keep():
    a = torch.zeros(8, 8, dtype=torch.bool)
    a[:, :6] = True
    b = torch.zeros(8, 8, dtype=torch.bool)
    b[:, 3:] = True
    op = Compose([Mask(a), Mask(b)])
    assert op.mask.shape == (1, 1, 8, 8) and op.mask[0, 0, 0].tolist() == [0, 0, 0, 1, 1, 1, 0, 0]


@pytest.mark.parametrize("spec, message", [("warp:22x20@3,4:1,2,3", "6 numbers"),
                                           ("warp:20x20@3,4:1,0,0,0,1,0", "does not match"),
                                           ("warp:22x20@0,0:0,0,0,0,0,0", "singular"),
                                           ("blur:gauss:nan", "not a finite number"),
                                           ("blur:motion:5,inf", "not a finite number"),
                                           ("gray:3", "no arguments")])
def test_bad_specs_are_one_typed_line(spec, message):
    with pytest.raises(OperatorSpecError, match=message):
        parse_operator(spec, (20, 22), R)


# ---------------------------------------------------------------------------
# The recipe for a new operator (docs/architecture.md, "A new forward operator"), followed for a toy one:
# a photo that was mirrored (a selfie camera), measured after the resampling.


@dataclass(eq=False)
class Mirror(Operator):
    """The measurement is mirrored left-right (and, with ``both``, upside down too)."""

    both: bool = False
    name = "mirror"                # 1. the spec term
    stage = Stage.COLOR            # 2. where it acts in a composition
    usage = "mirror|mirror:both"   # 3. how the term is written, for error messages

    def __call__(self, x):         # 4. differentiable, (B, C, h, w) -> (B, C, h, w)
        return x.flip(-1, -2) if self.both else x.flip(-1)

    @classmethod
    def from_spec(cls, args: str, ctx: SpecContext) -> "Mirror":  # 5. parse, validate, one typed line
        if args not in ("", "both"):
            raise OperatorSpecError(f"mirror:{args}: the argument is 'both' or nothing")
        return cls(both=args == "both")

    def spec_args(self) -> str:    # 6. the canonical text after "mirror:"
        return "both" if self.both else ""

    def describe(self):            # 7. what report.json records
        return {"name": "mirror", "both": self.both}


@pytest.fixture
def mirror_registered():
    register(Mirror)               # 8. @register on the class in its module, imported by ops/operators/__init__
    yield Mirror
    unregister("mirror")


def test_the_new_operator_recipe_works_for_a_toy_operator(mirror_registered, tmp_path):
    # Parsed, placed by its stage, printed, rebuilt.
    op = parse_operator("mirror:both+blur:gauss:1", (8, 8), R)
    assert [o.name for o in op.ops] == ["blur", "bicubic", "mirror"]
    assert op.spec() == "blur:gauss:1+bicubic:8+mirror:both"
    _same(op, parse_operator(op.spec(), (8, 8), R), (8, 8))
    with pytest.raises(OperatorSpecError, match="'both' or nothing"):
        parse_operator("mirror:up", (8, 8), R)
    assert "mirror:both" in str(pytest.raises(OperatorSpecError, parse_operator, "wobble", (8, 8), R).value)
    # Differentiable, as the search needs.
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(Mirror(True), (x,))

    # Through `pulse upsample --operator`, end to end: the report records it, and a rerun written
    # in another order resumes it.
    from conftest import tiny_model
    from pulse_sr.cli import main
    from pulse_sr.formats.safetensors_file import save_generator

    m = tiny_model()
    model = save_generator(m.generator, tmp_path / "tiny.safetensors", gaussian_fit=m.gaussian_fit)
    save_image(torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(0)), tmp_path / "in" / "selfie.png")
    args = ["upsample", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model", str(model), "--steps", "2",
            "--seed", "0", "--quiet"]
    r = CliRunner().invoke(main, args + ["--operator", "mirror+gray"], catch_exceptions=False)
    assert r.exit_code in (0, 3), r.output
    entry = json.loads((tmp_path / "out" / "report.json").read_text())["results"][0]
    assert entry["spec"] == "bicubic:4+gray+mirror"
    assert [p["name"] for p in entry["operator"]["parts"]] == ["bicubic", "gray", "mirror"]
    r = CliRunner().invoke(main, args + ["--operator", "gray+mirror"], catch_exceptions=False)
    assert "selfie.png: done in an earlier run" in r.output
