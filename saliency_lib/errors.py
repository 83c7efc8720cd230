"""Exceptions and argument checks shared by the package.

Every check names the argument, what it got and what it expects.
"""

from __future__ import annotations

import math
import numbers
import os
import tempfile
from pathlib import Path

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
    if x.shape[0] == 0:
        raise SaliencyNoiseError(f"{name} holds no images (shape {tuple(x.shape)}); pass at least one")
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


def check_number(name: str, value: object, lo: float | None = None, hi: float | None = None,
                 integer: bool = False) -> float | int:
    """A finite real number (numpy scalars and 0-d tensors accepted; bools refused) in ``[lo, hi]``; an int when
    ``integer``. Returns it as a Python float or int."""
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SaliencyNoiseError(f"{name} must be a {'whole ' if integer else ''}number, got {type(value).__name__} "
                                 f"{value!r}")
    if integer and not float(value).is_integer():
        raise SaliencyNoiseError(f"{name} must be a whole number, got {value!r}")
    if not math.isfinite(float(value)):
        raise SaliencyNoiseError(f"{name} must be finite, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise SaliencyNoiseError(f"{name} must be in {bounds}, got {value!r}")
    return int(value) if integer else float(value)


def check_writable_dir(path: str | os.PathLike, what: str) -> Path:
    """Create the folder ``path`` if needed and prove that a file can be written in it, before any long work that
    would save there; raise naming ``what`` and the path otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise SaliencyNoiseError(f"{what} {str(path)!r} is not a writable folder ({e.strerror or e}); choose another "
                                 "folder or fix its permissions") from None
    return path


def check_labels(name: str, y: object, n: int, num_classes: int) -> torch.Tensor:
    """Check integer class ids ``[n]`` in ``[0, num_classes)``; an int is broadcast to ``[n]``."""
    if isinstance(y, bool):
        raise SaliencyNoiseError(f"{name} must be class ids, got the bool {y!r}")
    if isinstance(y, numbers.Integral):
        y = int(y)
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
