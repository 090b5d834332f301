"""``pulse upsample`` as library code: one driver for every world size (one process is rank 0 of 1).

For every input: ``<name>.png`` (or ``<name>_<k>.png`` with several samples),
``<name>_lr.png``, ``<name>_residual.png`` and, with K ≥ 2, ``<name>_spread.png``,
plus its entries in ``report.json``. A bad input is recorded and skipped.

The run, in order:

1. rank 0 makes ``OUT``, holds its lock, reads what earlier runs left
   (:class:`ReportStore`), settles the seed, the resume keys and the inputs
   still to do, and broadcasts that plan;
2. every rank searches its contiguous share of the pending inputs (each input
   as its own batch with the seed it has in one process, so results do not
   depend on the world size), appends each to its part file, and rank 0
   rewrites ``report.json`` after each of its own;
3. rank 0 merges every rank's part file into the report one process writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import secrets
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ... import trust
from ...diagnostics import collect
from ...errors import EXIT_ERROR, OutputFolderError, PulseError, SearchCancelled, SearchFailed
from ...hub.download import sha256_file
from ...images import enlarge, heat_map, read_input_bytes, residual_map, save_image
from ...ops.measurement import Measurement
from ...ops.operators import OperatorSpecError
from ...runtime import tune
from ...safe_paths import real_dir
from ...search import upsample
from ..shards import FINISHED, digest, split
from .inputs import PreparedInput, prepare_inputs
from .job import RunContext, UpsampleJob
from .names import plan_names, sample_tags
from .report import (FATAL_WRITE_ERRORS, REPORT, ErrorEntry, ReportStore, ResultEntry, UpsampleReport,
                     check_out_dir, make_out_dir, run_lock)

log = logging.getLogger(__name__)

STOPPED_ON_REQUEST = "stopped on request; the search in progress kept its best so far"


def upsample_files(files: Sequence[Path], model, out_dir, job: Optional[UpsampleJob] = None,
                   context: Optional[RunContext] = None) -> UpsampleReport:
    """Search every file with ``model`` (a :class:`pulse_sr.PulseModel`) as ``job`` says; write images and
    ``report.json`` into ``out_dir`` as it goes; return the report.

    With ``job.seed`` unset, a run into a folder whose report has the same
    settings takes that run's seed (and so resumes it); otherwise one seed is
    drawn for the run and recorded. ``context.stop()`` is asked after every
    search step: when it says True, the search in progress ends with its best so
    far (written as usual), no further input starts, and the report says
    ``stopped``. Under ``torchrun`` (``context.ranks`` from
    :func:`pulse_sr.pipelines.shards.session`) rank 0 returns the merged report
    and the other ranks their own part of it.

    Raises OutputFolderError for an unusable ``out_dir``, InputSizeError for an
    ``lr_size`` the model cannot take, SettingsError for bad settings.
    """
    notes: List[str] = []
    with collect(notes):
        report = _Run([Path(f) for f in files], model, Path(out_dir), job or UpsampleJob(),
                      context or RunContext()).execute()
    report.notes = notes
    return report


@dataclasses.dataclass
class _Plan:
    """What rank 0 decides and broadcasts: the seed, each input's resume key, what is left to do."""

    seed: int
    keys: List[Optional[str]]
    todo: List[int]
    lost: List[dict]


