"""The evaluation protocol (notebook 06; ``python -m saliency_lib.evaluate run``): every condition the paper's
claims are measured on, scored with the judge models, one function per group of conditions.

Groups: ``source`` (noise sources and the SDEdit / ILVR baselines, DDIM), ``k`` (IG step), ``strength``,
``orientation`` (transformed noise), ``sampler`` (DDIM against DDPM), ``diversity`` (DDPM, several sampler seeds),
``guidance`` (guidance off, when the preset samples with it; every other row uses the preset's guidance) and
``classifier`` (what IG inverts). Each row holds the judge metrics (mean and 95% bootstrap CI over guides) and
``seconds_per_image``: the noise's crafting time for the row's guides plus the sampling, over the row's images.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import data
from .baselines import ilvr, sdedit
from .errors import SaliencyNoiseError
from .metrics import bootstrap_ci, centroid_distance, judge_masks, judge_probs, mask_iou
from .noise import TRANSFORMS, mix_with_gaussian
from .pipeline import CraftedNoise, Sampler, craft_noise, saliency_classifier
from .presets import Preset
from .quality import (
    batched,
    candidate_metrics,
    candidate_noise,
    generate_batched,
    ig_candidates,
)
from .saliency import (
    background_free_noise,
    feature_map_noise,
    fgsm_noise,
    input_gradient_saliency,
    saliency_weighted_noise,
    salient_mask,
)


@dataclass(frozen=True)
class ProtocolArgs:
    n_guides: int = 64                                   # held-out guides (split "guides", never trained on)
    classes_per_guide: int = 2                           # target classes per guide, balanced over the classes
    ig_steps: tuple[int, ...] = (0, 100, 300, 1000)      # IG snapshots k scored (0 = the seeded Gaussian init)
    strength: float = 0.3                                # crafted-noise strength outside the strength curve
    strengths: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 1.0)  # the strength curve (1.0 = the paper's recipe)
    sdedit_t0: tuple[float, ...] = (0.3, 0.5, 0.7)       # SDEdit start, fraction of T
    ilvr_factors: tuple[int, ...] = (4, 8)               # ILVR down-sampling factors N
    transforms: tuple[str, ...] = ("rot90", "rot180", "rot270", "hflip", "vflip")  # orientation follow
    ddim_steps: int = 50                                 # the main sampler: DDIM (eta = 0)
    ddpm_steps: int = 250                                # the ancestral sampler's respaced steps
    ddpm_guides: int = 16                                # guides (first n) for the DDPM rows and diversity
    diversity_seeds: int = 2                             # sampler seeds per (noise, class) for diversity
    classifier_guides: int = 16                          # guides (first n) for the IG-classifier rows
    classifier_snapshots: tuple[int, ...] = (0, 300, 1000)  # their IG snapshots; the largest is scored (the same
                                                         # as `evaluate ig-classifiers --steps 300,1000`: cache hits)
    seed: int = 0                                        # seeds IG inits, fresh noise and samplers


QUICK_PROTOCOL = ProtocolArgs(n_guides=4, ig_steps=(0, 10), strengths=(0.3, 1.0), sdedit_t0=(0.5,),
                              ilvr_factors=(4,), transforms=("rot90", "hflip"), ddim_steps=5, ddpm_steps=5,
                              ddpm_guides=2, classifier_guides=2, classifier_snapshots=(0, 10))


def assignments(n_guides: int, classes_per_guide: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(guide index ``[M]``, target class ``[M]``): guide i gets classes (i*c + j) mod K, j < c, so every class
    is a target equally often (when n_guides * c is a multiple of K) and each guide's own class is not special."""
    if not 1 <= classes_per_guide <= num_classes:
        raise SaliencyNoiseError(f"classes_per_guide must be in [1, {num_classes}], got {classes_per_guide}")
    gi = torch.arange(n_guides).repeat_interleave(classes_per_guide)
    j = torch.arange(classes_per_guide).repeat(n_guides)
    return gi, (gi * classes_per_guide + j) % num_classes


def _per_guide(values: torch.Tensor, gi: torch.Tensor) -> np.ndarray:
    """Mean of per-image values within each guide (NaN-aware), ``[G]``."""
    v, out = values.double(), []
    for g in gi.unique(sorted=True).tolist():
        x = v[gi == g]
        x = x[torch.isfinite(x)]
        out.append(x.mean().item() if x.numel() else float("nan"))
    return np.asarray(out)


def score_images(preset: Preset, images: torch.Tensor, guide_masks: torch.Tensor, y: torch.Tensor,
                 gi: torch.Tensor) -> dict:
    """Judge metrics of images ``[M]`` against their guides' masks: mean and 95% CI over guides."""
    masks = judge_masks(preset, images)
    gm = guide_masks[gi]
    per = {"iou": mask_iou(masks, gm), "centroid_dist": centroid_distance(masks, gm),
           "class_accuracy": (judge_probs(preset, images).argmax(1) == y).float()}
    return {k: list(bootstrap_ci(_per_guide(v, gi))) for k, v in per.items()}


