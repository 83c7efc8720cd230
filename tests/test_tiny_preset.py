"""The shipped tiny preset: loads offline, runs the whole pipeline, and the quality script runs."""

import dataclasses
import json
import socket

import pytest
import torch

from saliency_lib import data
from saliency_lib.noise import mix_with_gaussian
from saliency_lib.pipeline import Sampler, craft_noise, generate, guide_batch
from saliency_lib.presets import TINY_DIR, load_preset
from saliency_lib.quality import QualityArgs, quality


@pytest.fixture(scope="module")
def preset():
    return load_preset("tiny")


def test_loads_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the tiny preset must not touch the network")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    p = load_preset("tiny")
    assert p.image_size == 32 and p.class_names == list(data.CLASS_NAMES)
    assert p.unet.config.num_classes == data.NUM_CLASSES
    total = sum(f.stat().st_size for f in TINY_DIR.glob("*.safetensors"))
    assert total <= 30e6
    manifest = json.loads((TINY_DIR / "preset.json").read_text())
    assert manifest["ddpm"] == "ddpm.safetensors"
    assert p.guidance_weight == manifest.get("guidance_weight", 0.0)
    assert p.classifier_scale == manifest.get("classifier_scale", 0.0)
    assert (p.noisy_classifier is not None) == ("noisy_classifier" in manifest)


def test_shipped_noisy_classifier_reads_the_noise_level_and_guides(preset):
    """The classifier-guidance classifier (optional part of the preset): accurate on clean images, at chance on
    pure noise, and guiding with it changes the samples."""
    from saliency_lib.quality import noisy_classifier_accuracy

    assert preset.noisy_classifier is not None, "the tiny preset ships noisy_classifier.safetensors (preset.json)"
    acc = noisy_classifier_accuracy(preset, data.make_batch("test", 0, 256), timesteps=(0, 999))
    assert acc["0"] >= 0.9 and acc["999"] <= 0.3
    x_T = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    plain = generate(preset, x_T, "fish", Sampler("ddim", 4, classifier_scale=0.0))
    guided = generate(preset, x_T, "fish", Sampler("ddim", 4, classifier_scale=5.0))
    assert not torch.equal(plain, guided) and guided.min() >= -1 and guided.max() <= 1


def test_default_sampling_uses_the_presets_guidance(preset):
    from saliency_lib.guidance import CFGModel, ClassifierGuidedModel

    model = preset.denoiser()
    if preset.classifier_scale:  # classifier guidance wraps classifier-free guidance (or the bare UNet)
        assert isinstance(model, ClassifierGuidedModel) and model.scale == preset.classifier_scale
        assert model.classifier is preset.noisy_classifier
        model = model.model
    if preset.guidance_weight:
        assert preset.unet.config.null_class and isinstance(model, CFGModel)
        assert model.weight == preset.guidance_weight and model.unet is preset.unet
    else:
        assert model is preset.unet
    if not (preset.guidance_weight or preset.classifier_scale):
        return
    x_T = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    default = generate(preset, x_T, "fish", Sampler("ddim", 4))
    explicit = generate(preset, x_T, "fish", Sampler("ddim", 4, guidance=preset.guidance_weight,
                                                     classifier_scale=preset.classifier_scale))
    unguided = generate(preset, x_T, "fish", Sampler("ddim", 4, guidance=0.0, classifier_scale=0.0))
    assert torch.equal(default, explicit) and not torch.equal(default, unguided)


def test_pipeline_end_to_end(preset, tmp_path):
    guides = guide_batch(2)
    noise = craft_noise(preset, guides.images, guides.labels, steps=(0, 5), seed=0, cache_dir=tmp_path)
    assert noise[5].shape == (2, 3, 32, 32)
    assert torch.allclose(noise[5].std(dim=(1, 2, 3)), torch.ones(2), atol=1e-4)
    x_T = mix_with_gaussian(noise[5], 0.3, torch.Generator().manual_seed(1))
    a = generate(preset, x_T, "fish", Sampler("ddim", 5), seed=0)
    b = generate(preset, x_T, "fish", Sampler("ddim", 5), seed=1)
    c = generate(preset, x_T, "key", Sampler("ddim", 5), seed=0)
    assert a.shape == (2, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b)  # DDIM eta=0 ignores the sampler seed
    assert not torch.equal(a, c)
    with pytest.raises(Exception, match="unknown class"):
        generate(preset, x_T, "dragon")
    with pytest.raises(Exception, match="32x32"):
        generate(preset, torch.randn(1, 3, 16, 16), 0)


def test_quality_script_runs_on_a_small_subset(preset, tmp_path):
    res = quality(preset, QualityArgs(n_test=64, n_samples=8, n_guides=2, ig_steps=3, ddpm_steps=4),
                  cache_dir=tmp_path, log=lambda s: None)
    for key in ("judge_accuracy", "segmenter_miou", "ig_classifier_accuracy", "ig_classifier_confidence"):
        assert 0 <= res[key] <= 1
    assert res["guidance_weight"] == preset.guidance_weight
    if preset.noisy_classifier is not None:
        by_t = res["noisy_classifier_accuracy_by_t"]
        assert set(by_t) == {"0", "100", "200", "300", "400", "500", "600", "700", "800", "999"}
        assert all(0 <= v <= 1 for v in by_t.values())
    off = ", s_cls=0" if preset.classifier_scale else ""
    if preset.guidance_weight:   # the unguided reference row is reported next to the guided ones
        assert 0 <= res[f"gaussian_class_accuracy_DDIM-50, w=0{off}"] <= 1
    if preset.classifier_scale:  # and the row with classifier-free guidance only
        assert 0 <= res["gaussian_class_accuracy_DDIM-50, s_cls=0"] <= 1
    assert {"gaussian_class_accuracy_DDIM-50", "gaussian_class_accuracy_DDPM-4"} <= set(res)
    assert 0 <= res["layout_iou_gaussian"]["mean"] <= 1
    lo, hi = res["layout_iou_gaussian"]["ci95"]
    assert lo <= res["layout_iou_gaussian"]["mean"] <= hi


