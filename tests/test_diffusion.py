import numpy as np
import pytest
import torch

from saliency_lib.diffusion import (
    DiffusionConfig,
    GaussianDiffusion,
    get_beta_schedule,
    space_timesteps,
)
from saliency_lib.errors import SaliencyNoiseError


def test_schedules_equal_official(reference):
    np.testing.assert_array_equal(get_beta_schedule("linear", 1000), reference["betas_linear_1000"].numpy())
    np.testing.assert_allclose(get_beta_schedule("cosine", 1000), reference["betas_cosine_1000"].numpy(),
                               rtol=0, atol=1e-15)


def test_respacing_maps_and_betas_equal_official(small_flags, reference):
    d = GaussianDiffusion.from_guided_diffusion_flags(small_flags)
    assert d.num_timesteps == 250
    assert d.timestep_map.tolist() == reference["timestep_map_250"].tolist()
    np.testing.assert_allclose(d.betas, reference["respaced_betas_250"].numpy(), rtol=0, atol=1e-15)
    assert space_timesteps(1000, "ddim25") == reference["timesteps_ddim25"].tolist()


def test_p_mean_variance_learned_range_and_ddim_equal_official(small_flags, reference):
    d = GaussianDiffusion.from_guided_diffusion_flags(small_flags)
    idx = reference["respaced_index"]
    out = d.p_mean_variance_from_output(reference["out"], reference["x"], idx)
    for k in ("mean", "log_variance", "pred_xstart"):
        torch.testing.assert_close(out[k], reference[f"pmv_{k}"], atol=1e-5, rtol=1e-4)
    step = d.ddim_step_from_output(out, reference["x"], idx, eta=0.0)
    torch.testing.assert_close(step, reference["ddim_eta0_sample"], atol=1e-5, rtol=1e-4)


def test_model_is_called_with_original_timesteps(small_flags, reference):
    d = GaussianDiffusion.from_guided_diffusion_flags(small_flags)
    seen = []

    def model(x, t, y=None):
        seen.append(t.tolist())
        return reference["out"]
    idx = reference["respaced_index"]
    out = d.p_mean_variance(model, reference["x"], idx, reference["y"])
    assert seen == [[int(d.timestep_map[i]) for i in idx]]
    torch.testing.assert_close(out["pred_xstart"], reference["pmv_pred_xstart"], atol=1e-5, rtol=1e-4)


def test_space_timesteps_sections_and_errors():
    assert space_timesteps(100, "10") == [11 * i for i in range(10)]
    assert len(space_timesteps(1000, "10,15,20")) == 45
    with pytest.raises(SaliencyNoiseError, match="ddim"):
        space_timesteps(1000, "ddim999")
    with pytest.raises(SaliencyNoiseError, match="cannot take"):
        space_timesteps(10, "20")
    with pytest.raises(SaliencyNoiseError, match="unknown noise schedule"):
        get_beta_schedule("quadratic", 10)


def test_q_sample_statistics():
    d = GaussianDiffusion.from_config(DiffusionConfig())
    x0 = torch.full((4000, 1, 1, 1), 0.5)
    t = torch.full((4000,), 999)
    xt = d.q_sample(x0, t, generator=torch.Generator().manual_seed(0))
    assert abs(xt.mean().item() - 0.5 * d.sqrt_alphas_cumprod[999]) < 0.05
    assert abs(xt.std().item() - d.sqrt_one_minus_alphas_cumprod[999]) < 0.05


def test_posterior_variance_and_large_variance():
    d = GaussianDiffusion.from_config(DiffusionConfig(fixed_variance="large"))
    x = torch.zeros(1, 3, 4, 4)
    out = d.p_mean_variance_from_output(torch.zeros(1, 3, 4, 4), x, torch.tensor([500]))
    assert torch.allclose(out["variance"], torch.full_like(x, d.betas[500]))


