"""Discriminator guidance (Kim et al. 2022): the discriminator's batches, training and refusals (the guided epsilon
is tested with classifier guidance's, in test_classifier_guidance.py)."""

import pytest
import torch

from saliency_lib.classifiers import NoisyClassifier, load_noisy_classifier
from saliency_lib.diffusion import DiffusionConfig, GaussianDiffusion
from saliency_lib.train import TrainConfig, discriminator_step_inputs, load_fakes, train_discriminator
from saliency_lib.weights import read_metadata, save_tensors


def _fakes(path, n=40, size=32):
    """Flat mid-grey 'samples': trivially told from the dataset's textured images."""
    save_tensors(path, {"images": torch.zeros(n, 3, size, size), "labels": torch.arange(n) % 8}, {"sampler": "test"})
    return path


def test_discriminator_batches_are_half_real_half_fake_and_seeded(tmp_path):
    fakes, labels = load_fakes(_fakes(tmp_path / "f.safetensors"), 32)
    cfg = TrainConfig(batch_size=10, seed=3)
    b = discriminator_step_inputs(4, cfg, 1000, fakes, labels)
    assert b["x0"].shape == (10, 3, 32, 32) and b["real"].tolist() == [1.0] * 5 + [0.0] * 5
    assert torch.equal(b["x0"][5:], torch.zeros(5, 3, 32, 32)) and b["x0"][:5].std() > 0.1
    assert b["y"].shape == b["t"].shape == (10,) and b["noise"].shape == (10, 3, 32, 32)
    again = discriminator_step_inputs(4, cfg, 1000, fakes, labels)
    assert all(torch.equal(v, again[k]) for k, v in b.items())
    other = discriminator_step_inputs(5, cfg, 1000, fakes, labels)
    assert not torch.equal(b["x0"][:5], other["x0"][:5])


def test_discriminator_training_learns_and_loads_as_a_noisy_classifier(tmp_path):
    fakes = _fakes(tmp_path / "f.safetensors")
    cfg = TrainConfig(steps=25, batch_size=16, lr=3e-3, warmup=2, ema_decay=0.0, seed=4, image_size=32, t_max=50)
    diff = DiffusionConfig(num_steps=100)
    r = train_discriminator(tmp_path / "d", cfg, fakes, holdout=8, diff_cfg=diff, progress=False)
    assert r["step"] == 25 and r["history"][-1] < r["history"][0]
    disc = load_noisy_classifier(tmp_path / "d" / "model.safetensors")
    meta = read_metadata(tmp_path / "d" / "model.safetensors")
    assert isinstance(disc, NoisyClassifier) and meta["role"] == "discriminator" and meta["holdout_fakes"] == "8"
    # it tells the held-out grey images from real ones at low noise
    from saliency_lib import data
    real = data.make_batch("test", 0, 8).images
    t = torch.full((16,), 10)
    x_t = GaussianDiffusion.from_config(diff).q_sample(torch.cat([real, torch.zeros(8, 3, 32, 32)]), t,
                                                         noise=torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        logit = disc(x_t, t).gather(1, (torch.arange(16) % 8).view(-1, 1)).squeeze(1)
    assert logit[:8].mean() > logit[8:].mean()


def test_discriminator_refuses_bad_fakes_and_settings(tmp_path):
    cfg = TrainConfig(steps=1, batch_size=4, ema_decay=0.0, image_size=32)
    fakes = _fakes(tmp_path / "f.safetensors", n=10)
    with pytest.raises(ValueError, match="holdout"):
        train_discriminator(tmp_path / "d", cfg, fakes, holdout=10, progress=False)
    with pytest.raises(ValueError, match="label_dropout"):
        train_discriminator(tmp_path / "d", TrainConfig(label_dropout=0.1), fakes, progress=False)
    save_tensors(tmp_path / "no_labels.safetensors", {"images": torch.zeros(2, 3, 32, 32)})
    with pytest.raises(ValueError, match="'images' and 'labels'"):
        load_fakes(tmp_path / "no_labels.safetensors", 32)
    save_tensors(tmp_path / "small.safetensors", {"images": torch.zeros(2, 3, 16, 16), "labels": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"\[N, 3, 32, 32\]"):
        load_fakes(tmp_path / "small.safetensors", 32)
    save_tensors(tmp_path / "bad.safetensors", {"images": torch.zeros(2, 3, 32, 32), "labels": torch.tensor([0, 8])})
    with pytest.raises(ValueError, match="class ids"):
        load_fakes(tmp_path / "bad.safetensors", 32)
