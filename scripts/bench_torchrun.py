"""Benchmark: the evaluation protocol on 1 process against N processes under torchrun, same work, same results.

    python scripts/bench_torchrun.py --json runs/bench_torchrun.json      # about 3 minutes on 2 cores

Both runs compute a mid-sized protocol (``--quick`` sizes, with ``--guides`` guides in chunks of ``--chunk``, every
chunk's IG computed afresh in its own cache folder): one plain process with ``--processes`` threads, then
``torchrun --nproc-per-node <processes>`` with one thread per process, so both use the same cores. Prints both wall
times, their ratio, and whether the merged results are equal apart from timing fields.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from saliency_lib.machine import cpu_description
from saliency_lib.weights import atomic_write_bytes

TIMING = {"seconds_per_image", "wall_seconds", "processes"}


def without_timing(x):
    if isinstance(x, dict):
        return {k: without_timing(v) for k, v in x.items() if k not in TIMING}
    if isinstance(x, list):
        return [without_timing(v) for v in x]
    return x


def differences(a, b):
    """The absolute differences of the numbers that differ between two JSON trees of the same shape."""
    if isinstance(a, dict):
        for k in a:
            yield from differences(a[k], b[k])
    elif isinstance(a, list):
        for x, y in zip(a, b):
            yield from differences(x, y)
    elif isinstance(a, (int, float)) and not isinstance(a, bool) and a != b:
        yield abs(a - b)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--guides", type=int, default=8)
    p.add_argument("--chunk", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    size = ["run", "--quick", "--n-guides", str(a.guides), "--chunk-guides", str(a.chunk), "--ddim-steps", "20",
            "--ddpm-guides", str(a.guides), "--classifier-guides", str(a.guides)]
    launch = {"1 process": ([sys.executable], a.processes),
              f"{a.processes} processes": ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                            "--nproc-per-node", str(a.processes)], 1)}
    out: dict = {"cpu": cpu_description(), "guides": a.guides, "chunk_guides": a.chunk, "runs": {}}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (cmd, threads) in launch.items():
            folder = Path(tmp) / name.replace(" ", "_")
            t0 = time.perf_counter()
            subprocess.run([*cmd, "-m", "saliency_lib.evaluate", "--threads", str(threads), *size, "--out",
                            str(folder / "out"), "--cache", str(folder / "cache")], check=True, capture_output=True)
            wall = time.perf_counter() - t0
            results[name] = json.loads((folder / "out" / "results.json").read_text())
            out["runs"][name] = {"seconds": wall, "threads_per_process": threads}
            print(f"{name} ({threads} thread(s) each): {wall:.1f} s", flush=True)
    one, many = out["runs"].values()
    out["speedup"] = one["seconds"] / many["seconds"]
    a_res, b_res = results.values()
    a_res, b_res = without_timing(a_res), without_timing(b_res)
    out["results_equal_apart_from_timing"] = a_res == b_res
    diffs = list(differences(a_res, b_res))
    out["numbers_that_differ"] = len(diffs)
    out["largest_difference"] = max(diffs, default=0.0)
    print(f"speed-up x{out['speedup']:.2f}; merged results equal apart from timing: "
          f"{out['results_equal_apart_from_timing']} ({len(diffs)} numbers differ, by at most "
          f"{out['largest_difference']:.3g}: float rounding of {one['threads_per_process']} against "
          f"{many['threads_per_process']} thread(s) per process; at equal threads they are identical, "
          "tests/test_distributed.py)")
    if a.json:
        atomic_write_bytes(a.json, json.dumps(out, indent=2).encode())


if __name__ == "__main__":
    main()
