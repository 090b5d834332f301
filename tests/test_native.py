import shutil

import pytest
import torch

from pulse_sr.ops import epilogue as E
from pulse_sr.ops import native

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")


@pytest.fixture
def fresh_native(monkeypatch, tmp_path):
    """A clean build state with its own kernel cache."""
    monkeypatch.setenv("PULSE_CACHE", str(tmp_path))
    monkeypatch.delenv("PULSE_NO_NATIVE", raising=False)
    monkeypatch.setattr(native, "_libraries", {})
    return tmp_path


def epilogue_c(*args):
    return E.epilogue(*args, impl="c")


def _cl(*shape, seed, scale=1.0, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale + offset).contiguous(memory_format=torch.channels_last)


def _args(batch=2, channels=6, size=16, noise_batch=2, noise=True, bias=True, offset=0.0):
    g = torch.Generator().manual_seed(1)
    x = _cl(batch, channels, size, size, seed=0, offset=offset).requires_grad_(True)
    n = torch.randn(noise_batch, 1, size, size, generator=g).requires_grad_(True) if noise else None
    s = torch.randn(channels, generator=g).requires_grad_(True)
    b = torch.randn(channels, generator=g).requires_grad_(True) if bias else None
    gamma = torch.randn(batch, channels, generator=g).requires_grad_(True)
    beta = torch.randn(batch, channels, generator=g).requires_grad_(True)
    return x, n, s, b, gamma, beta


def _run(fn, args, w):
    y = fn(*args, 1e-8)
    inputs = [a for a in args if a is not None]
    grads = torch.autograd.grad((y * w).sum(), inputs, allow_unused=True)
    # Without noise the noise strength is unused: no gradient on either path.
    return [y.detach()] + [torch.zeros(()) if g is None else g for g in grads]


@needs_cc
def test_kernels_build_into_the_cache(fresh_native):
    lib = E.kernels()
    assert lib is not None, E.kernels_error()
    built = list((fresh_native / "kernels").glob("epilogue-*.so"))
    assert len(built) == 1
    assert E.kernels() is lib  # built once per process


@needs_cc
@pytest.mark.parametrize("noise,bias,noise_batch", [(True, True, 2), (True, True, 1), (False, True, 2),
                                                    (True, False, 2), (False, False, 2)])
def test_native_matches_torch_ops(noise, bias, noise_batch):
    assert E.kernels() is not None, E.kernels_error()
    args = _args(noise=noise, bias=bias, noise_batch=noise_batch)
    assert E.native_applies(*args)
    w = _cl(2, 6, 16, 16, seed=9)
    want = _run(E.epilogue_reference, args, w)
    got = _run(epilogue_c, args, w)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=2e-4, rtol=2e-4), (a - b).abs().max()


@needs_cc
def test_native_statistics_hold_when_mean_dwarfs_spread():
    # float64 accumulation: a channel at mean 49 with std 0.01 must come out no
    # worse than the reference ops do in float32 (both against float64).
    assert E.kernels() is not None, E.kernels_error()
    args = list(_args(offset=0.0))
    with torch.no_grad():
        x = args[0].detach().clone()
        x[:, 1] = x[:, 1] * 0.01 + 50.0
    args[0] = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    w = _cl(2, 6, 16, 16, seed=9)
    truth = _run(E.epilogue_reference, [a.double() if a is not None else None for a in args], w.double())
    ref = _run(E.epilogue_reference, args, w)
    got = _run(epilogue_c, args, w)
    for t, r, g in zip(truth, ref, got):
        assert (g.double() - t).abs().max() <= 2 * (r.double() - t).abs().max() + 1e-5


def test_unbuildable_auto_falls_back_and_c_says_why(fresh_native, monkeypatch):
    args = _args()
    w = _cl(2, 6, 16, 16, seed=9)
    want = _run(E.epilogue_reference, args, w)

    monkeypatch.setenv("CC", str(fresh_native / "no-such-compiler"))
    assert E.kernels() is None
    assert "no C compiler" in E.kernels_error()
    for a, b in zip(_run(lambda *a: E.epilogue(*a, impl="auto"), args, w), want):
        assert torch.allclose(a, b, atol=2e-4, rtol=2e-4)
    with pytest.raises(E.ImplUnavailableError, match="no C compiler"):
        epilogue_c(*args, 1e-8)


