"""Does classifier guidance keep the paper's phenomenon? The quality script's layout rows under other guidance.

    python scripts/layout_under_guidance.py --classifier-scales 0,5 --n-guides 32 --cache checkpoints/ig_cache

Repeats the three layout rows of ``python -m saliency_lib.evaluate quality`` (Gaussian noise, the paper's recipe
and strength 0.3; the same guides, IG snapshot, fresh noise and sampler seeds, so scale 0 reproduces
``quality.json``) for each classifier guidance scale s, with the preset's classifier-free guidance weight.
Prints layout IoU (mean and 95% bootstrap interval over guides) and the judge's target-class accuracy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from saliency_lib import data
from saliency_lib.evaluate import bootstrap_ci, layout_scores
from saliency_lib.noise import mix_with_gaussian
from saliency_lib.pipeline import Sampler, craft_noise
from saliency_lib.presets import load_tiny
from saliency_lib.weights import atomic_write_bytes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classifier-scales", default="0,5")
    p.add_argument("--n-guides", type=int, default=32)
    p.add_argument("--ig-steps", type=int, default=1000)
    p.add_argument("--strength", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=None, help="IG cache folder (as for evaluate quality)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    preset = load_tiny()
    guides = data.make_batch("guides", 0, a.n_guides)
    crafted = craft_noise(preset, guides.images, guides.labels, steps=(a.ig_steps,), seed=a.seed,
                          cache_dir=a.cache)[a.ig_steps]
    fresh = torch.randn(crafted.shape, generator=torch.Generator().manual_seed(a.seed + 1))
    noises = {"gaussian": fresh, f"ig{a.ig_steps}_strength1": crafted,
              f"ig{a.ig_steps}_strength{a.strength}": mix_with_gaussian(crafted, a.strength, fresh=fresh)}
    out = []
    for scale in (float(v) for v in a.classifier_scales.split(",")):
        sampler = Sampler("ddim", 50, classifier_scale=scale)
        for name, x in noises.items():
            s = layout_scores(preset, guides.masks, x, sampler, seed=a.seed)
            mean, lo, hi = bootstrap_ci(s["iou"].mean(1).numpy())
            acc = s["correct"].mean().item()
            out.append({"classifier_scale": scale, "noise": name, "layout_iou": [mean, lo, hi], "class_accuracy": acc})
            print(f"{sampler.label} {name}: layout IoU {mean:.3f} [{lo:.3f}, {hi:.3f}], target-class accuracy "
                  f"{acc:.3f} ({a.n_guides} guides x {len(preset.class_names)} classes)", flush=True)
    if a.json:
        atomic_write_bytes(a.json, json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "rows": out},
                                              indent=1).encode())


if __name__ == "__main__":
    main()
