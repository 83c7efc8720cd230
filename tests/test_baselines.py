"""SDEdit and ILVR baselines."""

import pytest
import torch

from saliency_lib.baselines import ilvr, low_pass, sdedit
from saliency_lib.errors import SaliencyNoiseError
from saliency_lib.pipeline import Sampler, generate, guides_for
from saliency_lib.presets import load_tiny


@pytest.fixture(scope="module")
def preset():
    return load_tiny()


def test_low_pass():
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(low_pass(torch.full((1, 3, 8, 8), 0.3), 4), torch.full((1, 3, 8, 8), 0.3), atol=1e-6)
    assert torch.equal(low_pass(x, 1), x)
    lp = low_pass(x, 4)
    assert lp.abs().mean() < x.abs().mean() / 2          # high frequencies removed
    with pytest.raises(SaliencyNoiseError, match="must divide"):
        low_pass(x, 3)


def test_sdedit_interpolates_between_guide_and_generation(preset):
    g = guides_for(preset, 2)
    s = Sampler("ddim", 10)
    near = sdedit(preset, g.images, "fish", 0.05, s, seed=1)      # one step of noise: almost the guide
    far = sdedit(preset, g.images, "fish", 1.0, s, seed=1)
    assert near.shape == g.images.shape
    assert (near - g.images).abs().mean() < 0.1 < (far - g.images).abs().mean()
    assert torch.equal(near, sdedit(preset, g.images, "fish", 0.05, s, seed=1))
    with pytest.raises(SaliencyNoiseError, match="t0 is a fraction"):
        sdedit(preset, g.images, "fish", 1.5, s)


def test_ilvr_imposes_the_guide_low_frequencies(preset):
    g = guides_for(preset, 2)
    s = Sampler("ddim", 5)
    x_T = torch.randn(g.images.shape, generator=torch.Generator().manual_seed(3))
    # factor 1: phi is the identity, so the final replacement returns the guide itself
    assert torch.allclose(ilvr(preset, g.images, "key", 1, x_T=x_T, sampler=s), g.images, atol=1e-6)
    out = ilvr(preset, g.images, "key", 4, x_T=x_T, sampler=s)
    free = generate(preset, x_T, "key", s)
    err_ilvr = (torch.nn.functional.avg_pool2d(out, 4) - torch.nn.functional.avg_pool2d(g.images, 4)).abs().mean()
    err_free = (torch.nn.functional.avg_pool2d(free, 4) - torch.nn.functional.avg_pool2d(g.images, 4)).abs().mean()
    assert err_ilvr < 0.5 * err_free