@needs_cc
def test_no_native_only_sets_the_default(fresh_native, monkeypatch):
    # PULSE_NO_NATIVE makes new generators use the torch ops; an explicit impl='c' still runs the kernels.
    monkeypatch.setenv("PULSE_NO_NATIVE", "1")
    assert E.default_impl() == "torch"
    args = _args()
    w = _cl(2, 6, 16, 16, seed=9)
    for a, b in zip(_run(epilogue_c, args, w), _run(E.epilogue_reference, args, w)):
        assert torch.allclose(a, b, atol=2e-4, rtol=2e-4)


@needs_cc
def test_missing_or_broken_source_falls_back(fresh_native):
    from importlib import resources
    ops_dir = resources.files("pulse_sr.ops")
    assert native.get_library("missing", ["no_such_kernels.c"], E.KERNEL_SIGNATURES, ops_dir) is None
    assert "kernel source missing" in native.build_error("missing")

    (fresh_native / "broken.c").write_text("this is not C\n")
    assert native.get_library("broken", ["broken.c"], {}, fresh_native) is None
    assert "-O3" in native.build_error("broken")  # both flag sets tried, compiler output kept
    assert not list((fresh_native / "kernels").glob("*.so"))


def test_parallel_covers_every_pixel_once():
    seen = torch.zeros(10_000, dtype=torch.int32)

    def mark(i, p0, p1):
        seen[p0:p1] += 1

    native.parallel(3, 10_000, mark)
    assert bool((seen == 1).all())
    seen.zero_()
    native.parallel(4, 100, mark)  # too few pixels to split: one call
    assert bool((seen[:100] == 1).all()) and int(seen[100:].sum()) == 0


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork")
def test_parallel_works_in_a_forked_child():
    import os
    native.parallel(2, 10_000, lambda i, p0, p1: None)  # the parent's pool exists
    pid = os.fork()
    if pid == 0:  # child: must not hang on the parent's dead threads
        seen = torch.zeros(10_000, dtype=torch.int32)

        def mark(i, p0, p1):
            seen[p0:p1] += 1
        native.parallel(2, 10_000, mark)
        os._exit(0 if bool((seen == 1).all()) else 1)
    import signal
    import time
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("native.parallel hung in a forked child")
        time.sleep(0.05)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_shapes_the_kernels_cannot_index_take_the_torch_ops():
    # The C kernels read raw memory: broadcast gamma/beta, a noise batch that is
    # neither 1 nor B, NCHW or float64 inputs must all go to the torch ops.
    x, n, s, b, gamma, beta = _args()
    assert E.native_applies(x, n, s, b, gamma, beta)
    assert not E.native_applies(x, n, s, b, gamma[:1], beta[:1])
    assert not E.native_applies(x, torch.randn(3, 1, 16, 16), s, b, gamma, beta)
    assert not E.native_applies(x, n[:, :, :8], s, b, gamma, beta)
    assert not E.native_applies(x.contiguous(), n, s, b, gamma, beta)
    assert not E.native_applies(x.double(), n, s, b, gamma, beta)
    assert not E.native_applies(x, n, s[:3], b, gamma, beta)
    # ...and broadcasting still gives the reference result there with impl='auto';
    # impl='c' says why it cannot run instead of falling back.
    w = _cl(2, 6, 16, 16, seed=9)
    bargs = (x, n, s, b, gamma[:1], beta[:1])
    for a_, b_ in zip(_run(lambda *a: E.epilogue(*a, impl="auto"), bargs, w), _run(E.epilogue_reference, bargs, w)):
        assert torch.allclose(a_, b_, atol=2e-4, rtol=2e-4)
    with pytest.raises(E.ImplUnavailableError, match="no broadcasting"):
        epilogue_c(*bargs, 1e-8)
    with pytest.raises(E.ImplUnavailableError, match="NCHW"):
        epilogue_c(x.contiguous(), n, s, b, gamma, beta, 1e-8)
