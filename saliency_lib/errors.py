"""Exceptions and argument checks shared by the package.

Every check names the argument, what it got and what it expects.
"""

from __future__ import annotations

import torch


class SaliencyNoiseError(ValueError):
    """Base class of the package's input errors (a ValueError, so callers may catch either)."""


class WeightsError(SaliencyNoiseError):
    """A weights file is missing, corrupt, or does not match the model configuration."""


class DownloadError(RuntimeError):
    """A download failed (offline, interrupted, or hash mismatch)."""


def check_image_batch(name: str, x: object, *, channels: int | None = None, size: int | None = None,
                      value_range: tuple[float, float] | None = None) -> torch.Tensor:
    """Check that ``x`` is a finite float tensor ``[N, C, H, W]``; optionally channels, size, range."""
    if not isinstance(x, torch.Tensor):
        raise SaliencyNoiseError(f"{name} must be a torch.Tensor [N,C,H,W], got {type(x).__name__}")
    if x.dim() != 4:
        raise SaliencyNoiseError(f"{name} must have rank 4 [N,C,H,W], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise SaliencyNoiseError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if channels is not None and x.shape[1] != channels:
        raise SaliencyNoiseError(f"{name} must have {channels} channels, got shape {tuple(x.shape)}")
    if size is not None and (x.shape[2] != size or x.shape[3] != size):
        raise SaliencyNoiseError(f"{name} must be {size}x{size}, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise SaliencyNoiseError(f"{name} contains NaN or inf values")
    if value_range is not None:
        lo, hi = value_range
        tol = 1e-4
        if x.min().item() < lo - tol or x.max().item() > hi + tol:
            raise SaliencyNoiseError(
                f"{name} values must lie in [{lo}, {hi}], got [{x.min().item():.3f}, {x.max().item():.3f}]")
    return x


def check_labels(name: str, y: object, n: int, num_classes: int) -> torch.Tensor:
    """Check integer class ids ``[n]`` in ``[0, num_classes)``; an int is broadcast to ``[n]``."""
    if isinstance(y, int):
        y = torch.full((n,), y, dtype=torch.long)
    if not isinstance(y, torch.Tensor):
        raise SaliencyNoiseError(f"{name} must be an int or a LongTensor [{n}], got {type(y).__name__}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise SaliencyNoiseError(f"{name} must hold integer class ids, got dtype {y.dtype}")
    if y.dim() != 1 or y.shape[0] != n:
        raise SaliencyNoiseError(f"{name} must have shape [{n}], got {tuple(y.shape)}")
    if n and (y.min().item() < 0 or y.max().item() >= num_classes):
        raise SaliencyNoiseError(
            f"{name} holds class ids in [{y.min().item()}, {y.max().item()}], expected [0, {num_classes - 1}]")
    return y.long()
