"""The `pulse` command. Each subcommand lives in its own module and only parses
options, calls library code and prints; nothing imports this package."""

from __future__ import annotations

import importlib
import os
import sys

import click

# (module, attribute) of each subcommand, registered lazily so that
# `pulse --help` stays fast and one broken optional dependency does not
# take down the other commands.
SUBCOMMANDS = {
    "upsample": ("pulse_sr.cli.upsample", "upsample"),
    "models": ("pulse_sr.cli.models", "models"),
    "demo": ("pulse_sr.cli.demo", "demo"),
    "train": ("pulse_sr.cli.train", "train"),
    "align": ("pulse_sr.cli.align", "align"),
    "eval": ("pulse_sr.cli.eval", "eval_cmd"),
    "quality": ("pulse_sr.cli.quality", "quality"),
    "serve": ("pulse_sr.cli.serve", "serve"),
}


class LazyGroup(click.Group):
    def invoke(self, ctx):
        # The one place where errors become exit codes and log records become lines on stderr.
        # Library errors are expected: one line, and the exit code the exception carries
        # (2 for bad usage or input). Anything else is a bug or an environment problem:
        # one line, exit 1, unless PULSE_DEBUG=1 asks for the traceback.
        from ..diagnostics import handler_installed
        from ..errors import EXIT_ERROR, PulseError
        from .common import CLI_LOG

        CLI_LOG.reset()
        try:
            with handler_installed(CLI_LOG):
                return super().invoke(ctx)
        except click.UsageError as exc:  # a bad option value is one line too, with where to look
            where = f"pulse {exc.ctx.command_path.split(' ', 1)[1]} --help" if exc.ctx and " " in \
                exc.ctx.command_path else "pulse --help"
            click.echo(f"error: {exc.format_message()} (see {where})", err=True)
            sys.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except PulseError as exc:
            click.echo(f"{CLI_LOG.prefix}error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
            if os.environ.get("PULSE_DEBUG"):
                raise
            click.echo(f"{CLI_LOG.prefix}error: {exc.__class__.__name__}: {exc} (set PULSE_DEBUG=1 for a traceback)",
                       err=True)
            sys.exit(EXIT_ERROR)

    def list_commands(self, ctx):
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx, name):
        if name not in SUBCOMMANDS:
            return None
        module, attr = SUBCOMMANDS[name]
        try:
            return getattr(importlib.import_module(module), attr)
        except ImportError as exc:
            reason = str(exc)  # `exc` is unbound once the except block ends

            @click.command(name, help=f"(unavailable: {reason})")
            def unavailable():
                raise click.ClickException(f"'pulse {name}' is unavailable: {reason}")
            return unavailable


@click.group(cls=LazyGroup)
@click.version_option(package_name="pulse-sr")
def main():
    """PULSE: find realistic high-resolution faces that downscale to a low-resolution input.

    Every output is an imaginary person made by a generative model. It is not a
    recovery of the real person in the input and must not be used to identify anyone.
    """


if __name__ == "__main__":
    sys.exit(main())
