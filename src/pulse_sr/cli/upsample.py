"""`pulse upsample`: run the PULSE search on image files and write results."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import EXIT_BAD_INPUT, echo_err, load_model_or_exit, search_options


def _parse_layers(text: str):
    try:
        return tuple(int(t) for t in text.replace(",", ".").split(".") if t.strip() != "")
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected layer indices separated by '.' or ',', e.g. 17 or 16.17")


@click.command("upsample")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--model", default="default", show_default=True, help="Registry name or weights path.")
@click.option("--mapping", type=click.Path(exists=True, dir_okay=False), help="PULSE mapping.pt (with synthesis.pt).")
@click.option("--gaussian-fit", type=click.Path(exists=True, dir_okay=False), help="PULSE gaussian_fit.pt.")
@click.option("--samples", default=1, show_default=True, type=click.IntRange(1), help="HR samples per input (one batch).")
@click.option("--seed", type=int, default=None, help="Seed of sample 0 (sample k uses seed+k); random if unset.")
@click.option("--steps", default=100, show_default=True, type=click.IntRange(1), help="Optimisation steps.")
@click.option("--eps", default=2e-3, show_default=True, type=float, help="Success threshold on the downscaling L2.")
@click.option("--loss", "loss_str", default="100*L2+0.05*GEOCROSS", show_default=True,
              help="Weighted terms joined by '+': L2 or L1 (downscaling), GEOCROSS (latent cross loss).")
@click.option("--noise", type=click.Choice(["zero", "fixed", "trainable"]), default="trainable", show_default=True,
              help="Per-layer noise maps: zero, fixed random, or optimised for the first layers.")
@click.option("--trainable-noise-layers", default=5, show_default=True, type=click.IntRange(0),
              help="With --noise trainable: how many of the first noise maps are optimised.")
@click.option("--bad-noise-layers", default="-1", show_default=True,
              help="Noise layers forced to zero, '.'-separated; -1 is the last layer (17 on a 1024-px model).")
@click.option("--tile-latent", is_flag=True, help="One latent for all layers instead of W+.")
@click.option("--optimizer", type=click.Choice(["adam", "sgd", "sgdm", "adamax"]), default="adam", show_default=True)
@click.option("--lr", default=0.4, show_default=True, type=float, help="Learning rate.")
@click.option("--schedule", type=click.Choice(["fixed", "linear1cycle", "linear1cycledrop"]),
              default="linear1cycledrop", show_default=True)
@click.option("--early-stop", is_flag=True, help="Stop once every sample is within eps.")
@click.option("--save-intermediate", is_flag=True, help="Write the best image of every step under OUT/<stem>/.")
@click.option("--lr-size", type=click.IntRange(1), default=None, help="Resize inputs to this square LR size first.")
@click.option("--align", "do_align", is_flag=True, help="Detect and align faces in ordinary photos first.")
@click.option("--device", default=None, help="cpu, cuda or mps (default: best available).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def upsample(inputs, out_dir, model, mapping, gaussian_fit, samples, seed, steps, eps, loss_str, noise,
             trainable_noise_layers, bad_noise_layers, tile_latent, optimizer, lr, schedule, early_stop,
             save_intermediate, lr_size, do_align, device, quiet):
    """Find HR faces that downscale to each INPUT (files or folders of PNG/JPEG/WebP/BMP).

    Writes <stem>.png (or <stem>_<k>.png), <stem>_lr.png (the downscale of each
    result) and report.json. Exit codes: 0 all within eps, 3 some not, 2 bad
    usage or input, 1 other errors. The faces are imaginary people.
    """
    from ..images import expand_inputs
    from ..search import PulseOptions
    from ..upsample_files import upsample_files

    opts = PulseOptions(loss=loss_str, eps=eps, noise=noise, trainable_noise_layers=trainable_noise_layers,
                        bad_noise_layers=_parse_layers(bad_noise_layers), tile_latent=tile_latent,
                        optimizer=optimizer, lr=lr, steps=steps, schedule=schedule, early_stop=early_stop)
    search_options(opts)
    files = expand_inputs(inputs)
    if not files:
        echo_err("no input images found")
        sys.exit(EXIT_BAD_INPUT)
    G = load_model_or_exit(model, mapping, gaussian_fit)
    report = upsample_files(files, G, out_dir, opts, samples=samples, seed=seed, lr_size=lr_size,
                            align=do_align, device=device, save_intermediate=save_intermediate,
                            progress=not quiet, log=echo_err)
    ok = sum(1 for r in report["results"] if r.get("success"))
    bad = len(report["errors"])
    total = len(report["results"])
    echo_err(f"{ok}/{total} results within eps={eps}; {bad} input(s) failed; report: {out_dir / 'report.json'}")
    sys.exit(report["exit_code"])
