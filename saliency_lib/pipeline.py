"""Algorithm 1 end to end: guide -> Inverting Gradients -> standardized noise -> DDPM with a target class.

    preset = load_preset("tiny")
    guides = guide_batch(n=4)                                   # held-out shapes, [-1, 1]
    noise = craft_noise(preset, guides.images, guides.labels, steps=(0, 1000), seed=0)
    x_T = mix_with_gaussian(noise[1000], strength=0.3, generator=torch.Generator().manual_seed(1))
    images = generate(preset, x_T, target="fish", sampler=Sampler("ddim", 50), seed=2)
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from . import data
from .classifiers import Normalization
from .diffusion import image_generators
from .errors import SaliencyNoiseError, check_image_batch, check_labels, check_number
from .inversion import IGConfig, cached_invert_gradients
from .noise import resize, standardize
from .photos import read_photo
from .presets import Preset


PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}   # Sampler.precision -> autocast dtype (None: off)


class AutocastModel(nn.Module):
    """``model(x_t, t, y=labels)`` run under ``torch.autocast(dtype)`` (convolutions and matmuls in ``dtype``), its
    output cast back to x_t's dtype, so the sampler's own arithmetic stays float32 (schedules float64)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        with torch.autocast(x_t.device.type, dtype=self.dtype):
            out = self.model(x_t, t, y=y)
        return out.to(x_t.dtype)


@dataclass(frozen=True)
class Sampler:
    method: str = "ddim"   # "ddim" (deterministic with eta=0) or "ddpm" (ancestral, Eq. 5)
    steps: int = 50        # number of respaced steps
    eta: float = 0.0       # DDIM noise (0 = deterministic)
    guidance: float | None = None  # classifier-free guidance weight w (guidance.py); None = the preset's default
    classifier_scale: float | None = None  # classifier guidance scale s (guidance.py); None = the preset's default
    precision: str = "float32"  # "float32", or "bfloat16": the denoiser under torch.autocast (faster where the CPU
                                # has AMX/AVX512-BF16; an option, its measured effect is in the README)

    def __post_init__(self) -> None:
        if self.method not in ("ddim", "ddpm"):
            raise SaliencyNoiseError(f"Sampler.method must be 'ddim' or 'ddpm', got {self.method!r}")
        if self.precision not in PRECISIONS:
            raise SaliencyNoiseError(f"Sampler.precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}")
        object.__setattr__(self, "steps", check_number("Sampler.steps", self.steps, 1, None, integer=True))
        # eta interpolates DDIM (0) and DDPM-like (1) noise; outside [0, 1] the step's variance is not a variance
        object.__setattr__(self, "eta", check_number("Sampler.eta", self.eta, 0.0, 1.0))
        if self.guidance is not None:
            object.__setattr__(self, "guidance", check_number(
                "Sampler.guidance (the classifier-free guidance weight w; None: the preset's)", self.guidance, 0.0))
        if self.classifier_scale is not None:
            object.__setattr__(self, "classifier_scale", check_number(
                "Sampler.classifier_scale (the classifier guidance scale s; None: the preset's)",
                self.classifier_scale, 0.0))

    @classmethod
    def parse(cls, text: str, guidance: float | None = None, classifier_scale: float | None = None) -> "Sampler":
        """``"ddim:50"`` -> ``Sampler("ddim", 50)``, ``"ddpm:250"`` -> ``Sampler("ddpm", 250)`` (script options)."""
        method, _, steps = text.partition(":")
        if not steps.isdigit():
            raise SaliencyNoiseError(f"sampler {text!r}: expected method:steps, e.g. 'ddim:50' or 'ddpm:250'")
        return cls(method, int(steps), guidance=guidance, classifier_scale=classifier_scale)

    def unguided(self, preset: Preset) -> "Sampler":
        """This sampler with every guidance ``preset`` would apply switched off: w = 0, and s = 0 where the preset
        has a classifier guidance scale (elsewhere ``None``, so that labels name only the guidance that exists)."""
        return dataclasses.replace(self, guidance=0.0, classifier_scale=0.0 if preset.classifier_scale else None)

    def denoiser(self, preset: Preset):
        """The preset's model wrapped in this sampler's guidance (:meth:`~saliency_lib.presets.Preset.denoiser`), and
        in :class:`AutocastModel` when ``precision`` is not float32."""
        model = preset.denoiser(self.guidance, self.classifier_scale)
        dtype = PRECISIONS[self.precision]
        return model if dtype is None else AutocastModel(model, dtype)

    @property
    def respacing(self) -> str:
        return f"ddim{self.steps}" if self.method == "ddim" else str(self.steps)

    @property
    def label(self) -> str:
        return (f"{self.method.upper()}-{self.steps}" + ("" if self.guidance is None else f", w={self.guidance:g}")
                + ("" if self.classifier_scale is None else f", s_cls={self.classifier_scale:g}")
                + ("" if self.precision == "float32" else f", {self.precision}"))