class _Run:
    def __init__(self, files: List[Path], model, out_dir: Path, job: UpsampleJob, ctx: RunContext):
        self.files, self.model, self.out_dir, self.job, self.ctx = files, model, out_dir, job, ctx
        self.ranks = ctx.ranks
        self.store = ReportStore(out_dir, ctx.ranks)

    # -- 1. the plan (rank 0) ------------------------------------------------------

    def execute(self) -> UpsampleReport:
        check_out_dir(self.out_dir, self.files)
        self.job.validate(self.model)
        with _FolderOnMain(self.ranks, self.out_dir) as main_error:
            plan = self._plan() if self.ranks.main and main_error is None else None
            plan = self.ranks.broadcast(plan if main_error is None else {"error": main_error})
            if isinstance(plan, dict):
                raise OutputFolderError(plan["error"])
            return self._search_all(plan)

    def _plan(self) -> _Plan:
        parts = self.store.read_parts()
        self.previous = self.store.previous(parts)
        seed = self._choose_seed()
        run_id = digest(self.job.with_seed(seed).settings(self.model))
        keys = [_input_key(path, run_id) for path in self.files]
        todo = []
        for i, (path, key) in enumerate(zip(self.files, keys)):
            if self.previous.done(key, self.out_dir) is not None:
                log.info("%s: done in an earlier run with the same settings and seed; kept", path)
            else:
                todo.append(i)
        lost = self.store.interrupted(parts, {keys[i] or _unit(run_id, self.files[i]) for i in todo})
        if self.ranks.sharded:
            log.info("%d inputs: %d done in an earlier run, %d to run on %d ranks", len(self.files),
                     len(self.files) - len(todo), len(todo), self.ranks.world)
        return _Plan(seed, keys, todo, lost)

    def _choose_seed(self) -> int:
        if self.job.seed is not None:
            return self.job.seed
        earlier = self.previous.last_settings()
        if earlier and {**earlier, "seed": None} == self.job.settings(self.model):
            log.info("resuming the run in %s with its seed %s", self.out_dir / REPORT, earlier["seed"])
            return int(earlier["seed"])
        return secrets.randbelow(2 ** 31)

    # -- 2. the searches (every rank) ----------------------------------------------

    def _search_all(self, plan: _Plan) -> UpsampleReport:
        self.job = self.job.with_seed(plan.seed)
        settings = self.job.settings(self.model)
        self.run_id = digest(settings)
        self.names = plan_names(self.files, self.job.samples, align=self.job.align.to_json() is not False)
        self.model = self.model.to(tune(self.ctx.device))
        previous = self.previous if self.ranks.main else None
        report = self.store.new_report(previous, settings, self.run_id, self.files) if previous else \
            UpsampleReport(settings, self.run_id, {self.run_id: settings})
        report.interrupted = plan.lost
        done: Dict[int, List[ResultEntry]] = {}
        if previous is not None:
            done = {i: previous.done(k, self.out_dir) for i, k in enumerate(plan.keys) if i not in plan.todo}
        errors: Dict[int, ErrorEntry] = {}
        fatal, requested = None, False
        with self.store.part_log():
            if self.ranks.main:
                self.store.record({"event": "run", "run": self.run_id, "settings": settings})
            for i in split(plan.todo, self.ranks):
                entries, error, fatal = self._one_input(i, plan.keys[i])
                if error is not None:
                    errors[i] = error
                else:
                    done[i] = entries
                if self.ranks.main:
                    self._assemble(report, done, errors)
                    if error is None:
                        self.store.save(report, _mine(done))
                if fatal:
                    log.error("%s", fatal)
                    break
                if self.ctx.stop is not None and self.ctx.stop():
                    requested = True
                    break
            if self.ranks.sharded:
                self.store.record({"event": FINISHED, "run": self.run_id, "rank": self.ranks.rank})
        self.ranks.wait_for_peers(self.out_dir, self.run_id)  # however long the slowest share takes
        stops = [s for s in self.ranks.gather((fatal, requested)) if s[0] or s[1]]
        if not self.ranks.main:
            self._assemble(report, done, errors)
            return report
        return self._merge(report, plan, done, errors, stops)

    def _one_input(self, i: int, key: Optional[str]) -> Tuple[List[ResultEntry], Optional[ErrorEntry], Optional[str]]:
        """Search input ``i``: (entries, error entry or None, why the batch must stop or None)."""
        path = self.files[i]
        unit = key or _unit(self.run_id, path)
        self.store.record({"event": "start", "unit": unit, "input": str(path), "rank": self.ranks.rank,
                           "world": self.ranks.world, "pid": os.getpid()})
        entries: List[ResultEntry] = []
        error = fatal = None
        try:
            data = read_input_bytes(path)
            searched = _bytes_key(data, self.run_id)  # the bytes searched, even if the file changed since the plan
            if key is not None and searched != key:
                log.warning("%s changed since the run started; its results are keyed by the bytes searched", path)
            key = searched
            items = prepare_inputs(path, self.names[path], self.model, self.job, self.ctx.read_mask, data)
            for item in items:
                entries += self._search(path, item, key)
                if self.ctx.stop is not None and self.ctx.stop():
                    break
        except SearchCancelled:  # the caller dropped the run: nothing to record, the caller says so
            raise
        except PulseError as exc:  # unreadable, wrong size, no face, no template, a non-finite loss...
            log.error("%s", exc)
            error = ErrorEntry(str(path), str(exc))
        except OSError as exc:
            log.error("%s: cannot write the results to %s (%s)", path, self.out_dir, exc.strerror or exc)
            if exc.errno in FATAL_WRITE_ERRORS or isinstance(exc, IsADirectoryError):
                fatal = f"{self.out_dir} is not writable ({exc.strerror or exc}); stopped before the remaining inputs"
            error = ErrorEntry(str(path), f"cannot write: {exc.strerror or exc}")
        if error is not None:
            self.store.record({"event": "error", "unit": unit, "input": str(path), "run": self.run_id,
                               "error": error.error})
            return [], error, fatal
        self.store.record({"event": "done", "unit": unit, "input": str(path),
                           "results": [e.to_json() for e in entries]})
        return entries, None, None

    def _search(self, path: Path, item: PreparedInput, key: Optional[str]) -> List[ResultEntry]:
        job, stem = self.job, item.name
        callback = partial(_save_intermediate, self.out_dir, stem, job.samples) if job.save_intermediate else None
        progress = partial(self.ctx.progress, stem) if self.ctx.progress is not None else None
        res = upsample(item.lr, self.model, job.options, samples=job.samples, seed=job.seed, progress=progress,
                       callback=callback, stop=self.ctx.stop, operator=item.operator, noise_sigma=job.noise_sigma)
        stopped = res.stopped
        for w in res.warnings:
            log.warning("%s", w)
        if not bool(torch.isfinite(res.best_l2).all()):  # nothing non-finite is written, image or report
            raise SearchFailed(f"{path}: the search's loss is not a finite number (operator "
                               f"{_shown(res.operator)}); no image written")
        return _write_outputs(self, path, item, res, key, stopped)

    # -- 3. the report (rank 0) ----------------------------------------------------

    def _assemble(self, report: UpsampleReport, done: Dict[int, List[ResultEntry]],
                  errors: Dict[int, ErrorEntry]) -> None:
        """This run's entries, in input order, after the kept results of inputs it does not touch."""
        inputs = {str(f) for f in self.files}
        kept = [r for r in report.results if r.input not in inputs]
        report.results = kept + [e for i in sorted(done) for e in done[i]]
        report.errors = [errors[i] for i in sorted(errors)]

    def _merge(self, report: UpsampleReport, plan: _Plan, done, errors, stops) -> UpsampleReport:
        """The report one process would have written, from this rank's records and every part file."""
        units = {plan.keys[i] or _unit(self.run_id, self.files[i]): i for i in plan.todo}
        theirs_done, theirs_errors = self.store.this_runs_records(self.run_id, units)
        done = {**theirs_done, **done}
        errors = {i: e for i, e in {**theirs_errors, **errors}.items() if i not in done}
        self._assemble(report, done, errors)
        fatal = next((f for f, _ in stops if f), None)
        mine = _mine(done)
        report.exit_code = report.exit_code_for(mine, fatal)
        if fatal:
            report.stopped = fatal
        elif any(r for _, r in stops):
            report.stopped = STOPPED_ON_REQUEST
            log.info("%s", STOPPED_ON_REQUEST)
        if self.store.save(report, mine):
            self.store.clear_parts()  # their results are in report.json now
        else:  # the part files keep this run's results for the next one, but this run could not record them
            report.exit_code = EXIT_ERROR
        return report


