import math

import pytest
import torch

from saliency_lib import data
from saliency_lib.errors import SaliencyNoiseError


def test_deterministic_and_independent_of_batching():
    a = data.make_batch("train", 10, 6)
    b = data.make_batch("train", 10, 6)
    c = data.make_batch("train", 12, 2)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert torch.equal(a.images[2:4], c.images) and torch.equal(a.labels[2:4], c.labels)
    for split in ("val", "test", "guides"):  # splits never share samples
        other = data.make_batch(split, 10, 6)
        assert not torch.equal(a.images, other.images)


def test_shapes_ranges_and_classes():
    b = data.make_batch("val", 0, 64)
    assert b.images.shape == (64, 3, 32, 32) and b.masks.shape == (64, 1, 32, 32)
    assert b.images.min() >= -1 and b.images.max() <= 1 and b.masks.dtype == torch.bool
    assert len(data.CLASS_NAMES) >= 8 and set(b.labels.tolist()) == set(range(data.NUM_CLASSES))
    assert (b.masks.flatten(1).sum(1) > 15).all()  # every object is visible
    forced = data.make_batch("val", 0, 8, labels=torch.arange(8))
    assert forced.labels.tolist() == list(range(8))


def test_masks_and_poses_agree_with_pixels():
    b = data.make_batch("test", 0, 32)
    n, _, h, w = b.images.shape
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    for i in range(n):
        m = b.masks[i, 0]
        cx, cy = (xx[m].mean().item(), yy[m].mean().item())
        # mask centroid lies within the object's extent of the pose centre
        assert math.hypot(cx - b.centers[i, 0].item(), cy - b.centers[i, 1].item()) < b.scales[i].item()
        # the mask fits inside the pose's circle of radius sqrt(2) * scale
        d = torch.sqrt((xx[m] - b.centers[i, 0]) ** 2 + (yy[m] - b.centers[i, 1]) ** 2)
        assert d.max() <= math.sqrt(2) * b.scales[i] + 1.0
        # object pixels differ from the background: inside and outside colours separate
        img = b.images[i]
        inside = img[:, m].mean(1)
        ring = torch.nn.functional.max_pool2d(m[None, None].float(), 5, 1, 2)[0, 0].bool() & ~m
        outside = img[:, ring].mean(1)
        assert (inside - outside).abs().max() > 0.15


def test_rendering_follows_the_pose():
    # same sample drawn flipped: the mask mirrors about the pose's axis; rotation by pi rotates it
    p = data._draw_params(data.SPLIT_SEEDS["test"] + 3, label=1)
    p.update(cx=0.5, cy=0.5, angle=0.0, flip=False)
    base = data.render([p]).masks[0, 0]
    flipped = data.render([{**p, "flip": True}]).masks[0, 0]
    rot = data.render([{**p, "angle": math.pi}]).masks[0, 0]
    assert (base ^ flipped.flip(1)).float().mean() < 0.02
    assert (base ^ rot.flip(0).flip(1)).float().mean() < 0.02
    assert (base ^ flipped).float().mean() > 0.05  # the L-shape is chiral


def test_bad_requests():
    with pytest.raises(SaliencyNoiseError, match="unknown split"):
        data.make_batch("holdout", 0, 2)
    with pytest.raises(SaliencyNoiseError, match="start >= 0"):
        data.make_batch("train", -1, 2)
    with pytest.raises(SaliencyNoiseError, match="unknown class"):
        data.class_id("dragon")
    assert data.class_id("fish") == data.CLASS_NAMES.index("fish")


def test_object_sizes_cover_the_scale_range():
    b = data.make_batch("train", 0, 256)
    half_size = b.scales   # pixels: 0.32-0.54 of the half-width of a 32x32 image, i.e. 5.1-8.6 px
    assert half_size.min() >= 0.32 * 16 and half_size.max() <= 0.54 * 16
    assert half_size.min() < 0.36 * 16 and half_size.max() > 0.50 * 16   # the whole range is used
    area = b.masks.float().mean(dim=(1, 2, 3))
    assert area.min() > 0.01   # even the smallest object covers more than a dozen pixels


def test_colour_shift_is_pure_identity_at_one_and_keeps_grey_pixels():
    b = data.make_batch("test", 0, 4)
    before = b.images.clone()
    torch.testing.assert_close(data.colour_shift(b.images, 1.0, 1.0), b.images, atol=1e-6, rtol=0)
    shifted = data.colour_shift(b.images, 3.0, 2.0)
    assert torch.equal(b.images, before)                     # the caller's tensor is untouched
    assert shifted.shape == b.images.shape and shifted.abs().max() <= 1
    assert shifted.abs().mean() > b.images.abs().mean()       # pushed towards saturation
    grey = torch.full((1, 3, 2, 2), 0.2)                      # no chroma: only the gain acts
    torch.testing.assert_close(data.colour_shift(grey, 5.0, 2.0), torch.full((1, 3, 2, 2), 0.4))
    per_image = data.colour_shift(b.images, torch.tensor([1.0, 1.0, 3.0, 3.0]), torch.tensor([1.0, 1.0, 2.0, 2.0]))
    torch.testing.assert_close(per_image[:2], b.images[:2], atol=1e-6, rtol=0)
    assert torch.equal(per_image[2:], shifted[2:])
    with pytest.raises(SaliencyNoiseError, match="chroma and gain"):
        data.colour_shift(b.images, torch.ones(3), 1.0)
    with pytest.raises(SaliencyNoiseError, match="gain > 0"):
        data.colour_shift(b.images, 1.0, 0.0)
    with pytest.raises(SaliencyNoiseError, match=r"RGB images \[N, 3, H, W\]"):
        data.colour_shift(b.images[:, :1], 1.0, 1.0)

