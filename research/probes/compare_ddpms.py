"""Judge per-class accuracy of samples from Gaussian noise, for several DDPM weight files and samplers.

    python scripts/compare_ddpms.py checkpoints/gpu_ddpm/nrb1_ema.safetensors checkpoints/gpu_ddpm/nrb2_ema.safetensors
    (those two files are in git at d91abff, no longer in the working tree: see the model card's Reproduce block)
    python scripts/compare_ddpms.py --weights 0,2,4 --device cuda --json runs/compare.json a.safetensors b.safetensors
    python scripts/compare_ddpms.py --samplers ddim:50,ddpm:250 --weights 4 a.safetensors   # both quality-bar samplers

``--n`` class-balanced samples from one seeded x_T batch (``--seed``; ``evaluate.gaussian_class_batch``, the
Quality rows' batch for seed 0) per model, scored by the tiny preset's judge
classifier, for each sampler in ``--samplers`` (``ddim:N``: deterministic DDIM with N steps; ``ddpm:N``: ancestral
sampling with N respaced steps, its noise seeded with 0) and each classifier-free guidance weight in ``--weights``
(weights above 0 are skipped for files without a null class), without classifier guidance: it compares the DDPMs
alone (``scripts/sweep_guidance.py`` adds classifier guidance). Prints the time per image on the chosen device and
saves a grid of 64 samples per model and weight under ``--grids``. The JSON keeps the targets and each row's
per-sample judge classes, so that ``scripts/paired_difference.py`` pairs any two rows (of this run or of a
``sweep_guidance.py`` run on the same batch).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
import torchvision

from saliency_lib.evaluate import gaussian_class_batch, judge_probs, per_class_accuracy
from saliency_lib.pipeline import Sampler, generate
from saliency_lib.presets import load_tiny, with_ddpm_file
from saliency_lib.weights import atomic_write_bytes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", help="exported DDPM weight files")
    p.add_argument("--weights", default="0", help="guidance weights w, comma-separated")
    p.add_argument("--samplers", default="ddim:50", help="comma-separated method:steps, e.g. ddim:50,ddpm:250")
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--seed", type=int, default=0, help="x_T batch (evaluate.gaussian_class_batch; 0: the Quality rows')")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--grids", type=Path, default=Path("/tmp"))
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    a.grids.mkdir(parents=True, exist_ok=True)   # grids (and exported weights) go here
    samplers = [Sampler.parse(s) for s in a.samplers.split(",")]
    torch.set_num_threads(a.threads)
    preset = load_tiny().to(a.device)
    k = len(preset.class_names)
    x_T, y = gaussian_class_batch(preset, a.n, a.seed)   # the batch of the Quality rows and sweep_guidance.py
    rows = []
    for path in a.paths:
        m = with_ddpm_file(preset, path)   # its UNet and diffusion process (epsilon or v prediction)
        params = sum(t.numel() for t in m.unet.parameters())
        for base, w in ((s, float(w)) for s in samplers for w in a.weights.split(",")):
            if w > 0 and not m.unet.config.null_class:
                print(f"{path}: no null class, guidance weight {w:g} skipped")
                continue
            sampler = dataclasses.replace(base, guidance=w, classifier_scale=0.0)   # the DDPMs alone
            t = time.time()
            imgs = generate(m, x_T, y, sampler, seed=0)   # on a.device, like the judge
            dt = (time.time() - t) / y.shape[0]
            probs = judge_probs(preset, imgs).cpu()
            acc = per_class_accuracy(probs, y, k)
            imgs = imgs.cpu()
            rows.append({"path": path, "parameters": params, "prediction": m.diffusion_config.prediction,
                         "sampler": f"{sampler.method}:{sampler.steps}", "weight": w, "classifier_scale": 0.0,
                         "judge_per_class_accuracy": acc, "seconds_per_image": dt, "device": a.device,
                         "judge_class": probs.argmax(1).tolist()})   # per sample, for scripts/paired_difference.py
            print(f"{path} ({params:,} parameters): {sampler.label}: judge per-class accuracy {acc:.3f} "
                  f"({y.shape[0]} samples), {dt * 1000:.0f} ms/image on {a.device}", flush=True)
            name = f"{Path(path).stem}_{sampler.method}{sampler.steps}_w{w:g}.png"
            torchvision.utils.save_image((imgs[:64] + 1) / 2, a.grids / name, nrow=8)
    if a.json:
        atomic_write_bytes(a.json, json.dumps({"n": a.n, "seed": a.seed, "target": y.tolist(), "rows": rows},
                                              indent=1).encode())


if __name__ == "__main__":
    main()
