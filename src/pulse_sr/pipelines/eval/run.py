"""Running ``pulse eval``: the paper's experiments on a folder of HR images.

For each HR image (in the model's frame; resized to the model's resolution if it
is square but of another size) this makes the LR input with the exact bicubic
downscaler, runs PULSE ``runs`` times (seeds ``seed .. seed + runs - 1``, the
same for every image, so conditions are paired), optionally on degraded inputs,
and measures:

- success within eps, the downscaling L2, and search seconds per image;
- NIQE of HR, nearest, bicubic and PULSE (Table 2 of the paper);
- PSNR/SSIM against HR of nearest, bicubic and PULSE (Appendix C);
- for each degradation (Sec. 5), the L2 of DS(SR) to the *clean* LR and to the
  *degraded* input;
- success rates per group (Table 3 and the model card) from labels.

The work units are (image, condition, run): each is searched on its own (or
``--batch`` units together) with the seed it always has, so results do not
depend on how the units are split over ``torchrun`` processes. Each finished
unit is appended to a part file under ``.pulse-parts/`` at once, so an
interrupted run, at any number of processes, redoes only the missing units; a
unit run with other settings is recomputed. At the end the units become
``per_image/<file name>.json`` records, and ``results.json``, ``report.md`` and
figure grids under ``figures/`` are written from all per-image records.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import secrets
from pathlib import Path
from typing import Dict, List, Optional

import torch

from ...diagnostics import collect
from ...errors import InputImageError, InputSizeError, OutputFolderError, PulseError, exit_code
from ...images import expand_inputs, load_rgb, pil_to_tensor, save_image
from ...metrics.fidelity import psnr, ssim
from ...metrics.niqe import niqe
from ...ops.degrade import parse_degradations
from ...ops.resample import bicubic_downscale, check_lr_size, upscale_bicubic, upscale_nearest
from ...runtime import tune
from ...safe_paths import real_dir, write_text
from ...search import PulseOptions, upsample
from ...search.losses import l2_per_sample
from ..shards import FINISHED, PartLog, Ranks, clear_parts, digest, interrupted, read_parts, read_valid_parts, split
from .labels import load_labels
from .report import write_figures, write_report, write_results
from .settings import CLEAN, GRID_RUNS, EvalSettings, condition_eps, condition_seed, file_tag, signature
from .summary import summarize

log = logging.getLogger(__name__)


MIN_HR_SIDE = 8  # smaller "HR" images are not faces to evaluate (and at least the LR size)


def load_hr(path: Path, resolution: int, lr_size: int = 1):
    """(3, R, R) HR tensor for the model, and the original size if it had to be resized."""
    from PIL import Image

    img = load_rgb(path)
    least = max(MIN_HR_SIDE, lr_size)
    if min(img.size) < least:
        raise InputSizeError(f"{path}: {img.size[0]}×{img.size[1]} is too small for an HR face (at least "
                             f"{least}×{least}, the LR size of this scale)")
    if img.size == (resolution, resolution):
        return pil_to_tensor(img), None
    if img.size[0] != img.size[1]:
        raise InputSizeError(f"{path}: {img.size[0]}×{img.size[1]} is not square; eval needs HR images in "
                             f"the model's {resolution}×{resolution} frame (align and crop them first)")
    return pil_to_tensor(img.resize((resolution, resolution), Image.BICUBIC)), list(img.size)


def _niqe_or_none(x: torch.Tensor, enabled: bool, color: str) -> Optional[float]:
    return niqe(x, color=color) if enabled else None


def _image_part(hr, lr_clean, s, use_niqe, resized) -> dict:
    """What a record says of the image itself: NIQE of HR and PSNR/SSIM/NIQE of the baselines."""
    part = {"resized_from": resized, "hr": {"niqe": _niqe_or_none(hr, use_niqe, s.niqe_color)}}
    lo = lr_clean[None]
    for key, up in (("nearest", upscale_nearest(lo, s.scale)[0]), ("bicubic", upscale_bicubic(lo, s.scale)[0])):
        part[key] = {"niqe": _niqe_or_none(up, use_niqe, s.niqe_color),
                     "psnr": float(psnr(up, hr)), "ssim": float(ssim(up, hr))}
    return part


class _Images:
    """HR images by name, loaded once per rank and kept while their units run; load errors too."""

    def __init__(self, data_files: Dict[str, Path], s: EvalSettings, resolution: int):
        self.files, self.s, self.r = data_files, s, resolution
        self.cache: Dict[str, tuple] = {}

    def get(self, name: str):
        """(hr, clean LR, resized_from) or a PulseError."""
        if name not in self.cache:
            if len(self.cache) > 8:
                self.cache.pop(next(iter(self.cache)))
            try:
                hr, resized = load_hr(self.files[name], self.r, self.r // self.s.scale)
                self.cache[name] = (hr, bicubic_downscale(hr[None], self.s.scale)[0], resized)
            except PulseError as exc:
                self.cache[name] = exc
                log.error("%s", exc)
        return self.cache[name]


@dataclasses.dataclass
class _Eval:
    """What every search of one evaluation shares."""

    model: object
    opts: PulseOptions
    s: EvalSettings
    conds: dict            # condition name -> Degradation (None for clean)
    sig: dict              # the signature that keys records
    out_dir: Path
    grid_names: set        # images shown in the figure grids
    images: _Images


def _unit_input(cond, name: str, s: EvalSettings, hr, lr_clean):
    if cond is None:
        return lr_clean
    g = torch.Generator().manual_seed(condition_seed(s.seed, name, cond.name))
    if cond.stage == "hr":
        return bicubic_downscale(cond(hr[None], generator=g), s.scale)[0].clamp(0, 1)
    return cond(lr_clean[None], generator=g)[0]


def _search_units(ev: _Eval, units) -> List[dict]:
    """Search one batch of units (image, condition, run) together; return their ``done`` records."""
    s, conds = ev.s, ev.conds
    loaded = [(u, ev.images.get(u[0])) for u in units]
    loaded = [(u, im) for u, im in loaded if not isinstance(im, PulseError)]
    if not loaded:
        return []
    records = []
    # Units whose eps differs (noise-aware conditions) cannot share a search: one per eps, in order.
    for eps in dict.fromkeys(condition_eps(ev.opts.eps, conds[c], s.noise_aware) for (_, c, _), _ in loaded):
        group = [(u, im) for u, im in loaded if condition_eps(ev.opts.eps, conds[u[1]], s.noise_aware) == eps]
        records += _search_group(ev, dataclasses.replace(ev.opts, eps=eps), group)
    return records


def _search_group(ev: _Eval, opts: PulseOptions, loaded) -> List[dict]:
    s, conds, use_niqe, sig, out_dir, grid_names = ev.s, ev.conds, ev.sig["niqe"], ev.sig, ev.out_dir, ev.grid_names
    lr_in = torch.stack([_unit_input(conds[c], n, s, im[0], im[1]) for (n, c, k), im in loaded])
    res = upsample(lr_in, ev.model, opts, samples=1, seed=[s.seed + k for (_, _, k), _ in loaded])
    records = []
    for j, ((name, cname, k), (hr, lr_clean, resized)) in enumerate(loaded):
        sr, ds = res.images[j], res.downscaled[j]
        run = {"seed": res.seeds[j], "success": bool(res.success[j]), "best_l2": float(res.best_l2[j]), "eps": res.eps,
               "l2_clean": float(l2_per_sample(ds[None].double(), lr_clean[None].double())[0]),
               "l2_input": float(l2_per_sample(ds[None].double(), lr_in[j:j + 1].double())[0]),
               "steps": res.sample_steps[j] if res.sample_steps else res.steps_taken}
        if res.passes:  # the adaptive search: what it spent and the space its answer is in
            run["passes"], run["stage"] = res.passes[j], res.stages[j]
        data = {"run": run, "seconds": res.seconds / len(loaded)}
        if cname == CLEAN:
            run["psnr"], run["ssim"] = float(psnr(sr, hr)), float(ssim(sr, hr))
            run["niqe"] = _niqe_or_none(sr, use_niqe, s.niqe_color)
            if k == 0:
                data["image"] = _image_part(hr, lr_clean, s, use_niqe, resized)
        else:
            data["l2_input_to_clean"] = float(l2_per_sample(lr_in[j:j + 1].double(), lr_clean[None].double())[0])
        if name in grid_names:
            d = out_dir / "images" / name
            if k == 0:
                save_image(upscale_nearest(lr_in[j:j + 1], s.scale)[0], d / f"{file_tag(cname)}_input.png")
            if k < GRID_RUNS:
                save_image(sr, d / f"{file_tag(cname)}_run{k}.png")
            if cname == CLEAN and k == 0:
                save_image(hr, d / "hr.png")
                save_image(upscale_bicubic(lr_clean[None], s.scale)[0], d / "bicubic.png")
        records.append({"event": "done", "unit": _unit_id(sig, name, cname, k), "file": name,
                        "condition": cname, "k": k, "data": data})
    return records


def _unit_id(sig: dict, name: str, cname: str, k: int) -> str:
    return f"{digest(sig)}|{name}|{cname}|{k}"


def _assemble(name: str, sig: dict, conditions: List[str], runs: int, done: Dict[str, dict]) -> Optional[dict]:
    """The per-image record from its units' data, or None while any unit is missing."""
    units = {(c, k): done.get(_unit_id(sig, name, c, k)) for c in conditions for k in range(runs)}
    if any(u is None for u in units.values()) or "image" not in units[(CLEAN, 0)]:
        return None
    rec = {"file": name, "signature": sig, **units[(CLEAN, 0)]["image"], "conditions": {}}
    for c in conditions:
        mine = [units[(c, k)] for k in range(runs)]
        entry = {"runs": [u["run"] for u in mine], "seconds": sum(u["seconds"] for u in mine),
                 "steps": max(u["run"]["steps"] for u in mine)}
        if c != CLEAN:
            entry["l2_input_to_clean"] = mine[0]["l2_input_to_clean"]
        rec["conditions"][c] = entry
    return rec


