"""Judge per-class accuracy of unguided DDIM-50 samples from Gaussian noise, for several DDPM weight files.

    python scripts/compare_ddpms.py checkpoints/gpu_ddpm/nrb1_ema.safetensors checkpoints/gpu_ddpm/nrb2_ema.safetensors

128 class-balanced samples from one seeded x_T batch per model (the tiny preset's judge classifier); also
prints the CPU time per image and saves a grid of 64 samples next to /tmp.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import torch
import torchvision

from saliency_lib.evaluate import judge_probs, per_class_accuracy
from saliency_lib.pipeline import Sampler, generate
from saliency_lib.presets import load_tiny
from saliency_lib.unet import load_unet


def main(paths: list[str], n: int = 128) -> None:
    torch.set_num_threads(2)
    preset = load_tiny()
    y = torch.arange(8).repeat(n // 8)
    x_T = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for path in paths:
        p = dataclasses.replace(preset, unet=load_unet(path).eval())
        t = time.time()
        imgs = generate(p, x_T, y, Sampler("ddim", 50, guidance=0.0))  # unguided: files without a null class too
        dt = time.time() - t
        acc = per_class_accuracy(judge_probs(p, imgs), y, 8)
        print(f"{path}: DDIM-50 judge per-class accuracy {acc:.3f} ({n} samples), {dt / n * 1000:.0f} ms/image")
        torchvision.utils.save_image((imgs[:64] + 1) / 2, f"/tmp/{path.replace('/', '_')}.png", nrow=8)


if __name__ == "__main__":
    main(sys.argv[1:])
