import dataclasses
import json
import math

import pytest
import torch

from saliency_lib.diffusion import DiffusionConfig
from saliency_lib.errors import SaliencyNoiseError
from saliency_lib.train import (
    ClassifierTrainConfig,
    DDPMTrainConfig,
    NoisyClassifierTrainConfig,
    job_config,
    main,
    train_classifier,
    train_ddpm,
)
from saliency_lib.training import export_weights, lr_at
from saliency_lib.unet import UNetConfig, load_unet
from saliency_lib.weights import load_tensors

TINY = UNetConfig(image_size=16, model_channels=32, out_channels=3, num_res_blocks=1, attention_resolutions=(8,),
                  channel_mult=(1, 2), num_classes=8, num_head_channels=32)


def test_ddpm_resume_can_extend_the_plan(tmp_path):
    cfg = DDPMTrainConfig(steps=6, batch_size=4, warmup=2, image_size=16, lr=1e-3)
    train_ddpm(tmp_path / "a", cfg, unet_cfg=TINY, progress=False)
    train_ddpm(tmp_path / "b", DDPMTrainConfig(**{**cfg.__dict__, "steps": 3}), unet_cfg=TINY, progress=False)
    # resume the 3-step run and extend it to 6 steps (the LR schedule then follows the new plan)
    r = train_ddpm(tmp_path / "b", cfg, unet_cfg=TINY, resume=True, progress=False)
    assert r["step"] == 6
    ta, ma = load_tensors(tmp_path / "a" / "last.safetensors")
    tb, mb = load_tensors(tmp_path / "b" / "last.safetensors")
    assert ma["step"] == mb["step"] == "6"
    assert set(ta) == set(tb)
    assert any(k.startswith("ema.") for k in ta) and any(k.startswith("opt.") for k in ta)


def test_ddpm_resume_is_exact(tmp_path):
    cfg = DDPMTrainConfig(steps=4, batch_size=4, warmup=1, image_size=16, lr=1e-3)
    train_ddpm(tmp_path / "a", cfg, unet_cfg=TINY, progress=False)
    # same plan, stopped after ~0 minutes at step 1..: emulate with max_minutes=0 (stops after one step)
    train_ddpm(tmp_path / "b", cfg, unet_cfg=TINY, max_minutes=0.0, progress=False)
    tb, mb = load_tensors(tmp_path / "b" / "last.safetensors")
    assert mb["step"] == "1"
    train_ddpm(tmp_path / "b", cfg, unet_cfg=TINY, resume=True, progress=False)
    ta, _ = load_tensors(tmp_path / "a" / "last.safetensors")
    tb, _ = load_tensors(tmp_path / "b" / "last.safetensors")
    for k in ta:
        torch.testing.assert_close(ta[k], tb[k], atol=1e-6, rtol=1e-5, msg=k)
    out = tmp_path / "ema.safetensors"
    export_weights(tmp_path / "a" / "last.safetensors", out)
    model = load_unet(str(out))
    assert model.config == TINY
    _, meta = load_tensors(out)
    assert meta["weights"] == "ema" and "diffusion_config" in meta


def test_training_lowers_the_loss(tmp_path):
    r = train_classifier("segmenter", tmp_path / "seg",
                         ClassifierTrainConfig(steps=25, batch_size=8, warmup=5, lr=3e-3, image_size=16), progress=False)
    hist = r["loss_curve"]
    assert r["step"] == 25 and hist[-1] < hist[0]
    assert (tmp_path / "seg" / "model.safetensors").exists()


def test_lr_schedule():
    cfg = DDPMTrainConfig(steps=100, warmup=10, lr=1.0)
    assert lr_at(0, cfg) == 0.1 and lr_at(9, cfg) == 1.0
    assert abs(lr_at(99, cfg) - 0.1) < 1e-3


