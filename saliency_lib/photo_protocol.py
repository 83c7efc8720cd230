"""Photos drive the tiny DDPM: does the generated shape land where the photo's object is?

Inverting Gradients runs on real photos (:mod:`~saliency_lib.photos`) against EfficientNet-Lite0 at ``size`` px; the
snapshot at k, standardized and resized to the DDPM's 32 px (Alg. 1 lines 1-3), is the x_T of the tiny preset for
every target class. The photo's object region is where the trained classifier looks: its input-gradient saliency
(Simonyan et al.) box-blurred, averaged down to 32 px, top ``region_fraction`` of the pixels
(:func:`object_region`). The judge segmenter's mask of each generated shape is scored against it (IoU, centroid
distance; the judge's class accuracy for the target), next to the same targets sampled from N(0, I).

Each photo is used at two square crops (the left and the right end of its long side), so the object sits at
different places; the CIs are over these guides (:func:`~saliency_lib.metrics.bootstrap_ci`).

Which classifier state inverts best: the trained network, its untrained architecture and the trained one softened
by a temperature (logits / T in the cross-entropy) are inverted on the same guides from the same init, for the same
number of steps, and their noises scored the same way (:func:`run_photo_protocol`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .errors import SaliencyNoiseError
from .inversion import IGConfig
from .noise import mix_with_gaussian
from .photos import PhotoClassifier, PhotoGuides, load_photo_classifier, photo_guides
from .pipeline import CraftedNoise, Sampler, craft_noise
from .presets import Preset
from .protocol import assignments, score_images
from .quality import generate_batched
from .saliency import input_gradient_saliency, salient_mask


@dataclass(frozen=True)
class PhotoArgs:
    photos: tuple[str, ...] = ("chelsea", "coffee", "motorcycle", "rocket")  # bundled photos (photos.BUNDLED_PHOTOS)
    crops: tuple[str, ...] = ("left", "right")  # each photo at each crop: the object sits at different places
    size: int = 128                            # IG resolution (px); the noise is then resized to the DDPM's
    ig_steps: tuple[int, ...] = (0, 25, 100, 500)  # snapshots k of the main run (trained classifier)
    compare_steps: int = 200                   # IG iterations of each classifier state in the comparison
    temperature: float = 4.0                   # T of the softened state
    classes_per_guide: int = 8                 # target classes per guide (8 = every class of the tiny preset)
    strengths: tuple[float, ...] = (0.3, 1.0)  # crafted-noise strengths scored (1.0 = the paper's recipe)
    ddim_steps: int = 50                       # the sampler: DDIM (eta = 0) with the preset's guidance
    region_fraction: float = 0.25              # share of the pixels in the object region
    seed: int = 0                              # seeds IG inits (every state the same), fresh noise, sampler


QUICK_PHOTOS = PhotoArgs(photos=("chelsea", "coffee"), crops=("left",), size=64, ig_steps=(0, 3), compare_steps=3,
                         classes_per_guide=2, strengths=(1.0,), ddim_steps=5)


def guides_of(args: PhotoArgs, labels: str | Sequence[str | int] | None = "given",
              classifier: PhotoClassifier | None = None) -> PhotoGuides:
    """Every photo at every crop (photo-major: photo 0 at each crop, then photo 1, ...), at ``args.size`` px.

    ``labels``: as :func:`~saliency_lib.photos.photo_guides` takes them, but one per *photo* when a list (repeated
    over its crops); ``classifier`` predicts them for ``"predicted"``."""
    photos = [p for p in args.photos for _ in args.crops]
    crops = [c for _ in args.photos for c in args.crops]
    if labels is not None and not isinstance(labels, str):
        if len(labels) != len(args.photos):
            raise SaliencyNoiseError(f"{len(labels)} labels for {len(args.photos)} photos: give one per photo")
        labels = [lab for lab in labels for _ in args.crops]
    return photo_guides(photos, args.size, crops, labels=labels, classifier=classifier)


def object_region(classifier: PhotoClassifier, guides: PhotoGuides, size: int, fraction: float = 0.25
                  ) -> torch.Tensor:
    """Bool ``[G, 1, size, size]``: the top ``fraction`` of the trained classifier's input-gradient saliency for the
    guides' labels (max over channels of ``|grad_x CE|``), box-blurred (5 px) at the guides' resolution and averaged
    down to ``size`` px."""
    if guides.labels is None:
        raise SaliencyNoiseError("object_region needs the guides' labels (given or predicted)")
    if classifier.config.state != "trained":
        raise SaliencyNoiseError("the object region is where the trained classifier looks; pass the trained one")
    x = classifier.config.normalization.from_diffusion(guides.images)
    s = input_gradient_saliency(classifier, x, guides.labels)
    s = F.avg_pool2d(s, 5, stride=1, padding=2, count_include_pad=False)
    s = F.adaptive_avg_pool2d(s, size)
    return salient_mask(s, fraction, blur=1)


def ig_states(trained: PhotoClassifier, temperature: float, seed: int = 0
              ) -> dict[str, tuple[PhotoClassifier, float]]:
    """The classifier states compared: name -> (classifier, temperature)."""
    return {"trained": (trained, 1.0), "untrained": (load_photo_classifier("untrained", seed), 1.0),
            f"trained, T={temperature:g}": (trained, temperature)}


def craft_photo_noise(preset: Preset, guides: PhotoGuides, classifier: PhotoClassifier, steps: tuple[int, ...],
                      temperature: float = 1.0, seed: int = 0, cache_dir: str | Path | None = None,
                      progress: bool = False) -> CraftedNoise:
    """IG of the photo guides against ``classifier`` (the reference ImageNet settings of :class:`~saliency_lib.inversion.IGConfig`, logits
    / ``temperature``), snapshots at ``steps``, noise at the preset's resolution (cached like every IG run)."""
    cfg = IGConfig(iterations=max(steps), temperature=temperature)
    return craft_noise(preset, guides.images, guides.labels, steps=steps, seed=seed, ig=cfg, cache_dir=cache_dir,
                       progress=progress, classifier=classifier)


