"""``pulse upsample`` as library code: run the search over image files and write the outputs.

For every input: ``<name>.png`` (or ``<name>_<k>.png`` with several samples) and
``<name>_lr.png`` (``<name>_<k>_lr.png``), the downscale of each result, plus an
entry in ``report.json``. ``<name>`` is the input's stem, made unique over the
whole input list (see :func:`plan_names`); with ``align`` each face adds
``_face<k>``. A bad input is recorded and skipped.

What a run never does, and why:

* write over an input: ``out_dir`` may not be a folder that holds inputs;
* lose finished work: ``report.json`` is rewritten (atomically) after every
  input, and a run into the same folder with the same settings and seed skips
  the inputs already done, so an interrupted run resumes;
* share a folder with a live run: ``out_dir/.pulse.lock`` is held (``flock``)
  for the whole run, and the kernel drops it when a run dies;
* leave a truncated image: every image is written to a temporary name and
  renamed into place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import os
import re
import secrets
import socket
from functools import partial
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

from ..errors import EXIT_ERROR, InputImageError, InputSizeError, PulseError, exit_code
from ..hub.download import sha256_file
from ..images import enlarge, heat_map, load_rgb, pil_to_tensor, residual_map, save_image
from ..ops.operators import auto_operator, parse_operator, spec_text
from ..runtime import tune
from ..search import PulseOptions, upsample
from .shards import PartLog, Ranks, clear_parts, digest, interrupted, read_parts, split

IMAGINARY_NOTE = ("Outputs are imaginary faces generated to match the input; they do not recover "
                  "the real person and must not be used for identification.")
REPORT = "report.json"
LOCK = ".pulse.lock"
REPORT_FORMAT = 2

# Write errors after which no later input can be written either: stop the batch.
_FATAL_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}

# progress(name, step, steps, info) after every search step; info as in pulse_sr.upsample.
FileProgress = Callable[[str, int, int, dict], None]


class OutputFolderError(PulseError):
    """``--out`` cannot be used: it holds the inputs, is a file, is not writable, or a live run holds it."""


# ---------------------------------------------------------------------------
# Names


def _tags(samples: int) -> List[str]:
    """The per-sample part of output names: ``_0``, ``_1``, ... or nothing for one sample."""
    return [f"_{k}" for k in range(samples)] if samples > 1 else [""]


def _outputs(name: str, samples: int) -> List[str]:
    files = [f"{name}{t}{suffix}.png" for t in _tags(samples) for suffix in ("", "_lr", "_residual")]
    return files + ([f"{name}_spread.png"] if samples > 1 else [])


def plan_names(files: Sequence[Path], samples: int = 1, align: bool = False) -> Dict[Path, str]:
    """A unique output name for every input, decided from the whole list in order.

    The stem is used when the files it leads to (``<stem>.png``, ``<stem>_lr.png``,
    per sample, or ``<stem>_face<k>...`` with ``align``) collide with no other
    input's; otherwise the extension is added (``a_bmp``), then a counter.
    So ``a.png`` + ``a.bmp`` give ``a`` and ``a_bmp``, and ``b.png`` + ``b_lr.png``
    give ``b`` and ``b_lr_png`` (``b_lr.png`` is ``b``'s downscale).
    """
    claimed: List[tuple] = []  # (pattern, examples) of every name given so far
    names: Dict[Path, str] = {}

    def claim(name: str) -> tuple:
        if not align:
            files = _outputs(name, samples)
            return re.compile("|".join(map(re.escape, files)) + "$"), files
        # Face indices are not known before detection: claim the whole family of names.
        tag = r"(_\d+)?" if samples > 1 else ""
        pattern = re.compile(rf"{re.escape(name)}_face\d+({tag}(_lr|_residual)?|_spread)\.png$")
        examples = [f"{name}_face{i}{t}{lr}.png" for i in (0, 1, 10) for t in _tags(min(samples, 2))
                    for lr in ("", "_lr", "_residual")] + [f"{name}_face{i}_spread.png" for i in (0, 1, 10)]
        return pattern, examples

    def clashes(name: str) -> bool:
        pattern, examples = claim(name)
        return any(pattern.match(f) for _, other in claimed for f in other) or \
            any(other.match(f) for other, _ in claimed for f in examples)

    for path in files:
        if path in names:
            continue
        stem, ext = path.stem, path.suffix.lstrip(".").lower()
        candidates = [stem, f"{stem}_{ext}" if ext else f"{stem}_"]
        candidates += [f"{stem}_{ext}_{i}" for i in range(2, 10_000)]
        name = next(c for c in candidates if not clashes(c))
        names[path] = name
        claimed.append(claim(name))
    return names


# ---------------------------------------------------------------------------
# The output folder: checks, lock and report


def check_out_dir(out_dir: Path, files: Sequence[Path]) -> None:
    """Refuse an ``out_dir`` that is a file, or that holds any of the inputs."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputFolderError(f"--out {out_dir} is a file, not a folder; choose a folder for the results")
    out = out_dir.resolve()
    for f in files:
        try:
            if f.resolve().parent == out:
                raise OutputFolderError(f"--out {out_dir} holds the inputs (e.g. {f}); the results would overwrite "
                                        f"or mix with them: choose another folder")
        except OSError:
            continue


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
    path = out_dir / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
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


def _settings(model, opts: PulseOptions, samples: int, lr_size: Optional[int], align: bool, seed: int,
              operator: Optional[str] = None, noise_sigma: float = 0.0) -> dict:
    return {"model": model.source, "resolution": model.resolution, "options": opts.to_dict(),
            "samples": samples, "lr_size": lr_size, "align": align, "seed": seed, "operator": operator,
            "noise_sigma": noise_sigma}


def read_report(out_dir: Path) -> dict:
    """The report of earlier runs in ``out_dir``; {} if there is none or it is unreadable."""
    try:
        rep = json.loads((out_dir / REPORT).read_text())
        return rep if isinstance(rep, dict) and isinstance(rep.get("results"), list) else {}
    except (OSError, ValueError):
        return {}


def write_report(report: dict, path: Path) -> None:
    """``report.json``, strict JSON with one line per result, replaced atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    dump = partial(json.dumps, allow_nan=False)
    try:
        with open(tmp, "w") as f:
            f.write("{\n")
            for key in ("format", "model", "resolution", "options", "samples", "lr_size", "align", "seed",
                        "operator", "noise_sigma", "note",
                        "exit_code", "run", "runs", *[k for k in ("stopped", "interrupted") if k in report]):
                f.write(f"  {dump(key)}: {dump(report[key])},\n")
            f.write('  "errors": [' + ",".join("\n    " + dump(e) for e in report["errors"]) + "],\n")
            f.write('  "results": [' + ",".join("\n    " + dump(r) for r in report["results"]) + "\n  ]\n}\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------
# One input


def prepare_lr(path: Path, name: str, model, lr_size: Optional[int], align: bool,
               notes: Optional[List[str]] = None, operator: Optional[str] = None) -> List[tuple]:
    """Return [(output name, lr_tensor, forward operator)] for one input file (several with
    ``align``, one per face). With ``align`` (True or "warp") a LR photo's own pixels around each
    face are the measurement, through the warp into the model's frame; ``align="resample"`` (or
    faces as large as the model's frame) aligns and downscales each face first. Without an ``operator`` spec the operator is detected from the
    input: a mosaic gets ``box``, a grayscale input ``gray``, the rest ``bicubic`` or ``resize``."""
    img = load_rgb(path, notes)
    if align:
        if align != "resample" and operator is None and lr_size is None:
            faces = _faces_in_the_photo(path, img, name, model, notes)
            if faces is not None:
                return faces
        from ..align import align_photo_for_model
        crops = align_photo_for_model(img, model, lr_size)
        if not crops:
            raise InputImageError(f"{path}: no face found")
        faces = [pil_to_tensor(lr) for _, lr in crops]
        return [(f"{name}_face{k}", x, _operator_for(path, x, model, operator)) for k, x in enumerate(faces)]
    if lr_size is not None and img.size != (lr_size, lr_size):
        from PIL import Image
        img = img.resize((lr_size, lr_size), Image.BICUBIC)
    x = pil_to_tensor(img)
    return [(name, x, _operator_for(path, x, model, operator))]


def _faces_in_the_photo(path: Path, img, name: str, model, notes: Optional[List[str]]) -> Optional[List[tuple]]:
    """With ``--align``: the photo's own pixels around each face, measured through the warp into the
    model's frame (ops.operators.Warp), so nothing is resampled before the search. None (and a note)
    when the faces are as large as the model's frame or larger, or the model's crop is FFHQ's: then
    the faces are aligned and downscaled as before."""
    import numpy as np

    from ..align.crops import face_frames
    from ..ops.operators import Compose, Warp

    frames = face_frames(img, model)
    if frames is None:
        return None
    if not frames:
        raise InputImageError(f"{path}: no face found")
    R = model.resolution
    out = []
    for k, M in enumerate(frames):
        scale = math.sqrt(abs(np.linalg.det(M[:, :2])))  # model pixels per photo pixel
        if scale < 1:
            if notes is not None:
                notes.append(f"{path}: face {k} spans {R / scale:.0f} px, more than the model's {R}: aligned and "
                             f"downscaled to the model's frame first")
            return None
        A = np.linalg.inv(M[:, :2])
        corners = (np.array([[0, 0], [R, 0], [0, R], [R, R]], dtype=np.float64) - M[:, 2]) @ A.T
        x0, y0 = np.floor(corners.min(0)).astype(int)
        x1, y1 = np.ceil(corners.max(0)).astype(int)
        x0, y0 = max(0, int(x0)), max(0, int(y0))
        x1, y1 = min(img.size[0], int(x1)), min(img.size[1], int(y1))
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        y = pil_to_tensor(img.crop((x0, y0, x1, y1)))
        out.append((f"{name}_face{k}", y, Compose([Warp(M, (x0, y0, x1 - x0, y1 - y0), R)])))
    if not out:
        raise InputImageError(f"{path}: the faces' frames fall outside the photo")
    return out


def _operator_for(path: Path, x, model, spec: Optional[str]):
    try:
        if spec is None:
            return auto_operator(x, model.resolution)
        return parse_operator(spec, tuple(x.shape[-2:]), model.resolution)
    except PulseError as exc:
        raise type(exc)(f"{path}: {exc}") from None


def _save_intermediate(out_dir: Path, stem: str, samples: int, step: int, hr, lo) -> None:
    for k, tag in enumerate(_tags(samples)):
        save_image(hr[k], out_dir / stem / "HR" / f"{stem}{tag}_{step:04d}.png")
        save_image(lo[k], out_dir / stem / "LR" / f"{stem}{tag}_{step:04d}.png")


def _done_before(previous: dict, key: str, out_dir: Path) -> Optional[List[dict]]:
    """The earlier results of the input with ``key``, if they are all there and their files exist."""
    entries = [r for r in previous.get("results", []) if r.get("key") == key]
    if entries and all((out_dir / r["output"]).is_file() and (out_dir / r["downscaled"]).is_file()
                       and not r.get("stopped") for r in entries):
        return entries
    return None


# ---------------------------------------------------------------------------
# The run


def upsample_files(files: List[Path], model, out_dir: Path, opts: PulseOptions, samples: int = 1,
                   seed: Optional[int] = None, lr_size: Optional[int] = None, align: bool = False,
                   device=None, save_intermediate: bool = False, progress: Optional[FileProgress] = None,
                   log: Callable[[str], None] = print, ranks: Optional[Ranks] = None,
                   stop: Optional[Callable[[], bool]] = None, operator: Optional[str] = None,
                   noise_sigma: float = 0.0) -> dict:
    """Search every file with ``model`` (a :class:`pulse_sr.PulseModel`); write images and
    ``report.json`` as it goes; return the report as a dict.

    With ``seed`` unset, a run into a folder whose report has the same settings
    takes that run's seed (and so resumes it); otherwise one seed is drawn for
    the run and recorded. Raises :class:`OutputFolderError` for an unusable
    ``out_dir`` and InputSizeError for an ``lr_size`` the model cannot take.

    ``operator`` is a forward-model spec for every input (see
    :mod:`pulse_sr.ops.operators`); unset, each input's is detected. With
    ``noise_sigma`` σ (0–255 scale) the inputs are taken to carry Gaussian noise
    of that σ, and eps grows by its expected mean square, (σ/255)².

    ``stop()`` is asked after every search step: when it says True, the search in
    progress ends with its best so far (written as usual) and no further input
    starts; the report says ``stopped``.

    With ``ranks`` from :func:`pulse_sr.pipelines.shards.session` under
    ``torchrun``, each rank searches its share of the inputs (each input keeps
    the seed and the batch it has in one process, so its results do not depend
    on the number of ranks) and rank 0 merges the ranks' part files into the
    ``report.json`` one process would write, and returns it; the other ranks
    return only their own part.
    """
    out_dir = Path(out_dir)
    ranks = ranks or Ranks()
    check_out_dir(out_dir, files)
    if lr_size is not None and not 1 <= lr_size <= model.resolution:
        raise InputSizeError(f"--lr-size {lr_size}: LR sizes go from 1 to the model's {model.resolution} px")
    if not (math.isfinite(noise_sigma) and 0 <= noise_sigma <= 255):
        raise ValueError(f"noise_sigma must be in [0, 255], got {noise_sigma}")
    if ranks.sharded:
        return _run_sharded(files, model, out_dir, opts, samples, seed, lr_size, align, device, save_intermediate,
                            progress, log, ranks, operator, noise_sigma)
    _make_out_dir(out_dir)
    with run_lock(out_dir):
        return _run(files, model, out_dir, opts, samples, seed, lr_size, align, device, save_intermediate,
                    progress, log, stop, operator, noise_sigma)


def _make_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputFolderError(f"cannot create {out_dir} ({exc.strerror or exc})") from None


def read_previous(out_dir: Path) -> dict:
    """What earlier runs left in ``out_dir``: ``report.json`` with the results and run
    settings recorded in part files (by ranks of a sharded run) folded in, newest last."""
    previous = read_report(out_dir)
    parts = read_parts(out_dir)
    if not parts:
        return previous
    runs, run = dict(previous.get("runs", {})), previous.get("run")
    from_parts: Dict[str, List[dict]] = {}
    for r in parts:
        if r.get("event") == "run" and isinstance(r.get("settings"), dict):
            runs[r["run"]], run = r["settings"], r["run"]
        elif r.get("event") == "done" and isinstance(r.get("results"), list):
            from_parts[r["unit"]] = r["results"]
    results = [r for r in previous.get("results", []) if r.get("key") not in from_parts]
    results += [e for entries in from_parts.values() for e in entries]
    return {**previous, "runs": runs, "run": run, "results": results}


def _choose_seed(previous: dict, seed, model, opts, samples, lr_size, align, out_dir, log, operator=None,
                 noise_sigma=0.0) -> int:
    if seed is not None:
        return seed
    earlier = previous.get("runs", {}).get(previous.get("run") or "", {})
    if earlier and {**earlier, "seed": None} == _settings(model, opts, samples, lr_size, align, None, operator, noise_sigma):
        log(f"resuming the run in {out_dir / REPORT} with its seed {earlier['seed']}")
        return int(earlier["seed"])
    return secrets.randbelow(2 ** 31)


def _new_report(previous: dict, settings: dict, run_id: str, files: Sequence[Path]) -> dict:
    inputs = {str(f) for f in files}
    # Results of inputs this run does not touch stay, with the settings of the run that made them.
    kept = [r for r in previous.get("results", []) if r.get("input") not in inputs]
    runs = {k: v for k, v in previous.get("runs", {}).items()
            if isinstance(v, dict) and any(r.get("run") == k for r in kept)}
    return {"format": REPORT_FORMAT, **settings, "note": IMAGINARY_NOTE, "exit_code": None, "run": run_id,
            "runs": {**runs, run_id: settings}, "results": kept, "errors": []}


def _input_key(path: Path, run_id: str) -> Optional[str]:
    try:
        return digest([run_id, sha256_file(path)[:16]]) if path.is_file() else None
    except OSError:
        return None


def _report_interrupted(parts_before: List[dict], units: set, log) -> List[dict]:
    """Log, and return for the report, the units of this run that a rank died on earlier."""
    found = [r for r in interrupted(parts_before) if r.get("unit") in units]
    for r in found:
        log(f"{r.get('input')}: rank {r.get('rank')} of {r.get('world')} stopped while running it in an "
            f"earlier run (pid {r.get('pid')}); running it again")
    return [{"input": r.get("input"), "rank": r.get("rank"), "world": r.get("world")} for r in found]


def _run(files, model, out_dir, opts, samples, seed, lr_size, align, device, save_intermediate, progress, log,
         stop=None, operator=None, noise_sigma=0.0):
    parts_before = read_parts(out_dir)
    previous = read_previous(out_dir)
    seed = _choose_seed(previous, seed, model, opts, samples, lr_size, align, out_dir, log, operator,
                                    noise_sigma)
    settings = _settings(model, opts, samples, lr_size, align, seed, operator, noise_sigma)
    run_id = digest(settings)
    names = plan_names(files, samples, align)
    report = _new_report(previous, settings, run_id, files)
    report_path = out_dir / REPORT
    keys = {path: _input_key(path, run_id) for path in files}
    lost = _report_interrupted(parts_before, set(keys.values()), log)
    if lost:
        report["interrupted"] = lost

    dev = tune(device)
    model = model.to(dev)
    stopped = None
    mine: List[dict] = []
    for path in files:
        key = keys[path]
        done = _done_before(previous, key, out_dir) if key else None
        if done is not None:
            log(f"{path}: done in an earlier run with the same settings and seed; kept")
            mine += done
            report["results"] += done
            continue
        entries, error, fatal = _one_input(path, names[path], key, model, opts, samples, seed, lr_size, align,
                                           run_id, out_dir, save_intermediate, progress, log, stop, operator,
                                           noise_sigma)
        if error is not None:
            report["errors"].append(error)
            if fatal:
                stopped = fatal
                break
            continue
        mine += entries
        report["results"] += entries
        _save_report(report, report_path, mine, log)
        if stop is not None and stop():
            report["stopped"] = "stopped on request; the search in progress kept its best so far"
            break
    report["exit_code"] = _exit_code(report, mine, stopped)
    if stopped:
        report["stopped"] = stopped
        log(f"error: {stopped}")
    elif "stopped" in report:
        log(report["stopped"])
    if _save_report(report, report_path, mine, log) and parts_before:
        clear_parts(out_dir)  # their results are in report.json now
    return report


def _one_input(path, name, key, model, opts, samples, seed, lr_size, align, run_id, out_dir, save_intermediate,
               progress, log, stop=None, operator=None, noise_sigma=0.0):
    """Search one input file; returns (entries, error entry or None, why the batch must stop or None)."""
    notes: List[str] = []
    try:
        items = prepare_lr(path, name, model, lr_size, align, notes, operator)
    except PulseError as exc:  # unreadable, wrong size, no face, no template...
        log(f"error: {exc}")
        return [], {"input": str(path), "error": str(exc)}, None
    finally:
        for line in notes:
            log(line)
    entries = []
    try:
        for stem, lr, op in items:
            entries += _search_one(path, stem, lr, op, model, opts, samples, seed, key, run_id, out_dir,
                                   save_intermediate, progress, log, stop, noise_sigma)
            if stop is not None and stop():
                break
    except OSError as exc:
        log(f"error: {path}: cannot write the results to {out_dir} ({exc.strerror or exc})")
        fatal = None
        if exc.errno in _FATAL_WRITE_ERRORS:
            fatal = f"{out_dir} is not writable ({exc.strerror or exc}); stopped before the remaining inputs"
        return [], {"input": str(path), "error": f"cannot write: {exc.strerror or exc}"}, fatal
    return entries, None, None


def _run_sharded(files, model, out_dir, opts, samples, seed, lr_size, align, device, save_intermediate, progress,
                 log, ranks: Ranks, operator=None, noise_sigma=0.0):
    """One rank's part of a sharded run (see :func:`upsample_files`)."""
    with contextlib.ExitStack() as stack:
        plan = None
        if ranks.main:
            try:
                _make_out_dir(out_dir)
                stack.enter_context(run_lock(out_dir))
                parts_before = read_parts(out_dir)
                previous = read_previous(out_dir)
                seed = _choose_seed(previous, seed, model, opts, samples, lr_size, align, out_dir, log, operator,
                                    noise_sigma)
                run_id = digest(_settings(model, opts, samples, lr_size, align, seed, operator, noise_sigma))
                keys = [_input_key(path, run_id) for path in files]
                todo = [i for i, (path, key) in enumerate(zip(files, keys))
                        if not (key and _done_before(previous, key, out_dir) is not None)]
                lost = _report_interrupted(parts_before, {keys[i] for i in todo}, log)
                log(f"{len(files)} inputs: {len(files) - len(todo)} done in an earlier run, {len(todo)} to run "
                    f"on {ranks.world} ranks")
                plan = {"seed": seed, "keys": keys, "todo": todo, "lost": lost}
            except PulseError as exc:
                plan = {"error": str(exc)}
        plan = ranks.broadcast(plan)
        if "error" in plan:
            raise OutputFolderError(plan["error"])
        seed, keys = plan["seed"], plan["keys"]
        settings = _settings(model, opts, samples, lr_size, align, seed, operator, noise_sigma)
        run_id = digest(settings)
        names = plan_names(files, samples, align)
        dev = tune(device)
        model = model.to(dev)
        stopped = None
        mine: List[dict] = []
        errors: List[dict] = []
        with PartLog(out_dir, ranks) as part:
            if ranks.main:
                part.write({"event": "run", "run": run_id, "settings": settings})
            for i in split(plan["todo"], ranks):
                path, key = files[i], keys[i]
                unit = key or digest([run_id, str(path)])
                part.write({"event": "start", "unit": unit, "input": str(path), "rank": ranks.rank,
                            "world": ranks.world, "pid": os.getpid()})
                entries, error, fatal = _one_input(path, names[path], key, model, opts, samples, seed, lr_size,
                                                   align, run_id, out_dir, save_intermediate, progress, log,
                                                   None, operator, noise_sigma)
                if error is not None:
                    errors.append(error)
                    part.write({"event": "error", "unit": unit, "input": str(path), "run": run_id, **error})
                    if fatal:
                        stopped = fatal
                        log(f"error: {stopped}")
                        break
                    continue
                mine += entries
                part.write({"event": "done", "unit": unit, "input": str(path), "results": entries})
        stopped_all = [s for s in ranks.gather(stopped) if s]
        if not ranks.main:
            return {"rank": ranks.rank, "world": ranks.world, "results": mine, "errors": errors,
                    "exit_code": None}
        return _merge(files, out_dir, keys, run_id, settings, plan["lost"], stopped_all, log)


def _merge(files, out_dir, keys, run_id, settings, lost, stopped_all, log) -> dict:
    """Rank 0: the report one process would have written, from report.json and every rank's part file."""
    parts = read_parts(out_dir)
    previous = read_previous(out_dir)
    report = _new_report(previous, settings, run_id, files)
    errors = {r["unit"]: {k: r[k] for k in ("input", "error")} for r in parts
              if r.get("event") == "error" and r.get("run") == run_id}
    mine: List[dict] = []
    for path, key in zip(files, keys):
        done = _done_before(previous, key, out_dir) if key else None
        if done is not None:
            mine += done
            report["results"] += done
        else:
            error = errors.get(key or digest([run_id, str(path)]))
            if error is not None:
                report["errors"].append(error)
    if lost:
        report["interrupted"] = lost
    stopped = stopped_all[0] if stopped_all else None
    report["exit_code"] = _exit_code(report, mine, stopped)
    if stopped:
        report["stopped"] = stopped
    if _save_report(report, out_dir / REPORT, mine, log):
        clear_parts(out_dir)
    return report


def _exit_code(report: dict, mine: List[dict], stopped: Optional[str] = None) -> int:
    """This run's exit code: its own inputs' errors and results, not earlier runs' kept in the report."""
    if stopped:
        return EXIT_ERROR
    return exit_code(bad_input=bool(report["errors"]), not_found=any(not r["success"] for r in mine))


def _save_report(report: dict, path: Path, mine: List[dict], log) -> bool:
    if report["exit_code"] is None:  # in progress: what a reader sees if the run dies now
        report = {**report, "exit_code": _exit_code(report, mine)}
    try:
        write_report(report, path)
        return True
    except OSError as exc:
        log(f"error: cannot write {path} ({exc.strerror or exc})")
        return False


def _search_one(path, stem, lr, op, model, opts, samples, seed, key, run_id, out_dir, save_intermediate, progress,
                log, stop=None, noise_sigma=0.0) -> List[dict]:
    callback = partial(_save_intermediate, out_dir, stem, samples) if save_intermediate else None
    step_progress = partial(progress, stem) if progress is not None else None
    if noise_sigma:  # noise-aware eps: its expected extra mean square residual
        opts = dataclasses.replace(opts, eps=opts.eps + (noise_sigma / 255) ** 2)
    res = upsample(lr, model, opts, samples=samples, seed=seed, progress=step_progress, callback=callback, stop=stop,
                   operator=op)
    stopped = stop is not None and res.steps_taken < opts.steps and stop()
    for w in res.warnings:
        log(f"warning: {w}")
    entries = []
    spec = spec_text(res.operator)
    for k, tag in enumerate(_tags(samples)):
        text = _provenance(model, spec, res.seeds[k], res.eps)
        hr_path = save_image(res.images[k], out_dir / f"{stem}{tag}.png", text=text)
        lr_path = save_image(res.downscaled[k], out_dir / f"{stem}{tag}_lr.png", text=text)
        res_path = save_image(enlarge(residual_map(res.downscaled[k], lr)),
                              out_dir / f"{stem}{tag}_residual.png", text=text)
        entry = {"input": str(path), "output": hr_path.name, "downscaled": lr_path.name, "residual": res_path.name,
                 "success": bool(res.success[k]), "best_l2": float(res.best_l2[k]),
                 "eps": res.eps, "operator": res.operator, "lr_error": certificate(res.downscaled[k], lr, op.weight),
                 "best_step": int(res.best_step[k]), "steps": res.steps_taken,
                 "seconds": round(res.seconds / samples, 3), "seed": res.seeds[k], "run": run_id, "key": key}
        if stopped:
            entry["stopped"] = True  # cut short on request: a rerun does it again
        entries.append(entry)
        if not entry["success"]:
            log(f"{stem}{tag}: no image found within eps={res.eps} (best L2 {entry['best_l2']:.2e}); "
                f"written anyway and marked success=false")
    if samples > 1:
        # Where the K results disagree: what the input leaves to the generator.
        spread = res.images.std(0).mean(0)
        save_image(heat_map(spread / max(float(spread.max()), 1e-6)), out_dir / f"{stem}_spread.png",
                   text=_provenance(model, spec, res.seeds[0], res.eps))
        for e in entries:
            e["spread"] = f"{stem}_spread.png"
    log(f"{stem}: operator {spec}")
    return entries


def _provenance(model, spec: str, seed: int, eps: float) -> dict:
    return {"Software": "pulse-sr (PULSE, Menon et al. 2020)",
            "Description": "Synthesised by PULSE. This is an imaginary face made to match the input; it is not "
                           "the person in the input and must not be used to identify anyone.",
            "pulse:model": model.source, "pulse:operator": spec, "pulse:seed": str(seed), "pulse:eps": f"{eps:g}"}


def certificate(downscaled, lr, weight=None) -> dict:
    """How far A(x) is from the input y: the search's MSE, and RMSE and PSNR (dB) per channel."""
    import torch

    err = (downscaled.double() - lr.double()).square()
    if weight is not None:
        w = weight[0].double()
        per_channel = (err * w).sum((1, 2)) / w.sum()
    else:
        per_channel = err.mean((1, 2))
    rmse = per_channel.sqrt()
    psnr = [round(float(10 * torch.log10(1 / v)), 3) if v > 0 else None for v in per_channel]
    return {"mse": float(per_channel.mean()), "rmse": [float(v) for v in rmse], "psnr": psnr}