def test_prefetch_workers_give_the_same_steps_as_inline():
    import functools

    from saliency_lib.train import ddpm_step_inputs
    from saliency_lib.training import _step_inputs
    cfg = DDPMTrainConfig(batch_size=3, image_size=16)
    fn = functools.partial(ddpm_step_inputs, cfg=cfg, num_timesteps=1000)
    inline = list(_step_inputs(fn, 5, 8, workers=0))
    ahead = list(_step_inputs(fn, 5, 8, workers=2))
    assert len(inline) == len(ahead) == 3
    for a, b in zip(inline, ahead):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fit_minutes_plans_the_run_and_is_recorded(tmp_path):
    import json

    import pytest
    cfg = DDPMTrainConfig(steps=1000, batch_size=2, warmup=4, image_size=16, lr=1e-3)
    r = train_ddpm(tmp_path / "a", cfg, unet_cfg=TINY, fit_minutes=0.0, progress=False)
    # no time left after the timed warm-up half: the plan shrinks to the smallest allowed, warm-up + 1 steps
    assert r["config"].steps == 5 and r["step"] == 5
    _, meta = load_tensors(tmp_path / "a" / "last.safetensors")
    assert json.loads(meta["train_config"])["steps"] == 5
    with pytest.raises(SaliencyNoiseError, match="fit_minutes"):
        train_ddpm(tmp_path / "a", cfg, unet_cfg=TINY, resume=True, fit_minutes=1.0, progress=False)


def test_min_snr_weighting():
    from saliency_lib.diffusion import GaussianDiffusion
    from saliency_lib.train import ddpm_loss_fn, ddpm_step_inputs
    from saliency_lib.unet import UNet

    d = GaussianDiffusion.from_config(DiffusionConfig(num_steps=1000, schedule="linear"))
    t = torch.tensor([0, 100, 300, 500, 999])
    snr = d.snr(t)
    a = torch.as_tensor(d.alphas_cumprod)[t]
    torch.testing.assert_close(snr, a / (1 - a))
    assert (snr[:-1] > snr[1:]).all()          # less signal as t grows
    w = d.min_snr_weight(t, 5.0)
    torch.testing.assert_close(w, (snr.clamp(max=5.0) / snr).float())
    assert w[0] < 0.01 and w[-1] == 1.0        # low noise down-weighted, high noise untouched
    # the weighted loss is the per-example simple loss times that weight, averaged
    model = UNet(TINY).eval()
    inputs = ddpm_step_inputs(0, DDPMTrainConfig(batch_size=5, image_size=16), 1000)
    inputs["t"] = t
    with torch.no_grad():
        plain = d.training_loss(model, inputs["x0"], t, y=inputs["y"], noise=inputs["noise"])
        weighted = ddpm_loss_fn(d, 5.0)(model, inputs)
        unweighted = ddpm_loss_fn(d)(model, inputs)
    torch.testing.assert_close(weighted, (plain * w).mean())
    torch.testing.assert_close(unweighted, plain.mean())


def test_resume_rejects_a_changed_loss_weighting(tmp_path):
    import pytest

    cfg = DDPMTrainConfig(steps=2, batch_size=2, warmup=1, image_size=16, lr=1e-3)
    train_ddpm(tmp_path / "a", cfg, unet_cfg=TINY, max_minutes=0.0, progress=False)
    with pytest.raises(SaliencyNoiseError, match="min_snr_gamma"):
        train_ddpm(tmp_path / "a", DDPMTrainConfig(**{**cfg.__dict__, "min_snr_gamma": 5.0}), unet_cfg=TINY, resume=True,
                   progress=False)


def test_v_prediction_training_runs_and_resume_keeps_the_diffusion(tmp_path):
    import json

    import pytest

    from saliency_lib.weights import read_metadata

    cfg = DDPMTrainConfig(steps=2, batch_size=2, warmup=1, image_size=16, lr=1e-3)
    v = DiffusionConfig(num_steps=1000, prediction="v")
    r = train_ddpm(tmp_path / "a", cfg, unet_cfg=TINY, diff_cfg=v, max_minutes=0.0, progress=False)
    assert r["step"] == 1
    assert json.loads(read_metadata(tmp_path / "a" / "last.safetensors")["diffusion_config"])["prediction"] == "v"
    with pytest.raises(SaliencyNoiseError, match="prediction='v'"):
        train_ddpm(tmp_path / "a", cfg, unet_cfg=TINY, resume=True, progress=False)   # default: epsilon
    assert train_ddpm(tmp_path / "a", cfg, unet_cfg=TINY, diff_cfg=v, resume=True, progress=False)["step"] == 2