def guide_batch(n: int, start: int = 0, size: int = 32):
    """Held-out guide images of the tiny preset's dataset (split "guides", never trained on)."""
    return data.make_batch("guides", start, n, size)


@dataclass
class Guides:
    images: torch.Tensor             # [G, 3, S, S] in [-1, 1] at the DDPM resolution
    labels: torch.Tensor | None      # [G] true classes (None: recovered from the gradients, iDLG)
    masks: torch.Tensor | None       # [G, 1, S, S] bool object masks (tiny preset only: the measurements)


def load_guide_images(paths: Sequence[str | Path], size: int) -> torch.Tensor:
    """Image files -> ``[G, 3, size, size]`` in [-1, 1] (centre square crop, bicubic resize; any image, converted to
    RGB: see :func:`~saliency_lib.photos.read_photo`)."""
    return torch.stack([read_photo(p, size, "centre", colour_photo=False) for p in paths])


def guides_for(preset: Preset, n: int, paths: Sequence[str | Path] = (), labels: Sequence[int | str] | None = None,
               start: int = 0) -> Guides:
    """The guides x* of a notebook: held-out dataset shapes (tiny) or the given image files (any preset).

    With ``paths`` the images are read from disk and ``labels`` (names or ids; None: recovered by IG) give
    their true classes; without, the tiny preset's ``guides`` split supplies ``n`` shapes with masks.
    """
    if paths:
        ys = None if labels is None else target_labels(preset, list(labels), len(paths))
        return Guides(load_guide_images(paths, preset.image_size), ys, None)
    if preset.name != "tiny":
        raise SaliencyNoiseError(f"preset {preset.name!r} has no built-in guides: pass guide image files "
                                 "(the notebooks' guide_images parameter) and optionally their labels")
    b = guide_batch(n, start, preset.image_size)
    return Guides(b.images, b.labels, b.masks)


@dataclass
class CraftedNoise:
    noises: dict[int, torch.Tensor]   # IG step k -> standardized noise [B, 3, S, S] at the DDPM resolution
    raw: dict[int, torch.Tensor]      # IG step k -> IG image [B, 3, H, W] in the classifier space
    stats: dict                       # IG stats (losses [iters, B], best_loss, cached, labels [B] used, ...)

    def __getitem__(self, k: int) -> torch.Tensor:
        if k not in self.noises:
            raise SaliencyNoiseError(f"no snapshot at IG step {k}; available: {sorted(self.noises)}")
        return self.noises[k]

    def at_ig_resolution(self) -> "CraftedNoise":
        """The same snapshots standardized at the resolution IG ran at (e.g. 128 px photos), not resized to the
        DDPM's: for looking at them (the IG-step slider), not for sampling."""
        return CraftedNoise({k: standardize(v) for k, v in self.raw.items()}, self.raw, self.stats)


