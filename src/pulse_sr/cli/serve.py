"""`pulse serve`: PULSE in a browser tab, on this machine."""

from __future__ import annotations

import sys

import click

from ..errors import EXIT_ERROR
from .common import echo_err


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but 127.0.0.1/localhost lets other machines in (a warning says so).")
@click.option("--port", default=7860, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one).")
@click.option("--model", default="default", show_default=True, help="Model selected when the page opens.")
@click.option("--device", default=None, help="cpu, cuda or mps (default: best available).")
@click.option("--max-mb", default=20, show_default=True, type=click.IntRange(1, 1024), help="Largest upload, in MB.")
@click.option("--max-mp", default=16.0, show_default=True, type=click.FloatRange(0.01, 200),
              help="Largest upload, in megapixels.")
def serve(host, port, model, device, max_mb, max_mp):
    """Serve a local web page for PULSE: upload, options, live progress, results and a zip.

    One search runs at a time; other requests queue and see their place. The page
    loads nothing from any other host. Uploads and results live in a temporary
    folder that is removed when the server stops (Ctrl-C).
    """
    from ..web.app import ServeSettings, serve as run_server

    if host not in ("127.0.0.1", "localhost", "::1"):
        echo_err(f"warning: listening on {host}: anyone who can reach this machine can use the page and its "
                 f"compute; there is no login")
    settings = ServeSettings(host=host, port=port, model=model, device=device, max_bytes=max_mb * 2 ** 20,
                             max_pixels=int(max_mp * 1e6))
    try:
        run_server(settings)
    except OSError as exc:
        echo_err(f"error: cannot serve on {host}:{port} ({exc.strerror or exc}); choose another --port "
                 f"(0: any free one)")
        sys.exit(EXIT_ERROR)
