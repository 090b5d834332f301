"""`pulse models list`, `pulse models download NAME` and `pulse models verify NAME`."""

from __future__ import annotations

import click

from ..errors import DownloadError
from ..hub import registry
from ..hub.download import download_model, verify_model
from .common import ByteBars


@click.group()
def models():
    """List, download and verify generator weights.

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
        if entry.bundled or len(entry.files) == 1:
            path = registry.local_path(entry, entry.files[0].filename)
        else:
            path = registry.model_dir(entry)
        rows.append((entry.name, "bundled" if entry.bundled else entry.kind.value, str(res) if res else "?",
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
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=30, show_default=True,
              help="Give up on a transfer when no data arrives for this many seconds.")
@click.option("--deadline", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Give up after this many seconds in all (default: no limit). What arrived is kept for a resume.")
def download_cmd(name, force, quiet, timeout, deadline):
    """Download model NAME into the cache (resumes an interrupted download)."""
    entry = registry.get_entry(name)  # an unknown name: UnknownModelError, exit 2
    if entry.bundled:
        status = registry.model_status(entry)
        if status in ("bundled", "bundled (modified)"):
            click.echo(f"{name} is bundled with pulse-sr: {registry.local_path(entry, entry.files[0].filename)}")
            if status != "bundled":
                click.echo(f"note: it differs from its registry record; see `pulse models verify {name}`", err=True)
            return
        raise DownloadError(f"the bundled model {name!r} is missing from the installed package; reinstall pulse-sr")
    with ByteBars(enabled=not quiet) as bars:  # a failed transfer: DownloadError, exit 1
        paths = download_model(name, force=force, progress=bars, timeout=timeout, deadline=deadline)
    unverified = [f.filename for f in entry.files if not f.sha256]
    for path in paths:
        click.echo(str(path))
    if unverified:
        click.echo(f"note: no published sha256 for {', '.join(unverified)}; not checksum-verified", err=True)
    click.echo(f"licence: {entry.licence}", err=True)


@models.command("verify")
@click.argument("name")
def verify_cmd(name):
    """Re-check model NAME's files on disk: present, size and sha256.

    A file with no published size or sha256 is only checked to look complete
    by its own format. Exit 0 when every file is usable, 1 otherwise, 2 for an
    unknown name.
    """
    checks = verify_model(name)  # an unknown name: UnknownModelError, exit 2
    for check in checks:
        click.echo(f"{check.filename}: {check.message}")
    bad = [c for c in checks if not c.ok]
    if bad:
        if registry.get_entry(name).bundled:
            fix = "reinstall pulse-sr, or if you rebuilt the model, record its new size and sha256 in hub/registry.py"
        elif all(c.status == "missing" for c in bad):
            fix = f"run `pulse models download {name}`"
        else:
            fix = f"run `pulse models download {name} --force`"
        raise DownloadError(f"{len(bad)} of {len(checks)} files of {name} failed verification; {fix}")
    unverified = [c.filename for c in checks if c.status == "unverifiable-complete"]
    if unverified:
        click.echo(f"note: {', '.join(unverified)} only checked to look complete (no published size or sha256)",
                   err=True)
