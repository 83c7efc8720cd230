"""Held-out denoising loss by noise level, and how much of it the class label removes (History 18).

    python scripts/heldout_loss.py data/models/tiny/ddpm.safetensors data/models/tiny/ddpm_low_noise.safetensors \
        --ts 100,200,300,400,500,700 --json data/models/tiny/heldout_loss.json

For each DDPM (exported weights or a training checkpoint, whose EMA is used) and each original timestep t: held-out
test images x_0 ([N, 3, 32, 32] in [-1, 1]) are noised to x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (Ho et al.
2020, Eq. 4; one seeded eps per image, the same for every t and model), and the model's epsilon prediction is scored
by its mean squared error (the training loss, Eq. 14), with the image's own label and with the null label:

- ``mse_label``: the loss the model was trained on, on images it never saw;
- ``mse_null``: the same, unconditional (the classifier-free branch of a model trained with label dropout);
- ``label_gain`` = mse_null - mse_label (models with a null class): how much the label helps denoise at t, i.e. how much class knowledge the
  model brings to that noise level (History 15 located the class decision at t = 100-400).

A deterministic, low-variance measure of whether a fine-tune improved the model where it was trained, without
sampling. Shared eps and images make differences between models paired: every model after the first also gets
``mse_label_minus_first`` and its standard error over the images.

``--symmetry diagonal`` (or ``dihedral``) also scores each model averaged over that pixel-symmetry group
(``symmetry.GroupAveraged``, History 24), with the label: ``mse_label_symmetrized`` and the paired
``symmetrized_minus_plain`` with its standard error.

``--average`` also scores the mean of all the models' predictions (``unet.DenoiserEnsemble``, History 33), last and
paired with the first model.

    python scripts/heldout_loss.py data/models/tiny/ddpm_low_noise.safetensors --ts 100,200,300,400 \
        --symmetry diagonal --json data/models/tiny/heldout_loss_symmetry_expert.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from saliency_lib import data
from saliency_lib.diffusion import GaussianDiffusion
from saliency_lib.presets import load_ddpm_file
from saliency_lib.symmetry import GROUPS, GroupAveraged
from saliency_lib.train import export_weights
from saliency_lib.unet import DenoiserEnsemble
from saliency_lib.weights import atomic_write_bytes


def paired(name: str, diff: torch.Tensor) -> dict[str, float]:
    """``{name: mean, name_se: standard error}`` of per-image differences ``diff`` [N] (paired: same x_0 and eps)."""
    return {name: diff.mean().item(), f"{name}_se": (diff.std() / diff.numel() ** 0.5).item()}


@torch.no_grad()
def heldout_losses(unet: torch.nn.Module, diffusion: GaussianDiffusion, x0: torch.Tensor, y: torch.Tensor,
                   eps: torch.Tensor, ts: list[int], batch: int = 256,
                   with_null: bool = True) -> tuple[list[dict], list[torch.Tensor]]:
    """Per t: mean eps-MSE with the labels ``y`` and, for a UNet with a null class (unless ``with_null`` is
    False), with the null label; and the per-image errors with the labels ([N] per t), for paired comparisons."""
    conditions = [("label", y)]
    if with_null and unet.config.null_class:
        conditions.append(("null", torch.full_like(y, unet.config.null_label)))
    rows, errors = [], []
    for t in ts:
        tt = torch.full((x0.shape[0],), t, dtype=torch.long)
        x_t = diffusion.q_sample(x0, tt, noise=eps)
        err = {}
        for name, labels in conditions:
            pred = torch.cat([unet(x_t[i:i + batch], tt[i:i + batch], y=labels[i:i + batch])[:, :3]
                              for i in range(0, x0.shape[0], batch)])
            err[name] = (pred - eps).pow(2).mean(dim=(1, 2, 3))
        row = {"t": t, "mse_label": err["label"].mean().item()}
        if "null" in err:
            row |= {"mse_null": err["null"].mean().item()} | paired("label_gain", err["null"] - err["label"])
        rows.append(row)
        errors.append(err["label"])
    return rows, errors


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, help="DDPM weights or training checkpoints")
    p.add_argument("--ts", default="100,200,300,400,500,700", help="original timesteps")
    p.add_argument("--n-test", type=int, default=1024, help="held-out test images")
    p.add_argument("--seed", type=int, default=0, help="seed of the shared eps")
    p.add_argument("--symmetry", choices=sorted(GROUPS), default=None,
                   help="also score each model averaged over this pixel-symmetry group (symmetry.py)")
    p.add_argument("--average", action="store_true",
                   help="also score the mean of all the models' predictions (unet.DenoiserEnsemble, History 33), "
                        "paired with the first model")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.average and len(a.paths) < 2:
        p.error("--average needs at least two models")
    ts = [int(t) for t in a.ts.split(",")]
    test = data.make_batch("test", 0, a.n_test)
    eps = torch.randn(test.images.shape, generator=torch.Generator().manual_seed(a.seed))
    results, first_errors, models, first_cfg = [], None, [], None
    with tempfile.TemporaryDirectory() as tmp:
        for i, path in enumerate(a.paths):
            exported = Path(tmp) / f"{i}.safetensors"
            export_weights(path, exported)   # EMA weights of a training checkpoint (a weights file is copied)
            unet, diff_cfg = load_ddpm_file(exported)
            if diff_cfg.prediction != "epsilon":
                raise SystemExit(f"{path}: predicts {diff_cfg.prediction!r}; this script scores epsilon predictions")
            bad = [t for t in ts if not 0 <= t < diff_cfg.num_steps]
            if bad:
                raise SystemExit(f"--ts must lie in [0, {diff_cfg.num_steps}), got {bad}")
            first_cfg = first_cfg or diff_cfg
            if diff_cfg != first_cfg:
                raise SystemExit(f"{path}: trained for {diff_cfg}, the first model for {first_cfg}: the models "
                                 "must share one diffusion process to be compared on the same x_t")
            models.append((path, unet.eval()))
        if a.average:   # the mean of every model's prediction, scored last
            models.append(("mean of " + " + ".join(str(path) for path, _ in models),
                           DenoiserEnsemble([unet for _, unet in models])))
        diffusion = GaussianDiffusion.from_config(first_cfg)   # one process for all (checked above)
        for path, unet in models:
            rows, errors = heldout_losses(unet, diffusion, test.images, test.labels, eps, ts)
            if a.symmetry:   # the same images and eps, the prediction averaged over the group; label only
                sym_rows, sym_errors = heldout_losses(GroupAveraged(unet, GROUPS[a.symmetry]), diffusion, test.images,
                                                      test.labels, eps, ts, with_null=False)
                for r, sym, sym_err, err in zip(rows, sym_rows, sym_errors, errors):
                    r |= {"mse_label_symmetrized": sym["mse_label"]} | paired("symmetrized_minus_plain", sym_err - err)
            if first_errors is None:
                first_errors = errors
            else:   # paired with the first model: the same x_0 and eps
                for r, err, first in zip(rows, errors, first_errors):
                    r |= paired("mse_label_minus_first", err - first)
            results.append({"path": str(path), "rows": rows})
            print(path)
            for r in rows:
                print(f"  t={r['t']:4d}  mse label {r['mse_label']:.5f}" + (
                    f"  null {r['mse_null']:.5f}  label gain {r['label_gain']:.5f} +- {r['label_gain_se']:.5f}"
                    if "mse_null" in r else "  (no null class)") + (
                    f"  vs the first model {r['mse_label_minus_first']:+.5f} +- {r['mse_label_minus_first_se']:.5f}"
                    if "mse_label_minus_first" in r else "") + (
                    f"  {a.symmetry}-averaged {r['mse_label_symmetrized']:.5f} ({r['symmetrized_minus_plain']:+.5f}"
                    f" +- {r['symmetrized_minus_plain_se']:.5f})" if "mse_label_symmetrized" in r else ""), flush=True)
    if a.json:
        atomic_write_bytes(a.json, json.dumps({"n_test": a.n_test, "seed": a.seed, "symmetry": a.symmetry,
                                               "models": results},
                                              indent=1).encode())


if __name__ == "__main__":
    main()
