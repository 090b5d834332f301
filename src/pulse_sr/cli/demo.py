"""`pulse demo`: PULSE on the bundled model, no downloads (the paper's Figure 3 idea)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import StepBars, echo_err, load_model


@click.command("demo")
@click.option("--out", "out_dir", default="demo-output", show_default=True, type=click.Path(path_type=Path))
@click.option("--model", default="default", show_default=True, help="Registry name or weights path.")
@click.option("--samples", default=6, show_default=True, type=click.IntRange(1), help="PULSE seeds to run.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2 ** 62))
@click.option("--lr-size", default=8, show_default=True, type=click.IntRange(2))
@click.option("--steps", default=100, show_default=True, type=click.IntRange(1))
@click.option("--photo/--no-photo", default=True, show_default=True,
              help="Also run on a real photo (scikit-image's astronaut), aligned to the model's frame.")
@click.option("--device", default=None)
def demo(out_dir, model, samples, seed, lr_size, steps, photo, device):
    """Sample a face, downscale it to LR, and find several HR faces that downscale to it."""
    from ..pipelines.demo import DemoJob, run_demo
    from ..runtime import tune

    device = tune(device)  # the process-wide switches, once, and the device the fit is computed on
    pulse_model = load_model(model, device=device)
    runs = [("sampled", None, None)]
    if photo:
        try:
            from ..align import demo_photo
            lr, hr = demo_photo(pulse_model, lr_size)
            runs.append(("photo", lr, hr))
        except Exception as exc:  # the sampled demo must run even without the alignment extras
            echo_err(f"skipping the real-photo demo: {exc}")
    for tag, lr, hr in runs:
        with StepBars() as bars:
            job = DemoJob(samples=samples, seed=seed, lr_size=lr_size, steps=steps, tag=tag, photo_lr=lr,
                          photo_hr=hr)
            out = run_demo(pulse_model, out_dir, job, device=device,
                           progress=lambda s, n, info: bars(f"PULSE ({tag}, {samples} seeds)", s, n, {}))
        rep = out.report
        ok = sum(s["success"] for s in rep["samples"])
        click.echo(f"{tag}: {ok}/{samples} samples within eps={rep['eps']} in {rep['seconds']} s")
        click.echo(f"  grid:   {out.paths['grid']}")
        click.echo(f"  report: {out.paths['report']}")
    click.echo("The faces are imaginary people consistent with the input, not the real person.")
