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
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import data
from .baselines import ilvr, sdedit
from .errors import SaliencyNoiseError
from .distributed import Ranks, merge_by_unit, run_and_gather, shard
from .metrics import bootstrap_ci, centroid_distance, judge_masks, judge_probs, mask_iou, merge_rows
from .noise import TRANSFORMS, mix_with_gaussian
from .pipeline import CraftedNoise, Sampler, craft_noise, saliency_classifier
from .inversion import digest, model_fingerprint
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
from .weights import atomic_write_bytes


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
    chunk_guides: int = 32                               # guides per unit of work (one IG batch, its images): fixed,
                                                         # so results do not depend on the processes sharing them

    def __post_init__(self) -> None:
        if self.chunk_guides < 1 or self.n_guides < 1:
            raise SaliencyNoiseError(f"ProtocolArgs: n_guides and chunk_guides must be >= 1, got {self.n_guides} and "
                                     f"{self.chunk_guides}")


QUICK_PROTOCOL = ProtocolArgs(n_guides=4, ig_steps=(0, 10), strengths=(0.3, 1.0), sdedit_t0=(0.5,),
                              ilvr_factors=(4,), transforms=("rot90", "hflip"), ddim_steps=5, ddpm_steps=5,
                              ddpm_guides=2, classifier_guides=2, classifier_snapshots=(0, 10), chunk_guides=2)


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


def image_scores(preset: Preset, images: torch.Tensor, guide_masks: torch.Tensor, y: torch.Tensor,
                 gi: torch.Tensor) -> dict[str, torch.Tensor]:
    """Judge metrics per image ``[M]`` against the masks of their guides ``gi``: ``iou``, ``centroid_dist`` and
    ``class_accuracy`` (1 where the judge reads the target class ``y``)."""
    masks = judge_masks(preset, images)
    gm = guide_masks[gi]
    return {"iou": mask_iou(masks, gm), "centroid_dist": centroid_distance(masks, gm),
            "class_accuracy": (judge_probs(preset, images).argmax(1) == y).float()}


def score_images(preset: Preset, images: torch.Tensor, guide_masks: torch.Tensor, y: torch.Tensor,
                 gi: torch.Tensor) -> dict:
    """Judge metrics of images ``[M]`` against their guides' masks: mean and 95% CI over guides."""
    return {k: list(bootstrap_ci(_per_guide(v, gi)))
            for k, v in image_scores(preset, images, guide_masks, y, gi).items()}


