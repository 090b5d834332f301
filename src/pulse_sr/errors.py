"""Every exception the library raises, and the exit code each one means.

The library raises these typed exceptions and never prints or exits; the CLI
catches :class:`PulseError` in one place (``pulse_sr.cli.LazyGroup``), prints
``error: <message>`` as one line and exits with the exception's ``exit_code``.
Messages say what to do: ``input.png: 37×41 is not a supported LR size ...``.

Classes that are also ``ValueError`` / ``RuntimeError`` keep working with code
that catches the builtin. This module imports nothing (the registry, which
needs no torch, raises from here too).
"""

# Exit codes of the commands, also recorded in report.json.
EXIT_OK = 0
EXIT_ERROR = 1          # anything else: the environment, the network, a full disk, a bug
EXIT_BAD_INPUT = 2      # bad usage or input
EXIT_NOT_FOUND = 3      # some searches did not reach eps, or some photos had no face
EXIT_OUT_OF_DOMAIN = 4  # with --domain strict: some input is unlike anything the model makes


def exit_code(bad_input: bool, not_found: bool, out_of_domain: bool = False) -> int:
    """The exit code of a run over many inputs: bad input (2) wins over out of domain (4), which wins
    over not found (3); an error (1) is decided before this."""
    if bad_input:
        return EXIT_BAD_INPUT
    if out_of_domain:
        return EXIT_OUT_OF_DOMAIN
    return EXIT_NOT_FOUND if not_found else EXIT_OK


class PulseError(Exception):
    """Base class for all pulse-sr errors; ``exit_code`` is what the CLI exits with."""

    exit_code = EXIT_BAD_INPUT


# -- options and specs -------------------------------------------------------------


class SettingsError(PulseError, ValueError):
    """A setting is out of range or unknown (``PulseOptions``, ``EvalSettings``, ``TrainOptions``, ...)."""


class OperatorSpecError(PulseError, ValueError):
    """An ``--operator`` spec that does not parse, does not fit the input or the model, or cannot be printed."""


class DegradationSpecError(PulseError, ValueError):
    """A ``--degrade`` specification names an unknown degradation or a bad value."""


class LabelError(PulseError, ValueError):
    """A label source cannot be read: unknown scheme, missing CSV, or a CSV without a header."""


# -- inputs and outputs ------------------------------------------------------------


class InputSizeError(PulseError):
    """An LR image size does not fit the generator's resolution."""


class InputImageError(PulseError):
    """An input image (or a folder of them) cannot be read, or holds nothing usable."""


class PeerMissingError(PulseError):
    """A torchrun rank waited for a peer that never joined the process group (exit 1: the environment)."""

    exit_code = EXIT_ERROR


class OutputFolderError(PulseError):
    """``--out`` cannot be used: it holds the inputs, is a file, is not writable, or a live run holds it."""


class UploadError(PulseError):
    """An upload or a request that the web page refuses, with the message it shows."""


class SearchFailed(PulseError):
    """A search gave no usable result (its loss is not a finite number): the input is reported, not written."""


class SearchCancelled(PulseError):
    """A search was cancelled from outside (the web page's Cancel) and its results are dropped."""


# -- models, weights and downloads ---------------------------------------------------


class ModelFormatError(PulseError):
    """A weights file is corrupt, of an unknown format, or does not match the architecture."""


class UnsafePickleError(ModelFormatError):
    """A pickle asked for a class or function outside the allow-list."""


class UnknownModelError(PulseError):
    """A name is neither a registered model nor an existing file."""


class DownloadError(PulseError):
    """A model could not be downloaded or failed its checksum (the network or the server: exit 1)."""

    exit_code = EXIT_ERROR


class ModelNotDownloadedError(DownloadError):
    """A registered model is asked for before it was downloaded: the user runs ``pulse models download``."""

    exit_code = EXIT_BAD_INPUT


# -- optional parts and implementations ----------------------------------------------


class ImplUnavailableError(PulseError, RuntimeError):
    """An op was asked for an implementation that cannot run on these inputs or this machine."""


class FaceDetectorUnavailable(PulseError):
    """dlib or its landmark model is not installed."""


class FaceEmbedderUnavailable(PulseError):
    """dlib or its face-recognition model is not installed."""


class TemplateError(PulseError):
    """A crop template is malformed, or a model records no crop convention."""


__all__ = [name for name, value in dict(globals()).items()
           if isinstance(value, type) and issubclass(value, Exception)] + [
    "EXIT_OK", "EXIT_ERROR", "EXIT_BAD_INPUT", "EXIT_NOT_FOUND", "EXIT_OUT_OF_DOMAIN", "exit_code"]
