"""One path for diagnostics: the library logs, the CLI prints, result objects keep the lines.

Library modules log through ``logging.getLogger(__name__)`` (under the
``pulse_sr`` logger, which has only a ``NullHandler`` until an application adds
one) and never print. A record reads as one line (:func:`line`): ``error: ...``,
``warning: ...``, or the message itself for information. The CLI installs one
:class:`LineHandler` that echoes lines to stderr; a pipeline that returns a
result object collects the lines of its own thread into it (:func:`collect`),
so a caller without a handler (the web page, a notebook) still has them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Callable, Iterator, List

ROOT = "pulse_sr"
_TAGS = {logging.ERROR: "error: ", logging.CRITICAL: "error: ", logging.WARNING: "warning: "}


def line(record: logging.LogRecord) -> str:
    """A record as the one line a user reads."""
    return _TAGS.get(record.levelno, "") + record.getMessage()


class LineHandler(logging.Handler):
    """Hands every record, as a :func:`line` with an optional prefix (``[rank 1/2] ``), to ``emit_line``."""

    def __init__(self, emit_line: Callable[[str], None], level: int = logging.INFO, prefix: str = ""):
        super().__init__(level)
        self.emit_line, self.prefix = emit_line, prefix

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.emit_line(self.prefix + line(record))
        except Exception:  # noqa: BLE001 - a broken stream must not end the run
            self.handleError(record)


@contextlib.contextmanager
def handler_installed(handler: logging.Handler) -> Iterator[logging.Handler]:
    """``handler`` on the ``pulse_sr`` logger, which passes records at the handler's level, for the block."""
    logger = logging.getLogger(ROOT)
    before = logger.level
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > handler.level:
        logger.setLevel(handler.level)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)


@contextlib.contextmanager
def collect(into: List[str], level: int = logging.INFO) -> Iterator[List[str]]:
    """Append the lines that this thread logs under ``pulse_sr`` during the block to ``into``."""
    thread = threading.get_ident()
    handler = LineHandler(into.append, level)
    handler.addFilter(lambda record: record.thread == thread)
    with handler_installed(handler):
        yield into
