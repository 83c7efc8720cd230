"""Guidance: strengthen the class condition of a class-conditional DDPM at sampling time.

Classifier-free guidance (Ho & Salimans 2022) uses the DDPM itself; classifier guidance (Dhariwal & Nichol 2021)
a separate noise-aware classifier. Both are wrappers with the
UNet's call signature ``model(x_t, t, y=labels)`` that return a modified epsilon, so every sampler uses them as it
uses the UNet; they compose (``ClassifierGuidedModel(CFGModel(unet, w), classifier, s, ...)``).

**Classifier-free guidance.**
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

import numpy as np
import torch
import torch.nn.functional as F
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


class GradientGuidedModel(nn.Module):
    """Gradient guidance, the form classifier guidance takes: a log-density term f(x_t, t, y) whose gradient is
    added to the model's score, which on epsilon reads

        eps_hat(x_t, t, y) = eps(x_t, t, y) - s * sqrt(1 - abar_t) * grad_{x_t} f(x_t, t, y)

    (score = -eps / sqrt(1 - abar_t)). Subclasses define :meth:`log_term`, summed over the batch (the samples'
    gradients separate). ``network(x_t, t)`` -> ``[N, K]`` reads the diffusion-space x_t ``[N, 3, H, W]`` and the
    *original* timesteps ``t`` ``[N]`` (what the samplers pass the model; respaced samplers map their indices
    back). ``alphas_cumprod``: abar_t of the original, unrespaced schedule (float64, length T). The same epsilon
    serves DDIM and ancestral DDPM steps. Variance channels, if the model learns them, pass through. Cost: one
    forward and backward of ``network`` per step.
    """

    def __init__(self, model: nn.Module, network: nn.Module, scale: float, alphas_cumprod: np.ndarray):
        super().__init__()
        if scale < 0:
            raise SaliencyNoiseError(f"{type(self).__name__}: guidance scale must be >= 0, got {scale}")
        self.model, self.network, self.scale = model, network.eval(), float(scale)
        self.register_buffer("sigma", torch.from_numpy(np.sqrt(1.0 - np.asarray(alphas_cumprod, dtype=np.float64))),
                             persistent=False)

    def log_term(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``[N]`` f(x_t, t, y) from the network's ``outputs`` ``[N, K]`` and the classes ``y`` ``[N]``."""
        raise NotImplementedError

    def guidance_grad(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """grad_{x_t} f(x_t, t, y) ``[N, 3, H, W]``, each sample's own gradient."""
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            return torch.autograd.grad(self.log_term(self.network(x, t), y).sum(), x)[0]

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            raise SaliencyNoiseError(f"{type(self).__name__} needs the target classes y")
        out = self.model(x_t, t, y=y)
        if self.scale == 0:
            return out
        c = x_t.shape[1]
        sigma = self.sigma.to(x_t.device)[t.long()].to(x_t.dtype).view(-1, 1, 1, 1)
        eps = out[:, :c] - self.scale * sigma * self.guidance_grad(x_t, t, y)
        return torch.cat([eps, out[:, c:]], dim=1)


class ClassifierGuidedModel(GradientGuidedModel):
    """Classifier guidance on epsilon (Dhariwal & Nichol 2021, Algorithm 2 and Eq. 14): f = log p_phi(y | x_t, t),

        eps_hat(x_t, t, y) = eps(x_t, t, y) - s * sqrt(1 - abar_t) * grad_{x_t} log p_phi(y | x_t, t)

    i.e. the score of p(x_t | y) is the model's score plus ``s`` times the classifier's. ``classifier(x_t, t)``
    is a noise-aware classifier (:class:`~saliency_lib.unet_encoder.EncoderUNet`, the DDPM's own encoder with a pooled head
    as in guided-diffusion, or the small-ResNet :class:`~saliency_lib.classifiers.NoisyClassifier`); see
    :class:`GradientGuidedModel` for the inputs. (guided-diffusion shifts the DDPM mean by s * Sigma * grad
    instead; both follow the same guided score.)
    """

    def __init__(self, model: nn.Module, classifier: nn.Module, scale: float, alphas_cumprod: np.ndarray):
        super().__init__(model, classifier, scale, alphas_cumprod)

    @property
    def classifier(self) -> nn.Module:
        return self.network

    def log_term(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(outputs, dim=-1).gather(1, y.view(-1, 1)).squeeze(1)
