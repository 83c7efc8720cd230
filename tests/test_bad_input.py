"""Bad input at the public edge: every case ends in a clear error of the package's type (or argparse's exit code 2 for
the command lines) whose message names what was wrong, and nothing is written on the way."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from saliency_lib import evaluate, suite, train
from saliency_lib.errors import SaliencyNoiseError
from saliency_lib.inversion import IGConfig, cached_invert_gradients
from saliency_lib.noise import mix_with_gaussian, phase_transplant
from saliency_lib.pipeline import CraftedNoise, Sampler, craft_noise, generate, guide_batch, target_labels
from saliency_lib.presets import TINY_DIR, load_preset, load_tiny
from saliency_lib.widgets import ExplorerState, render_generation

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def preset():
    return load_tiny()


SAMPLER_CASES = [
    (dict(method="euler"), "method"), (dict(steps=0), "steps"), (dict(steps=2.5), "steps"),
    (dict(steps=True), "steps"), (dict(steps="50"), "steps"), (dict(eta=-1.0), "eta"), (dict(eta=5.0), "eta"),
    (dict(eta=float("nan")), "eta"), (dict(guidance=-1.0), "guidance"), (dict(guidance=float("nan")), "guidance"),
    (dict(guidance=float("inf")), "guidance"), (dict(guidance="2"), "guidance"),
    (dict(classifier_scale=-0.5), "classifier_scale"), (dict(classifier_scale=float("nan")), "classifier_scale"),
    (dict(classifier_scale=float("-inf")), "classifier_scale"),
]


@pytest.mark.parametrize("kwargs, names", SAMPLER_CASES, ids=lambda v: str(v) if isinstance(v, dict) else None)
def test_sampler_refuses(kwargs, names):
    with pytest.raises(SaliencyNoiseError, match=names):
        Sampler(**kwargs)


def test_sampler_accepts_what_users_naturally_pass():
    s = Sampler("ddim", np.int64(10), eta=np.float32(0.0), guidance=np.float64(2), classifier_scale=torch.tensor(1.0))
    assert (s.steps, type(s.steps), s.guidance, s.classifier_scale) == (10, int, 2.0, 1.0)


TARGET_CASES = [
    (True, "bool"), (torch.tensor([True, False]), "bool"), ("unicorn", "unknown class"), (8, "class id"),
    (-1, "class id"), ([0, 1, 2], "target lists 3 classes for 2"), ([0, 1.5], "class names or ids"),
    (torch.tensor([0.0, 1.0]), "integer class ids"), (torch.tensor([0, 9]), r"\[0, 7\]"), (3.0, "class name or id"),
    (None, "class name or id"), ([0, None], "class names or ids"),
]


@pytest.mark.parametrize("target, message", TARGET_CASES, ids=repr)
def test_generate_refuses_bad_targets(preset, target, message):
    with pytest.raises(SaliencyNoiseError, match=message):
        generate(preset, X, target, Sampler("ddim", 2))


@pytest.mark.parametrize("kwargs", [dict(first_index=-1), dict(first_index=1.5), dict(seed=-3)], ids=repr)
def test_generate_refuses_bad_stream_indices(preset, kwargs):
    with pytest.raises(SaliencyNoiseError, match=next(iter(kwargs))):
        generate(preset, X, 0, Sampler("ddpm", 2), **kwargs)


def test_one_generator_per_image_is_checked():
    from saliency_lib.diffusion import image_generators, randn

    with pytest.raises(SaliencyNoiseError, match="3 generators for a batch of 2"):
        randn((2, 3, 4, 4), image_generators(0, 3))


def test_targets_accept_numpy_ints_arrays_and_names(preset):
    for t in (np.int64(3), np.array([1, 2]), [np.int32(1), "fish"], torch.tensor(5), "key"):
        assert target_labels(preset, t, 2).dtype == torch.long


X_T_CASES = [
    (torch.zeros(0, 3, 32, 32), "no images"), (torch.zeros(2, 3, 16, 16), "32x32"), (torch.zeros(2, 1, 32, 32), "3"),
    (torch.zeros(3, 32, 32), "rank 4"), (torch.zeros(2, 3, 32, 32, dtype=torch.long), "floating"),
    (torch.full((2, 3, 32, 32), float("nan")), "NaN"), (X.numpy(), "torch.Tensor"),
]


@pytest.mark.parametrize("x_T, message", X_T_CASES, ids=lambda v: message_id(v))
def test_generate_refuses_bad_x_T(preset, x_T, message):
    with pytest.raises(SaliencyNoiseError, match=f"x_T.*{message}|{message}.*x_T"):
        generate(preset, x_T, 0, Sampler("ddim", 2))


def message_id(v):
    return str(tuple(v.shape)) if hasattr(v, "shape") else str(v)


def test_generate_refuses_a_non_sampler_and_a_bad_seed(preset):
    with pytest.raises(SaliencyNoiseError, match="sampler must be a Sampler"):
        generate(preset, X, 0, "ddim:50")
    for seed in (-1, 1.5, "0"):
        with pytest.raises(SaliencyNoiseError, match="seed"):
            generate(preset, X, 0, Sampler("ddim", 2), seed=seed)


def test_non_finite_samples_stop_with_the_settings_named(preset):
    with pytest.raises(SaliencyNoiseError, match="DDIM-2 .*w=0.*produced NaN or inf.*lower the guidance or check x_T"):
        generate(preset, X * 1e30, 0, Sampler("ddim", 2, guidance=0.0, classifier_scale=0.0))


def test_float64_x_T_is_converted_with_a_note(preset):
    with pytest.warns(UserWarning, match="float64"):
        a = generate(preset, X.double(), 0, Sampler("ddim", 2, guidance=0.0, classifier_scale=0.0))
    assert a.dtype == torch.float32
    assert torch.equal(a, generate(preset, X, 0, Sampler("ddim", 2, guidance=0.0, classifier_scale=0.0)))


MIX_CASES = [
    (dict(strength=1.5), "strength"), (dict(strength=-0.1), "strength"), (dict(strength=float("nan")), "strength"),
    (dict(strength=True), "strength"), (dict(strength=0.3, fresh=torch.randn(1, 3, 32, 32)), "one eps per image"),
    (dict(strength=0.3, fresh=torch.randn(2, 3, 16, 16)), "shape"),
    (dict(strength=0.3, fresh=torch.full((2, 3, 32, 32), float("inf"))), "fresh.*NaN or inf"),
]


@pytest.mark.parametrize("kwargs, message", MIX_CASES, ids=lambda v: str(v)[:40] if isinstance(v, dict) else None)
def test_mix_with_gaussian_refuses(kwargs, message):
    with pytest.raises(SaliencyNoiseError, match=message):
        mix_with_gaussian(X, **kwargs)


def test_phase_transplant_refuses_a_fresh_noise_of_another_shape():
    with pytest.raises(SaliencyNoiseError, match="fresh noise"):
        phase_transplant(X, fresh=torch.randn(1, 3, 32, 32))


IG_CASES = [
    (dict(iterations=-1), "iterations"), (dict(lr=0.0), "lr"), (dict(restarts=0), "restarts"),
    (dict(temperature=0.0), "temperature"), (dict(iterations=10, snapshots=(20,)), "snapshots"),
]


@pytest.mark.parametrize("kwargs, message", IG_CASES, ids=lambda v: str(v) if isinstance(v, dict) else None)
def test_ig_config_refuses(kwargs, message):
    with pytest.raises(SaliencyNoiseError, match=message):
        IGConfig(**kwargs)


def test_craft_noise_refuses_guides_outside_the_diffusion_range_and_a_missing_snapshot(preset, tmp_path):
    with pytest.raises(SaliencyNoiseError, match=r"guides values must lie in \[-1, 1\]"):
        craft_noise(preset, X * 5, torch.tensor([0, 1]), steps=(0,), cache_dir=tmp_path)
    crafted = CraftedNoise({0: X}, {0: X}, {})
    with pytest.raises(SaliencyNoiseError, match="no snapshot at IG step 5; available: \\[0\\]"):
        crafted[5]


def test_an_unwritable_ig_cache_is_reported_before_ig_runs(preset, tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file, not a folder")
    g = guide_batch(1)
    with pytest.raises(SaliencyNoiseError, match="IG cache folder.*not a writable folder"):
        craft_noise(preset, g.images, g.labels, steps=(0, 5), cache_dir=blocker)
    assert blocker.read_text() == "a file, not a folder"


def test_a_corrupt_ig_cache_entry_is_moved_aside_and_recomputed(preset, tmp_path):
    g = guide_batch(1)
    first = craft_noise(preset, g.images, g.labels, steps=(0, 3), cache_dir=tmp_path)
    entry = next((tmp_path / "ig").glob("*.safetensors"))
    entry.write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match="could not be read.*recomputing"):
        again = craft_noise(preset, g.images, g.labels, steps=(0, 3), cache_dir=tmp_path)
    assert torch.equal(first[3], again[3]) and entry.with_suffix(".corrupt").exists()
    assert craft_noise(preset, g.images, g.labels, steps=(0, 3), cache_dir=tmp_path).stats["cached"]


def test_an_ig_cache_entry_with_altered_data_fails_its_checksum(preset, tmp_path):
    """A flipped byte inside a tensor still parses as safetensors; the entry's sha256 catches it."""
    g = guide_batch(1)
    first = craft_noise(preset, g.images, g.labels, steps=(0, 3), cache_dir=tmp_path)
    entry = next((tmp_path / "ig").glob("*.safetensors"))
    raw = bytearray(entry.read_bytes())
    raw[-5] ^= 0xFF                       # the last tensor's data is at the end of the file
    entry.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="do not match their checksum.*recomputing"):
        again = craft_noise(preset, g.images, g.labels, steps=(0, 3), cache_dir=tmp_path)
    assert torch.equal(first[3], again[3]) and entry.with_suffix(".corrupt").exists()
    assert craft_noise(preset, g.images, g.labels, steps=(0, 3), cache_dir=tmp_path).stats["cached"]


