"""The run's record: typed report entries, and the store that owns ``report.json`` and the part files.

:class:`ReportStore` is the only code that reads, merges or writes the state of
an output folder. Every rank appends each finished input to its part file
(:class:`pulse_sr.pipelines.shards.PartLog`) as it goes; rank 0 also rewrites
``report.json`` atomically after each of its inputs and, at the end, merges
every rank's part file into it. One process is rank 0 of 1, so the same code
serves every world size.

What the store never does, and why:

* share a folder with a live run: ``OUT/.pulse.lock`` is held (``flock``) by
  rank 0 for the whole run, and the kernel drops it when a run dies;
* write over an input: ``OUT`` may not be a folder that holds inputs;
* lose finished work: a kill loses at most the input in progress, and a rerun
  with the same settings and seed skips the inputs already done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import math
import os
import socket
from functools import partial
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

from ...errors import EXIT_ERROR, OutputFolderError, exit_code
from ...trust import CONSISTENT, NOT_WITHIN_EPS, OUT_OF_DOMAIN, VERDICTS
from ..shards import PartLog, Ranks, clear_parts, interrupted, read_valid_parts, set_aside

log = logging.getLogger(__name__)

IMAGINARY_NOTE = ("Outputs are imaginary faces generated to match the input; they do not recover "
                  "the real person and must not be used for identification.")
REPORT = "report.json"
LOCK = ".pulse.lock"
REPORT_FORMAT = 2

# Write errors after which no later input can be written either: stop the batch.
FATAL_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}

# The settings keys of a report, in the order report.json writes them (UpsampleJob.settings).
SETTINGS_KEYS = ("model", "resolution", "options", "samples", "lr_size", "align", "seed", "operator", "noise_sigma")


# ---------------------------------------------------------------------------
# Entries


@dataclasses.dataclass
class ResultEntry:
    """One HR sample of one input, as ``report.json`` records it; this run's entries also keep
    their tensors (``images``), which are not written to the report."""

    input: str                 # the input file
    output: str                # the HR image's file name in OUT
    downscaled: str            # A(HR)'s file name
    residual: str              # |A(HR) - y| x 8, as a heat map
    success: bool              # best_l2 <= eps
    best_l2: float
    eps: float
    operator: dict             # the forward model, as Operator.describe() gives it
    lr_error: dict             # the certificate: MSE, and RMSE and PSNR per channel
    best_step: int
    steps: int
    seconds: float
    seed: int
    run: str                   # the id of the run that made it (a key of the report's runs)
    key: Optional[str]         # the resume key: run settings and the input's bytes
    spec: Optional[str] = None  # the operator's canonical spec, for --operator
    stopped: bool = False      # cut short on request: a rerun does it again
    spread: Optional[str] = None  # with K >= 2: where the K samples disagree
    stage: str = "w+"          # the space the result was found in: w+ (the paper's), noise or features
    passes: Optional[int] = None  # generator passes the adaptive search spent on this sample
    trust: Optional[dict] = None  # what the input determines: in_domain_p/in_domain, identity_* with K >= 2
    verdict: Optional[str] = None  # consistent, not within eps or (--domain strict) out of domain
    images: Optional[Dict[str, object]] = dataclasses.field(default=None, repr=False, compare=False)

    _ORDER = ("input", "output", "downscaled", "residual", "success", "best_l2", "eps", "operator", "spec",
              "lr_error", "best_step", "steps", "seconds", "seed", "run", "key")

    def __post_init__(self):
        if self.verdict is None:  # entries of releases before the trust object: the search's own verdict
            self.verdict = CONSISTENT if self.success else NOT_WITHIN_EPS

    def to_json(self) -> dict:
        d = {k: getattr(self, k) for k in self._ORDER}
        if d["spec"] is None:
            del d["spec"]
        if self.stopped:
            d["stopped"] = True
        if self.spread is not None:
            d["spread"] = self.spread
        d["stage"] = self.stage
        if self.passes is not None:
            d["passes"] = self.passes
        d["verdict"] = self.verdict
        if self.trust is not None:
            d["trust"] = self.trust
        return d

    @classmethod
    def from_json(cls, d) -> "ResultEntry":
        """An entry read back from a report or a part file; ValueError if it is not one (a missing or
        mistyped field, a number that is not finite)."""
        if not isinstance(d, dict):
            raise ValueError("a result entry must be an object")
        known = {f.name for f in dataclasses.fields(cls)} - {"images"}
        missing = [k for k in cls._ORDER if k not in d and k != "spec"]
        if missing:
            raise ValueError(f"a result entry lacks {', '.join(missing)}")
        for k, kinds in _TYPES.items():
            v = d.get(k)
            if k in d and not (isinstance(v, kinds) and not (isinstance(v, bool) and bool not in kinds)):
                raise ValueError(f"a result entry's {k} is {type(v).__name__} {str(v)[:40]!r}")
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"a result entry's {k} is {v}, not a finite number")
        if d.get("verdict") is not None and d["verdict"] not in VERDICTS:
            raise ValueError(f"a result entry's verdict is {str(d['verdict'])[:40]!r}")
        return cls(**{k: v for k, v in d.items() if k in known})


_TYPES = {"input": (str,), "output": (str,), "downscaled": (str,), "residual": (str,), "success": (bool,),
          "best_l2": (float, int), "eps": (float, int), "operator": (dict,), "spec": (str, type(None)),
          "lr_error": (dict,), "best_step": (int,), "steps": (int,), "seconds": (float, int), "seed": (int,),
          "run": (str,), "key": (str, type(None)), "stopped": (bool,), "spread": (str, type(None)),
          "stage": (str,), "passes": (int, type(None)), "trust": (dict, type(None)), "verdict": (str, type(None))}


@dataclasses.dataclass
class ErrorEntry:
    """An input that gave no result, and why."""

    input: str
    error: str

    def to_json(self) -> dict:
        return {"input": self.input, "error": self.error}


@dataclasses.dataclass
class UpsampleReport:
    """What a run did: its settings, every result kept in ``OUT`` and this run's errors.

    :meth:`to_json` is ``report.json``. ``notes`` are the lines the run logged
    (skipped files, the operator chosen, warnings), for callers without a log handler.
    """

    settings: dict
    run: str
    runs: Dict[str, dict]
    results: List[ResultEntry] = dataclasses.field(default_factory=list)
    errors: List[ErrorEntry] = dataclasses.field(default_factory=list)
    exit_code: Optional[int] = None
    stopped: Optional[str] = None
    interrupted: List[dict] = dataclasses.field(default_factory=list)
    notes: List[str] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict:
        d = {"format": REPORT_FORMAT, **{k: self.settings[k] for k in SETTINGS_KEYS}, "note": IMAGINARY_NOTE,
             "exit_code": self.exit_code, "run": self.run, "runs": self.runs}
        if self.stopped:
            d["stopped"] = self.stopped
        if self.interrupted:
            d["interrupted"] = self.interrupted
        d["errors"] = [e.to_json() for e in self.errors]
        d["results"] = [r.to_json() for r in self.results]
        return d

    def write(self, path: Path) -> None:
        """``report.json``, strict JSON with one line per result, replaced atomically."""
        d = self.to_json()
        errors, results = d.pop("errors"), d.pop("results")
        from ...safe_paths import create_new

        dump = partial(json.dumps, allow_nan=False)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with create_new(tmp, binary=False) as f:
                f.write("{\n")
                for key, value in d.items():
                    f.write(f"  {dump(key)}: {dump(value)},\n")
                f.write('  "errors": [' + ",".join("\n    " + dump(e) for e in errors) + "],\n")
                f.write('  "results": [' + ",".join("\n    " + dump(r) for r in results) + "\n  ]\n}\n")
            if path.is_dir() and not path.is_symlink():
                raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
            os.replace(tmp, path)
        finally:
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()

    def within_eps(self) -> int:
        return sum(1 for r in self.results if r.success)

    def consistent(self) -> int:
        """Results within eps that the verdict does not call out of domain (``--domain strict``)."""
        return sum(1 for r in self.results if r.verdict == CONSISTENT)

    def exit_code_for(self, mine: Sequence[ResultEntry], stopped: Optional[str] = None) -> int:
        """This run's exit code: its own inputs' errors and results, not earlier runs' kept in the report."""
        if stopped:
            return EXIT_ERROR
        return exit_code(bad_input=bool(self.errors), not_found=any(not r.success for r in mine),
                         out_of_domain=any(r.verdict == OUT_OF_DOMAIN for r in mine))