def test_rendering_on_the_training_device_gives_the_same_run(tmp_path):
    import functools

    from saliency_lib.train import SHAPE_PREFIX, ddpm_step_inputs, step_images
    cfg = DDPMTrainConfig(steps=3, batch_size=4, warmup=1, image_size=16, lr=1e-3, label_dropout=0.2)
    rendered = ddpm_step_inputs(7, cfg, 1000)
    drawn = ddpm_step_inputs(7, cfg, 1000, render=False)
    # the workers hand over parameters (a few numbers per sample), not images; the same labels, t and noise
    assert "x0" not in drawn and any(k.startswith(SHAPE_PREFIX) for k in drawn)
    for k in ("y", "t", "noise"):
        assert torch.equal(rendered[k], drawn[k])
    assert torch.equal(step_images(drawn), rendered["x0"]) and step_images(rendered) is rendered["x0"]
    # a whole run (here on the CPU, the device of the test machine) ends with identical weights
    null = UNetConfig(**{**TINY.__dict__, "null_class": True})
    train = functools.partial(train_ddpm, cfg=cfg, unet_cfg=null, progress=False)
    train(tmp_path / "a")
    train(tmp_path / "b", render_on_device=True)
    ta, _ = load_tensors(tmp_path / "a" / "last.safetensors")
    tb, _ = load_tensors(tmp_path / "b" / "last.safetensors")
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_timestep_range_draws_only_those_timesteps_and_leaves_the_default_draws_unchanged(tmp_path):
    import pytest

    from saliency_lib.train import ddpm_step_inputs

    base = DDPMTrainConfig(batch_size=256, image_size=16, seed=3)
    full = ddpm_step_inputs(2, base, 1000)
    explicit = ddpm_step_inputs(2, DDPMTrainConfig(**{**base.__dict__, "t_max": 1000}), 1000)
    torch.testing.assert_close(full["t"], explicit["t"])     # t_max 0 means T: the same draws as before
    low = ddpm_step_inputs(2, DDPMTrainConfig(**{**base.__dict__, "t_min": 100, "t_max": 150}), 1000)
    assert low["t"].min() >= 100 and low["t"].max() < 150 and len(low["t"].unique()) > 25
    torch.testing.assert_close(low["x0"], full["x0"])        # only the timesteps change
    for bad in ({"t_min": 500, "t_max": 500}, {"t_max": 1001}, {"t_min": -1}):
        with pytest.raises(SaliencyNoiseError, match="t_min"):
            train_ddpm(tmp_path / "x", DDPMTrainConfig(**{**base.__dict__, "steps": 1, **bad}), unet_cfg=TINY,
                       progress=False)


def test_bf16_autocast_trains_is_recorded_and_cannot_change_on_resume(tmp_path):
    import json

    import pytest

    cfg = DDPMTrainConfig(steps=2, batch_size=4, warmup=1, image_size=16, lr=1e-3)
    bf16 = DDPMTrainConfig(**{**cfg.__dict__, "autocast": "bf16"})
    train_ddpm(tmp_path / "fp32", cfg, unet_cfg=TINY, progress=False)
    r = train_ddpm(tmp_path / "bf16", bf16, unet_cfg=TINY, progress=False)
    assert r["step"] == 2 and all(math.isfinite(v) for v in r["loss_curve"])
    ta, _ = load_tensors(tmp_path / "fp32" / "last.safetensors")
    tb, mb = load_tensors(tmp_path / "bf16" / "last.safetensors")
    assert json.loads(mb["train_config"])["autocast"] == "bf16"
    # weights stay float32 and the two runs differ only by rounding (same data, init and draws)
    assert all(tb[k].dtype == ta[k].dtype for k in ta)
    moved = [k for k in ta if k.startswith("model.") and ta[k].is_floating_point() and not torch.equal(ta[k], tb[k])]
    assert moved, "bf16 autocast changed nothing: it was not applied"
    for k in moved:
        torch.testing.assert_close(tb[k], ta[k], atol=2e-2, rtol=0, msg=k)
    with pytest.raises(SaliencyNoiseError, match="autocast"):
        train_ddpm(tmp_path / "bf16", cfg, unet_cfg=TINY, resume=True, progress=False)
    with pytest.raises(SaliencyNoiseError, match="autocast must be one of"):
        train_ddpm(tmp_path / "x", DDPMTrainConfig(**{**cfg.__dict__, "autocast": "fp8"}), unet_cfg=TINY, progress=False)


