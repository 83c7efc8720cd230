"""Two ways of imposing a guide's structure that the paper does not use, as baselines for crafted noise.

- **SDEdit** (Meng et al. 2022): noise the guide x* to t0 with q(x_t0 | x*) and run the reverse process
  from there with the target class. Small t0 keeps the guide (colours included); large t0 forgets it.
- **ILVR** (Choi et al. 2021): start from N(0, I) and, after every reverse step, replace the low
  frequencies of x_{t-1} by those of the guide noised to the same step:
  x_{t-1} <- x_{t-1} - phi_N(x_{t-1}) + phi_N(y_{t-1}), y_{t-1} ~ q(y_{t-1} | x*), with
  phi_N = upsample(downsample(., N)) (N = 4 or 8 here).

Images are ``[N, 3, S, S]`` in [-1, 1]. Both take a :class:`~saliency_lib.pipeline.Sampler` and seeds, and
return final samples like :func:`~saliency_lib.pipeline.generate`.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .diffusion import image_generators, randn
from .errors import SaliencyNoiseError, check_image_batch
from .pipeline import Sampler, target_labels
from .presets import Preset


def low_pass(x: torch.Tensor, factor: int) -> torch.Tensor:
    """phi_N of ILVR: average-pool by ``factor`` then upsample back (bicubic, as in the reference)."""
    check_image_batch("x", x)
    if factor < 1 or x.shape[-1] % factor:
        raise SaliencyNoiseError(f"low_pass factor must divide the image size {x.shape[-1]}, got {factor}")
    small = F.avg_pool2d(x, factor)
    return F.interpolate(small, size=x.shape[-2:], mode="bicubic", align_corners=False)


def sdedit(preset: Preset, guides: torch.Tensor, target: int | str | Sequence[int | str] | torch.Tensor,
           t0: float, sampler: Sampler = Sampler(), seed: int = 0, first_index: int = 0) -> torch.Tensor:
    """SDEdit from the guides at ``t0`` (a fraction of T in (0, 1]) with the target classes; per-image noise
    streams from ``(seed, first_index + j)`` as in :func:`~saliency_lib.pipeline.generate`."""
    check_image_batch("guides", guides, channels=3, size=preset.image_size, value_range=(-1, 1))
    if not 0 < t0 <= 1:
        raise SaliencyNoiseError(f"t0 is a fraction of T in (0, 1], got {t0}")
    device = next(preset.unet.parameters()).device
    process = preset.diffusion(sampler.respacing)
    start = max(0, min(process.num_timesteps - 1, round(t0 * process.num_timesteps) - 1))
    g = image_generators(seed, guides.shape[0], first_index, device)
    x0 = guides.to(device)
    t = torch.full((x0.shape[0],), start, dtype=torch.long, device=device)
    noise = randn(x0.shape, g, device)
    x_t = process.q_sample(x0, t, noise)
    y = target_labels(preset, target, x0.shape[0]).to(device)
    return process.sample(sampler.denoiser(preset), x_t, y, method=sampler.method, eta=sampler.eta,
                          start_index=start, generator=g)


def ilvr(preset: Preset, guides: torch.Tensor, target: int | str | Sequence[int | str] | torch.Tensor,
         factor: int, x_T: torch.Tensor | None = None, sampler: Sampler = Sampler(), seed: int = 0,
         first_index: int = 0) -> torch.Tensor:
    """ILVR: low-pass guidance by the guides at every step, from ``x_T`` (default: N(0, I) from ``seed``);
    per-image noise streams from ``(seed, first_index + j)`` as in :func:`~saliency_lib.pipeline.generate`."""
    check_image_batch("guides", guides, channels=3, size=preset.image_size, value_range=(-1, 1))
    device = next(preset.unet.parameters()).device
    process = preset.diffusion(sampler.respacing)
    g = image_generators(seed, guides.shape[0], first_index, device)
    ref = guides.to(device)
    n = ref.shape[0]
    x = randn(ref.shape, g, device) if x_T is None else x_T.to(device)
    check_image_batch("x_T", x, channels=3, size=preset.image_size)
    y = target_labels(preset, target, n).to(device)
    model = sampler.denoiser(preset)
    with torch.no_grad():
        for i in range(process.num_timesteps - 1, -1, -1):
            if sampler.method == "ddpm":
                x = process.ddpm_step(model, x, i, y, generator=g).sample
            else:
                x = process.ddim_step(model, x, i, y, eta=sampler.eta, generator=g).sample
            if i > 0:   # x is now x_{i-1}: match its low frequencies to the guide noised to index i-1
                t_prev = torch.full((n,), i - 1, dtype=torch.long, device=device)
                y_prev = process.q_sample(ref, t_prev, randn(ref.shape, g, device))
            else:       # x is the final sample: match the clean guide's low frequencies
                y_prev = ref
            x = x - low_pass(x, factor) + low_pass(y_prev, factor)
    return x
