"""Classifier guidance (Dhariwal & Nichol 2021): the noise-aware classifier, its training and the guided epsilon."""

import numpy as np
import pytest
import torch
from torch import nn

from saliency_lib.classifiers import (
    ClassifierConfig,
    NoisyClassifier,
    NoisyClassifierConfig,
    SmallResNet,
    load_noisy_classifier,
)
from saliency_lib.diffusion import DiffusionConfig, GaussianDiffusion
from saliency_lib.errors import SaliencyNoiseError
from saliency_lib.guidance import ClassifierGuidedModel
from saliency_lib.train import NoisyClassifierTrainConfig, train_noisy_classifier


class LinearNoisyClassifier(nn.Module):
    """logits = W flatten(x_t) + b_t: grad_x log p(y | x) = W_y - sum_k p_k W_k, in closed form."""

    def __init__(self, k: int, d: int):
        super().__init__()
        self.w = nn.Parameter(torch.randn(k, d, generator=torch.Generator().manual_seed(5)) * 0.1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x_t.flatten(1) @ self.w.T + t.view(-1, 1).float() * 1e-3


class ConstantEps(nn.Module):
    def forward(self, x_t, t, y=None):
        return torch.full_like(x_t, 0.25)


def _linear_case(shape=(3, 3, 4, 4), k=4):
    """A linear network over 3 samples at t = 0, 500, 999, a linear-beta abar_t, and their x_t and classes."""
    net = LinearNoisyClassifier(k, int(np.prod(shape[1:])))
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    return net, abar, x, torch.tensor([0, 500, 999]), torch.tensor([0, 3, 1])


def test_guided_eps_matches_the_closed_form_gradient():
    clf, abar, x, t, y = _linear_case()
    shape = x.shape
    before = x.clone()
    with torch.no_grad():   # samplers call the model without autograd: the wrapper must still take the gradient
        out = ClassifierGuidedModel(ConstantEps(), clf, 2.0, abar)(x, t, y=y)
    assert torch.equal(x, before)
    with torch.no_grad():
        p = torch.softmax(clf(x, t), -1)
        grad = (clf.w[y] - p @ clf.w).view(shape)
        sigma = torch.from_numpy(np.sqrt(1 - abar))[t].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(out, 0.25 - 2.0 * sigma * grad)
    # each sample's shift depends on that sample only
    with torch.no_grad():
        alone = ClassifierGuidedModel(ConstantEps(), clf, 2.0, abar)(x[1:2], t[1:2], y=y[1:2])
    torch.testing.assert_close(alone, out[1:2])
    with torch.no_grad():
        assert torch.equal(ClassifierGuidedModel(ConstantEps(), clf, 0.0, abar)(x, t, y=y), torch.full_like(x, 0.25))


@pytest.mark.parametrize("guided", [ClassifierGuidedModel])
def test_gradient_guidance_refuses_a_negative_scale_and_missing_classes(guided):
    network, abar, x, t, _ = _linear_case()
    with pytest.raises(SaliencyNoiseError, match=">= 0"):
        guided(ConstantEps(), network, -1.0, abar)
    with pytest.raises(SaliencyNoiseError, match="target classes"):
        guided(ConstantEps(), network, 1.0, abar)(x, t)


def test_guidance_raises_the_classifier_probability_along_a_ddim_chain():
    """A step of guided DDIM moves x towards the class the classifier is asked for."""
    k, shape = 4, (8, 3, 4, 4)
    clf = LinearNoisyClassifier(k, int(np.prod(shape[1:])))
    diffusion = GaussianDiffusion.from_config(DiffusionConfig(num_steps=1000), "ddim10")
    abar = GaussianDiffusion.from_config(DiffusionConfig(num_steps=1000)).alphas_cumprod  # the model sees original t
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    y = torch.arange(8) % k
    finals = {}
    for s in (0.0, 4.0):
        model = ClassifierGuidedModel(ConstantEps(), clf, s, abar)
        finals[s] = diffusion.sample(model, x_T, y, method="ddim")
    t0 = torch.zeros(8, dtype=torch.long)
    with torch.no_grad():
        logp = {s: torch.log_softmax(clf(x, t0), -1)[torch.arange(8), y].mean() for s, x in finals.items()}
    assert logp[4.0] > logp[0.0] + 0.1


def test_noisy_classifier_starts_as_the_clean_one_and_checks_inputs():
    torch.manual_seed(0)
    clean = SmallResNet(ClassifierConfig(width=8)).eval()
    noisy = NoisyClassifier(NoisyClassifierConfig(width=8)).eval()
    noisy.init_from_clean(clean)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(noisy(x, torch.zeros(2, dtype=torch.long)), clean(x))
        # the noise-level channel's filter starts at zero: at first the level does not change the output
        torch.testing.assert_close(noisy(x, torch.full((2,), 900)), clean(x))
    with pytest.raises(SaliencyNoiseError, match=r"\[N\]"):
        noisy(x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(SaliencyNoiseError, match=r"\[N, 3, H, W\]"):
        noisy(x[:, :1], torch.zeros(2, dtype=torch.long))
    with pytest.raises(SaliencyNoiseError, match="mean = std = 0.5"):
        noisy.init_from_clean(SmallResNet(ClassifierConfig(width=8, mean=(0.4, 0.4, 0.4))))


def test_noisy_classifier_training_lowers_the_loss_and_resumes(tmp_path):
    torch.manual_seed(0)
    clean = SmallResNet(ClassifierConfig(width=8))
    from saliency_lib.classifiers import save_model
    save_model(clean, tmp_path / "clean.safetensors")
    cfg = NoisyClassifierTrainConfig(steps=30, batch_size=32, lr=3e-3, warmup=2, seed=4, image_size=32)
    diff = DiffusionConfig(num_steps=100)
    r = train_noisy_classifier(tmp_path / "a", cfg, diff_cfg=diff, progress=False)
    assert r["step"] == 30 and np.mean(r["loss_curve"][-1:]) < r["loss_curve"][0]
    model = load_noisy_classifier(tmp_path / "a" / "model.safetensors")
    assert model.config.num_timesteps == 100 and not model.training
    # interrupted after one step, then resumed: the same weights as the uninterrupted run
    train_noisy_classifier(tmp_path / "b", cfg, diff_cfg=diff, progress=False, max_minutes=0.0,
                           init=tmp_path / "clean.safetensors")
    train_noisy_classifier(tmp_path / "c", cfg, diff_cfg=diff, progress=False, init=tmp_path / "clean.safetensors")
    train_noisy_classifier(tmp_path / "b", cfg, diff_cfg=diff, progress=False, resume=True,
                           init=tmp_path / "clean.safetensors")
    b, c = load_noisy_classifier(tmp_path / "b" / "model.safetensors"), load_noisy_classifier(tmp_path / "c" / "model.safetensors")
    for (name, pb), pc in zip(b.state_dict().items(), c.state_dict().values()):
        torch.testing.assert_close(pb, pc, msg=name)
    # images rendered on the training device (here the CPU) from the workers' drawn parameters: the same run
    train_noisy_classifier(tmp_path / "d", cfg, diff_cfg=diff, progress=False, init=tmp_path / "clean.safetensors",
                           device="cpu", render_on_device=True)
    d = load_noisy_classifier(tmp_path / "d" / "model.safetensors")
    for (name, pd), pc in zip(d.state_dict().items(), c.state_dict().values()):
        assert torch.equal(pd, pc), name


def test_preset_denoiser_composes_classifier_free_and_classifier_guidance():
    from saliency_lib.guidance import CFGModel
    from saliency_lib.pipeline import Sampler
    from saliency_lib.presets import Preset
    from saliency_lib.unet import UNet, UNetConfig

    unet = UNet(UNetConfig(image_size=16, model_channels=32, out_channels=3, num_res_blocks=1, channel_mult=(1, 2),
                           attention_resolutions=(8,), num_classes=4, null_class=True, num_head_channels=32)).eval()
    p = Preset(name="t", unet=unet, diffusion_config=DiffusionConfig(num_steps=100), classifier=nn.Identity(),
               normalization=None, class_names=list("abcd"), image_size=16)
    with pytest.raises(SaliencyNoiseError, match="no noise-aware classifier"):
        p.denoiser(classifier_scale=1.0)
    p.noisy_classifier = LinearNoisyClassifier(4, 3 * 16 * 16)
    p.guidance_weight, p.classifier_scale = 2.0, 3.0
    model = p.denoiser()
    assert isinstance(model, ClassifierGuidedModel) and model.scale == 3.0
    assert isinstance(model.model, CFGModel) and model.model.weight == 2.0
    np.testing.assert_allclose(model.sigma.numpy() ** 2, 1 - p.diffusion().alphas_cumprod)
    assert isinstance(p.denoiser(classifier_scale=0), CFGModel) and p.denoiser(0, 0) is unet
    sampler = Sampler("ddim", 10, guidance=0, classifier_scale=1.5)
    assert sampler.denoiser(p).model is unet and sampler.denoiser(p).scale == 1.5
    assert sampler.label == "DDIM-10, w=0, s_cls=1.5"
    assert Sampler.parse("ddim:10", guidance=0, classifier_scale=1.5) == sampler
    off = Sampler("ddim", 10).unguided(p)   # every guidance the preset applies, switched off
    assert off.denoiser(p) is unet and off.label == "DDIM-10, w=0, s_cls=0"
    p.classifier_scale = 0.0                # a preset without classifier guidance: its label does not name it
    assert Sampler("ddpm", 5).unguided(p).label == "DDPM-5, w=0"
    with pytest.raises(SaliencyNoiseError, match="classifier_scale"):
        Sampler("ddim", 10, classifier_scale=-1)


def _small_ddpm_unet(null_class: bool = True):
    from saliency_lib.unet import UNet, UNetConfig

    return UNet(UNetConfig(image_size=16, model_channels=32, out_channels=3, num_res_blocks=1, channel_mult=(1, 2),
                           attention_resolutions=(8,), num_classes=4, null_class=null_class, num_head_channels=32))


def test_load_noisy_classifier_refuses_other_weights(tmp_path):
    from saliency_lib.errors import WeightsError
    from saliency_lib.unet import save_unet

    save_unet(_small_ddpm_unet(), tmp_path / "ddpm.safetensors")
    with pytest.raises(WeightsError, match="not a noise-aware classifier"):
        load_noisy_classifier(tmp_path / "ddpm.safetensors")


def test_encoder_classifier_config_refuses_pools_it_does_not_build():
    """EncoderUNetConfig (guided-diffusion's classifier): the 'spatial' pools are not implemented and the
    attention pool needs a head width."""
    from saliency_lib.unet_encoder import EncoderUNetConfig

    with pytest.raises(SaliencyNoiseError, match="spatial"):
        EncoderUNetConfig(pool="spatial")
    with pytest.raises(SaliencyNoiseError, match="num_head_channels"):
        EncoderUNetConfig(pool="attention")
