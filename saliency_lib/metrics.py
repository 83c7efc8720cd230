"""Measurements with the judge models only (never the IG classifier): object masks, layout IoU, centroid distance,
class accuracy, and the statistics the results are stated with (bootstrap CIs over guides, paired differences).

Images are ``[N, 3, H, W]`` in [-1, 1]; masks ``[N, 1, H, W]`` bool.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .errors import SaliencyNoiseError
from .presets import Preset


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


def per_class_accuracy(probs: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """Mean over classes of the accuracy within each class."""
    pred = probs.argmax(1)
    accs = [(pred[target == c] == c).float().mean().item() for c in range(num_classes) if (target == c).any()]
    return float(np.mean(accs))


# ------------------------------------------------------------------------------------ paired comparisons
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


# ------------------------------------------------------------------------------------ rows merged over chunks
def merge_rows(chunks: Sequence[Sequence[dict]]) -> list[dict]:
    """Rows of several chunks of guides -> one row per (group, condition), in order of first appearance.

    A chunk row holds ``guides`` (its guide indices), ``per_guide`` (metric -> a value per guide), ``n_images`` and,
    where timed, ``seconds``; its other fields (settings) are the same in every chunk. The merged row keeps those
    fields, then ``n_guides``, ``n_images``, each metric as ``[mean, lo, hi]`` (:func:`bootstrap_ci` over all
    guides, in guide order), ``seconds_per_image`` where timed (None when a cached IG run did not record its cost),
    and ``per_guide`` (``guides`` and each metric's values), so every number can be checked per guide."""
    parts: dict[tuple[str, str], list[dict]] = {}
    for rows in chunks:
        for r in rows:
            parts.setdefault((r["group"], r["condition"]), []).append(r)
    merged = []
    for same in parts.values():
        guides = np.concatenate([np.asarray(r["guides"], dtype=np.int64) for r in same])
        order = np.argsort(guides, kind="stable")
        if len(np.unique(guides)) != len(guides):
            raise SaliencyNoiseError(f"merge_rows: guides {sorted(guides.tolist())} of {same[0]['condition']!r} were "
                                     "scored by more than one chunk")
        values = {m: np.concatenate([np.asarray(r["per_guide"][m], dtype=np.float64) for r in same])[order]
                  for m in same[0]["per_guide"]}
        row = {k: v for k, v in same[0].items() if k not in ("guides", "per_guide", "n_images", "seconds")}
        row.update(n_guides=len(guides), n_images=sum(r["n_images"] for r in same))
        row.update({m: list(bootstrap_ci(v)) for m, v in values.items()})
        if "seconds" in same[0]:
            spi = sum(r["seconds"] for r in same) / row["n_images"]
            row["seconds_per_image"] = spi if np.isfinite(spi) else None
        row["per_guide"] = {"guides": guides[order].tolist(), **{m: v.tolist() for m, v in values.items()}}
        merged.append(row)
    return merged
