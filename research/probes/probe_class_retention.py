"""At which noise level does the tiny DDPM lose, or decide, the class? (model card, History 15)

    python scripts/probe_class_retention.py --n 128 --starts 100,200,300,400,500,600,700,800,900 \
        --json data/models/tiny/class_retention/default.json
    python scripts/probe_class_retention.py --n 128 --starts 100,200,300,400,600 --conditions keep \
        --guidance 0 --classifier-scale 0 --json data/models/tiny/class_retention/keep_w0_s0.json
    (likewise --guidance 4 --classifier-scale 0, --guidance 0 --classifier-scale 5, and --conditions null)

Held-out ``test`` images, class-balanced (``data.make_batch(..., labels=...)``), are noised to x_t (Eq. 2 of Ho
et al., one seeded eps) at an original timestep t and denoised with DDIM-50 from there (the respaced step nearest
t), with the preset's default guidance (classifier-free w and classifier guidance s; ``--guidance`` and
``--classifier-scale`` override them). The conditions per t:

- ``keep``: conditioned on the image's own class. Label and start agree, so a model that knows the class's outline
  finishes it; a drop below 1 as t grows shows where the model no longer does, once the noise hides the parts that
  tell the class. At t = 999 this tends to the Gaussian-noise score of the Quality section.
- ``swap``: conditioned on another class (the next one, cyclically). The judge's accuracy on the *new* class shows
  how late the class can still be changed, i.e. where it is decided; ``source_kept`` is how often the judge still
  reads the original class.
- ``null``: the null class (no label; the unconditional branch of classifier-free guidance, so only with
  ``--guidance 0 --classifier-scale 0``), scored against the image's own class: how much of ``keep`` the label does.

It tells where a fine-tune or a noise-aware classifier (History 12) would have to act. Classifier guidance's
classifier reads the class only below t of about 300-400.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torchvision

from saliency_lib import data
from saliency_lib.evaluate import class_control, judge_probs
from saliency_lib.pipeline import Sampler
from saliency_lib.presets import load_tiny, with_ddpm_file, with_low_noise_expert
from saliency_lib.train import export_weights
from saliency_lib.unet import TimestepExperts
from saliency_lib.weights import atomic_write_bytes


def unet_bands(unet: torch.nn.Module) -> list[list[int]] | None:
    """The timestep bands ``[t_lo, t_hi)`` of the preset's UNets, from the base down (a chain of experts since
    History 29); None for a single UNet."""
    return [[lo, hi] for _, lo, hi in unet.bands()] if isinstance(unet, TimestepExperts) else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=128, help="test images per t (class-balanced)")
    p.add_argument("--starts", default="100,200,300,400,500,600,700,800,900", help="original timesteps to start at")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps of the full chain")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance w (default: preset's)")
    p.add_argument("--classifier-scale", type=float, default=None, help="classifier guidance s (default: preset's)")
    p.add_argument("--conditions", default="keep,swap", help="comma-separated: keep, swap, null")
    p.add_argument("--ddpm", type=Path, default=None, help="DDPM weights or training checkpoint (default: the preset's)")
    p.add_argument("--low-noise-expert", type=Path, default=None,
                   help="DDPM weights or training checkpoint that takes the timesteps t < --expert-below-t")
    p.add_argument("--expert-below-t", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--grids", type=Path, default=None,
                   help="save, per t and condition, the first 16 misread samples above their test images here")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    preset = load_tiny()
    with tempfile.TemporaryDirectory() as tmp:   # EMA weights of training checkpoints (weights files are copied)
        if a.ddpm is not None:
            export_weights(a.ddpm, Path(tmp) / "ddpm.safetensors")
            preset = with_ddpm_file(preset, Path(tmp) / "ddpm.safetensors")
        if a.low_noise_expert is not None:
            export_weights(a.low_noise_expert, Path(tmp) / "low.safetensors")
            preset = with_low_noise_expert(preset, Path(tmp) / "low.safetensors", a.expert_below_t)
    k = len(preset.class_names)
    y = torch.arange(a.n) % k
    test = data.make_batch("test", 0, a.n, labels=y)
    # the image's own class, the next one, or no class (null: scored against the image's own class)
    targets = {"keep": y, "swap": (y + 1) % k, "null": torch.full_like(y, k)}
    conditions = a.conditions.split(",")
    if not set(conditions) <= set(targets):
        p.error(f"--conditions: expected a comma-separated subset of {sorted(targets)}, got {a.conditions!r}")
    if "null" in conditions and (a.guidance != 0 or a.classifier_scale != 0):
        p.error("--conditions null samples the unconditional model: give --guidance 0 --classifier-scale 0")
    diffusion = preset.diffusion(Sampler("ddim", a.steps).respacing)
    model = preset.denoiser(a.guidance, a.classifier_scale)
    eps = torch.randn(test.images.shape, generator=torch.Generator().manual_seed(a.seed))
    res: dict = {"args": {name: str(v) if isinstance(v, Path) else v for name, v in vars(a).items()},
                 "guidance_weight": preset.guidance_weight if a.guidance is None else a.guidance,
                 "classifier_scale": preset.classifier_scale if a.classifier_scale is None else a.classifier_scale,
                 "unet_bands": unet_bands(preset.unet),
                 "clean_judge_accuracy": (judge_probs(preset, test.images).argmax(1) == y).float().mean().item(),
                 "rows": []}
    for t in (int(s) for s in a.starts.split(",")):
        idx = int(abs(diffusion.timestep_map - t).argmin())
        x_t = diffusion.q_sample(test.images, torch.full((a.n,), idx), eps)
        for cond in conditions:
            target = targets[cond]
            t0 = time.time()
            with torch.no_grad():
                imgs = torch.cat([diffusion.sample(model, xb, yb, method="ddim", start_index=idx)
                                  for xb, yb in zip(x_t.split(64), target.split(64))])
            cc = class_control(preset, imgs, y if cond == "null" else target)
            row = {"t": int(diffusion.timestep_map[idx]), "condition": cond,
                   "judge_accuracy": cc.per_class_accuracy, "accuracy_by_class": cc.accuracy_by_class,
                   "source_kept": (cc.predicted == y).float().mean().item(), "no_object": cc.no_object.float().mean().item(),
                   "seconds": time.time() - t0}
            res["rows"].append(row)
            if a.grids is not None:
                wrong = cc.wrong.nonzero().flatten()[:16]
                a.grids.mkdir(parents=True, exist_ok=True)
                torchvision.utils.save_image((torch.cat([test.images[wrong], imgs[wrong]]) + 1) / 2,
                                             a.grids / f"retention_t{row['t']}_{cond}.png", nrow=max(1, len(wrong)))
            print(f"t={row['t']:4d} {cond:4s}: judge accuracy on the conditioning class {row['judge_accuracy']:.3f}, "
                  f"original class kept {row['source_kept']:.3f}, no object {row['no_object']:.3f} "
                  f"({row['seconds']:.0f} s)", flush=True)
    if a.json:
        atomic_write_bytes(a.json, json.dumps(res, indent=1).encode())


if __name__ == "__main__":
    main()
