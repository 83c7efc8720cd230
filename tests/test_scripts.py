"""The user and maintainer scripts under scripts/: each one's command line parses, and the ones the README and the
model card's figures rest on run end to end at tiny sizes (in this process, through runpy, so torch is imported once)."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

from saliency_lib.errors import SaliencyNoiseError

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
    assert SCRIPTS / "build_tiny_preset.py" in WITH_ARGPARSE and SCRIPTS / "measure_realism.py" in WITH_ARGPARSE
    assert not list(SCRIPTS.glob("probe_*")), "probes belong to the research record (research/probes)"


@pytest.mark.parametrize("path", WITH_ARGPARSE, ids=lambda p: p.name)
def test_every_script_imports_and_prints_its_usage(path, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_script(path.name, "--help")
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and path.name in out


def test_bench_train_step_times_each_setting(tmp_path):
    out = tmp_path / "bench.json"
    run_script("bench_train_step.py", "--batch-sizes", "2", "--precisions", "none", "--steps", "1", "--threads", "1",
               "--json", str(out))
    bench = json.loads(out.read_text())
    rows = bench["rows"]
    assert len(rows) == 1 and (rows[0]["batch_size"], rows[0]["autocast"], rows[0]["steps_timed"]) == (2, "none", 1)
    assert rows[0]["median_s_per_step"] > 0 and bench["threads"] == 1 and bench["cpu"]


def test_measure_realism_runs_at_tiny_sizes_and_caches_its_samples(tmp_path):
    out, cache = tmp_path / "realism.json", tmp_path / "samples.safetensors"
    args = ["--n", "8", "--n-guides", "1", "--ig-steps", "3", "--n-reference", "16", "--subset-size", "4",
            "--subsets", "2", "--samples-cache", str(cache), "--json", str(out), "--cache", str(tmp_path / "ig")]
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


def test_build_tiny_preset_rebuilds_the_shipped_preset(tmp_path, capsys):
    """The shipped files through the build script give the shipped manifest and the same models (the DDPM files are
    already exported weights, which the build copies as they are)."""
    from saliency_lib.presets import TINY_DIR, load_tiny
    from saliency_lib.weights import load_tensors

    shipped = json.loads((TINY_DIR / "preset.json").read_text())
    out = tmp_path / "tiny"
    run_script("build_tiny_preset.py", "--out", str(out), "--ddpm", str(TINY_DIR / "ddpm.safetensors"),
               "--ig-classifier", shipped["ig_classifier_source"],
               "--judge-classifier", str(TINY_DIR / "judge_classifier.safetensors"),
               "--judge-segmenter", str(TINY_DIR / "judge_segmenter.safetensors"),
               "--guidance-weight", str(shipped["guidance_weight"]),
               "--noisy-classifier", str(TINY_DIR / "noisy_classifier.safetensors"),
               "--classifier-scale", str(shipped["classifier_scale"]),
               *[arg for e in shipped["ddpm_low_noise"] for arg in
                 ("--low-noise-expert", str(TINY_DIR / e["file"]), "--expert-below-t", str(e["below_t"]))],
               "--saliency-classifier", str(TINY_DIR / shipped["saliency_classifier"]),
               *[arg for name, f in shipped["ig_classifier_alternatives"].items() for arg in
                 ("--ig-alternative", f"{name}={TINY_DIR / f}")],
               "--note", shipped["note"])
    assert "wrote" in capsys.readouterr().out
    assert json.loads((out / "preset.json").read_text()) == shipped
    for f in sorted(p.name for p in TINY_DIR.glob("*.safetensors")):
        a, b = load_tensors(TINY_DIR / f)[0], load_tensors(out / f)[0]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f
    assert sorted(p.name for p in out.glob("*.safetensors")) == sorted(p.name for p in TINY_DIR.glob("*.safetensors"))
    assert set(load_tiny(model_dir=out).ig_alternatives) == {"trained", "trained_ls0.3"}
