"""The reduced-precision sampling option and the speed benchmarks (their figures are in the README, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from saliency_lib.errors import SaliencyNoiseError
from saliency_lib.pipeline import AutocastModel, Sampler, generate
from saliency_lib.presets import load_tiny

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def preset():
    return load_tiny()


def test_bfloat16_sampling_is_an_option_close_to_float32(preset):
    x_T = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    f32 = generate(preset, x_T, "fish", Sampler("ddim", 5))
    bf16 = generate(preset, x_T, "fish", Sampler("ddim", 5, precision="bfloat16"))
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    diff = (bf16 - f32).abs()
    assert 0 < diff.mean().item() < 0.1          # it computes something else, and nearly the same images
    assert not isinstance(Sampler("ddim", 5).denoiser(preset), AutocastModel)
    assert isinstance(Sampler("ddim", 5, precision="bfloat16").denoiser(preset), AutocastModel)
    assert Sampler("ddim", 5, precision="bfloat16").label.endswith(", bfloat16")
    with pytest.raises(SaliencyNoiseError, match="precision must be one of"):
        Sampler("ddim", 5, precision="float16")


def run_script(name: str, *args: str, tmp_path: Path) -> dict:
    out = tmp_path / f"{name}.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / f"{name}.py"), *args, "--json", str(out)], check=True,
                   cwd=tmp_path, capture_output=True, text=True, timeout=900)
    return json.loads(out.read_text())


def test_bench_speed_reports_ratios_and_the_machine(tmp_path):
    res = run_script("bench_speed", "--quick", "--threads", "1", "--bf16", "yes", tmp_path=tmp_path)
    assert res["threads"] == 1 and res["torch"] == torch.__version__ and "model_name" in res["cpu"]
    c = res["cases"]
    assert c["sampling"]["default"]["speedup"] == 1.0 and c["sampling"]["default"]["max_abs_diff"] == 0.0
    assert c["sampling"]["channels_last"]["max_abs_diff"] < 0.05
    assert c["sampling"]["bfloat16 (option)"]["max_abs_diff"] > 0 and c["redraw"]["default"] > 0
    assert {"sampling_steps", "ig_step_8_guides"} <= set(res["profile"])
    for n in (1, 8):
        assert c[f"ig_{n}"]["throughput_ratio"] > 0 and c[f"ig_{n}"]["max_abs_diff"] < 1e-4
    assert 0 < c["unet"]["share_of_peak"] < 1.5 and c["unet"]["gflop"] > 1


def test_bench_precision_pairs_the_two_precisions(tmp_path):
    res = run_script("bench_precision", "--quick", "--guides", "2", "--steps", "5", "--threads", "1",
                     "--cache", str(tmp_path / "cache"), tmp_path=tmp_path)
    assert res["class_control"]["images"] == 16 and 0 <= res["class_control"]["same_class_read"] <= 1
    mean, lo, hi = res["layout"]["difference_bf16_minus_f32"]
    assert lo <= mean <= hi
