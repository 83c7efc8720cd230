"""Noise operations: standardise (Alg. 1), rotate / flip, resize, statistics against N(0, I), strength, phase.

All functions are pure: they return new tensors and never modify their inputs. Noises are
``[N, C, H, W]`` float tensors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import SaliencyNoiseError, check_image_batch, check_number


def standardize(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Algorithm 1, line 3: x' = (x - mu) / sigma, mu and sigma over all pixels and channels of each image."""
    check_image_batch("x", x)
    mu = x.mean(dim=(1, 2, 3), keepdim=True)
    sigma = x.std(dim=(1, 2, 3), keepdim=True)
    if (sigma < eps).any():
        raise SaliencyNoiseError("standardize: an image is constant (std ~ 0); it cannot be a noise")
    return (x - mu) / sigma


def rotate90(x: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Rotate by k x 90 degrees counter-clockwise on screen (k in {0, 1, 2, 3} or any int)."""
    check_image_batch("x", x)
    return torch.rot90(x, k % 4, dims=(2, 3))


def hflip(x: torch.Tensor) -> torch.Tensor:
    """Mirror left-right."""
    check_image_batch("x", x)
    return x.flip(3)


def vflip(x: torch.Tensor) -> torch.Tensor:
    """Mirror top-bottom."""
    check_image_batch("x", x)
    return x.flip(2)


TRANSFORMS = {"identity": lambda x: x.clone(), "rot90": lambda x: rotate90(x, 1), "rot180": lambda x: rotate90(x, 2),
              "rot270": lambda x: rotate90(x, 3), "hflip": hflip, "vflip": vflip}


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a noise to ``size x size`` (area for shrinking, bicubic for growing), then re-standardise.

    Re-standardising keeps unit variance: interpolation otherwise changes the noise's energy.
    """
    check_image_batch("x", x)
    if size < 1:
        raise SaliencyNoiseError(f"size must be >= 1, got {size}")
    if x.shape[-1] == size and x.shape[-2] == size:
        return x.clone()
    mode = "area" if size < x.shape[-1] else "bicubic"
    y = F.interpolate(x, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return standardize(y)


def mix_with_gaussian(crafted: torch.Tensor, strength: float, generator: torch.Generator | None = None,
                      fresh: torch.Tensor | None = None) -> torch.Tensor:
    """Strength control: x_T = s * crafted + sqrt(1 - s^2) * eps, eps ~ N(0, I).

    s = 1 is the paper's recipe as published (x_T = the standardized crafted noise), s = 0 plain
    Gaussian noise. With a standardized ``crafted`` the result keeps unit variance for every s.
    """
    check_image_batch("crafted", crafted)
    strength = check_number("strength (0: Gaussian noise, 1: the paper's recipe)", strength, 0.0, 1.0)
    if fresh is None:
        fresh = torch.randn(crafted.shape, generator=generator, dtype=crafted.dtype).to(crafted.device)
    elif check_image_batch("fresh", fresh).shape != crafted.shape:
        raise SaliencyNoiseError(f"fresh noise must have the crafted noise's shape {tuple(crafted.shape)} (one eps "
                                 f"per image), got {tuple(fresh.shape)}")
    return strength * crafted + math.sqrt(1 - strength ** 2) * fresh


def phase_transplant(crafted: torch.Tensor, generator: torch.Generator | None = None,
                     fresh: torch.Tensor | None = None) -> torch.Tensor:
    """The crafted noise's Fourier phases on a Gaussian noise's amplitudes.

    ``x_T = F^-1(|F(eps)| exp(i arg F(crafted)))``, per image and channel, F the orthonormal 2-D real FFT and
    eps ~ N(0, I) (``fresh``, or drawn from ``generator``). Where an image's layout lives in the phases of its
    Fourier coefficients (Oppenheim & Lim 1981, "The importance of phase in signals"), the excess low-frequency
    energy of a crafted noise lives in their amplitudes; this keeps the former and takes the latter from white noise,
    so x_T has exactly eps's energy at every frequency (and ``||x_T|| = ||eps||``). ``crafted`` and ``fresh`` are
    ``[N, C, H, W]``; the result has their shape and dtype.
    """
    check_image_batch("crafted", crafted)
    if fresh is None:
        fresh = torch.randn(crafted.shape, generator=generator, dtype=crafted.dtype).to(crafted.device)
    elif fresh.shape != crafted.shape:
        raise SaliencyNoiseError(f"fresh noise must have the crafted noise's shape {tuple(crafted.shape)}, "
                                 f"got {tuple(fresh.shape)}")
    h, w = crafted.shape[-2:]
    phase = torch.fft.rfft2(crafted.double(), norm="ortho").angle()
    amplitude = torch.fft.rfft2(fresh.double(), norm="ortho").abs()
    return torch.fft.irfft2(torch.polar(amplitude, phase), s=(h, w), norm="ortho").to(crafted.dtype)


# ------------------------------------------------------------------------------------ statistics
def moments(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image ``[N]``: mean, std, skewness, excess kurtosis (all 0, 1, 0, 0 for N(0, I))."""
    check_image_batch("x", x)
    v = x.flatten(1).double()
    mu = v.mean(1)
    c = v - mu[:, None]
    sd = c.pow(2).mean(1).sqrt()
    z = c / sd[:, None].clamp_min(1e-12)
    return {"mean": mu.float(), "std": sd.float(), "skewness": z.pow(3).mean(1).float(),
            "kurtosis": (z.pow(4).mean(1) - 3).float()}


def radial_power_spectrum(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Radially averaged power spectrum: ``(frequencies [K] in cycles/pixel, power [N, K])``.

    Power of the per-channel 2-D FFT (mean removed, orthonormal), averaged over channels and over
    rings of integer radius. White N(0, I) noise is flat at 1.
    """
    check_image_batch("x", x)
    n, c, h, w = x.shape
    f = torch.fft.fft2(x.double() - x.double().mean(dim=(2, 3), keepdim=True), norm="ortho")
    p = f.abs().pow(2).mean(1)  # [N, H, W]
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None] * h
    fx = torch.fft.fftfreq(w, dtype=torch.float64)[None, :] * w
    r = torch.sqrt(fx ** 2 + fy ** 2).round().long()
    kmax = min(h, w) // 2
    power = torch.stack([p[:, r == k].mean(1) for k in range(1, kmax + 1)], dim=1)
    freqs = torch.arange(1, kmax + 1, dtype=torch.float64) / min(h, w)
    return freqs.float(), power.float()


def low_frequency_energy(x: torch.Tensor, cutoff: float = 0.125) -> torch.Tensor:
    """Fraction of the (mean-removed) energy below ``cutoff`` cycles/pixel, per image ``[N]``.

    About ``pi * cutoff^2`` (~5% at 0.125) for white noise; crafted noises put far more there.
    """
    check_image_batch("x", x)
    n, c, h, w = x.shape
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.fftfreq(w)[None, :]
    rad = torch.sqrt(fx ** 2 + fy ** 2)
    f = torch.fft.fft2(x.double() - x.double().mean(dim=(2, 3), keepdim=True), norm="ortho").abs().pow(2).mean(1)
    total = f.flatten(1).sum(1)
    low = f[:, (rad > 0) & (rad <= cutoff)].sum(1)
    return (low / total.clamp_min(1e-30)).float()
