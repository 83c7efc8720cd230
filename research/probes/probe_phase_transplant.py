"""Does the phase transplant's layout gain replicate on other guides? (model card, History 26)

    python scripts/probe_phase_transplant.py --guide-start 32 --n-guides 32 --cache checkpoints/ig_cache \
        --json data/models/tiny/phase_transplant_guides32.json

``scripts/measure_realism.py`` found, on the Quality section's 32 held-out guides (``guides`` split, 0-31), that
x_T = ``noise.phase_transplant`` (the IG snapshot's Fourier phases on a Gaussian noise's amplitudes) gives a larger
layout IoU than the strength control at 0.3, with the same class control. This repeats the comparison on another
block of held-out guides (``--guide-start``), with the Quality section's settings otherwise: IG k = ``--ig-steps``
against the preset's IG classifier (seed 0; cached under ``--cache``), one fresh Gaussian draw per guide (seed 1)
shared by the Gaussian row, the strength mix and the transplant's amplitudes (``evaluate.quality_layout_noises`` on
this block), every target class per noise, DDIM-50 with the preset's guidance (``evaluate.layout_scores``: the judge segmenter's mask against the
guide's). Per row: the layout IoU (mean over guides, 95% bootstrap interval) and the target-class accuracy; and the
transplant's paired per-guide differences against each other row.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from saliency_lib.evaluate import QualityArgs, bootstrap_ci, layout_scores, paired_differences, quality_layout_noises
from saliency_lib.noise import phase_transplant
from saliency_lib.pipeline import Sampler
from saliency_lib.presets import load_tiny
from saliency_lib.weights import atomic_write_bytes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--guide-start", type=int, default=32, help="first guide of the block (the Quality rows use 0-31)")
    p.add_argument("--n-guides", type=int, default=32)
    p.add_argument("--ig-steps", type=int, default=1000)
    p.add_argument("--strength", type=float, default=0.3)
    p.add_argument("--cache", type=Path, default=None, help="IG cache folder")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    if a.guide_start < 0 or a.n_guides < 2:
        p.error(f"need --guide-start >= 0 and --n-guides >= 2, got {a.guide_start} and {a.n_guides}")
    torch.set_num_threads(a.threads)
    t0 = time.time()
    preset = load_tiny()
    # the Quality section's three phenomenon noises on this block of guides (IG seed 0, fresh noise seed 1), and the
    # IG snapshot's phases on that fresh noise's amplitudes
    args = QualityArgs(n_guides=a.n_guides, ig_steps=a.ig_steps, strength=a.strength)
    guides, quality_noises = quality_layout_noises(preset, args, a.cache, start=a.guide_start)
    print(f"IG for {a.n_guides} guides: {time.time() - t0:.0f} s", flush=True)
    crafted, fresh = quality_noises[f"ig{a.ig_steps}_strength1"], quality_noises["gaussian"]
    noises = {"gaussian": fresh, f"IG k = {a.ig_steps}, strength {a.strength}":
              quality_noises[f"ig{a.ig_steps}_strength{a.strength}"],
              f"IG k = {a.ig_steps}, strength 1 (the paper's recipe)": crafted,
              f"IG k = {a.ig_steps}, phases on Gaussian amplitudes": phase_transplant(crafted, fresh=fresh)}
    per_guide, rows = {}, {}
    for name, x_T in noises.items():
        s = layout_scores(preset, guides.masks, x_T, Sampler("ddim", 50), seed=0)
        per_guide[name] = s["iou"].mean(1).numpy()
        rows[name] = {"layout_iou": list(bootstrap_ci(per_guide[name])), "class_accuracy": s["correct"].mean().item(),
                      "seconds_per_image": s["seconds_per_image"].item()}
        print(f"{name}: layout IoU {rows[name]['layout_iou'][0]:.3f} [{rows[name]['layout_iou'][1]:.3f}, "
              f"{rows[name]['layout_iou'][2]:.3f}], target-class accuracy {rows[name]['class_accuracy']:.3f}",
              flush=True)
    phase = list(noises)[-1]
    paired = paired_differences(per_guide, phase)
    for name, d in paired.items():
        lo_hi = d["mean_difference_ci95"]
        print(f"phases minus {name}: {lo_hi[0]:.3f} [{lo_hi[1]:.3f}, {lo_hi[2]:.3f}], better on "
              f"{d['guides_better']} of {a.n_guides} guides")
    out = {"args": vars(a) | {"cache": str(a.cache), "json": str(a.json)}, "rows": rows,
           "paired_layout_iou": {"row": phase, "against": paired},
           "per_guide_iou": {n: v.tolist() for n, v in per_guide.items()}, "seconds": time.time() - t0}
    if a.json is not None:
        atomic_write_bytes(a.json, (json.dumps(out, indent=1) + "\n").encode())


if __name__ == "__main__":
    main()
