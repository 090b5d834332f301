"""``pulse upsample`` as library code: LR images in, HR images and ``report.json`` out.

* :mod:`.job` -- :class:`UpsampleJob` (what a run searches, frozen) and :class:`RunContext` (where it runs);
* :mod:`.names` -- one unique output stem per input;
* :mod:`.inputs` -- an input file as the measured tensor and its forward operator;
* :mod:`.report` -- typed entries, :class:`UpsampleReport`, and :class:`ReportStore`, the only code that
  reads or writes ``report.json``, the part files and the folder's lock;
* :mod:`.run` -- :func:`upsample_files`, one driver for every world size.
"""

from ...errors import OutputFolderError
from .inputs import PreparedInput, prepare_inputs
from .job import AlignMode, FileProgress, RunContext, UpsampleJob
from .names import plan_names, sample_tags
from .report import (IMAGINARY_NOTE, LOCK, REPORT, ErrorEntry, ReportStore, ResultEntry, UpsampleReport,
                     check_out_dir, run_lock)
from .run import upsample_files

__all__ = ["upsample_files", "UpsampleJob", "RunContext", "AlignMode", "UpsampleReport", "ResultEntry",
           "ErrorEntry", "ReportStore", "PreparedInput", "prepare_inputs", "plan_names", "sample_tags",
           "check_out_dir", "run_lock", "OutputFolderError", "FileProgress", "IMAGINARY_NOTE", "REPORT", "LOCK"]
