"""Measurements with the judge models only (never the IG classifier): masks, IoU, class accuracy, CIs.

    python -m saliency_lib.evaluate quality            # the tiny preset's quality bars (model card)
    python -m saliency_lib.evaluate quality --quick    # a small subset (tests)
    python -m saliency_lib.evaluate ig-classifiers     # compare IG classifiers (model card table)
    python -m saliency_lib.evaluate run                # the full protocol: results/tiny/{results.json,csv,*.png}
    python -m saliency_lib.evaluate run --quick        # the same pipeline at tiny sizes (CI)

Images are ``[N, 3, H, W]`` in [-1, 1]; masks ``[N, 1, H, W]`` bool.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from . import data
from .errors import SaliencyNoiseError
from .noise import mix_with_gaussian, standardize
from .pipeline import Sampler, craft_noise, generate
from .presets import REPO_ROOT, Preset, load_preset


# ------------------------------------------------------------------------------------ judge
def _read(model: nn.Module, f: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch: int
          ) -> torch.Tensor:
    """``f`` of images ``[N, 3, H, W]`` in [-1, 1], moved into ``model.config.normalization``'s space, in batches,
    without gradients; concatenated."""
    norm = model.config.normalization
    with torch.no_grad():
        return torch.cat([f(norm.from_diffusion(x)) for x in images.split(batch)])


def segmenter_masks(seg: nn.Module, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Object masks of a segmenter (``seg.config.normalization`` its input space) for images ``[N, 3, H, W]`` in
    [-1, 1]: bool ``[N, 1, H, W]``."""
    return _read(seg, lambda x: seg(x) > 0, images, batch)