def test_stale_temp_files_in_the_ig_cache_are_swept(preset, tmp_path):
    import os
    import time

    g = guide_batch(1)
    craft_noise(preset, g.images, g.labels, steps=(0, 2), cache_dir=tmp_path)
    old = tmp_path / "ig" / "abc.safetensors.x1y2.tmp"
    young = tmp_path / "ig" / "def.safetensors.x3y4.tmp"   # another process's write in progress
    for f in (old, young):
        f.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    assert craft_noise(preset, g.images, g.labels, steps=(0, 2), cache_dir=tmp_path).stats["cached"]
    assert not old.exists() and young.exists()


def test_ctrl_c_during_ig_propagates_and_caches_nothing(preset, tmp_path, monkeypatch):
    import saliency_lib.inversion as inversion

    calls = {"n": 0}
    real = inversion.gradient_cosine_loss

    def interrupt_at_the_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(inversion, "gradient_cosine_loss", interrupt_at_the_third)
    g = guide_batch(1)
    cfg = IGConfig(iterations=10, snapshots=(0, 10))
    with pytest.raises(KeyboardInterrupt, match="nothing was cached"):
        cached_invert_gradients(preset.classifier, preset.normalization.from_diffusion(g.images), g.labels,
                                preset.normalization, cfg, seed=0, cache_dir=tmp_path)
    assert not list((tmp_path / "ig").glob("*.safetensors")) if (tmp_path / "ig").exists() else True
    calls["n"] = 0
    result, stats = cached_invert_gradients(preset.classifier, preset.normalization.from_diffusion(g.images),
                                            g.labels, preset.normalization, cfg, seed=0, cache_dir=tmp_path,
                                            allow_partial=True)
    assert stats["interrupted"] and 10 not in result.snapshots
    assert not list((tmp_path / "ig").glob("*.safetensors")) if (tmp_path / "ig").exists() else True


