"""The measurement scripts under scripts/: each one's command line parses, and the ones the model card's latest
measurements rest on run end to end at tiny sizes (in this process, through runpy, so torch is imported once)."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

from saliency_lib.errors import SaliencyNoiseError
from saliency_lib.evaluate import paired_class_difference

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
WITH_ARGPARSE = sorted(p for p in SCRIPTS.glob("*.py") if "argparse" in p.read_text())


def run_script(name: str, *args: str) -> None:
    """``python scripts/<name> args...`` in this process; raises SystemExit(code) where the script exits."""
    argv = sys.argv
    sys.argv = [str(SCRIPTS / name), *args]
    threads = torch.get_num_threads()
    try:
        runpy.run_path(str(SCRIPTS / name), run_name="__main__")
    finally:
        sys.argv = argv
        torch.set_num_threads(threads)   # the scripts set their own --threads


def test_the_scripts_are_found():
    assert len(WITH_ARGPARSE) >= 25 and SCRIPTS / "sweep_guidance.py" in WITH_ARGPARSE


@pytest.mark.parametrize("path", WITH_ARGPARSE, ids=lambda p: p.name)
def test_every_script_imports_and_prints_its_usage(path, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_script(path.name, "--help")
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and path.name in out


def test_paired_class_difference_by_hand():
    # class 0: A right on 1 of 2, B on 2; class 1: A on 2, B on 1 -> equal accuracies, d = [0, -1 | 1, 0]
    d = paired_class_difference([0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1])
    assert d.accuracy_a == d.accuracy_b == 0.75 and d.difference == 0
    # per class var(d, ddof=1) = 0.5, over n_c = 2: 0.25 each; sqrt(0.5) / K
    assert d.standard_error == pytest.approx(0.5 ** 0.5 / 2)
    # unpaired: var_c(a) = var_c(b) = 0.5 in the class where each is right once of 2, 0 in the other -> sqrt(0.5) / K
    assert d.unpaired_standard_error == pytest.approx(0.5 ** 0.5 / 2)
    assert (d.only_a, d.only_b) == (1, 1) and d.sign_test_p == 1.0
    # A right on all 10, B on none: p = 2 / 2**10, and no variance within the class
    d = paired_class_difference([3] * 10, [3] * 10, [0] * 10)
    assert (d.difference, d.standard_error, d.unpaired_standard_error, d.only_a, d.only_b) == (1.0, 0.0, 0.0, 10, 0)
    assert d.sign_test_p == pytest.approx(2 / 1024)
    # the accuracies are per-class averages: an unbalanced batch weighs each class alike
    d = paired_class_difference([0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 1])
    assert (d.accuracy_a, d.accuracy_b) == (0.5, 1.0)


def test_paired_class_difference_refuses_mismatched_lists():
    with pytest.raises(SaliencyNoiseError, match="one length"):
        paired_class_difference([0, 1], [0, 1, 1], [0, 1])
    with pytest.raises(SaliencyNoiseError, match="non-empty"):
        paired_class_difference([], [], [])


def test_sweep_guidance_keeps_per_sample_classes_and_pairs(tmp_path, capsys):
    sweep = tmp_path / "sweep.json"
    run_script("sweep_guidance.py", "--weights", "0,2", "--classifier-scales", "0", "--n", "16", "--sampler", "ddim:2",
               "--grids", str(tmp_path), "--json", str(sweep))
    run = json.loads(sweep.read_text())
    assert run["target"] == [i % 8 for i in range(16)] and len(run["rows"]) == 2
    for row in run["rows"]:
        confusion = torch.tensor(row["confusion"])
        predicted = torch.tensor(row["judge_class"])
        # the per-sample classes are the confusion matrix's: the same counts per (target, judge) cell
        assert torch.equal(torch.bincount(torch.tensor(run["target"]) * 8 + predicted, minlength=64).view(8, 8),
                           confusion)
    capsys.readouterr()
    diff = tmp_path / "diff.json"
    run_script("paired_difference.py", str(sweep), str(sweep), "--row-a", "1", "--row-b", "0", "--json", str(diff))
    printed = capsys.readouterr().out
    d = json.loads(diff.read_text())
    rows = run["rows"]
    assert d["accuracy_a"] == pytest.approx(rows[1]["judge_per_class_accuracy"])
    assert d["accuracy_b"] == pytest.approx(rows[0]["judge_per_class_accuracy"])
    assert f"A - B = {d['difference']:+.3f}" in printed
    # a row against itself: no difference, no discordant sample
    run_script("paired_difference.py", str(sweep), str(sweep), "--json", str(diff))
    d = json.loads(diff.read_text())
    assert (d["difference"], d["standard_error"], d["only_a"], d["only_b"], d["sign_test_p"]) == (0, 0, 0, 0, 1.0)


def test_paired_difference_refuses_runs_it_cannot_pair(tmp_path, capsys):
    def write(name: str, **run) -> Path:
        path = tmp_path / name
        path.write_text(json.dumps({"seed": 0, "n": 2, "sampler": "ddim:50", "target": [0, 1],
                                    "rows": [{"weight": 2, "classifier_scale": 5, "judge_class": [0, 1]}]} | run))
        return path

    ok, other_seed = write("ok.json"), write("seed1.json", seed=1)
    old = write("old.json", rows=[{"weight": 2, "classifier_scale": 5}])
    for args, message in [((ok, other_seed), "different batches"), ((ok, old), "before History 30"),
                          ((ok, ok, "--row-b", "3"), "no row 3"), ((ok, tmp_path / "missing.json"), "cannot read")]:
        with pytest.raises(SystemExit) as exit_:
            run_script("paired_difference.py", *map(str, args))
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_paired_difference_pools_batches(tmp_path, capsys):
    def write(name: str, seed: int, target: list, judged: list) -> Path:
        path = tmp_path / name
        path.write_text(json.dumps({"seed": seed, "n": len(target), "sampler": "ddim:50", "target": target,
                                    "rows": [{"weight": 2, "classifier_scale": 5, "judge_class": judged}]}))
        return path

    y0, y1 = [0, 1, 0, 1], [1, 0, 1, 0]
    a0, b0 = write("a0.json", 0, y0, [0, 1, 1, 1]), write("b0.json", 0, y0, [0, 0, 0, 1])
    a1, b1 = write("a1.json", 1, y1, [1, 0, 1, 0]), write("b1.json", 1, y1, [0, 0, 1, 0])
    out = tmp_path / "pooled.json"
    run_script("paired_difference.py", *map(str, (a0, b0, a1, b1)), "--json", str(out))
    assert "pooled over 2 batches (8 samples)" in capsys.readouterr().out
    d = json.loads(out.read_text())
    want = paired_class_difference(y0 + y1, [0, 1, 1, 1, 1, 0, 1, 0], [0, 0, 0, 1, 0, 0, 1, 0])
    assert d["difference"] == pytest.approx(want.difference) and d["standard_error"] == pytest.approx(want.standard_error)
    assert d["difference"] == pytest.approx(0.125) and (d["only_a"], d["only_b"]) == (2, 1) and d["a"] == [str(a0), str(a1)] and d["b"] == [str(b0), str(b1)]
    for args, message in [((a0, b0, a1), "in pairs"), ((a0, b0, a0, b0), "comes twice")]:
        with pytest.raises(SystemExit) as exit_:
            run_script("paired_difference.py", *map(str, args))
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_bench_train_step_times_each_setting(tmp_path):
    out = tmp_path / "bench.json"
    run_script("bench_train_step.py", "--batch-sizes", "2", "--precisions", "none", "--steps", "1", "--threads", "1",
               "--json", str(out))
    bench = json.loads(out.read_text())
    rows = bench["rows"]
    assert len(rows) == 1 and (rows[0]["batch_size"], rows[0]["autocast"], rows[0]["steps_timed"]) == (2, "none", 1)
    assert rows[0]["median_s_per_step"] > 0 and bench["threads"] == 1 and bench["cpu"]


def test_probe_expert_sampling_refuses_the_chain(capsys):
    with pytest.raises(SystemExit) as exit_:
        run_script("probe_expert_sampling.py", "--probes", "default", "--n", "8")
    assert exit_.value.code == 2 and "941e322" in capsys.readouterr().err


def test_probe_phase_transplant_runs_on_two_guides(tmp_path):
    out = tmp_path / "transplant.json"
    run_script("probe_phase_transplant.py", "--guide-start", "40", "--n-guides", "2", "--ig-steps", "3",
               "--threads", "2", "--json", str(out))
    res = json.loads(out.read_text())
    assert len(res["rows"]) == 4 and all(len(v) == 2 for v in res["per_guide_iou"].values())
    for row in res["rows"].values():
        mean, lo, hi = row["layout_iou"]
        assert 0 <= lo <= mean <= hi <= 1 and 0 <= row["class_accuracy"] <= 1
    assert len(res["paired_layout_iou"]["against"]) == 3


def test_measure_realism_runs_at_tiny_sizes_and_caches_its_samples(tmp_path):
    out, cache = tmp_path / "realism.json", tmp_path / "samples.safetensors"
    args = ["--n", "8", "--n-guides", "1", "--ig-steps", "3", "--n-reference", "16", "--subset-size", "4",
            "--subsets", "2", "--samples-cache", str(cache), "--json", str(out)]
    run_script("measure_realism.py", *args)
    res = json.loads(out.read_text())
    names = [row["condition"] for row in res["rows"]]
    assert len(names) == 9 and res["ig_steps"] == 3 and cache.exists()
    # the guided row is named by the preset's own guidance, not a fixed one
    assert "gaussian, DDIM-50 (w = 2, s = 5)" in names
    # a second run reads every sample from the cache and measures the same
    run_script("measure_realism.py", *args)
    again = json.loads(out.read_text())
    assert [r["kid"] for r in again["rows"]] == [r["kid"] for r in res["rows"]]
    with pytest.raises(SaliencyNoiseError, match="ig_steps=3"):
        run_script("measure_realism.py", *args[:4], "--ig-steps", "4", *args[6:])
    # a cache sampled by another preset (here: the same file, its record of the sampler changed) is refused
    from saliency_lib.weights import load_tensors, save_tensors

    tensors, meta = load_tensors(cache)
    assert meta["sampler"].endswith("w = 2, s = 5")
    save_tensors(cache, tensors, meta | {"sampler": "another preset"})
    with pytest.raises(SaliencyNoiseError, match="another preset or guidance"):
        run_script("measure_realism.py", *args)


def test_cpu_description_reads_the_first_processor(tmp_path):
    from saliency_lib.machine import cpu_description

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Example CPU @ 2GHz\nflags\t\t: fpu sse avx512_bf16\n\n"
                    "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu amx_bf16\n")
    d = cpu_description(info)
    assert (d["model_name"], d["avx512_bf16"], d["amx_bf16"]) == ("Example CPU @ 2GHz", True, False)
    missing = cpu_description(tmp_path / "absent")
    assert (missing["model_name"], missing["avx512_bf16"], missing["amx_bf16"]) == ("", False, False)


def test_layout_under_guidance_pools_blocks_and_pairs_settings(tmp_path):
    out = tmp_path / "layout.json"
    run_script("layout_under_guidance.py", "--guide-starts", "40,44", "--n-guides", "2", "--ig-steps", "3",
               "--ddim-steps", "2", "--weights", "preset,0", "--classifier-scales", "0", "--json", str(out))
    res = json.loads(out.read_text())
    assert [b["guide_start"] for b in res["blocks"]] == [40, 44]
    first, second = "DDIM-2, s_cls=0", "DDIM-2, w=0, s_cls=0"
    assert list(res["pooled"]["settings"]) == [first, second]
    for label in (first, second):
        rows = res["pooled"]["settings"][label]
        assert len(rows) == 3
        for noise, row in rows.items():
            per_guide = [v for b in res["blocks"] for v in b["settings"][label][noise]["per_guide_iou"]]
            assert len(per_guide) == 4 and row["layout_iou"][0] == pytest.approx(sum(per_guide) / 4)
            assert row["layout_iou"][1] <= row["layout_iou"][0] <= row["layout_iou"][2]
    for noise, d in res["pooled"]["paired_against_first_setting"].items():
        a = [v for b in res["blocks"] for v in b["settings"][first][noise]["per_guide_iou"]]
        b_ = [v for b in res["blocks"] for v in b["settings"][second][noise]["per_guide_iou"]]
        diff = d[second]["mean_difference_ci95"][0]
        assert diff == pytest.approx(sum(y - x for x, y in zip(a, b_)) / 4)
    for label in (first, second):
        by_noise = {n: [v for b in res["blocks"] for v in b["settings"][label][n]["per_guide_iou"]]
                    for n in res["blocks"][0]["settings"][label]}
        crafted = res["pooled"]["paired_against_gaussian"][label]
        assert sorted(crafted) == sorted(n for n in by_noise if n != "gaussian")
        for n, d in crafted.items():
            want = sum(x - g for x, g in zip(by_noise[n], by_noise["gaussian"])) / 4
            assert d["mean_difference_ci95"][0] == pytest.approx(want)
            assert d["guides_better"] + d["guides_worse"] <= 4
    for b in res["blocks"]:   # each block's own paired differences from Gaussian noise, over its 2 guides
        for label, crafted in b["paired_against_gaussian"].items():
            rows = b["settings"][label]
            for n, d in crafted.items():
                want = sum(x - g for x, g in zip(rows[n]["per_guide_iou"], rows["gaussian"]["per_guide_iou"])) / 2
                assert d["mean_difference_ci95"][0] == pytest.approx(want)
    assert res["preset_guidance"]["guidance_weight"] == 2


def test_layout_under_guidance_refuses_bad_lists(capsys):
    for bad in (["--weights", "2,x"], ["--guide-starts", "0,0"], ["--guide-starts", "-32"]):
        with pytest.raises(SystemExit) as exit_:
            run_script("layout_under_guidance.py", *bad)
        assert exit_.value.code == 2
    assert "'x' is not a number (or 'preset')" in capsys.readouterr().err


def test_compare_ddpms_keeps_per_sample_classes_that_pair(tmp_path, capsys):
    out, diff = tmp_path / "compare.json", tmp_path / "diff.json"
    run_script("compare_ddpms.py", "data/models/tiny/ddpm.safetensors", "--n", "16", "--samplers", "ddim:2",
               "--weights", "0,2", "--threads", "1", "--grids", str(tmp_path), "--json", str(out))
    res = json.loads(out.read_text())
    assert (res["n"], res["seed"], res["target"]) == (16, 0, [i % 8 for i in range(16)])
    assert [r["weight"] for r in res["rows"]] == [0.0, 2.0]
    for row in res["rows"]:
        right = [p == t for p, t in zip(row["judge_class"], res["target"])]
        per_class = [sum(right[c::8]) / 2 for c in range(8)]
        assert row["judge_per_class_accuracy"] == pytest.approx(sum(per_class) / 8)
    run_script("paired_difference.py", str(out), str(out), "--row-a", "1", "--row-b", "0", "--json", str(diff))
    d = json.loads(diff.read_text())
    assert d["difference"] == pytest.approx(res["rows"][1]["judge_per_class_accuracy"]
                                            - res["rows"][0]["judge_per_class_accuracy"])
    assert "ddim:2, w = 2" in capsys.readouterr().out


def test_probe_class_retention_runs_with_the_chain(tmp_path):
    out = tmp_path / "retention.json"
    run_script("probe_class_retention.py", "--n", "8", "--starts", "100,300", "--steps", "5", "--threads", "1",
               "--json", str(out))
    res = json.loads(out.read_text())
    assert res["unet_bands"] == [[500, 1000], [100, 500], [0, 100]]   # the shipped chain of experts
    assert (res["guidance_weight"], res["classifier_scale"]) == (2, 5)
    assert [r["condition"] for r in res["rows"]] == ["keep", "swap"] * 2
    for row in res["rows"]:
        # one image per class: the per-class mean is the plain mean, and "keep" scores the source class itself
        assert row["judge_accuracy"] == pytest.approx(sum(row["accuracy_by_class"]) / 8)
        if row["condition"] == "keep":
            assert row["source_kept"] == pytest.approx(row["judge_accuracy"])


def test_heldout_loss_scores_the_mean_of_two_experts_paired_with_the_first(tmp_path, capsys):
    """``heldout_loss.py --average`` (History 33): the mean prediction of two models is scored on the same x_t as
    each, and its squared error can be no larger than the mean of theirs (the error is convex in the prediction)."""
    tiny = Path(__file__).resolve().parents[1] / "data" / "models" / "tiny"
    out = tmp_path / "loss.json"
    run_script("heldout_loss.py", str(tiny / "ddpm.safetensors"), str(tiny / "ddpm_low_noise.safetensors"),
               "--ts", "300", "--n-test", "16", "--average", "--json", str(out))
    models = json.loads(out.read_text())["models"]
    assert len(models) == 3 and models[2]["path"].startswith("mean of ")
    (a,), (b,), (mean,) = (m["rows"] for m in models)
    assert mean["mse_label"] <= (a["mse_label"] + b["mse_label"]) / 2
    assert mean["mse_label_minus_first"] == pytest.approx(mean["mse_label"] - a["mse_label"], abs=1e-7)
    assert a["mse_label"] != b["mse_label"]
    with pytest.raises(SystemExit):
        run_script("heldout_loss.py", str(tiny / "ddpm.safetensors"), "--average")
    capsys.readouterr()


def test_sweep_guidance_takes_an_expert_made_of_several_files(tmp_path, capsys):
    """``--low-noise-expert A B`` makes that band's expert the mean of A and B (History 33): with A twice, the mean
    is A itself, so the samples (and the judge's classes) are those of A alone."""
    tiny = Path(__file__).resolve().parents[1] / "data" / "models" / "tiny"
    expert = str(tiny / "ddpm_low_noise.safetensors")
    runs = {}
    for name, files in (("one", [expert]), ("twice", [expert, expert])):
        runs[name] = tmp_path / f"{name}.json"
        run_script("sweep_guidance.py", "--low-noise-expert", *files, "--expert-below-t", "500", "--weights", "2",
                   "--n", "8", "--sampler", "ddim:3", "--grids", str(tmp_path), "--json", str(runs[name]))
    one, twice = (json.loads(runs[k].read_text()) for k in ("one", "twice"))
    assert one["low_noise_expert"] == [expert] and twice["low_noise_expert"] == [[expert, expert]]
    assert one["rows"][0]["judge_class"] == twice["rows"][0]["judge_class"]
    capsys.readouterr()
