"""The procedural "shapes" dataset of the ``tiny`` preset: oriented objects with known masks and poses.

Every sample is a pure function of ``(split, index)``: its pose, colours and background are drawn from a
``torch.Generator`` seeded by the split's base seed plus the index, then the object is rendered
anti-aliased (4x4 supersampling of an exact inside-test in the object's own frame). Splits never share
seeds, so held-out guides are never seen in training.

Sample: image ``[3, H, W]`` in [-1, 1], label in [0, 8), mask ``[1, H, W]`` bool (coverage >= 0.5),
pose (centre x, y in pixels, scale = object half-size in pixels, angle in radians counter-clockwise,
flip = mirrored in the object's frame before rotation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .errors import SaliencyNoiseError

CLASS_NAMES: tuple[str, ...] = ("arrow", "L-shape", "T-shape", "crescent", "fish", "key", "flag", "mushroom")
NUM_CLASSES = len(CLASS_NAMES)
# Base seeds of the splits: far apart within 32 bits (torch.Generator keeps only the low 32 bits of a seed),
# so the index ranges of the splits never overlap (each holds up to 2^29 samples).
SPLIT_SEEDS = {"train": 0, "val": 1 << 31, "test": (1 << 31) + (1 << 29), "guides": (1 << 31) + (1 << 30)}
SUPERSAMPLE = 4


# ----------------------------------------------------------------------- shapes in their own frame
# Frame: u to the right, v downwards, object inside [-1, 1]^2, "pointing up" (towards -v).
def _rect(u, v, u0, u1, v0, v1):
    return (u > u0) & (u < u1) & (v > v0) & (v < v1)


def _disc(u, v, cu, cv, r):
    return (u - cu) ** 2 + (v - cv) ** 2 < r * r


def _triangle(u, v, a, b, c):
    def side(p, q):
        return (q[0] - p[0]) * (v - p[1]) - (q[1] - p[1]) * (u - p[0])
    s1, s2, s3 = side(a, b), side(b, c), side(c, a)
    return ((s1 >= 0) & (s2 >= 0) & (s3 >= 0)) | ((s1 <= 0) & (s2 <= 0) & (s3 <= 0))


def _arrow(u, v):
    return _rect(u, v, -0.18, 0.18, -0.15, 0.9) | _triangle(u, v, (0, -0.95), (-0.6, -0.1), (0.6, -0.1))


def _l_shape(u, v):
    return _rect(u, v, -0.7, -0.2, -0.9, 0.9) | _rect(u, v, -0.7, 0.7, 0.4, 0.9)


def _t_shape(u, v):
    return _rect(u, v, -0.85, 0.85, -0.9, -0.45) | _rect(u, v, -0.22, 0.22, -0.9, 0.9)


def _crescent(u, v):
    return _disc(u, v, 0, 0, 0.9) & ~_disc(u, v, 0.45, -0.15, 0.75)


def _fish(u, v):
    body = ((u + 0.2) / 0.65) ** 2 + (v / 0.42) ** 2 < 1
    return (body | _triangle(u, v, (0.3, 0), (0.95, -0.55), (0.95, 0.55))) & ~_disc(u, v, -0.5, -0.1, 0.08)


def _key(u, v):
    bow = _disc(u, v, 0, -0.5, 0.45) & ~_disc(u, v, 0, -0.5, 0.2)
    return (bow | _rect(u, v, -0.12, 0.12, -0.1, 0.95) | _rect(u, v, 0.1, 0.45, 0.5, 0.65)
            | _rect(u, v, 0.1, 0.35, 0.78, 0.93))


def _flag(u, v):
    return _rect(u, v, -0.7, -0.52, -0.95, 0.95) | _triangle(u, v, (-0.52, -0.95), (-0.52, -0.05), (0.85, -0.5))


def _mushroom(u, v):
    cap = _disc(u, v, 0, 0.0, 0.9) & (v < 0.0)
    return cap | _rect(u, v, -0.25, 0.25, -0.1, 0.85)


SHAPES: tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ...] = (
    _arrow, _l_shape, _t_shape, _crescent, _fish, _key, _flag, _mushroom)


# ----------------------------------------------------------------------- samples
@dataclass
class ShapeBatch:
    images: torch.Tensor   # [N, 3, H, W] float32 in [-1, 1]
    labels: torch.Tensor   # [N] int64 class ids
    masks: torch.Tensor    # [N, 1, H, W] bool object masks (anti-aliased coverage >= 0.5)
    centers: torch.Tensor  # [N, 2] (x, y) in pixels
    scales: torch.Tensor   # [N] object half-size in pixels
    angles: torch.Tensor   # [N] radians, counter-clockwise on screen
    flips: torch.Tensor    # [N] bool, mirrored in the object frame

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device | str) -> "ShapeBatch":
        return ShapeBatch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def _luminance(rgb: torch.Tensor) -> torch.Tensor:
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def _draw_params(seed: int, label: int | None) -> dict:
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(16, generator=g, dtype=torch.float64).tolist()
    bg_a, bg_b, obj = (torch.rand(3, generator=g, dtype=torch.float64) for _ in range(3))
    texture = torch.randn(3, 4, 4, generator=g)
    cls = int(r[0] * NUM_CLASSES) if label is None else label
    lum_bg = _luminance((bg_a + bg_b) / 2)
    if abs(_luminance(obj) - lum_bg) < 0.3:  # keep the object visible: push its luminance away
        obj = (obj + (0.45 if lum_bg < 0.5 else -0.45)).clamp(0, 1)
    return dict(label=cls, scale=0.32 + 0.22 * r[1], cx=r[2], cy=r[3], angle=2 * math.pi * r[4], flip=r[5] < 0.5,
                grad_angle=2 * math.pi * r[6], bg_a=bg_a, bg_b=bg_b, obj=obj, texture=texture,
                tex_amp=0.05 + 0.12 * r[7], shade=0.15 * (r[8] - 0.5))


PARAM_KEYS = ("label", "scale", "cx", "cy", "angle", "flip", "grad_angle", "bg_a", "bg_b", "obj", "texture",
              "tex_amp", "shade")


def stack_params(params: list[dict]) -> dict[str, torch.Tensor]:
    """Drawn parameters of N samples as tensors ``[N, ...]`` (what :func:`render_tensors` reads; small, so a
    training worker can hand them to the main process, which renders on its device)."""
    out = {}
    for key in PARAM_KEYS:
        values = [p[key] for p in params]
        out[key] = torch.stack(values).float() if torch.is_tensor(values[0]) else torch.tensor(values)
    out["label"] = out["label"].long()
    out["flip"] = out["flip"].bool()
    return out


def render(params: list[dict], size: int = 32) -> ShapeBatch:
    """Render drawn parameters to a batch (vectorized over samples, per-class inside tests)."""
    return render_tensors(stack_params(params), size)


def render_tensors(p: dict[str, torch.Tensor], size: int = 32) -> ShapeBatch:
    """Render stacked parameters (:func:`stack_params`) on their own device (CPU or GPU: the same formulas)."""
    device = p["scale"].device
    n = p["label"].shape[0]
    hs = size * SUPERSAMPLE
    lin = (torch.arange(hs, dtype=torch.float32, device=device) + 0.5) / hs * 2 - 1  # pixel centres in [-1, 1]
    py, px = torch.meshgrid(lin, lin, indexing="ij")
    scale = p["scale"].float()                                     # half-size as a fraction of half-width
    margin = scale * 1.0
    cx = p["cx"].float() * (2 - 2 * margin) - 1 + margin
    cy = p["cy"].float() * (2 - 2 * margin) - 1 + margin
    angle, flip, labels = p["angle"].float(), p["flip"], p["label"]
    # object frame: undo translation, rotation (counter-clockwise on screen, y down) and scale
    dx, dy = px[None] - cx[:, None, None], py[None] - cy[:, None, None]
    c, s = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    u = (c * dx - s * dy) / scale[:, None, None]
    v = (s * dx + c * dy) / scale[:, None, None]
    u = torch.where(flip[:, None, None], -u, u)
    inside = torch.zeros(n, hs, hs, dtype=torch.bool, device=device)
    for k, shape in enumerate(SHAPES):
        sel = labels == k
        if sel.any():
            inside[sel] = shape(u[sel], v[sel])
    coverage = F.avg_pool2d(inside.float()[:, None], SUPERSAMPLE)  # [N, 1, size, size] in [0, 1]

    lin_s = (torch.arange(size, dtype=torch.float32, device=device) + 0.5) / size * 2 - 1
    yy, xx = torch.meshgrid(lin_s, lin_s, indexing="ij")
    ga = p["grad_angle"].float()[:, None, None]
    ramp = ((torch.cos(ga) * xx + torch.sin(ga) * yy) / math.sqrt(2) + 1) / 2  # [N, H, W] in [0, 1]
    bg_a = p["bg_a"][:, :, None, None]
    bg_b = p["bg_b"][:, :, None, None]
    tex = F.interpolate(p["texture"], size=size, mode="bicubic", align_corners=False)
    tex_amp = p["tex_amp"].float()[:, None, None, None]
    background = bg_a + (bg_b - bg_a) * ramp[:, None] + tex_amp * tex
    obj = p["obj"][:, :, None, None]
    shade = p["shade"].float()[:, None, None, None]
    foreground = obj + shade * (xx + yy)[None, None]  # a gentle light direction on the object
    img = (coverage * foreground + (1 - coverage) * background).clamp(0, 1)
    return ShapeBatch(images=img * 2 - 1, labels=labels, masks=coverage >= 0.5,
                      centers=torch.stack([(cx + 1) / 2 * size, (cy + 1) / 2 * size], dim=1),
                      scales=scale * size / 2, angles=angle, flips=flip)


def make_params(split: str, start: int, n: int, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The stacked drawn parameters of samples ``start .. start+n-1`` of ``split`` (see :func:`make_batch`)."""
    if split not in SPLIT_SEEDS:
        raise SaliencyNoiseError(f"unknown split {split!r}; expected one of {sorted(SPLIT_SEEDS)}")
    if n < 1 or start < 0:
        raise SaliencyNoiseError(f"need start >= 0 and n >= 1, got start={start}, n={n}")
    if start + n > (1 << 29):
        raise SaliencyNoiseError(f"sample indices must stay below 2^29 (split seed ranges), got {start + n}")
    if labels is not None and (labels.shape != (n,) or labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise SaliencyNoiseError(f"labels must be [{n}] ids in [0, {NUM_CLASSES}), got {tuple(labels.shape)}")
    base = SPLIT_SEEDS[split]
    return stack_params([_draw_params(base + start + i, None if labels is None else int(labels[i]))
                         for i in range(n)])


def make_batch(split: str, start: int, n: int, size: int = 32, labels: torch.Tensor | None = None) -> ShapeBatch:
    """Samples ``start .. start+n-1`` of ``split``; ``labels`` ([n]) forces the classes when given."""
    if size < 16:
        raise SaliencyNoiseError(f"image size must be >= 16, got {size}")
    return render_tensors(make_params(split, start, n, labels), size)


def colour_shift(images: torch.Tensor, chroma: torch.Tensor | float, gain: torch.Tensor | float) -> torch.Tensor:
    """Images ``[N, 3, H, W]`` in [-1, 1] with their colours pushed like the DDPM's saturated samples: each pixel's
    distance from its grey level (the channel mean) scaled by ``chroma``, then every value by ``gain`` about 0,
    clipped to [-1, 1]. ``chroma`` and ``gain`` are floats or per-image ``[N]`` tensors; 1 and
    1 return the images unchanged. A new tensor: the caller's is untouched."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise SaliencyNoiseError(f"colour_shift expects RGB images [N, 3, H, W], got {tuple(images.shape)}")
    c = torch.as_tensor(chroma, dtype=images.dtype, device=images.device).reshape(-1, 1, 1, 1)
    g = torch.as_tensor(gain, dtype=images.dtype, device=images.device).reshape(-1, 1, 1, 1)
    if c.shape[0] not in (1, images.shape[0]) or g.shape[0] not in (1, images.shape[0]):
        raise SaliencyNoiseError(f"chroma and gain must be floats or [{images.shape[0]}] tensors, got "
                                 f"{tuple(c.shape[:1])} and {tuple(g.shape[:1])}")
    if (c < 0).any() or (g <= 0).any():
        raise SaliencyNoiseError("colour_shift needs chroma >= 0 and gain > 0")
    grey = images.mean(1, keepdim=True)
    return (g * (grey + c * (images - grey))).clamp(-1, 1)


def class_id(name_or_id: str | int) -> int:
    """Class id from a name of ``CLASS_NAMES`` or an id; clear error otherwise."""
    if isinstance(name_or_id, int):
        if not 0 <= name_or_id < NUM_CLASSES:
            raise SaliencyNoiseError(f"class id must be in [0, {NUM_CLASSES}), got {name_or_id}")
        return name_or_id
    if name_or_id not in CLASS_NAMES:
        raise SaliencyNoiseError(f"unknown class {name_or_id!r}; expected one of {CLASS_NAMES}")
    return CLASS_NAMES.index(name_or_id)
