"""`pulse models list` and `pulse models download NAME`."""

from __future__ import annotations

import click

from ..errors import DownloadError
from ..hub import registry
from ..hub.download import download_model
from .common import ByteBars


def _fail(ctx: click.Context, message, code: int):
    click.echo(f"Error: {message}", err=True)
    ctx.exit(code)


@click.group()
def models():
    """List and download generator weights.

    Downloads go to $PULSE_CACHE (default ~/.cache/pulse-sr), one folder per model.
    """


@models.command("list")
def list_cmd():
    """Show every known model, whether it is on disk, and its licence."""
    header = ("NAME", "KIND", "RES", "STATUS", "PATH", "LICENCE")
    rows = []
    for name in registry.known_names():
        entry = registry.get_entry(name)
        res = registry.entry_resolution(entry)
        if entry.kind == "bundled" or len(entry.files) == 1:
            path = registry.local_path(entry, entry.files[0].filename)
        else:
            path = registry.model_dir(entry)
        rows.append((entry.name, entry.kind, str(res) if res else "?",
                     registry.model_status(entry), str(path), entry.licence))
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header) - 1)]
    for row in [header] + rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths)] + [row[-1]]
        click.echo("  ".join(cells))
    click.echo(f"\ncache: {registry.cache_dir()}  (set PULSE_CACHE to move it)")


@models.command("download")
@click.argument("name")
@click.option("--force", is_flag=True, help="Fetch again even if the files are present and verified.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def download_cmd(ctx, name, force, quiet):
    """Download model NAME into the cache (resumes an interrupted download)."""
    try:
        entry = registry.get_entry(name)
    except registry.UnknownModelError as exc:
        _fail(ctx, exc, 2)
    if entry.kind == "bundled":
        status = registry.model_status(entry)
        if status == "bundled":
            click.echo(f"{name} is bundled with pulse-sr: {registry.local_path(entry, entry.files[0].filename)}")
            return
        _fail(ctx, f"the bundled model {name!r} is missing from the installed package; reinstall pulse-sr", 1)
    try:
        with ByteBars(enabled=not quiet) as bars:
            paths = download_model(name, force=force, progress=bars)
    except DownloadError as exc:
        _fail(ctx, exc, 1)
    unverified = [f.filename for f in entry.files if not f.sha256]
    for path in paths:
        click.echo(str(path))
    if unverified:
        click.echo(f"note: no published sha256 for {', '.join(unverified)}; not checksum-verified", err=True)
    click.echo(f"licence: {entry.licence}", err=True)
