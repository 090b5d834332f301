"""`pulse eval`: the paper's evaluation on a folder of HR images."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..pipelines.eval.settings import EvalSettings
from ..search.options import PulseOptions
from .common import dataclass_options, echo_err, load_model, log_as_rank, options_from_kwargs, sharded_exit_note, \
    validate_options


@click.command("eval")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--model", default="default", show_default=True, help="Registry name or weights path.")
@dataclass_options(EvalSettings, prefix="eval_")
@dataclass_options(PulseOptions, prefix="search_")
@click.option("--device", default=None, help="cpu, cuda or mps (default: best available).")
@click.option("--quiet", is_flag=True, help="No progress lines (warnings and errors only).")
def eval_cmd(data_dir, out_dir, model, device, quiet, **kwargs):
    """Evaluate PULSE on the HR images in DATA_DIR (in the model's frame) and write
    OUT/results.json, OUT/report.md and OUT/figures/. Interrupted runs resume.

    Runs under torchrun too (see the README's "Many GPUs / machines").
    Exit codes: 0 done, 2 bad usage or input (including images skipped as unreadable
    or of the wrong shape; the others are evaluated), 1 other errors. Searches that
    miss eps are results, not errors.
    """
    from ..ops.degrade import DegradationSpecError, parse_degradations
    from ..pipelines.eval import evaluate
    from ..pipelines.shards import session

    settings = options_from_kwargs(EvalSettings, kwargs, prefix="eval_")
    opts = options_from_kwargs(PulseOptions, kwargs, prefix="search_")
    settings.n = settings.n or None  # 0 = all
    try:
        parse_degradations(settings.degrade)
    except DegradationSpecError as exc:
        raise click.BadParameter(str(exc), param_hint="--degrade")
    validate_options(opts, settings)
    with session(device) as (ranks, dev):
        log_as_rank(ranks, quiet=quiet)
        pulse_model = load_model(model, device=dev, bar=ranks.main)
        results = evaluate(data_dir, pulse_model, out_dir, opts, settings, device=dev, ranks=ranks)
    if not ranks.main:
        sys.exit(0)  # under torchrun only a crash is a rank's failure; rank 0 reports the run
    summary = results.summary
    clean = summary["conditions"]["clean"]["runs"]
    skipped = f"; {len(results.errors)} image(s) skipped" if results.errors else ""
    echo_err(f"{clean['successes']}/{clean['n']} clean runs within eps={opts.eps} on {summary['images']} images"
             f"{skipped}; report: {out_dir / 'report.md'}" + sharded_exit_note(ranks, results.exit_code))
    sys.exit(0 if ranks.sharded else results.exit_code)
