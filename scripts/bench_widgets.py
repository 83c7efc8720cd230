"""Time one redraw of the generation explorer (notebook 03's widget) at its default settings.

    python scripts/bench_widgets.py [--threads 2] [--repeats 5] [--classifier-scales 0,5]

Uses the shipped IG cache when it holds the notebooks' run; prints the median seconds per redraw, at the preset's
guidance or, with ``--classifier-scales``, at each classifier guidance scale in turn (alternating passes, so that
a slow phase of the machine does not favour one of them).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from saliency_lib.pipeline import Sampler, craft_noise, guides_for
from saliency_lib.presets import REPO_DATA, load_tiny
from saliency_lib.widgets import ExplorerState, render_generation


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--guides", type=int, default=4, help="images per redraw (the notebooks use 4)")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps of the explorer")
    p.add_argument("--classifier-scales", default=None,
                   help="comma-separated classifier guidance scales s to compare (default: the preset's)")
    p.add_argument("--passes", type=int, default=2, help="alternating passes over --classifier-scales")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    preset = load_tiny()
    guides = guides_for(preset, a.guides)
    crafted = craft_noise(preset, guides.images, guides.labels, steps=[0, 100, 300, 1000], seed=0,
                          cache_dir=REPO_DATA / "ig_cache")
    fresh = torch.randn(crafted[1000].shape, generator=torch.Generator().manual_seed(1))
    scales = [None] if a.classifier_scales is None else [float(v) for v in a.classifier_scales.split(",")]
    for pass_ in range(1 if a.classifier_scales is None else a.passes):
        for scale in scales:
            state = ExplorerState(preset, crafted, fresh, sampler=Sampler("ddim", a.steps, classifier_scale=scale))
            render_generation(state, 1000, "fish", 0.3)  # warm-up
            times = []
            for i in range(a.repeats):
                t0 = time.perf_counter()
                render_generation(state, [0, 100, 300, 1000][i % 4], preset.class_names[i % 8], 0.3)
                times.append(time.perf_counter() - t0)
            which = "the preset's guidance" if scale is None else f"s = {scale:g}, pass {pass_ + 1}"
            print(f"generation explorer redraw ({a.guides} images, DDIM-{a.steps}, {a.threads} threads, {which}): "
                  f"median {statistics.median(times):.2f} s over {a.repeats} redraws", flush=True)


if __name__ == "__main__":
    main()
