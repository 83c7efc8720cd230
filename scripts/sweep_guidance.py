"""Classifier-free guidance weight sweep: judge per-class accuracy of samples from Gaussian noise.

    python scripts/sweep_guidance.py --ddpm checkpoints/ddpm_cfg/last.safetensors --weights 0,1,2,3,5 \
        --n 128 --sampler ddim:50 --json data/models/tiny/guidance_sweep.json

One seeded x_T batch with class-balanced targets, the same for every weight w (eps = (1 + w) eps(y) -
w eps(null), guidance.py). Prints the judge's per-class accuracy on the conditioning class, the judge
segmenter's mean object area (a check that guidance does not simply erase or inflate objects), and the CPU
time per image; saves a grid of the first 64 samples per weight under --grids.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torchvision

from saliency_lib.evaluate import judge_masks, judge_probs, per_class_accuracy
from saliency_lib.pipeline import Sampler, generate
from saliency_lib.presets import load_tiny, with_ddpm_file
from saliency_lib.train import export_weights
from saliency_lib.weights import atomic_write_bytes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ddpm", type=Path, default=None, help="DDPM weights or training checkpoint (default: the preset's)")
    p.add_argument("--weights", default="0,1,2,3,5")
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--sampler", default="ddim:50", help="method:steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grids", type=Path, default=Path("/tmp"))
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    torch.set_num_threads(2)
    preset = load_tiny()
    if a.ddpm is not None:
        exported = a.grids / "sweep_ddpm.safetensors"
        export_weights(a.ddpm, exported)   # EMA weights of a training checkpoint (a weights file is copied)
        preset = with_ddpm_file(preset, exported)
    k = len(preset.class_names)
    y = torch.arange(a.n) % k
    x_T = torch.randn(a.n, 3, preset.image_size, preset.image_size, generator=torch.Generator().manual_seed(a.seed))
    Sampler.parse(a.sampler)   # a bad --sampler fails before any sampling
    rows = []
    for w in (float(s) for s in a.weights.split(",")):
        sampler = Sampler.parse(a.sampler, guidance=w)
        t = time.time()
        imgs = torch.cat([generate(preset, xb, yb, sampler, seed=a.seed + i)
                          for i, (xb, yb) in enumerate(zip(x_T.split(64), y.split(64)))])
        dt = (time.time() - t) / a.n
        acc = per_class_accuracy(judge_probs(preset, imgs), y, k)
        area = judge_masks(preset, imgs).float().mean().item()
        rows.append({"weight": w, "judge_per_class_accuracy": acc, "object_area_fraction": area,
                     "seconds_per_image": dt})
        print(f"{sampler.label}: judge per-class accuracy {acc:.3f}, object area {area:.3f} ({a.n} samples), "
              f"{dt * 1000:.0f} ms/image", flush=True)
        torchvision.utils.save_image((imgs[:64] + 1) / 2, a.grids / f"cfg_{sampler.method}{sampler.steps}_w{w:g}.png", nrow=8)
    if a.json:
        atomic_write_bytes(a.json, json.dumps({"ddpm": str(a.ddpm), "sampler": a.sampler, "n": a.n, "seed": a.seed,
                                               "rows": rows}, indent=1).encode())


if __name__ == "__main__":
    main()
