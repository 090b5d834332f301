"""Pieces shared by the subcommands: exit codes, messages, model loading."""

from __future__ import annotations

import sys

import click

from ..errors import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_NOT_FOUND, EXIT_OK

__all__ = ["EXIT_OK", "EXIT_ERROR", "EXIT_BAD_INPUT", "EXIT_NOT_FOUND", "echo_err", "search_options",
           "load_model_or_exit"]


def echo_err(msg: str) -> None:
    click.echo(msg, err=True)


def search_options(opts) -> None:
    """Validate search options; a bad value is a usage error (exit 2)."""
    try:
        opts.validate()
    except ValueError as exc:
        raise click.UsageError(str(exc))


def load_model_or_exit(model: str, mapping=None, gaussian_fit=None):
    """Load a generator; a missing or broken model is a one-line error with exit code 2."""
    from ..errors import PulseError
    from ..loading import load_generator

    try:
        G = load_generator(model, mapping_path=mapping, gaussian_fit_path=gaussian_fit)
        if G.gaussian_fit is None:
            _fit_with_progress(G)
        return G
    except PulseError as exc:
        echo_err(f"error: {exc}")
        sys.exit(EXIT_BAD_INPUT)


def _fit_with_progress(G) -> None:
    """Compute (or read from the cache) the Gaussian fit, with a progress bar the first time."""
    from tqdm import tqdm

    from ..paths import cache_dir
    from ..prior import gaussian_fit_for

    bar = None

    def progress(done, total):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="Gaussian fit of the mapping network (once per model)", unit="z",
                       unit_scale=True, leave=False)
        bar.n = done
        bar.refresh()

    try:
        gaussian_fit_for(G, cache=cache_dir() / "gaussian_fit", progress=progress)
    finally:
        if bar is not None:
            bar.close()