@dataclasses.dataclass
class Previous:
    """What earlier runs left in a folder: ``report.json`` with part-file records folded in, newest last."""

    runs: Dict[str, dict]
    run: Optional[str]
    results: List[ResultEntry]

    def last_settings(self) -> dict:
        return self.runs.get(self.run or "", {}) if isinstance(self.runs.get(self.run or ""), dict) else {}

    def done(self, key: Optional[str], out_dir: Path) -> Optional[List[ResultEntry]]:
        """The earlier results of the input with ``key``, if they are all there and their files exist."""
        if not key:
            return None
        entries = [r for r in self.results if r.key == key]
        if entries and all((out_dir / r.output).is_file() and (out_dir / r.downscaled).is_file()
                           and not r.stopped for r in entries):
            return entries
        return None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _valid_part_record(r) -> bool:
    """A part record of pulse upsample: an event with the fields that event needs, of the right types."""
    if not isinstance(r, dict):
        return False
    event = r.get("event")
    if event == "run":
        return isinstance(r.get("run"), str) and isinstance(r.get("settings"), dict)
    if event == "finished":
        return isinstance(r.get("run"), str) and isinstance(r.get("rank"), int)
    if event in ("start", "done", "error"):
        if not isinstance(r.get("unit"), str):
            return False
        if event == "done":
            results = r.get("results")
            return isinstance(results, list) and len(_entries(results)) == len(results)
        if event == "error":
            return isinstance(r.get("run"), str) and isinstance(r.get("error"), str)
        return True
    return False


