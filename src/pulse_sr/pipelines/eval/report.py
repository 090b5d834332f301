"""Writing an evaluation's ``results.json``, ``report.md`` and figure grids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

from ...images import make_grid, read_image, save_image
from ...metrics.niqe import BLOCK_SIZE
from ...safe_paths import write_text
from .settings import CLEAN, GRID_RUNS, file_tag


def write_results(results: dict, records: List[dict], out_dir: Path) -> Path:
    path = Path(out_dir) / "results.json"
    data = dict(results)
    data["per_image"] = [{k: v for k, v in rec.items() if k != "signature"} for rec in records]
    return write_text(path, json.dumps(data, indent=1, allow_nan=False))


def write_figures(records: List[dict], conditions: List[str], out_dir: Path, runs: int) -> List[Path]:
    """One grid per condition: input (nearest), PULSE runs, then bicubic and HR for clean."""
    written = []
    for cname in conditions:
        rows = []
        for rec in records:
            d = Path(out_dir) / "images" / rec["file"]
            tag = file_tag(cname)
            names = [f"{tag}_input.png"] + [f"{tag}_run{k}.png" for k in range(min(runs, GRID_RUNS))]
            names += ["bicubic.png", "hr.png"] if cname == CLEAN else ["hr.png"]
            if all((d / n).is_file() for n in names):
                rows.append([read_image(d / n) for n in names])
        if rows:
            written.append(save_image(make_grid(rows), Path(out_dir) / "figures" / f"{tag}.png"))
    return written


def _fmt(v, spec=".4f") -> str:
    return "n/a" if v is None else format(v, spec)


def _pct(rate: dict) -> str:
    if not rate["n"]:
        return "n/a"
    lo, hi = rate["ci95"]
    return f"{100 * rate['rate']:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]"


def write_report(results: dict, out_dir: Path) -> Path:
    """``report.md``: the tables of the issue, from :func:`summarize`'s data."""
    st = results["settings"]
    opts = st["options"]
    lines = ["# PULSE evaluation", "",
             f"Model `{st['model']}` ({st['resolution']} px), ×{st['scale']} "
             f"({st['resolution'] // st['scale']} px inputs), {results['images']} images, "
             f"{st['runs']} runs per image (seeds {st['seed']}–{st['seed'] + st['runs'] - 1}), "
             f"{opts['steps']} steps, eps {opts['eps']}, loss `{opts['loss']}`, device {results.get('device', '?')}.",
             "",
             "Every PULSE output is an imaginary face that downscales to the input; it is not the real "
             "person and must not be used to identify anyone.", ""]
    if results["errors"]:
        lines += [f"{len(results['errors'])} image(s) skipped: "
                  + "; ".join(f"{e['file']}: {e['error']}" for e in results["errors"]), ""]

    lines += ["## Success and downscaling L2", "",
              "A run succeeds when its best image downscales to within eps (L2 = mean squared error in "
              "[0, 1] units). Run rates pool all runs; runs of one image are correlated, so their 95 % "
              "Wilson interval is optimistic. The image rate counts an image as found if any run was.", "",
              "| input | run success [95 % CI] | images with a success [95 % CI] | L2 mean | L2 median "
              "| seconds / image |",
              "|---|---|---|---|---|---|"]
    for cname, c in results["conditions"].items():
        lines.append(f"| {cname} | {_pct(c['runs'])} | {_pct(c['images_any_success'])} | "
                     f"{_fmt(c['best_l2']['mean'], '.2e')} | {_fmt(c['best_l2']['median'], '.2e')} | "
                     f"{_fmt(c['seconds_per_image'], '.2f')} |")
    lines += ["", "Seconds per image: search time of all its runs (each run a unit of its own; with "
              "`--batch N`, a batch's time split over its units).", ""]

    nq = results["niqe"]
    lines += ["## NIQE (lower is better)", ""]
    if nq["computed"]:
        lines += [f"MATLAB-equivalent NIQE with the LIVE pristine model, RGB to one plane by "
                  f"`{'rgb2gray' if nq['color'] == 'gray' else 'rgb2ycbcr (Y)'}`. PULSE: mean over runs, "
                  f"then images. The paper notes that NIQE means little at low resolution "
                  f"(fewer than four 96-px blocks below 192 px).", "",
                  "| HR | nearest | bicubic | PULSE |", "|---|---|---|---|",
                  f"| {_fmt(nq['HR'])} | {_fmt(nq['nearest'])} | {_fmt(nq['bicubic'])} | {_fmt(nq['PULSE'])} |", ""]
    else:
        lines += [f"Not computed: NIQE needs images of at least {BLOCK_SIZE}×{BLOCK_SIZE} px.", ""]

    fd = results["fidelity"]
    lines += ["## PSNR / SSIM against HR", "",
              "RGB in [0, 1]; SSIM with an 11×11 Gaussian window (sigma 1.5). PULSE: mean over runs, then images. "
              "PULSE does not aim at these (paper, Appendix C).", "",
              "| | nearest | bicubic | PULSE |", "|---|---|---|---|",
              "| PSNR (dB) | " + " | ".join(_fmt(fd[m]["psnr"], ".2f") for m in ("nearest", "bicubic", "PULSE")) + " |",
              "| SSIM | " + " | ".join(_fmt(fd[m]["ssim"], ".4f") for m in ("nearest", "bicubic", "PULSE")) + " |", ""]

    if results["groups"]:
        lines += ["## Success by group (clean inputs)", "",
                  f"Labels: `{st['labels']}`. 'unknown' collects images whose labels could not be read.", ""]
        for attr, groups in results["groups"].items():
            lines += [f"### {attr}", "", "| group | images | run success [95 % CI] | images with a success [95 % CI] |",
                      "|---|---|---|---|"]
            for name, g in groups.items():
                lines.append(f"| {name} | {g['images']} | {_pct(g['run_rate'])} | {_pct(g['image_rate'])} |")
            lines.append("")

    degr = [c for c in results["conditions"] if c != CLEAN]
    if degr:
        lines += ["## Degraded inputs", "",
                  "L2 of DS(SR) to the clean LR and to the degraded input it was given, and of the degraded "
                  "input to the clean LR for scale. The paper (Sec. 5) claims outputs land near the clean one.",
                  "", "| degradation | L2 DS(SR)→clean mean / median | L2 DS(SR)→degraded mean / median "
                  "| L2 degraded→clean | run success |", "|---|---|---|---|---|"]
        for cname in degr:
            c = results["conditions"][cname]
            lines.append(f"| {cname} | {_fmt(c['l2_to_clean']['mean'], '.2e')} / {_fmt(c['l2_to_clean']['median'], '.2e')} "
                         f"| {_fmt(c['l2_to_input']['mean'], '.2e')} / {_fmt(c['l2_to_input']['median'], '.2e')} "
                         f"| {_fmt(c['l2_input_to_clean']['mean'], '.2e')} | {_pct(c['runs'])} |")
        lines.append("")

    figs = [Path(out_dir) / "figures" / f"{file_tag(c)}.png" for c in results["conditions"]]
    figs = [f for f in figs if f.is_file()]
    if figs:
        lines += ["## Figures", "",
                  "Rows are images. Columns: the input (nearest-upscaled), PULSE runs, then bicubic (clean only) "
                  "and HR.", ""]
        for f in figs:
            lines += [f"![{f.stem}](figures/{f.name})", ""]
    return write_text(Path(out_dir) / "report.md", "\n".join(lines))
