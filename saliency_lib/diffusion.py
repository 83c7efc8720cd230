"""Gaussian diffusion (Ho et al. 2020; Nichol & Dhariwal 2021): schedule, posterior, DDPM and DDIM steps.

One object holds the schedule, computed once in float64 (numpy) and gathered per timestep into the
model's dtype. The model is passed in (``model(x, t, y=...)``), never owned. Notation of the paper
(arXiv 2205.03859): alpha_t = 1 - beta_t, abar_t = prod_{s<=t} alpha_s;

* Eq. 1  q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)
* Eq. 2-3 q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps
  (the paper's Eq. 3 writes (1 - abar_t) for the noise scale; the standard deviation is its square root)
* Eq. 4-5 p(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2 I), the ancestral (DDPM) step.

Respacing follows the official semantics: ``"250"`` keeps 250 evenly strided steps, ``"ddim25"`` the
stride that gives exactly 25; the respaced process has betas 1 - abar_{t_i} / abar_{t_{i-1}} and the
model is called with the *original* timestep ``timestep_map[i]``.

Images: x_0 ``[N, C, H, W]`` in [-1, 1]; x_t unbounded, ~N(0, I) at t = T - 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple, Sequence, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import SaliencyNoiseError, check_image_batch

Model = Callable[..., torch.Tensor]
# What drives a sampler's own noise: one generator for the batch, or one per image (see :func:`image_generators`)
Generators = Union[torch.Generator, Sequence[torch.Generator], None]


# ----------------------------------------------------------------------------------- random streams
def image_generators(seed: int, n: int, first_index: int = 0, device: str | torch.device = "cpu"
                     ) -> list[torch.Generator]:
    """One generator per image: image ``first_index + j`` of a run seeded ``seed`` gets the stream seeded from
    ``(seed, first_index + j)`` (numpy's SeedSequence, so neighbouring seeds give unrelated streams). An image
    then draws the same noise whether it is sampled alone, in a batch, or in another batch split."""
    gens = []
    for j in range(n):
        state = np.random.SeedSequence([seed, first_index + j]).generate_state(1, dtype=np.uint64)[0]
        gens.append(torch.Generator(device=device).manual_seed(int(state)))
    return gens


def randn(shape: Sequence[int], generator: Generators, device: torch.device | str = "cpu",
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N(0, I) of ``shape`` ``[N, ...]`` from one generator, or image by image from ``N`` generators."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    gens = list(generator)
    if len(gens) != shape[0]:
        raise SaliencyNoiseError(f"{len(gens)} generators for a batch of {shape[0]} images: pass one per image")
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g, device=device, dtype=dtype) for g in gens])


# ----------------------------------------------------------------------------------- schedules
def linear_beta_schedule(num_steps: int) -> np.ndarray:
    """Ho et al.'s linear betas 1e-4 .. 2e-2 for 1000 steps, scaled by 1000 / num_steps."""
    scale = 1000 / num_steps
    return np.linspace(scale * 0.0001, scale * 0.02, num_steps, dtype=np.float64)


def cosine_beta_schedule(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal's cosine schedule: abar(t) = cos^2((t/T + s) / (1 + s) * pi / 2)."""
    def abar(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return np.array([min(1 - abar((i + 1) / num_steps) / abar(i / num_steps), max_beta)
                     for i in range(num_steps)], dtype=np.float64)


BETA_SCHEDULES: dict[str, Callable[[int], np.ndarray]] = {
    "linear": linear_beta_schedule, "cosine": cosine_beta_schedule}


def get_beta_schedule(name: str, num_steps: int) -> np.ndarray:
    if name not in BETA_SCHEDULES:
        raise SaliencyNoiseError(f"unknown noise schedule {name!r}; expected one of {sorted(BETA_SCHEDULES)}")
    if num_steps < 1:
        raise SaliencyNoiseError(f"num_steps must be >= 1, got {num_steps}")
    return BETA_SCHEDULES[name](num_steps)


def space_timesteps(num_steps: int, spacing: str | Sequence[int]) -> list[int]:
    """Timesteps kept by a respacing, sorted. Same semantics as guided-diffusion's ``space_timesteps``.

    ``"ddimN"``: the stride i for which range(0, T, i) has exactly N entries. ``"250"`` or
    ``"10,15,20"``: T split into equal sections, each with that many evenly spaced (rounded) steps.
    """
    if isinstance(spacing, str):
        if spacing.startswith("ddim"):
            want = int(spacing[len("ddim"):])
            for stride in range(1, num_steps):
                if len(range(0, num_steps, stride)) == want:
                    return list(range(0, num_steps, stride))
            raise SaliencyNoiseError(f"respacing {spacing!r}: no integer stride gives exactly {want} of "
                                     f"{num_steps} steps")
        try:
            counts = [int(c) for c in spacing.split(",")]
        except ValueError as e:
            raise SaliencyNoiseError(f"respacing must look like '250', '10,20' or 'ddim25', got {spacing!r}") from e
    else:
        counts = [int(c) for c in spacing]
    per, extra = divmod(num_steps, len(counts))
    start, kept = 0, []
    for i, count in enumerate(counts):
        size = per + (1 if i < extra else 0)
        if count > size or count < 1:
            raise SaliencyNoiseError(f"respacing: cannot take {count} steps from a section of {size}")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        kept += [start + round(j * stride) for j in range(count)]
        start += size
    return sorted(set(kept))


def respace_betas(base_betas: np.ndarray, kept: Sequence[int]) -> np.ndarray:
    """Betas of the respaced process: beta'_i = 1 - abar_{t_i} / abar_{t_{i-1}} (abar_{t_{-1}} = 1)."""
    abar = np.cumprod(1.0 - base_betas)
    out, last = [], 1.0
    for t in kept:
        out.append(1 - abar[t] / last)
        last = abar[t]
    return np.array(out, dtype=np.float64)


# ----------------------------------------------------------------------------------- the object
@dataclass(frozen=True)
class DiffusionConfig:
    num_steps: int = 1000            # T of the training process
    schedule: str = "linear"         # "linear" (Ho et al.) or "cosine" (Nichol & Dhariwal)
    learn_sigma: bool = False        # model outputs 2C channels: eps and v (learned-range variance)
    fixed_variance: str = "small"    # without learned sigma: "small" = posterior beta~_t, "large" = beta_t
    clip_denoised: bool = True       # clip predicted x_0 to [-1, 1]
    prediction: str = "epsilon"      # what the model outputs: "epsilon" (Ho et al.; every ADM checkpoint) or "v"
                                     # (Salimans & Ho 2022: v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0)


def diffusion_config_from_flags(flags: dict) -> DiffusionConfig:
    """DiffusionConfig of guided-diffusion flags (eps prediction; without learned sigma: fixed large)."""
    if flags.get("use_kl") or flags.get("predict_xstart") or flags.get("rescale_timesteps"):
        raise SaliencyNoiseError("use_kl, predict_xstart and rescale_timesteps are not supported; "
                                 "the official ImageNet checkpoints use none of them")
    return DiffusionConfig(num_steps=int(flags.get("diffusion_steps", 1000)),
                           schedule=flags.get("noise_schedule", "linear"),
                           learn_sigma=bool(flags.get("learn_sigma", False)), fixed_variance="large")


class StepOutput(NamedTuple):
    """One reverse step: t (original timestep, int), x_{t-1} and the predicted x_0 at this step."""
    t: int
    sample: torch.Tensor
    pred_xstart: torch.Tensor


class GaussianDiffusion:
    """Schedule and math of a (possibly respaced) Gaussian diffusion process.

    ``timestep_map[i]`` is the original timestep that index ``i`` of this process stands for; all
    per-step arrays (``betas``, ``alphas_cumprod`` ...) are indexed by ``i``. Public sampling methods take
    indices; the model always receives ``timestep_map[i]``.
    """

    def __init__(self, betas: np.ndarray, timestep_map: Sequence[int] | None = None,
                 learn_sigma: bool = False, fixed_variance: str = "small", clip_denoised: bool = True,
                 prediction: str = "epsilon"):
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0) & (betas <= 1)).all():
            raise SaliencyNoiseError("betas must be a 1-D array in (0, 1]")
        if fixed_variance not in ("small", "large"):
            raise SaliencyNoiseError(f"fixed_variance must be 'small' or 'large', got {fixed_variance!r}")
        if prediction not in ("epsilon", "v"):
            raise SaliencyNoiseError(f"prediction must be 'epsilon' or 'v', got {prediction!r}")
        self.betas = betas
        self.prediction = prediction
        self.num_timesteps = len(betas)
        self.timestep_map = np.asarray(timestep_map if timestep_map is not None else range(len(betas)),
                                       dtype=np.int64)
        self.learn_sigma, self.fixed_variance, self.clip_denoised = learn_sigma, fixed_variance, clip_denoised

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        # posterior q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, beta~_t)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # beta~_0 = 0: its log is clipped to beta~_1 (as in the official code)
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1],
                                                               self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_config(cls, config: DiffusionConfig, respacing: str | Sequence[int] | None = None) -> "GaussianDiffusion":
        """The process of ``config``, respaced by :func:`space_timesteps` (``"ddim50"``, ``"250"``, section counts)
        or not at all (``None``)."""
        kept = space_timesteps(config.num_steps, respacing) if respacing not in (None, "") else None
        return cls.at_timesteps(config, kept)

    @classmethod
    def at_timesteps(cls, config: DiffusionConfig, timesteps: Sequence[int] | None = None) -> "GaussianDiffusion":
        """The process of ``config`` kept at exactly these original timesteps (strictly increasing, in [0, T);
        ``None``: all of them), for step sequences :func:`space_timesteps` does not make (e.g. DDIM's quadratic one)."""
        base = get_beta_schedule(config.schedule, config.num_steps)
        kw = dict(learn_sigma=config.learn_sigma, fixed_variance=config.fixed_variance,
                  clip_denoised=config.clip_denoised, prediction=config.prediction)
        if timesteps is None:
            return cls(base, **kw)
        kept = [int(t) for t in timesteps]
        if not kept or kept[0] < 0 or kept[-1] >= config.num_steps or any(b <= a for a, b in zip(kept, kept[1:])):
            raise SaliencyNoiseError(f"timesteps must be strictly increasing and in [0, {config.num_steps}), got "
                                     f"{kept[:5]}{' ...' if len(kept) > 5 else ''} ({len(kept)} steps)")
        return cls(respace_betas(base, kept), timestep_map=kept, **kw)

    @classmethod
    def from_guided_diffusion_flags(cls, flags: dict) -> "GaussianDiffusion":
        """The diffusion the official ``create_gaussian_diffusion`` builds, respaced by its flag."""
        return cls.from_config(diffusion_config_from_flags(flags), flags.get("timestep_respacing") or None)

    # ---------------------------------------------------------------- helpers
    def _gather(self, arr: np.ndarray, idx: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """arr[idx] as a tensor broadcastable to ``like`` ([N] -> [N, 1, 1, 1]), in like's dtype."""
        out = torch.as_tensor(arr, device=idx.device)[idx].to(like.dtype)
        return out.reshape(-1, *([1] * (like.dim() - 1)))

    def _index_tensor(self, idx: int | torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
        if isinstance(idx, int):
            idx = torch.full((n,), idx, dtype=torch.long, device=device)
        if idx.min().item() < 0 or idx.max().item() >= self.num_timesteps:
            raise SaliencyNoiseError(f"timestep index must be in [0, {self.num_timesteps - 1}], got "
                                     f"[{idx.min().item()}, {idx.max().item()}]")
        return idx.to(device)

    def model_timesteps(self, idx: torch.Tensor) -> torch.Tensor:
        """Original timesteps the model sees for process indices ``idx``."""
        return torch.as_tensor(self.timestep_map, device=idx.device)[idx]

    # ---------------------------------------------------------------- forward process
    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None,
                 generator: Generators = None) -> torch.Tensor:
        """Sample q(x_t | x_0) (Eq. 2-3): sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
        if noise is None:
            noise = randn(x_start.shape, generator, x_start.device, x_start.dtype)
        return (self._gather(self.sqrt_alphas_cumprod, t, x_start) * x_start
                + self._gather(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise)

    def q_posterior_mean_variance(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
                                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = (self._gather(self.posterior_mean_coef1, t, x_t) * x_start
                + self._gather(self.posterior_mean_coef2, t, x_t) * x_t)
        return (mean, self._gather(self.posterior_variance, t, x_t),
                self._gather(self.posterior_log_variance_clipped, t, x_t))

    def predict_xstart_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
        return (self._gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
                - self._gather(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps)

    def predict_eps_from_xstart(self, x_t: torch.Tensor, t: torch.Tensor, x_start: torch.Tensor) -> torch.Tensor:
        return ((self._gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x_start)
                / self._gather(self.sqrt_recipm1_alphas_cumprod, t, x_t))

    def predict_eps_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """eps = sqrt(abar_t) v + sqrt(1 - abar_t) x_t (Salimans & Ho 2022). At high noise the model's v is
        scaled down by sqrt(abar_t) and x_t passes through exactly, so x_0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v
        stays well-conditioned where an epsilon error is amplified by 1 / sqrt(abar_t)."""
        return (self._gather(self.sqrt_alphas_cumprod, t, x_t) * v
                + self._gather(self.sqrt_one_minus_alphas_cumprod, t, x_t) * x_t)

    def v_target(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The v a v-predicting model learns: sqrt(abar_t) eps - sqrt(1 - abar_t) x_0."""
        return (self._gather(self.sqrt_alphas_cumprod, t, x_start) * noise
                - self._gather(self.sqrt_one_minus_alphas_cumprod, t, x_start) * x_start)

    # ---------------------------------------------------------------- reverse process
    def p_mean_variance_from_output(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
                                    ) -> dict[str, torch.Tensor]:
        """p(x_{t-1} | x_t) (Eq. 4) from a model output ``[N, C or 2C, H, W]`` at process indices ``t``.

        Learned range: log sigma^2 = frac * log beta_t + (1 - frac) * log beta~_t, frac = (v + 1) / 2.
        Returns mean, variance, log_variance, pred_xstart (clipped to [-1, 1] when clip_denoised).
        """
        c = x_t.shape[1]
        if self.learn_sigma:
            if model_output.shape[1] != 2 * c:
                raise SaliencyNoiseError(f"learned sigma needs a model output with {2 * c} channels, "
                                         f"got {model_output.shape[1]}")
            eps, v = model_output.split(c, dim=1)
            min_log = self._gather(self.posterior_log_variance_clipped, t, x_t)
            max_log = self._gather(np.log(self.betas), t, x_t)
            frac = (v + 1) / 2
            log_var = frac * max_log + (1 - frac) * min_log
            var = torch.exp(log_var)
        else:
            if model_output.shape[1] != c:
                raise SaliencyNoiseError(f"fixed variance needs a model output with {c} channels, "
                                         f"got {model_output.shape[1]}")
            eps = model_output
            if self.fixed_variance == "large":
                v = np.append(self.posterior_variance[1], self.betas[1:])
                var, log_var = self._gather(v, t, x_t), self._gather(np.log(v), t, x_t)
            else:
                var = self._gather(self.posterior_variance, t, x_t)
                log_var = self._gather(self.posterior_log_variance_clipped, t, x_t)
            var, log_var = var.expand_as(x_t), log_var.expand_as(x_t)
        if self.prediction == "v":
            eps = self.predict_eps_from_v(x_t, t, eps)
        pred_xstart = self.predict_xstart_from_eps(x_t, t, eps)
        if self.clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x_t, t)
        return {"mean": mean, "variance": var, "log_variance": log_var, "pred_xstart": pred_xstart, "eps": eps}

    def p_mean_variance(self, model: Model, x_t: torch.Tensor, t: torch.Tensor,
                        y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Call the model at the original timesteps of indices ``t`` and return p(x_{t-1} | x_t)."""
        kwargs = {} if y is None else {"y": y}
        out = model(x_t, self.model_timesteps(t), **kwargs)
        return self.p_mean_variance_from_output(out, x_t, t)

    def ddpm_step_from_output(self, out: dict[str, torch.Tensor], x_t: torch.Tensor, t: torch.Tensor,
                              generator: Generators = None) -> torch.Tensor:
        """Ancestral step (Eq. 5): x_{t-1} = mu + sigma z, no noise at t = 0 (z drawn at every step, so each
        image's stream advances alike)."""
        z = randn(x_t.shape, generator, x_t.device, x_t.dtype)
        nonzero = (t != 0).to(x_t.dtype).reshape(-1, *([1] * (x_t.dim() - 1)))
        return out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * z

    def ddim_step_from_output(self, out: dict[str, torch.Tensor], x_t: torch.Tensor, t: torch.Tensor,
                              eta: float = 0.0, generator: Generators = None) -> torch.Tensor:
        """DDIM step (Song et al. 2021, Eq. 12): sqrt(abar_prev) x0 + sqrt(1 - abar_prev - s^2) eps + s z."""
        eps = self.predict_eps_from_xstart(x_t, t, out["pred_xstart"])
        abar = self._gather(self.alphas_cumprod, t, x_t)
        abar_prev = self._gather(self.alphas_cumprod_prev, t, x_t)
        sigma = eta * torch.sqrt((1 - abar_prev) / (1 - abar)) * torch.sqrt(1 - abar / abar_prev)
        mean = out["pred_xstart"] * torch.sqrt(abar_prev) + torch.sqrt(1 - abar_prev - sigma ** 2) * eps
        if eta == 0:
            return mean
        z = randn(x_t.shape, generator, x_t.device, x_t.dtype)
        nonzero = (t != 0).to(x_t.dtype).reshape(-1, *([1] * (x_t.dim() - 1)))
        return mean + nonzero * sigma * z

    def ddpm_step(self, model: Model, x_t: torch.Tensor, t: int | torch.Tensor, y: torch.Tensor | None = None,
                  generator: Generators = None) -> StepOutput:
        idx = self._index_tensor(t, x_t.shape[0], x_t.device)
        out = self.p_mean_variance(model, x_t, idx, y)
        return StepOutput(int(self.timestep_map[idx[0].item()]), self.ddpm_step_from_output(out, x_t, idx, generator),
                          out["pred_xstart"])

    def ddim_step(self, model: Model, x_t: torch.Tensor, t: int | torch.Tensor, y: torch.Tensor | None = None,
                  eta: float = 0.0, generator: Generators = None) -> StepOutput:
        idx = self._index_tensor(t, x_t.shape[0], x_t.device)
        out = self.p_mean_variance(model, x_t, idx, y)
        return StepOutput(int(self.timestep_map[idx[0].item()]),
                          self.ddim_step_from_output(out, x_t, idx, eta, generator), out["pred_xstart"])

    # ---------------------------------------------------------------- loops
    def sample_progressive(self, model: Model, x_T: torch.Tensor, y: torch.Tensor | None = None, *,
                           method: str = "ddpm", eta: float = 0.0, start_index: int | None = None,
                           generator: Generators = None,
                           progress: bool = False) -> Iterator[StepOutput]:
        """Run the reverse process from the caller's ``x_T`` and yield (t, x_{t-1}, pred x_0) every step.

        ``x_T``: ``[N, C, H, W]`` (Gaussian noise, crafted noise, or an image noised to ``start_index``).
        ``start_index``: first process index (default the last, T-1); smaller values start part-way
        (SDEdit-style). ``method``: "ddpm" (ancestral, Eq. 5) or "ddim" (with ``eta``); ``generator`` drives
        the sampler's own noise: one ``torch.Generator`` for the batch, or one per image
        (:func:`image_generators`) so that each image is independent of the batch it is drawn in.
        """
        check_image_batch("x_T", x_T)
        if method not in ("ddpm", "ddim"):
            raise SaliencyNoiseError(f"method must be 'ddpm' or 'ddim', got {method!r}")
        first = self.num_timesteps - 1 if start_index is None else start_index
        if not 0 <= first < self.num_timesteps:
            raise SaliencyNoiseError(f"start_index must be in [0, {self.num_timesteps - 1}], got {first}")
        plan = range(first, -1, -1)
        if progress:
            plan = tqdm(plan, desc=f"{method} sampling", leave=False)
        x = x_T
        for i in plan:
            with torch.no_grad():
                if method == "ddpm":
                    step = self.ddpm_step(model, x, i, y, generator=generator)
                else:
                    step = self.ddim_step(model, x, i, y, eta=eta, generator=generator)
            x = step.sample
            yield step

    def sample(self, model: Model, x_T: torch.Tensor, y: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """Final x_0 ``[N, C, H, W]`` (in [-1, 1] when clip_denoised) of :meth:`sample_progressive`."""
        x = x_T
        for step in self.sample_progressive(model, x_T, y, **kwargs):
            x = step.sample
        return x

    # ---------------------------------------------------------------- training
    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) of q(x_t | x_0) at indices ``t`` ``[N]`` (float64)."""
        a = torch.as_tensor(self.alphas_cumprod, dtype=torch.float64)[t.cpu()]
        return (a / (1 - a)).to(t.device)

    def min_snr_weight(self, t: torch.Tensor, gamma: float) -> torch.Tensor:
        """Per-example weight of the simple loss under Min-SNR-gamma weighting (Hang et al. 2023): for epsilon
        prediction min(SNR(t), gamma) / SNR(t), for v prediction min(SNR(t), gamma) / (SNR(t) + 1); ``[N]``,
        float32. Either way the loss is ``min(SNR, gamma) ||x_0 - x_0_hat||^2``: full weight at high noise
        (SNR < gamma), less at low noise, so training spends less of its effort on fine detail. The weight
        depends on t only, so the optimum of each t's loss is unchanged."""
        snr = self.snr(t)
        return (snr.clamp(max=gamma) / (snr + 1 if self.prediction == "v" else snr)).float()

    def training_loss(self, model: Model, x_start: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                      noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Simple loss of Ho et al.: mean ``||eps - eps_theta(x_t, t)||^2`` per example, ``[N]`` (for a v-predicting
        model ``||v - v_theta(x_t, t)||^2``, with v from :meth:`v_target`)."""
        if noise is None:
            noise = torch.randn(x_start.shape, generator=generator, device=x_start.device, dtype=x_start.dtype)
        x_t = self.q_sample(x_start, t, noise)
        kwargs = {} if y is None else {"y": y}
        out = model(x_t, self.model_timesteps(t), **kwargs)
        pred = out[:, : x_start.shape[1]]
        target = self.v_target(x_start, t, noise) if self.prediction == "v" else noise
        return ((pred.float() - target.float()) ** 2).mean(dim=(1, 2, 3))