def orientation_follow(preset: Preset, images: torch.Tensor, guide_masks: torch.Tensor, transform: Callable,
                       gi: torch.Tensor) -> dict:
    """Images generated from transformed noise: IoU with the transformed and with the original guide mask and
    how often the former wins; each ``[mean, lo, hi]`` over guides. ``gi``: guide index of each image."""
    masks = judge_masks(preset, images)
    moved = transform(guide_masks.float()) > 0.5
    a, b = mask_iou(masks, moved[gi]), mask_iou(masks, guide_masks[gi])
    return {"iou_transformed": list(bootstrap_ci(_per_guide(a, gi))),
            "iou_original": list(bootstrap_ci(_per_guide(b, gi))),
            "follow_rate": list(bootstrap_ci(_per_guide((a > b).float(), gi)))}


@dataclass
class ProtocolRun:
    """What every group of conditions shares: the guides, their target classes, the fresh Gaussian noise, the IG
    snapshots against the preset's classifier, the two samplers, and the rows written so far."""
    preset: Preset
    args: ProtocolArgs
    guides: data.ShapeBatch                 # the held-out guides, images [G, 3, S, S] in [-1, 1] and masks
    gi: torch.Tensor                        # [M] guide index of each generated image
    y: torch.Tensor                         # [M] its target class
    fresh: torch.Tensor                     # [G, 3, S, S] ~ N(0, I): the Gaussian baseline and the strength mix's eps
    crafted: CraftedNoise                   # IG snapshots k -> [G, 3, S, S], standardized
    cache_dir: Path | None = None           # IG cache folder
    log: Callable[[str], None] = print
    rows: list[dict] = field(default_factory=list)

    @property
    def ddim(self) -> Sampler:
        return Sampler("ddim", self.args.ddim_steps)

    @property
    def ddpm(self) -> Sampler:
        return Sampler("ddpm", self.args.ddpm_steps)

    @property
    def k_max(self) -> int:
        return max(self.args.ig_steps)

    @property
    def ig_seconds(self) -> float:
        return self.crafted.stats.get("wall_seconds", float("nan"))

    def ig_x_T(self, k: int, strength: float) -> torch.Tensor:
        """x_T ``[G, 3, S, S]``: IG snapshot k mixed with the fresh noise at ``strength``."""
        return mix_with_gaussian(self.crafted[k], strength, fresh=self.fresh)

    def add(self, group: str, name: str, images: torch.Tensor, sample_seconds: float, noise_seconds: float = 0.0,
            idx: torch.Tensor | None = None, yy: torch.Tensor | None = None, **extra) -> dict:
        """Score ``images`` (of guides ``idx``, target classes ``yy``; default all) and append the row."""
        idx = self.gi if idx is None else idx
        yy = self.y if yy is None else yy
        row = {"group": group, "condition": name, **extra, "n_guides": int(idx.unique().numel()),
               "n_images": int(images.shape[0]), **score_images(self.preset, images, self.guides.masks, yy, idx)}
        seconds = (noise_seconds + sample_seconds) / images.shape[0]   # noise_seconds: for these images' guides
        row["seconds_per_image"] = seconds if np.isfinite(seconds) else None  # None: a cached IG run of unknown cost
        self.rows.append(row)
        self.log(f"[{group}] {name}: IoU {row['iou'][0]:.3f} [{row['iou'][1]:.3f}, {row['iou'][2]:.3f}], class acc "
                 f"{row['class_accuracy'][0]:.3f}, centroid dist {row['centroid_dist'][0]:.2f} px, "
                 f"{seconds:.3f} s/image")
        return row

    def sample(self, x_T: torch.Tensor, sampler: Sampler, idx: torch.Tensor | None = None,
               yy: torch.Tensor | None = None, seed: int | None = None) -> tuple[torch.Tensor, float]:
        """Generate from ``x_T`` ``[G, 3, S, S]`` (one per guide) for images ``idx``/``yy`` (default all)."""
        idx = self.gi if idx is None else idx
        yy = self.y if yy is None else yy
        return generate_batched(self.preset, x_T[idx], yy, sampler, self.args.seed if seed is None else seed)