def record_path(out_dir: Path, name: str) -> Path:
    """Where an image's record lives: keyed by its file name (the path relative to DATA_DIR),
    so ``a.png`` and ``a.jpg`` get one each."""
    return Path(out_dir) / "per_image" / f"{name}.json"


def _read_record(out_dir: Path, name: str, sig: dict) -> Optional[dict]:
    path = record_path(out_dir, name)
    if path.is_file():
        try:
            rec = json.loads(path.read_text())
            if rec.get("signature") == sig:
                return rec
        except (OSError, ValueError):
            pass  # unreadable or stale: redo it
    return None


def _write_record(out_dir: Path, rec: dict) -> None:
    # Atomic and never through a planted link: a crash never leaves a half-written record.
    write_text(record_path(out_dir, rec["file"]), json.dumps(rec, indent=1, allow_nan=False))


def _finite(*values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def _valid_record(r) -> bool:
    """An eval part record with every field the merge reads, of the right types, all numbers finite."""
    if not isinstance(r, dict):
        return False
    event = r.get("event")
    if event == "finished":
        return isinstance(r.get("run"), str) and isinstance(r.get("rank"), int)
    if not isinstance(r.get("unit"), str):
        return False
    if event == "start":
        return True
    if event == "finished":
        return isinstance(r.get("run"), str) and isinstance(r.get("rank"), int)
    if event == "error":
        return all(isinstance(r.get(k), str) for k in ("file", "token", "error"))
    if event != "done" or not (isinstance(r.get("file"), str) and isinstance(r.get("condition"), str)
                               and isinstance(r.get("k"), int) and isinstance(r.get("data"), dict)):
        return False
    data, run = r["data"], r["data"].get("run")
    if not (isinstance(run, dict) and isinstance(run.get("success"), bool) and isinstance(run.get("seed"), int)
            and isinstance(run.get("steps"), int) and _finite(data.get("seconds"))
            and _finite(*(run.get(k) for k in ("best_l2", "eps", "l2_clean", "l2_input")))):
        return False
    return all(v is None or _finite(v) for k, v in run.items() if k in ("psnr", "ssim", "niqe")) and \
        (r["condition"] == CLEAN or _finite(data.get("l2_input_to_clean"))) and \
        ("image" not in data or isinstance(data["image"], dict))


def _eval_parts(out_dir: Path, set_aside: bool) -> List[dict]:
    """The valid eval part records; with ``set_aside`` (once per run, at the plan), the others are copied
    aside with a warning."""
    if set_aside:
        return read_valid_parts(out_dir, _valid_record, set())
    return read_parts(out_dir, validate=_valid_record)[0]


def _done_units(parts: List[dict], sig: dict) -> Dict[str, dict]:
    prefix = digest(sig) + "|"
    return {r["unit"]: r["data"] for r in parts
            if r.get("event") == "done" and str(r.get("unit", "")).startswith(prefix) and "data" in r}


@dataclasses.dataclass
class EvalResult:
    """What an evaluation found: ``summary`` is ``results.json`` without its per-image records, which are
    ``records``; ``notes`` are the lines it logged. Ranks other than 0 return an empty one."""

    summary: dict
    records: List[dict] = dataclasses.field(default_factory=list)
    notes: List[str] = dataclasses.field(default_factory=list)

    @property
    def exit_code(self) -> Optional[int]:
        return self.summary.get("exit_code")

    @property
    def errors(self) -> List[dict]:
        return self.summary.get("errors", [])


def evaluate(data_dir, model, out_dir, options: Optional[PulseOptions] = None,
             settings: Optional[EvalSettings] = None, *, device=None, ranks: Optional[Ranks] = None) -> EvalResult:
    """Run the evaluation and write ``results.json``, ``report.md`` and ``figures/``; return the results.

    The work is split into units, one per (image, condition, run), each searched
    with its own seed (``seed + run``) as its own batch (or ``settings.batch``
    units at a time). Each finished unit is appended to a part file at once, so
    an interrupted run resumes where it stopped. With ``ranks`` from
    :func:`pulse_sr.pipelines.shards.session` under ``torchrun`` the units are
    split over the ranks and rank 0 writes the results, which are those of one
    process; the other ranks return an empty :class:`EvalResult`.

    Progress and problems are logged (``pulse_sr.pipelines.eval.run``).

    Raises:
        InputSizeError: the scale does not fit the model's resolution.
        InputImageError: ``data_dir`` holds no images.
        OutputFolderError: ``out_dir`` cannot be used.
        SettingsError, DegradationSpecError, LabelError: bad settings.
    """
    notes: List[str] = []
    with collect(notes):
        result = _evaluate(data_dir, model, Path(out_dir), options or PulseOptions(), settings or EvalSettings(),
                           device, ranks or Ranks())
    result.notes = notes
    return result


def _evaluate(data_dir, model, out_dir: Path, opts: PulseOptions, s: EvalSettings, device, ranks: Ranks) -> EvalResult:
    opts.validate()
    s.validate()
    degradations = parse_degradations(s.degrade)
    dev = tune(device)
    model = model.to(dev)
    r = model.resolution
    if r % s.scale:
        raise InputSizeError(f"scale {s.scale} does not divide the model's {r}-px resolution")
    check_lr_size(r // s.scale, r // s.scale, r)
    say = log.info if ranks.main else None

    files = expand_inputs([data_dir])
    if not files:
        raise InputImageError(f"{data_dir}: no images (PNG/JPEG/WebP/BMP) found")
    files = sorted(files, key=lambda p: p.name)
    if s.n:
        files = files[:s.n]
    load_labels(s.labels, [p.name for p in files])  # a missing or unreadable --labels: said now, not after the searches
    out_dir = Path(out_dir)
    sig = signature(model, opts, s, degradations)
    conditions = [CLEAN] + [d.name for d in degradations]
    conds = {CLEAN: None, **{d.name: d for d in degradations}}
    units = [(p.name, c, k) for p in files for c in conditions for k in range(s.runs)]
    batches = [units[i:i + s.batch] for i in range(0, len(units), s.batch)]

    plan = None
    if ranks.main:
        try:
            plan = _plan(out_dir, files, sig, batches, ranks, say)
        except PulseError as exc:
            plan = {"error": str(exc)}
    plan = ranks.broadcast(plan)
    if "error" in plan:
        raise OutputFolderError(plan["error"])

    ev = _Eval(model, opts, s, conds, sig, out_dir, {p.name for p in files[:s.grid_images]},
               _Images({p.name: p for p in files}, s, r))
    mine = split(plan["todo"], ranks)
    with PartLog(out_dir, ranks) as part:
        for n, b in enumerate(mine):
            batch = batches[b]
            part.write(*({"event": "start", "unit": _unit_id(sig, *u), "input": u[0], "rank": ranks.rank,
                          "world": ranks.world, "pid": os.getpid()} for u in batch))
            done = _search_units(ev, batch)
            failed = sorted({u[0] for u in batch if isinstance(ev.images.get(u[0]), PulseError)})
            part.write(*done, *({"event": "error", "unit": _unit_id(sig, *u), "file": u[0], "token": plan["token"],
                                 "error": str(ev.images.get(u[0]))} for u in batch if u[0] in failed))
            if done:
                ok = sum(d["data"]["run"]["success"] for d in done)
                what = ", ".join(f"{u[0]} {u[1]} run {u[2]}" for u in batch if u[0] not in failed)
                log.info("[%d/%d] %s: %d/%d within eps, %.1f s", n + 1, len(mine), what, ok, len(done),
                         sum(d["data"]["seconds"] for d in done))
        if ranks.sharded:
            part.write({"event": FINISHED, "run": plan["token"], "rank": ranks.rank})
    ranks.wait_for_peers(out_dir, plan["token"])  # however long the slowest share takes
    ranks.gather(None)  # every rank has written its part
    if not ranks.main:
        return EvalResult({"rank": ranks.rank, "world": ranks.world})
    return _merge(out_dir, files, sig, conditions, s, plan, degradations, dev)


def _plan(out_dir: Path, files: List[Path], sig: dict, batches: List[list], ranks: Ranks, say) -> dict:
    """Rank 0: make the folder, find what earlier runs did, and list the batches to run."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputFolderError(f"--out {out_dir} is a file, not a folder; choose a folder for the results")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        real_dir(out_dir / "per_image", out_dir)
    except OSError as exc:
        raise OutputFolderError(f"cannot create {out_dir} ({exc.strerror or exc})") from None
    parts = _eval_parts(out_dir, set_aside=True)
    done = _done_units(parts, sig)
    recorded = {p.name for p in files if _read_record(out_dir, p.name, sig) is not None}
    todo = [i for i, b in enumerate(batches)
            if any(u[0] not in recorded and _unit_id(sig, *u) not in done for u in b)]
    pending = {_unit_id(sig, *u) for i in todo for u in batches[i]}
    lost = [rec for rec in interrupted(parts) if rec.get("unit") in pending]
    n_units = sum(len(b) for b in batches)
    n_todo = sum(len(batches[i]) for i in todo)
    if say:
        for rec in lost:
            name, cname, k = rec["unit"].split("|")[1:]
            say(f"{name} {cname} run {k}: rank {rec.get('rank')} of {rec.get('world')} stopped while running it "
                f"in an earlier run (pid {rec.get('pid')}); running it again")
        say(f"{len(files)} images, {n_units} units (image × condition × run): {n_units - n_todo} already done, "
            f"{n_todo} to run" + (f" on {ranks.world} ranks" if ranks.sharded else ""))
    return {"todo": todo, "token": secrets.token_hex(8)}


def _merge(out_dir: Path, files: List[Path], sig: dict, conditions: List[str], s: EvalSettings, plan: dict,
           degradations, dev) -> dict:
    """Rank 0: per-image records from every part file, then results.json, report.md and figures."""
    parts = _eval_parts(out_dir, set_aside=False)
    done = _done_units(parts, sig)
    records: Dict[str, dict] = {}
    for p in files:
        rec = _assemble(p.name, sig, conditions, s.runs, done)
        if rec is not None:
            _write_record(out_dir, rec)
        else:
            rec = _read_record(out_dir, p.name, sig)
        if rec is not None:
            records[p.name] = rec
    failed: Dict[str, str] = {}
    for rec in parts:
        if rec.get("event") == "error" and rec.get("token") == plan["token"]:
            failed.setdefault(rec["file"], rec["error"])
    errors = [{"file": p.name, "error": failed[p.name]} for p in files if p.name in failed and p.name not in records]
    # Units of images outside this run (a smaller --n) stay for a later run; the rest are in per_image/ now.
    names = {p.name for p in files}
    prefix = digest(sig) + "|"
    carried = [rec for rec in parts if rec.get("event") == "done" and str(rec.get("unit", "")).startswith(prefix)
               and rec.get("file") not in names]
    clear_parts(out_dir, keep=carried)

    ordered = [records[p.name] for p in files if p.name in records]
    labels = load_labels(s.labels, [rec["file"] for rec in ordered])
    results = summarize(ordered, labels, sig, s, errors)
    results["device"] = _device_name(dev)
    # Searches that miss eps are what eval measures, not failures of the run; skipped images are.
    results["exit_code"] = exit_code(bad_input=bool(errors), not_found=False)
    write_results(results, ordered, out_dir)
    write_figures(ordered, [CLEAN] + [d.name for d in degradations], out_dir, s.runs)
    write_report(results, out_dir)
    return EvalResult(results, ordered)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type

