"""Is the judge a fair instrument for the DDPM's samples? (model card, History 25)

    python scripts/probe_judge_robustness.py --judge checkpoints/judge_colour/model.safetensors \
        --n 256 --seed 1 --samples-cache /tmp/ddim50_seed1.safetensors \
        --json data/models/tiny/judge_robustness.json

The default sampler's samples are far more saturated than the data (mean |x| 0.73 against 0.41; History 10), and
the judge was trained on the data's colours only. Two measurements:

1. *Colour shifts of real images.* The held-out ``test`` split (``--n-test`` images) through
   ``data.colour_shift`` at each (chroma, gain) of ``--shifts``: the shipped judge classifier's per-class accuracy,
   the judge segmenter's mean IoU with the true masks, and each ``--judge`` classifier's accuracy, with the shifted
   images' colour statistics (``evaluate.image_stats``) to compare with the samples'.
2. *The samples.* The Quality rows' protocol (``evaluate.gaussian_class_batch``: one seeded Gaussian x_T batch,
   class-balanced targets, the preset's default sampler and guidance; ``--seed 1`` is the batch of
   `default_ddim50_seed1.json`): each judge's per-class accuracy on the conditioning class, and, on the samples the
   shipped judge misreads, how often each other judge reads the target class or agrees with the shipped judge.
3. *The layout rows* (``--layout-guides`` G > 0): the Quality section's phenomenon rows
   (``evaluate.quality_layout_noises``; DDIM-50 with the preset's guidance; the IG noise cached under ``--cache``)
   scored by the shipped judge segmenter and by each ``--segmenter``, on the same generated images.

The other judges are diagnostics: the shipped judge stays the instrument of the quality bars. ``--samples-cache``
keeps the samples (safetensors, written atomically) so that further judges can be scored without sampling again.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torchvision.utils import save_image

from saliency_lib import data
from saliency_lib.classifiers import load_classifier, load_segmenter
from saliency_lib.errors import SaliencyNoiseError
from saliency_lib.evaluate import (QualityArgs, accuracy_by_class, bootstrap_ci, class_control, classifier_probs,
                                   confusion_matrix, gaussian_class_batch, generate_batched, image_stats, judge_masks,
                                   judge_probs, layout_scores, mask_iou, per_class_accuracy, quality_layout_noises,
                                   segmenter_masks)
from saliency_lib.pipeline import Sampler
from saliency_lib.plotting import enlarge, grid, to_display
from saliency_lib.presets import load_tiny
from saliency_lib.weights import atomic_write_bytes, load_tensors, save_tensors


def parse_shifts(text: str) -> list[tuple[float, float]]:
    """``"1x1,3x1,3x2"`` -> ``[(1.0, 1.0), (3.0, 1.0), (3.0, 2.0)]`` (chroma x gain)."""
    shifts = []
    for part in text.split(","):
        chroma, sep, gain = part.partition("x")
        try:
            shifts.append((float(chroma), float(gain)))
        except ValueError:
            raise SaliencyNoiseError(f"--shifts entry {part!r}: expected CHROMAxGAIN, e.g. 3x2") from None
        if not sep:
            raise SaliencyNoiseError(f"--shifts entry {part!r}: expected CHROMAxGAIN, e.g. 3x2")
    return shifts


def samples(preset, n: int, seed: int, sampler: Sampler, cache: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    if cache is not None and cache.exists():
        tensors, meta = load_tensors(cache)
        if (meta.get("n"), meta.get("seed"), meta.get("sampler")) != (str(n), str(seed), repr(sampler)):
            raise SaliencyNoiseError(f"--samples-cache {cache} holds n={meta.get('n')}, seed={meta.get('seed')}, "
                                     f"sampler={meta.get('sampler')}; asked for n={n}, seed={seed}, {sampler!r}")
        return tensors["images"], tensors["y"]
    x_T, y = gaussian_class_batch(preset, n, seed)
    images, _ = generate_batched(preset, x_T, y, sampler, seed=seed)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_tensors(cache, {"images": images, "y": y}, {"n": str(n), "seed": str(seed), "sampler": repr(sampler)})
    return images, y


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--judge", type=Path, action="append", default=[],
                   help="another judge classifier's weights (train classifier ... model.safetensors); repeatable")
    p.add_argument("--segmenter", type=Path, action="append", default=[],
                   help="another judge segmenter's weights (train segmenter ... model.safetensors); repeatable")
    p.add_argument("--layout-guides", type=int, default=0, help="guides for part 3 (0: skip it)")
    p.add_argument("--cache", type=Path, default=None, help="IG cache folder for part 3 (as for evaluate quality)")
    p.add_argument("--n-test", type=int, default=1024)
    p.add_argument("--shifts", default="1x1,2x1,3x1,1x2,1x3,2x2,3x2", help="CHROMAxGAIN,... for data.colour_shift")
    p.add_argument("--n", type=int, default=256, help="samples from Gaussian noise (0: skip part 2)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sampler", default="ddim:50", help="method:steps")
    p.add_argument("--samples-cache", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--grid", type=Path, default=None,
                   help="PNG of the samples the shipped judge misreads, ordered by target class, 3x enlarged")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    try:
        shifts = parse_shifts(a.shifts)
        sampler = Sampler.parse(a.sampler)
    except SaliencyNoiseError as err:
        p.error(str(err))
    torch.set_num_threads(a.threads)
    preset = load_tiny()
    k = len(preset.class_names)
    others = {str(path): load_classifier(path) for path in a.judge}
    segmenters = {str(path): load_segmenter(path) for path in a.segmenter}
    out: dict = {"n_test": a.n_test, "judges": list(others), "segmenters": list(segmenters), "shifts": [],
                 "samples": None, "layout": None}

    test = data.make_batch("test", 0, a.n_test)
    for chroma, gain in shifts:
        x = data.colour_shift(test.images, chroma, gain)
        row = {"chroma": chroma, "gain": gain,
               "judge_accuracy": per_class_accuracy(judge_probs(preset, x), test.labels, k),
               "segmenter_iou": float(mask_iou(judge_masks(preset, x), test.masks).mean()),
               "other_judges_accuracy": {n: per_class_accuracy(classifier_probs(m, x), test.labels, k)
                                         for n, m in others.items()},
               "other_segmenters_iou": {n: float(mask_iou(segmenter_masks(m, x), test.masks).mean())
                                        for n, m in segmenters.items()},
               **image_stats(x)}
        out["shifts"].append(row)
        print(f"chroma {chroma:g} x gain {gain:g}: judge {row['judge_accuracy']:.3f}, segmenter IoU "
              f"{row['segmenter_iou']:.3f}, other judges {[round(v, 3) for v in row['other_judges_accuracy'].values()]}, "
              f"other segmenters {[round(v, 3) for v in row['other_segmenters_iou'].values()]}, "
              f"mean |x| {row['mean_abs']:.3f}")

    if a.n > 0:
        images, y = samples(preset, a.n, a.seed, sampler, a.samples_cache)
        cc = class_control(preset, images, y)
        wrong = cc.wrong
        rows = {}
        for n, m in others.items():
            probs = classifier_probs(m, images)
            pred, confusion = probs.argmax(1), confusion_matrix(probs, y, k)
            rows[n] = {"per_class_accuracy": per_class_accuracy(probs, y, k),
                       "accuracy_by_class": accuracy_by_class(confusion),
                       "on_misread_reads_target": float((pred[wrong] == y[wrong]).float().mean()) if wrong.any()
                       else None,
                       "on_misread_agrees_with_judge": float((pred[wrong] == cc.predicted[wrong]).float().mean())
                       if wrong.any() else None,
                       "on_right_reads_target": float((pred[~wrong] == y[~wrong]).float().mean())}
            print(f"{n}: per-class accuracy {rows[n]['per_class_accuracy']:.3f}; on the judge's {int(wrong.sum())} "
                  f"misreads it reads the target {rows[n]['on_misread_reads_target']}, agrees with the judge "
                  f"{rows[n]['on_misread_agrees_with_judge']}")
        out["samples"] = {"n": a.n, "seed": a.seed, "sampler": a.sampler, "judge_per_class_accuracy":
                          cc.per_class_accuracy, "judge_accuracy_by_class": cc.accuracy_by_class,
                          "misread": int(wrong.sum()), "other_judges": rows, **image_stats(images)}
        if a.grid is not None:
            order = wrong.nonzero().flatten()
            order = order[y[order].argsort(stable=True)]
            a.grid.parent.mkdir(parents=True, exist_ok=True)
            save_image(grid(enlarge(to_display(images[order]), 3), nrow=12, pad=3), a.grid)
        print(f"samples: judge per-class accuracy {cc.per_class_accuracy:.3f}, mean |x| "
              f"{out['samples']['mean_abs']:.3f}")
    if a.layout_guides > 0:
        guides, noises = quality_layout_noises(preset, QualityArgs(n_guides=a.layout_guides), a.cache)
        out["layout"] = {"n_guides": a.layout_guides, "rows": {}}
        for name, x_T in noises.items():
            s = layout_scores(preset, guides.masks, x_T, Sampler("ddim", 50))
            gm = guides.masks.repeat_interleave(k, 0)
            images = s["images"].flatten(0, 1)
            ious = {"shipped": s["iou"]} | {n: mask_iou(segmenter_masks(m, images), gm).view(s["iou"].shape)
                                            for n, m in segmenters.items()}
            row = {}
            for n, iou in ious.items():
                mean, lo, hi = bootstrap_ci(iou.mean(1).numpy())
                row[n] = [mean, lo, hi]
            out["layout"]["rows"][name] = row
            print(f"layout IoU {name}: " + ", ".join(f"{n} {v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]" for n, v in row.items()))
    if a.json is not None:
        atomic_write_bytes(a.json, (json.dumps(out, indent=1) + "\n").encode())


if __name__ == "__main__":
    main()
