"""Group-averaged denoisers: use a symmetry of the data to lower the denoiser's error at no training cost.

If the data distribution is invariant under a group G of pixel permutations (p(g x_0) = p(x_0) for every g in G),
so is every noised marginal q(x_t) (the Gaussian noise of Eq. 2-3 is invariant under permutations), and the ideal
epsilon predictor is equivariant: eps*(g x_t, t, y) = g eps*(x_t, t, y). A trained network is so only
approximately. Its group average

    eps_G(x_t, t, y) = 1/|G| sum_{g in G} g^{-1} eps(g x_t, t, y)

is the orthogonal projection of the network's prediction onto the equivariant functions (with respect to the
invariant q(x_t)), so its expected squared error against eps* is never larger, and smaller by the size of the
network's non-equivariant part (the symmetrised score of equivariant diffusion models; test-time augmentation for
denoisers). Cost: |G| network calls per call.

The tiny preset's data (``data.py``) draws position, rotation angle, mirror flip, gradient direction and texture
from symmetric distributions; only the object's gentle shading has a fixed axis, ``shade * (x + y)`` with a shade
drawn symmetrically around 0. The transforms that map x + y to +-(x + y) are therefore exact symmetries of the data:
the identity, the half turn, the transpose and the anti-transpose (:data:`DIAGONAL_GROUP`, a Klein four-group). The
other four elements of the square's dihedral group (quarter turns, horizontal and vertical flips) map x + y to
+-(x - y), so they hold only up to the shading (:data:`DIHEDRAL_GROUP`, 8 elements, approximate).

Model card History 24 measures the diagonal group (held-out loss, then class control); the dihedral group is
offered for comparison and not measured there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from .errors import SaliencyNoiseError

Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class PixelSymmetry:
    """One element g of a group acting on images ``[N, C, H, W]`` (H = W) by permuting pixels: ``apply`` is g,
    ``invert`` is g^{-1}."""
    name: str
    apply: Transform
    invert: Transform


def _half_turn(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-2, -1)


def _transpose(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(-2, -1)


def _anti_transpose(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-2, -1).transpose(-2, -1)


def _quarter_turn(x: torch.Tensor) -> torch.Tensor:       # counter-clockwise on screen
    return x.rot90(1, dims=(-2, -1))


def _three_quarter_turn(x: torch.Tensor) -> torch.Tensor:
    return x.rot90(-1, dims=(-2, -1))


def _flip_x(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def _flip_y(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-2)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


DIAGONAL_GROUP: tuple[PixelSymmetry, ...] = (
    PixelSymmetry("identity", _identity, _identity),
    PixelSymmetry("half turn", _half_turn, _half_turn),
    PixelSymmetry("transpose", _transpose, _transpose),
    PixelSymmetry("anti-transpose", _anti_transpose, _anti_transpose),
)
"""The symmetries that keep the diagonal x + y up to sign: exact for the tiny preset's data."""

DIHEDRAL_GROUP: tuple[PixelSymmetry, ...] = DIAGONAL_GROUP + (
    PixelSymmetry("quarter turn", _quarter_turn, _three_quarter_turn),
    PixelSymmetry("three-quarter turn", _three_quarter_turn, _quarter_turn),
    PixelSymmetry("flip x", _flip_x, _flip_x),
    PixelSymmetry("flip y", _flip_y, _flip_y),
)
"""All 8 symmetries of the square: exact for the tiny preset's data up to its object shading."""

GROUPS: dict[str, tuple[PixelSymmetry, ...]] = {"diagonal": DIAGONAL_GROUP, "dihedral": DIHEDRAL_GROUP}
"""Named groups for command-line options."""


class GroupAveraged(nn.Module):
    """``model(x_t, t, y=labels)`` -> ``1/|G| sum_g g^{-1} eps(g x_t, t, y)`` ``[N, C_out, H, W]`` for a denoiser
    ``model`` with the UNet's call signature (a UNet or :class:`~saliency_lib.unet.TimestepExperts`; wrap it *inside*
    classifier-free and classifier guidance, which then guide the averaged prediction). All |G| transformed copies
    go through ``model`` as one batch. ``config`` is the model's, so guidance and samplers read it unchanged.
    Learnt variance channels, if any, are averaged the same way (a per-pixel output, equivariant like epsilon)."""

    def __init__(self, model: nn.Module, group: Sequence[PixelSymmetry]):
        super().__init__()
        group = tuple(group)
        if not group or not all(isinstance(g, PixelSymmetry) for g in group):
            raise SaliencyNoiseError("GroupAveraged needs a non-empty sequence of PixelSymmetry elements (e.g. "
                                     f"symmetry.DIAGONAL_GROUP), got {group!r}")
        self.model, self.group = model, group

    @property
    def config(self):
        return self.model.config

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
            raise SaliencyNoiseError(f"GroupAveraged: x_t must be square images [N, C, H, H], got {tuple(x.shape)}")
        k, n = len(self.group), x.shape[0]
        out = self.model(torch.cat([g.apply(x) for g in self.group]), t.repeat(k),
                         y=None if y is None else y.repeat(k))
        return torch.stack([g.invert(out[i * n:(i + 1) * n]) for i, g in enumerate(self.group)]).mean(0)


def with_group_averaging(preset, group: Sequence[PixelSymmetry]):
    """A copy of ``preset`` (a :class:`~saliency_lib.presets.Preset`) whose DDPM is :class:`GroupAveraged` over
    ``group`` (the other models are shared)."""
    return dataclasses.replace(preset, unet=GroupAveraged(preset.unet, group))
