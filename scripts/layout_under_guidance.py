"""Does classifier guidance keep the paper's phenomenon? The quality script's layout rows under other guidance.

    python scripts/layout_under_guidance.py --classifier-scales 0,5 --n-guides 32 --cache checkpoints/ig_cache

Repeats the three layout rows of ``python -m saliency_lib.evaluate quality`` (``evaluate.quality_layout_rows``:
Gaussian noise, the paper's recipe and strength 0.3, on the same guides, IG snapshot, fresh noise and sampler
seeds, so the preset's scale (5) reproduces ``quality.json`` and scale 0 History 12's rows without classifier
guidance) for each classifier guidance scale s, with the preset's classifier-free guidance weight, and for each
Restart setting of ``--restarts`` (``none``, ``100-400x2``, ...; ``diffusion.Restart.parse``; model card History 22):

    python scripts/layout_under_guidance.py --classifier-scales 5 --restarts none,100-400x2 --n-guides 8
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from saliency_lib.diffusion import Restart
from saliency_lib.errors import SaliencyNoiseError
from saliency_lib.evaluate import QualityArgs, quality_layout_rows
from saliency_lib.pipeline import Sampler
from saliency_lib.presets import load_tiny
from saliency_lib.weights import atomic_write_bytes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classifier-scales", default="0,5")
    p.add_argument("--restarts", default="none", help="comma-separated Restart settings, e.g. none,100-400x2")
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
    args = QualityArgs(n_guides=a.n_guides, ig_steps=a.ig_steps, strength=a.strength, seed=a.seed)
    try:
        restarts = {text: Restart.parse(text) for text in a.restarts.split(",")}
    except SaliencyNoiseError as err:
        p.error(str(err))
    out = []
    for scale in (float(v) for v in a.classifier_scales.split(",")):
        for text, restart in restarts.items():
            rows = quality_layout_rows(preset, args, Sampler("ddim", 50, classifier_scale=scale, restarts=restart),
                                       a.cache)
            out += [{"classifier_scale": scale, "restarts": text, "noise": name, "layout_iou": [r["mean"], *r["ci95"]],
                     "class_accuracy": r["class_accuracy"]} for name, r in rows.items()]
    if a.json:
        atomic_write_bytes(a.json, json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "rows": out},
                                              indent=1).encode())


if __name__ == "__main__":
    main()
