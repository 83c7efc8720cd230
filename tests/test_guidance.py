import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from saliency_lib.errors import SaliencyNoiseError
from saliency_lib.guidance import CFGModel
from saliency_lib.train import (
    DDPMTrainConfig,
    ddpm_step_inputs,
    init_from_weights,
    train_ddpm,
)
from saliency_lib.unet import UNet, UNetConfig, save_unet

CFG_UNET = UNetConfig(image_size=16, model_channels=32, out_channels=3, num_res_blocks=1, attention_resolutions=(8,),
                      channel_mult=(1, 2), num_classes=4, null_class=True, num_head_channels=32)


def _unet(cfg: UNetConfig = CFG_UNET, seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    model = UNet(cfg).eval()
    for p in model.parameters():   # ADM zero-initialises output layers: randomise so outputs depend on y
        nn.init.normal_(p, std=0.05)
    return model


def test_null_class_config():
    assert _unet().label_emb.weight.shape[0] == 5 and CFG_UNET.null_label == 4
    with pytest.raises(SaliencyNoiseError, match="null class"):
        dataclasses.replace(CFG_UNET, null_class=False).null_label
    with pytest.raises(SaliencyNoiseError, match="class-conditional"):
        dataclasses.replace(CFG_UNET, num_classes=None)


def test_cfg_combines_conditional_and_unconditional_predictions():
    unet = _unet()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    t, y = torch.tensor([3, 400, 999]), torch.tensor([0, 2, 3])
    before = x.clone()
    with torch.no_grad():
        cond, uncond = unet(x, t, y=y), unet(x, t, y=torch.full_like(y, 4))
        assert not torch.allclose(cond, uncond)
        torch.testing.assert_close(CFGModel(unet, 0.0)(x, t, y=y), cond)
        torch.testing.assert_close(CFGModel(unet, 2.5)(x, t, y=y), 3.5 * cond - 2.5 * uncond, atol=1e-5, rtol=1e-4)
    assert torch.equal(x, before)
    with pytest.raises(SaliencyNoiseError, match=">= 0"):
        CFGModel(unet, -1.0)
    with pytest.raises(SaliencyNoiseError, match="null class"):
        CFGModel(_unet(dataclasses.replace(CFG_UNET, null_class=False)), 1.0)
    with pytest.raises(SaliencyNoiseError, match="target classes"):
        CFGModel(unet, 1.0)(x, t)


def test_preset_denoiser_uses_the_preset_weight_unless_told():
    from saliency_lib.diffusion import DiffusionConfig
    from saliency_lib.pipeline import Sampler
    from saliency_lib.presets import Preset

    unet = _unet()
    p = Preset(name="t", unet=unet, diffusion_config=DiffusionConfig(num_steps=10), classifier=nn.Identity(),
               normalization=None, class_names=list("abcd"), image_size=16)
    assert p.denoiser() is unet
    p.guidance_weight = 3.0
    assert isinstance(p.denoiser(), CFGModel) and p.denoiser().weight == 3.0
    assert p.denoiser(0) is unet and p.denoiser(1.5).weight == 1.5
    p.unet = _unet(dataclasses.replace(CFG_UNET, null_class=False))
    with pytest.raises(SaliencyNoiseError, match="no null class"):
        p.denoiser()
    with pytest.raises(SaliencyNoiseError, match="guidance"):
        Sampler("ddim", 10, guidance=-1)
    assert Sampler("ddim", 10, guidance=2).label == "DDIM-10, w=2" and Sampler("ddim", 10).label == "DDIM-10"
    assert Sampler.parse("ddpm:250", guidance=4) == Sampler("ddpm", 250, guidance=4)
    for bad in ("ddim50", "ddim:", "ddim:x"):
        with pytest.raises(SaliencyNoiseError, match="method:steps"):
            Sampler.parse(bad)
    with pytest.raises(SaliencyNoiseError, match="method"):
        Sampler.parse("euler:10")


def test_label_dropout_replaces_labels_and_keeps_the_step_draws():
    plain = ddpm_step_inputs(5, DDPMTrainConfig(batch_size=256, image_size=16), 1000)
    dropped = ddpm_step_inputs(5, DDPMTrainConfig(batch_size=256, image_size=16, label_dropout=0.25), 1000)
    assert torch.equal(plain["t"], dropped["t"]) and torch.equal(plain["noise"], dropped["noise"])
    null = dropped["y"] == 8
    assert 0.1 < null.float().mean() < 0.4
    assert torch.equal(dropped["y"][~null], plain["y"][~null])


def test_fine_tune_from_weights_without_null_class(tmp_path: Path):
    old = _unet(dataclasses.replace(CFG_UNET, null_class=False), seed=3)
    save_unet(old, str(tmp_path / "old.safetensors"))
    new = UNet(CFG_UNET)
    init_from_weights(new, tmp_path / "old.safetensors")
    emb = old.label_emb.weight.detach()
    torch.testing.assert_close(new.label_emb.weight[:4], emb)
    torch.testing.assert_close(new.label_emb.weight[4], emb.mean(0))
    cfg = DDPMTrainConfig(steps=2, batch_size=4, warmup=1, image_size=16, label_dropout=0.5)
    with pytest.raises(SaliencyNoiseError, match="null class"):
        train_ddpm(tmp_path / "x", cfg, unet_cfg=dataclasses.replace(CFG_UNET, null_class=False), progress=False)
    unet_cfg = dataclasses.replace(CFG_UNET, num_classes=8)   # the dataset's 8 classes
    old8 = _unet(dataclasses.replace(unet_cfg, null_class=False), seed=4)
    save_unet(old8, str(tmp_path / "old8.safetensors"))
    r = train_ddpm(tmp_path / "ft", cfg, unet_cfg=unet_cfg, init=tmp_path / "old8.safetensors", progress=False)
    assert r["step"] == 2

