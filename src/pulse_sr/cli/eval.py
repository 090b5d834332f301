"""`pulse eval`: the paper's evaluation on a folder of HR images."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import EXIT_BAD_INPUT, echo_err, load_model_or_exit, search_options


@click.command("eval")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--model", default="default", show_default=True, help="Registry name or weights path.")
@click.option("--scale", default=8, show_default=True, type=click.IntRange(1), help="Downscale factor HR -> LR.")
@click.option("--runs", default=5, show_default=True, type=click.IntRange(1), help="PULSE runs (seeds) per image.")
@click.option("--n", "n_images", default=200, show_default=True, type=click.IntRange(0),
              help="Use the first N images by name; 0 = all.")
@click.option("--labels", default=None, help="'utkface' (age_gender_race_* names) or a CSV of file,group[,...].")
@click.option("--degrade", default="", help="Also run on degraded inputs, e.g. "
              "gaussian:25,gaussian:50,motion:100,saltpepper:0.05 (the paper's Sec. 5).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of run 0 (run k uses seed+k).")
@click.option("--steps", default=100, show_default=True, type=click.IntRange(1))
@click.option("--eps", default=2e-3, show_default=True, type=float, help="Success threshold on the downscaling L2.")
@click.option("--batch", "batch_images", default=4, show_default=True, type=click.IntRange(1),
              help="Images searched together (each with all its runs).")
@click.option("--grid", "grid_images", default=8, show_default=True, type=click.IntRange(0),
              help="Images shown in the figure grids.")
@click.option("--niqe-color", type=click.Choice(["gray", "y"]), default="gray", show_default=True,
              help="NIQE's RGB to one plane: MATLAB's rgb2gray (as MATLAB's niqe) or YCbCr's Y.")
@click.option("--no-niqe", is_flag=True, help="Skip NIQE (the slowest metric at 1024 px).")
@click.option("--device", default=None, help="cpu, cuda or mps (default: best available).")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def eval_cmd(data_dir, out_dir, model, scale, runs, n_images, labels, degrade, seed, steps, eps, batch_images,
             grid_images, niqe_color, no_niqe, device, quiet):
    """Evaluate PULSE on the HR images in DATA_DIR (in the model's frame) and write
    OUT/results.json, OUT/report.md and OUT/figures/. Interrupted runs resume.

    Exit codes: 0 done, 2 bad usage or input, 1 other errors.
    """
    from ..degrade import DegradationSpecError, parse_degradations
    from ..errors import PulseError
    from ..evaluate import EvalSettings, evaluate
    from ..search import PulseOptions

    try:
        parse_degradations(degrade)
    except DegradationSpecError as exc:
        raise click.BadParameter(str(exc), param_hint="--degrade")
    opts = PulseOptions(steps=steps, eps=eps)
    search_options(opts)
    settings = EvalSettings(scale=scale, runs=runs, n=n_images or None, labels=labels, degrade=degrade, seed=seed,
                            batch_images=batch_images, grid_images=grid_images, niqe=not no_niqe,
                            niqe_color=niqe_color)
    G = load_model_or_exit(model)
    try:
        results = evaluate(data_dir, G, out_dir, opts, settings, device=device, log=None if quiet else echo_err)
    except (PulseError, ValueError) as exc:
        echo_err(f"error: {exc}")
        sys.exit(EXIT_BAD_INPUT)
    clean = results["conditions"]["clean"]["runs"]
    echo_err(f"{clean['successes']}/{clean['n']} clean runs within eps={eps} on {results['images']} images; "
             f"report: {out_dir / 'report.md'}")
