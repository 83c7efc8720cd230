"""Where the time of a procedural training batch goes (model card, History 14): drawing the parameters of its
samples (per-sample seeded generators; what `train --render-on-device` leaves to the worker processes) against
rendering them (4x4-supersampled inside tests; what that flag moves to the training device).

    python scripts/bench_data.py --batch-size 512 --repeats 5 --threads 1

Prints the median seconds of each part over --repeats consecutive batches of the train split, on --device.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from saliency_lib import data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads (a training worker process uses 1)")
    p.add_argument("--device", default="cpu", help="where to render")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    draw, render = [], []
    for r in range(a.repeats + 1):   # the first batch warms up and is not counted
        t0 = time.perf_counter()
        params = data.make_params("train", r * a.batch_size, a.batch_size)
        t1 = time.perf_counter()
        params = {k: v.to(device) for k, v in params.items()}
        images = data.render_tensors(params).images
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t2 = time.perf_counter()
        assert images.shape == (a.batch_size, 3, 32, 32)
        if r:
            draw.append(t1 - t0)
            render.append(t2 - t1)
    print(f"batch {a.batch_size}, {a.threads} thread(s): drawing parameters {statistics.median(draw):.3f} s, "
          f"rendering on {device} {statistics.median(render):.3f} s (medians of {a.repeats})")


if __name__ == "__main__":
    main()
