import dataclasses

import pytest
import torch

from saliency_lib import data
from saliency_lib.classifiers import ClassifierConfig, SmallResNet
from saliency_lib.errors import SaliencyNoiseError
from saliency_lib.inversion import (
    IGConfig,
    cached_invert_gradients,
    gradient_cosine_loss,
    invert_gradients,
    lr_at_iteration,
    match_gradients,
    parameter_gradients,
    total_variation,
)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = SmallResNet(ClassifierConfig(width=4, image_size=16)).eval()
    norm = model.config.normalization
    batch = data.make_batch("guides", 0, 3, 16)
    return model, norm, norm.from_diffusion(batch.images), batch.labels


def test_parameter_gradients_equal_plain_autograd(setup):
    model, _, guides, labels = setup
    per_sample = parameter_gradients(model, guides, labels)
    for b in range(guides.shape[0]):
        loss = torch.nn.functional.cross_entropy(model(guides[b:b + 1]), labels[b:b + 1])
        grads = torch.autograd.grad(loss, list(model.parameters()))
        for (name, _), g in zip(model.named_parameters(), grads):
            torch.testing.assert_close(per_sample[name][b], g, atol=1e-6, rtol=1e-5)


def test_objective_is_one_minus_cosine_over_all_parameters():
    a = {"w": torch.tensor([[1.0, 0.0]]), "b": torch.tensor([[0.0]])}
    b = {"w": torch.tensor([[0.0, 2.0]]), "b": torch.tensor([[0.0]])}
    assert gradient_cosine_loss(a, a).item() == pytest.approx(0.0, abs=1e-7)
    assert gradient_cosine_loss(a, b).item() == pytest.approx(1.0)
    x = torch.zeros(1, 1, 2, 2)
    x[0, 0, 0, 0] = 1.0
    assert total_variation(x).item() == pytest.approx(0.5 + 0.5)


def test_lr_schedule_milestones():
    cfg = IGConfig(iterations=8000)
    assert [lr_at_iteration(i, cfg) for i in (0, 2998, 2999, 5000, 7005)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.001, 0.0001])


def test_ig_lowers_objective_snapshots_box_and_best(setup):
    model, norm, guides, labels = setup
    cfg = IGConfig(iterations=40, snapshots=(0, 10, 40))
    res, stats = invert_gradients(model, guides, labels, norm, cfg, generator=torch.Generator().manual_seed(0))
    loss = stats["loss"]
    assert loss.shape == (40, 3)
    assert (loss[-5:].mean(0) < loss[:5].mean(0)).all()
    assert sorted(res.snapshots) == [0, 10, 40]
    lo, hi = norm.box(guides)
    for k in (10, 40):
        assert (res.snapshots[k] >= lo - 1e-6).all() and (res.snapshots[k] <= hi + 1e-6).all()
    assert not torch.equal(res.snapshots[0], res.snapshots[40])
    assert torch.all(stats["best_loss"] <= loss.min(0).values + 1e-6)


def test_signed_steps_move_each_pixel_by_lr_on_first_step(setup):
    model, norm, guides, labels = setup
    init = 0.1 * torch.randn(1, 3, 3, 16, 16, generator=torch.Generator().manual_seed(0))  # far from the box edges
    cfg = IGConfig(iterations=1, snapshots=(0, 1), lr=0.05, lr_decay=False)
    res, _ = invert_gradients(model, guides, labels, norm, cfg, init=init)
    step = (res.snapshots[1] - res.snapshots[0]).abs()
    # Adam's first step with signed gradients moves every coordinate with a nonzero gradient by lr
    assert torch.allclose(step[step > 0], torch.full_like(step[step > 0], 0.05), atol=1e-5)
    assert (step > 0).float().mean() > 0.9
    # the box: an init far outside is projected onto it after one step
    res, _ = invert_gradients(model, guides, labels, norm, cfg, init=torch.full((1, 3, 3, 16, 16), 5.0))
    lo, hi = norm.box(guides)
    assert torch.equal(res.snapshots[1], hi.expand_as(res.snapshots[1]))