def test_widget_callback_refuses_a_bad_strength_and_class(preset):
    crafted = CraftedNoise({0: X}, {0: X}, {})
    state = ExplorerState(preset, crafted, torch.randn(2, 3, 32, 32), sampler=Sampler("ddim", 2))
    with pytest.raises(SaliencyNoiseError, match="strength"):
        render_generation(state, 0, "fish", 2.0)
    with pytest.raises(SaliencyNoiseError, match="unknown class 'whale'"):
        render_generation(state, 0, "whale", 0.3)
    with pytest.raises(SaliencyNoiseError, match="fresh noise has shape"):
        ExplorerState(preset, crafted, torch.randn(3, 3, 32, 32))


PRESET_CASES = [
    (lambda d: (d / "preset.json").write_text("{not json"), "preset.json is not valid JSON"),
    (lambda d: (d / "preset.json").unlink(), "tiny preset's files are missing"),
    (lambda d: (d / "ddpm.safetensors").write_bytes(b"garbage"), "ddpm.safetensors"),
    (lambda d: (d / "preset.json").write_text(json.dumps({**json.loads((TINY_DIR / "preset.json").read_text()),
                                                          "ddpm_low_noise": [{"file": "ddpm_low_noise.safetensors",
                                                                              "below_t": 100},
                                                                             {"file": "ddpm_low_noise_2.safetensors",
                                                                              "below_t": 500}]})),
     "strictly decreasing"),
]