class _FolderOnMain:
    """Rank 0 makes ``OUT`` and holds its lock for the run; a problem there is given to every rank."""

    def __init__(self, ranks, out_dir: Path):
        self.ranks, self.out_dir, self.lock = ranks, out_dir, None

    def __enter__(self) -> Optional[str]:
        if not self.ranks.main:
            return None
        try:
            make_out_dir(self.out_dir)
            self.lock = run_lock(self.out_dir)
            self.lock.__enter__()
        except PulseError as exc:
            self.lock = None
            if not self.ranks.sharded:
                raise
            return str(exc)
        return None

    def __exit__(self, *exc):
        if self.lock is not None:
            return self.lock.__exit__(*exc)
        return False


def _mine(done: Dict[int, List[ResultEntry]]) -> List[ResultEntry]:
    return [e for i in sorted(done) for e in done[i]]


def _input_key(path: Path, run_id: str) -> Optional[str]:
    """The resume key: the run's settings and the input's bytes."""
    try:
        return digest([run_id, sha256_file(path)[:16]]) if path.is_file() else None
    except OSError:
        return None


def _bytes_key(data: bytes, run_id: str) -> str:
    """:func:`_input_key` of bytes already read."""
    return digest([run_id, hashlib.sha256(data).hexdigest()[:16]])


def _unit(run_id: str, path: Path) -> str:
    """The part-file unit of an input without a key (one that cannot be read)."""
    return digest([run_id, str(path)])


# ---------------------------------------------------------------------------
# Outputs


