"""Crafting under torchrun (2 CPU processes, gloo): the same cache entries and report as one process; a failing rank
stops the job with its error named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from saliency_lib import data
from saliency_lib.distributed import RankFailed, Ranks, init_from_env, merge_by_unit, shard
from saliency_lib.weights import load_tensors

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def test_shard_and_merge():
    assert [shard(7, Ranks(r, 3)) for r in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]
    assert shard(3, Ranks()) == [0, 1, 2]
    assert merge_by_unit([[(0, "a"), (2, "c")], [(1, "b")]]) == ["a", "b", "c"]
    with pytest.raises(RankFailed, match="expected each of"):
        merge_by_unit([[(0, "a")], [(0, "a")]])


def test_plain_python_is_one_process_without_setup(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_from_env() == Ranks(0, 1) and not torch.distributed.is_initialized()


@pytest.fixture(scope="module")
def guide_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("guides")
    b = data.make_batch("guides", 0, 5, 32)
    for i, x in enumerate(b.images):
        Image.fromarray(((x.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()).save(folder / f"g{i}.png")
    (folder.parent / "labels.json").write_text(json.dumps({f"g{i}.png": int(b.labels[i]) for i in range(5)}))
    return folder


def craft(cmd: list[str], folder: Path, out: Path) -> subprocess.CompletedProcess:
    args = [*cmd, "-m", "saliency_lib.craft", str(folder), "--labels", str(folder.parent / "labels.json"),
            "--steps", "0,3", "--chunk", "2", "--threads", "1", "--cache", str(out / "cache"),
            "--report", str(out / "report.json")]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_two_processes_craft_what_one_does(guide_folder, tmp_path):
    one = craft([sys.executable], guide_folder, tmp_path / "one")
    two = craft(TORCHRUN, guide_folder, tmp_path / "two")
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    reports = [json.loads((tmp_path / n / "report.json").read_text()) for n in ("one", "two")]
    assert [r["processes"] for r in reports] == [1, 2]
    strip = [[{k: v for k, v in c.items() if k != "seconds"} for c in r["chunks"]] for r in reports]
    assert strip[0] == strip[1] and len(strip[0]) == 3
    entries = sorted(p.name for p in (tmp_path / "one" / "cache" / "ig").glob("*.safetensors"))
    assert entries == sorted(p.name for p in (tmp_path / "two" / "cache" / "ig").glob("*.safetensors"))
    assert len(entries) == 3
    for name in entries:
        a, _ = load_tensors(tmp_path / "one" / "cache" / "ig" / name)
        b, _ = load_tensors(tmp_path / "two" / "cache" / "ig" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_failing_rank_stops_the_job_with_its_error(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(
        "from saliency_lib.distributed import finish, init_from_env, run_and_gather\n"
        "ranks = init_from_env(timeout_s=60)\n"
        "def work():\n"
        "    if ranks.rank == 1:\n"
        "        raise ValueError('boom on purpose')\n"
        "    import time; time.sleep(600)   # rank 0 is still busy: torchrun must stop it\n"
        "    return ranks.rank\n"
        "run_and_gather(work, ranks)\n"
        "finish(ranks)\n")
    res = subprocess.run([*TORCHRUN, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "RankFailed: rank 1 of 2 failed: ValueError: boom on purpose" in out
    assert "rank      : 1" in out            # torchrun's report names rank 1 as the root cause


def test_bad_guide_files_are_refused_before_any_work(guide_folder, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_text("not an image")
    res = subprocess.run([sys.executable, "-m", "saliency_lib.craft", str(bad)], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 2 and "not an image file" in res.stderr
    res = subprocess.run([sys.executable, "-m", "saliency_lib.craft", str(tmp_path / "nowhere")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "no such folder" in res.stderr


def _bench_torchrun():
    """scripts/bench_torchrun.py as a module: its ``without_timing`` and ``differences`` compare merged results."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_torchrun", ROOT / "scripts" / "bench_torchrun.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


without_timing = _bench_torchrun().without_timing


def test_protocol_on_two_processes_equals_one(tmp_path):
    """The quick protocol (4 guides in 2 chunks) under torchrun with 2 processes on gloo: the merged results, per-guide
    values included, equal a plain single-process run's apart from timing fields (1 thread per process in both)."""
    out = {}
    for name, cmd in (("one", [sys.executable]), ("two", TORCHRUN)):
        res = subprocess.run([*cmd, "-m", "saliency_lib.evaluate", "--threads", "1", "run", "--quick", "--out",
                              str(tmp_path / name), "--cache", str(tmp_path / f"cache_{name}")], cwd=ROOT,
                             capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, res.stderr[-3000:]
        out[name] = json.loads((tmp_path / name / "results.json").read_text())
    assert out["one"]["processes"] == 1 and out["two"]["processes"] == 2
    assert without_timing(out["one"]) == without_timing(out["two"])
    gauss = next(r for r in out["one"]["rows"] if r["condition"] == "Gaussian")
    assert gauss["per_guide"]["guides"] == [0, 1, 2, 3] and len(gauss["per_guide"]["iou"]) == 4


def test_the_scaling_benchmark_compares_results_without_timing_and_counts_differences():
    bench = _bench_torchrun()
    a = {"wall_seconds": 3.0, "rows": [{"iou": [0.5, 0.4, 0.6], "n": 4, "ok": True}]}
    b = {"wall_seconds": 9.0, "rows": [{"iou": [0.5, 0.45, 0.6], "n": 4, "ok": True}]}
    assert bench.without_timing(a) == {"rows": [{"iou": [0.5, 0.4, 0.6], "n": 4, "ok": True}]}
    diffs = list(bench.differences(bench.without_timing(a), bench.without_timing(b)))
    assert diffs == pytest.approx([0.05])
    assert list(bench.differences(bench.without_timing(a), bench.without_timing(a))) == []