def test_compiled_training_forward_trains_the_model_itself(tmp_path, monkeypatch):
    # torch.compile's plumbing, with Dynamo's "eager" backend (the default backend, inductor, compiles for
    # minutes on this CPU): the compiled view must update the model's own parameters, and checkpoints keep the
    # uncompiled names (no "_orig_mod." prefixes)
    compiled = []
    real_compile = torch.compile

    def eager_compile(model, **kwargs):
        compiled.append(model)
        return real_compile(model, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", eager_compile)
    cfg = DDPMTrainConfig(steps=2, batch_size=4, warmup=1, image_size=16, lr=1e-3)
    try:
        train_ddpm(tmp_path / "eager", cfg, unet_cfg=TINY, progress=False)
        train_ddpm(tmp_path / "compiled", cfg, unet_cfg=TINY, progress=False, compile_model=True)
    finally:
        torch._dynamo.reset()
    assert len(compiled) == 1
    ta, _ = load_tensors(tmp_path / "eager" / "last.safetensors")
    tb, _ = load_tensors(tmp_path / "compiled" / "last.safetensors")
    assert ta.keys() == tb.keys()
    # the eager run moved the weights from their seeded init, and the compiled run ends where it does: had the
    # compiled view trained a copy, the checkpoint would still hold the init
    from saliency_lib.unet import UNet
    torch.manual_seed(cfg.seed)
    init = UNet(TINY).state_dict()
    moved = [k for k, v in init.items() if v.is_floating_point() and not torch.equal(ta["model." + k], v)]
    assert moved   # (after 2 steps only some: the UNet's zero-initialised output layers block most gradients)
    for k in ta:
        torch.testing.assert_close(tb[k], ta[k], atol=1e-5, rtol=1e-4, msg=k)



def test_each_job_has_its_own_config_and_refuses_what_it_does_not_have(tmp_path, capsys):
    """One config per job (the loop's fields and the job's own): an option of another job is an error, not ignored;
    bad values are refused when the config is made; a checkpoint's stored config reads back as the job's type."""
    with pytest.raises(SaliencyNoiseError, match="--label-dropout.*not options of this job"):
        job_config("classifier", {"label_dropout": 0.1})
    with pytest.raises(SaliencyNoiseError, match="--label-smoothing"):
        job_config("ddpm", {"label_smoothing": 0.1})
    assert job_config("noisy-classifier", {"t_max": 300}) == NoisyClassifierTrainConfig(t_max=300)
    with pytest.raises(SystemExit) as exit_info:
        main(["segmenter", "--out", str(tmp_path / "s"), "--t-min", "5"])
    assert exit_info.value.code == 2 and "--t-min" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    for bad in ({"steps": -5}, {"batch_size": 0}, {"lr": 0.0}, {"ema_decay": 1.0}, {"label_dropout": 1.0}):
        with pytest.raises(SaliencyNoiseError):
            DDPMTrainConfig(**bad)
    cfg = ClassifierTrainConfig(steps=3, label_smoothing=0.3)
    assert ClassifierTrainConfig.from_json(json.dumps(dataclasses.asdict(cfg))) == cfg
    # the job defaults of the shipped models' recipes
    assert (DDPMTrainConfig().ema_decay, NoisyClassifierTrainConfig().ema_decay, ClassifierTrainConfig().lr) == \
        (0.999, 0.0, 2e-3)