def _save_intermediate(out_dir: Path, stem: str, samples: int, step: int, hr, lo) -> None:
    if step == 0:  # real folders under OUT, never a planted link to somewhere else
        real_dir(out_dir / stem / "HR", out_dir)
        real_dir(out_dir / stem / "LR", out_dir)
    for k, tag in enumerate(sample_tags(samples)):
        save_image(hr[k], out_dir / stem / "HR" / f"{stem}{tag}_{step:04d}.png")
        save_image(lo[k], out_dir / stem / "LR" / f"{stem}{tag}_{step:04d}.png")


def _write_outputs(run: _Run, path: Path, item: PreparedInput, res, key: Optional[str],
                   stopped: bool) -> List[ResultEntry]:
    """The PNGs of one search, with provenance, and its report entries (which keep the tensors)."""
    out_dir, stem, samples = run.out_dir, item.name, run.job.samples
    measured = Measurement.of(item.operator, item.lr[None])
    spec = _spec(res.operator)
    shown = _shown(res.operator)
    entries = []
    for k, tag in enumerate(sample_tags(samples)):
        text = _provenance(run.model, shown, res.seeds[k], res.eps)
        residual = residual_map(res.downscaled[k], item.lr)
        hr_path = save_image(res.images[k], out_dir / f"{stem}{tag}.png", text=text)
        lr_path = save_image(res.downscaled[k], out_dir / f"{stem}{tag}_lr.png", text=text)
        res_path = save_image(enlarge(residual), out_dir / f"{stem}{tag}_residual.png", text=text)
        entry = ResultEntry(
            input=str(path), output=hr_path.name, downscaled=lr_path.name, residual=res_path.name,
            success=bool(res.success[k]), best_l2=float(res.best_l2[k]), eps=res.eps,
            operator=res.operator.describe(), spec=spec, lr_error=measured.certificate(res.downscaled[k]),
            best_step=int(res.best_step[k]), seconds=round(res.seconds / samples, 3),
            steps=res.sample_steps[k] if res.sample_steps else res.steps_taken,
            stage=res.stages[k] if res.stages else "w+", passes=res.passes[k] if res.passes else None,
            seed=res.seeds[k], run=run.run_id, key=key, stopped=bool(stopped),
            images={"image": res.images[k], "downscaled": res.downscaled[k], "input": item.lr,
                    "residual": residual})
        entries.append(entry)
        if not entry.success:
            log.info("%s%s: no image found within eps=%s (best L2 %.2e); written anyway and marked success=false",
                     stem, tag, res.eps, entry.best_l2)
    _add_trust(run, item, res, entries)
    if samples > 1:
        # Where the K results disagree: what the input leaves to the generator.
        spread = res.images.std(0).mean(0)
        spread_img = heat_map(spread / max(float(spread.max()), 1e-6))
        save_image(spread_img, out_dir / f"{stem}_spread.png", text=_provenance(run.model, shown, res.seeds[0], res.eps))
        for e in entries:
            e.spread = f"{stem}_spread.png"
            e.images["spread"] = spread_img
    log.info("%s: operator %s", stem, shown)
    return entries


def _add_trust(run: _Run, item: PreparedInput, res, entries: List[ResultEntry]) -> None:
    """The trust object of each entry (the out-of-domain p-value, identity with K >= 2) and its verdict."""
    domain = run.job.domain
    fields: dict = {}
    if domain != "off":
        try:
            fields.update(trust.domain_fields(run.model, res.operator, item.lr, force=domain == "strict") or {})
        except (RuntimeError, ValueError) as exc:  # a test that cannot be calibrated never costs the result
            log.warning("%s: out-of-domain test not run: %s", item.name, exc)
    fields.update(trust.identity_fields(run.model, res.images) or {})
    for e in entries:
        e.trust = dict(fields) if fields else None
        e.verdict = trust.verdict(e.success, e.trust, domain)
    for line in trust.summary([e.trust for e in entries], len(entries)):
        log.info("%s: %s", item.name, line)


def _spec(op) -> Optional[str]:
    try:
        return op.spec()
    except OperatorSpecError:
        return None


def _shown(op) -> str:
    """The operator as logs and PNG text show it: its spec, else its key."""
    return _spec(op) or op.key()


def _provenance(model, spec: str, seed: int, eps: float) -> dict:
    return {"Software": "pulse-sr (PULSE, Menon et al. 2020)",
            "Description": "Synthesised by PULSE. This is an imaginary face made to match the input; it is not "
                           "the person in the input and must not be used to identify anyone.",
            "pulse:model": model.source, "pulse:operator": spec, "pulse:seed": str(seed), "pulse:eps": f"{eps:g}"}
