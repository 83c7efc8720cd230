"""Seconds per DDPM training step on this machine, float32 against bf16 autocast (model card, History 17 and 27).

    python scripts/bench_train_step.py --batch-sizes 64,128 --steps 8 --json data/models/tiny/bench_train_step.json

Times ``saliency_lib.train.train_step``, the step ``run_training`` takes (the simple loss's forward under
``torch.autocast`` when asked, backward, gradient clipping, AdamW; without the EMA update and checkpoints) for the shipped UNet architecture with its null
class, on one fixed batch of the train split (rendered once, outside the timing), for each batch size and
precision. The first two steps of each setting warm up (oneDNN picks and caches its kernels) and are not timed;
the median of the others is reported, with images per second. Whether bf16 helps depends on the CPU: on CPUs with
AMX tiles (``amx_bf16`` in /proc/cpuinfo) oneDNN runs bf16 convolutions on them; elsewhere bf16 may be emulated and
slower (History 17 measured 2.5x slower on an AMD EPYC). The CPU's model name and flags go into the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from saliency_lib.diffusion import GaussianDiffusion
from saliency_lib.machine import cpu_description
from saliency_lib.train import TINY_DIFFUSION, TINY_UNET, DDPMTrainConfig, ddpm_loss_fn, ddpm_step_inputs
from saliency_lib.training import AUTOCAST_DTYPES, train_step
from saliency_lib.unet import UNet
from saliency_lib.weights import atomic_write_bytes


def time_steps(model: nn.Module, inputs: dict[str, torch.Tensor], loss_fn, autocast: str, steps: int,
               warmup: int = 2) -> list[float]:
    """Wall seconds of ``steps`` training steps after ``warmup`` untimed ones (same batch every step)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        train_step(model, model, opt, loss_fn, inputs, AUTOCAST_DTYPES[autocast])
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", default="64,128", help="comma-separated batch sizes")
    p.add_argument("--precisions", default="none,bf16", help=f"comma-separated, of {sorted(AUTOCAST_DTYPES)}")
    p.add_argument("--steps", type=int, default=8, help="timed steps per setting (after 2 untimed)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    precisions = a.precisions.split(",")
    unknown = [x for x in precisions if x not in AUTOCAST_DTYPES]
    if unknown:
        p.error(f"--precisions: {unknown} unknown; expected some of {sorted(AUTOCAST_DTYPES)}")
    if a.steps < 1:
        p.error("--steps must be at least 1")
    torch.set_num_threads(a.threads)
    diffusion = GaussianDiffusion.from_config(TINY_DIFFUSION)
    loss_fn = ddpm_loss_fn(diffusion)
    rows = []
    for b in (int(x) for x in a.batch_sizes.split(",")):
        inputs = ddpm_step_inputs(0, DDPMTrainConfig(batch_size=b, seed=a.seed, label_dropout=0.15),
                                  diffusion.num_timesteps)
        for precision in precisions:
            torch.manual_seed(a.seed)   # the same initial weights for every setting
            model = UNet(dataclasses.replace(TINY_UNET, null_class=True)).train()
            times = time_steps(model, inputs, loss_fn, precision, a.steps)
            med = statistics.median(times)
            rows.append({"batch_size": b, "autocast": precision, "median_s_per_step": round(med, 4),
                         "images_per_s": round(b / med, 1), "steps_timed": a.steps})
            print(f"batch {b:4d} {precision:5s}: {med:.3f} s/step, {b / med:.0f} images/s", flush=True)
    result = {"cpu": cpu_description(), "threads": a.threads, "torch": torch.__version__, "rows": rows}
    if a.json:
        atomic_write_bytes(a.json, (json.dumps(result, indent=2) + "\n").encode())
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
