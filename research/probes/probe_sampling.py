"""Sampling-side probes (model card, History 14): can a change of the sampler, rather than of the DDPM, raise how
often the tiny DDPM draws the requested class?

    python scripts/probe_sampling.py --n 128 --json data/models/tiny/sampling_probes.json
    python scripts/probe_sampling.py --n 256 --probes default,interval --samplers ddim:50,ddpm:250 \
        --json data/models/tiny/sampling_probes_interval.json

Every probe samples the same seeded Gaussian x_T batch with class-balanced targets as `sweep_guidance.py` (seed 0,
batches of 64 seeded 0, 1, ...), so the `default` row reproduces its w = 4, s = 5 figure. The probes, each on top
of the preset's default guidance (classifier-free w = 4, classifier guidance s = 5 when History 14 ran them; w = 2
since History 29) unless it says otherwise:

- ``interval``: classifier-free guidance only for t < 700, with w = 6, and none above (Kynkaanniemi et al. 2024,
  "Applying guidance in a limited interval"): guidance at the highest noise levels mostly saturates colours.
- ``dynamic-threshold``: Imagen's dynamic thresholding (Saharia et al. 2022) of the predicted x_0 at each step:
  q = max(1, the 95th percentile of |x_0|), x_0 <- clamp(x_0, -q, q) / q, expressed back as epsilon. It targets
  the saturated colours and empty backgrounds History 10-11 traced to the high-noise steps.
- ``x0-guidance-noisy`` / ``x0-guidance-plain``: "forward" universal guidance (Bansal et al. 2023): the gradient of
  log p(y | x0_hat(x_t)) from a classifier of *clean* images, taken through the guided denoiser,
  eps <- eps - s sqrt(1 - abar_t) grad_{x_t} log p(y | x0_hat), s = 20. The classifier reads x0_hat, where it is
  accurate at every t, instead of x_t, where the noise-aware one is near chance above t = 400 (History 12). The
  classifier is the noise-aware one at t = 0 (`noisy`) or the trained clean small ResNet (`plain`).

For each probe: the judge's per-class accuracy on the conditioning class, per class, the guiding classifier's own
agreement with the label (x0-guidance: how much of the gain fools the network it follows), the judge-segmented
object area, the fraction of samples with almost no object (area below `evaluate.NO_OBJECT_AREA`), mean |x| and
the fraction of saturated pixels (|x| > 0.98), and the CPU time per image. Grids of the first 64 samples (column = class) go to --grids.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from saliency_lib.classifiers import load_classifier
from saliency_lib.evaluate import class_control, gaussian_class_batch, generate_batched, image_stats
from saliency_lib.guidance import CFGModel, ClassifierGuidedModel
from saliency_lib.pipeline import Sampler
from saliency_lib.presets import REPO_ROOT, Preset, load_tiny
from saliency_lib.weights import atomic_write_bytes

SATURATED = 0.98        # |x| above this counts as a saturated pixel


def _x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) (Eq. 4 of Ho et al. solved for x_0)."""
    return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()


class _IntervalCFG(nn.Module):
    """Classifier-free guidance with weight ``w`` for t < t_max, the plain conditional model above."""

    def __init__(self, unet: nn.Module, w: float, t_max: int):
        super().__init__()
        self.guided, self.plain, self.t_max = CFGModel(unet, w), unet, t_max

    def forward(self, x_t, t, y=None):
        return (self.guided if int(t[0]) < self.t_max else self.plain)(x_t, t, y=y)