def craft_noise(preset: Preset, guides: torch.Tensor, labels: torch.Tensor | None, steps: Sequence[int] = (1000,),
                seed: int = 0, ig: IGConfig | None = None, cache_dir: str | Path | None = None,
                progress: bool = False, classifier: nn.Module | None = None,
                allow_partial: bool = False, part: tuple[int, int] | None = None) -> CraftedNoise:
    """Alg. 1 lines 1-3: IG against the preset's classifier, snapshots at ``steps``, standardized.

    guides: ``[B, 3, H, W]`` in [-1, 1] (diffusion space). The IG run lasts ``max(steps)`` iterations
    (its LR milestones are fractions of that) unless ``ig`` says otherwise; the other IG settings default
    to the preset's (``preset.ig_config``). ``classifier``: invert this one instead of ``preset.classifier``
    (its ``config.normalization`` gives its input space), e.g. one of ``preset.ig_alternatives``. Ctrl-C stops IG
    and raises ``KeyboardInterrupt``; with ``allow_partial`` it returns the snapshots reached instead
    (``stats["interrupted"]``), never cached. ``part=(first, total)``: these guides are rows ``first, ...`` of a run
    over ``total`` guides and start from those rows of its init (the protocol's chunks; see
    :func:`~saliency_lib.inversion.cached_invert_gradients`).
    """
    check_image_batch("guides", guides, channels=3, value_range=(-1, 1))
    steps = sorted(set(int(s) for s in steps))
    base = ig or dataclasses.replace(preset.ig_config, iterations=max(steps))
    cfg = dataclasses.replace(base, snapshots=tuple(steps))
    model = preset.classifier if classifier is None else classifier
    norm = preset.normalization if classifier is None else classifier.config.normalization
    device = next(model.parameters()).device
    result, stats = cached_invert_gradients(model, norm.from_diffusion(guides.to(device)),
                                            labels if labels is None else labels.to(device), norm,
                                            cfg, seed=seed, cache_dir=cache_dir, progress=progress,
                                            allow_partial=allow_partial, part=part)
    noises = {k: resize(standardize(v), preset.image_size) for k, v in result.snapshots.items()}
    stats["labels"] = result.labels.detach().cpu()   # given, or recovered by IG
    return CraftedNoise(noises=noises, raw=result.snapshots, stats=stats)


@dataclass
class GuidedNoise:
    """What notebooks 02-05 share: the guides, their crafted noise and one fresh Gaussian draw."""
    guides: Guides
    crafted: CraftedNoise
    fresh: torch.Tensor          # [G, 3, S, S] ~ N(0, I): the Gaussian baseline and the strength mix's eps


def prepare_guided_noise(preset: Preset, n_guides: int, ig_steps: Sequence[int], seed: int = 0,
                         cache_dir: str | Path | None = None, paths: Sequence[str | Path] = (),
                         labels: Sequence[int | str] | None = None) -> GuidedNoise:
    """Guides (:func:`guides_for`), IG snapshots at ``ig_steps`` (:func:`craft_noise`, seeded ``seed``,
    cached) and fresh N(0, I) noise from ``seed + 1``."""
    guides = guides_for(preset, n_guides, paths, labels)
    crafted = craft_noise(preset, guides.images, guides.labels, steps=ig_steps, seed=seed, cache_dir=cache_dir)
    fresh = torch.randn(crafted[max(ig_steps)].shape, generator=torch.Generator().manual_seed(seed + 1))
    return GuidedNoise(guides, crafted, fresh)


def target_labels(preset: Preset, target: int | str | Sequence[int | str] | torch.Tensor, n: int) -> torch.Tensor:
    """Class ids ``[n]`` from one class (name or id; numpy ints too) or one per image (a list, array or tensor)."""
    if isinstance(target, bool) or (isinstance(target, torch.Tensor) and target.dtype == torch.bool):
        raise SaliencyNoiseError(f"target must be class names or ids, got the bool {target!r}")
    if isinstance(target, torch.Tensor):
        if target.dim() == 0:
            target = target.item()
        else:
            return check_labels("target", target, n, len(preset.class_names))
    if isinstance(target, numbers.Integral):
        target = int(target)
    if isinstance(target, (int, str)):
        return torch.full((n,), preset.class_id(target), dtype=torch.long)
    if not isinstance(target, Iterable):
        raise SaliencyNoiseError(f"target must be a class name or id, or one per image, got {type(target).__name__}")
    ids = []
    for t in target:
        if isinstance(t, bool) or not isinstance(t, (numbers.Integral, str)):
            raise SaliencyNoiseError(f"target must hold class names or ids, got {t!r} ({type(t).__name__})")
        ids.append(preset.class_id(t if isinstance(t, str) else int(t)))
    if len(ids) != n:
        raise SaliencyNoiseError(f"target lists {len(ids)} classes for {n} noises")
    return torch.tensor(ids, dtype=torch.long)