def orientation_values(preset: Preset, images: torch.Tensor, guide_masks: torch.Tensor, transform: Callable,
                       gi: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image ``[M]`` generated from transformed noise: IoU with the transformed and with the original mask of its
    guide ``gi``, and whether the former is larger."""
    masks = judge_masks(preset, images)
    moved = transform(guide_masks.float()) > 0.5
    a, b = mask_iou(masks, moved[gi]), mask_iou(masks, guide_masks[gi])
    return {"iou_transformed": a, "iou_original": b, "follow_rate": (a > b).float()}


def orientation_follow(preset: Preset, images: torch.Tensor, guide_masks: torch.Tensor, transform: Callable,
                       gi: torch.Tensor) -> dict:
    """:func:`orientation_values`, each as ``[mean, lo, hi]`` over guides."""
    return {k: list(bootstrap_ci(_per_guide(v, gi)))
            for k, v in orientation_values(preset, images, guide_masks, transform, gi).items()}


def describe_row(row: dict) -> str:
    """One line for the log: the row's name and its main numbers."""
    parts = [f"{m} {row[m][0]:.3f} [{row[m][1]:.3f}, {row[m][2]:.3f}]"
             for m in ("iou", "class_accuracy", "centroid_dist", "iou_transformed", "iou_original", "follow_rate",
                       "rms_distance") if m in row]
    return f"[{row['group']}] {row['condition']}: " + ", ".join(parts)


@dataclass
class ProtocolRun:
    """What every group of conditions shares, for one chunk of guides (``args.chunk_guides`` of them, guides
    ``lo <= g < hi``; a single-process run goes through the chunks in turn, under torchrun each rank takes its
    share): all guides (cheap to render) with their target classes and fresh Gaussian noise, the IG snapshots of
    this chunk's guides, the samplers, and the chunk's rows (per-guide values, merged over chunks by
    :func:`~saliency_lib.metrics.merge_rows`).

    Every random draw is made for all guides and sliced, and every image keeps its index in the whole run (its
    sampler-noise stream), so a chunk is computed the same whichever process takes it."""
    preset: Preset
    args: ProtocolArgs
    guides: data.ShapeBatch                 # all held-out guides, images [G, 3, S, S] in [-1, 1] and masks
    lo: int                                 # this chunk's guides: lo <= g < hi
    hi: int
    gi: torch.Tensor                        # [M] guide index of each generated image (all guides)
    y: torch.Tensor                         # [M] its target class
    fresh: torch.Tensor                     # [G, 3, S, S] ~ N(0, I): the Gaussian baseline and the strength mix's eps
    crafted: CraftedNoise                   # IG snapshots k -> [hi - lo, 3, S, S] of this chunk, standardized
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
        """x_T ``[hi - lo, 3, S, S]``: this chunk's IG snapshot k mixed with its fresh noise at ``strength``."""
        return mix_with_gaussian(self.crafted[k], strength, fresh=self.fresh[self.lo:self.hi])

    def images_of(self, within: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
        """This chunk's (guide, class) pairs among the guides ``< within`` (all when None): guide indices ``[m]``,
        target classes ``[m]``, and the index of the first of them among the row's images in the whole run."""
        top = self.args.n_guides if within is None else within
        row = self.gi < top
        keep = row & (self.gi >= self.lo) & (self.gi < self.hi)
        return self.gi[keep], self.y[keep], int((row & (self.gi < self.lo)).sum())

    def sample(self, x_T: torch.Tensor, sampler: Sampler, within: int | None = None, seed: int | None = None
               ) -> tuple[torch.Tensor, float, torch.Tensor, torch.Tensor]:
        """Generate this chunk's images (guides ``< within``) from ``x_T`` ``[hi - lo, 3, S, S]`` (one per guide of
        the chunk): images, seconds, their guide indices and target classes."""
        idx, yy, first = self.images_of(within)
        images, sec = generate_batched(self.preset, x_T[idx - self.lo], yy, sampler,
                                       self.args.seed if seed is None else seed, first_index=first)
        return images, sec, idx, yy

    def add(self, group: str, name: str, images: torch.Tensor, sample_seconds: float, idx: torch.Tensor,
            yy: torch.Tensor, noise_seconds: float = 0.0, **extra) -> dict:
        """Score ``images`` (of guides ``idx``, target classes ``yy``) and append the chunk's row."""
        row = {"group": group, "condition": name, **extra,
               **per_guide_row(image_scores(self.preset, images, self.guides.masks, yy, idx), idx),
               "seconds": noise_seconds + sample_seconds}
        self.rows.append(row)
        return row


def per_guide_row(values: dict[str, torch.Tensor], gi: torch.Tensor) -> dict:
    """Per-image values ``name -> [M]`` of guides ``gi`` -> a chunk row's ``guides`` (sorted) and ``per_guide``
    means, plus ``n_images``."""
    return {"guides": gi.unique(sorted=True).tolist(), "n_images": int(gi.numel()),
            "per_guide": {k: _per_guide(v, gi).tolist() for k, v in values.items()}}


def gaussian_and_k_rows(run: ProtocolRun) -> None:
    """Gaussian noise, then IG snapshot k for every k (DDIM, strength ``args.strength``)."""
    a, ddim, lo, hi = run.args, run.ddim, run.lo, run.hi
    imgs, sec, idx, yy = run.sample(run.fresh[lo:hi], ddim)
    run.add("source", "Gaussian", imgs, sec, idx, yy, sampler=ddim.label, strength=0.0)
    for k in a.ig_steps:
        imgs, sec, idx, yy = run.sample(run.ig_x_T(k, a.strength), ddim)
        run.add("k", f"IG k={k}", imgs, sec, idx, yy, run.ig_seconds if k else 0.0, k=k, strength=a.strength,
                sampler=ddim.label)


def saliency_source_rows(run: ProtocolRun) -> None:
    """Feature-map and FGSM noise (the paper's alternatives, Fig. 6), saliency-weighted and background-free noise
    (its future work), from the preset's saliency classifier. The saliency noises are computed for all guides at
    once (cheap) and sliced, so a chunk's noise does not depend on the chunking."""
    a, guides, ddim, lo, hi = run.args, run.guides, run.ddim, run.lo, run.hi
    sal_model, sal_norm = saliency_classifier(run.preset)
    x_sal = sal_norm.from_diffusion(guides.images)
    g = torch.Generator().manual_seed(a.seed + 2)
    t0 = time.time()
    saliency = input_gradient_saliency(sal_model, x_sal, guides.labels)
    saliency_seconds = time.time() - t0
    crafted_all = torch.zeros_like(run.fresh)            # the IG noise where this chunk has it (others unused)
    crafted_all[lo:hi] = run.crafted[run.k_max]
    sources = {
        "feature map": lambda: feature_map_noise(sal_model, x_sal, "layer2"),
        "FGSM": lambda: fgsm_noise(sal_model, x_sal, guides.labels),
        "saliency-weighted": lambda: saliency_weighted_noise(saliency, generator=g),
        "background-free IG": lambda: background_free_noise(crafted_all, salient_mask(saliency), generator=g),
    }
    n = a.n_guides
    for name, make in sources.items():
        t0 = time.time()
        noise = make()[lo:hi]
        noise_seconds = ((time.time() - t0 + saliency_seconds) * (hi - lo) / n
                         + (run.ig_seconds if "IG" in name else 0.0))
        imgs, sec, idx, yy = run.sample(mix_with_gaussian(noise, a.strength, fresh=run.fresh[lo:hi]), ddim)
        run.add("source", name, imgs, sec, idx, yy, noise_seconds, strength=a.strength, sampler=ddim.label)


def baseline_rows(run: ProtocolRun) -> None:
    """Methods that impose the guide's structure differently: SDEdit at each start t0 and ILVR at each factor N."""
    a, guides, ddim, preset = run.args, run.guides, run.ddim, run.preset
    idx, yy, first = run.images_of()
    for t0_frac in a.sdedit_t0:
        imgs, sec = batched(lambda ib, yb, **kw: sdedit(preset, guides.images[ib], yb, t0_frac, ddim, **kw),
                            idx, yy, seed=a.seed, first_index=first)
        run.add("source", f"SDEdit t0={t0_frac}", imgs, sec, idx, yy, t0=t0_frac, sampler=ddim.label)
    for factor in a.ilvr_factors:
        imgs, sec = batched(lambda ib, yb, **kw: ilvr(preset, guides.images[ib], yb, factor, x_T=run.fresh[ib],
                                                    sampler=ddim, **kw), idx, yy, seed=a.seed, first_index=first)
        run.add("source", f"ILVR N={factor}", imgs, sec, idx, yy, factor=factor, sampler=ddim.label)


def strength_rows(run: ProtocolRun) -> None:
    """The strength curve of the last IG snapshot (strength 1 is the paper's recipe)."""
    for s in run.args.strengths:
        imgs, sec, idx, yy = run.sample(run.ig_x_T(run.k_max, s), run.ddim)
        run.add("strength", f"IG k={run.k_max} s={s}", imgs, sec, idx, yy, run.ig_seconds, k=run.k_max, strength=s,
                sampler=run.ddim.label)


def orientation_rows(run: ProtocolRun) -> None:
    """Transform the IG x_T (Fig. 4); compare the generated object with the transformed and the original mask."""
    base = run.ig_x_T(run.k_max, run.args.strength)
    for name in run.args.transforms:
        f = TRANSFORMS[name]
        imgs, _, idx, _ = run.sample(f(base), run.ddim)
        run.rows.append({"group": "orientation", "condition": name,
                         **per_guide_row(orientation_values(run.preset, imgs, run.guides.masks, f, idx), idx)})


def sampler_and_diversity_rows(run: ProtocolRun) -> None:
    """DDIM against ancestral DDPM sampling, and the DDPM's diversity over sampler seeds, on the first
    ``args.ddpm_guides`` guides, from Gaussian and from crafted noise."""
    a, lo, hi = run.args, run.lo, run.hi
    if lo >= a.ddpm_guides:
        return
    share = (min(hi, a.ddpm_guides) - lo) / (hi - lo)      # of the chunk's IG time
    for name, x in {"Gaussian": run.fresh[lo:hi],
                    f"IG k={run.k_max} s={a.strength}": run.ig_x_T(run.k_max, a.strength)}.items():
        for sampler in (run.ddim, run.ddpm):
            imgs, sec, idx, yy = run.sample(x, sampler, within=a.ddpm_guides)
            run.add("sampler", f"{name}, {sampler.label}", imgs, sec, idx, yy,
                    run.ig_seconds * share if "IG" in name else 0.0, sampler=sampler.label)
        runs = [run.sample(x, run.ddpm, within=a.ddpm_guides, seed=a.seed + 1000 * (r + 1))
                for r in range(a.diversity_seeds)]
        idx = run.images_of(a.ddpm_guides)[0]
        dists = [(runs[i][0] - runs[j][0]).pow(2).flatten(1).mean(1).sqrt()
                 for i in range(len(runs)) for j in range(i + 1, len(runs))]
        d = torch.stack(dists).mean(0) if dists else torch.full((idx.numel(),), float("nan"))
        run.rows.append({"group": "diversity", "condition": f"{name}, {run.ddpm.label}", "seeds": a.diversity_seeds,
                         **per_guide_row({"rms_distance": d}, idx)})


def guidance_rows(run: ProtocolRun) -> None:
    """Guidance off (w = 0, and s = 0 where the preset uses classifier guidance) against the preset's guidance
    (the rows above), all guides; nothing when the preset samples without guidance."""
    preset, a = run.preset, run.args
    if not (preset.guidance_weight or preset.classifier_scale):
        return
    unguided = run.ddim.unguided(preset)
    off = unguided.label.removeprefix(run.ddim.label + ", ")   # "w=0" or "w=0, s_cls=0"
    for name, x in {"Gaussian": run.fresh[run.lo:run.hi],
                    f"IG k={run.k_max} s={a.strength}": run.ig_x_T(run.k_max, a.strength)}.items():
        imgs, sec, idx, yy = run.sample(x, unguided)
        run.add("guidance", f"{name}, {off}", imgs, sec, idx, yy, run.ig_seconds if "IG" in name else 0.0,
                sampler=unguided.label)


def classifier_rows(run: ProtocolRun) -> None:
    """IG against each candidate classifier (:func:`~saliency_lib.quality.ig_candidates`) on the first
    ``args.classifier_guides`` guides, last snapshot of ``args.classifier_snapshots``."""
    preset, a, lo = run.preset, run.args, run.lo
    hi = min(run.hi, a.classifier_guides)
    if lo >= hi:
        return
    cands = ig_candidates(preset)
    cg = data.make_batch("guides", lo, hi - lo, preset.image_size)
    accuracy = candidate_metrics(cands, 1024, log=lambda _: None)
    kc = max(a.classifier_snapshots)
    for cname, (clf, temperature) in cands.items():
        noises, ig_wall = candidate_noise(preset, clf, temperature, cg, a.classifier_snapshots, a.seed, run.cache_dir,
                                          part=(lo, a.classifier_guides))
        noise = torch.zeros_like(run.fresh[run.lo:run.hi])
        noise[: hi - lo] = mix_with_gaussian(noises[kc], a.strength, fresh=run.fresh[lo:hi])
        imgs, sec, idx, yy = run.sample(noise, run.ddim, within=a.classifier_guides)
        run.add("classifier", cname, imgs, sec, idx, yy, ig_wall, k=kc, strength=a.strength,
                classifier_accuracy=accuracy[cname]["accuracy"], classifier_confidence=accuracy[cname]["confidence"],
                temperature=temperature)


GROUPS = (gaussian_and_k_rows, saliency_source_rows, baseline_rows, strength_rows, orientation_rows,
          sampler_and_diversity_rows, guidance_rows, classifier_rows)


def _source_digest() -> str:
    """sha256 of this package's source files, read when the protocol is imported (the code a run executes)."""
    h = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        h.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    return h.hexdigest()


SOURCE_DIGEST = _source_digest()


def chunk_checkpoint(preset: Preset, args: ProtocolArgs, chunk: int, folder: Path) -> Path:
    """Where chunk ``chunk``'s rows are kept in ``folder``, so that an interrupted run resumes.

    The name hashes everything the rows depend on: the arguments, the chunk, the preset's name, guidance and every
    model's weights, the torch version, and the source of this package as imported (``SOURCE_DIGEST``;
    any code change starts afresh)."""
    models = {"unet": preset.unet, "classifier": preset.classifier, "judge_classifier": preset.judge_classifier,
              "judge_segmenter": preset.judge_segmenter, "saliency_classifier": preset.saliency_classifier,
              "noisy_classifier": preset.noisy_classifier, **{f"ig:{k}": m for k, m in preset.ig_alternatives.items()}}
    parts = [json.dumps(dataclasses.asdict(args), sort_keys=True), str(chunk), preset.name,
             repr((preset.guidance_weight, preset.classifier_scale)), torch.__version__,
             *(f"{name}={model_fingerprint(m) if m is not None else None}" for name, m in sorted(models.items()))]
    return Path(folder) / f"{digest(*parts, SOURCE_DIGEST)}-chunk{chunk}.json"


def run_chunk(preset: Preset, args: ProtocolArgs, chunk: int, cache_dir: Path | None = None,
              log: Callable[[str], None] = print, checkpoint_dir: Path | None = None) -> list[dict]:
    """Every group of conditions (``GROUPS``, in order) on chunk ``chunk`` of the guides -> its rows.

    With ``checkpoint_dir``, a finished chunk's rows are saved (:func:`chunk_checkpoint`) and a later run with the same
    inputs reads them instead of recomputing; an unreadable checkpoint is recomputed and overwritten."""
    checkpoint = chunk_checkpoint(preset, args, chunk, checkpoint_dir) if checkpoint_dir is not None else None
    if checkpoint is not None and checkpoint.is_file():
        try:
            rows = json.loads(checkpoint.read_text())["rows"]
            log(f"chunk {chunk}: {len(rows)} rows read from its checkpoint {checkpoint}")
            return rows
        except (ValueError, KeyError, TypeError) as err:
            log(f"chunk {chunk}: checkpoint {checkpoint} unreadable ({err}); recomputing")
    t0 = time.time()
    rows = compute_chunk(preset, args, chunk, cache_dir, log)
    if checkpoint is not None:
        atomic_write_bytes(checkpoint, json.dumps({"chunk": chunk, "seconds": time.time() - t0, "torch_threads":
                                                   torch.get_num_threads(), "rows": rows}).encode())
    return rows


def compute_chunk(preset: Preset, args: ProtocolArgs, chunk: int, cache_dir: Path | None = None,
                  log: Callable[[str], None] = print) -> list[dict]:
    """The rows of chunk ``chunk``, computed (no checkpoint)."""
    K, S, G = len(preset.class_names), preset.image_size, args.n_guides
    lo, hi = chunk * args.chunk_guides, min(G, (chunk + 1) * args.chunk_guides)
    guides = data.make_batch("guides", 0, G, S)
    gi, y = assignments(G, args.classes_per_guide, K)
    fresh = torch.randn((G, 3, S, S), generator=torch.Generator().manual_seed(args.seed + 1))
    # IG against the preset's classifier: one batched run over the chunk's guides, every snapshot k
    crafted = craft_noise(preset, guides.images[lo:hi], guides.labels[lo:hi], steps=args.ig_steps, seed=args.seed,
                          cache_dir=cache_dir, part=(lo, G))
    run = ProtocolRun(preset, args, guides, lo, hi, gi, y, fresh, crafted, cache_dir, log)
    for group in GROUPS:
        group(run)
    log(f"chunk {chunk} (guides {lo}-{hi - 1}): {len(run.rows)} rows")
    return run.rows


def run_protocol(preset: Preset, args: ProtocolArgs, cache_dir: Path | None = None,
                 log: Callable[[str], None] = print, ranks: Ranks = Ranks(),
                 checkpoint_dir: Path | None = None) -> dict | None:
    """Every condition of the protocol on every chunk of guides (this process's share under torchrun), merged over
    guides on rank 0 -> the rows (mean and 95% bootstrap CI over guides, and the per-guide values) and the run's
    settings; None on the other ranks."""
    if preset.judge_segmenter is None or preset.judge_classifier is None:
        raise SaliencyNoiseError(f"the protocol needs judge models; preset {preset.name!r} has none (use tiny)")
    n_chunks = -(-args.n_guides // args.chunk_guides)
    t0 = time.time()
    gathered = run_and_gather(lambda: [(c, run_chunk(preset, args, c, cache_dir, log, checkpoint_dir))
                                       for c in shard(n_chunks, ranks)], ranks)
    if gathered is None:
        return None
    rows = merge_rows(merge_by_unit(gathered))
    for r in rows:
        log(describe_row(r))
    return {"args": dataclasses.asdict(args), "preset": preset.name, "guidance_weight": preset.guidance_weight,
            "classifier_scale": preset.classifier_scale, "processes": ranks.world_size,
            "wall_seconds": time.time() - t0, "rows": rows}
