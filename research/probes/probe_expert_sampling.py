"""Sampling-side probes around the low-noise expert (model card, History 17): with the expert shipped (History 16),
can where it takes over, where DDIM-50 spends its steps, or guiding the expert by the base model raise how often
the tiny DDPM draws the requested class?

    python scripts/probe_expert_sampling.py --n 128 --json data/models/tiny/expert_sampling_probes.json

Every probe samples DDIM-50 (eta 0) from the seeded Gaussian x_T batch with class-balanced targets that
`sweep_guidance.py` uses (seed 0, batches of 64), with the preset's default guidance of History 17-28
(classifier-free w = 4, classifier guidance s = 5), so ``default`` reproduces `guidance_sweep_expert.json`'s w = 4, s = 5 figure. Probes:

- ``below400`` / ``below600``: the expert takes t < 400 or t < 600 instead of t < 500 (it was trained on t < 500
  only, from the base model's weights).
- ``quadratic``: DDIM's quadratic time-step sequence (Song et al. 2021, used there for CIFAR-10): t_i =
  floor((i sqrt(0.8 T) / 49)^2), i = 0..49, 49 distinct steps, dense at low noise, starting at t = 800.
- ``dense-low``: 30 evenly spaced steps in [0, 500), where History 15 found the class decided, and 20 in
  [500, 1000) (50 in all).
- ``autoguide1`` / ``autoguide2``: autoguidance (Karras et al. 2024) with the pair the expert gives for free:
  below t = 500, eps = eps_expert + a (eps_expert - eps_base) for each of classifier-free guidance's two branches
  (so the guided epsilon is extrapolated alike), a = 1 or 2; the base model, trained on fewer images at these
  noise levels, is the "bad version". Costs one more UNet call per step below t = 500.

Prints, and writes to --json, the judge's per-class accuracy on the conditioning class, per class, and the CPU
time per image.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from saliency_lib.diffusion import GaussianDiffusion
from saliency_lib.evaluate import class_control, gaussian_class_batch
from saliency_lib.presets import Preset, load_tiny
from saliency_lib.unet import TimestepExperts
from saliency_lib.weights import atomic_write_bytes


class AutoguidedExperts(nn.Module):
    """``experts`` (a :class:`TimestepExperts`) whose low-noise expert is extrapolated away from the high-noise
    model on its own steps: out = low + a (low - high) for t < below_t; the high-noise model alone above."""

    def __init__(self, experts: TimestepExperts, weight: float):
        super().__init__()
        self.experts, self.weight = experts, float(weight)

    @property
    def config(self):
        return self.experts.config

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        out = self.experts(x, t, y=y)
        low = t < self.experts.below_t
        if bool(low.any()):
            bad = self.experts.high(x[low], t[low], y=None if y is None else y[low])
            out[low] = out[low] + self.weight * (out[low] - bad)
        return out


def quadratic_timesteps(num_steps: int, count: int) -> list[int]:
    return sorted({int(v) for v in np.linspace(0, np.sqrt(num_steps * 0.8), count) ** 2})


def dense_low_timesteps(low: int, high: int, split: int = 500, num_steps: int = 1000) -> list[int]:
    return sorted({int(round(v)) for v in np.linspace(0, split - 1, low, endpoint=False)}
                  | {int(round(v)) for v in np.linspace(split, num_steps - 1, high)})


def with_boundary(preset: Preset, below_t: int) -> Preset:
    return dataclasses.replace(preset, unet=TimestepExperts(preset.unet.high, preset.unet.low, below_t))


# name -> (preset, process) from the shipped preset
PROBES: dict[str, Callable[[Preset], tuple[Preset, GaussianDiffusion]]] = {
    "default": lambda p: (p, p.diffusion("ddim50")),
    "below400": lambda p: (with_boundary(p, 400), p.diffusion("ddim50")),
    "below600": lambda p: (with_boundary(p, 600), p.diffusion("ddim50")),
    "quadratic": lambda p: (p, GaussianDiffusion.at_timesteps(
        p.diffusion_config, quadratic_timesteps(p.diffusion_config.num_steps, 50))),
    "dense-low": lambda p: (p, GaussianDiffusion.at_timesteps(p.diffusion_config, dense_low_timesteps(30, 20))),
    "autoguide1": lambda p: (dataclasses.replace(p, unet=AutoguidedExperts(p.unet, 1.0)), p.diffusion("ddim50")),
    "autoguide2": lambda p: (dataclasses.replace(p, unet=AutoguidedExperts(p.unet, 2.0)), p.diffusion("ddim50")),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--probes", default=",".join(PROBES), help=f"comma-separated, from {', '.join(PROBES)}")
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    names = a.probes.split(",")
    unknown = [n for n in names if n not in PROBES]
    if unknown:
        p.error(f"unknown probes {unknown}; choose from {', '.join(PROBES)}")
    torch.set_num_threads(a.threads)
    preset = load_tiny()
    if not isinstance(preset.unet, TimestepExperts):
        p.error("the preset has no low-noise expert (preset.json's ddpm_low_noise); these probes need one")
    if isinstance(preset.unet.high, TimestepExperts):   # History 29 ships a chain: base, middle and low expert
        p.error("the preset has a chain of low-noise experts (History 29); these probes move the boundary of a single "
                "expert and need the one-expert preset of History 16-28: run them at commit 941e322")
    x_T, y = gaussian_class_batch(preset, a.n, a.seed)
    rows = []
    for name in names:
        probe_preset, process = PROBES[name](preset)
        model = probe_preset.denoiser()
        t0 = time.time()
        with torch.no_grad():
            imgs = torch.cat([process.sample(model, xb, yb, method="ddim") for xb, yb in zip(x_T.split(64), y.split(64))])
        seconds = (time.time() - t0) / a.n
        judged = class_control(probe_preset, imgs, y)
        rows.append({"probe": name, "steps": process.num_timesteps, "judge_per_class_accuracy": judged.per_class_accuracy,
                     "accuracy_by_class": judged.accuracy_by_class, "seconds_per_image": seconds})
        print(f"{name:>10s} ({process.num_timesteps} steps): judge per-class accuracy {judged.per_class_accuracy:.3f}, "
              f"by class {[round(v, 2) for v in judged.accuracy_by_class]}, {seconds:.2f} s/image", flush=True)
    if a.json:
        atomic_write_bytes(a.json, json.dumps({"n": a.n, "seed": a.seed, "class_names": preset.class_names,
                                               "rows": rows}, indent=1).encode())


if __name__ == "__main__":
    main()
