"""Plotting helpers shared by the notebooks, the model card and the evaluation (matplotlib, no state).

Images are ``[N, 3, H, W]`` in [-1, 1] (diffusion space) unless a function says otherwise.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torchvision

from .errors import SaliencyNoiseError
from .weights import atomic_write_bytes


def to_display(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> [0, 1], clamped, detached, on the CPU."""
    return ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)


def noise_to_display(noise: torch.Tensor, clip: float = 3.0) -> torch.Tensor:
    """A standardized noise (about N(0, 1)) -> [0, 1] for display: [-clip, clip] mapped linearly."""
    return ((noise.detach().float().cpu() / clip + 1) / 2).clamp(0, 1)


def enlarge(images01: torch.Tensor, factor: int) -> torch.Tensor:
    """``[N, C, H, W]`` images with every pixel repeated ``factor`` x ``factor`` times (no smoothing, so 32x32
    samples stay as the judge sees them when viewed at a readable size)."""
    if factor < 1:
        raise SaliencyNoiseError(f"enlarge factor must be >= 1, got {factor}")
    return images01.repeat_interleave(factor, -2).repeat_interleave(factor, -1)


def grid(images01: torch.Tensor, nrow: int, pad: int = 1) -> torch.Tensor:
    """Tile ``[N, 3, H, W]`` in [0, 1] into one ``[3, rows*(H+pad)-pad, nrow*(W+pad)-pad]`` image (white gaps)."""
    n, c, h, w = images01.shape
    rows = (n + nrow - 1) // nrow
    out = torch.ones(c, rows * (h + pad) - pad, nrow * (w + pad) - pad)
    for i in range(n):
        r, q = divmod(i, nrow)
        out[:, r * (h + pad): r * (h + pad) + h, q * (w + pad): q * (w + pad) + w] = images01[i]
    return out


def save_class_rows(images: torch.Tensor, y: torch.Tensor, num_classes: int, path: str | Path,
                    columns: int = 16) -> Path:
    """Save a PNG with one row per class c: the first ``columns`` of ``images`` ``[N, 3, H, W]`` (in [-1, 1]) drawn
    for class c (``y`` ``[N]``), as the guidance sweeps and sampling probes store their samples. Rows hold
    min(columns, N // num_classes) images (class-balanced batches fill every row)."""

    rows = torch.cat([images[y == c][:columns] for c in range(num_classes)])
    torchvision.utils.save_image(to_display(rows), path, nrow=max(1, min(columns, len(y) // num_classes)))
    return Path(path)


def show_grid(images01: torch.Tensor, nrow: int, title: str | None = None, row_labels: Sequence[str] | None = None,
              col_labels: Sequence[str] | None = None, scale: float = 0.9, ax=None):
    """Show a grid of ``[N, 3, H, W]`` images in [0, 1]; returns the matplotlib Figure."""

    n, _, h, w = images01.shape
    rows = (n + nrow - 1) // nrow
    if ax is None:
        fig, ax = plt.subplots(figsize=(scale * nrow + (1.2 if row_labels else 0), scale * rows + 0.5))
    else:
        fig = ax.figure
    ax.imshow(grid(images01, nrow).permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([(w + 1) * i + w / 2 for i in range(nrow)] if col_labels else [])
    ax.set_xticklabels(list(col_labels) if col_labels else [], rotation=45, ha="right", fontsize=8)
    ax.set_yticks([(h + 1) * i + h / 2 for i in range(rows)] if row_labels else [])
    ax.set_yticklabels(list(row_labels) if row_labels else [], fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def save_figure(fig, path: str | Path, dpi: int = 150) -> Path:
    """Save a figure atomically (temporary file + rename) as PNG."""


    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


# ------------------------------------------------------------------------------ evaluation plots (rows of
# `evaluate.run_protocol`: metric values are [mean, lo, hi] with a 95% bootstrap CI over guides)
def _err(values: Sequence[Sequence[float]]):

    v = np.asarray(values, dtype=float)
    return v[:, 0], np.stack([v[:, 0] - v[:, 1], v[:, 2] - v[:, 0]])


def plot_iou_vs_k(rows: Sequence[dict], ax=None):
    """Layout IoU against the IG step k, with the Gaussian-noise level as a band."""

    fig, ax = (plt.subplots(figsize=(4.5, 3)) if ax is None else (ax.figure, ax))
    ks = [r for r in rows if r["group"] == "k"]
    mean, err = _err([r["iou"] for r in ks])
    ax.errorbar([r["k"] for r in ks], mean, yerr=err, marker="o", capsize=3, label="IG noise")
    gauss = next((r for r in rows if r["condition"] == "Gaussian" and r["group"] == "source"), None)
    if gauss:
        ax.axhspan(gauss["iou"][1], gauss["iou"][2], color="0.85", label="Gaussian noise (95% CI)")
    ax.set_xlabel("IG step k"); ax.set_ylabel("layout IoU (judge)"); ax.set_title("layout control against k")
    ax.legend(fontsize=8)
    return fig


def plot_tradeoff(rows: Sequence[dict], ax=None):
    """Layout IoU against target-class accuracy along the strength curve (and the other sources)."""

    fig, ax = (plt.subplots(figsize=(4.5, 3.2)) if ax is None else (ax.figure, ax))
    st = [r for r in rows if r["group"] == "strength"]
    if st:
        ax.plot([r["class_accuracy"][0] for r in st], [r["iou"][0] for r in st], "-o", label="IG, strength curve")
        for r in st:
            ax.annotate(f"s={r['strength']}", (r["class_accuracy"][0], r["iou"][0]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    for r in rows:
        if r["group"] == "source":
            ax.plot(r["class_accuracy"][0], r["iou"][0], "s", ms=4)
            ax.annotate(r["condition"], (r["class_accuracy"][0], r["iou"][0]), fontsize=6, xytext=(3, -8),
                        textcoords="offset points")
    ax.set_xlabel("target-class accuracy (judge)"); ax.set_ylabel("layout IoU (judge)")
    ax.set_title("layout control against class control"); ax.legend(fontsize=8)
    return fig


def plot_iou_vs_time(rows: Sequence[dict], ax=None):
    """Layout IoU against wall time per image (noise crafting share + sampling), log x."""

    fig, ax = (plt.subplots(figsize=(4.5, 3.2)) if ax is None else (ax.figure, ax))
    for r in rows:
        if r["group"] in ("source", "k", "sampler") and (r.get("seconds_per_image") or 0) > 0:
            ax.plot(r["seconds_per_image"], r["iou"][0], "o", ms=4)
            ax.annotate(r["condition"], (r["seconds_per_image"], r["iou"][0]), fontsize=6, xytext=(3, 2),
                        textcoords="offset points")
    ax.set_xscale("log"); ax.set_xlabel("seconds per image (2 CPU cores)"); ax.set_ylabel("layout IoU (judge)")
    ax.set_title("layout control against cost")
    return fig
