"""Guidance sweep: judge per-class accuracy of samples from Gaussian noise, for each classifier-free guidance
weight w and classifier guidance scale s.

    python scripts/sweep_guidance.py --ddpm checkpoints/ddpm_cfg/last.safetensors --weights 0,1,2,3,5 \
        --n 128 --sampler ddim:50 --json data/models/tiny/guidance_sweep.json
    python scripts/sweep_guidance.py --weights 4 --classifier-scales 0,1,2,4 \
        --noisy-classifier checkpoints/noisy_classifier/last.safetensors
    python scripts/sweep_guidance.py --weights 4 --classifier-scales 5 --noisy-classifier A --noisy-classifier B

One seeded x_T batch with class-balanced targets, the same for every (w, s) (eps = (1 + w) eps(y) - w eps(null),
then minus s sqrt(1 - abar_t) grad log p(y | x_t, t); guidance.py). Prints the judge's per-class accuracy on the
conditioning class, its confusion matrix, the judge segmenter's mean object area (a check that guidance does not
simply erase or inflate objects; also over the misread samples, and how many of those hold almost no object), and
the time per image (on --device); saves a grid per (w, s) under --grids, one row of 16 samples per class. The JSON
keeps the targets and, per row, the judge's class of every sample, so that two runs on the same batch (seed and n)
compare paired: ``scripts/paired_difference.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from saliency_lib.classifiers import NoisyClassifierEnsemble, load_noisy_classifier
from saliency_lib.evaluate import NO_OBJECT_AREA, class_control, gaussian_class_batch, generate_batched
from saliency_lib.pipeline import Sampler
from saliency_lib.plotting import save_class_rows
from saliency_lib.errors import SaliencyNoiseError
from saliency_lib.presets import expert_thresholds, load_tiny, with_ddpm_file, with_low_noise_expert
from saliency_lib.symmetry import GROUPS, with_group_averaging
from saliency_lib.train import export_weights
from saliency_lib.weights import atomic_write_bytes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ddpm", type=Path, default=None, help="DDPM weights or training checkpoint (default: the preset's)")
    p.add_argument("--low-noise-expert", type=Path, nargs="+", action="append", default=[],
                   help="DDPM weights or training checkpoint that takes the timesteps t < --expert-below-t (History 15); "
                        "repeat it (each with its own --expert-below-t, decreasing) to stack experts; several files "
                        "after one flag make that expert the mean of their predictions (unet.DenoiserEnsemble, History 33)")
    p.add_argument("--expert-below-t", type=int, action="append", default=[],
                   help="one per --low-noise-expert, in the same order (default: 500 for a single expert)")
    p.add_argument("--weights", default="0,1,2,3,5")
    p.add_argument("--classifier-scales", default="0",
                   help="classifier guidance scales s (needs a noise-aware classifier: the preset's or --noisy-classifier)")
    p.add_argument("--noisy-classifier", type=Path, action="append", default=[],
                   help="noise-aware classifier weights or training checkpoint (default: the preset's); repeat it to "
                        "guide with the normalised product of several (classifiers.NoisyClassifierEnsemble, History 21)")
    p.add_argument("--symmetry", choices=sorted(GROUPS), default=None,
                   help="average the DDPM's prediction over this pixel-symmetry group (symmetry.py, History 24)")
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--sampler", default="ddim:50", help="method:steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grids", type=Path, default=Path("/tmp"))
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="torch device to sample and judge on (cpu, cuda)")
    a = p.parse_args()
    a.grids.mkdir(parents=True, exist_ok=True)   # grids (and exported weights) go here
    torch.set_num_threads(a.threads)
    preset = load_tiny()
    if a.ddpm is not None:
        exported = a.grids / "sweep_ddpm.safetensors"
        export_weights(a.ddpm, exported)   # EMA weights of a training checkpoint (a weights file is copied)
        preset = with_ddpm_file(preset, exported)
    try:
        below_ts = expert_thresholds(len(a.low_noise_expert), a.expert_below_t)
    except SaliencyNoiseError as err:
        p.error(f"--low-noise-expert / --expert-below-t: {err}")
    for i, (members, below_t) in enumerate(zip(a.low_noise_expert, below_ts)):
        exported = [a.grids / f"sweep_low_noise_expert_{i}_{j}.safetensors" for j in range(len(members))]
        for member, path in zip(members, exported):
            export_weights(member, path)   # EMA weights of a training checkpoint (a weights file is copied)
        preset = with_low_noise_expert(preset, exported, below_t)
    if a.noisy_classifier:
        members = []
        for i, path in enumerate(a.noisy_classifier):
            exported = a.grids / f"sweep_noisy_classifier_{i}.safetensors"
            export_weights(path, exported)
            members.append(load_noisy_classifier(exported))
        classifier = members[0] if len(members) == 1 else NoisyClassifierEnsemble(members).eval()
        preset = dataclasses.replace(preset, noisy_classifier=classifier)
    if a.symmetry:
        preset = with_group_averaging(preset, GROUPS[a.symmetry])
    preset = preset.to(a.device)   # every model; x_T is drawn on the CPU, so each device starts from the same batch
    k = len(preset.class_names)
    x_T, y = gaussian_class_batch(preset, a.n, a.seed)
    y = y.to(a.device)
    Sampler.parse(a.sampler)   # a bad --sampler fails before any sampling
    rows = []
    grid = [(float(w), float(s)) for w in a.weights.split(",") for s in a.classifier_scales.split(",")]
    for w, s in grid:
        sampler = Sampler.parse(a.sampler, guidance=w, classifier_scale=s)
        imgs, seconds = generate_batched(preset, x_T, y, sampler, a.seed)
        dt = seconds / a.n
        judged = class_control(preset, imgs, y)
        acc, confusion, areas, wrong = judged.per_class_accuracy, judged.confusion, judged.areas, judged.wrong
        empty = judged.no_object[wrong]
        rows.append({"weight": w, "classifier_scale": s, "judge_per_class_accuracy": acc,
                     "object_area_fraction": areas.mean().item(), "seconds_per_image": dt,
                     "confusion": confusion.tolist(),   # row: conditioning class, column: the judge's class
                     "object_area_fraction_wrong": areas[wrong].mean().item() if wrong.any() else None,
                     "wrong_without_object": empty.float().mean().item() if wrong.any() else None,
                     "judge_class": judged.predicted.tolist()})   # per sample, for paired comparisons
        print(f"{sampler.label}: judge per-class accuracy {acc:.3f}, object area {areas.mean():.3f} ({a.n} samples), "
              f"{dt * 1000:.0f} ms/image", flush=True)
        print("  confusion (rows: conditioning class, columns: judge):", *preset.class_names, sep=" ")
        for c, (name, row) in enumerate(zip(preset.class_names, confusion.tolist())):
            print(f"  {name:>10s} " + " ".join(f"{v:3d}" for v in row) + f"   {row[c] / max(sum(row), 1):.2f}")
        if wrong.any():
            print(f"  misread samples: mean object area {areas[wrong].mean():.3f} (all: {areas.mean():.3f}); "
                  f"{empty.float().mean():.2f} of them have almost no object (area < {NO_OBJECT_AREA})", flush=True)
        save_class_rows(imgs, y, k, a.grids / f"cfg_{sampler.method}{sampler.steps}_w{w:g}_s{s:g}.png")
    if a.json:
        atomic_write_bytes(a.json, json.dumps({"ddpm": str(a.ddpm), "low_noise_expert": [str(m[0]) if len(m) == 1 else [str(e) for e in m]
                                                                    for m in a.low_noise_expert],
                                               "expert_below_t": below_ts, "symmetry": a.symmetry, "noisy_classifier": [str(c) for c in a.noisy_classifier] or None,
                                               "sampler": a.sampler, "n": a.n, "seed": a.seed, "device": a.device,
                                               "target": y.tolist(), "rows": rows}, indent=1).encode())


if __name__ == "__main__":
    main()
