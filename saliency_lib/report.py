"""The protocol's results as files (JSON, CSV, plots), as text tables, and as verdicts on the paper's claims."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Mapping, Sequence

from .plotting import plot_iou_vs_k, plot_iou_vs_time, plot_tradeoff, save_figure
from .weights import atomic_write_bytes


def write_results(res: dict, out: Path) -> list[Path]:
    """``results.json``, ``results.csv`` (one line per row, CIs as mean/lo/hi columns) and the three plots."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "results.json", json.dumps(res, indent=1).encode())
    flat = []
    for r in res["rows"]:
        f = {}
        for k, v in r.items():
            if isinstance(v, list) and len(v) == 3:
                f.update({k: v[0], f"{k}_lo": v[1], f"{k}_hi": v[2]})
            elif isinstance(v, dict):   # per-guide values: in the JSON only
                continue
            else:
                f[k] = v
        flat.append(f)
    fields = list(dict.fromkeys(k for f in flat for k in f))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(flat)
    atomic_write_bytes(out / "results.csv", buf.getvalue().encode())
    paths = [out / "results.json", out / "results.csv"]
    for name, plot in (("iou_vs_k.png", plot_iou_vs_k), ("iou_vs_class_accuracy.png", plot_tradeoff),
                       ("iou_vs_time.png", plot_iou_vs_time)):
        paths.append(save_figure(plot(res["rows"]), out / name))
    return paths


def format_table(rows: Sequence[dict], metrics: Sequence[str] = ("iou", "class_accuracy", "centroid_dist"),
                 digits: int | Mapping[str, int] = 3) -> str:
    """Protocol rows as text: ``group condition metric mean [lo, hi] ...`` rounded to ``digits`` decimals, one number
    for all metrics or one per metric (no timings). Tables of a live run on a few guides are best printed with fewer:
    their last decimals are noise, and a CPU whose float rounding moves one segmented pixel changes them (notebook
    06's checked outputs)."""
    places = digits if isinstance(digits, Mapping) else {m: digits for m in metrics}
    lines = []
    for r in rows:
        cells = [f"{m} {r[m][0]:.{places[m]}f} [{r[m][1]:.{places[m]}f}, {r[m][2]:.{places[m]}f}]"
                 for m in metrics if m in r]
        lines.append(f"{r['group']:11s} {r['condition']:28s} " + "  ".join(cells))
    return "\n".join(lines)


REALISM_KIDS = (("kid", "KID (judge)"), ("kid_colour", "KID (colour)"))
REALISM_COLUMNS = (("judge_per_class_accuracy", "judge acc."), ("mean_abs", "mean |x|"),
                   ("saturated_fraction", "saturated"), ("background_std", "bg std"))


def format_realism(rows: Sequence[dict], digits: int = 3) -> str:
    """The rows of ``scripts/measure_realism.py``'s JSON as text: condition, the two kernel distances +- their std
    over subsets (judge features, colour statistics), the judge's per-class accuracy, mean ``|x|``, the saturated
    fraction, the background's spatial std, and the layout IoU (mean over guides) of the phenomenon rows."""
    width = max([len(r["condition"]) for r in rows] + [9])
    lines = [f"{'condition':{width}s} " + " ".join(f"{label:>17s}" for _, label in REALISM_KIDS) + " "
             + " ".join(f"{label:>10s}" for _, label in REALISM_COLUMNS) + f" {'layout IoU':>10s}"]
    for r in rows:
        kids = [f"{r[key]:>8.{digits}f} +- {r[key + '_std']:<5.{digits}f}" for key, _ in REALISM_KIDS]
        iou = f"{r['layout_iou'][0]:>10.{digits}f}" if "layout_iou" in r else f"{'-':>10s}"
        lines.append(f"{r['condition']:{width}s} " + " ".join(kids) + " "
                     + " ".join(f"{r[key]:>10.{digits}f}" for key, _ in REALISM_COLUMNS) + " " + iou)
    return "\n".join(lines)


def paper_claims(results: dict) -> dict[str, bool]:
    """The paper's claims as verdicts on protocol results: a claim holds when its 95% CI clears the baseline's."""
    rows, a = results["rows"], results["args"]

    def row(cond: str, group: str) -> dict:
        return next(r for r in rows if r["condition"] == cond and r["group"] == group)

    k_max, s = max(a["ig_steps"]), a["strength"]
    k_min = min(k for k in a["ig_steps"] if k)
    gauss, ig = row("Gaussian", "source"), row(f"IG k={k_max}", "k")
    out = {f"crafted noise (k={k_max}, s={s}) controls layout better than Gaussian noise": ig["iou"][1] > gauss["iou"][2]}
    if 1.0 in a["strengths"]:
        recipe = row(f"IG k={k_max} s=1.0", "strength")
        out["the paper's recipe as published (s=1) controls layout better than Gaussian noise"] = \
            recipe["iou"][1] > gauss["iou"][2]
    out[f"later IG steps localize better (k={k_max} vs k={k_min})"] = ig["iou"][1] > row(f"IG k={k_min}", "k")["iou"][2]
    out["class control is not significantly worse with crafted noise (the 95% CIs overlap)"] = \
        ig["class_accuracy"][2] >= gauss["class_accuracy"][1]
    out["IG beats the feature-map noise on layout"] = ig["iou"][1] > row("feature map", "source")["iou"][2]
    out["IG beats the FGSM noise on layout"] = ig["iou"][1] > row("FGSM", "source")["iou"][2]
    for name in a["transforms"]:
        o = row(name, "orientation")
        out[f"the generation follows a {name} of the noise"] = o["iou_transformed"][1] > o["iou_original"][2]
    return out
