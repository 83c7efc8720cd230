"""Benchmark: seconds per Inverting Gradients step on real photos against EfficientNet-Lite0 (trained, CPU).

    python scripts/bench_photo_ig.py                       # 1 photo at 128 and 224 px, 8 guides at 128 px
    python scripts/bench_photo_ig.py --steps 10 --threads 2 --json runs/bench_photo_ig.json

Each case runs ``--steps`` IG iterations after two warm-up iterations and reports the median seconds per
iteration, per batch and per guide. The 8-guide case is notebook 02's photo batch (4 photos x 2 crops).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from saliency_lib.inversion import IGConfig, gradient_cosine_loss, parameter_gradients, total_variation
from saliency_lib.machine import cpu_description
from saliency_lib.photo_protocol import PhotoArgs, guides_of
from saliency_lib.photos import load_photo_classifier, photo_guides
from saliency_lib.weights import atomic_write_bytes


def step_times(clf, images: torch.Tensor, labels: torch.Tensor, steps: int) -> list[float]:
    """Wall seconds of each IG iteration (forward, per-sample parameter gradients, objective, backward, Adam step)
    on ``images`` ``[B, 3, S, S]`` in [-1, 1]; the first two iterations are warm-up and not returned."""
    norm, cfg = clf.config.normalization, IGConfig()
    x_star = norm.from_diffusion(images)
    with torch.no_grad():
        target = parameter_gradients(clf, x_star, labels)
    x = torch.randn(x_star.shape, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg.lr)
    times = []
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = gradient_cosine_loss(parameter_gradients(clf, x, labels), target) + cfg.tv_weight * total_variation(x)
        loss.sum().backward()
        x.grad.sign_()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times[2:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    clf = load_photo_classifier("trained")
    cases = {}
    for size in (128, 224):
        g = photo_guides(["chelsea"], size)
        cases[f"1 photo, {size} px"] = (g.images, g.labels)
    g = guides_of(PhotoArgs())
    cases[f"{g.images.shape[0]} guides, 128 px (notebook 02)"] = (g.images, g.labels)
    out = {"cpu": cpu_description(), "threads": a.threads, "torch": torch.__version__,
           "steps": a.steps, "cases": {}}
    for name, (images, labels) in cases.items():
        t = statistics.median(step_times(clf, images, labels, a.steps))
        out["cases"][name] = {"seconds_per_step": t, "seconds_per_step_per_guide": t / images.shape[0]}
        print(f"{name:34s} {t:6.2f} s/step  ({t / images.shape[0]:.2f} s per guide)")
    if a.json:
        atomic_write_bytes(a.json, json.dumps(out, indent=2).encode())


if __name__ == "__main__":
    main()
