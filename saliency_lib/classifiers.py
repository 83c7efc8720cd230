"""Classifiers and the segmenter, with their value spaces made explicit.

Two value spaces meet in this project:

* the **diffusion space**: images ``[N, 3, H, W]`` in [-1, 1] (what the DDPM generates and the dataset
  returns);
* the **classifier space**: ``(x01 - mean) / std`` per channel, with ``x01 = (x + 1) / 2`` in [0, 1]
  (what a classifier and Inverting Gradients see). Its valid pixel box is ``[(0 - mean) / std,
  (1 - mean) / std]`` per channel.

:class:`Normalization` converts between the two. The models here take classifier-space input.

Models: torchvision ResNet18 for ImageNet (paper setup), a small CIFAR-style ResNet with BatchNorm
(what IG inverts in the ``tiny`` preset), and for evaluation only a judge: a plain CNN classifier of
another architecture and seed, and a small encoder-decoder segmenter predicting the object mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet18_Weights

from .errors import SaliencyNoiseError, WeightsError
from .unet_encoder import EncoderUNet, EncoderUNetConfig
from .weights import (
    config_from_metadata,
    config_to_metadata,
    load_module_weights,
    load_tensors,
    save_tensors,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Normalization:
    mean: tuple[float, float, float] = IMAGENET_MEAN  # per-channel mean of [0, 1] pixels
    std: tuple[float, float, float] = IMAGENET_STD    # per-channel std of [0, 1] pixels

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = torch.tensor(self.mean, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
        s = torch.tensor(self.std, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
        return m, s

    def from_diffusion(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] diffusion space -> classifier space."""
        m, s = self._stats(x)
        return ((x + 1) / 2 - m) / s

    def to_diffusion(self, z: torch.Tensor) -> torch.Tensor:
        """classifier space -> [-1, 1] diffusion space (not clipped)."""
        m, s = self._stats(z)
        return (z * s + m) * 2 - 1

    def box(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower and upper pixel bounds ``[1, 3, 1, 1]`` in classifier space."""
        m, s = self._stats(like)
        return (0 - m) / s, (1 - m) / s


# ----------------------------------------------------------------------------- small models
@dataclass(frozen=True)
class ClassifierConfig:
    arch: str = "resnet"              # "resnet" (BatchNorm ResNet, IG target) or "cnn" (judge)
    num_classes: int = 8              # output logits
    width: int = 16                   # channels of the first stage (doubles per stage)
    image_size: int = 32              # input H = W
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # classifier-space normalization (of [0, 1] pixels)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def normalization(self) -> Normalization:
        return Normalization(self.mean, self.std)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (nn.Sequential() if stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """CIFAR-style ResNet: stem, 3 stages of 2 BasicBlocks (w, 2w, 4w), global pool, linear.

    ``features(x)`` returns the activations of each stage (for attention-transfer saliency).
    """

    def __init__(self, cfg: ClassifierConfig, in_channels: int = 3):
        super().__init__()
        self.config = cfg
        w = cfg.width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.layer1 = nn.Sequential(BasicBlock(w, w, 1), BasicBlock(w, w, 1))
        self.layer2 = nn.Sequential(BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 2 * w, 1))
        self.layer3 = nn.Sequential(BasicBlock(2 * w, 4 * w, 2), BasicBlock(4 * w, 4 * w, 1))
        self.fc = nn.Linear(4 * w, cfg.num_classes)

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h1 = self.layer1(self.stem(x))
        h2 = self.layer2(h1)
        h3 = self.layer3(h2)
        return {"layer1": h1, "layer2": h2, "layer3": h3}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x)["layer3"].mean(dim=(2, 3)))


class PlainCNN(nn.Module):
    """Judge classifier: VGG-like conv-GroupNorm-GELU stacks with max pooling (no BatchNorm, no skips)."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.config = cfg
        w = cfg.width
        layers: list[nn.Module] = []
        cin = 3
        for cout in (w, 2 * w, 4 * w):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.GELU(),
                       nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.GELU(), nn.MaxPool2d(2)]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(cin * (cfg.image_size // 8) ** 2, 128),
                                  nn.GELU(), nn.Linear(128, cfg.num_classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The head's hidden activations ``[N, 128]`` (after its GELU, before the class logits) for ``x`` in the
        classifier's space: the feature space of :func:`saliency_lib.realism.kernel_distance`."""
        return self.head[:-1](self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head[-1](self.embed(x))


@dataclass(frozen=True)
class NoisyClassifierConfig:
    num_classes: int = 8        # output logits
    width: int = 16             # channels of the first ResNet stage (doubles per stage)
    image_size: int = 32        # input H = W
    num_timesteps: int = 1000   # T of the diffusion whose x_t it reads: the input's 4th channel is t / T


class NoisyClassifier(nn.Module):
    """Noise-aware classifier p(y | x_t, t) for classifier guidance (Dhariwal & Nichol 2021, Sec. 4).

    ``forward(x_t, t)``: ``x_t`` ``[N, 3, H, W]`` a noised diffusion-space image (q(x_t | x_0), Eq. 2-3; no
    classifier-space normalization: x_t is what the DDPM's reverse process holds), ``t`` ``[N]`` original
    timesteps in [0, T) -> logits ``[N, num_classes]``. A :class:`SmallResNet` whose input carries a 4th,
    constant channel t / T, so the network is told the noise level rather than left to infer it.
    """

    def __init__(self, cfg: NoisyClassifierConfig):
        super().__init__()
        self.config = cfg
        self.net = SmallResNet(ClassifierConfig(arch="resnet", num_classes=cfg.num_classes, width=cfg.width,
                                                image_size=cfg.image_size), in_channels=4)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x_t.dim() != 4 or x_t.shape[1] != 3:
            raise SaliencyNoiseError(f"x_t must be [N, 3, H, W], got {tuple(x_t.shape)}")
        if t.shape != (x_t.shape[0],):
            raise SaliencyNoiseError(f"t must be [N] = [{x_t.shape[0]}] timesteps, got {tuple(t.shape)}")
        level = (t.to(x_t.dtype) / self.config.num_timesteps).view(-1, 1, 1, 1).expand(-1, 1, *x_t.shape[2:])
        return self.net(torch.cat([x_t, level], dim=1))

    def init_from_clean(self, clean: SmallResNet) -> None:
        """Start from a classifier trained on clean images (same width): copy every weight; the stem's filter
        for the noise-level channel starts at zero, so at t = 0 the network computes what ``clean`` does
        (its normalization must be the identity on diffusion space: mean = std = 0.5)."""
        if clean.config.mean != (0.5, 0.5, 0.5) or clean.config.std != (0.5, 0.5, 0.5):
            raise SaliencyNoiseError("init_from_clean needs a classifier normalized with mean = std = 0.5 "
                                     f"(the identity on [-1, 1] images), got {clean.config.mean} / {clean.config.std}")
        if not isinstance(clean, SmallResNet) or clean.config.width != self.config.width:
            raise SaliencyNoiseError(f"init_from_clean needs a SmallResNet of width {self.config.width}, got "
                                     f"{type(clean).__name__} of width {getattr(clean.config, 'width', None)}")
        state = {k: v.clone() for k, v in clean.state_dict().items()}
        w = state["stem.0.weight"]
        state["stem.0.weight"] = torch.cat([w, torch.zeros_like(w[:, :1])], dim=1)
        self.net.load_state_dict(state)


# config class name -> (config class, module class) of the noise-aware classifiers a weights file may hold
NOISY_CLASSIFIER_TYPES: dict[str, tuple[type, type]] = {
    NoisyClassifierConfig.__name__: (NoisyClassifierConfig, NoisyClassifier),
    EncoderUNetConfig.__name__: (EncoderUNetConfig, EncoderUNet)}


def load_noisy_classifier(path: str | Path) -> nn.Module:
    """A noise-aware classifier ``model(x_t, t)`` -> logits: a :class:`NoisyClassifier` or an
    :class:`~saliency_lib.unet_encoder.EncoderUNet`, whichever config the file's metadata names."""
    state, meta = load_tensors(path)
    if meta.get("config_class") not in NOISY_CLASSIFIER_TYPES:
        raise WeightsError(f"{str(path)!r} holds weights for {meta.get('config_class')!r}, not a noise-aware "
                           f"classifier; expected one of {sorted(NOISY_CLASSIFIER_TYPES)}")
    config_cls, module_cls = NOISY_CLASSIFIER_TYPES[meta["config_class"]]
    model = module_cls(config_from_metadata(meta, config_cls))
    load_module_weights(model, state, repr(str(path)))
    return model.eval()


@dataclass(frozen=True)
class SegmenterConfig:
    width: int = 16                   # channels of the first encoder stage
    image_size: int = 32              # input H = W
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # classifier-space normalization of the input
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def normalization(self) -> Normalization:
        return Normalization(self.mean, self.std)


class Segmenter(nn.Module):
    """Small encoder-decoder (two down, two up, skip connections): object-mask logits ``[N, 1, H, W]``."""

    def __init__(self, cfg: SegmenterConfig):
        super().__init__()
        self.config = cfg
        w = cfg.width

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.GELU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.GELU())
        self.enc1, self.enc2, self.enc3 = block(3, w), block(w, 2 * w), block(2 * w, 4 * w)
        self.dec2, self.dec1 = block(6 * w, 2 * w), block(3 * w, w)
        self.head = nn.Conv2d(w, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([F.interpolate(e3, scale_factor=2), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2), e1], 1))
        return self.head(d1)


CLASSIFIER_ARCHS: dict[str, type[nn.Module]] = {"resnet": SmallResNet, "cnn": PlainCNN}


def build_classifier(cfg: ClassifierConfig) -> nn.Module:
    if cfg.arch not in CLASSIFIER_ARCHS:
        raise SaliencyNoiseError(f"unknown classifier arch {cfg.arch!r}; expected one of {sorted(CLASSIFIER_ARCHS)}")
    return CLASSIFIER_ARCHS[cfg.arch](cfg)


def save_model(model: nn.Module, path: str | Path, extra: dict[str, str] | None = None) -> None:
    meta = config_to_metadata(model.config)
    meta.update(extra or {})
    save_tensors(path, model.state_dict(), meta)


def load_classifier(path: str | Path) -> nn.Module:
    state, meta = load_tensors(path)
    model = build_classifier(config_from_metadata(meta, ClassifierConfig))
    load_module_weights(model, state, repr(str(path)))
    return model.eval()


def load_segmenter(path: str | Path) -> Segmenter:
    state, meta = load_tensors(path)
    model = Segmenter(config_from_metadata(meta, SegmenterConfig))
    load_module_weights(model, state, repr(str(path)))
    return model.eval()


# ----------------------------------------------------------------------------- ImageNet
def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names from torchvision's weights metadata (no download)."""
    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