def gaussian_and_k_rows(run: ProtocolRun) -> None:
    """Gaussian noise, then IG snapshot k for every k (DDIM, strength ``args.strength``)."""
    a, ddim = run.args, run.ddim
    imgs, sec = run.sample(run.fresh, ddim)
    run.add("source", "Gaussian", imgs, sec, sampler=ddim.label, strength=0.0)
    for k in a.ig_steps:
        imgs, sec = run.sample(run.ig_x_T(k, a.strength), ddim)
        run.add("k", f"IG k={k}", imgs, sec, run.ig_seconds if k else 0.0, k=k, strength=a.strength,
                sampler=ddim.label)


def saliency_source_rows(run: ProtocolRun) -> None:
    """Feature-map and FGSM noise (the paper's alternatives, Fig. 6), saliency-weighted and background-free noise
    (its future work), from the preset's saliency classifier."""
    a, guides, ddim = run.args, run.guides, run.ddim
    sal_model, sal_norm = saliency_classifier(run.preset)
    x_sal = sal_norm.from_diffusion(guides.images)
    g = torch.Generator().manual_seed(a.seed + 2)
    t0 = time.time()
    saliency = input_gradient_saliency(sal_model, x_sal, guides.labels)
    saliency_seconds = time.time() - t0
    sources = {
        "feature map": lambda: feature_map_noise(sal_model, x_sal, "layer2"),
        "FGSM": lambda: fgsm_noise(sal_model, x_sal, guides.labels),
        "saliency-weighted": lambda: saliency_weighted_noise(saliency, generator=g),
        "background-free IG": lambda: background_free_noise(run.crafted[run.k_max], salient_mask(saliency),
                                                            generator=g),
    }
    for name, make in sources.items():
        t0 = time.time()
        noise = make()
        noise_seconds = time.time() - t0 + saliency_seconds + (run.ig_seconds if "IG" in name else 0.0)
        imgs, sec = run.sample(mix_with_gaussian(noise, a.strength, fresh=run.fresh), ddim)
        run.add("source", name, imgs, sec, noise_seconds, strength=a.strength, sampler=ddim.label)


def baseline_rows(run: ProtocolRun) -> None:
    """Methods that impose the guide's structure differently: SDEdit at each start t0 and ILVR at each factor N."""
    a, guides, ddim, preset = run.args, run.guides, run.ddim, run.preset
    for t0_frac in a.sdedit_t0:
        imgs, sec = batched(lambda ib, yb, **kw: sdedit(preset, guides.images[ib], yb, t0_frac, ddim, **kw),
                            run.gi, run.y, seed=a.seed)
        run.add("source", f"SDEdit t0={t0_frac}", imgs, sec, t0=t0_frac, sampler=ddim.label)
    for factor in a.ilvr_factors:
        imgs, sec = batched(lambda ib, yb, **kw: ilvr(preset, guides.images[ib], yb, factor, x_T=run.fresh[ib],
                                                    sampler=ddim, **kw), run.gi, run.y, seed=a.seed)
        run.add("source", f"ILVR N={factor}", imgs, sec, factor=factor, sampler=ddim.label)


def strength_rows(run: ProtocolRun) -> None:
    """The strength curve of the last IG snapshot (strength 1 is the paper's recipe)."""
    for s in run.args.strengths:
        imgs, sec = run.sample(run.ig_x_T(run.k_max, s), run.ddim)
        run.add("strength", f"IG k={run.k_max} s={s}", imgs, sec, run.ig_seconds, k=run.k_max, strength=s,
                sampler=run.ddim.label)


def orientation_rows(run: ProtocolRun) -> None:
    """Transform the IG x_T (Fig. 4); compare the generated object with the transformed and the original mask."""
    base = run.ig_x_T(run.k_max, run.args.strength)
    for name in run.args.transforms:
        f = TRANSFORMS[name]
        imgs, _ = run.sample(f(base), run.ddim)
        run.rows.append({"group": "orientation", "condition": name, "n_guides": run.args.n_guides,
                         **orientation_follow(run.preset, imgs, run.guides.masks, f, run.gi)})
        r = run.rows[-1]
        run.log(f"[orientation] {name}: IoU with transformed mask {r['iou_transformed'][0]:.3f}, with original "
                f"{r['iou_original'][0]:.3f}, beats it in {r['follow_rate'][0]:.2f}")


