"""Summaries of an evaluation: success rates with Wilson intervals, per group, metric means."""

from __future__ import annotations

import math
import statistics
from typing import Dict, List, Optional

from .labels import wilson_interval
from .settings import CLEAN, EvalSettings


def _mean(values) -> Optional[float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(values) if values else None


def _median(values) -> Optional[float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(values) if values else None


def _rate(successes: int, n: int) -> dict:
    lo, hi = wilson_interval(successes, n)
    return {"successes": successes, "n": n, "rate": successes / n if n else None, "ci95": [lo, hi]}


def summarize(records: List[dict], labels: Dict[str, Dict[str, str]], signature: dict,
              settings: EvalSettings, errors: List[dict]) -> dict:
    """The tables of the report, as data."""
    conditions = [CLEAN] + signature["degradations"]
    out = {"settings": {**signature, "n_requested": settings.n, "labels": settings.labels},
           "images": len(records), "errors": errors, "conditions": {}, "groups": {}}
    for cname in conditions:
        runs = [run for rec in records for run in rec["conditions"][cname]["runs"]]
        per_image_ok = [any(run["success"] for run in rec["conditions"][cname]["runs"]) for rec in records]
        c = {"runs": _rate(sum(run["success"] for run in runs), len(runs)),
             "images_any_success": _rate(sum(per_image_ok), len(per_image_ok)),
             "best_l2": {"mean": _mean(run["best_l2"] for run in runs),
                         "median": _median(run["best_l2"] for run in runs)},
             "seconds_per_image": _mean(rec["conditions"][cname]["seconds"] for rec in records)}
        if cname != CLEAN:
            c["l2_to_clean"] = {"mean": _mean(run["l2_clean"] for run in runs),
                                "median": _median(run["l2_clean"] for run in runs)}
            c["l2_to_input"] = {"mean": _mean(run["l2_input"] for run in runs),
                                "median": _median(run["l2_input"] for run in runs)}
            c["l2_input_to_clean"] = {"mean": _mean(rec["conditions"][cname]["l2_input_to_clean"]
                                                    for rec in records)}
        out["conditions"][cname] = c

    def per_image_mean(rec, key):
        return _mean(run[key] for run in rec["conditions"][CLEAN]["runs"])

    out["niqe"] = {"HR": _mean(rec["hr"]["niqe"] for rec in records),
                   "nearest": _mean(rec["nearest"]["niqe"] for rec in records),
                   "bicubic": _mean(rec["bicubic"]["niqe"] for rec in records),
                   "PULSE": _mean(per_image_mean(rec, "niqe") for rec in records),
                   "color": signature["niqe_color"], "computed": signature["niqe"]}
    out["fidelity"] = {
        method: {"psnr": _mean(f(rec, "psnr") for rec in records), "ssim": _mean(f(rec, "ssim") for rec in records)}
        for method, f in (("nearest", lambda rec, k: rec["nearest"][k]),
                          ("bicubic", lambda rec, k: rec["bicubic"][k]),
                          ("PULSE", per_image_mean))}

    # Per-group success on clean inputs (the paper's Table 3).
    for rec in records:
        for attr, group in labels.get(rec["file"], {}).items():
            g = out["groups"].setdefault(attr, {}).setdefault(group, {"images": 0, "runs_ok": 0, "runs": 0,
                                                                      "images_ok": 0})
            runs = rec["conditions"][CLEAN]["runs"]
            g["images"] += 1
            g["runs"] += len(runs)
            g["runs_ok"] += sum(run["success"] for run in runs)
            g["images_ok"] += any(run["success"] for run in runs)
    for attr, groups in out["groups"].items():
        for name, g in groups.items():
            g["run_rate"] = _rate(g["runs_ok"], g["runs"])
            g["image_rate"] = _rate(g["images_ok"], g["images"])
        out["groups"][attr] = dict(sorted(groups.items()))
    return out
