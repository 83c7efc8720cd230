"""Discriminator guidance (Kim et al. 2022) on top of the preset's default guidance (History 20).

    python scripts/probe_discriminator_guidance.py --discriminator checkpoints/discriminator/model.safetensors \
        --scales 0,1,2 --n 256 --sampler ddim:50 --json data/models/tiny/discriminator_guidance_ddim50.json

1. How well the discriminator tells real from generated x_t: its held-out fakes (the last ``holdout_fakes`` of the
   file it was trained on, which it never saw) against as many test-split images, both noised with one seeded eps at
   each t; accuracy of the sign of the class-y logit log(d / (1 - d)), and the mean logit of each side.
2. Sampling: the Quality rows' batch (``gaussian_class_batch(preset, n, seed)``, ``generate_batched`` with the
   guided model), the preset's default guidance (History 20 ran it with w = 4, s = 5 and one low-noise expert; the
   preset samples with w = 2 and a chain of experts since History 29), and discriminator guidance at each scale
   (``guidance.DiscriminatorGuidedModel``; scale 0 reproduces the Quality rows exactly).
   Prints the judge's per-class accuracy, per class, and how many misread samples hold almost no object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from saliency_lib import data
from saliency_lib.classifiers import load_noisy_classifier
from saliency_lib.evaluate import class_control, gaussian_class_batch, generate_batched, image_stats
from saliency_lib.guidance import DiscriminatorGuidedModel
from saliency_lib.pipeline import Sampler
from saliency_lib.plotting import save_class_rows
from saliency_lib.presets import load_tiny
from saliency_lib.train import load_fakes
from saliency_lib.weights import atomic_write_bytes, read_metadata

PROBE_TS = (0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 999)


def discriminator_accuracy(disc, diffusion, fakes: torch.Tensor, fake_labels: torch.Tensor, seed: int) -> list[dict]:
    """Per t: accuracy of sign(logit) on held-out fakes and as many test images, and each side's mean logit."""
    real = data.make_batch("test", 0, fakes.shape[0], size=fakes.shape[-1])
    x0 = torch.cat([real.images, fakes])
    y = torch.cat([real.labels, fake_labels])
    is_real = torch.cat([torch.ones(fakes.shape[0]), torch.zeros(fakes.shape[0])]).bool()
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    rows = []
    with torch.no_grad():
        for t in PROBE_TS:
            tt = torch.full((x0.shape[0],), t, dtype=torch.long)
            logit = disc(diffusion.q_sample(x0, tt, noise=eps), tt).gather(1, y.view(-1, 1)).squeeze(1)
            rows.append({"t": t, "accuracy": ((logit > 0) == is_real).float().mean().item(),
                         "mean_logit_real": logit[is_real].mean().item(),
                         "mean_logit_fake": logit[~is_real].mean().item()})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--discriminator", type=Path, required=True, help="train discriminator's model.safetensors")
    p.add_argument("--scales", default="0,1,2", help="discriminator guidance scales")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--sampler", default="ddim:50", help="method:steps (the preset's default guidance)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grids", type=Path, default=Path("/tmp"))
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    a.grids.mkdir(parents=True, exist_ok=True)
    sampler = Sampler.parse(a.sampler)
    scales = [float(s) for s in a.scales.split(",")]
    preset = load_tiny()
    disc = load_noisy_classifier(a.discriminator)
    meta = read_metadata(a.discriminator)
    if meta.get("role") != "discriminator":
        p.error(f"{a.discriminator} is not a discriminator (train discriminator writes role=discriminator)")
    base = preset.diffusion()
    holdout, fakes_path = int(meta["holdout_fakes"]), Path(meta["fakes"])
    accuracy = []
    if holdout and fakes_path.exists():
        fakes, fake_labels = load_fakes(fakes_path, preset.image_size)
        accuracy = discriminator_accuracy(disc, base, fakes[fakes.shape[0] - holdout:],
                                          fake_labels[fakes.shape[0] - holdout:], seed=a.seed)
    else:
        print(f"no held-out fakes to score the discriminator on ({fakes_path} is not here: scripts/sample_fakes.py "
              "makes it); sampling only", flush=True)
    for row in accuracy:
        print(f"t = {row['t']:3d}: discriminator accuracy {row['accuracy']:.3f} (mean logit real "
              f"{row['mean_logit_real']:+.2f}, fake {row['mean_logit_fake']:+.2f}; {holdout} held-out fakes)", flush=True)
    x_T, y = gaussian_class_batch(preset, a.n, a.seed)
    k = len(preset.class_names)
    rows = []
    for s in scales:
        model = DiscriminatorGuidedModel(sampler.denoiser(preset), disc, s, base.alphas_cumprod)
        images, seconds = generate_batched(preset, x_T, y, sampler, a.seed, model=model)
        judged = class_control(preset, images, y)
        wrong = judged.wrong
        colours = image_stats(images)
        row = {"discriminator_scale": s, "judge_per_class_accuracy": judged.per_class_accuracy,
               "accuracy_by_class": dict(zip(preset.class_names, judged.accuracy_by_class)),
               "confusion": judged.confusion.tolist(), "seconds_per_image": seconds / a.n,
               "wrong_without_object": judged.no_object[wrong].float().mean().item() if wrong.any() else None,
               "mean_abs_pixel": colours["mean_abs"], "saturated_fraction": colours["saturated_fraction"]}
        rows.append(row)
        print(f"{sampler.label}, discriminator scale {s:g}: judge per-class accuracy {judged.per_class_accuracy:.3f} "
              f"({a.n} samples); " + ", ".join(f"{c} {v:.2f}" for c, v in row["accuracy_by_class"].items())
              + f"; misread without object {row['wrong_without_object']}; mean |x| {row['mean_abs_pixel']:.2f}, "
              f"saturated {row['saturated_fraction']:.3f}; {seconds / a.n:.2f} s/image", flush=True)
        save_class_rows(images, y, k, a.grids / f"dg_{sampler.method}{sampler.steps}_s{s:g}.png")
    if a.json:
        atomic_write_bytes(a.json, json.dumps({"discriminator": str(a.discriminator), "sampler": a.sampler, "n": a.n,
                                               "seed": a.seed, "discriminator_accuracy": accuracy, "rows": rows},
                                              indent=1).encode())


if __name__ == "__main__":
    main()