@pytest.mark.parametrize("damage, message", PRESET_CASES)
def test_a_damaged_tiny_folder_is_a_clear_error(tmp_path, damage, message):
    d = tmp_path / "tiny"
    shutil.copytree(TINY_DIR, d)
    damage(d)
    with pytest.raises(SaliencyNoiseError, match=message):
        load_tiny(model_dir=d)


@pytest.mark.parametrize("name, options, message", [("tiny2", {}, "unknown preset"),
                                                    ("tiny", {"classifier_guidance": True}, "no option")])
def test_load_preset_refuses(name, options, message):
    with pytest.raises(SaliencyNoiseError, match=message):
        load_preset(name, **options)


def _exit_code(main, argv) -> int:
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code


@pytest.mark.parametrize("argv, message", [
    (["ddpm", "--steps", "-5"], "steps"), (["ddpm", "--batch-size", "0"], "batch_size"),
    (["classifier", "--label-dropout", "0.1"], "--label-dropout"), (["ddpm", "--label-smoothing", "0.2"], "smoothing"),
    (["segmenter", "--t-max", "100"], "--t-max"), (["ddpm", "--autocast", "fp8"], "autocast"),
    (["ddpm", "--steps", "ten"], "--steps"), (["export"], "--from-ckpt"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_train_cli_refuses_with_exit_code_2_and_writes_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert _exit_code(train.main, [*argv, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_train_resume_without_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(SaliencyNoiseError, match="no checkpoint .* to resume from"):
        train.train_classifier("classifier", tmp_path / "none", train.ClassifierTrainConfig(steps=1), resume=True,
                               progress=False)


def test_evaluate_cli_checks_its_destinations_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert _exit_code(evaluate.main, ["run", "--quick", "--out", str(blocker)]) == 2
    assert "--out" in capsys.readouterr().err
    assert _exit_code(evaluate.main, ["models", "--json", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert _exit_code(evaluate.main, ["quality", "--quick", "--cache", str(blocker)]) == 2
    assert "--cache" in capsys.readouterr().err and blocker.read_text() == "x"


@pytest.mark.parametrize("argv, message", [
    (["-p", "nonexistent_param", "3"], "no notebook has the parameter(s) ['nonexistent_param']"),
    (["--only", "99"], "--only"), (["--store", "-p", "seed", "1"], "--store"),
])
def test_suite_cli_refuses_with_exit_code_2(tmp_path, capsys, argv, message):
    assert suite.main([*argv, "--out", str(tmp_path / "runs")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "runs").exists()


def test_ctrl_c_during_sampling_propagates(preset):
    """A KeyboardInterrupt inside the denoiser (Ctrl-C in a cell) stops generate and reaches the caller."""
    calls = {"n": 0}
    sampler = Sampler("ddim", 5)
    denoiser = sampler.denoiser(preset)

    def interrupted(x, t, y=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return denoiser(x, t, y=y)

    with pytest.raises(KeyboardInterrupt):
        generate(preset, torch.randn(2, 3, 32, 32), "fish", sampler, model=interrupted)
    assert calls["n"] == 3   # stopped at the interrupted step, not carried on
