"""Robust classifier guidance (Kawar et al. 2022): the L2 PGD attack and adversarial training of the noise-aware
classifier."""

import json

import pytest
import torch
from torch import nn

from saliency_lib.classifiers import NoisyClassifier, NoisyClassifierConfig, load_noisy_classifier, save_model
from saliency_lib.diffusion import DiffusionConfig
from saliency_lib.train import TrainConfig, l2_pgd, train_ddpm, train_noisy_classifier
from saliency_lib.unet import UNetConfig
from saliency_lib.weights import read_metadata


class TwoClassLinear(nn.Module):
    """logits = W flatten(x): for two classes the cross-entropy's input gradient is p_other * (W_other - W_y), so
    the L2 attack's direction is (W_other - W_y) / ||W_other - W_y|| at every step."""

    def __init__(self, d: int):
        super().__init__()
        self.w = nn.Parameter(torch.randn(2, d, generator=torch.Generator().manual_seed(2)))
        self.bn = nn.BatchNorm1d(2)   # only to show the attack runs in eval mode and restores the mode

    def forward(self, x, t):
        return self.bn(x.flatten(1) @ self.w.T)


def test_l2_pgd_moves_along_the_closed_form_direction_within_the_ball():
    model = TwoClassLinear(12).train()   # BatchNorm's running statistics start at mean 0, variance 1
    x = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    x_before = x.clone()
    y = torch.tensor([0, 1, 0, 1])
    t = torch.zeros(4, dtype=torch.long)
    adv = l2_pgd(model, x, t, y, eps=0.7, steps=3)
    assert torch.equal(x, x_before), "the caller's tensor was changed"
    assert model.training and model.bn.training, "the model's mode was not restored"
    assert torch.equal(model.bn.running_mean, torch.zeros(2)), "the attack's forwards updated BatchNorm statistics"
    delta = (adv - x).flatten(1)
    torch.testing.assert_close(delta.norm(dim=1), torch.full((4,), 0.7))   # 3 steps of 2.5 * eps / 3 reach the rim
    w = model.w.detach()
    direction = torch.stack([w[1 - c] - w[c] for c in y.tolist()])
    direction = direction / direction.norm(dim=1, keepdim=True)
    torch.testing.assert_close(delta / 0.7, direction)
    ce = nn.functional.cross_entropy
    model.eval()
    assert ce(model(adv, t), y, reduction="none").gt(ce(model(x, t), y, reduction="none")).all()
    assert torch.equal(adv, l2_pgd(model, x, t, y, eps=0.7, steps=3)), "the attack is not deterministic"
    with pytest.raises(ValueError, match="eps > 0"):
        l2_pgd(model, x, t, y, eps=0.0, steps=3)
    with pytest.raises(ValueError, match="steps >= 1"):
        l2_pgd(model, x, t, y, eps=0.5, steps=0)


def test_adversarial_training_fine_tunes_a_noisy_classifier_and_stores_its_radius(tmp_path):
    torch.manual_seed(0)
    start = NoisyClassifier(NoisyClassifierConfig(width=8, num_timesteps=100))
    save_model(start.eval(), tmp_path / "start.safetensors")
    cfg = TrainConfig(steps=12, batch_size=16, lr=3e-3, warmup=2, ema_decay=0.0, seed=4,
                      adversarial_eps=0.5, adversarial_steps=2)
    diff = DiffusionConfig(num_steps=100)
    r = train_noisy_classifier(tmp_path / "adv", cfg, diff_cfg=diff, progress=False, init=tmp_path / "start.safetensors")
    assert r["step"] == 12
    model = load_noisy_classifier(tmp_path / "adv" / "model.safetensors")
    stored = json.loads(read_metadata(tmp_path / "adv" / "model.safetensors")["train_config"])
    assert stored["adversarial_eps"] == 0.5 and stored["adversarial_steps"] == 2
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, start.state_dict()[k])]
    assert changed, "fine-tuning from a noise-aware classifier changed nothing"
    # the same seed without the attack trains on other inputs, so it ends elsewhere
    plain = train_noisy_classifier(tmp_path / "plain", TrainConfig(**{**cfg.__dict__, "adversarial_eps": 0.0}),
                                   diff_cfg=diff, progress=False, init=tmp_path / "start.safetensors")
    assert plain["history"][0] != r["history"][0]
    # resume refuses a changed radius, and a noise-aware init for another T is refused
    with pytest.raises(ValueError, match="adversarial_eps"):
        train_noisy_classifier(tmp_path / "adv", TrainConfig(**{**cfg.__dict__, "steps": 14, "adversarial_eps": 1.0}),
                               diff_cfg=diff, progress=False, resume=True, init=tmp_path / "start.safetensors")
    with pytest.raises(ValueError, match="T = 100"):
        train_noisy_classifier(tmp_path / "other", cfg, diff_cfg=DiffusionConfig(num_steps=50), progress=False,
                               init=tmp_path / "start.safetensors")


