"""`pulse upsample`: run the PULSE search on image files and write results."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..search.options import MAX_SEED, PulseOptions
from .common import EXIT_BAD_INPUT, StepBars, dataclass_options, echo_err, load_model, log_as_rank, \
    options_from_kwargs, sharded_exit_note, validate_options


MAX_SAMPLES = 256  # One batch holds every sample of an input: more is a typo, not a plan.


@click.command("upsample")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--model", default="default", show_default=True, help="Registry name or weights path.")
@click.option("--mapping", type=click.Path(exists=True, dir_okay=False), help="PULSE mapping.pt (with synthesis.pt).")
@click.option("--gaussian-fit", type=click.Path(exists=True, dir_okay=False),
              help="A Gaussian fit file {mean, std} of the model's W width (PULSE's gaussian_fit.pt is 512).")
@click.option("--samples", default=1, show_default=True, type=click.IntRange(1, MAX_SAMPLES),
              help=f"HR samples per input (one batch; at most {MAX_SAMPLES}).")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=None,
              help="Seed of sample 0 (sample k uses seed+k); if unset, the seed of the run recorded in "
                   "OUT/report.json with the same settings (so the run resumes), else random.")
@dataclass_options(PulseOptions)
@click.option("--save-intermediate", is_flag=True, help="Write the best image of every step under OUT/<stem>/.")
@click.option("--lr-size", type=click.IntRange(1, 4096), default=None,
              help="Resize inputs to this square LR size first (at most the model's resolution; e.g. 8 for 64 px).")
@click.option("--align", "do_align", is_flag=True, help="Detect and align faces in ordinary photos first.")
@click.option("--align-operator", type=click.Choice(["warp", "resample"]), default="warp", show_default=True,
              help="With --align: 'warp' keeps a LR photo's own pixels around each face as the measurement, "
                   "through the warp into the model's frame (faces as large as the frame fall back to "
                   "'resample'); 'resample' aligns and downscales each face first.")
@click.option("--operator", default=None, metavar="SPEC",
              help="The forward model the result must match through, e.g. bicubic:8, resize:13x13, box:8@3,5 "
                   "(pixelation, block 8, grid offset 3,5), nearest:8@0, blur:gauss:1.5, blur:motion:9,30, gray, "
                   "mask:PATH, joined by + (gray+box:8@3,5). Default: detected per input (a mosaic gets box, "
                   "a grayscale input gray, the rest bicubic when the size divides the model's, else resize).")
@click.option("--noise-sigma", type=click.FloatRange(0, 255), default=0.0, show_default=True,
              help="Gaussian noise σ (0-255 scale) the inputs carry; eps grows by (σ/255)², the expected "
                   "extra mean square residual.")
@click.option("--domain", type=click.Choice(["report", "strict", "off"]), default="report", show_default=True,
              help="The out-of-domain test (is the input like what the model's own faces look like through "
                   "the operator?). 'report' records its p-value in report.json; 'strict' also calls an "
                   "input with p < 0.01 'out of domain' instead of within eps, and exits 4 (it flags about "
                   "1 in 5 real faces on the bundled model: docs/results.md); 'off' skips it.")
@click.option("--device", default=None, help="cpu, cuda or mps (default: best available).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def upsample(inputs, out_dir, model, mapping, gaussian_fit, samples, seed, save_intermediate, lr_size, do_align,
             align_operator, operator, noise_sigma, domain, device, quiet, **search):
    """Find HR faces that downscale to each INPUT (files or folders of PNG/JPEG/WebP/BMP).

    Writes <name>.png (or <name>_<k>.png), <name>_lr.png (the downscale of each
    result) and report.json, updated after every input. Names are the input stems,
    made unique. A rerun into the same OUT with the same settings skips the inputs
    already done. Exit codes: 0 all within eps, 3 some not, 4 (with --domain strict)
    some input out of domain, 2 bad usage or input, 1 other errors (including a full or
    read-only OUT); the first that applies in the order 1, 2, 4, 3. The faces are imaginary people.
    """
    from ..images import expand_inputs
    from ..pipelines.shards import session
    from ..pipelines.upsample import AlignMode, RunContext, UpsampleJob, upsample_files

    opts = options_from_kwargs(PulseOptions, search)
    validate_options(opts)
    files = expand_inputs(inputs)
    if not files:
        echo_err("no input images found")
        sys.exit(EXIT_BAD_INPUT)
    job = UpsampleJob(opts, samples=samples, seed=seed, lr_size=lr_size,
                      align=AlignMode(align_operator) if do_align else AlignMode.OFF, operator=operator,
                      noise_sigma=noise_sigma, save_intermediate=save_intermediate, domain=domain)
    with session(device) as (ranks, dev):
        log_as_rank(ranks)
        # Loaded once the device is known, so a Gaussian fit that must be computed runs there.
        pulse_model = load_model(model, mapping, gaussian_fit, device=dev, bar=ranks.main)
        with StepBars(enabled=not quiet and ranks.main) as bars:
            report = upsample_files(files, pulse_model, out_dir, job,
                                    RunContext(device=dev, ranks=ranks, progress=bars))
    if not ranks.main:
        sys.exit(0)  # under torchrun only a crash is a rank's failure; rank 0 reports the run
    total = len(report.results)
    ops = sorted({r.spec for r in report.results if r.spec})
    used = f"; operator {', '.join(ops)}" if ops else ""
    eps = report.results[0].eps if total else opts.eps
    ood = sum(1 for r in report.results if r.verdict == "out of domain")
    unlike = sum(1 for r in report.results if r.trust and r.trust.get("in_domain") is False)
    flags = f"; {ood} out of domain" if ood else f"; {unlike} unlike the model's faces (p < 0.01)" if unlike else ""
    echo_err(f"{report.consistent()}/{total} results within eps={eps}{flags}{used}; "
             f"{len(report.errors)} input(s) failed; "
             f"report: {out_dir / 'report.json'}" + sharded_exit_note(ranks, report.exit_code))
    sys.exit(0 if ranks.sharded else report.exit_code)
