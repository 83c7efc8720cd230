"""Benchmark: bfloat16 autocast sampling (``Sampler(..., precision="bfloat16")``) against float32, paired.

    python scripts/bench_precision.py --json runs/bench_precision.json       # about 10 minutes on 2 cores
    python scripts/bench_precision.py --guides 2 --steps 5 --quick           # seconds (tests)

The same x_T batches are sampled in both precisions (DDIM-50, the tiny preset's guidance), alternating, so every
difference is the precision's:

- class control: ``--images`` Gaussian x_T with class-balanced targets (the quality bars' batch); the judge's
  accuracy for each, their paired difference (95% bootstrap CI over images) and how often the judge reads the same
  class from both images;
- layout: ``--guides`` held-out guides, their IG noise (k = 1000, strength 0.3; cached), every target class; the
  layout IoU for each and the paired difference (CI over guides);
- speed: seconds per image of each, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from saliency_lib.machine import cpu_description
from saliency_lib.metrics import bootstrap_ci, judge_probs
from saliency_lib.noise import mix_with_gaussian
from saliency_lib.pipeline import Sampler, craft_noise, guides_for
from saliency_lib.presets import REPO_DATA, load_tiny
from saliency_lib.quality import gaussian_class_batch, generate_batched, layout_scores
from saliency_lib.weights import atomic_write_bytes

PRECISIONS = ("float32", "bfloat16")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=256, help="Gaussian x_T for class control")
    p.add_argument("--guides", type=int, default=16, help="guides for layout (every class each)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--ig-steps", type=int, default=1000, help="IG snapshot k of the layout noise")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", type=Path, default=REPO_DATA / "ig_cache", help="IG cache folder")
    p.add_argument("--quick", action="store_true", help="tiny sizes: 16 images, IG k = 10")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    if a.quick:
        a.images, a.ig_steps = 16, 10
    torch.set_num_threads(a.threads)
    preset = load_tiny()
    samplers = {name: Sampler("ddim", a.steps, precision=name) for name in PRECISIONS}
    out: dict = {"cpu": cpu_description(), "threads": a.threads, "torch": torch.__version__, "sampler": samplers["float32"].label, "rows": {}}

    x_T, y = gaussian_class_batch(preset, a.images, seed=0)
    pred, seconds = {}, {}
    for name, sampler in samplers.items():
        t0 = time.perf_counter()
        images, _ = generate_batched(preset, x_T, y, sampler, seed=0)
        seconds[name] = (time.perf_counter() - t0) / a.images
        pred[name] = judge_probs(preset, images).argmax(1)
    correct = {k: (v == y).double().numpy() for k, v in pred.items()}
    out["class_control"] = {
        "images": a.images, **{f"accuracy_{k}": list(bootstrap_ci(v)) for k, v in correct.items()},
        "difference_bf16_minus_f32": list(bootstrap_ci(correct["bfloat16"] - correct["float32"])),
        "same_class_read": float((pred["bfloat16"] == pred["float32"]).double().mean()),
        "seconds_per_image": seconds, "speedup": seconds["float32"] / seconds["bfloat16"]}
    c = out["class_control"]
    print(f"class control, {a.images} images: accuracy float32 {c['accuracy_float32'][0]:.3f}, bfloat16 "
          f"{c['accuracy_bfloat16'][0]:.3f}, difference {c['difference_bf16_minus_f32'][0]:+.3f} "
          f"[{c['difference_bf16_minus_f32'][1]:+.3f}, {c['difference_bf16_minus_f32'][2]:+.3f}], same class read "
          f"{c['same_class_read']:.3f}; {seconds['float32']:.3f} vs {seconds['bfloat16']:.3f} s/image "
          f"(x{c['speedup']:.2f})", flush=True)

    g = guides_for(preset, a.guides)
    crafted = craft_noise(preset, g.images, g.labels, steps=(0, a.ig_steps), seed=0, cache_dir=a.cache)
    fresh = torch.randn(crafted[a.ig_steps].shape, generator=torch.Generator().manual_seed(1))
    noise = mix_with_gaussian(crafted[a.ig_steps], 0.3, fresh=fresh)
    iou = {name: layout_scores(preset, g.masks, noise, sampler)["iou"].mean(1).double().numpy()
           for name, sampler in samplers.items()}
    out["layout"] = {"guides": a.guides, **{f"iou_{k}": list(bootstrap_ci(v)) for k, v in iou.items()},
                     "difference_bf16_minus_f32": list(bootstrap_ci(iou["bfloat16"] - iou["float32"])),
                     "guides_higher_bf16": int((iou["bfloat16"] > iou["float32"]).sum()),
                     "guides_lower_bf16": int((iou["bfloat16"] < iou["float32"]).sum())}
    lay = out["layout"]
    print(f"layout, {a.guides} guides x every class: IoU float32 {lay['iou_float32'][0]:.3f}, bfloat16 "
          f"{lay['iou_bfloat16'][0]:.3f}, difference {lay['difference_bf16_minus_f32'][0]:+.3f} "
          f"[{lay['difference_bf16_minus_f32'][1]:+.3f}, {lay['difference_bf16_minus_f32'][2]:+.3f}]", flush=True)
    if a.json:
        atomic_write_bytes(a.json, json.dumps(out, indent=2, default=float).encode())
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
