"""Generated samples ("fakes") for training a discriminator (History 20): the preset's DDPM sampled from Gaussian
noise with its default guidance, saved with their conditioning labels.

    python scripts/sample_fakes.py --n 2560 --seed 1000 --sampler ddim:50 --out checkpoints/fakes/ddim50.safetensors

x_T and the class-balanced labels come from ``evaluate.gaussian_class_batch(preset, n, seed)``: use a seed other than
the Quality rows' (0), so the discriminator never sees the samples it is scored on. The file (``images``
``[N, 3, S, S]`` in [-1, 1], ``labels`` ``[N]``, the sampler and seed in the metadata) is rewritten atomically after
every batch, and a rerun with the same arguments resumes after the last complete batch.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from saliency_lib.errors import SaliencyNoiseError
from saliency_lib.evaluate import gaussian_class_batch
from saliency_lib.pipeline import Sampler, generate
from saliency_lib.presets import load_tiny
from saliency_lib.weights import load_tensors, save_tensors


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2560)
    p.add_argument("--seed", type=int, default=1000, help="x_T seed (the Quality rows use 0: keep them apart)")
    p.add_argument("--sampler", default="ddim:50", help="method:steps, sampled with the preset's default guidance")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    if a.seed == 0:
        p.error("--seed 0 is the Quality rows' x_T batch: the discriminator must not train on the samples it is scored on")
    torch.set_num_threads(a.threads)
    sampler = Sampler.parse(a.sampler)
    preset = load_tiny()
    x_T, y = gaussian_class_batch(preset, a.n, a.seed)
    meta = {"sampler": a.sampler, "seed": str(a.seed), "n": str(a.n), "batch": str(a.batch),
            "guidance": json.dumps([preset.guidance_weight, preset.classifier_scale])}
    done: list[torch.Tensor] = []
    if a.out.exists():
        tensors, old = load_tensors(a.out)
        if any(old.get(k) != v for k, v in meta.items()):
            raise SaliencyNoiseError(f"{a.out} was written with other settings ({old}); expected {meta}: "
                                     "remove it or pass --out elsewhere")
        done = list(tensors["images"].split(a.batch))
        print(f"resuming after {tensors['images'].shape[0]} samples", flush=True)
    t0 = time.time()
    for i in range(len(done), (a.n + a.batch - 1) // a.batch):
        sl = slice(i * a.batch, (i + 1) * a.batch)
        done.append(generate(preset, x_T[sl], y[sl], sampler, seed=a.seed + i))
        images = torch.cat(done)
        save_tensors(a.out, {"images": images, "labels": y[:images.shape[0]]}, meta)
        print(f"{images.shape[0]}/{a.n} samples, {(time.time() - t0) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