def sampler_and_diversity_rows(run: ProtocolRun) -> None:
    """DDIM against ancestral DDPM sampling, and the DDPM's diversity over sampler seeds, on the first
    ``args.ddpm_guides`` guides, from Gaussian and from crafted noise."""
    a = run.args
    sub = run.gi < a.ddpm_guides
    idx, yy = run.gi[sub], run.y[sub]
    for name, x in {"Gaussian": run.fresh, f"IG k={run.k_max} s={a.strength}": run.ig_x_T(run.k_max, a.strength)}.items():
        for sampler in (run.ddim, run.ddpm):
            imgs, sec = run.sample(x, sampler, idx, yy)
            run.add("sampler", f"{name}, {sampler.label}", imgs, sec,
                    run.ig_seconds * a.ddpm_guides / a.n_guides if "IG" in name else 0.0,
                    idx=idx, yy=yy, sampler=sampler.label)
        runs = [run.sample(x, run.ddpm, idx, yy, seed=a.seed + 1000 * (r + 1))[0] for r in range(a.diversity_seeds)]
        dists = [(runs[i] - runs[j]).pow(2).flatten(1).mean(1).sqrt()
                 for i in range(len(runs)) for j in range(i + 1, len(runs))]
        d = torch.stack(dists).mean(0) if dists else torch.full((int(sub.sum()),), float("nan"))
        run.rows.append({"group": "diversity", "condition": f"{name}, {run.ddpm.label}", "n_guides": a.ddpm_guides,
                         "seeds": a.diversity_seeds, "rms_distance": list(bootstrap_ci(_per_guide(d, idx)))})
        run.log(f"[diversity] {name}: RMS pixel distance between sampler seeds {run.rows[-1]['rms_distance'][0]:.3f}")


def guidance_rows(run: ProtocolRun) -> None:
    """Guidance off (w = 0, and s = 0 where the preset uses classifier guidance) against the preset's guidance
    (the rows above), all guides; nothing when the preset samples without guidance."""
    preset, a = run.preset, run.args
    if not (preset.guidance_weight or preset.classifier_scale):
        return
    unguided = run.ddim.unguided(preset)
    off = unguided.label.removeprefix(run.ddim.label + ", ")   # "w=0" or "w=0, s_cls=0"
    for name, x in {"Gaussian": run.fresh, f"IG k={run.k_max} s={a.strength}": run.ig_x_T(run.k_max, a.strength)}.items():
        imgs, sec = run.sample(x, unguided)
        run.add("guidance", f"{name}, {off}", imgs, sec, run.ig_seconds if "IG" in name else 0.0,
                sampler=unguided.label)


def classifier_rows(run: ProtocolRun) -> None:
    """IG against each candidate classifier (:func:`~saliency_lib.quality.ig_candidates`) on the first
    ``args.classifier_guides`` guides, last snapshot of ``args.classifier_snapshots``."""
    preset, a = run.preset, run.args
    cands = ig_candidates(preset)
    cg = data.make_batch("guides", 0, a.classifier_guides, preset.image_size)
    csub = run.gi < a.classifier_guides
    accuracy = candidate_metrics(cands, 1024, log=lambda _: None)
    kc = max(a.classifier_snapshots)
    for cname, (clf, temperature) in cands.items():
        noises, ig_wall = candidate_noise(preset, clf, temperature, cg, a.classifier_snapshots, a.seed, run.cache_dir)
        noise = mix_with_gaussian(noises[kc], a.strength, fresh=run.fresh[: a.classifier_guides])
        imgs, sec = generate_batched(preset, noise[run.gi[csub]], run.y[csub], run.ddim, a.seed)
        run.add("classifier", cname, imgs, sec, ig_wall,
                idx=run.gi[csub], yy=run.y[csub], k=kc, strength=a.strength,
                classifier_accuracy=accuracy[cname]["accuracy"], classifier_confidence=accuracy[cname]["confidence"],
                temperature=temperature)


GROUPS = (gaussian_and_k_rows, saliency_source_rows, baseline_rows, strength_rows, orientation_rows,
          sampler_and_diversity_rows, guidance_rows, classifier_rows)


def run_protocol(preset: Preset, args: ProtocolArgs, cache_dir: Path | None = None,
                 log: Callable[[str], None] = print) -> dict:
    """Every condition of the protocol (``GROUPS``, in order) -> the rows and the run's settings."""
    if preset.judge_segmenter is None or preset.judge_classifier is None:
        raise SaliencyNoiseError(f"the protocol needs judge models; preset {preset.name!r} has none (use tiny)")
    K, S = len(preset.class_names), preset.image_size
    guides = data.make_batch("guides", 0, args.n_guides, S)
    gi, y = assignments(args.n_guides, args.classes_per_guide, K)
    fresh = torch.randn((args.n_guides, 3, S, S), generator=torch.Generator().manual_seed(args.seed + 1))
    # IG against the preset's classifier: one batched run, every snapshot k
    crafted = craft_noise(preset, guides.images, guides.labels, steps=args.ig_steps, seed=args.seed,
                          cache_dir=cache_dir)
    run = ProtocolRun(preset, args, guides, gi, y, fresh, crafted, cache_dir, log)
    for group in GROUPS:
        group(run)
    return {"args": dataclasses.asdict(args), "preset": preset.name, "guidance_weight": preset.guidance_weight,
            "classifier_scale": preset.classifier_scale, "ig_seconds": run.ig_seconds, "rows": run.rows}
