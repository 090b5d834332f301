"""Pieces shared by the subcommands: the log handler, model loading with a progress bar, progress
bars, and click options generated from the library's option dataclasses."""

from __future__ import annotations

import collections.abc
import dataclasses
import logging
import sys
import typing
from typing import Callable, Dict, Iterable, Optional

import click

from ..diagnostics import LineHandler
from ..errors import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_NOT_FOUND, EXIT_OK

__all__ = ["EXIT_OK", "EXIT_ERROR", "EXIT_BAD_INPUT", "EXIT_NOT_FOUND", "echo_err", "validate_options",
           "load_model", "dataclass_options", "options_from_kwargs", "StepBars", "ByteBars", "CLI_LOG",
           "log_as_rank"]


def echo_err(msg: str) -> None:
    click.echo(msg, err=True)


class _CliLog(LineHandler):
    """The CLI's one handler: the library's log records as lines on stderr (installed by LazyGroup)."""

    def __init__(self):
        super().__init__(echo_err)  # click.echo finds the current stderr at each line (CliRunner swaps it)

    def reset(self) -> None:
        self.prefix = ""
        self.setLevel(logging.INFO)


CLI_LOG = _CliLog()


def log_as_rank(ranks, quiet: bool = False) -> None:
    """Lines of a torchrun rank start with ``[rank R/W]``; ``quiet`` keeps only warnings and errors."""
    CLI_LOG.prefix = ranks.prefix()
    if quiet:
        CLI_LOG.setLevel(logging.WARNING)


def validate_options(*objs) -> None:
    """Validate option objects; a bad value is a usage error (exit 2)."""
    try:
        for obj in objs:
            obj.validate()
    except ValueError as exc:
        raise click.UsageError(str(exc))


def load_model(model: str, mapping=None, gaussian_fit=None, device=None, bar: bool = True):
    """Load a model onto ``device`` (errors go to LazyGroup: one line, exit 2 for a missing or broken file).

    The first load of a model without a stored Gaussian fit computes it there, with a
    progress bar (``bar=False`` on torchrun ranks other than 0).
    """
    from tqdm import tqdm

    from ..model import load_model as load

    shown = None

    def progress(done, total):
        nonlocal shown
        if shown is None:
            shown = tqdm(total=total, desc="Gaussian fit of the mapping network (once per model)", unit="z",
                         unit_scale=True, leave=False)
        shown.n = done
        shown.refresh()

    try:
        return load(model, device=device, mapping_path=mapping, gaussian_fit_path=gaussian_fit,
                    fit_progress=progress if bar else None)
    finally:
        if shown is not None:
            shown.close()


class _Bars:
    """A progress callback that keeps one tqdm bar per item (search, file), closed when the item changes."""

    def __init__(self, enabled: bool = True):
        self.enabled, self.bar, self.key = enabled, None, None

    def _bar(self, key: str, new: bool = False, **tqdm_kwargs):
        if key != self.key or self.bar is None or new:
            from tqdm import tqdm

            self.close()
            self.bar = tqdm(desc=key, leave=False, dynamic_ncols=True, file=sys.stderr, **tqdm_kwargs)
            self.key = key
        return self.bar

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class StepBars(_Bars):
    """``bars(stem, step, steps, info)``: a pipeline's per-step progress callback."""

    def __call__(self, stem: str, step: int, steps: int, info: dict) -> None:
        if not self.enabled:
            return
        adaptive = "alive" in info  # the adaptive search counts generator passes against its budget
        bar = self._bar(stem, new=self.bar is not None and step < self.bar.n, total=steps,
                        unit="pass" if adaptive else "step")
        bar.update(step - bar.n)
        if adaptive:
            bar.set_postfix(l2=f"{info['l2']:.2e}", done=f"{info['done']}/{info['batch']}", alive=info["alive"],
                            stage=info["stage"], refresh=False)
        elif "l2" in info:
            bar.set_postfix(l2=f"{info['l2']:.2e}", done=f"{info['done']}/{info['batch']}", refresh=False)


class ByteBars(_Bars):
    """``bars(filename, bytes_done, total)``: the download progress callback of :mod:`pulse_sr.hub.download`."""

    def __call__(self, name: str, done: int, total) -> None:
        if not self.enabled:
            return
        bar = self._bar(name, total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024)
        bar.update(done - bar.n)


# ---------------------------------------------------------------------------
# Options generated from dataclasses, so defaults, choices and help live in the library.

def _parse_int_list(text: str):
    try:
        return tuple(int(t) for t in str(text).replace(",", ".").split(".") if t.strip() != "")
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected integers separated by '.' or ',', e.g. 17 or 16.17")


def _flag(f: dataclasses.Field, rename: Dict[str, str]) -> str:
    return rename.get(f.name) or f.metadata.get("cli") or "--" + f.name.replace("_", "-")


def dataclass_options(cls, *, exclude: Iterable[str] = (), rename: Optional[Dict[str, str]] = None,
                      prefix: str = "") -> Callable:
    """A decorator adding one click option per field of dataclass ``cls``.

    Field metadata supplies the help text (``help``), a choice list (``choices``),
    a minimum (``min``), the flag name (``cli``) and other names for it
    (``aliases``). The parameter name is
    ``prefix + field name``; :func:`options_from_kwargs` collects them back.
    Booleans become ``--x/--no-x``; integer tuples are written ``16.17``.
    """
    rename = rename or {}
    hints = typing.get_type_hints(cls)

    def decorate(fn):
        for f in reversed(dataclasses.fields(cls)):
            if f.name in exclude:
                continue
            flag = _flag(f, rename)
            hint = hints[f.name]
            args = typing.get_args(hint)
            if type(None) in args:  # Optional[X]
                hint = next(a for a in args if a is not type(None))
            kw = dict(default=f.default, show_default=True, help=f.metadata.get("help"))
            dest = prefix + f.name
            if hint is bool:
                fn = click.option(f"{flag}/--no-{flag[2:]}", dest, **kw)(fn)
                continue
            if "choices" in f.metadata:
                kw["type"] = click.Choice(list(f.metadata["choices"]))
            elif hint is int:
                kw["type"] = click.IntRange(f.metadata["min"]) if "min" in f.metadata else int
            elif hint is float:
                kw["type"] = float
            elif typing.get_origin(hint) in (tuple, list, collections.abc.Sequence):
                kw["default"] = ".".join(str(v) for v in f.default)
                kw["callback"] = lambda ctx, param, value: _parse_int_list(value)
                kw["type"] = str
            else:
                kw["type"] = str
            fn = click.option(flag, *f.metadata.get("aliases", ()), dest, **kw)(fn)
        return fn
    return decorate


def options_from_kwargs(cls, kwargs: dict, *, prefix: str = "", **overrides):
    """Build ``cls`` from the parameters :func:`dataclass_options` added (and remove them from ``kwargs``)."""
    values = {}
    for f in dataclasses.fields(cls):
        if prefix + f.name in kwargs:
            values[f.name] = kwargs.pop(prefix + f.name)
    values.update(overrides)
    return cls(**values)


def sharded_exit_note(ranks, code: int) -> str:
    """The tail of rank 0's summary line under torchrun, where every rank exits 0 unless it crashed."""
    return f"; exit code {code} (in the report; ranks exit 0 under torchrun)" if ranks.sharded else ""
