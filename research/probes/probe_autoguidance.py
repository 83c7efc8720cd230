"""Autoguidance probe (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself").

    python scripts/probe_autoguidance.py --bad checkpoints/gpu_ft/shipped_before.safetensors --settings 4:1,4:2 --n 128

eps = eps_good + a * (eps_good - eps_bad), where both models are wrapped in the preset's classifier-free guidance
with weight w (``--settings w:a``); the bad model is a weaker DDPM of the same architecture (fewer training
images). Prints the judge's per-class accuracy on the conditioning class for DDIM-50 samples from the seeded
Gaussian x_T batch that ``scripts/sweep_guidance.py`` uses (History 12 of the model card). A probe: the
package does not offer autoguidance, because it did not help here.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from saliency_lib.evaluate import gaussian_class_batch, judge_probs, per_class_accuracy
from saliency_lib.guidance import CFGModel
from saliency_lib.presets import load_ddpm_file, load_tiny


class AutoGuided(nn.Module):
    def __init__(self, good: nn.Module, bad: nn.Module, cfg_weight: float, weight: float):
        super().__init__()
        self.good = CFGModel(good, cfg_weight) if cfg_weight else good
        self.bad = CFGModel(bad, cfg_weight) if cfg_weight else bad
        self.weight = weight

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        good = self.good(x_t, t, y=y)
        return good if self.weight == 0 else good + self.weight * (good - self.bad(x_t, t, y=y))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bad", type=Path, required=True, help="exported weights of the weaker DDPM")
    p.add_argument("--settings", default="4:1", help="comma-separated w:a pairs (CFG weight : autoguidance weight)")
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    preset = load_tiny()
    bad, _ = load_ddpm_file(a.bad)
    k = len(preset.class_names)
    x_T, y = gaussian_class_batch(preset, a.n, a.seed)
    process = preset.diffusion("ddim50")
    for pair in a.settings.split(","):
        w, ag = (float(v) for v in pair.split(":"))
        t0 = time.time()
        model = AutoGuided(preset.unet, bad.eval(), w, ag)
        with torch.no_grad():
            imgs = torch.cat([process.sample(model, xb, yb, method="ddim") for xb, yb in zip(x_T.split(64), y.split(64))])
        acc = per_class_accuracy(judge_probs(preset, imgs), y, k)
        print(f"bad={a.bad.name} w={w:g} a={ag:g}: judge per-class accuracy {acc:.3f} ({a.n} samples, "
              f"{time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
