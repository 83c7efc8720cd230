"""Restart sampling (Xu et al. 2023) on the tiny preset (model card, History 22): does re-running the mid-noise
interval where the class is decided (t = 100-400, History 15) with fresh noise raise how often the DDPM draws the
requested class?

    python scripts/probe_restart.py --n 256 --seed 1 --probes none,100-400x1,100-400x2 \
        --json data/models/tiny/restart_ddim50_seed1.json

A probe ``A-BxK`` samples with ``Restart(t_min=A, t_max=B, repeats=K)``: when the reverse process reaches t = A it
jumps forward to t = B with q(x_B | x_A) and runs the same sampler's steps back down to A, K times, then goes on
(``diffusion.GaussianDiffusion.restart_plan``). ``none`` is the sampler itself. Every probe uses the preset's
default guidance (History 22 ran it with classifier-free w = 4, classifier guidance s = 5 and the low-noise expert
below t = 500; since History 29: w = 2, s = 5, a chain of experts) and the
seeded Gaussian x_T batch with class-balanced targets of `sweep_guidance.py` (``--seed``; sampler seeds ``seed +
batch index``), so ``none`` with seed 1 reproduces `default_ddim50_seed1.json`. Prints and writes (after every probe,
atomically) the judge's per-class accuracy, per class, the number of reverse steps (UNet evaluations of the guided
model) and the time per image; saves a grid per probe under --grids, one row of 16 samples per class.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from saliency_lib.diffusion import Restart
from saliency_lib.errors import SaliencyNoiseError
from saliency_lib.evaluate import class_control, gaussian_class_batch, generate_batched
from saliency_lib.pipeline import Sampler
from saliency_lib.plotting import save_class_rows
from saliency_lib.presets import load_tiny
from saliency_lib.weights import atomic_write_bytes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--probes", default="none,100-400x1,100-400x2")
    p.add_argument("--sampler", default="ddim:50", help="method:steps")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--grids", type=Path, default=Path("/tmp/restart_grids"))
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    try:
        probes = {name: Restart.parse(name) for name in a.probes.split(",")}
    except SaliencyNoiseError as err:
        p.error(str(err))
    torch.set_num_threads(a.threads)
    a.grids.mkdir(parents=True, exist_ok=True)
    preset = load_tiny()
    base = Sampler.parse(a.sampler)
    x_T, y = gaussian_class_batch(preset, a.n, a.seed)
    rows = []
    for name, restarts in probes.items():
        sampler = dataclasses.replace(base, restarts=restarts)
        process = preset.diffusion(sampler.respacing)
        steps = sum(not isinstance(move, tuple) for move in process.restart_plan(process.num_timesteps - 1, restarts))
        imgs, seconds = generate_batched(preset, x_T, y, sampler, a.seed)
        judged = class_control(preset, imgs, y)
        rows.append({"probe": name, "restarts": [dataclasses.asdict(r) for r in restarts], "reverse_steps": steps,
                     "judge_per_class_accuracy": judged.per_class_accuracy,
                     "accuracy_by_class": judged.accuracy_by_class, "confusion": judged.confusion.tolist(),
                     "no_object": judged.no_object.float().mean().item(), "seconds_per_image": seconds / a.n})
        print(f"{name:>16s} ({steps} steps): judge per-class accuracy {judged.per_class_accuracy:.3f}, by class "
              f"{[round(v, 2) for v in judged.accuracy_by_class]}, no object {judged.no_object.float().mean():.3f}, "
              f"{seconds / a.n:.2f} s/image", flush=True)
        save_class_rows(imgs, y, len(preset.class_names), a.grids / f"restart_{sampler.method}{sampler.steps}_{name}.png")
        if a.json:
            atomic_write_bytes(a.json, json.dumps({"sampler": a.sampler, "n": a.n, "seed": a.seed,
                                                   "class_names": preset.class_names, "rows": rows}, indent=1).encode())


if __name__ == "__main__":
    main()