class _DynamicThreshold(nn.Module):
    """Dynamic thresholding of x0_hat at percentile ``pct`` (per sample), returned as the matching epsilon."""

    def __init__(self, model: nn.Module, alphas_cumprod: np.ndarray, pct: float):
        super().__init__()
        self.model, self.pct = model, pct
        self.abar = torch.from_numpy(np.asarray(alphas_cumprod, dtype=np.float64))

    def forward(self, x_t, t, y=None):
        out = self.model(x_t, t, y=y)
        abar = self.abar[t.long()].to(x_t.dtype).view(-1, 1, 1, 1)
        x0 = _x0_from_eps(x_t, out[:, :3], abar)
        flat = x0.abs().flatten(1)
        q = flat.kthvalue(max(1, int(round(self.pct * flat.shape[1]))), dim=1).values.clamp(min=1).view(-1, 1, 1, 1)
        x0 = torch.maximum(torch.minimum(x0, q), -q) / q
        eps = (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()
        return torch.cat([eps, out[:, 3:]], dim=1)


class _X0Guidance(nn.Module):
    """Forward universal guidance: eps - s sqrt(1 - abar_t) grad_{x_t} log p(y | x0_hat(x_t)), the gradient taken
    through ``model``. ``classify(x0)`` -> logits for ``[N, 3, H, W]`` images in [-1, 1]."""

    def __init__(self, model: nn.Module, classify, scale: float, alphas_cumprod: np.ndarray):
        super().__init__()
        self.model, self.classify, self.scale = model, classify, scale
        self.abar = torch.from_numpy(np.asarray(alphas_cumprod, dtype=np.float64))

    def forward(self, x_t, t, y=None):
        abar = self.abar[t.long()].to(x_t.dtype).view(-1, 1, 1, 1)
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            out = self.model(x, t, y=y)
            log_p = F.log_softmax(self.classify(_x0_from_eps(x, out[:, :3], abar)), dim=-1)
            grad = torch.autograd.grad(log_p.gather(1, y.view(-1, 1)).sum(), x)[0]
        eps = out[:, :3].detach() - self.scale * (1 - abar).sqrt() * grad
        return torch.cat([eps, out[:, 3:].detach()], dim=1)


def probes(preset: Preset) -> dict:
    """name -> (the model the sampler calls, the classifier it follows or None)."""
    abar = preset.diffusion().alphas_cumprod
    noisy = preset.noisy_classifier.eval()
    plain = load_classifier(REPO_ROOT / "checkpoints" / "resnet_plain" / "model.safetensors").eval()

    def noisy_at_0(x):
        return noisy(x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device))

    return {
        "default": (preset.denoiser(), None),
        "interval": (ClassifierGuidedModel(_IntervalCFG(preset.unet, 6.0, 700), noisy, 5.0, abar), None),
        "dynamic-threshold": (_DynamicThreshold(preset.denoiser(), abar, 0.95), None),
        "x0-guidance-noisy": (_X0Guidance(preset.denoiser(), noisy_at_0, 20.0, abar), noisy_at_0),
        "x0-guidance-plain": (_X0Guidance(preset.denoiser(), plain, 20.0, abar), plain),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--probes", default=None, help="comma-separated subset of the probes (default: all)")
    p.add_argument("--samplers", default="ddim:50", help="comma-separated method:steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grids", type=Path, default=Path("/tmp"))
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    a.grids.mkdir(parents=True, exist_ok=True)   # grids (and exported weights) go here
    torch.set_num_threads(a.threads)
    preset = load_tiny()
    table = probes(preset)
    names = list(table) if a.probes is None else a.probes.split(",")
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"unknown probe(s) {unknown}; expected some of {list(table)}")
    k = len(preset.class_names)
    x_T, y = gaussian_class_batch(preset, a.n, a.seed)
    samplers = [Sampler.parse(spec) for spec in a.samplers.split(",")]   # a bad spec fails before any sampling
    rows = []
    for sampler, name in ((sampler, name) for sampler in samplers for name in names):
        model, follows = table[name]
        imgs, seconds = generate_batched(preset, x_T, y, sampler, a.seed, model=model)   # this probe's model
        seconds /= a.n
        judged = class_control(preset, imgs, y)
        colours = image_stats(imgs, saturated=SATURATED)
        per_class = judged.accuracy_by_class
        row = {"probe": name, "sampler": f"{sampler.method}:{sampler.steps}",
               "judge_per_class_accuracy": judged.per_class_accuracy,
               "judge_accuracy_by_class": dict(zip(preset.class_names, per_class)),
               "object_area_fraction": judged.areas.mean().item(),
               "no_object_fraction": judged.no_object.float().mean().item(),
               "mean_abs_pixel": colours["mean_abs"], "saturated_fraction": colours["saturated_fraction"],
               "seconds_per_image": seconds}
        if follows is not None:
            with torch.no_grad():
                row["guiding_classifier_agreement"] = (follows(imgs).argmax(1) == y).float().mean().item()
        rows.append(row)
        print(f"{name}, {row['sampler']}: judge per-class accuracy {row['judge_per_class_accuracy']:.3f} "
              f"(by class {' '.join(f'{v:.2f}' for v in per_class)}), area {row['object_area_fraction']:.3f}, "
              f"no object {row['no_object_fraction']:.2f}, |x| {row['mean_abs_pixel']:.2f}, "
              f"saturated {row['saturated_fraction']:.2f}"
              + (f", guiding classifier agrees {row['guiding_classifier_agreement']:.3f}" if follows else "")
              + f", {seconds:.2f} s/image", flush=True)
        grid = a.grids / f"probe_{name}_{sampler.method}{sampler.steps}.png"
        torchvision.utils.save_image((imgs[:64] + 1) / 2, grid, nrow=k)   # column c: class c
    if a.json:
        atomic_write_bytes(a.json, json.dumps({"n": a.n, "seed": a.seed, "rows": rows},
                                              indent=1).encode())


if __name__ == "__main__":
    main()
