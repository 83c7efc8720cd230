"""Classifier-free guidance (Ho & Salimans 2022): strengthen the class condition with the DDPM itself.

A UNet trained with label dropout (``TrainConfig.label_dropout``: a fraction of training labels replaced by a
null class, ``UNetConfig.null_class``) predicts both eps(x_t, t, y) and the unconditional eps(x_t, t, 0).
Sampling with guidance weight w uses

    eps_tilde(x_t, t, y) = (1 + w) * eps(x_t, t, y) - w * eps(x_t, t, null)          (Ho & Salimans, Eq. 6)

w = 0 is the plain conditional model; w > 0 moves each step further along the direction that separates the
class from the unconditional prediction, trading diversity for class fidelity. The rest of the reverse step
(Eq. 4-5 of the paper, or DDIM) is unchanged, so :class:`CFGModel` wraps the UNet and every sampler, SDEdit
and ILVR use it as they use the UNet. Cost: one UNet call on a doubled batch per step.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import SaliencyNoiseError


class CFGModel(nn.Module):
    """``model(x_t, t, y=labels)`` -> the guided epsilon ``[N, C, H, W]`` (variance channels, if the UNet
    learns them, come from the conditional branch). ``unet`` must have a null class."""

    def __init__(self, unet: nn.Module, weight: float):
        super().__init__()
        if weight < 0:
            raise SaliencyNoiseError(f"classifier-free guidance weight must be >= 0, got {weight}")
        self.null_label = unet.config.null_label   # raises when the UNet was not trained with a null class
        self.unet, self.weight = unet, float(weight)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            raise SaliencyNoiseError("classifier-free guidance needs the target classes y")
        if self.weight == 0:
            return self.unet(x_t, t, y=y)
        n, c = x_t.shape[0], x_t.shape[1]
        out = self.unet(torch.cat([x_t, x_t]), torch.cat([t, t]), y=torch.cat([y, torch.full_like(y, self.null_label)]))
        cond, uncond = out[:n], out[n:]
        eps = (1 + self.weight) * cond[:, :c] - self.weight * uncond[:, :c]
        return torch.cat([eps, cond[:, c:]], dim=1)
