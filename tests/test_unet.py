import json
from pathlib import Path

import pytest
import torch

from saliency_lib.errors import SaliencyNoiseError, WeightsError
from saliency_lib.unet import (
    UNet,
    UNetConfig,
    config_from_guided_diffusion_flags,
    load_unet,
    save_unet,
)

FIXTURES = Path(__file__).parent / "fixtures"


def test_adm128_keys_and_shapes_equal_official_manifest():
    manifest = json.loads((FIXTURES / "adm128_cond_manifest.json").read_text())
    with torch.device("meta"):
        model = UNet.from_guided_diffusion_flags(manifest["flags"])
    ours = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert ours == manifest["state_dict"]
    assert model.num_parameters == manifest["num_parameters"] == 421_529_606


def test_small_model_reproduces_official_output(small_unet, reference):
    with torch.no_grad():
        out = small_unet(reference["x"], reference["t"], y=reference["y"])
    assert out.shape == (2, 6, 32, 32)
    torch.testing.assert_close(out, reference["out"], atol=1e-5, rtol=1e-4)
    assert small_unet.num_parameters == 1_281_510


@pytest.mark.parametrize("flags", [
    dict(image_size=64, num_channels=64, num_res_blocks=3, attention_resolutions="32,16,8", num_head_channels=32,
         class_cond=True, learn_sigma=True, resblock_updown=True, use_new_attention_order=True),
    dict(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2,2,2", attention_resolutions="8",
         num_heads=2, num_heads_upsample=1, class_cond=False, use_scale_shift_norm=False, resblock_updown=False),
    dict(image_size=64, num_channels=64, num_res_blocks=1, channel_mult="1,2", attention_resolutions="32",
         class_cond=True, learn_sigma=False, dropout=0.1),
])
def test_other_flag_combinations_build_and_run(flags):
    model = UNet.from_guided_diffusion_flags(flags, num_classes=10).eval()
    s = flags["image_size"]
    x = torch.randn(2, 3, s, s)
    y = torch.tensor([1, 2]) if flags.get("class_cond") else None
    out = model(x, torch.tensor([3, 900]), y=y)
    assert out.shape == (2, 6 if flags.get("learn_sigma") else 3, s, s)


def test_unknown_flag_and_bad_config_rejected():
    with pytest.raises(SaliencyNoiseError, match="unknown guided-diffusion flags"):
        config_from_guided_diffusion_flags({"image_size": 64, "num_chanels": 3})
    with pytest.raises(SaliencyNoiseError, match="channel_mult"):
        config_from_guided_diffusion_flags({"image_size": 48})
    with pytest.raises(SaliencyNoiseError, match="attention_resolutions"):
        UNetConfig(image_size=32, attention_resolutions=(7,))


def test_class_labels_required_exactly_when_conditional(small_unet):
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(SaliencyNoiseError, match="class-conditional"):
        small_unet(x, torch.tensor([1]))


