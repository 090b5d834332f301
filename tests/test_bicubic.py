import json
from pathlib import Path

import pytest
import torch

from pulse_sr import BicubicDownscale, InputSizeError, bicubic_downscale
from pulse_sr.ops.resample import bicubic_kernel

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "bicubic_reference.json").read_text())


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=lambda c: f"x{c['factor']}")
def test_matches_reference_numbers(case):
    # Numbers recorded from the reference BicubicDownSample (see the fixture's produced_by).
    f, s = case["factor"], case["size"]
    x = torch.rand(2, 3, s, s, generator=torch.Generator().manual_seed(1234 + f))
    y = bicubic_downscale(x, f)
    assert list(y.shape) == case["out_shape"]
    got = y[:, :, ::3, ::3].flatten()
    want = torch.tensor(case["values"])
    assert (got - want).abs().max().item() < 1e-5
    assert abs(y.double().sum().item() - case["sum"]) < 1e-3


def test_kernel_normalised_and_symmetric():
    for f in (1, 2, 4, 8, 64):
        k = torch.tensor(bicubic_kernel(f), dtype=torch.float64)
        assert len(k) == 4 * f
        assert abs(k.sum().item() - 1) < 1e-12
        assert torch.allclose(k, k.flip(0))


def test_constant_image_is_preserved():
    x = torch.full((1, 3, 64, 64), 0.3)
    assert torch.allclose(bicubic_downscale(x, 8), torch.full((1, 3, 8, 8), 0.3), atol=1e-6)


def test_module_wrapper_and_dtype():
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    y = BicubicDownscale(4)(x)
    assert y.dtype == torch.float64 and y.shape == (1, 3, 8, 8)
    assert "factor=4" in repr(BicubicDownscale(4))


def test_gradcheck():
    x = torch.rand(1, 3, 12, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: bicubic_downscale(t, 2), (x,))


@pytest.mark.parametrize("shape,factor", [((1, 3, 30, 32), 4), ((1, 3, 32, 32), 0), ((3, 32, 32), 2),
                                          ((1, 3, 8, 8), 8)])
def test_bad_sizes_raise(shape, factor):
    with pytest.raises(InputSizeError):
        bicubic_downscale(torch.rand(*shape), factor)
