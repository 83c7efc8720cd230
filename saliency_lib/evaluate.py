"""Measurements with the judge models only (never the IG classifier): masks, IoU, class accuracy, CIs.

    python -m saliency_lib.evaluate quality            # the tiny preset's quality bars (model card)
    python -m saliency_lib.evaluate quality --quick    # a small subset (tests)
    python -m saliency_lib.evaluate ig-classifiers     # compare IG classifiers (model card table)

Images are ``[N, 3, H, W]`` in [-1, 1]; masks ``[N, 1, H, W]`` bool.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from . import data
from .errors import SaliencyNoiseError
from .noise import mix_with_gaussian, standardize
from .pipeline import Sampler, craft_noise, generate
from .presets import Preset, load_preset


# ------------------------------------------------------------------------------------ judge
def judge_masks(preset: Preset, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Object masks predicted by the judge segmenter: bool ``[N, 1, H, W]``."""
    seg = _require(preset.judge_segmenter, "judge_segmenter", preset)
    norm = seg.config.normalization
    with torch.no_grad():
        return torch.cat([seg(norm.from_diffusion(x)) > 0 for x in images.split(batch)])


def judge_probs(preset: Preset, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Class probabilities of the judge classifier ``[N, num_classes]``."""
    clf = _require(preset.judge_classifier, "judge_classifier", preset)
    norm = clf.config.normalization
    with torch.no_grad():
        return torch.cat([clf(norm.from_diffusion(x)).softmax(-1) for x in images.split(batch)])


def _require(model: nn.Module | None, name: str, preset: Preset) -> nn.Module:
    if model is None:
        raise SaliencyNoiseError(f"preset {preset.name!r} has no {name}; measurements need the tiny preset")
    return model


# ------------------------------------------------------------------------------------ metrics
def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU per sample ``[N]`` of two bool masks ``[N, 1, H, W]`` (1 where both are empty)."""
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def centroid(mask: torch.Tensor) -> torch.Tensor:
    """Centroid (x, y) in pixels ``[N, 2]`` of bool masks; NaN for an empty mask."""
    n, _, h, w = mask.shape
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    m = mask[:, 0].float()
    area = m.flatten(1).sum(1)
    cx = (m * xx).flatten(1).sum(1) / area
    cy = (m * yy).flatten(1).sum(1) / area
    return torch.stack([cx, cy], 1)


def centroid_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance in pixels between the centroids of two masks ``[N]`` (NaN where one is empty)."""
    return (centroid(a) - centroid(b)).norm(dim=1)


def bootstrap_ci(values: Sequence[float] | np.ndarray, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """Mean and percentile bootstrap CI ``(mean, lo, hi)`` over the given per-unit values (e.g. guides)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(1)
    a = (1 - level) / 2
    return float(v.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def per_class_accuracy(probs: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """Mean over classes of the accuracy within each class."""
    pred = probs.argmax(1)
    accs = [(pred[target == c] == c).float().mean().item() for c in range(num_classes) if (target == c).any()]
    return float(np.mean(accs))


# ------------------------------------------------------------------------------------ layout protocol
def layout_scores(preset: Preset, guide_masks: torch.Tensor, noises: torch.Tensor, sampler: Sampler,
                  seed: int = 0, batch: int = 64) -> dict[str, torch.Tensor]:
    """Generate every target class from each noise; score with the judge.

    guide_masks: ``[G, 1, S, S]``; noises: ``[G, 3, S, S]`` (x_T). Returns per (guide, class) tensors
    ``[G, K]``: ``iou`` (generated object mask vs guide mask), ``centroid_dist``, ``correct`` (judge
    predicts the target class), plus the images ``[G, K, 3, S, S]`` and ``seconds_per_image``.
    """
    g, k = noises.shape[0], len(preset.class_names)
    x_T = noises.repeat_interleave(k, 0)
    y = torch.arange(k).repeat(g)
    t0 = time.time()
    images = torch.cat([generate(preset, xb, yb, sampler, seed=seed + i)
                        for i, (xb, yb) in enumerate(zip(x_T.split(batch), y.split(batch)))])
    seconds = (time.time() - t0) / images.shape[0]
    masks = judge_masks(preset, images)
    gm = guide_masks.repeat_interleave(k, 0)
    probs = judge_probs(preset, images)
    return {"iou": mask_iou(masks, gm).view(g, k), "centroid_dist": centroid_distance(masks, gm).view(g, k),
            "correct": (probs.argmax(1) == y).float().view(g, k), "images": images.view(g, k, *images.shape[1:]),
            "seconds_per_image": torch.tensor(seconds)}


# ------------------------------------------------------------------------------------ quality bars
def model_metrics(preset: Preset, n_test: int = 2048, log: Callable[[str], None] = print) -> dict:
    """Judge accuracy, segmenter mIoU, IG classifier accuracy and confidence on the ``test`` split."""
    out = {}
    test = data.make_batch("test", 0, n_test)
    probs = judge_probs(preset, test.images)
    out["judge_accuracy"] = (probs.argmax(1) == test.labels).float().mean().item()
    out["judge_confidence"] = probs.max(1).values.mean().item()
    out["segmenter_miou"] = mask_iou(judge_masks(preset, test.images), test.masks).mean().item()
    with torch.no_grad():
        p_ig = preset.classifier(preset.normalization.from_diffusion(test.images)).softmax(-1)
    out["ig_classifier_accuracy"] = (p_ig.argmax(1) == test.labels).float().mean().item()
    out["ig_classifier_confidence"] = p_ig.max(1).values.mean().item()
    log(f"on {n_test} test images: judge classifier accuracy {out['judge_accuracy']:.4f} (confidence "
        f"{out['judge_confidence']:.4f}); segmenter mIoU {out['segmenter_miou']:.4f}; IG classifier accuracy "
        f"{out['ig_classifier_accuracy']:.4f}, confidence {out['ig_classifier_confidence']:.4f}")
    return out


@dataclass
class QualityArgs:
    n_test: int = 2048          # held-out samples for the judge and IG classifier
    n_samples: int = 256        # DDPM samples per sampler (class-balanced)
    n_guides: int = 32          # held-out guides for the phenomenon
    ig_steps: int = 1000        # IG snapshot k
    strength: float = 0.3       # strength of the crafted noise (mix with fresh Gaussian noise)
    ddpm_steps: int = 250       # the ancestral sampler's respaced steps
    seed: int = 0


def quality(preset: Preset, args: QualityArgs, cache_dir: Path | None = None,
            log: Callable[[str], None] = print) -> dict:
    """The tiny preset's quality bars (issue: judge >= 97%, segmenter >= 0.9, DDPM >= 90%, phenomenon)."""
    out: dict = {"args": dataclasses.asdict(args), **model_metrics(preset, args.n_test, log)}
    k = len(preset.class_names)
    y = torch.arange(args.n_samples) % k
    gen = torch.Generator().manual_seed(args.seed)
    x_T = torch.randn((args.n_samples, 3, preset.image_size, preset.image_size), generator=gen)
    for sampler in (Sampler("ddim", 50), Sampler("ddpm", args.ddpm_steps)):
        t0 = time.time()
        imgs = torch.cat([generate(preset, xb, yb, sampler, seed=args.seed + i)
                          for i, (xb, yb) in enumerate(zip(x_T.split(64), y.split(64)))])
        acc = per_class_accuracy(judge_probs(preset, imgs), y, k)
        out[f"gaussian_class_accuracy_{sampler.label}"] = acc
        out[f"seconds_per_image_{sampler.label}"] = (time.time() - t0) / args.n_samples
        log(f"{sampler.label} from Gaussian noise: judge per-class accuracy {acc:.4f} over {args.n_samples} samples")

    guides = data.make_batch("guides", 0, args.n_guides)
    crafted = craft_noise(preset, guides.images, guides.labels, steps=(args.ig_steps,), seed=args.seed,
                          cache_dir=cache_dir)[args.ig_steps]
    fresh = torch.randn(crafted.shape, generator=torch.Generator().manual_seed(args.seed + 1))
    sampler = Sampler("ddim", 50)
    rows = {"gaussian": fresh, f"ig{args.ig_steps}_strength1": crafted,
            f"ig{args.ig_steps}_strength{args.strength}": mix_with_gaussian(crafted, args.strength, fresh=fresh)}
    for name, x in rows.items():
        s = layout_scores(preset, guides.masks, x, sampler, seed=args.seed)
        per_guide = s["iou"].mean(1).numpy()
        mean, lo, hi = bootstrap_ci(per_guide)
        out[f"layout_iou_{name}"] = {"mean": mean, "ci95": [lo, hi],
                                     "class_accuracy": s["correct"].mean().item()}
        log(f"layout IoU {name}: {mean:.3f} [{lo:.3f}, {hi:.3f}] over {args.n_guides} guides x {k} classes "
            f"(DDIM-50); target-class accuracy {s['correct'].mean().item():.3f}")
    return out


# ------------------------------------------------------------------------------------ IG classifier choice
def ig_candidates(preset: Preset, checkpoint_dir: Path, untrained_seed: int = 123) -> dict[str, tuple[nn.Module, float]]:
    """The IG classifiers compared in the model card: name -> (model, temperature)."""
    from .classifiers import ClassifierConfig, SmallResNet, load_classifier

    torch.manual_seed(untrained_seed)
    cands: dict[str, tuple[nn.Module, float]] = {"untrained": (SmallResNet(ClassifierConfig()).eval(), 1.0)}
    for name, path in (("trained", "resnet_plain"), ("trained_ls0.3", "resnet_ls")):
        f = checkpoint_dir / path / "model.safetensors"
        if f.exists():
            cands[name] = (load_classifier(f), 1.0)
    if "trained" in cands:
        cands["trained_T4"] = (cands["trained"][0], 4.0)
    return cands


def candidate_metrics(candidates: dict[str, tuple[nn.Module, float]], n_test: int = 1024,
                      log: Callable[[str], None] = print) -> dict[str, dict[str, float]]:
    """Accuracy and mean confidence (softmax of logits / T) of each IG candidate on the test split."""
    test = data.make_batch("test", 0, n_test)
    out = {}
    for name, (clf, temperature) in candidates.items():
        with torch.no_grad():
            p = (clf(clf.config.normalization.from_diffusion(test.images)) / temperature).softmax(-1)
        out[name] = {"accuracy": (p.argmax(1) == test.labels).float().mean().item(),
                     "confidence": p.max(1).values.mean().item(), "temperature": temperature}
        log(f"IG candidate {name}: accuracy {out[name]['accuracy']:.4f}, mean confidence "
            f"{out[name]['confidence']:.4f} ({n_test} test images, T={temperature})")
    return out


def compare_ig_classifiers(preset: Preset, candidates: dict[str, tuple[nn.Module, float]], n_guides: int,
                           steps: Sequence[int], strengths: Sequence[float], seed: int = 0,
                           cache_dir: Path | None = None, log: Callable[[str], None] = print) -> list[dict]:
    """Layout IoU (DDIM-50, every target class) of IG noise against each candidate classifier."""
    from .inversion import cached_invert_gradients
    from .noise import resize

    guides = data.make_batch("guides", 0, n_guides)
    fresh = torch.randn((n_guides, 3, preset.image_size, preset.image_size),
                        generator=torch.Generator().manual_seed(seed + 1))

    def score(crafted: torch.Tensor, s: float) -> dict:
        sc = layout_scores(preset, guides.masks, mix_with_gaussian(crafted, s, fresh=fresh), Sampler("ddim", 50),
                           seed=seed)
        return {"iou": bootstrap_ci(sc["iou"].mean(1).numpy()), "class_accuracy": sc["correct"].mean().item()}

    rows = [{"classifier": "gaussian noise", "k": "-", "strength": 0.0, **score(fresh, 0.0)}]
    log(f"gaussian: IoU {rows[-1]['iou'][0]:.3f}, class acc {rows[-1]['class_accuracy']:.3f}")

    steps = sorted(set(steps) | {0})
    accuracy = candidate_metrics(candidates, 1024, log)
    for i, (name, (clf, temperature)) in enumerate(candidates.items()):
        norm = clf.config.normalization
        acc, conf = accuracy[name]["accuracy"], accuracy[name]["confidence"]
        cfg = dataclasses.replace(preset.ig_config, iterations=max(steps), snapshots=tuple(steps),
                                  temperature=temperature)
        t0 = time.time()
        res, _ = cached_invert_gradients(clf, norm.from_diffusion(guides.images), guides.labels, norm, cfg,
                                         seed=seed, cache_dir=cache_dir)
        ig_seconds = time.time() - t0
        # k = 0 is the seeded randn init, the same for every classifier: scored once
        for k in (steps if i == 0 else [k for k in steps if k]):
            crafted = resize(standardize(res.snapshots[k]), preset.image_size)
            for s in strengths:
                rows.append({"classifier": name if k else "(any: the init)", "k": k, "strength": s,
                             "ig_seconds": ig_seconds, "classifier_accuracy": acc if k else None,
                             "classifier_confidence": conf if k else None, **score(crafted, s)})
                r = rows[-1]
                log(f"{r['classifier']} k={k} strength={s}: IoU {r['iou'][0]:.3f} [{r['iou'][1]:.3f}, "
                    f"{r['iou'][2]:.3f}], class acc {r['class_accuracy']:.3f}")
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m saliency_lib.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality", help="the tiny preset's quality bars")
    q.add_argument("--quick", action="store_true", help="small subset (seconds, for tests)")
    q.add_argument("--json", type=Path, help="write the results here")
    q.add_argument("--cache", type=Path, default=None, help="IG cache folder")
    for f in dataclasses.fields(QualityArgs):
        q.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None)
    mm = sub.add_parser("models", help="judge and IG-classifier metrics only (seconds)")
    mm.add_argument("--n-test", type=int, default=2048)
    mm.add_argument("--json", type=Path)
    mm.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="also report the IG candidates")
    c = sub.add_parser("ig-classifiers", help="compare IG classifiers (trained, label-smoothed, T=4, untrained)")
    c.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="training outputs folder")
    c.add_argument("--n-guides", type=int, default=16)
    c.add_argument("--steps", default="300", help="IG snapshot steps k (0, the init, is always scored once)")
    c.add_argument("--strengths", default="1.0,0.3")
    c.add_argument("--cache", type=Path, default=None, help="IG cache folder")
    c.add_argument("--json", type=Path)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    preset = load_preset(a.preset)
    if a.cmd == "quality":
        base = QualityArgs(n_test=128, n_samples=16, n_guides=2, ig_steps=20, ddpm_steps=20) if a.quick else QualityArgs()
        over = {f.name: getattr(a, f.name) for f in dataclasses.fields(QualityArgs) if getattr(a, f.name) is not None}
        res = quality(preset, dataclasses.replace(base, **over), cache_dir=a.cache)
    elif a.cmd == "models":
        res = model_metrics(preset, a.n_test)
        res["ig_candidates"] = candidate_metrics(ig_candidates(preset, a.checkpoints), a.n_test)
    else:
        res = compare_ig_classifiers(preset, ig_candidates(preset, a.checkpoints), a.n_guides,
                                     [int(k) for k in a.steps.split(",")],
                                     [float(s) for s in a.strengths.split(",")], cache_dir=a.cache)
    if a.json:
        from .weights import atomic_write_bytes
        atomic_write_bytes(a.json, json.dumps(res, indent=2).encode())


if __name__ == "__main__":
    main()