class _Linear(torch.nn.Module):
    """A tiny deterministic eps-model for loop tests."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        torch.manual_seed(0)
        torch.nn.init.normal_(self.conv.weight, std=0.05)

    def forward(self, x, t, y=None):
        return self.conv(x) + 0.001 * t.float().view(-1, 1, 1, 1) / 1000 + (0 if y is None else 0.01 * y.view(-1, 1, 1, 1))


def test_ddim_eta0_is_deterministic_and_uses_given_xT():
    d = GaussianDiffusion.from_config(DiffusionConfig(), "ddim10")
    m = _Linear()
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    a = d.sample(m, x_T, torch.tensor([0, 1]), method="ddim")
    b = d.sample(m, x_T, torch.tensor([0, 1]), method="ddim", generator=torch.Generator().manual_seed(99))
    assert torch.equal(a, b)
    c = d.sample(m, x_T + 0.5, torch.tensor([0, 1]), method="ddim")
    assert not torch.allclose(a, c)


def test_ddpm_reproducible_with_generator_and_depends_on_xT():
    d = GaussianDiffusion.from_config(DiffusionConfig(), "20")
    m = _Linear()
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    a = d.sample(m, x_T, method="ddpm", generator=torch.Generator().manual_seed(1))
    b = d.sample(m, x_T, method="ddpm", generator=torch.Generator().manual_seed(1))
    c = d.sample(m, x_T, method="ddpm", generator=torch.Generator().manual_seed(2))
    e = d.sample(m, torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5)), method="ddpm",
                 generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, e)


def test_progressive_yields_every_step_and_start_index():
    d = GaussianDiffusion.from_config(DiffusionConfig(), "ddim10")
    steps = list(d.sample_progressive(_Linear(), torch.randn(1, 3, 8, 8), method="ddim"))
    assert [s.t for s in steps] == d.timestep_map[::-1].tolist()
    assert all(s.pred_xstart.abs().max() <= 1 for s in steps)
    part = list(d.sample_progressive(_Linear(), torch.randn(1, 3, 8, 8), method="ddim", start_index=4))
    assert len(part) == 5
    with pytest.raises(SaliencyNoiseError, match="start_index"):
        list(d.sample_progressive(_Linear(), torch.randn(1, 3, 8, 8), start_index=10))


def test_bad_inputs():
    d = GaussianDiffusion.from_config(DiffusionConfig(), "ddim10")
    with pytest.raises(SaliencyNoiseError, match="rank 4"):
        d.sample(_Linear(), torch.randn(3, 8, 8))
    with pytest.raises(SaliencyNoiseError, match="NaN"):
        d.sample(_Linear(), torch.full((1, 3, 8, 8), float("nan")))
    with pytest.raises(SaliencyNoiseError, match="floating"):
        d.sample(_Linear(), torch.zeros((1, 3, 8, 8), dtype=torch.long))
    with pytest.raises(SaliencyNoiseError, match="method"):
        d.sample(_Linear(), torch.randn(1, 3, 8, 8), method="euler")
    with pytest.raises(SaliencyNoiseError, match="timestep index"):
        d.ddim_step(_Linear(), torch.randn(1, 3, 8, 8), 10)


def test_v_prediction_recovers_x0_and_eps_like_epsilon_prediction():
    """An oracle that outputs the true v (or the true eps) gives back the true x_0 and eps, respaced too."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 3, 8, 8, generator=g) * 1.8 - 0.9
    noise = torch.randn(3, 3, 8, 8, generator=g)
    for respacing in (None, "10"):
        cfg = DiffusionConfig(num_steps=100)
        d_eps = GaussianDiffusion.from_config(cfg, respacing)
        d_v = GaussianDiffusion.from_config(DiffusionConfig(num_steps=100, prediction="v"), respacing)
        idx = torch.tensor([0, d_v.num_timesteps // 2, d_v.num_timesteps - 1])
        x_t = d_v.q_sample(x0, idx, noise)
        v = d_v.v_target(x0, idx, noise)
        out_v = d_v.p_mean_variance(lambda x, t, **kw: v, x_t, idx)
        out_e = d_eps.p_mean_variance(lambda x, t, **kw: noise, x_t, idx)
        for out in (out_v, out_e):
            torch.testing.assert_close(out["pred_xstart"], x0, atol=2e-3, rtol=0)
            torch.testing.assert_close(out["eps"], noise, atol=1e-4, rtol=0)
        torch.testing.assert_close(out_v["mean"], out_e["mean"], atol=1e-4, rtol=0)
        # the training loss: zero for the oracle, ||v - eps||^2 for a model that outputs eps instead
        assert d_v.training_loss(lambda x, t, **kw: v, x0, idx, noise=noise).abs().max() < 1e-10
        torch.testing.assert_close(d_v.training_loss(lambda x, t, **kw: noise, x0, idx, noise=noise),
                                   ((v - noise) ** 2).mean(dim=(1, 2, 3)))


def test_v_model_samples_like_the_equivalent_epsilon_model():
    """DDIM and DDPM with a v-model f equal sampling with the epsilon model sqrt(abar) f + sqrt(1 - abar) x_t."""
    d_v = GaussianDiffusion.from_config(DiffusionConfig(num_steps=50, prediction="v"))
    d_e = GaussianDiffusion.from_config(DiffusionConfig(num_steps=50))
    w = torch.randn(3, 3, 1, 1, generator=torch.Generator().manual_seed(1)) * 0.3

    def v_model(x, t, **kw):
        return torch.nn.functional.conv2d(torch.tanh(x), w) * (1 + t.float()[:, None, None, None] / 50)

    def eps_model(x, t, **kw):
        a = torch.as_tensor(d_e.alphas_cumprod, dtype=x.dtype)[t][:, None, None, None]
        return a.sqrt() * v_model(x, t) + (1 - a).sqrt() * x

    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    for method in ("ddim", "ddpm"):
        a = d_v.sample(v_model, x_T, method=method, generator=torch.Generator().manual_seed(3))
        b = d_e.sample(eps_model, x_T, method=method, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_min_snr_weight_for_v_prediction_and_bad_prediction():
    d = GaussianDiffusion.from_config(DiffusionConfig(num_steps=1000, prediction="v"))
    t = torch.tensor([0, 300, 999])
    snr = d.snr(t)
    torch.testing.assert_close(d.min_snr_weight(t, 5.0), (snr.clamp(max=5.0) / (snr + 1)).float())
    with pytest.raises(SaliencyNoiseError, match="prediction"):
        GaussianDiffusion.from_config(DiffusionConfig(prediction="x0"))


def test_explicit_timesteps_give_the_respaced_process_and_reject_bad_sequences():
    cfg = DiffusionConfig()
    by_name = GaussianDiffusion.from_config(cfg, "ddim50")
    explicit = GaussianDiffusion.at_timesteps(cfg, space_timesteps(1000, "ddim50"))
    np.testing.assert_array_equal(explicit.timestep_map, by_name.timestep_map)
    np.testing.assert_allclose(explicit.betas, by_name.betas, rtol=0, atol=0)
    np.testing.assert_allclose(GaussianDiffusion.at_timesteps(cfg).betas, GaussianDiffusion.from_config(cfg).betas)
    # a sequence no respacing string makes: dense at low noise, its abar_t are the original process's
    uneven = [0, 3, 12, 27, 48, 300, 799]
    d = GaussianDiffusion.at_timesteps(cfg, uneven)
    full = GaussianDiffusion.from_config(cfg)
    np.testing.assert_allclose(d.alphas_cumprod, full.alphas_cumprod[uneven], rtol=1e-12)
    for bad in ([], [5, 3], [0, 0, 1], [-1, 4], [0, 1000]):
        with pytest.raises(SaliencyNoiseError, match="strictly increasing"):
            GaussianDiffusion.at_timesteps(cfg, bad)

