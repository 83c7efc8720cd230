"""Alternative saliency sources turned into DDPM input noises (paper Sec. 4.3, Fig. 6) and the two noises
the paper only proposes (saliency-weighted Gaussian noise, background-free noise).

Pure functions (captum style): the caller's tensors and the model's mode are left untouched. Inputs
``x`` are ``[N, 3, H, W]`` in the classifier space; maps are ``[N, 1, H, W]``; noises ``[N, 3, H, W]``
are standardized per image (zero mean, unit std) like the IG noise of Alg. 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import SaliencyNoiseError, check_image_batch, check_labels
from .noise import standardize


class _EvalMode:
    """Context: model.eval() inside, the previous mode restored after."""

    def __init__(self, model: nn.Module):
        self.model, self.was_training = model, model.training

    def __enter__(self) -> nn.Module:
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


def _input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xg = x.detach().clone().requires_grad_(True)
    with _EvalMode(model), torch.enable_grad():
        loss = F.cross_entropy(model(xg), y)
        (g,) = torch.autograd.grad(loss, xg)
    return g


def feature_map(model: nn.Module, x: torch.Tensor, layer: str, p: float = 2.0) -> torch.Tensor:
    """Attention map of a layer (Zagoruyko & Komodakis): mean over channels of ``|A|^p``, upsampled to H x W.

    ``layer``: a module name of ``model`` (e.g. "layer2" for both the small ResNet and ResNet18).
    Returns ``[N, 1, H, W]``.
    """
    check_image_batch("x", x)
    modules = dict(model.named_modules())
    if layer not in modules:
        raise SaliencyNoiseError(f"layer {layer!r} not in the model; expected one of "
                                 f"{[n for n in modules if n][:20]}")
    captured: list[torch.Tensor] = []
    handle = modules[layer].register_forward_hook(lambda m, i, o: captured.append(o.detach()))
    try:
        with _EvalMode(model), torch.no_grad():
            model(x.detach().clone())
    finally:
        handle.remove()
    a = captured[0].abs().pow(p).mean(dim=1, keepdim=True)
    return F.interpolate(a, size=x.shape[-2:], mode="bilinear", align_corners=False)


def feature_map_noise(model: nn.Module, x: torch.Tensor, layer: str, p: float = 2.0) -> torch.Tensor:
    """Fig. 6 (1): the channel-averaged feature map, repeated over 3 channels and standardized."""
    return standardize(feature_map(model, x, layer, p).repeat(1, 3, 1, 1))


def fgsm_noise(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fig. 6 (2): FGSM gradient map sign(grad_x CE(model(x), y)), standardized. ``[N, 3, H, W]``."""
    check_image_batch("x", x)
    y = check_labels("y", y, x.shape[0], _num_logits(model, x))
    return standardize(_input_gradient(model, x, y).sign())


def input_gradient_saliency(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Simonyan et al. saliency: max over channels of ``|grad_x CE|``. ``[N, 1, H, W]``, >= 0."""
    check_image_batch("x", x)
    y = check_labels("y", y, x.shape[0], _num_logits(model, x))
    return _input_gradient(model, x, y).abs().amax(dim=1, keepdim=True)


def _normalize_map(s: torch.Tensor) -> torch.Tensor:
    lo = s.flatten(1).min(1).values.view(-1, 1, 1, 1)
    hi = s.flatten(1).max(1).values.view(-1, 1, 1, 1)
    return (s - lo) / (hi - lo).clamp_min(1e-12)


def salient_mask(saliency: torch.Tensor, fraction: float = 0.25, blur: int = 3) -> torch.Tensor:
    """Boolean ``[N, 1, H, W]``: the top ``fraction`` of pixels of a (box-blurred) saliency map."""
    check_image_batch("saliency", saliency, channels=1)
    if not 0 < fraction < 1:
        raise SaliencyNoiseError(f"fraction must be in (0, 1), got {fraction}")
    s = F.avg_pool2d(saliency, blur, stride=1, padding=blur // 2, count_include_pad=False) if blur > 1 else saliency
    q = torch.quantile(s.flatten(1), 1 - fraction, dim=1).view(-1, 1, 1, 1)
    return s >= q


def saliency_weighted_noise(saliency: torch.Tensor, generator: torch.Generator | None = None,
                            floor: float = 0.2, channels: int = 3) -> torch.Tensor:
    """Gaussian noise whose local amplitude follows the saliency: standardize(w * eps), w in [floor, 1]."""
    check_image_batch("saliency", saliency, channels=1)
    if not 0 <= floor < 1:
        raise SaliencyNoiseError(f"floor must be in [0, 1), got {floor}")
    n, _, h, w = saliency.shape
    eps = torch.randn((n, channels, h, w), generator=generator, dtype=saliency.dtype).to(saliency.device)
    weight = floor + (1 - floor) * _normalize_map(saliency)
    return standardize(weight * eps)


def background_free_noise(crafted: torch.Tensor, mask: torch.Tensor,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """The paper's future work: the crafted noise inside the salient ``mask``, fresh N(0, I) outside.

    ``crafted``: standardized ``[N, C, H, W]``; ``mask``: bool ``[N, 1, H, W]``.
    """
    check_image_batch("crafted", crafted)
    if mask.dtype != torch.bool or mask.shape != (crafted.shape[0], 1, *crafted.shape[2:]):
        raise SaliencyNoiseError(f"mask must be bool [N, 1, H, W] = {(crafted.shape[0], 1, *crafted.shape[2:])}, "
                                 f"got {mask.dtype} {tuple(mask.shape)}")
    fresh = torch.randn(crafted.shape, generator=generator, dtype=crafted.dtype).to(crafted.device)
    return torch.where(mask, crafted, fresh)


def _num_logits(model: nn.Module, x: torch.Tensor) -> int:
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "num_classes"):
        return int(cfg.num_classes)
    fc = getattr(model, "fc", None)
    return int(fc.out_features) if isinstance(fc, nn.Linear) else 1000
