"""Paired comparison of two ``sweep_guidance.py`` (or ``compare_ddpms.py``) runs on the same x_T batch (same --seed
and --n).

    python scripts/paired_difference.py candidate.json preset.json            # first row of each
    python scripts/paired_difference.py sweep.json sweep.json --row-a 1 --row-b 0 --json diff.json
    python scripts/paired_difference.py cand_seed0.json preset_seed0.json cand_seed1.json preset_seed1.json  # pooled

Both runs drew the same x_T and targets, so each sample is scored twice; the difference of the per-class accuracies
has a much smaller standard error than that of two independent batches (metrics.paired_class_difference: stratified
by class, with the counts of samples only one arm draws correctly and the exact sign test on them). Needs the
per-sample classes that ``sweep_guidance.py`` stores since History 30 and ``compare_ddpms.py`` since History 31
(``target`` and each row's ``judge_class``).

Several pairs (A1 B1 A2 B2 ..., each pair on its own batch, no batch twice) pool their samples: the batches are
independent draws, so the stratified formula applies to the concatenated samples unchanged. The JSON names the runs
as ``a`` and ``b``: a path for one pair, a list of paths (in pair order) for several.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from saliency_lib.errors import SaliencyNoiseError
from saliency_lib.metrics import paired_class_difference
from saliency_lib.weights import atomic_write_bytes


def load_arm(path: Path, row: int) -> tuple[dict, dict]:
    """The run's JSON and its row ``row``; clear errors for runs that cannot be paired."""
    try:
        run = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SaliencyNoiseError(f"{path}: cannot read a sweep_guidance.py or compare_ddpms.py JSON ({err})") from err
    rows = run.get("rows", [])
    if not -len(rows) <= row < len(rows):
        raise SaliencyNoiseError(f"{path}: no row {row}; it has {len(rows)}")
    if "target" not in run or "judge_class" not in rows[row]:
        raise SaliencyNoiseError(f"{path}: no per-sample classes (target, judge_class): it was written before "
                                 "History 30 (compare_ddpms.py: History 31); re-run it with the same arguments")
    return run, rows[row]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", metavar="A B",
                   help="sweep_guidance.py JSONs of arm A (the candidate) and arm B (the reference); repeat the pair "
                        "for further batches (A1 B1 A2 B2 ...) to pool them")
    p.add_argument("--row-a", type=int, default=0, help="which (w, s) row of A (index into its rows)")
    p.add_argument("--row-b", type=int, default=0, help="which row of B")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    if len(a.runs) % 2:
        p.error(f"give the runs in pairs (A B, or A1 B1 A2 B2 ...); got {len(a.runs)} files")
    paths_a, paths_b = a.runs[0::2], a.runs[1::2]
    target, judged_a, judged_b, batches = [], [], [], set()
    try:
        for path_a, path_b in zip(paths_a, paths_b):
            (run_a, row_a), (run_b, row_b) = load_arm(path_a, a.row_a), load_arm(path_b, a.row_b)
            batch = (run_a["seed"], run_a["n"])
            if batch != (run_b["seed"], run_b["n"]) or run_a["target"] != run_b["target"]:
                raise SaliencyNoiseError(f"{path_a} and {path_b} drew different batches (seed, n: {batch} against "
                                         f"{run_b['seed']}, {run_b['n']}): only runs on the same batch pair")
            if batch in batches:
                raise SaliencyNoiseError(f"the batch (seed, n) = {batch} comes twice: pooled pairs need batches of "
                                         "their own")
            batches.add(batch)
            target += run_a["target"]
            judged_a += row_a["judge_class"]
            judged_b += row_b["judge_class"]
            for name, run, row in (("A", run_a, row_a), ("B", run_b, row_b)):
                what = " ".join(filter(None, (row.get("path"), row.get("sampler", run.get("sampler")))))
                print(f"{name}: {what}, w = {row['weight']:g}, s = {row['classifier_scale']:g}, seed {run['seed']}, "
                      f"n = {run['n']}, experts {run.get('low_noise_expert')} below {run.get('expert_below_t')}")
        diff = paired_class_difference(target, judged_a, judged_b)
    except SaliencyNoiseError as err:
        p.error(str(err))
    if len(batches) > 1:
        print(f"pooled over {len(batches)} batches ({len(target)} samples):")
    print(f"per-class accuracy A {diff.accuracy_a:.3f}, B {diff.accuracy_b:.3f}; A - B = {diff.difference:+.3f} "
          f"(paired standard error {diff.standard_error:.3f}; {diff.unpaired_standard_error:.3f} for independent "
          f"batches); only A right: {diff.only_a}, only B right: "
          f"{diff.only_b} (exact sign test p = {diff.sign_test_p:.3f})")
    if a.json:
        names = {arm: [str(q) for q in paths] if len(paths) > 1 else str(paths[0])
                 for arm, paths in (("a", paths_a), ("b", paths_b))}
        atomic_write_bytes(a.json, json.dumps({"a": names["a"], "row_a": a.row_a, "b": names["b"], "row_b": a.row_b,
                                               **dataclasses.asdict(diff)}, indent=1).encode())


if __name__ == "__main__":
    main()