def test_generate_samples_a_given_denoiser_with_the_samplers_process(preset):
    """``generate(..., model=...)`` (a user's own guidance wrapper): the sampler's own denoiser passed explicitly gives
    the default's images, and another model goes through the same respaced process and seeds."""
    from saliency_lib.guidance import ClassifierGuidedModel
    from saliency_lib.quality import generate_batched
    from saliency_lib.realism import image_stats

    sampler = Sampler("ddim", 3, guidance=0.0, classifier_scale=0.0)
    x_T = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([0, 1, 2])
    default = generate(preset, x_T, y, sampler)
    assert torch.equal(generate(preset, x_T, y, sampler, model=sampler.denoiser(preset)), default)
    guided = ClassifierGuidedModel(sampler.denoiser(preset), preset.noisy_classifier, 3.0,
                                   preset.diffusion().alphas_cumprod)
    images, _ = generate_batched(preset, x_T, y, sampler, seed=0, batch=2, model=guided)
    with torch.no_grad():
        direct = torch.cat([preset.diffusion("ddim3").sample(guided, xb, yb, method="ddim")
                            for xb, yb in zip(x_T.split(2), y.split(2))])
    torch.testing.assert_close(images, direct)
    assert not torch.allclose(images, default)
    stats = image_stats(torch.tensor([[[[1.0, -0.5]]] * 3]), saturated=0.95)   # [1, 3, 1, 2]
    assert stats == {"mean_abs": 0.75, "saturated_fraction": 0.5, "mean_colour_abs": 0.25}


def test_unet_bands_cover_every_timestep_once(preset):
    """The shipped DDPM is a chain of three UNets: base for t >= 500, experts for [100, 500) and [0, 100)."""
    bands = preset.unet_bands()
    assert [(lo, hi) for _, lo, hi in bands] == [(500, 1000), (100, 500), (0, 100)]
    assert len({id(u) for u, _, _ in bands}) == 3
    single = dataclasses.replace(preset, unet=bands[0][0])
    assert [(lo, hi) for _, lo, hi in single.unet_bands()] == [(0, 1000)]


PLAIN = dict(guidance=0.0, classifier_scale=0.0)


@pytest.mark.parametrize("sampler, atol", [
    (Sampler("ddpm", 6, **PLAIN), 1e-4), (Sampler("ddim", 6, eta=1.0, **PLAIN), 1e-4), (Sampler("ddim", 6), 1e-2),
    (Sampler("ddpm", 6), 1e-2)], ids=["ddpm", "ddim-eta1", "ddim-eta0-guided", "ddpm-guided"])
def test_an_image_is_the_same_alone_and_in_a_batch(preset, sampler, atol):
    """Each image has its own noise stream (seed, index): image j drawn alone (``first_index=j``) equals image j of
    the batch, and of the batch drawn in other splits (generate_batched), for every sampler. What remains is float32
    rounding of kernels that block the batch differently: about 4e-6 unguided, up to about 3e-3 with the preset's
    classifier guidance, whose input gradient the DDPM's ancestral noise then carries on (images in [-1, 1]; one
    stream shared by the batch made a difference of up to 1.65)."""
    from saliency_lib.quality import generate_batched

    x_T = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    y = torch.tensor([0, 1, 2, 3])
    batch = generate(preset, x_T, y, sampler, seed=3)
    for j in (0, 2):
        alone = generate(preset, x_T[j:j + 1], y[j:j + 1], sampler, seed=3, first_index=j)
        torch.testing.assert_close(alone[0], batch[j], atol=atol, rtol=0)
    split, _ = generate_batched(preset, x_T, y, sampler, seed=3, batch=3)
    torch.testing.assert_close(split, batch, atol=atol, rtol=0)
    if sampler.method == "ddpm" or sampler.eta > 0:   # the streams depend on the seed and on the index
        other = generate(preset, x_T, y, sampler, seed=4)
        assert (other - batch).abs().max() > 0.1
        assert (generate(preset, x_T[:1], y[:1], sampler, seed=3, first_index=1)[0] - batch[0]).abs().max() > 0.1


def test_baselines_draw_per_image_streams(preset):
    from saliency_lib.baselines import ilvr, sdedit

    guides = guide_batch(3).images
    sampler = Sampler("ddpm", 5, **PLAIN)
    batch = sdedit(preset, guides, [0, 1, 2], 0.6, sampler, seed=1)
    alone = sdedit(preset, guides[2:], [2], 0.6, sampler, seed=1, first_index=2)
    torch.testing.assert_close(alone[0], batch[2], atol=1e-4, rtol=0)
    batch = ilvr(preset, guides, [0, 1, 2], 4, sampler=sampler, seed=1)
    alone = ilvr(preset, guides[1:2], [1], 4, sampler=sampler, seed=1, first_index=1)
    torch.testing.assert_close(alone[0], batch[1], atol=1e-4, rtol=0)
