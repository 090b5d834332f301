"""Typed exceptions raised by the library; the CLI turns them into one-line messages."""

# Exit codes of the commands, also recorded in report.json.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2      # bad usage or input
EXIT_NOT_FOUND = 3      # some searches did not reach eps, or some photos had no face


def exit_code(bad_input: bool, not_found: bool) -> int:
    """The exit code of a run over many inputs: bad input wins over not found."""
    return EXIT_BAD_INPUT if bad_input else EXIT_NOT_FOUND if not_found else EXIT_OK


class PulseError(Exception):
    """Base class for all pulse-sr errors."""


class ModelFormatError(PulseError):
    """A weights file is corrupt, of an unknown format, or does not match the architecture."""


class UnsafePickleError(ModelFormatError):
    """A pickle asked for a class or function outside the allow-list."""


class InputSizeError(PulseError):
    """An LR image size does not fit the generator's resolution."""


class InputImageError(PulseError):
    """An input image cannot be read."""


class DownloadError(PulseError):
    """A model could not be downloaded or failed its checksum."""
