"""Robust classifier guidance (Kawar et al. 2022; model card, History 21): how robust each noise-aware classifier is,
and what its guidance gradient looks like.

    python scripts/probe_robust_classifier.py --classifiers shipped=data/models/tiny/noisy_classifier.safetensors \
        robust=checkpoints/robust_nc_e05/model.safetensors --eps 0.5 --json data/models/tiny/robust_classifier.json \
        --figure data/models/tiny/robust_gradients.png

For each classifier: accuracy on test images noised to x_t ~ q(x_t | x_0) (seeded noise), clean and under an L2 PGD
attack of radius --eps (``train.l2_pgd``, --pgd-steps steps), at each --t. The figure shows, for one test image per
class at t = --figure-t, x_t, then per classifier the guidance direction grad_{x_t} log p(y | x_t, t) of the true
class (averaged over RGB and scaled per image to its largest absolute value; red/blue: its sign).
A robust classifier's gradient should follow the object's outline (perceptually aligned gradients); the sampling
effect is measured by ``scripts/sweep_guidance.py --noisy-classifier``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from saliency_lib import data
from saliency_lib.classifiers import load_noisy_classifier
from saliency_lib.diffusion import GaussianDiffusion
from saliency_lib.evaluate import noisy_classifier_accuracy
from saliency_lib.guidance import ClassifierGuidedModel
from saliency_lib.presets import load_tiny
from saliency_lib.train import l2_pgd
from saliency_lib.weights import atomic_write_bytes


def pgd_accuracy_by_t(model, diffusion: GaussianDiffusion, batch: data.ShapeBatch, ts: list[int], eps: float,
                      pgd_steps: int, seed: int, chunk: int = 256) -> dict[str, float]:
    """Accuracy of ``model(x_t, t)`` under ``train.l2_pgd`` on ``batch``'s images noised to each t, with the seeded
    noise draw of ``evaluate.noisy_classifier_accuracy`` (which gives the clean accuracy on the same x_t)."""
    out = {}
    noise = torch.randn(batch.images.shape, generator=torch.Generator().manual_seed(seed))
    for t in ts:
        right = 0
        for i in range(0, len(batch.labels), chunk):
            x0, y = batch.images[i:i + chunk], batch.labels[i:i + chunk]
            tt = torch.full((len(y),), t, dtype=torch.long)
            adv = l2_pgd(model, diffusion.q_sample(x0, tt, noise=noise[i:i + chunk]), tt, y, eps, pgd_steps)
            with torch.no_grad():
                right += (model(adv, tt).argmax(1) == y).sum().item()
        out[str(t)] = round(right / len(batch.labels), 4)
    return out


def gradient_figure(models: dict, diffusion: GaussianDiffusion, batch: data.ShapeBatch, t: int, seed: int,
                    path: Path) -> None:
    """One row per class: x_t, then each classifier's grad_{x_t} log p(y | x_t, t) (RGB mean, signed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = [int((batch.labels == c).nonzero()[0]) for c in range(data.NUM_CLASSES)]
    x0, y = batch.images[picks], batch.labels[picks]
    tt = torch.full((len(y),), t, dtype=torch.long)
    x_t = diffusion.q_sample(x0, tt, noise=torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)))
    grads = {}
    for name, model in models.items():   # the guidance term itself: grad_{x_t} log p(y | x_t, t)
        guided = ClassifierGuidedModel(nn.Identity(), model, 1.0, diffusion.alphas_cumprod)
        g = guided.guidance_grad(x_t, tt, y).mean(1)
        grads[name] = g / g.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1)
    cols = 2 + len(models)
    fig, axes = plt.subplots(len(y), cols, figsize=(1.3 * cols, 1.3 * len(y)))
    for r in range(len(y)):
        panels = [("x_0", (x0[r].permute(1, 2, 0) + 1) / 2, None), (f"x_t, t={t}", (x_t[r].permute(1, 2, 0).clamp(-1, 1) + 1) / 2, None)]
        panels += [(name, g[r], "bwr") for name, g in grads.items()]
        for c, (title, img, cmap) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img.detach().numpy(), cmap=cmap, vmin=-1 if cmap else None, vmax=1 if cmap else None)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=7)
        axes[r, 0].set_ylabel(data.CLASS_NAMES[int(y[r])], fontsize=7)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classifiers", nargs="+", required=True, help="name=weights pairs (noise-aware classifiers)")
    p.add_argument("--eps", type=float, default=0.5, help="L2 radius of the PGD attack, diffusion-space units")
    p.add_argument("--pgd-steps", type=int, default=10)
    p.add_argument("--t", default="0,100,200,300,400")
    p.add_argument("--n-test", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0, help="seeds the noise of x_t")
    p.add_argument("--figure", type=Path, default=None)
    p.add_argument("--figure-t", type=int, default=300)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    models = {}
    for item in a.classifiers:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            p.error(f"--classifiers takes name=weights pairs, got {item!r}")
        models[name] = load_noisy_classifier(path).eval()
    preset = load_tiny()
    diffusion = preset.diffusion()
    ts = [int(t) for t in a.t.split(",")]
    test = data.make_batch("test", 0, a.n_test)
    result = {"eps": a.eps, "pgd_steps": a.pgd_steps, "n_test": a.n_test, "seed": a.seed,
              "classifiers": {name: path for name, path in (c.split("=", 1) for c in a.classifiers)}, "accuracy": {}}
    for name, model in models.items():
        acc = {"clean": noisy_classifier_accuracy(dataclasses.replace(preset, noisy_classifier=model), test, ts, a.seed),
               "pgd": pgd_accuracy_by_t(model, diffusion, test, ts, a.eps, a.pgd_steps, a.seed)}
        result["accuracy"][name] = acc
        print(f"{name}: " + ", ".join(f"t={t}: {acc['clean'][str(t)]:.3f} clean / {acc['pgd'][str(t)]:.3f} PGD"
                                      for t in ts))
    if a.figure is not None:
        gradient_figure(models, diffusion, data.make_batch("test", a.n_test, 256), a.figure_t, a.seed + 1, a.figure)
        print(f"wrote {a.figure}")
    if a.json is not None:
        atomic_write_bytes(a.json, (json.dumps(result, indent=1) + "\n").encode())


if __name__ == "__main__":
    main()