def _entries(items) -> List[ResultEntry]:
    out = []
    for d in items if isinstance(items, list) else ():
        try:
            out.append(ResultEntry.from_json(d))
        except (TypeError, ValueError):
            continue  # not an entry this version understands: the input is simply run again
    return out


# ---------------------------------------------------------------------------
# The folder


def check_out_dir(out_dir: Path, files: Sequence[Path]) -> None:
    """Refuse an ``out_dir`` that is a file, or that holds any of the inputs."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputFolderError(f"--out {out_dir} is a file, not a folder; choose a folder for the results")
    out = out_dir.resolve()
    for f in files:
        try:
            if Path(f).resolve().parent == out:
                raise OutputFolderError(f"--out {out_dir} holds the inputs (e.g. {f}); the results would overwrite "
                                        f"or mix with them: choose another folder")
        except OSError:
            continue


def make_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputFolderError(f"cannot create {out_dir} ({exc.strerror or exc})") from None


@contextlib.contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir/.pulse.lock`` for the run; refuse if a live run holds it.

    ``flock`` locks die with their process, so a killed run never leaves the
    folder locked; the pid in the file is only for the message.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        yield
        return
    from ...safe_paths import open_fd

    path = out_dir / LOCK
    try:
        fd = open_fd(path, os.O_RDWR | os.O_CREAT)  # a planted link is removed, never written through
    except OSError as exc:
        raise OutputFolderError(f"cannot write to {out_dir} ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise OutputFolderError(f"{out_dir} is in use by a running pulse upsample ({holder}); wait for it "
                                    f"to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# The store


class ReportStore:
    """``OUT/report.json`` and ``OUT/.pulse-parts/``: read, validated, merged and written here only."""

    def __init__(self, out_dir: Path, ranks: Ranks):
        self.out_dir, self.ranks = Path(out_dir), ranks
        self.path = self.out_dir / REPORT
        self._part: Optional[PartLog] = None
        self._set_aside_once: set = set()

    # -- reading ------------------------------------------------------------------

    def read_report(self) -> dict:
        """The report of earlier runs, validated (``runs``, ``run``, ``results``; empty if there is none). A report that is not valid JSON, or
        whose parts are not what this version writes, is copied aside to ``report.json.bad-<time>`` with
        one warning, and only its valid parts are used: a bad state never stops a run."""
        empty = {"runs": {}, "run": None, "results": []}
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return empty
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("cannot read %s (%s); starting a new report", self.path, getattr(exc, "strerror", exc) or exc)
            return empty
        problems: List[str] = []
        try:
            rep = json.loads(text, parse_constant=_refuse_constant)
        except ValueError as exc:
            rep, problems = {}, [f"not valid JSON ({exc})"]
        if not isinstance(rep, dict):
            rep, problems = {}, problems or [f"a JSON {type(rep).__name__}, not an object"]
        clean = {}
        runs = rep.get("runs", {})
        if isinstance(runs, dict):
            clean["runs"] = {k: v for k, v in runs.items() if isinstance(k, str) and isinstance(v, dict)}
            if len(clean["runs"]) != len(runs):
                problems.append("runs that are not objects")
        else:
            clean["runs"] = {}
            problems.append(f"runs is a {type(runs).__name__}")
        run = rep.get("run")
        clean["run"] = run if isinstance(run, str) else None
        if run is not None and not isinstance(run, str):
            problems.append(f"run is a {type(run).__name__}")
        results = rep.get("results", [])
        if not isinstance(results, list):
            problems.append(f"results is a {type(results).__name__}")
            results = []
        good = _entries(results)
        if len(good) != len(results):
            problems.append(f"{len(results) - len(good)} result(s) this version cannot read")
        clean["results"] = [e.to_json() for e in good]
        if problems:
            bad = set_aside(self.path, text)
            log.warning("%s: %s; kept a copy as %s and went on with what is valid", self.path,
                        "; ".join(problems)[:300], bad.name)
        return clean

    def read_parts(self) -> List[dict]:
        """Every valid record of the part files; invalid ones are set aside in ``<file>.bad-<time>``."""
        return read_valid_parts(self.out_dir, _valid_part_record, self._set_aside_once)

    def previous(self, parts: Optional[List[dict]] = None) -> Previous:
        """``report.json`` with the run settings and results recorded in part files folded in."""
        rep = self.read_report()
        runs, run = rep["runs"], rep["run"]
        results = _entries(rep["results"])
        from_parts: Dict[str, List[ResultEntry]] = {}
        for r in self.read_parts() if parts is None else parts:
            if r.get("event") == "run":
                runs[r["run"]], run = r["settings"], r["run"]
            elif r.get("event") == "done":
                from_parts[r["unit"]] = _entries(r.get("results"))
        results = [r for r in results if r.key not in from_parts] + [e for es in from_parts.values() for e in es]
        return Previous(runs, run, results)

    def interrupted(self, parts: List[dict], units: set) -> List[dict]:
        """The units of this run that a rank died on in an earlier run (logged, and for the report)."""
        found = [r for r in interrupted(parts) if r.get("unit") in units]
        for r in found:
            log.info("%s: rank %s of %s stopped while running it in an earlier run (pid %s); running it again",
                     r.get("input"), r.get("rank"), r.get("world"), r.get("pid"))
        return [{"input": r.get("input"), "rank": r.get("rank"), "world": r.get("world")} for r in found]

    def new_report(self, previous: Previous, settings: dict, run_id: str, files: Sequence[Path]) -> UpsampleReport:
        """This run's report before it starts: results of inputs it does not touch stay, with their runs."""
        inputs = {str(f) for f in files}
        kept = [r for r in previous.results if r.input not in inputs]
        runs = {k: v for k, v in previous.runs.items() if any(r.run == k for r in kept)}
        return UpsampleReport(settings, run_id, {**runs, run_id: settings}, results=kept)

    # -- this run's records ------------------------------------------------------

    @contextlib.contextmanager
    def part_log(self) -> Iterator[PartLog]:
        with PartLog(self.out_dir, self.ranks) as part:
            self._part = part
            try:
                yield part
            finally:
                self._part = None

    def record(self, *records: dict) -> None:
        """Append records to this rank's part file (inside :meth:`part_log`)."""
        assert self._part is not None, "record() outside part_log()"
        self._part.write(*records)

    def this_runs_records(self, run_id: str, units: Dict[str, int]):
        """From every part file: {file index: [entries]} done and {file index: error} of this run's units."""
        done: Dict[int, List[ResultEntry]] = {}
        errors: Dict[int, ErrorEntry] = {}
        for r in self.read_parts():
            i = units.get(r.get("unit"))
            if i is None:
                continue
            if r.get("event") == "done":
                done[i] = _entries(r.get("results"))
            elif r.get("event") == "error" and r.get("run") == run_id:
                errors[i] = ErrorEntry(str(r.get("input")), str(r.get("error")))
        return done, errors

    def save(self, report: UpsampleReport, mine: Sequence[ResultEntry]) -> bool:
        """Write ``report.json`` (an in-progress one says what the exit code would be now); False if it
        could not be written (logged)."""
        if report.exit_code is None:
            report = dataclasses.replace(report, exit_code=report.exit_code_for(mine))
        try:
            report.write(self.path)
            return True
        except OSError as exc:
            log.error("cannot write %s (%s)", self.path, exc.strerror or exc)
            return False

    def clear_parts(self) -> None:
        clear_parts(self.out_dir)