def generate(preset: Preset, x_T: torch.Tensor, target: int | str | Sequence[int | str] | torch.Tensor,
             sampler: Sampler = Sampler(), seed: int = 0, progress: bool = False,
             model: torch.nn.Module | None = None, first_index: int = 0) -> torch.Tensor:
    """Alg. 1 line 4: sample the DDPM from the given ``x_T`` ``[N, 3, S, S]`` with target classes.

    Returns ``[N, 3, S, S]`` in [-1, 1]. ``seed`` drives the sampler's own noise (DDPM, DDIM eta > 0), one
    stream per image: image j is image ``first_index + j`` of the run seeded ``seed``
    (:func:`~saliency_lib.diffusion.image_generators`), so it comes out the same whether drawn alone
    (``x_T[j:j+1]``, ``first_index=j``) or in any batch;
    ``sampler.guidance`` the classifier-free guidance weight, ``sampler.classifier_scale`` the classifier
    guidance scale (None: the preset's). ``model``: the denoiser ``model(x_t, t, y=labels)`` to sample instead of
    ``sampler.denoiser(preset)`` (e.g. your own guidance wrapper of it).
    """
    check_image_batch("x_T", x_T, channels=3, size=preset.image_size)
    if not isinstance(sampler, Sampler):
        raise SaliencyNoiseError(f"sampler must be a Sampler, e.g. Sampler('ddim', 50), got {type(sampler).__name__}")
    seed = check_number("seed", seed, 0, None, integer=True)
    first_index = check_number("first_index", first_index, 0, None, integer=True)
    param = next(preset.unet.parameters())
    if x_T.dtype != param.dtype:
        warnings.warn(f"x_T is {x_T.dtype}; converted to the DDPM's {param.dtype}", stacklevel=2)
    y = target_labels(preset, target, x_T.shape[0]).to(param.device)
    diffusion = preset.diffusion(sampler.respacing)
    g = image_generators(seed, x_T.shape[0], first_index, param.device)
    denoiser = sampler.denoiser(preset) if model is None else model
    with torch.no_grad():
        images = diffusion.sample(denoiser, x_T.to(param.device, param.dtype), y, method=sampler.method,
                                  eta=sampler.eta, generator=g, progress=progress)
    if not torch.isfinite(images).all():
        w = preset.guidance_weight if sampler.guidance is None else sampler.guidance
        s = preset.classifier_scale if sampler.classifier_scale is None else sampler.classifier_scale
        raise SaliencyNoiseError(f"sampling with {sampler.method.upper()}-{sampler.steps} (guidance w={w:g}, classifier "
                                 f"scale s={s:g}, eta={sampler.eta:g}) produced NaN or inf values; x_T "
                                 f"ranged over [{x_T.min().item():.3g}, {x_T.max().item():.3g}] (N(0, I) noise stays "
                                 "within about +-5): lower the guidance or check x_T")
    return images


def saliency_classifier(preset: Preset) -> tuple[nn.Module, Normalization]:
    """The classifier that saliency maps (feature maps, FGSM, input gradients) are taken from, and its input space.

    Saliency needs a network that recognises the object: ``preset.saliency_classifier`` where the preset ships one
    (the tiny preset's IG classifier is untrained on purpose, so it ships a trained small ResNet for this), else
    ``preset.classifier`` (imagenet128: the paper's ResNet18).
    """
    if preset.saliency_classifier is None:
        return preset.classifier, preset.normalization
    return preset.saliency_classifier, preset.saliency_classifier.config.normalization
