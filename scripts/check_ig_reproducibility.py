"""How reproducible is Inverting Gradients? Recompute the notebooks' cached IG run and compare (model card, History 25).

    python scripts/check_ig_reproducibility.py --json data/models/tiny/ig_reproducibility.json

The notebooks' default IG run (the tiny preset's first ``--n-guides`` guides, snapshots 0/100/300/1000, seed 0)
ships in ``data/ig_cache`` so that the stored outputs reproduce. This script recomputes it without any cache
(a temporary folder) three times: on ``--threads`` threads, on one thread, and on ``--threads`` again, and prints
the mean absolute difference of each snapshot (classifier space, before standardization) between the runs and
against the shipped cache, next to the snapshots' mean magnitude. Equal runs mean IG is deterministic on this
machine; a difference from the cache measures what another CPU (its convolution kernels, and so its float
rounding) does to the 1,000 signed-gradient steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import torch

from saliency_lib.inversion import cached_invert_gradients
from saliency_lib.machine import cpu_description
from saliency_lib.pipeline import guides_for
from saliency_lib.presets import REPO_ROOT, load_tiny
from saliency_lib.weights import atomic_write_bytes

SNAPSHOTS = (0, 100, 300, 1000)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-guides", type=int, default=4, help="the notebooks' default: 4")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    preset = load_tiny()
    guides = guides_for(preset, a.n_guides, (), None)
    cfg = dataclasses.replace(preset.ig_config, iterations=max(SNAPSHOTS), snapshots=SNAPSHOTS)
    x = preset.normalization.from_diffusion(guides.images)

    def run(threads: int, cache_dir: str | Path):
        torch.set_num_threads(threads)
        result, stats = cached_invert_gradients(preset.classifier, x, guides.labels, preset.normalization, cfg, seed=0,
                                                cache_dir=cache_dir)
        return result, stats["cached"]

    runs = {}
    for name, threads in ((f"{a.threads}_threads", a.threads), ("1_thread", 1), (f"{a.threads}_threads_again", a.threads)):
        with tempfile.TemporaryDirectory() as tmp:
            runs[name], _ = run(threads, tmp)
        print(f"recomputed on {name}", flush=True)
    shipped, was_cached = run(a.threads, REPO_ROOT / "data" / "ig_cache")
    if not was_cached:
        print("warning: the shipped cache had no entry for this run (a changed preset or IG config); "
              "the 'shipped' comparison below is one more recomputation")

    first = runs[f"{a.threads}_threads"]

    def mean_abs_diff(other) -> dict[str, float]:
        return {str(k): float((first.snapshots[k] - other.snapshots[k]).abs().mean()) for k in SNAPSHOTS}

    out = {"cpu_model": cpu_description()["model_name"] or "unknown", "torch": torch.__version__, "n_guides": a.n_guides, "shipped_cache_hit": was_cached,
           "snapshot_mean_abs": {str(k): float(first.snapshots[k].abs().mean()) for k in SNAPSHOTS},
           "mean_abs_diff": {f"against {name}": mean_abs_diff(r) for name, r in runs.items() if r is not first}
           | {"against the shipped cache": mean_abs_diff(shipped)}}
    for name, d in out["mean_abs_diff"].items():
        print(f"{a.threads} threads {name}: " + ", ".join(f"k={k}: {v:.4f}" for k, v in d.items()))
    print("snapshot mean |x|: " + ", ".join(f"k={k}: {v:.3f}" for k, v in out["snapshot_mean_abs"].items()))
    if a.json is not None:
        atomic_write_bytes(a.json, (json.dumps(out, indent=1) + "\n").encode())


if __name__ == "__main__":
    main()