def test_trainers_without_an_attack_refuse_an_adversarial_radius(tmp_path):
    cfg = TrainConfig(steps=1, batch_size=2, adversarial_eps=0.5)
    with pytest.raises(ValueError, match="adversarial_eps is for the noise-aware classifier"):
        train_ddpm(tmp_path / "d", cfg, unet_cfg=UNetConfig(image_size=32, model_channels=8, num_res_blocks=1,
                                                            channel_mult=(1,), attention_resolutions=()),
                   diff_cfg=DiffusionConfig(num_steps=10), progress=False)
    from saliency_lib.classifiers import train_classifier_cli
    with pytest.raises(ValueError, match="the classifier trains on clean inputs"):
        train_classifier_cli("classifier", "resnet", tmp_path / "c", {"adversarial_eps": 0.5, "steps": 1},
                             resume=False, max_minutes=None, progress=False)


def test_interpolate_tensors_between_and_beyond_two_fine_tunes():
    from saliency_lib.errors import WeightsError
    from saliency_lib.weights import interpolate_tensors

    a = {"w": torch.tensor([0.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([1.0, 4.0]), "n": torch.tensor(7)}
    torch.testing.assert_close(interpolate_tensors(a, b, 0.0)["w"], a["w"])
    torch.testing.assert_close(interpolate_tensors(a, b, 1.0)["w"], b["w"])
    torch.testing.assert_close(interpolate_tensors(a, b, 0.25)["w"], torch.tensor([0.25, 2.5]))
    torch.testing.assert_close(interpolate_tensors(a, b, 1.5)["w"], torch.tensor([1.5, 5.0]))   # extrapolates
    assert interpolate_tensors(a, b, 0.5)["n"].item() == 7 and torch.equal(a["w"], torch.tensor([0.0, 2.0]))
    with pytest.raises(WeightsError, match="only in the first"):
        interpolate_tensors({"w": a["w"], "x": a["w"]}, {"w": b["w"]}, 0.5)
    with pytest.raises(WeightsError, match="shape"):
        interpolate_tensors({"w": a["w"]}, {"w": torch.zeros(3)}, 0.5)


def test_classifier_ensemble_is_the_normalised_product_of_its_members():
    from saliency_lib.classifiers import NoisyClassifierEnsemble
    from saliency_lib.errors import SaliencyNoiseError

    torch.manual_seed(0)
    a = NoisyClassifier(NoisyClassifierConfig(width=8)).eval()
    b = NoisyClassifier(NoisyClassifierConfig(width=8)).eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 400, 900])
    with torch.no_grad():
        pa, pb = a(x, t).softmax(-1), b(x, t).softmax(-1)
        product = (pa * pb).sqrt()
        torch.testing.assert_close(NoisyClassifierEnsemble([a, b])(x, t).softmax(-1),
                                   product / product.sum(-1, keepdim=True))
        torch.testing.assert_close(NoisyClassifierEnsemble([a])(x, t).softmax(-1), pa)
    # its guidance gradient is the mean of the members' gradients of log p(y | x_t, t)
    y = torch.tensor([1, 2, 3])

    def grad(model):
        xx = x.clone().requires_grad_(True)
        logp = torch.log_softmax(model(xx, t), -1).gather(1, y.view(-1, 1)).sum()
        return torch.autograd.grad(logp, xx)[0]

    torch.testing.assert_close(grad(NoisyClassifierEnsemble([a, b])), (grad(a) + grad(b)) / 2)
    with pytest.raises(SaliencyNoiseError, match="at least one member"):
        NoisyClassifierEnsemble([])
