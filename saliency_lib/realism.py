"""How natural generated images are, next to the data: colour statistics, the judge's features and kernel distances
(KID, Binkowski et al. 2018), and the background's flatness. Images are ``[N, 3, H, W]`` in [-1, 1].
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .errors import SaliencyNoiseError
from .metrics import _read, _require
from .presets import Preset


def image_stats(x: torch.Tensor, saturated: float = 0.95) -> dict[str, float]:
    """Colour statistics of images ``[N, 3, H, W]`` in [-1, 1] (how far samples are from the data's
    colours): mean ``|x|``, the fraction of pixel values with ``|x| > saturated``, and the mean ``|colour|`` of an
    image (its per-channel spatial mean)."""
    return {"mean_abs": x.abs().mean().item(), "saturated_fraction": (x.abs() > saturated).float().mean().item(),
            "mean_colour_abs": x.mean(dim=(2, 3)).abs().mean().item()}


def classifier_embeddings(clf: nn.Module, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Features ``[N, D]`` of a classifier with an ``embed`` method (the judge's :class:`~saliency_lib.classifiers.PlainCNN`) for images
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
    the paper's Sec. 5 observation), ``background_mean_abs`` and ``object_mean_abs`` (mean ``|x|`` inside and outside).
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
