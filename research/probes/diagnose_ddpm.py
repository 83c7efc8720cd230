"""Where does the tiny DDPM go wrong? Three measurements against the held-out data (judge models only).

    python scripts/diagnose_ddpm.py --json data/models/tiny/ddpm_diagnostics.json

Classifier guidance stays off throughout: this diagnoses the DDPM (with its classifier-free guidance) alone.

1. **Sample statistics** of DDIM-50 samples from Gaussian noise (unguided and with the preset's w) next
   to the data's: mean |x|, the fraction of saturated pixels (|x| > 0.95) and the mean magnitude of an image's
   average colour (all on [-1, 1] images). A model that matches the data matches these.
2. **Predicted x_0 by noise level**: held-out test images are noised to x_t (Eq. 2 of Ho et al., the same
   eps for every t) and the model's x_0 prediction (clipped to [-1, 1], as the samplers use it) is compared with
   the truth. The reference is the best prediction that ignores x_t: the test set's mean image. Above it, the
   sampler's first steps start from a worse guess than "average image".
3. **Truncated start**: DDIM-50 started part-way (at original timestep ~780 or ~700) from the same pure
   Gaussian noise, i.e. skipping the highest noise levels, against the full chain: judge per-class accuracy
   and the saturation statistics. At t = 700 the signal scale sqrt(alpha_bar_t) is 0.08, so pure noise is close
   to a valid x_t there.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from saliency_lib import data
from saliency_lib.evaluate import gaussian_class_batch, image_stats, judge_probs, per_class_accuracy
from saliency_lib.pipeline import Sampler
from saliency_lib.presets import load_tiny
from saliency_lib.weights import atomic_write_bytes


def sample(preset, x_T: torch.Tensor, y: torch.Tensor, steps: int, guidance: float, start_index: int | None = None):
    diffusion = preset.diffusion(Sampler("ddim", steps).respacing)
    model = preset.denoiser(guidance, classifier_scale=0.0)   # the DDPM alone: classifier guidance off
    with torch.no_grad():
        return torch.cat([diffusion.sample(model, xb, yb, method="ddim", start_index=start_index)
                          for xb, yb in zip(x_T.split(64), y.split(64))])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=128, help="samples per condition (class-balanced)")
    p.add_argument("--n-test", type=int, default=256, help="held-out test images for the x_0 predictions")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--starts", default="780,700", help="original timesteps to start the truncated chains at")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    preset = load_tiny()
    k, w = len(preset.class_names), preset.guidance_weight
    res: dict = {"args": vars(a), "guidance_weight": w}
    test = data.make_batch("test", 0, a.n_test)
    res["data"] = image_stats(test.images)
    print("data:", res["data"], flush=True)

    # 2. predicted x_0 against the truth, by noise level
    diffusion = preset.diffusion(None)
    eps = torch.randn(test.images.shape, generator=torch.Generator().manual_seed(a.seed + 1))
    mean_image = test.images.mean(0, keepdim=True)
    res["mean_image_mse"] = ((mean_image - test.images) ** 2).mean().item()
    res["pred_x0"] = []
    for t in (999, 900, 800, 700, 500, 300, 100):
        tt = torch.full((a.n_test,), t)
        with torch.no_grad():
            x0 = torch.cat([diffusion.p_mean_variance(preset.unet, xb, tb, yb)["pred_xstart"] for xb, tb, yb in
                            zip(diffusion.q_sample(test.images, tt, eps).split(64), tt.split(64), test.labels.split(64))])
        row = {"t": t, "mse": ((x0 - test.images) ** 2).mean().item(), **image_stats(x0)}
        res["pred_x0"].append(row)
        print(f"t={t}: pred x_0 MSE {row['mse']:.3f} (mean image: {res['mean_image_mse']:.3f}), "
              f"saturated {row['saturated_fraction']:.3f}", flush=True)

    # 1 and 3. samples from Gaussian noise: statistics, and the truncated chains
    x_T, y = gaussian_class_batch(preset, a.n, a.seed)
    res["samples"] = []
    respaced = preset.diffusion(Sampler("ddim", a.steps).respacing)
    starts = [None] + [int(abs(respaced.timestep_map - int(s)).argmin()) for s in a.starts.split(",")]
    conditions = [(0.0, None)] + [(w, s) for s in starts] if w else [(0.0, s) for s in starts]
    for guidance, start in conditions:
        t0 = time.time()
        imgs = sample(preset, x_T, y, a.steps, guidance, start)
        row = {"guidance": guidance, "start_t": int(respaced.timestep_map[-1 if start is None else start]),
               "judge_per_class_accuracy": per_class_accuracy(judge_probs(preset, imgs), y, k), **image_stats(imgs),
               "seconds": time.time() - t0}
        res["samples"].append(row)
        print(f"DDIM-{a.steps}, w={guidance:g}, start t={row['start_t']}: judge per-class accuracy "
              f"{row['judge_per_class_accuracy']:.3f}, mean |x| {row['mean_abs']:.3f}, saturated "
              f"{row['saturated_fraction']:.3f}", flush=True)
    if a.json:
        atomic_write_bytes(a.json, json.dumps(res, indent=1).encode())


if __name__ == "__main__":
    main()