def classifier_probs(clf: nn.Module, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Class probabilities ``[N, num_classes]`` of a classifier (``clf.config.normalization`` its input space) for
    images ``[N, 3, H, W]`` in [-1, 1]."""
    return _read(clf, lambda x: clf(x).softmax(-1), images, batch)


def judge_masks(preset: Preset, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Object masks predicted by the judge segmenter: bool ``[N, 1, H, W]``."""
    return segmenter_masks(_require(preset.judge_segmenter, "judge_segmenter", preset), images, batch)


def judge_probs(preset: Preset, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Class probabilities of the judge classifier ``[N, num_classes]``."""
    return classifier_probs(_require(preset.judge_classifier, "judge_classifier", preset), images, batch)


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


def gaussian_class_batch(preset: Preset, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch every class-control measurement samples from Gaussian noise: x_T ``[n, 3, S, S]`` ~ N(0, I)
    drawn from ``seed``, and class-balanced targets ``y`` ``[n]`` = 0, 1, ..., K-1, 0, 1, ... (so the same
    ``(n, seed)`` gives the same samples in the quality bars and in every sweep or probe script)."""
    if n < 1:
        raise SaliencyNoiseError(f"need at least one sample, got n={n}")
    x_T = torch.randn((n, 3, preset.image_size, preset.image_size), generator=torch.Generator().manual_seed(seed))
    return x_T, torch.arange(n) % len(preset.class_names)


def per_class_accuracy(probs: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """Mean over classes of the accuracy within each class."""
    pred = probs.argmax(1)
    accs = [(pred[target == c] == c).float().mean().item() for c in range(num_classes) if (target == c).any()]
    return float(np.mean(accs))


@dataclass
class PairedClassDifference:
    """Two samplers or models judged on the same x_T batch and targets (:func:`paired_class_difference`)."""
    accuracy_a: float      # per-class accuracy of arm A (mean over classes of the within-class accuracy)
    accuracy_b: float      # the same for arm B
    difference: float      # accuracy_a - accuracy_b
    standard_error: float  # of the difference, paired per sample and stratified by class
    unpaired_standard_error: float  # what it would be for two independent batches of the same size and accuracies
    only_a: int            # samples A draws as the target class and B does not
    only_b: int            # samples B draws as the target class and A does not
    sign_test_p: float     # two-sided exact sign test on the discordant pairs (McNemar's exact test)


def paired_class_difference(target: Sequence[int], predicted_a: Sequence[int], predicted_b: Sequence[int]
                            ) -> PairedClassDifference:
    """Compare two arms scored on the same samples' targets ``[N]`` (class indices), from the judge's classes
    ``predicted_a`` and ``predicted_b`` ``[N]``. Pairing removes the variance the two arms share through their common
    x_T: per class c the difference of within-class accuracies is the mean of d_i = [a_i = y_i] - [b_i = y_i] over
    that class's n_c samples, and the per-class accuracy difference (1/K) sum_c mean_c(d) has the standard error
    sqrt(sum_c var_c(d) / n_c) / K (var_c: the sample variance within class c; 0 for a class of one sample). For
    comparison, the same formula for two independent batches: var_c(d) replaced by var_c(a) + var_c(b)."""
    y, a, b = (np.asarray(v, dtype=np.int64) for v in (target, predicted_a, predicted_b))
    if y.ndim != 1 or y.size == 0 or a.shape != y.shape or b.shape != y.shape:
        raise SaliencyNoiseError(f"paired_class_difference expects three non-empty [N] class lists of one length, got "
                                 f"shapes {y.shape}, {a.shape}, {b.shape}")
    ra, rb = (a == y).astype(np.float64), (b == y).astype(np.float64)
    classes = np.unique(y)
    acc_a = float(np.mean([ra[y == c].mean() for c in classes]))
    acc_b = float(np.mean([rb[y == c].mean() for c in classes]))

    def stratified_se(v: np.ndarray) -> float:   # of the per-class mean of v: sqrt(sum_c var_c(v) / n_c) / K
        return float(np.sqrt(sum(v[y == c].var(ddof=1) / (y == c).sum() for c in classes if (y == c).sum() > 1))
                     ) / len(classes)

    only_a, only_b = int(((ra == 1) & (rb == 0)).sum()), int(((ra == 0) & (rb == 1)).sum())
    m = only_a + only_b   # under H0 each discordant pair favours A or B with probability 1/2
    tail = sum(math.comb(m, i) for i in range(min(only_a, only_b) + 1)) / 2 ** m if m else 1.0
    return PairedClassDifference(accuracy_a=acc_a, accuracy_b=acc_b, difference=acc_a - acc_b,
                                 standard_error=stratified_se(ra - rb),
                                 unpaired_standard_error=float(np.hypot(stratified_se(ra), stratified_se(rb))),
                                 only_a=only_a, only_b=only_b, sign_test_p=min(1.0, 2 * tail))


def confusion_matrix(probs: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[K, K]`` counts: row = target (conditioning) class, column = the class ``probs`` ``[N, K]`` predicts."""
    if probs.ndim != 2 or probs.shape[1] != num_classes or target.shape != probs.shape[:1]:
        raise SaliencyNoiseError(f"confusion_matrix expects probs [N, {num_classes}] and target [N], got "
                                 f"{tuple(probs.shape)} and {tuple(target.shape)}")
    flat = target.long().cpu() * num_classes + probs.argmax(1).cpu()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def accuracy_by_class(confusion: torch.Tensor) -> list[float]:
    """Per target class (row of a :func:`confusion_matrix`), the fraction read as that class (0 for an empty row)."""
    return (confusion.diag().float() / confusion.sum(1).clamp(min=1).float()).tolist()


NO_OBJECT_AREA = 0.02   # a sample whose judge-segmented object covers less of the image holds almost no object


@dataclass
class ClassControl:
    """What the judge reads in samples drawn for target classes ``y`` (:func:`class_control`)."""
    per_class_accuracy: float      # mean over classes of the within-class accuracy on the target class
    confusion: torch.Tensor        # [K, K] counts: row = target class, column = the judge's class
    areas: torch.Tensor            # [N] judge-segmented object area, as a fraction of the image
    target: torch.Tensor           # [N] the requested class
    predicted: torch.Tensor        # [N] the class the judge reads

    @property
    def wrong(self) -> torch.Tensor:
        """[N] bool: the judge reads another class than the target."""
        return self.predicted != self.target

    @property
    def accuracy_by_class(self) -> list[float]:
        return accuracy_by_class(self.confusion)

    @property
    def no_object(self) -> torch.Tensor:
        """[N] bool: almost no object (area below :data:`NO_OBJECT_AREA`)."""
        return self.areas < NO_OBJECT_AREA


def class_control(preset: Preset, images: torch.Tensor, y: torch.Tensor) -> ClassControl:
    """Judge classifier and segmenter on samples ``images`` ``[N, 3, H, W]`` in [-1, 1] drawn for targets ``y``
    ``[N]``: how often, per class, the requested class is drawn, the confusion, and how large the objects are."""
    k = len(preset.class_names)
    probs = judge_probs(preset, images)
    return ClassControl(per_class_accuracy=per_class_accuracy(probs, y, k), confusion=confusion_matrix(probs, y, k),
                        areas=judge_masks(preset, images).float().flatten(1).mean(1), target=y,
                        predicted=probs.argmax(1))


# ------------------------------------------------------------------------------------ layout protocol
def batched(make: Callable[..., torch.Tensor], *tensors: torch.Tensor, seed: int, batch: int = 64
            ) -> tuple[torch.Tensor, float]:
    """``make(*parts, seed=seed + i)`` over batches ``i`` of the tensors (split alike), concatenated; + seconds."""
    t0 = time.time()
    out = torch.cat([make(*parts, seed=seed + i) for i, parts in enumerate(zip(*(t.split(batch) for t in tensors)))])
    return out, time.time() - t0


def generate_batched(preset: Preset, x_T: torch.Tensor, y: torch.Tensor, sampler: Sampler, seed: int,
                     batch: int = 64, model: nn.Module | None = None) -> tuple[torch.Tensor, float]:
    """:func:`generate` in batches (sampler seeds ``seed + batch index``; ``model`` as there); returns images and
    seconds."""
    return batched(lambda xb, yb, seed: generate(preset, xb, yb, sampler, seed=seed, model=model), x_T, y, seed=seed,
                   batch=batch)


def image_stats(x: torch.Tensor, saturated: float = 0.95) -> dict[str, float]:
    """Colour statistics of images ``[N, 3, H, W]`` in [-1, 1] (how far samples are from the data's colours, model
    card History 10): mean |x|, the fraction of pixel values with |x| > ``saturated``, and the mean |colour| of an
    image (its per-channel spatial mean)."""
    return {"mean_abs": x.abs().mean().item(), "saturated_fraction": (x.abs() > saturated).float().mean().item(),
            "mean_colour_abs": x.mean(dim=(2, 3)).abs().mean().item()}


def classifier_embeddings(clf: nn.Module, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Features ``[N, D]`` of a classifier with an ``embed`` method (the judge's :class:`PlainCNN`) for images
    ``[N, 3, H, W]`` in [-1, 1]."""
    if not hasattr(clf, "embed"):
        raise SaliencyNoiseError(f"{type(clf).__name__} has no embed(x) method: kernel distances need a classifier "
                                 "that exposes its features, such as the judge's PlainCNN")
    return _read(clf, clf.embed, images, batch)


def judge_embeddings(preset: Preset, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """The judge classifier's 128-d features of images ``[N, 3, H, W]`` in [-1, 1] (``PlainCNN.embed``)."""
    return classifier_embeddings(_require(preset.judge_classifier, "judge_classifier", preset), images, batch)


def colour_features(images: torch.Tensor) -> torch.Tensor:
    """Per-image colour statistics ``[N, 6]`` of images ``[N, 3, H, W]`` in [-1, 1]: each channel's spatial mean and
    standard deviation. A second feature space for :func:`kernel_distance`, one that sees what the judge's features
    are trained to ignore (colour, contrast, flat backgrounds)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise SaliencyNoiseError(f"colour_features expects images [N, 3, H, W], got {tuple(images.shape)}")
    return torch.cat([images.mean(dim=(2, 3)), images.std(dim=(2, 3))], dim=1)


def _polynomial_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 between samples ``x`` ``[m, D]`` and ``y`` ``[n, D]`` with the kernel
    k(a, b) = (a . b / D + 1)^3 (Binkowski et al. 2018, "Demystifying MMD GANs", Eq. 4 with KID's kernel)."""
    d, m, n = x.shape[1], x.shape[0], y.shape[0]
    kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
    return float((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
                 - 2 * kxy.mean())


def kernel_distance(features: torch.Tensor, reference: torch.Tensor, subset_size: int = 128, n_subsets: int = 100,
                    seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018) between two feature sets ``[N, D]`` and ``[M, D]``, here in
    the judge's feature space (:func:`judge_embeddings`) rather than Inception's: the mean and the standard deviation
    of the unbiased polynomial-kernel MMD^2 over ``n_subsets`` random pairs of subsets of ``subset_size`` drawn
    without replacement from each set (``seed`` fixes them). Both sets are first standardized per feature by the
    reference's mean and standard deviation (this feature space has no fixed scale, unlike Inception's pool
    features, and raw activations of order 10 make the cubic kernel's estimate noise). About 0 (either sign) when
    both sets come from one distribution; unbiased, so unlike the Frechet distance it does not grow as the sample
    shrinks."""
    if features.ndim != 2 or reference.ndim != 2 or features.shape[1] != reference.shape[1]:
        raise SaliencyNoiseError(f"kernel_distance expects two feature sets [N, D] with the same D, got "
                                 f"{tuple(features.shape)} and {tuple(reference.shape)}")
    if not 2 <= subset_size <= min(len(features), len(reference)):
        raise SaliencyNoiseError(f"subset_size must be between 2 and the smaller set's size "
                                 f"({min(len(features), len(reference))}), got {subset_size}")
    if n_subsets < 1:
        raise SaliencyNoiseError(f"n_subsets must be at least 1, got {n_subsets}")
    g = torch.Generator().manual_seed(seed)
    r = reference.double()
    mu, sd = r.mean(0), r.std(0).clamp(min=1e-8)       # standardized by the reference: a kernel of order 1
    f, r = (features.double() - mu) / sd, (r - mu) / sd
    values = [_polynomial_mmd2(f[torch.randperm(len(f), generator=g)[:subset_size]],
                               r[torch.randperm(len(r), generator=g)[:subset_size]]) for _ in range(n_subsets)]
    return float(np.mean(values)), float(np.std(values))


def background_stats(images: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
    """How the background (outside ``masks`` ``[N, 1, H, W]`` bool, e.g. the judge segmenter's) of images
    ``[N, 3, H, W]`` in [-1, 1] looks: ``background_std``, the mean over images and channels of the background
    pixels' spatial standard deviation (the data's gradients and texture; near 0 for a flat, "inhibited" background,
    the paper's Sec. 5 observation), ``background_mean_abs`` and ``object_mean_abs`` (mean |x| inside and outside).
    Images whose mask leaves fewer than 2 background (or no object) pixels are left out of the respective figures."""
    if images.ndim != 4 or masks.shape != (images.shape[0], 1, *images.shape[2:]) or masks.dtype != torch.bool:
        raise SaliencyNoiseError(f"background_stats expects images [N, 3, H, W] and bool masks [N, 1, H, W], got "
                                 f"{tuple(images.shape)} and {tuple(masks.shape)} ({masks.dtype})")
    bg = (~masks).expand_as(images).float()
    fg = masks.expand_as(images).float()
    n_bg, n_fg = bg.sum(dim=(2, 3)), fg.sum(dim=(2, 3))                                    # [N, 3]
    mean_bg = (images * bg).sum(dim=(2, 3)) / n_bg.clamp(min=1)
    var_bg = (((images - mean_bg[..., None, None]) ** 2) * bg).sum(dim=(2, 3)) / (n_bg - 1).clamp(min=1)
    keep_bg, keep_fg = n_bg[:, 0] >= 2, n_fg[:, 0] >= 1
    abs_bg = (images.abs() * bg).sum(dim=(2, 3)) / n_bg.clamp(min=1)
    abs_fg = (images.abs() * fg).sum(dim=(2, 3)) / n_fg.clamp(min=1)
    nan = float("nan")
    return {"background_std": var_bg[keep_bg].sqrt().mean().item() if keep_bg.any() else nan,
            "background_mean_abs": abs_bg[keep_bg].mean().item() if keep_bg.any() else nan,
            "object_mean_abs": abs_fg[keep_fg].mean().item() if keep_fg.any() else nan}


def paired_differences(per_guide: Mapping[str, np.ndarray], row: str) -> dict[str, dict]:
    """Row ``row``'s per-guide values minus each other row's (``per_guide``: name -> ``[G]``, the same guides in the
    same order): per other row the mean difference with its 95% bootstrap interval over guides, and on how many
    guides ``row`` is larger and on how many smaller."""
    if row not in per_guide:
        raise SaliencyNoiseError(f"paired_differences: no row {row!r}; rows are {list(per_guide)}")
    out = {}
    for name, values in per_guide.items():
        if name != row:
            diff = np.asarray(per_guide[row]) - np.asarray(values)
            out[name] = {"mean_difference_ci95": list(bootstrap_ci(diff)), "guides_better": int((diff > 0).sum()),
                         "guides_worse": int((diff < 0).sum())}
    return out


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


def candidate_noise(preset: Preset, classifier: nn.Module, temperature: float, guides: data.ShapeBatch,
                    snapshots: Sequence[int], seed: int = 0, cache_dir: Path | None = None
                    ) -> tuple[dict[int, torch.Tensor], float]:
    """IG (the preset's settings, ``temperature``) against a candidate classifier: standardized snapshots
    ``k -> [G, 3, S, S]`` at the DDPM resolution, and the IG wall time (NaN for old cache entries)."""
    from .inversion import cached_invert_gradients
    from .noise import resize

    norm = classifier.config.normalization
    steps = tuple(sorted(set(snapshots)))
    cfg = dataclasses.replace(preset.ig_config, iterations=max(steps), snapshots=steps, temperature=temperature)
    res, stats = cached_invert_gradients(classifier, norm.from_diffusion(guides.images), guides.labels, norm, cfg,
                                         seed=seed, cache_dir=cache_dir)
    noises = {k: resize(standardize(v), preset.image_size) for k, v in res.snapshots.items()}
    return noises, stats.get("wall_seconds", float("nan"))


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


# ------------------------------------------------------------------------------------ the protocol (notebook 06)
@dataclass(frozen=True)
class ProtocolArgs:
    n_guides: int = 64                                   # held-out guides (split "guides", never trained on)
    classes_per_guide: int = 2                           # target classes per guide, balanced over the classes
    ig_steps: tuple[int, ...] = (0, 100, 300, 1000)      # IG snapshots k scored (0 = the seeded Gaussian init)
    strength: float = 0.3                                # crafted-noise strength outside the strength curve
    strengths: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 1.0)  # the strength curve (1.0 = the paper's recipe)
    sdedit_t0: tuple[float, ...] = (0.3, 0.5, 0.7)       # SDEdit start, fraction of T
    ilvr_factors: tuple[int, ...] = (4, 8)               # ILVR down-sampling factors N
    transforms: tuple[str, ...] = ("rot90", "rot180", "rot270", "hflip", "vflip")  # orientation follow
    ddim_steps: int = 50                                 # the main sampler: DDIM (eta = 0)
    ddpm_steps: int = 250                                # the ancestral sampler's respaced steps
    ddpm_guides: int = 16                                # guides (first n) for the DDPM rows and diversity
    diversity_seeds: int = 2                             # sampler seeds per (noise, class) for diversity
    classifier_guides: int = 16                          # guides (first n) for the IG-classifier rows
    classifier_snapshots: tuple[int, ...] = (0, 300, 1000)  # their IG snapshots; the largest is scored (the same
                                                         # as `evaluate ig-classifiers --steps 300,1000`: cache hits)
    seed: int = 0                                        # seeds IG inits, fresh noise and samplers


QUICK_PROTOCOL = ProtocolArgs(n_guides=4, ig_steps=(0, 10), strengths=(0.3, 1.0), sdedit_t0=(0.5,),
                              ilvr_factors=(4,), transforms=("rot90", "hflip"), ddim_steps=5, ddpm_steps=5,
                              ddpm_guides=2, classifier_guides=2, classifier_snapshots=(0, 10))


def assignments(n_guides: int, classes_per_guide: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(guide index ``[M]``, target class ``[M]``): guide i gets classes (i*c + j) mod K, j < c, so every class
    is a target equally often (when n_guides * c is a multiple of K) and each guide's own class is not special."""
    if not 1 <= classes_per_guide <= num_classes:
        raise SaliencyNoiseError(f"classes_per_guide must be in [1, {num_classes}], got {classes_per_guide}")
    gi = torch.arange(n_guides).repeat_interleave(classes_per_guide)
    j = torch.arange(classes_per_guide).repeat(n_guides)
    return gi, (gi * classes_per_guide + j) % num_classes


def _per_guide(values: torch.Tensor, gi: torch.Tensor) -> np.ndarray:
    """Mean of per-image values within each guide (NaN-aware), ``[G]``."""
    v, out = values.double(), []
    for g in gi.unique(sorted=True).tolist():
        x = v[gi == g]
        x = x[torch.isfinite(x)]
        out.append(x.mean().item() if x.numel() else float("nan"))
    return np.asarray(out)


def score_images(preset: Preset, images: torch.Tensor, guide_masks: torch.Tensor, y: torch.Tensor,
                 gi: torch.Tensor) -> dict:
    """Judge metrics of images ``[M]`` against their guides' masks: mean and 95% CI over guides."""
    masks = judge_masks(preset, images)
    gm = guide_masks[gi]
    per = {"iou": mask_iou(masks, gm), "centroid_dist": centroid_distance(masks, gm),
           "class_accuracy": (judge_probs(preset, images).argmax(1) == y).float()}
    return {k: list(bootstrap_ci(_per_guide(v, gi))) for k, v in per.items()}


def orientation_follow(preset: Preset, images: torch.Tensor, guide_masks: torch.Tensor, transform: Callable,
                       gi: torch.Tensor) -> dict:
    """Images generated from transformed noise: IoU with the transformed and with the original guide mask and
    how often the former wins; each ``[mean, lo, hi]`` over guides. ``gi``: guide index of each image."""
    masks = judge_masks(preset, images)
    moved = transform(guide_masks.float()) > 0.5
    a, b = mask_iou(masks, moved[gi]), mask_iou(masks, guide_masks[gi])
    return {"iou_transformed": list(bootstrap_ci(_per_guide(a, gi))),
            "iou_original": list(bootstrap_ci(_per_guide(b, gi))),
            "follow_rate": list(bootstrap_ci(_per_guide((a > b).float(), gi)))}


def run_protocol(preset: Preset, args: ProtocolArgs, cache_dir: Path | None = None,
                 log: Callable[[str], None] = print) -> dict:
    """Every condition of the protocol -> rows of judge metrics (mean, 95% CI over guides) and timings.

    Groups: ``source`` (noise sources and the SDEdit / ILVR baselines, DDIM), ``k`` (IG step), ``strength``,
    ``classifier`` (what IG inverts), ``sampler`` (DDIM against DDPM), ``orientation`` (transformed noise),
    ``diversity`` (DDPM, several sampler seeds) and ``guidance`` (classifier-free guidance off, when the
    preset samples with it; every other row uses the preset's guidance weight). ``seconds_per_image``: the
    noise's crafting time for
    the row's guides plus the sampling, over the row's images.
    """
    from .baselines import ilvr, sdedit
    from .noise import TRANSFORMS
    from .pipeline import saliency_classifier
    from .saliency import (background_free_noise, feature_map_noise, fgsm_noise, input_gradient_saliency,
                           salient_mask, saliency_weighted_noise)

    if preset.judge_segmenter is None or preset.judge_classifier is None:
        raise SaliencyNoiseError(f"the protocol needs judge models; preset {preset.name!r} has none (use tiny)")
    K, S = len(preset.class_names), preset.image_size
    guides = data.make_batch("guides", 0, args.n_guides, S)
    gi, y = assignments(args.n_guides, args.classes_per_guide, K)
    fresh = torch.randn((args.n_guides, 3, S, S), generator=torch.Generator().manual_seed(args.seed + 1))
    ddim, ddpm = Sampler("ddim", args.ddim_steps), Sampler("ddpm", args.ddpm_steps)
    rows: list[dict] = []

    def add(group: str, name: str, images: torch.Tensor, sample_seconds: float, noise_seconds: float = 0.0,
            idx: torch.Tensor = gi, yy: torch.Tensor = y, **extra) -> dict:
        row = {"group": group, "condition": name, **extra, "n_guides": int(idx.unique().numel()),
               "n_images": int(images.shape[0]), **score_images(preset, images, guides.masks, yy, idx)}
        seconds = (noise_seconds + sample_seconds) / images.shape[0]   # noise_seconds: for these images' guides
        row["seconds_per_image"] = seconds if np.isfinite(seconds) else None  # None: a cached IG run of unknown cost
        rows.append(row)
        log(f"[{group}] {name}: IoU {row['iou'][0]:.3f} [{row['iou'][1]:.3f}, {row['iou'][2]:.3f}], class acc "
            f"{row['class_accuracy'][0]:.3f}, centroid dist {row['centroid_dist'][0]:.2f} px, "
            f"{seconds:.3f} s/image")
        return row

    # IG against the preset's classifier: one batched run, every snapshot k
    crafted = craft_noise(preset, guides.images, guides.labels, steps=args.ig_steps, seed=args.seed,
                          cache_dir=cache_dir)
    ig_seconds = crafted.stats.get("wall_seconds", float("nan"))
    k_max = max(args.ig_steps)

    def ig_x_T(k: int, s: float) -> torch.Tensor:
        return mix_with_gaussian(crafted[k], s, fresh=fresh)

    # --- sources (DDIM, strength args.strength) and k
    imgs, sec = generate_batched(preset, fresh[gi], y, ddim, args.seed)
    add("source", "Gaussian", imgs, sec, sampler=ddim.label, strength=0.0)
    for k in args.ig_steps:
        imgs, sec = generate_batched(preset, ig_x_T(k, args.strength)[gi], y, ddim, args.seed)
        add("k", f"IG k={k}", imgs, sec, ig_seconds if k else 0.0, k=k, strength=args.strength, sampler=ddim.label)
    sal_model, sal_norm = saliency_classifier(preset)
    x_sal = sal_norm.from_diffusion(guides.images)
    g = torch.Generator().manual_seed(args.seed + 2)
    t0 = time.time()
    saliency = input_gradient_saliency(sal_model, x_sal, guides.labels)
    saliency_seconds = time.time() - t0
    sources = {
        "feature map": lambda: feature_map_noise(sal_model, x_sal, "layer2"),
        "FGSM": lambda: fgsm_noise(sal_model, x_sal, guides.labels),
        "saliency-weighted": lambda: saliency_weighted_noise(saliency, generator=g),
        "background-free IG": lambda: background_free_noise(crafted[k_max], salient_mask(saliency), generator=g),
    }
    for name, make in sources.items():
        t0 = time.time()
        noise = make()
        noise_seconds = time.time() - t0 + saliency_seconds + (ig_seconds if "IG" in name else 0.0)
        imgs, sec = generate_batched(preset, mix_with_gaussian(noise, args.strength, fresh=fresh)[gi], y, ddim,
                                     args.seed)
        add("source", name, imgs, sec, noise_seconds, strength=args.strength, sampler=ddim.label)
    for t0_frac in args.sdedit_t0:
        imgs, sec = batched(lambda ib, yb, seed: sdedit(preset, guides.images[ib], yb, t0_frac, ddim, seed=seed),
                            gi, y, seed=args.seed)
        add("source", f"SDEdit t0={t0_frac}", imgs, sec, t0=t0_frac, sampler=ddim.label)
    for factor in args.ilvr_factors:
        imgs, sec = batched(lambda ib, yb, seed: ilvr(preset, guides.images[ib], yb, factor, x_T=fresh[ib],
                                                      sampler=ddim, seed=seed), gi, y, seed=args.seed)
        add("source", f"ILVR N={factor}", imgs, sec, factor=factor, sampler=ddim.label)
    # --- strength curve (IG k_max)
    for s in args.strengths:
        imgs, sec = generate_batched(preset, ig_x_T(k_max, s)[gi], y, ddim, args.seed)
        add("strength", f"IG k={k_max} s={s}", imgs, sec, ig_seconds, k=k_max, strength=s, sampler=ddim.label)
    # --- orientation follow: transform the IG x_T, compare with the transformed and the original guide mask
    base = ig_x_T(k_max, args.strength)
    for name in args.transforms:
        f = TRANSFORMS[name]
        imgs, sec = generate_batched(preset, f(base)[gi], y, ddim, args.seed)
        rows.append({"group": "orientation", "condition": name, "n_guides": args.n_guides,
                     **orientation_follow(preset, imgs, guides.masks, f, gi)})
        r = rows[-1]
        log(f"[orientation] {name}: IoU with transformed mask {r['iou_transformed'][0]:.3f}, with original "
            f"{r['iou_original'][0]:.3f}, beats it in {r['follow_rate'][0]:.2f}")
    # --- samplers and diversity on the first ddpm_guides guides
    sub = gi < args.ddpm_guides
    for name, x in {"Gaussian": fresh, f"IG k={k_max} s={args.strength}": base}.items():
        for sampler in (ddim, ddpm):
            imgs, sec = generate_batched(preset, x[gi[sub]], y[sub], sampler, args.seed)
            add("sampler", f"{name}, {sampler.label}", imgs, sec,
                ig_seconds * args.ddpm_guides / args.n_guides if "IG" in name else 0.0,
                idx=gi[sub], yy=y[sub], sampler=sampler.label)
        runs = [generate_batched(preset, x[gi[sub]], y[sub], ddpm, args.seed + 1000 * (r + 1))[0]
                for r in range(args.diversity_seeds)]
        dists = [(runs[i] - runs[j]).pow(2).flatten(1).mean(1).sqrt()
                 for i in range(len(runs)) for j in range(i + 1, len(runs))]
        d = torch.stack(dists).mean(0) if dists else torch.full((int(sub.sum()),), float("nan"))
        rows.append({"group": "diversity", "condition": f"{name}, {ddpm.label}", "n_guides": args.ddpm_guides,
                     "seeds": args.diversity_seeds, "rms_distance": list(bootstrap_ci(_per_guide(d, gi[sub])))})
        log(f"[diversity] {name}: RMS pixel distance between sampler seeds {rows[-1]['rms_distance'][0]:.3f}")
    # --- guidance off (w = 0, and s_cls = 0 where the preset uses classifier guidance) against the preset's
    # guidance (the rows above), all guides
    if preset.guidance_weight or preset.classifier_scale:
        unguided = ddim.unguided(preset)
        off = unguided.label.removeprefix(ddim.label + ", ")   # "w=0" or "w=0, s_cls=0"
        for name, x in {"Gaussian": fresh, f"IG k={k_max} s={args.strength}": base}.items():
            imgs, sec = generate_batched(preset, x[gi], y, unguided, args.seed)
            add("guidance", f"{name}, {off}", imgs, sec, ig_seconds if "IG" in name else 0.0, sampler=unguided.label)
    # --- the classifier IG inverts (first classifier_guides guides)
    cands = ig_candidates(preset, REPO_ROOT / "checkpoints")
    cg = data.make_batch("guides", 0, args.classifier_guides, S)
    csub = gi < args.classifier_guides
    accuracy = candidate_metrics(cands, 1024, log=lambda _: None)
    kc = max(args.classifier_snapshots)
    for cname, (clf, temperature) in cands.items():
        noises, ig_wall = candidate_noise(preset, clf, temperature, cg, args.classifier_snapshots, args.seed, cache_dir)
        noise = mix_with_gaussian(noises[kc], args.strength, fresh=fresh[: args.classifier_guides])
        imgs, sec = generate_batched(preset, noise[gi[csub]], y[csub], ddim, args.seed)
        add("classifier", cname, imgs, sec, ig_wall,
            idx=gi[csub], yy=y[csub], k=kc, strength=args.strength, classifier_accuracy=accuracy[cname]["accuracy"],
            classifier_confidence=accuracy[cname]["confidence"], temperature=temperature)
    return {"args": dataclasses.asdict(args), "preset": preset.name, "guidance_weight": preset.guidance_weight,
            "classifier_scale": preset.classifier_scale, "ig_seconds": ig_seconds, "rows": rows}


def write_results(res: dict, out: Path) -> list[Path]:
    """``results.json``, ``results.csv`` (one line per row, CIs as mean/lo/hi columns) and the three plots."""
    import csv
    import io

    from .plotting import plot_iou_vs_k, plot_iou_vs_time, plot_tradeoff, save_figure
    from .weights import atomic_write_bytes

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "results.json", json.dumps(res, indent=1).encode())
    flat = []
    for r in res["rows"]:
        f = {}
        for k, v in r.items():
            if isinstance(v, list) and len(v) == 3:
                f.update({k: v[0], f"{k}_lo": v[1], f"{k}_hi": v[2]})
            else:
                f[k] = v
        flat.append(f)
    fields = list(dict.fromkeys(k for f in flat for k in f))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(flat)
    atomic_write_bytes(out / "results.csv", buf.getvalue().encode())
    paths = [out / "results.json", out / "results.csv"]
    for name, plot in (("iou_vs_k.png", plot_iou_vs_k), ("iou_vs_class_accuracy.png", plot_tradeoff),
                       ("iou_vs_time.png", plot_iou_vs_time)):
        paths.append(save_figure(plot(res["rows"]), out / name))
    return paths


def format_table(rows: Sequence[dict], metrics: Sequence[str] = ("iou", "class_accuracy", "centroid_dist"),
                 digits: int | Mapping[str, int] = 3) -> str:
    """Protocol rows as text: ``group condition metric mean [lo, hi] ...`` rounded to ``digits`` decimals, one number
    for all metrics or one per metric (no timings). Tables of a live run on a few guides are best printed with fewer:
    their last decimals are noise, and a CPU whose float rounding moves one segmented pixel changes them (notebook
    06's checked outputs)."""
    places = digits if isinstance(digits, Mapping) else {m: digits for m in metrics}
    lines = []
    for r in rows:
        cells = [f"{m} {r[m][0]:.{places[m]}f} [{r[m][1]:.{places[m]}f}, {r[m][2]:.{places[m]}f}]"
                 for m in metrics if m in r]
        lines.append(f"{r['group']:11s} {r['condition']:28s} " + "  ".join(cells))
    return "\n".join(lines)


REALISM_KIDS = (("kid", "KID (judge)"), ("kid_colour", "KID (colour)"))
REALISM_COLUMNS = (("judge_per_class_accuracy", "judge acc."), ("mean_abs", "mean |x|"),
                   ("saturated_fraction", "saturated"), ("background_std", "bg std"))


def format_realism(rows: Sequence[dict], digits: int = 3) -> str:
    """The rows of ``scripts/measure_realism.py``'s JSON as text: condition, the two kernel distances +- their std
    over subsets (judge features, colour statistics), the judge's per-class accuracy, mean |x|, the saturated
    fraction, the background's spatial std, and the layout IoU (mean over guides) of the phenomenon rows."""
    width = max([len(r["condition"]) for r in rows] + [9])
    lines = [f"{'condition':{width}s} " + " ".join(f"{label:>17s}" for _, label in REALISM_KIDS) + " "
             + " ".join(f"{label:>10s}" for _, label in REALISM_COLUMNS) + f" {'layout IoU':>10s}"]
    for r in rows:
        kids = [f"{r[key]:>8.{digits}f} +- {r[key + '_std']:<5.{digits}f}" for key, _ in REALISM_KIDS]
        iou = f"{r['layout_iou'][0]:>10.{digits}f}" if "layout_iou" in r else f"{'-':>10s}"
        lines.append(f"{r['condition']:{width}s} " + " ".join(kids) + " "
                     + " ".join(f"{r[key]:>10.{digits}f}" for key, _ in REALISM_COLUMNS) + " " + iou)
    return "\n".join(lines)


def paper_claims(results: dict) -> dict[str, bool]:
    """The paper's claims as verdicts on protocol results: a claim holds when its 95% CI clears the baseline's."""
    rows, a = results["rows"], results["args"]

    def row(cond: str, group: str) -> dict:
        return next(r for r in rows if r["condition"] == cond and r["group"] == group)

    k_max, s = max(a["ig_steps"]), a["strength"]
    k_min = min(k for k in a["ig_steps"] if k)
    gauss, ig = row("Gaussian", "source"), row(f"IG k={k_max}", "k")
    out = {f"crafted noise (k={k_max}, s={s}) controls layout better than Gaussian noise": ig["iou"][1] > gauss["iou"][2]}
    if 1.0 in a["strengths"]:
        recipe = row(f"IG k={k_max} s=1.0", "strength")
        out["the paper's recipe as published (s=1) controls layout better than Gaussian noise"] = \
            recipe["iou"][1] > gauss["iou"][2]
    out[f"later IG steps localize better (k={k_max} vs k={k_min})"] = ig["iou"][1] > row(f"IG k={k_min}", "k")["iou"][2]
    out["class control is not significantly worse with crafted noise (the 95% CIs overlap)"] = \
        ig["class_accuracy"][2] >= gauss["class_accuracy"][1]
    out["IG beats the feature-map noise on layout"] = ig["iou"][1] > row("feature map", "source")["iou"][2]
    out["IG beats the FGSM noise on layout"] = ig["iou"][1] > row("FGSM", "source")["iou"][2]
    for name in a["transforms"]:
        o = row(name, "orientation")
        out[f"the generation follows a {name} of the noise"] = o["iou_transformed"][1] > o["iou_original"][2]
    return out


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
    mm.add_argument("--noisy-classifier", type=Path, default=None,
                    help="score this noise-aware classifier's weights (<out>/model.safetensors) instead of the preset's")
    c = sub.add_parser("ig-classifiers", help="compare IG classifiers (trained, label-smoothed, T=4, untrained)")
    c.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="training outputs folder")
    c.add_argument("--n-guides", type=int, default=16)
    c.add_argument("--steps", default="300", help="IG snapshot steps k (0, the init, is always scored once)")
    c.add_argument("--strengths", default="1.0,0.3")
    c.add_argument("--cache", type=Path, default=None, help="IG cache folder")
    c.add_argument("--json", type=Path)
    r = sub.add_parser("run", help="the full evaluation protocol (JSON, CSV, plots; notebook 06)")
    r.add_argument("--quick", action="store_true", help="tiny sizes (about a minute, for CI)")
    r.add_argument("--out", type=Path, default=Path("results/tiny"), help="folder for results.json/.csv and plots")
    r.add_argument("--cache", type=Path, default=None, help="IG cache folder")
    for f in dataclasses.fields(ProtocolArgs):
        if f.type in ("int", "float"):
            r.add_argument(f"--{f.name.replace('_', '-')}", type=int if f.type == "int" else float, default=None)
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
    elif a.cmd == "run":
        base = QUICK_PROTOCOL if a.quick else ProtocolArgs()
        over = {f.name: getattr(a, f.name) for f in dataclasses.fields(ProtocolArgs)
                if getattr(a, f.name, None) is not None}
        res = run_protocol(preset, dataclasses.replace(base, **over), cache_dir=a.cache)
        for path in write_results(res, a.out):
            print(f"wrote {path}")
    elif a.cmd == "models":
        if a.noisy_classifier is not None:
            from .classifiers import load_noisy_classifier
            preset = dataclasses.replace(preset, noisy_classifier=load_noisy_classifier(a.noisy_classifier))
        res = model_metrics(preset, a.n_test)
        res["ig_candidates"] = candidate_metrics(ig_candidates(preset, a.checkpoints), a.n_test)
    else:
        res = compare_ig_classifiers(preset, ig_candidates(preset, a.checkpoints), a.n_guides,
                                     [int(k) for k in a.steps.split(",")],
                                     [float(s) for s in a.strengths.split(",")], cache_dir=a.cache)
    if getattr(a, "json", None):
        from .weights import atomic_write_bytes
        atomic_write_bytes(a.json, json.dumps(res, indent=2).encode())


if __name__ == "__main__":
    main()
