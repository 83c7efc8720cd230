"""Benchmark: B guides inverted in one batched (vmapped) IG run vs B separate runs, same results.

    python scripts/bench_batched_ig.py --guides 8 --iterations 50 --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch

from saliency_lib import data
from saliency_lib.classifiers import ClassifierConfig, SmallResNet
from saliency_lib.inversion import IGConfig, invert_gradients


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--guides", type=int, default=8)
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = SmallResNet(ClassifierConfig()).eval()  # the tiny preset's architecture, 32x32
    norm = model.config.normalization
    b = data.make_batch("guides", 0, a.guides)
    guides = norm.from_diffusion(b.images)
    cfg = IGConfig(iterations=a.iterations, snapshots=(a.iterations,))
    init = torch.randn(1, a.guides, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    invert_gradients(model, guides[:1], b.labels[:1], norm, IGConfig(iterations=2), init=init[:, :1])  # warm-up
    t0 = time.perf_counter()
    batched, _ = invert_gradients(model, guides, b.labels, norm, cfg, init=init)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    sep = [invert_gradients(model, guides[i:i + 1], b.labels[i:i + 1], norm, cfg, init=init[:, i:i + 1])[0]
           for i in range(a.guides)]
    t_sep = time.perf_counter() - t0
    diff = max((s.snapshots[a.iterations][0] - batched.snapshots[a.iterations][i]).abs().max().item()
               for i, s in enumerate(sep))
    print(f"{a.guides} guides x {a.iterations} iterations, {a.threads} thread(s): batched {t_batched:.1f} s, "
          f"separate {t_sep:.1f} s, speed-up x{t_sep / t_batched:.2f}; max |difference| {diff:.2e}")


if __name__ == "__main__":
    main()
