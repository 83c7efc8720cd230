"""How natural are the samples? A kernel distance to real images in the judge's feature space (model card, History 26)

    python scripts/measure_realism.py --cache checkpoints/ig_cache \
        --samples-cache /tmp/realism_samples.safetensors --json data/models/tiny/realism.json \
        --grid data/models/tiny/realism_samples.png

The issue's trials and the paper (Sec. 5: "the background of the image is often inhibited") describe what crafted
noise does to the images qualitatively: the paper's recipe (x_T = the standardized IG snapshot) drives the DDPM to
saturated images, and the strength control keeps them natural. This measures it. Every condition holds 256 images:

- *reference rows*: held-out real images (the ``val`` split; the floor), the same images recoloured as saturated
  as the samples (``data.colour_shift``, chroma x3) and with added pixel noise (sigma 0.1): how much colour and
  texture move this distance;
- *from Gaussian noise*: the Quality rows' batch (``quality.gaussian_class_batch``, seed 0, class-balanced),
  DDIM-50 unguided (w = 0, s = 0) and with the preset's guidance (w = 4, s = 5 when History 26 ran it; w = 2, s = 5 since History 29);
- *the phenomenon rows*: the Quality section's 32 held-out guides x 8 target classes (``evaluate.
  quality_layout_noises``; the IG noise cached under ``--cache``), DDIM-50 with the preset's guidance, from
  Gaussian noise, from IG k = 1,000 (--ig-steps) at strength 0.3, from the paper's recipe (strength 1), and from the IG
  snapshot's Fourier phases on the Gaussian row's amplitudes (``noise.phase_transplant``: white noise's energy at
  every frequency, the crafted layout in the phases); with their layout IoU (the Quality section's measure).

Per condition: ``realism.kernel_distance`` (KID, Binkowski et al. 2018; mean and standard deviation over 100 pairs
of 128-image subsets, half of a condition's images, so that the spread reflects the generated images too; the
phenomenon rows' images come in groups of 8 that share one x_T, so their spread understates their uncertainty, and
their x_T being 32 draws rather than 256 makes their colour KID larger than the Gaussian batch's: compare them with
each other) against 2,048 real ``test`` images, in two feature spaces, each standardized by the reference:
the judge classifier's 128-d features (``realism.judge_embeddings``: shapes and strokes; trained to ignore colour)
and the images' colour statistics (``realism.colour_features``: per-channel mean and std); ``realism.image_stats`` (mean |x|, saturated fraction); ``realism.background_stats`` on the judge
segmenter's masks (how flat the background is); and the judge's per-class accuracy on the requested class (real
rows: on the true class). The judge is an instrument here, never a guide. ``--samples-cache`` keeps the generated
images (safetensors, written atomically) so that the measures can be recomputed without sampling again; it
records the preset's weights and guidance it was sampled with and refuses to serve another preset's samples.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable

import torch
from torchvision.utils import save_image

from saliency_lib import data
from saliency_lib.errors import SaliencyNoiseError
from saliency_lib.inversion import model_fingerprint
from saliency_lib.metrics import (
    bootstrap_ci,
    judge_masks,
    judge_probs,
    mask_iou,
    paired_differences,
    per_class_accuracy,
)
from saliency_lib.noise import phase_transplant
from saliency_lib.pipeline import Sampler
from saliency_lib.plotting import enlarge, grid, to_display
from saliency_lib.presets import load_tiny
from saliency_lib.quality import (
    QualityArgs,
    gaussian_class_batch,
    generate_batched,
    quality_layout_noises,
)
from saliency_lib.realism import (
    background_stats,
    colour_features,
    image_stats,
    judge_embeddings,
    kernel_distance,
)
from saliency_lib.weights import atomic_write_bytes, load_tensors, save_tensors

LAYOUT = "layout guides: "   # the phenomenon rows' names start so
PHASES = "phases on Gaussian amplitudes"   # ... and the phase transplant's ends so


def generated_conditions(preset, n: int, n_guides: int, ig_steps: int, cache_dir: Path | None
                         ) -> tuple[dict[str, Callable], data.ShapeBatch]:
    """Name -> a function that samples that row: (images ``[N, 3, S, S]`` in [-1, 1], seconds, requested classes
    ``[N]``), and the held-out guides of the phenomenon rows (their images, in guide-major order, are the rows
    whose name starts with ``LAYOUT``)."""
    x_T, y = gaussian_class_batch(preset, n, seed=0)
    rows: dict[str, Callable] = {
        "gaussian, DDIM-50, unguided (w = 0, s = 0)":
            lambda: (*generate_batched(preset, x_T, y, Sampler("ddim", 50).unguided(preset), seed=0), y),
        # the preset's default guidance (w = 4, s = 5 until History 29; w = 2, s = 5 since)
        f"gaussian, DDIM-50 (w = {preset.guidance_weight:g}, s = {preset.classifier_scale:g})":
            lambda: (*generate_batched(preset, x_T, y, Sampler("ddim", 50), seed=0), y),
    }
    args = QualityArgs(n_guides=n_guides, ig_steps=ig_steps)
    guides, noises = quality_layout_noises(preset, args, cache_dir)
    k = len(preset.class_names)
    y_layout = torch.arange(k).repeat(n_guides)
    crafted = noises[f"ig{args.ig_steps}_strength1"]
    layout_noises = {
        f"{LAYOUT}gaussian": noises["gaussian"],
        f"{LAYOUT}IG k = {args.ig_steps}, strength {args.strength}": noises[f"ig{args.ig_steps}_strength{args.strength}"],
        f"{LAYOUT}IG k = {args.ig_steps}, strength 1 (the paper's recipe)": crafted,
        # the crafted phases on the amplitudes of the strength rows' fresh Gaussian noise (noise.phase_transplant)
        f"{LAYOUT}IG k = {args.ig_steps}, {PHASES}": phase_transplant(crafted, fresh=noises["gaussian"]),
    }
    for name, x in layout_noises.items():
        # the same (noise, class) order and sampler seed as quality.layout_scores: the Quality rows' images
        rows[name] = (lambda x=x: (*generate_batched(preset, x.repeat_interleave(k, 0), y_layout, Sampler("ddim", 50),
                                                     seed=args.seed), y_layout))
    return rows, guides


def preset_sampler_key(preset) -> str:
    """What the samples depend on besides the seeds: the weights the preset samples with (its UNets, chain of
    experts included, and noise-aware classifier: :func:`inversion.model_fingerprint` of its default denoiser) and
    its default guidance (w, s)."""
    return (f"{model_fingerprint(preset.denoiser())}, w = {preset.guidance_weight:g}, "
            f"s = {preset.classifier_scale:g}")


def load_or_generate(preset, n: int, n_guides: int, ig_steps: int, cache_dir: Path | None,
                     samples_cache: Path | None):
    """Every generated row as name -> (images, y, seconds), sampling only the rows ``samples_cache`` lacks (and
    rewriting it, atomically, when it sampled any); plus the phenomenon rows' guides."""
    builders, guides = generated_conditions(preset, n, n_guides, ig_steps, cache_dir)
    sampler_key = preset_sampler_key(preset)
    cached: dict = {}
    if samples_cache is not None and samples_cache.exists():
        tensors, meta = load_tensors(samples_cache)
        held = (meta.get("n"), meta.get("n_guides"), meta.get("ig_steps", "1000"))   # caches before History 30: k = 1000
        if held != (str(n), str(n_guides), str(ig_steps)):
            raise SaliencyNoiseError(f"--samples-cache {samples_cache} holds n={held[0]}, n_guides={held[1]}, "
                                     f"ig_steps={held[2]}; asked for n={n}, n_guides={n_guides}, ig_steps={ig_steps}")
        if meta.get("sampler") != sampler_key:
            raise SaliencyNoiseError(f"--samples-cache {samples_cache} was sampled by another preset or guidance "
                                     f"({meta.get('sampler', 'not recorded: a cache from before History 31')}; this "
                                     f"preset is {sampler_key}): delete it or name another file")
        seconds = json.loads(meta["seconds"])
        cached = {name: (tensors[f"images/{name}"], tensors[f"y/{name}"], seconds[name]) for name in seconds}
    out, sampled = {}, False
    for name, build in builders.items():
        if name not in cached:
            images, seconds, y = build()
            cached[name], sampled = (images, y, seconds), True
            print(f"{name}: sampled in {seconds:.0f} s", flush=True)
        out[name] = cached[name]
    if samples_cache is not None and sampled:
        samples_cache.parent.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for name, (images, y, _) in cached.items():
            tensors[f"images/{name}"], tensors[f"y/{name}"] = images, y.clone()
        save_tensors(samples_cache, tensors, {"n": str(n), "n_guides": str(n_guides), "ig_steps": str(ig_steps),
                                              "sampler": sampler_key,
                                              "seconds": json.dumps({k: v[2] for k, v in cached.items()})})
    return out, guides


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=256, help="images per condition from Gaussian noise and of the val split")
    p.add_argument("--n-guides", type=int, default=32, help="guides of the phenomenon rows (x 8 target classes)")
    p.add_argument("--n-reference", type=int, default=2048, help="real test images of the reference set")
    p.add_argument("--ig-steps", type=int, default=1000, help="IG snapshot k of the phenomenon rows (the Quality section's)")
    p.add_argument("--subset-size", type=int, default=128)
    p.add_argument("--subsets", type=int, default=100)
    p.add_argument("--cache", type=Path, default=None, help="IG cache folder (as for evaluate quality)")
    p.add_argument("--samples-cache", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--grid", type=Path, default=None, help="PNG: 16 images of each condition, one row each, 2x")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    if min(a.n, a.n_guides * 8) < a.subset_size:
        p.error(f"--subset-size {a.subset_size} exceeds a condition's images (--n {a.n}, --n-guides {a.n_guides} x 8)")
    torch.set_num_threads(a.threads)
    t0 = time.time()
    preset = load_tiny()
    k = len(preset.class_names)
    reference_images = data.make_batch("test", 0, a.n_reference).images
    reference = judge_embeddings(preset, reference_images)
    reference_colour = colour_features(reference_images)
    val = data.make_batch("val", 0, a.n)
    noisy = (val.images + 0.1 * torch.randn(val.images.shape, generator=torch.Generator().manual_seed(5))).clamp(-1, 1)
    conditions = {"real (val split)": (val.images, val.labels, 0.0),
                  "real, recoloured (chroma x3)": (data.colour_shift(val.images, 3.0, 1.0), val.labels, 0.0),
                  "real + pixel noise (sigma 0.1)": (noisy, val.labels, 0.0)}
    generated, guides = load_or_generate(preset, a.n, a.n_guides, a.ig_steps, a.cache, a.samples_cache)
    conditions |= generated
    guide_masks = guides.masks.repeat_interleave(k, 0)      # the phenomenon rows are guide-major

    rows, per_guide = [], {}
    for name, (images, y, seconds) in conditions.items():
        kid, kid_std = kernel_distance(judge_embeddings(preset, images), reference, a.subset_size, a.subsets)
        kid_c, kid_c_std = kernel_distance(colour_features(images), reference_colour, a.subset_size, a.subsets)
        masks = judge_masks(preset, images)
        row = {"condition": name, "n": len(images), "kid": kid, "kid_std": kid_std, "kid_colour": kid_c,
               "kid_colour_std": kid_c_std,
               "judge_per_class_accuracy": per_class_accuracy(judge_probs(preset, images), y, k),
               **image_stats(images), **background_stats(images, masks), "sample_seconds": seconds}
        if name.startswith(LAYOUT):  # the Quality section's layout IoU: mean over guides, 95% bootstrap interval
            per_guide[name] = mask_iou(masks, guide_masks).view(a.n_guides, k).mean(1).numpy()
            row["layout_iou"] = list(bootstrap_ci(per_guide[name]))
        rows.append(row)
        print(f"{name}: KID {kid:.3f} +- {kid_std:.3f}, colour KID {kid_c:.3f} +- {kid_c_std:.3f}, judge "
              f"{row['judge_per_class_accuracy']:.3f}, mean |x| {row['mean_abs']:.3f}, saturated "
              f"{row['saturated_fraction']:.3f}, background std {row['background_std']:.3f}"
              + (f", layout IoU {row['layout_iou'][0]:.3f}" if "layout_iou" in row else ""), flush=True)
    # paired over guides: the phase-transplanted noise's layout IoU minus each other phenomenon row's
    phase = next(name for name in per_guide if name.endswith(PHASES))
    paired = paired_differences(per_guide, phase)
    for name, d in paired.items():
        lo_hi = d["mean_difference_ci95"]
        print(f"layout IoU, phases minus {name}: {lo_hi[0]:.3f} [{lo_hi[1]:.3f}, {lo_hi[2]:.3f}], better on "
              f"{d['guides_better']} of {a.n_guides} guides")
    out = {"paired_layout_iou": {"row": phase, "against": paired}, "n_reference": a.n_reference,
           "subset_size": a.subset_size, "subsets": a.subsets, "n": a.n, "n_guides": a.n_guides, "ig_steps": a.ig_steps,
           "feature_space": "kid: judge classifier PlainCNN.embed (128-d); kid_colour: "
           "realism.colour_features (per-channel mean and std, 6-d); both standardized by the reference",
           "reference": "test split, first n_reference", "rows": rows, "seconds": time.time() - t0}
    if a.json is not None:
        atomic_write_bytes(a.json, (json.dumps(out, indent=1) + "\n").encode())
    if a.grid is not None:
        a.grid.parent.mkdir(parents=True, exist_ok=True)
        pick = torch.cat([images[:16] for images, _, _ in conditions.values()])
        save_image(grid(enlarge(to_display(pick), 2), nrow=16, pad=2), a.grid)


if __name__ == "__main__":
    main()
