import math

import pytest
import torch
from torch import nn

from saliency_lib import data
from saliency_lib.errors import SaliencyNoiseError
from saliency_lib.symmetry import DIAGONAL_GROUP, DIHEDRAL_GROUP, GroupAveraged


class Conditional(nn.Module):
    """A small conditional denoiser with the UNet's call signature and no built-in symmetry."""

    def __init__(self, equivariant: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 1 if equivariant else 3, padding=0 if equivariant else 1)
        self.pos = nn.Parameter(torch.zeros(1, 3, 8, 8) if equivariant else torch.randn(1, 3, 8, 8))
        self.emb = nn.Embedding(4, 3)
        self.config = object()

    def forward(self, x, t, y=None):
        return self.conv(x) + self.pos + self.emb(y)[:, :, None, None] + t.view(-1, 1, 1, 1) / 1000


def _close(a, b):
    return torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("group", [DIAGONAL_GROUP, DIHEDRAL_GROUP], ids=["diagonal", "dihedral"])
def test_groups_are_closed_under_composition_and_inverses_undo(group):
    x = torch.randn(2, 3, 5, 5)
    images = [g.apply(x) for g in group]
    assert len({tuple(im.flatten().tolist()) for im in images}) == len(group)   # distinct elements
    for g in group:
        assert torch.equal(g.invert(g.apply(x)), x)
        for h in group:   # g h is again an element
            assert any(torch.equal(g.apply(h.apply(x)), im) for im in images), (g.name, h.name)


def test_group_average_is_equivariant_and_leaves_an_equivariant_model_unchanged():
    x, t, y = torch.randn(4, 3, 8, 8), torch.tensor([5, 100, 300, 900]), torch.tensor([0, 1, 2, 3])
    averaged = GroupAveraged(Conditional(), DIAGONAL_GROUP)
    out = averaged(x, t, y=y)
    assert out.shape == x.shape and not _close(out, averaged.model(x, t, y=y))
    for g in DIAGONAL_GROUP:
        assert _close(averaged(g.apply(x), t, y=y), g.apply(out)), g.name
    equivariant = Conditional(equivariant=True)
    assert _close(GroupAveraged(equivariant, DIHEDRAL_GROUP)(x, t, y=y), equivariant(x, t, y=y))
    assert averaged.config is averaged.model.config


def test_group_average_never_increases_the_error_against_an_equivariant_target():
    """The projection argument of symmetry.py, on an evaluation set closed under the group."""
    x0, t, y = torch.randn(6, 3, 8, 8), torch.full((6,), 200), torch.arange(6) % 4
    target_model = Conditional(equivariant=True)
    xs = torch.cat([g.apply(x0) for g in DIAGONAL_GROUP])
    ts, ys = t.repeat(4), y.repeat(4)
    target = target_model(xs, ts, y=ys)
    model = Conditional()
    with torch.no_grad():
        plain = (model(xs, ts, y=ys) - target).pow(2).mean()
        averaged = (GroupAveraged(model, DIAGONAL_GROUP)(xs, ts, y=ys) - target).pow(2).mean()
    assert averaged < plain


def test_the_half_turn_is_a_symmetry_of_the_tiny_data():
    """A half-turned sample is itself a sample: the same parameters with the centre mirrored, angle and gradient
    direction turned by pi, the texture half-turned and the shading's sign flipped."""
    p = data.make_params("val", 0, 8)
    q = dict(p)
    q["cx"], q["cy"] = 1 - p["cx"], 1 - p["cy"]
    q["angle"], q["grad_angle"] = p["angle"] + math.pi, p["grad_angle"] + math.pi
    q["texture"], q["shade"] = p["texture"].flip(-2, -1), -p["shade"]
    a, b = data.render_tensors(p), data.render_tensors(q)
    half_turn = DIAGONAL_GROUP[1]
    assert (half_turn.apply(a.images) - b.images).abs().max() < 1e-4
    assert (half_turn.apply(a.masks.float()) != b.masks.float()).float().mean() < 0.01


def test_group_average_rejects_bad_groups_and_non_square_images():
    with pytest.raises(SaliencyNoiseError, match="PixelSymmetry"):
        GroupAveraged(Conditional(), [])
    with pytest.raises(SaliencyNoiseError, match="square"):
        GroupAveraged(Conditional(), DIAGONAL_GROUP)(torch.randn(1, 3, 8, 6), torch.tensor([1]), y=torch.tensor([0]))
