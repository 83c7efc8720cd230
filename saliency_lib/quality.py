"""The ``tiny`` preset's quality bars (the model card's Quality table) and the choice of the classifier IG inverts.

    python -m saliency_lib.evaluate quality          # judge, segmenter, DDPM class control, the layout phenomenon
    python -m saliency_lib.evaluate ig-classifiers   # layout IoU of IG noise against each candidate classifier
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from . import data
from .errors import SaliencyNoiseError
from .metrics import (
    bootstrap_ci,
    centroid_distance,
    judge_masks,
    judge_probs,
    mask_iou,
    per_class_accuracy,
)
from .noise import mix_with_gaussian
from .pipeline import Sampler, craft_noise, generate
from .presets import Preset


# ------------------------------------------------------------------------------------ sampling in batches
def batched(make: Callable[..., torch.Tensor], *tensors: torch.Tensor, seed: int, batch: int = 64,
            first_index: int = 0) -> tuple[torch.Tensor, float]:
    """``make(*parts, seed=seed, first_index=start)`` over batches of the tensors (split alike; ``start`` the index
    of the batch's first row, counted from ``first_index``), concatenated; + seconds. Per-image noise streams make the
    result independent of ``batch`` up to float rounding."""
    t0 = time.time()
    out = torch.cat([make(*parts, seed=seed, first_index=first_index + i * batch)
                     for i, parts in enumerate(zip(*(t.split(batch) for t in tensors)))])
    return out, time.time() - t0


def generate_batched(preset: Preset, x_T: torch.Tensor, y: torch.Tensor, sampler: Sampler, seed: int,
                     batch: int = 64, model: nn.Module | None = None, first_index: int = 0
                     ) -> tuple[torch.Tensor, float]:
    """:func:`~saliency_lib.pipeline.generate` in batches (image i has the noise stream ``(seed, first_index + i)``;
    ``model`` as there); returns images and seconds."""
    return batched(lambda xb, yb, **kw: generate(preset, xb, yb, sampler, model=model, **kw), x_T, y, seed=seed,
                   batch=batch, first_index=first_index)


def gaussian_class_batch(preset: Preset, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch every class-control measurement samples from Gaussian noise: x_T ``[n, 3, S, S]`` ~ N(0, I)
    drawn from ``seed``, and class-balanced targets ``y`` ``[n]`` = 0, 1, ..., K-1, 0, 1, ... (so the same
    ``(n, seed)`` gives the same samples in the quality bars and in every sweep or probe script)."""
    if n < 1:
        raise SaliencyNoiseError(f"need at least one sample, got n={n}")
    x_T = torch.randn((n, 3, preset.image_size, preset.image_size), generator=torch.Generator().manual_seed(seed))
    return x_T, torch.arange(n) % len(preset.class_names)


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
    images, seconds = generate_batched(preset, x_T, y, sampler, seed, batch)
    seconds /= images.shape[0]
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
    if preset.noisy_classifier is not None:
        out["noisy_classifier_accuracy_by_t"] = noisy_classifier_accuracy(preset, test)
        log("noise-aware classifier accuracy on x_t: " + ", ".join(
            f"t={t}: {a:.3f}" for t, a in out["noisy_classifier_accuracy_by_t"].items()))
    return out


def noisy_classifier_accuracy(preset: Preset, test: data.ShapeBatch,
                              timesteps: Sequence[int] = (0, 100, 200, 300, 400, 500, 600, 700, 800, 999),
                              seed: int = 0) -> dict[str, float]:
    """Accuracy of the classifier-guidance classifier p(y | x_t, t) on x_t ~ q(x_t | x_0) (Eq. 2-3) of test images,
    at each timestep (one seeded noise draw)."""
    diffusion = preset.diffusion()
    device = next(preset.noisy_classifier.parameters()).device
    noise = torch.randn(test.images.shape, generator=torch.Generator().manual_seed(seed)).to(device)
    images, labels = test.images.to(device), test.labels.to(device)
    out = {}
    with torch.no_grad():
        for t in timesteps:
            tt = torch.full((images.shape[0],), t, dtype=torch.long, device=device)
            logits = preset.noisy_classifier(diffusion.q_sample(images, tt, noise=noise), tt)
            out[str(t)] = (logits.argmax(1) == labels).float().mean().item()
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
    x_T, y = gaussian_class_batch(preset, args.n_samples, args.seed)
    out["guidance_weight"] = preset.guidance_weight
    out["classifier_scale"] = preset.classifier_scale
    samplers = [Sampler("ddim", 50), Sampler("ddpm", args.ddpm_steps)]
    if preset.classifier_scale:  # the same DDPM with classifier-free guidance only, for reference
        samplers.insert(0, Sampler("ddim", 50, classifier_scale=0.0))
    if preset.guidance_weight or preset.classifier_scale:  # the same DDPM without any guidance, for reference
        samplers.insert(0, Sampler("ddim", 50).unguided(preset))
    for sampler in samplers:
        imgs, seconds = generate_batched(preset, x_T, y, sampler, args.seed)
        acc = per_class_accuracy(judge_probs(preset, imgs), y, k)
        out[f"gaussian_class_accuracy_{sampler.label}"] = acc
        out[f"seconds_per_image_{sampler.label}"] = seconds / args.n_samples
        log(f"{sampler.label} from Gaussian noise: judge per-class accuracy {acc:.4f} over {args.n_samples} samples")

    out.update({f"layout_iou_{name}": row for name, row in
                quality_layout_rows(preset, args, Sampler("ddim", 50), cache_dir, log).items()})
    return out


def quality_layout_noises(preset: Preset, args: QualityArgs, cache_dir: Path | None = None, start: int = 0
                          ) -> tuple[data.ShapeBatch, dict[str, torch.Tensor]]:
    """The held-out guides of the phenomenon rows (``args.n_guides`` of the ``guides`` split from ``start``; the
    Quality rows use 0) and their three x_T ``[G, 3, S, S]`` by name: Gaussian noise, the IG snapshot
    ``args.ig_steps`` (the paper's recipe) and its mix with that Gaussian noise at ``args.strength``."""
    guides = data.make_batch("guides", start, args.n_guides)
    crafted = craft_noise(preset, guides.images, guides.labels, steps=(args.ig_steps,), seed=args.seed,
                          cache_dir=cache_dir)[args.ig_steps]
    fresh = torch.randn(crafted.shape, generator=torch.Generator().manual_seed(args.seed + 1))
    return guides, {"gaussian": fresh, f"ig{args.ig_steps}_strength1": crafted,
                    f"ig{args.ig_steps}_strength{args.strength}": mix_with_gaussian(crafted, args.strength,
                                                                                     fresh=fresh)}


def quality_layout_rows(preset: Preset, args: QualityArgs, sampler: Sampler, cache_dir: Path | None = None,
                        log: Callable[[str], None] = print, start: int = 0) -> dict[str, dict]:
    """The phenomenon rows of :func:`quality`: ``args.n_guides`` held-out guides (from guide ``start``; the Quality
    rows use 0) x every target class from Gaussian noise, the IG snapshot ``args.ig_steps`` (the paper's recipe)
    and its mix at ``args.strength``; per row the layout IoU's mean and 95% bootstrap interval over guides, the
    target-class accuracy, and each guide's IoU (mean over the target classes; for paired comparisons)."""
    guides, noises = quality_layout_noises(preset, args, cache_dir, start=start)
    return layout_rows(preset, guides, noises, sampler, args.seed, f"guides {start}-{start + args.n_guides - 1}", log)


def layout_rows(preset: Preset, guides: data.ShapeBatch, noises: Mapping[str, torch.Tensor], sampler: Sampler,
                seed: int = 0, where: str = "", log: Callable[[str], None] = print) -> dict[str, dict]:
    """:func:`quality_layout_rows` for noises already made (``noises``: name -> x_T ``[G, 3, S, S]``, one per guide
    of ``guides``), so that several samplers score one set: per noise the layout IoU's mean and 95% bootstrap
    interval over guides, the target-class accuracy and each guide's IoU (mean over the target classes)."""
    rows = {}
    for name, x in noises.items():
        s = layout_scores(preset, guides.masks, x, sampler, seed=seed)
        per_guide = s["iou"].mean(1).numpy()
        mean, lo, hi = bootstrap_ci(per_guide)
        rows[name] = {"mean": mean, "ci95": [lo, hi], "class_accuracy": s["correct"].mean().item(),
                      "per_guide_iou": per_guide.tolist()}
        log(f"layout IoU {name}: {mean:.3f} [{lo:.3f}, {hi:.3f}] over {where or f'{len(per_guide)} guides'} x "
            f"{len(preset.class_names)} classes ({sampler.label}); target-class accuracy "
            f"{rows[name]['class_accuracy']:.3f}")
    return rows


# ------------------------------------------------------------------------------------ IG classifier choice
def ig_candidates(preset: Preset) -> dict[str, tuple[nn.Module, float]]:
    """The IG classifiers compared in the model card and the protocol: name -> (model, temperature). The preset's
    own IG classifier (on tiny an untrained small ResNet, so named "untrained"), its trained alternatives
    (``Preset.ig_alternatives``) and, when there is a trained one, the same at temperature 4."""
    own = "untrained" if str(preset.info.get("ig_classifier_source", "")).startswith("untrained") else "shipped"
    cands: dict[str, tuple[nn.Module, float]] = {own: (preset.classifier, 1.0)}
    cands.update({name: (model, 1.0) for name, model in preset.ig_alternatives.items()})
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


def candidate_noise(preset: Preset, classifier: nn.Module, temperature: float, guides: data.ShapeBatch,
                    snapshots: Sequence[int], seed: int = 0, cache_dir: Path | None = None,
                    part: tuple[int, int] | None = None) -> tuple[dict[int, torch.Tensor], float]:
    """IG (the preset's settings, ``temperature``) against a candidate classifier (:func:`~saliency_lib.pipeline.craft_noise` with
    ``classifier``): standardized snapshots ``k -> [G, 3, S, S]`` at the DDPM resolution, and the IG wall time (NaN
    for cache entries that did not record it). ``part``: as in :func:`~saliency_lib.pipeline.craft_noise`."""
    cfg = dataclasses.replace(preset.ig_config, iterations=max(snapshots), temperature=temperature)
    crafted = craft_noise(preset, guides.images, guides.labels, steps=snapshots, seed=seed, ig=cfg,
                          cache_dir=cache_dir, classifier=classifier, part=part)
    return crafted.noises, crafted.stats.get("wall_seconds", float("nan"))


def compare_ig_classifiers(preset: Preset, candidates: dict[str, tuple[nn.Module, float]], n_guides: int,
                           steps: Sequence[int], strengths: Sequence[float], seed: int = 0,
                           cache_dir: Path | None = None, log: Callable[[str], None] = print) -> list[dict]:
    """Layout IoU (DDIM-50, every target class) of IG noise against each candidate classifier."""
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
        acc, conf = accuracy[name]["accuracy"], accuracy[name]["confidence"]
        noises, ig_seconds = candidate_noise(preset, clf, temperature, guides, steps, seed, cache_dir)
        # k = 0 is the seeded randn init, the same for every classifier: scored once
        for k in (steps if i == 0 else [k for k in steps if k]):
            crafted = noises[k]
            for s in strengths:
                rows.append({"classifier": name if k else "(any: the init)", "k": k, "strength": s,
                             "ig_seconds": ig_seconds, "classifier_accuracy": acc if k else None,
                             "classifier_confidence": conf if k else None, **score(crafted, s)})
                r = rows[-1]
                log(f"{r['classifier']} k={k} strength={s}: IoU {r['iou'][0]:.3f} [{r['iou'][1]:.3f}, "
                    f"{r['iou'][2]:.3f}], class acc {r['class_accuracy']:.3f}")
    return rows