def test_save_load_roundtrip_config_in_metadata(tmp_path, small_unet):
    path = tmp_path / "m.safetensors"
    save_unet(small_unet, str(path))
    loaded = load_unet(str(path))
    assert loaded.config == small_unet.config
    for (k, a), (_, b) in zip(small_unet.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


def test_mismatched_config_and_keys_are_reported(tmp_path, small_unet):
    path = tmp_path / "m.safetensors"
    save_unet(small_unet, str(path))
    other = UNetConfig(**{**small_unet.config.__dict__, "model_channels": 64})
    with pytest.raises(WeightsError, match="does not match the one stored"):
        load_unet(str(path), config=other)
    from saliency_lib.weights import check_state_dict

    state = dict(small_unet.state_dict())
    state.pop("label_emb.weight")
    state["extra.weight"] = torch.zeros(1)
    state["out.2.bias"] = torch.zeros(5)
    with pytest.raises(WeightsError) as e:
        check_state_dict(small_unet, state, "test")
    msg = str(e.value)
    assert "label_emb.weight" in msg and "extra.weight" in msg and "out.2.bias" in msg


def test_corrupt_and_truncated_files(tmp_path, small_unet):
    path = tmp_path / "m.safetensors"
    save_unet(small_unet, str(path))
    data = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        load_unet(str(tmp_path / "trunc.safetensors"))
    (tmp_path / "junk.pt").write_bytes(b"not a zip file at all")
    with pytest.raises(WeightsError, match="could not read checkpoint"):
        load_unet(str(tmp_path / "junk.pt"), config=small_unet.config)


def test_pt_checkpoint_loads_without_unpickling_code(tmp_path, small_unet):
    path = tmp_path / "official.pt"
    torch.save(small_unet.state_dict(), path)
    loaded = load_unet(str(path), config=small_unet.config)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, torch.tensor([5]), y=torch.tensor([1])),
                                   small_unet(x, torch.tensor([5]), y=torch.tensor([1])))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    torch.save({"w": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError):
        load_unet(str(tmp_path / "evil.pt"), config=small_unet.config)


EXPERT_CFG = UNetConfig(image_size=16, model_channels=32, out_channels=3, num_res_blocks=1, attention_resolutions=(8,),
                        channel_mult=(1, 2), num_classes=4, num_head_channels=32, null_class=True)


def distinct_unets(*scales: float) -> list[UNet]:
    """Small UNets (``EXPERT_CFG``) in eval mode whose outputs differ: ADM zero-initialises the output layer, so every
    parameter gets ``scale`` times a seeded Gaussian perturbation, one scale per UNet."""
    torch.manual_seed(0)
    unets = [UNet(EXPERT_CFG).eval() for _ in scales]
    with torch.no_grad():
        for m, scale in zip(unets, scales):
            for q in m.parameters():
                q.add_(scale * torch.randn(q.shape, generator=torch.Generator().manual_seed(q.numel())))
    return unets


def test_timestep_experts_route_each_sample_to_its_expert():
    from saliency_lib.unet import TimestepExperts

    cfg = EXPERT_CFG
    high, low = distinct_unets(0.02, -0.03)
    experts = TimestepExperts(high, low, below_t=300)
    x = torch.randn(5, 3, 16, 16)
    t, y = torch.tensor([0, 299, 300, 999, 150]), torch.tensor([0, 1, 2, 4, 3])
    x_before = x.clone()
    with torch.no_grad():
        out, from_high, from_low = experts(x, t, y), high(x, t, y=y), low(x, t, y=y)
    is_low = t < 300
    torch.testing.assert_close(out[is_low], from_low[is_low])
    torch.testing.assert_close(out[~is_low], from_high[~is_low])
    assert not torch.allclose(from_low, from_high)        # the check above can tell the experts apart
    assert torch.equal(x, x_before) and experts.config is high.config
    with torch.no_grad():                                 # a batch of one noise level calls one expert only
        torch.testing.assert_close(experts(x, torch.full((5,), 10), y), low(x, torch.full((5,), 10), y=y))
    other = UNet(UNetConfig(**{**cfg.__dict__, "num_classes": 3}))
    with pytest.raises(SaliencyNoiseError, match="num_classes"):
        TimestepExperts(high, other, below_t=300)
    with pytest.raises(SaliencyNoiseError, match="below_t"):
        TimestepExperts(high, low, below_t=0)
    assert experts.bands() == [(high, 300, 1000), (low, 0, 300)]
    chain = TimestepExperts(experts, high, below_t=100)   # a third band below 100 (here the high UNet again)
    assert chain.bands(500) == [(high, 300, 500), (low, 100, 300), (high, 0, 100)]


# ----------------------------------------------------------------------------- the classifier (EncoderUNet)
def test_adm128_classifier_keys_and_shapes_equal_official_manifest():
    from saliency_lib.unet_encoder import (
        EncoderUNet,
        classifier_config_from_guided_diffusion_flags,
    )

    manifest = json.loads((FIXTURES / "adm128_classifier_manifest.json").read_text())
    with torch.device("meta"):
        model = EncoderUNet(classifier_config_from_guided_diffusion_flags(manifest["flags"]))
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == manifest["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"] == 42_568_040
    from saliency_lib.presets import (
        ADM128_CLASSIFIER_CONFIG,  # what imagenet128 loads is this official model
    )
    assert ADM128_CLASSIFIER_CONFIG == model.config
    with pytest.raises(SaliencyNoiseError, match="unknown guided-diffusion classifier flags"):
        classifier_config_from_guided_diffusion_flags({**manifest["flags"], "num_channels": 3})
    with pytest.raises(SaliencyNoiseError, match="image sizes"):
        classifier_config_from_guided_diffusion_flags({**manifest["flags"], "image_size": 96})


@pytest.mark.parametrize("pool", ["attention", "adaptive"])
def test_small_classifier_reproduces_official_output(pool):
    """Official EncoderUNetModel weights (random, both pools) load strictly and give the official logits."""
    from safetensors.torch import load_file

    from saliency_lib.unet_encoder import EncoderUNet, EncoderUNetConfig
    from saliency_lib.weights import load_module_weights

    flags = json.loads((FIXTURES / "adm_classifier_small_flags.json").read_text())
    size = flags["image_size"]
    cfg = EncoderUNetConfig(image_size=size, in_channels=flags["in_channels"], model_channels=flags["model_channels"],
                            out_channels=flags["out_channels"], num_res_blocks=flags["num_res_blocks"],
                            attention_resolutions=tuple(size // ds for ds in flags["attention_resolutions"]),
                            channel_mult=tuple(flags["channel_mult"]), num_heads=1,
                            num_head_channels=flags["num_head_channels"],
                            use_scale_shift_norm=flags["use_scale_shift_norm"], resblock_updown=flags["resblock_updown"],
                            pool=pool)
    model = EncoderUNet(cfg)
    load_module_weights(model, load_file(str(FIXTURES / f"adm_classifier_small_{pool}_random.safetensors")), pool)
    ref = load_file(str(FIXTURES / "adm_classifier_small_reference.safetensors"))
    with torch.no_grad():
        logits = model.eval()(ref["x"], ref["t"])
    torch.testing.assert_close(logits, ref[f"logits_{pool}"], atol=1e-5, rtol=1e-4)