def score_noise(preset: Preset, x_T: torch.Tensor, region: torch.Tensor, gi: torch.Tensor, y: torch.Tensor,
                sampler: Sampler, seed: int = 0) -> tuple[dict, torch.Tensor]:
    """Sample image m from ``x_T[gi[m]]`` (``[G, 3, S, S]``, one per guide) with target ``y[m]`` and score it with the
    judge against its guide's ``region`` (bool ``[G, 1, S, S]``). Returns the scores (``iou``, ``centroid_dist`` and
    ``class_accuracy`` as ``[mean, lo, hi]`` over guides; ``n_guides``, ``n_images``) and the images
    ``[M, 3, S, S]`` in [-1, 1]."""
    images, _ = generate_batched(preset, x_T[gi], y, sampler, seed)
    scores = {"n_guides": int(gi.unique().numel()), "n_images": int(images.shape[0]),
              **score_images(preset, images, region, y, gi)}
    return scores, images


def run_photo_protocol(preset: Preset, args: PhotoArgs = PhotoArgs(), cache_dir: str | Path | None = None,
                       log: Callable[[str], None] = print, progress: bool = False) -> dict:
    """Gaussian noise, the main IG run's snapshots (at each strength), and each classifier state's noise -> rows of
    judge metrics ``[mean, lo, hi]`` over guides, plus the IG objective each state reached."""
    if preset.judge_segmenter is None or preset.judge_classifier is None:
        raise SaliencyNoiseError(f"the photo protocol needs judge models; preset {preset.name!r} has none (use tiny)")
    trained = load_photo_classifier("trained")
    guides = guides_of(args)
    G, S, K = guides.images.shape[0], preset.image_size, len(preset.class_names)
    region = object_region(trained, guides, S, args.region_fraction)
    gi, y = assignments(G, args.classes_per_guide, K)
    fresh = torch.randn((G, 3, S, S), generator=torch.Generator().manual_seed(args.seed + 1))
    sampler = Sampler("ddim", args.ddim_steps)
    rows: list[dict] = []

    def add(group: str, name: str, x_T: torch.Tensor, **extra) -> None:
        row = {"group": group, "condition": name, **extra,
               **score_noise(preset, x_T, region, gi, y, sampler, args.seed)[0]}
        rows.append(row)
        log(f"[{group}] {name}: IoU {row['iou'][0]:.3f} [{row['iou'][1]:.3f}, {row['iou'][2]:.3f}], centroid dist "
            f"{row['centroid_dist'][0]:.2f} px, class acc {row['class_accuracy'][0]:.3f}")

    add("source", "Gaussian", fresh, strength=0.0)
    main = craft_photo_noise(preset, guides, trained, args.ig_steps, 1.0, args.seed, cache_dir, progress)
    for k in args.ig_steps:
        for s in args.strengths:
            add("k", f"IG k={k}, strength {s:g}", mix_with_gaussian(main[k], s, fresh=fresh), k=k, strength=s)
    states = {}
    for name, (clf, temperature) in ig_states(trained, args.temperature, args.seed).items():
        crafted = craft_photo_noise(preset, guides, clf, (args.compare_steps,), temperature, args.seed, cache_dir,
                                    progress)
        loss = crafted.stats["loss"]
        states[name] = {"objective_start": float(loss[0].mean()), "objective_end": float(loss[-1].mean()),
                        "best_objective": float(crafted.stats["best_loss"].mean()),
                        "ig_seconds": crafted.stats.get("wall_seconds", float("nan"))}
        for s in args.strengths:
            add("state", f"{name}: IG k={args.compare_steps}, strength {s:g}",
                mix_with_gaussian(crafted[args.compare_steps], s, fresh=fresh),
                state=name, k=args.compare_steps, strength=s, temperature=temperature, **states[name])
    return {"args": dataclasses.asdict(args), "preset": preset.name, "guides": guides.names,
            "labels": [trained.class_names[i] for i in guides.labels.tolist()],
            "region_fraction_measured": float(region.float().mean()), "rows": rows}