def test_batched_equals_separate_runs(setup):
    model, norm, guides, labels = setup
    cfg = IGConfig(iterations=15, snapshots=(15,))
    init = torch.randn(1, 3, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    res, stats = invert_gradients(model, guides, labels, norm, cfg, init=init)
    for b in range(3):
        r1, s1 = invert_gradients(model, guides[b:b + 1], labels[b:b + 1], norm, cfg, init=init[:, b:b + 1])
        torch.testing.assert_close(r1.snapshots[15], res.snapshots[15][b:b + 1], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(s1["loss"][:, 0], stats["loss"][:, b], atol=1e-5, rtol=1e-4)


def test_restarts_keep_the_best(setup):
    model, norm, guides, labels = setup
    cfg = IGConfig(iterations=10, restarts=3, snapshots=(10,))
    res, stats = invert_gradients(model, guides[:2], labels[:2], norm, cfg, generator=torch.Generator().manual_seed(1))
    assert stats["restart"].shape == (2,)
    assert res.snapshots[10].shape == (2, 3, 16, 16)
    # every restart alone, with the same init, never beats the kept one
    g = torch.Generator().manual_seed(1)
    init = torch.randn((3, 2, 3, 16, 16), generator=g)
    for r in range(3):
        _, s = invert_gradients(model, guides[:2], labels[:2], norm, dataclasses.replace(cfg, restarts=1),
                                init=init[r:r + 1])
        assert torch.all(stats["best_loss"] <= s["best_loss"] + 1e-6)


def test_label_recovery_from_gradients(setup):
    model, norm, guides, labels = setup
    with torch.no_grad():
        target = parameter_gradients(model, guides, labels)
    res, _ = match_gradients(model, target, None, (3, 16, 16), norm, IGConfig(iterations=1))
    assert torch.equal(res.labels, labels)


def test_ctrl_c_returns_partial(setup, monkeypatch):
    model, norm, guides, labels = setup
    import saliency_lib.inversion as inv
    calls = {"n": 0}
    real = inv.total_variation

    def interrupting(x):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(x)
    monkeypatch.setattr(inv, "total_variation", interrupting)
    res, stats = invert_gradients(model, guides, labels, norm, IGConfig(iterations=20, snapshots=(0, 20)),
                                  generator=torch.Generator().manual_seed(0))
    assert stats["interrupted"] and stats["iterations_done"] == 3
    assert sorted(res.snapshots) == [0]
    assert res.best.shape == guides.shape


def test_non_finite_loss_raises(setup):
    model, norm, guides, labels = setup
    bad = torch.full((1, 3, 3, 16, 16), float("nan"))
    with pytest.raises(SaliencyNoiseError):
        invert_gradients(model, guides, labels, norm, IGConfig(iterations=2), init=bad)

    class Overflowing(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3 * 16 * 16, 8)

        def forward(self, x):
            return self.fc(x.flatten(1)) * 1e38  # logits overflow to inf

    with pytest.raises(FloatingPointError, match="non-finite objective at iteration 0"):
        invert_gradients(Overflowing().eval(), guides, labels, norm, IGConfig(iterations=2),
                         generator=torch.Generator().manual_seed(0))


def test_bad_config_and_inputs(setup):
    model, norm, guides, labels = setup
    with pytest.raises(SaliencyNoiseError, match="beyond the planned iterations"):
        IGConfig(iterations=100, snapshots=(0, 1000))
    with pytest.raises(SaliencyNoiseError, match="class ids"):
        invert_gradients(model, guides, torch.tensor([0, 1, 99]), norm, IGConfig(iterations=1))
    with pytest.raises(SaliencyNoiseError, match="rank 4"):
        invert_gradients(model, guides[0], labels[:1], norm, IGConfig(iterations=1))
    with pytest.raises(SaliencyNoiseError, match="eval mode"):
        parameter_gradients(model.train(), guides, labels)
    model.eval()


def test_cache_roundtrip(setup, tmp_path):
    model, norm, guides, labels = setup
    cfg = IGConfig(iterations=5, snapshots=(0, 5))
    r1, s1 = cached_invert_gradients(model, guides, labels, norm, cfg, seed=7, cache_dir=tmp_path)
    r2, s2 = cached_invert_gradients(model, guides, labels, norm, cfg, seed=7, cache_dir=tmp_path)
    assert not s1["cached"] and s2["cached"]
    assert torch.equal(r1.snapshots[5], r2.snapshots[5]) and torch.equal(s1["loss"], s2["loss"])
    r3, s3 = cached_invert_gradients(model, guides, labels, norm, cfg, seed=8, cache_dir=tmp_path)
    assert not s3["cached"] and not torch.equal(r3.snapshots[0], r1.snapshots[0])
    assert not list(tmp_path.rglob("*.tmp"))
