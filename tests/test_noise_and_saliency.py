import math

import pytest
import torch

from saliency_lib import noise, saliency
from saliency_lib.classifiers import ClassifierConfig, SmallResNet
from saliency_lib.errors import SaliencyNoiseError


def _x(seed=0, shape=(2, 3, 16, 16)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_standardize_per_image_and_pure():
    x = _x() * torch.tensor([3.0, 0.5]).view(2, 1, 1, 1) + 2
    before = x.clone()
    z = noise.standardize(x)
    assert torch.equal(x, before)
    assert torch.allclose(z.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(z.std(dim=(1, 2, 3)), torch.ones(2), atol=1e-5)
    with pytest.raises(SaliencyNoiseError, match="constant"):
        noise.standardize(torch.ones(1, 3, 4, 4))


def test_rotations_and_flips():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 3] = 1  # top-right
    assert noise.rotate90(x, 1)[0, 0, 0, 0] == 1       # counter-clockwise: top-right -> top-left
    assert noise.rotate90(x, 2)[0, 0, 3, 0] == 1
    assert noise.rotate90(x, 3)[0, 0, 3, 3] == 1
    assert torch.equal(noise.rotate90(x, 4), x)
    assert noise.hflip(x)[0, 0, 0, 0] == 1 and noise.vflip(x)[0, 0, 3, 3] == 1
    assert set(noise.TRANSFORMS) == {"identity", "rot90", "rot180", "rot270", "hflip", "vflip"}


def test_resize_keeps_unit_variance():
    z = noise.resize(_x(shape=(1, 3, 64, 64)), 32)
    assert z.shape == (1, 3, 32, 32)
    assert abs(z.std().item() - 1) < 1e-4
    with pytest.raises(SaliencyNoiseError, match="size"):
        noise.resize(_x(), 0)


def test_strength_mixing_endpoints_and_variance():
    crafted = noise.standardize(_x(1, (4, 3, 32, 32)))
    g = lambda: torch.Generator().manual_seed(5)
    assert torch.equal(noise.mix_with_gaussian(crafted, 1.0, g()), crafted)
    fresh = torch.randn(crafted.shape, generator=g())
    assert torch.allclose(noise.mix_with_gaussian(crafted, 0.0, g()), fresh)
    mid = noise.mix_with_gaussian(crafted, 0.3, g())
    assert abs(mid.std().item() - 1) < 0.05
    with pytest.raises(SaliencyNoiseError, match="strength"):
        noise.mix_with_gaussian(crafted, 1.5)


def test_statistics_of_white_noise_and_smooth_noise():
    white = _x(2, (8, 3, 32, 32))
    m = noise.moments(white)
    assert m["mean"].abs().max() < 0.1 and (m["std"] - 1).abs().max() < 0.1
    assert m["skewness"].abs().max() < 0.2 and m["kurtosis"].abs().max() < 0.3
    freqs, power = noise.radial_power_spectrum(white)
    assert freqs.shape == (16,) and power.shape == (8, 16)
    assert (power.mean(0) - 1).abs().max() < 0.3
    lf_white = noise.low_frequency_energy(white)
    assert (lf_white - math.pi * 0.125 ** 2).abs().max() < 0.05
    smooth = noise.standardize(torch.nn.functional.avg_pool2d(_x(3, (8, 3, 32, 32)), 5, 1, 2))
    assert (noise.low_frequency_energy(smooth) > 3 * lf_white).all()


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return SmallResNet(ClassifierConfig(width=4, image_size=16)).eval()


def test_saliency_noises_shapes_statistics_and_purity(net):
    x = _x(4)
    y = torch.tensor([1, 2])
    before = x.clone()
    net.train()
    for z in (saliency.feature_map_noise(net, x, "layer2"), saliency.fgsm_noise(net, x, y)):
        assert z.shape == x.shape
        assert torch.allclose(z.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-4)
        assert torch.allclose(z.std(dim=(1, 2, 3)), torch.ones(2), atol=1e-4)
    assert net.training, "the model's mode is restored"
    assert torch.equal(x, before)
    net.eval()
    fmap = saliency.feature_map(net, x, "layer3", p=2)
    assert fmap.shape == (2, 1, 16, 16) and (fmap >= 0).all()
    fgsm = saliency.fgsm_noise(net, x, y)
    assert all(len(img.unique()) <= 3 for img in fgsm)  # standardized signs: at most {-a, 0, b} per image
    with pytest.raises(SaliencyNoiseError, match="layer 'layer9'"):
        saliency.feature_map(net, x, "layer9")
    with pytest.raises(SaliencyNoiseError, match="class ids"):
        saliency.fgsm_noise(net, x, torch.tensor([1, 50]))


def test_saliency_weighted_and_background_free(net):
    x = _x(5)
    s = saliency.input_gradient_saliency(net, x, torch.tensor([0, 3]))
    mask = saliency.salient_mask(s, fraction=0.25)
    assert mask.dtype == torch.bool and abs(mask.float().mean().item() - 0.25) < 0.1
    w = saliency.saliency_weighted_noise(s, torch.Generator().manual_seed(0))
    assert w.shape == (2, 3, 16, 16) and abs(w.std().item() - 1) < 0.01
    crafted = noise.standardize(_x(6))
    bf = saliency.background_free_noise(crafted, mask, torch.Generator().manual_seed(0))
    assert torch.equal(bf[mask.expand_as(bf)], crafted[mask.expand_as(crafted)])
    assert not torch.equal(bf[~mask.expand_as(bf)], crafted[~mask.expand_as(crafted)])
    with pytest.raises(SaliencyNoiseError, match="mask must be bool"):
        saliency.background_free_noise(crafted, mask.float())


def test_phase_transplant_keeps_crafted_phases_and_gaussian_amplitudes():
    from saliency_lib.noise import phase_transplant
    g = torch.Generator().manual_seed(0)
    crafted = torch.randn(2, 3, 16, 16, generator=g).cumsum(-1).cumsum(-2)   # heavy low frequencies
    fresh = torch.randn(2, 3, 16, 16, generator=g)
    c0, f0 = crafted.clone(), fresh.clone()
    x = phase_transplant(crafted, fresh=fresh)
    assert torch.equal(crafted, c0) and torch.equal(fresh, f0)             # pure
    assert x.shape == crafted.shape and x.dtype == crafted.dtype
    fx, ff, fc = (torch.fft.rfft2(t.double(), norm="ortho") for t in (x, fresh, crafted))
    assert torch.allclose(fx.abs(), ff.abs(), atol=1e-5)                   # eps's energy at every frequency
    dphase = torch.remainder(fx.angle() - fc.angle() + torch.pi, 2 * torch.pi) - torch.pi
    assert dphase.abs().max() < 1e-4                                       # the crafted noise's phases
    assert abs(x.norm().item() - fresh.norm().item()) < 1e-3
    # low-frequency energy back to white noise's, where the crafted noise had most of it
    from saliency_lib.noise import low_frequency_energy
    assert (low_frequency_energy(crafted) > 0.5).all() and (low_frequency_energy(x) < 0.2).all()
    a = phase_transplant(crafted, generator=torch.Generator().manual_seed(3))
    b = phase_transplant(crafted, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(SaliencyNoiseError, match="shape"):
        phase_transplant(crafted, fresh=fresh[:1])
