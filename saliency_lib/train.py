"""Training entry points of the ``tiny`` preset: the class-conditional DDPM, classifiers and the segmenter.

    python -m saliency_lib.train ddpm --out checkpoints/ddpm --minutes 110
    python -m saliency_lib.train classifier --arch resnet --out checkpoints/ig_classifier ...
    python -m saliency_lib.train segmenter --out checkpoints/segmenter ...
    python -m saliency_lib.train noisy-classifier --out checkpoints/noisy_classifier --init <clean resnet> ...
    python -m saliency_lib.train noisy-classifier --arch unet-encoder --init <DDPM weights> ...
    python -m saliency_lib.train discriminator --fakes <scripts/sample_fakes.py output> --init <noisy classifier> ...

Reproducible from a seed: the batch of step s holds dataset samples ``s*B .. s*B+B-1`` of the train
split and every random draw of step s comes from a generator seeded with ``(seed, s)``, so a run
resumed from a checkpoint continues exactly as the uninterrupted run would have. Checkpoints are
safetensors (model, EMA, optimizer moments) with the configs and the step in the metadata, written
atomically every ``checkpoint_minutes``; ``--resume`` continues from ``<out>/last.safetensors``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import data
from .diffusion import DiffusionConfig, GaussianDiffusion
from .unet import UNet, UNetConfig, grow_res_blocks
from .weights import config_from_metadata, config_to_metadata, load_module_weights, load_tensors, read_metadata, save_tensors


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 6000                 # optimizer steps planned (the LR schedule spans them)
    batch_size: int = 64              # images per step
    lr: float = 4e-4                  # peak Adam learning rate
    warmup: int = 200                 # linear LR warm-up steps
    weight_decay: float = 0.0         # AdamW decoupled weight decay
    ema_decay: float = 0.999          # EMA of the weights (DDPM only; 0 disables)
    label_smoothing: float = 0.0      # classifiers only: cross-entropy label smoothing
    label_dropout: float = 0.0        # DDPM only: fraction of labels replaced by the null class (classifier-free
                                      # guidance, Ho & Salimans 2022); needs UNetConfig.null_class
    min_snr_gamma: float = 0.0        # DDPM only: Min-SNR-gamma loss weighting (Hang et al. 2023; 0: the simple,
                                      # unweighted loss of Ho et al.)
    t_min: int = 0                    # DDPM and noise-aware classifier: training timesteps are drawn uniformly from
    t_max: int = 0                    # [t_min, t_max), t_max 0 meaning T (the default: every timestep). A range
                                      # trains a low-noise expert (eDiff-I, Balaji et al. 2022; model card, History
                                      # 15), or a classifier's first phase on the levels it can read (History 19)
    autocast: str = "none"            # "bf16": forward and backward under torch.autocast(bfloat16) (weights, optimizer
                                      # and the loss stay float32); "none": float32 throughout. Made for GPUs: on
                                      # this project's CPU bf16 ran 2.5x slower (model card, History 17)
    adversarial_eps: float = 0.0      # noise-aware classifier only: L2 radius of the PGD attack it is trained
                                      # against (Madry et al. 2018), in diffusion-space units (x_t's [-1, 1] scale,
                                      # summed over the [3, H, W] pixels); 0: standard training. A robust
                                      # classifier's gradients follow the image's shapes (robust classifier
                                      # guidance, Kawar et al. 2022; model card, History 21)
    adversarial_steps: int = 3        # PGD steps per training batch (step size 2.5 * eps / steps)
    colour_jitter: float = 0.0        # clean classifiers and segmenter only: strength s of data.colour_jitter (per
                                      # image, chroma x [1/(1+2s), 1+2s] and gain x [1/(1+s), 1+s], log-uniform);
                                      # 0: the data's colours (model card, History 25)
    seed: int = 0                     # seeds the init and every per-step draw
    image_size: int = 32              # dataset resolution
    checkpoint_minutes: float = 5.0   # wall-clock period of atomic checkpoints


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up then cosine decay to 10% of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def check_t_range(cfg: TrainConfig, num_timesteps: int) -> None:
    """Refuse a training range of timesteps [cfg.t_min, cfg.t_max) that is empty or outside [0, T)."""
    if not 0 <= cfg.t_min < (cfg.t_max or num_timesteps) <= num_timesteps:
        raise ValueError(f"need 0 <= t_min < t_max <= T = {num_timesteps} (t_max 0 means T), got "
                         f"t_min={cfg.t_min}, t_max={cfg.t_max}")


AUTOCAST_DTYPES = {"none": None, "bf16": torch.bfloat16}


def refuse_adversarial(cfg: TrainConfig, what: str) -> None:
    """Adversarial training is implemented for the noise-aware classifier only: refuse it elsewhere rather than
    ignore it."""
    if cfg.adversarial_eps != 0:
        raise ValueError(f"adversarial_eps is for the noise-aware classifier (train noisy-classifier); the {what} "
                         f"trains on clean inputs, got adversarial_eps={cfg.adversarial_eps}")


def refuse_colour_jitter(cfg: TrainConfig, what: str) -> None:
    """Colour jitter is a judge augmentation (classifier, segmenter): refuse it elsewhere rather than ignore it."""
    if cfg.colour_jitter != 0:
        raise ValueError(f"colour_jitter is for the classifiers and the segmenter (train classifier|segmenter); the "
                         f"{what} trains on the data's colours, got colour_jitter={cfg.colour_jitter}")


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


# ----------------------------------------------------------------------------- checkpoints
def _optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"opt.{i}.{k}"] = v if isinstance(v, torch.Tensor) else torch.tensor(v)
    return out


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, i, k = key.split(".", 2)
            state.setdefault(int(i), {})[k] = v
    sd["state"] = state
    opt.load_state_dict(sd)


def save_checkpoint(path: Path, step: int, model: nn.Module, opt: torch.optim.Optimizer,
                    ema: nn.Module | None, train_cfg: TrainConfig, model_meta: dict[str, str],
                    history: list[float], wall_seconds: float) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    tensors.update(_optimizer_tensors(opt))
    tensors = {k: v.detach().cpu() for k, v in tensors.items()}
    meta = dict(model_meta)
    meta.update(step=str(step), train_config=json.dumps(dataclasses.asdict(train_cfg)),
                loss_history=json.dumps(history), wall_seconds=f"{wall_seconds:.1f}")
    save_tensors(path, tensors, meta)


def export_weights(ckpt: Path, out: Path, prefix: str = "ema.") -> None:
    """Write the (EMA) weights of a training checkpoint as a standalone safetensors file."""
    tensors, meta = load_tensors(ckpt)
    if not any(k.startswith(prefix) for k in tensors):
        prefix = "model."
    if not any(k.startswith(prefix) for k in tensors):  # already exported: copy the weights as they are
        prefix = meta.get("weights", "weights") + "."
        weights = tensors
    else:
        weights = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    keep = {k: meta[k] for k in ("config", "config_class", "step", "train_config", "wall_seconds",
                                 "diffusion_config", "arch", "loss_history", "trained_on", "init_from") if k in meta}
    keep["weights"] = prefix.rstrip(".")
    save_tensors(out, weights, keep)


# ----------------------------------------------------------------------------- generic loop
class _StepInputs(torch.utils.data.Dataset):
    """Index ``s`` -> the CPU inputs of step ``s`` (lets a DataLoader's workers prepare steps ahead)."""

    def __init__(self, batch_fn: Callable[[int], dict[str, torch.Tensor]], start: int, stop: int):
        self.batch_fn, self.start, self.stop = batch_fn, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batch_fn(self.start + i)


def _step_inputs(batch_fn: Callable[[int], dict[str, torch.Tensor]], start: int, stop: int, workers: int):
    """Yield ``batch_fn(s)`` for s in [start, stop) in order, prepared by ``workers`` processes (0: inline)."""
    if workers <= 0:
        for s in range(start, stop):
            yield batch_fn(s)
        return
    loader = torch.utils.data.DataLoader(_StepInputs(batch_fn, start, stop), batch_size=None, shuffle=False,
                                         num_workers=workers, prefetch_factor=4)
    yield from loader


def train_step(model: nn.Module, forward: nn.Module, opt: torch.optim.Optimizer,
               loss_fn: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor],
               inputs: dict[str, torch.Tensor], autocast_dtype: torch.dtype | None) -> torch.Tensor:
    """One optimisation step of :func:`run_training`: ``loss_fn(forward, inputs)`` under ``torch.autocast`` when
    ``autocast_dtype`` is given (weights, gradients and optimizer moments stay float32), backward, gradient clipping
    to norm 1, ``opt.step()``. ``forward`` is ``model`` or a compiled view of it. Returns the float32 loss (no host
    sync)."""
    device_type = next(model.parameters()).device.type
    with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        loss = loss_fn(forward, inputs).float()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss


def run_training(out: Path, model: nn.Module, cfg: TrainConfig,
                 batch_fn: Callable[[int], dict[str, torch.Tensor]],
                 loss_fn: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor],
                 model_meta: dict[str, str], *, use_ema: bool, resume: bool, max_minutes: float | None,
                 progress: bool = True, device: str | torch.device = "cpu", workers: int = 0,
                 fit_minutes: float | None = None, compile_model: bool = False) -> dict:
    """Optimise ``loss_fn(model, batch_fn(step))`` for ``cfg.steps`` steps with AdamW, checkpoints and resume.

    ``batch_fn(step)`` makes every random input of a step on the CPU from ``(cfg.seed, step)`` (so runs on
    any device see the same data and noise); ``workers`` processes prepare them ahead. ``fit_minutes``
    (fresh runs only) times the second half of the first ``cfg.warmup // 2`` steps (the first half absorbs
    start-up: worker processes, cuDNN autotuning) and then sets ``cfg.steps`` to what fits in that many
    minutes; the LR schedule only depends on ``steps`` after the warm-up, so the stored config reproduces
    the run. ``cfg.autocast`` runs the loss's forward (and so its backward) under ``torch.autocast``;
    ``compile_model`` hands ``loss_fn`` a ``torch.compile``d view of the model (same parameters; checkpoints, EMA
    and optimizer use the model itself). Both are for GPUs, where a small UNet's eager float32 step, not the
    arithmetic, limits the rate (model card, History 16).
    """
    if cfg.autocast not in AUTOCAST_DTYPES:
        raise ValueError(f"autocast must be one of {sorted(AUTOCAST_DTYPES)}, got {cfg.autocast!r}")
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    if device.type == "cuda":   # fixed input shapes: let cuDNN pick the fastest convolution kernels
        torch.backends.cudnn.benchmark = True
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = None
    if use_ema:
        import copy
        ema = copy.deepcopy(model).eval().requires_grad_(False)
    start, history, wall = 0, [], 0.0
    last = out / "last.safetensors"
    if resume and last.exists():
        if fit_minutes is not None:
            raise ValueError("fit_minutes sets the planned length of a fresh run; with --resume give --steps")
        tensors, meta = load_tensors(last)
        stored = TrainConfig(**json.loads(meta["train_config"]))   # fields added later take their defaults
        fixed = ("batch_size", "lr", "warmup", "weight_decay", "ema_decay", "label_smoothing", "label_dropout",
                 "min_snr_gamma", "t_min", "t_max", "autocast", "adversarial_eps", "adversarial_steps", "seed",
                 "image_size", "colour_jitter")
        changed = [f for f in fixed if getattr(stored, f) != getattr(cfg, f)]
        if changed:  # only the planned length and checkpoint period may change (extending a run)
            raise ValueError(f"--resume: {changed} differ from the checkpoint's {stored}; only steps and "
                             "checkpoint_minutes may change")
        tensors = {k: v.to(device) for k, v in tensors.items()}
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if ema is not None:
            ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        _load_optimizer(opt, tensors)
        start, history, wall = int(meta["step"]), json.loads(meta["loss_history"]), float(meta["wall_seconds"])
        print(f"resumed from {last} at step {start}")
    from tqdm.auto import tqdm

    forward = torch.compile(model) if compile_model else model   # shares model's parameters
    autocast_dtype = AUTOCAST_DTYPES[cfg.autocast]
    probe = max(2, cfg.warmup // 2) if fit_minutes is not None else None
    t_probe = None
    horizon = start + 10_000_000 if fit_minutes is not None else cfg.steps
    bar = tqdm(initial=start, total=cfg.steps, disable=not progress, desc=out.name)
    t0, last_ckpt = time.time(), time.time()
    running = None
    done_steps = start
    step = start
    for inputs in _step_inputs(batch_fn, start, horizon, workers):
        if step >= cfg.steps:
            break
        inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        model.train()
        loss = train_step(model, forward, opt, loss_fn, inputs, autocast_dtype)
        if ema is not None:
            with torch.no_grad():
                d = min(cfg.ema_decay, (1 + step) / (10 + step))
                torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - d)
                for be, bm in zip(ema.buffers(), model.buffers()):
                    be.copy_(bm)
        if step % 10 == 0:  # smoothed loss every 10 steps (the only host sync of a step)
            value = loss.item()
            running = value if running is None else 0.8 * running + 0.2 * value
            history.append(round(running, 5))
            bar.set_postfix(loss=f"{running:.4f}")
        bar.update(1)
        if probe is not None and step + 1 - start == probe // 2:
            t_probe = time.time()
        if probe is not None and step + 1 - start == probe:
            # timed from t0, start-up would count as steps (a GPU run once planned half the steps it had time for)
            per_step = (time.time() - t_probe) / (probe - probe // 2)
            fitted = start + probe + int((60 * fit_minutes - (time.time() - t0)) / per_step)
            cfg = dataclasses.replace(cfg, steps=max(cfg.warmup + 1, fitted))
            bar.total = cfg.steps
            print(f"{per_step * 1e3:.1f} ms/step: planning {cfg.steps} steps to fit {fit_minutes} minutes")
        elapsed = wall + time.time() - t0
        done = step + 1 == cfg.steps
        out_of_time = max_minutes is not None and time.time() - t0 > 60 * max_minutes
        if done or out_of_time or time.time() - last_ckpt > 60 * cfg.checkpoint_minutes:
            save_checkpoint(last, step + 1, model, opt, ema, cfg, model_meta, history, elapsed)
            last_ckpt = time.time()
        done_steps = step + 1
        step += 1
        if out_of_time:
            print(f"stopping after {max_minutes} minutes at step {step}; --resume continues")
            break
    bar.close()
    return {"step": done_steps, "wall_seconds": wall + time.time() - t0, "history": history, "config": cfg}


# ----------------------------------------------------------------------------- DDPM
TINY_UNET = UNetConfig(image_size=32, model_channels=32, out_channels=3, num_res_blocks=1,
                       attention_resolutions=(8,), channel_mult=(1, 2, 2), num_classes=data.NUM_CLASSES,
                       num_head_channels=32, use_scale_shift_norm=True, resblock_updown=True)
TINY_DIFFUSION = DiffusionConfig(num_steps=1000, schedule="linear", learn_sigma=False, fixed_variance="small")


SHAPE_PREFIX = "shape."   # step inputs that carry the drawn dataset parameters instead of rendered images


def ddpm_step_inputs(step: int, cfg: TrainConfig, num_timesteps: int, render: bool = True) -> dict[str, torch.Tensor]:
    """Every random input of DDPM step ``step`` (CPU, from ``(cfg.seed, step)``): x_0 ``[B,3,H,W]`` in [-1, 1],
    labels ``[B]`` (a ``cfg.label_dropout`` fraction replaced by the null class id ``data.NUM_CLASSES``),
    timesteps ``[B]`` and the noise eps ``[B,3,H,W]`` of the simple loss.

    ``render=False`` leaves the images unrendered: the inputs then carry the dataset's drawn parameters
    (``shape.*``, :func:`data.make_params`) and :func:`step_images` renders them on the training device (on a
    GPU, rendering in the CPU workers is what limits the step rate; model card, History 11)."""
    params = data.make_params("train", step * cfg.batch_size, cfg.batch_size)
    g = step_generator(cfg.seed, step)
    t = torch.randint(cfg.t_min, cfg.t_max or num_timesteps, (cfg.batch_size,), generator=g)
    noise = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size, generator=g)
    y = params["label"]
    if cfg.label_dropout > 0:  # drawn after t and eps, so runs without dropout keep their exact batches
        drop = torch.rand(cfg.batch_size, generator=g) < cfg.label_dropout
        y = torch.where(drop, torch.full_like(y, data.NUM_CLASSES), y)
    if not render:
        return {"y": y, "t": t, "noise": noise, **{SHAPE_PREFIX + k: v for k, v in params.items()}}
    return {"x0": data.render_tensors(params, cfg.image_size).images, "y": y, "t": t, "noise": noise}


def step_images(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """x_0 ``[B, 3, H, W]`` in [-1, 1] of a step's inputs: given, or rendered (on the inputs' device) from the
    drawn parameters of ``ddpm_step_inputs(..., render=False)``; H = W = the noise's size."""
    if "x0" in inputs:
        return inputs["x0"]
    params = {k[len(SHAPE_PREFIX):]: v for k, v in inputs.items() if k.startswith(SHAPE_PREFIX)}
    return data.render_tensors(params, inputs["noise"].shape[-1]).images


def ddpm_loss_fn(diffusion: GaussianDiffusion, min_snr_gamma: float = 0.0):
    """Mean simple loss over the batch; with ``min_snr_gamma`` > 0 each example is weighted by
    ``diffusion.min_snr_weight`` (Min-SNR-gamma)."""
    def loss_fn(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        per_example = diffusion.training_loss(model, step_images(inputs), inputs["t"], y=inputs["y"],
                                              noise=inputs["noise"])
        if min_snr_gamma > 0:
            per_example = per_example * diffusion.min_snr_weight(inputs["t"], min_snr_gamma).to(per_example.device)
        return per_example.mean()
    return loss_fn


def init_from_weights(model: UNet, path: Path) -> None:
    """Start a run from exported UNet weights (fine-tuning). A file without the null class seeds a model with
    one: the null class's embedding starts as the mean of the class embeddings (the average condition). A file
    whose UNet has one ResBlock per level fewer than ``model`` (and is otherwise the same) seeds it through
    :func:`~saliency_lib.unet.grow_res_blocks`: the same function, more capacity (model card History 32)."""
    tensors, meta = load_tensors(path)
    if "config" in meta:
        stored = config_from_metadata(meta, UNetConfig)
        if dataclasses.replace(stored, num_res_blocks=model.config.num_res_blocks) == model.config \
                and stored.num_res_blocks + 1 == model.config.num_res_blocks:
            shallow = UNet(stored)
            load_module_weights(shallow, tensors, repr(str(path)))
            tensors = grow_res_blocks(shallow).state_dict()
    state = model.state_dict()
    key = "label_emb.weight"
    if key in tensors and key in state and tensors[key].shape[0] + 1 == state[key].shape[0] and model.config.null_class:
        tensors[key] = torch.cat([tensors[key], tensors[key].mean(0, keepdim=True)])
    load_module_weights(model, tensors, repr(str(path)))


def train_ddpm(out: Path, cfg: TrainConfig, unet_cfg: UNetConfig = TINY_UNET,
               diff_cfg: DiffusionConfig = TINY_DIFFUSION, resume: bool = False,
               max_minutes: float | None = None, progress: bool = True, device: str = "cpu",
               workers: int = 0, fit_minutes: float | None = None, init: Path | None = None,
               render_on_device: bool = False, compile_model: bool = False) -> dict:
    """Train the class-conditional DDPM (``init``: start from these exported weights, e.g. to fine-tune
    with label dropout for classifier-free guidance; ``render_on_device``: the workers draw the dataset's
    parameters and the training device renders the images, see :func:`ddpm_step_inputs`; ``compile_model``:
    see :func:`run_training`)."""
    check_t_range(cfg, diff_cfg.num_steps)
    refuse_adversarial(cfg, "DDPM")
    refuse_colour_jitter(cfg, "DDPM")
    if cfg.label_dropout > 0 and not unet_cfg.null_class:
        raise ValueError("label_dropout needs a UNet with a null class (--unet '{\"null_class\": true}')")
    last = out / "last.safetensors"
    if resume and last.exists():
        stored = DiffusionConfig(**json.loads(read_metadata(last)["diffusion_config"]))
        if stored != diff_cfg:
            raise ValueError(f"--resume: the checkpoint was trained with {stored}, not {diff_cfg}")
    torch.manual_seed(cfg.seed)
    model = UNet(unet_cfg)
    if init is not None:
        init_from_weights(model, init)
    diffusion = GaussianDiffusion.from_config(diff_cfg)
    meta = config_to_metadata(unet_cfg)
    if init is not None:
        meta["init_from"] = str(init)
    meta["diffusion_config"] = json.dumps(dataclasses.asdict(diff_cfg))
    meta["trained_on"] = torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else "cpu"
    batch_fn = functools.partial(ddpm_step_inputs, cfg=cfg, num_timesteps=diffusion.num_timesteps,
                                 render=not render_on_device)
    return run_training(out, model, cfg, batch_fn, ddpm_loss_fn(diffusion, cfg.min_snr_gamma), meta,
                        use_ema=cfg.ema_decay > 0, resume=resume, max_minutes=max_minutes, progress=progress,
                        device=device, workers=workers, fit_minutes=fit_minutes, compile_model=compile_model)


# ----------------------------------------------------------------------------- noise-aware classifier
def _noisy_resnet(init: Path | None, image_size: int, num_timesteps: int) -> tuple[nn.Module, dict[str, str]]:
    """A :class:`~saliency_lib.classifiers.NoisyClassifier`: randomly initialised (the caller seeds torch), or
    (``init``) from a clean small ResNet (``train classifier --arch resnet``), whose stem gains a zero-initialised
    noise-level channel, or from a trained NoisyClassifier (to fine-tune it, e.g. adversarially)."""
    from .classifiers import NoisyClassifier, NoisyClassifierConfig, load_classifier, load_noisy_classifier

    if init is not None and read_metadata(init).get("config_class") == NoisyClassifierConfig.__name__:
        model = load_noisy_classifier(init)
        if (model.config.image_size, model.config.num_timesteps) != (image_size, num_timesteps):
            raise ValueError(f"--init {init}: a noise-aware classifier for {model.config.image_size}px and "
                             f"T = {model.config.num_timesteps}, not the {image_size}px and T = {num_timesteps} "
                             "trained here")
        return model, config_to_metadata(model.config)
    clean = load_classifier(init) if init is not None else None
    model = NoisyClassifier(NoisyClassifierConfig(image_size=image_size, num_timesteps=num_timesteps,
                                                  **({} if clean is None else {"width": clean.config.width})))
    if clean is not None:
        model.init_from_clean(clean)
    return model, config_to_metadata(model.config)


def _noisy_unet_encoder(init: Path | None, image_size: int, num_timesteps: int) -> tuple[nn.Module, dict[str, str]]:
    """An :class:`~saliency_lib.unet.EncoderUNet` (guided-diffusion's classifier): the encoder of the DDPM in
    ``init`` (a UNet weights file: its trained features of x_t, :meth:`~saliency_lib.unet.EncoderUNet.init_from_unet`)
    or a previous run's EncoderUNet weights (to continue on other noise levels). Needs ``init``: trained from
    scratch, this encoder did not leave chance level (model card, History 8)."""
    from .unet import EncoderUNet, EncoderUNetConfig, load_unet
    from .weights import config_from_metadata

    if init is None:
        raise ValueError("--arch unet-encoder needs --init: DDPM weights (a UNet) or an EncoderUNet classifier")
    meta = read_metadata(init)
    if meta.get("config_class") == EncoderUNetConfig.__name__:
        model = EncoderUNet(config_from_metadata(meta, EncoderUNetConfig))
        load_module_weights(model, load_tensors(init)[0], repr(str(init)))
    else:
        unet = load_unet(str(init))
        model = EncoderUNet(EncoderUNetConfig.of_unet(unet.config, data.NUM_CLASSES, num_timesteps))
        model.init_from_unet(unet)
    if model.config.image_size != image_size or model.config.num_timesteps != num_timesteps:
        raise ValueError(f"{init}: an encoder for {model.config.image_size}px images and T = "
                         f"{model.config.num_timesteps}, not {image_size}px and T = {num_timesteps}")
    return model, config_to_metadata(model.config)


NOISY_CLASSIFIER_ARCHS = {"resnet": _noisy_resnet, "unet-encoder": _noisy_unet_encoder}


def l2_pgd(model: nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, eps: float,
           steps: int) -> torch.Tensor:
    """An L2 PGD attack (Madry et al. 2018) on a noise-aware classifier ``model(x_t, t)``: ``x + delta`` with
    ||delta||_2 <= ``eps`` per sample (over its ``[3, H, W]`` values, no clamp: x_t is unbounded) that raises the
    cross-entropy of the true classes ``y``, found by ``steps`` normalised-gradient ascent steps of size
    2.5 * eps / steps from delta = 0 (deterministic). ``x`` ``[N, 3, H, W]`` is left untouched; the model's
    train/eval mode is restored, the attack itself runs in eval mode (BatchNorm statistics are not updated by
    the attack's forwards). Returns the detached adversarial inputs."""
    if eps <= 0 or steps < 1:
        raise ValueError(f"l2_pgd needs eps > 0 and steps >= 1, got eps={eps}, steps={steps}")
    was_training = model.training
    model.eval()
    alpha = 2.5 * eps / steps
    delta = torch.zeros_like(x)
    try:
        for _ in range(steps):
            delta.requires_grad_(True)
            loss = nn.functional.cross_entropy(model(x.detach() + delta, t), y)
            grad, = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                delta = delta + alpha * grad / norm
                dnorm = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                delta = delta * (eps / dnorm.clamp_min(eps))      # project onto the eps-ball
    finally:
        model.train(was_training)
    return (x + delta).detach()


def train_noisy_classifier(out: Path, cfg: TrainConfig, diff_cfg: DiffusionConfig = TINY_DIFFUSION,
                           init: Path | None = None, resume: bool = False, max_minutes: float | None = None,
                           progress: bool = True, workers: int = 0, device: str = "cpu",
                           render_on_device: bool = False, arch: str = "resnet") -> dict:
    """Train p(y | x_t, t) on x_t ~ q(x_t | x_0) (Eq. 2-3) of the train split, for classifier guidance; t is
    uniform in [cfg.t_min, cfg.t_max).

    ``arch``: ``"resnet"`` (:class:`~saliency_lib.classifiers.NoisyClassifier`; ``init`` an optional clean small
    ResNet) or ``"unet-encoder"`` (:class:`~saliency_lib.unet.EncoderUNet`; ``init`` DDPM weights or a previous
    EncoderUNet); see ``NOISY_CLASSIFIER_ARCHS``. ``device`` and ``render_on_device`` as for :func:`train_ddpm`.
    Writes ``<out>/model.safetensors`` (the plain weights; no EMA) next to the checkpoint.
    """
    from .classifiers import save_model

    if cfg.label_dropout > 0:
        raise ValueError("label_dropout is for the DDPM; a classifier must see every label")
    refuse_colour_jitter(cfg, "noise-aware classifier")
    if arch not in NOISY_CLASSIFIER_ARCHS:
        raise ValueError(f"unknown noise-aware classifier arch {arch!r}; expected one of "
                         f"{sorted(NOISY_CLASSIFIER_ARCHS)}")
    diffusion = GaussianDiffusion.from_config(diff_cfg)
    check_t_range(cfg, diffusion.num_timesteps)
    torch.manual_seed(cfg.seed)
    model, meta = NOISY_CLASSIFIER_ARCHS[arch](init, cfg.image_size, diffusion.num_timesteps)
    meta["diffusion_config"] = json.dumps(dataclasses.asdict(diff_cfg))
    if init is not None:
        meta["init_from"] = str(init)

    def loss_fn(m: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
        x_t = diffusion.q_sample(step_images(b), b["t"], noise=b["noise"])
        if cfg.adversarial_eps > 0:   # robust training: the loss at the worst x_t within the L2 ball
            x_t = l2_pgd(m, x_t, b["t"], b["y"], cfg.adversarial_eps, cfg.adversarial_steps)
        return nn.functional.cross_entropy(m(x_t, b["t"]), b["y"], label_smoothing=cfg.label_smoothing)

    # the DDPM's step inputs (x_0, labels, t, eps from (seed, step)); label dropout has no meaning here
    batch_fn = functools.partial(ddpm_step_inputs, cfg=cfg, num_timesteps=diffusion.num_timesteps,
                                 render=not render_on_device)
    result = run_training(out, model, cfg, batch_fn, loss_fn, meta, use_ema=False, resume=resume,
                          max_minutes=max_minutes, progress=progress, workers=workers, device=device)
    model.cpu()
    save_model(model.eval(), out / "model.safetensors",
               {"train_config": json.dumps(dataclasses.asdict(result["config"])), "step": str(result["step"]),
                "wall_seconds": f"{result['wall_seconds']:.1f}", **{k: meta[k] for k in ("diffusion_config", "init_from")
                                                                    if k in meta}})
    return result


# ----------------------------------------------------------------------------- discriminator (History 20)
def load_fakes(path: Path, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Generated samples (``scripts/sample_fakes.py``): ``images`` ``[N, 3, S, S]`` in [-1, 1] and the classes they
    were conditioned on, ``labels`` ``[N]`` in [0, K)."""
    tensors, _ = load_tensors(path)
    images, labels = tensors.get("images"), tensors.get("labels")
    if images is None or labels is None:
        raise ValueError(f"{path}: expected tensors 'images' and 'labels' (scripts/sample_fakes.py), got {sorted(tensors)}")
    if images.ndim != 4 or tuple(images.shape[1:]) != (3, image_size, image_size) or labels.shape != images.shape[:1]:
        raise ValueError(f"{path}: expected images [N, 3, {image_size}, {image_size}] and labels [N], got "
                         f"{tuple(images.shape)} and {tuple(labels.shape)}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= data.NUM_CLASSES):
        raise ValueError(f"{path}: labels must be class ids in [0, {data.NUM_CLASSES})")
    return images.float(), labels.long()


def discriminator_step_inputs(step: int, cfg: TrainConfig, num_timesteps: int, fakes: torch.Tensor,
                              fake_labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every random input of discriminator step ``step``: the first half of the batch real (the train split's
    samples ``step * B/2 ...``), the second half fakes drawn with replacement from ``fakes`` ``[M, 3, H, W]``;
    x_0 ``[B, 3, H, W]`` in [-1, 1], the conditioning classes ``y`` ``[B]``, ``real`` ``[B]`` (1 real, 0 fake), and the
    timesteps and noise that take both to x_t."""
    half = cfg.batch_size // 2
    params = data.make_params("train", step * half, half)
    g = step_generator(cfg.seed, step)
    pick = torch.randint(0, fakes.shape[0], (cfg.batch_size - half,), generator=g)
    t = torch.randint(cfg.t_min, cfg.t_max or num_timesteps, (cfg.batch_size,), generator=g)
    noise = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size, generator=g)
    real = torch.cat([torch.ones(half), torch.zeros(cfg.batch_size - half)])
    return {"x0": torch.cat([data.render_tensors(params, cfg.image_size).images, fakes[pick]]),
            "y": torch.cat([params["label"], fake_labels[pick]]), "real": real, "t": t, "noise": noise}


def discriminator_loss_fn(diffusion: GaussianDiffusion):
    """Binary cross-entropy of the class-y logit, log(d / (1 - d)), on real against generated x_t."""
    def loss_fn(m: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
        x_t = diffusion.q_sample(b["x0"], b["t"], noise=b["noise"])
        logit = m(x_t, b["t"]).gather(1, b["y"].view(-1, 1)).squeeze(1)
        return nn.functional.binary_cross_entropy_with_logits(logit, b["real"])
    return loss_fn


def train_discriminator(out: Path, cfg: TrainConfig, fakes_path: Path, init: Path | None = None,
                        holdout: int = 256, diff_cfg: DiffusionConfig = TINY_DIFFUSION, resume: bool = False,
                        max_minutes: float | None = None, progress: bool = True) -> dict:
    """Train the discriminator d(x_t, y, t) of discriminator guidance (Kim et al. 2022; ``guidance.py``) on noised
    train-split images (real) against noised generated samples (fake) at t uniform in [cfg.t_min, cfg.t_max).

    A :class:`~saliency_lib.classifiers.NoisyClassifier` whose class-y output is the logit log(d / (1 - d)):
    ``init`` a noise-aware classifier's weights (its features of x_t; the default guidance's classifier), or None
    for a fresh one. The last ``holdout`` fakes are kept out of training (to score the discriminator on samples it
    has not seen). Writes ``<out>/model.safetensors`` (loadable with ``load_noisy_classifier``).
    """
    from .classifiers import NoisyClassifier, NoisyClassifierConfig, load_noisy_classifier, save_model

    if cfg.label_dropout > 0 or cfg.label_smoothing > 0:
        raise ValueError("label_dropout and label_smoothing have no meaning for the discriminator")
    if cfg.batch_size < 2:
        raise ValueError(f"the discriminator's batch is half real, half fake: need batch_size >= 2, got {cfg.batch_size}")
    diffusion = GaussianDiffusion.from_config(diff_cfg)
    check_t_range(cfg, diffusion.num_timesteps)
    refuse_adversarial(cfg, "discriminator")
    refuse_colour_jitter(cfg, "discriminator")
    fakes, fake_labels = load_fakes(fakes_path, cfg.image_size)
    if not 0 <= holdout < fakes.shape[0]:
        raise ValueError(f"holdout must leave fakes to train on: 0 <= holdout < {fakes.shape[0]}, got {holdout}")
    fakes, fake_labels = fakes[:fakes.shape[0] - holdout], fake_labels[:fakes.shape[0] - holdout]
    torch.manual_seed(cfg.seed)
    if init is not None:
        model = load_noisy_classifier(init)
        if not isinstance(model, NoisyClassifier):
            raise ValueError(f"{init}: the discriminator starts from a NoisyClassifier, got {type(model).__name__}")
    else:
        model = NoisyClassifier(NoisyClassifierConfig(image_size=cfg.image_size, num_timesteps=diffusion.num_timesteps))
    if model.config.image_size != cfg.image_size or model.config.num_timesteps != diffusion.num_timesteps:
        raise ValueError(f"{init}: a classifier for {model.config.image_size}px images and T = "
                         f"{model.config.num_timesteps}, not {cfg.image_size}px and T = {diffusion.num_timesteps}")
    meta = {**config_to_metadata(model.config), "diffusion_config": json.dumps(dataclasses.asdict(diff_cfg)),
            "role": "discriminator", "fakes": str(fakes_path), "holdout_fakes": str(holdout)}
    if init is not None:
        meta["init_from"] = str(init)
    batch_fn = functools.partial(discriminator_step_inputs, cfg=cfg, num_timesteps=diffusion.num_timesteps,
                                 fakes=fakes, fake_labels=fake_labels)
    result = run_training(out, model, cfg, batch_fn, discriminator_loss_fn(diffusion), meta, use_ema=False,
                          resume=resume, max_minutes=max_minutes, progress=progress)
    save_model(model.cpu().eval(), out / "model.safetensors",
               {"train_config": json.dumps(dataclasses.asdict(result["config"])), "step": str(result["step"]),
                "wall_seconds": f"{result['wall_seconds']:.1f}",
                **{k: v for k, v in meta.items() if k not in ("config", "config_class")}})
    return result


# ----------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m saliency_lib.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["ddpm", "classifier", "segmenter", "noisy-classifier", "discriminator", "export"])
    p.add_argument("--out", type=Path, required=True, help="checkpoint folder (or file, for export)")
    p.add_argument("--arch", default="resnet",
                   help="classifier: resnet or cnn; noisy-classifier: resnet or unet-encoder (a DDPM's encoder; --init)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.safetensors")
    p.add_argument("--minutes", type=float, default=None, help="stop (with a checkpoint) after this long")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--from-ckpt", type=Path, help="export: training checkpoint to export")
    p.add_argument("--device", default="cpu", help="ddpm, noisy-classifier: torch device to train on (cpu, cuda)")
    p.add_argument("--workers", type=int, default=0,
                   help="ddpm, noisy-classifier: processes preparing batches ahead (0: inline)")
    p.add_argument("--render-on-device", action="store_true",
                   help="ddpm, noisy-classifier: the workers draw the dataset's parameters, --device renders the "
                        "images (on a GPU, rendering in the workers limits the step rate)")
    p.add_argument("--compile", action="store_true",
                   help="ddpm: torch.compile the UNet's training forward (for GPUs; see run_training)")
    p.add_argument("--fit-minutes", type=float, default=None,
                   help="ddpm, fresh runs: time the warm-up, then plan as many steps as fit in this many minutes")
    p.add_argument("--init", type=Path, default=None,
                   help="ddpm, fresh runs: start from these exported UNet weights (fine-tuning); noisy-classifier: "
                        "from this clean small ResNet (--arch resnet), or DDPM / EncoderUNet weights "
                        "(--arch unet-encoder)")
    p.add_argument("--fakes", type=Path, default=None,
                   help="discriminator: generated samples to tell from the data (scripts/sample_fakes.py)")
    p.add_argument("--holdout-fakes", type=int, default=256,
                   help="discriminator: the last this many fakes are kept out of training")
    p.add_argument("--unet", type=json.loads, default=None,
                   help='ddpm: JSON overrides of the tiny UNet config, e.g. \'{"num_res_blocks": 2}\'')
    p.add_argument("--diffusion", type=json.loads, default=None,
                   help='ddpm: JSON overrides of the tiny diffusion config, e.g. \'{"prediction": "v"}\'')
    for f in dataclasses.fields(TrainConfig):
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    overrides = {f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig) if getattr(a, f.name) is not None}
    if a.what == "export":
        export_weights(a.from_ckpt, a.out)
        return
    if a.what == "ddpm":
        unet_cfg = dataclasses.replace(TINY_UNET, **{k: tuple(v) if isinstance(v, list) else v
                                                     for k, v in (a.unet or {}).items()})
        diff_cfg = dataclasses.replace(TINY_DIFFUSION, **(a.diffusion or {}))
        result = train_ddpm(a.out, TrainConfig(**overrides), unet_cfg=unet_cfg, diff_cfg=diff_cfg, resume=a.resume,
                            max_minutes=a.minutes, device=a.device, workers=a.workers, fit_minutes=a.fit_minutes,
                            init=a.init, render_on_device=a.render_on_device, compile_model=a.compile)
    elif a.what == "noisy-classifier":
        result = train_noisy_classifier(a.out, TrainConfig(**{"steps": 4000, "batch_size": 128, "lr": 1e-3,
                                                              "warmup": 100, "weight_decay": 5e-4, "ema_decay": 0.0,
                                                              **overrides}),
                                        init=a.init, resume=a.resume, max_minutes=a.minutes, workers=a.workers,
                                        device=a.device, render_on_device=a.render_on_device, arch=a.arch)
    elif a.what == "discriminator":
        if a.fakes is None:
            p.error("discriminator needs --fakes (scripts/sample_fakes.py)")
        result = train_discriminator(a.out, TrainConfig(**{"steps": 2000, "batch_size": 128, "lr": 5e-4, "warmup": 100,
                                                           "weight_decay": 5e-4, "ema_decay": 0.0, **overrides}),
                                     a.fakes, init=a.init, holdout=a.holdout_fakes, resume=a.resume,
                                     max_minutes=a.minutes)
    else:
        from .classifiers import train_classifier_cli
        result = train_classifier_cli(a.what, a.arch, a.out, overrides, resume=a.resume, max_minutes=a.minutes)
    print(json.dumps({"step": result["step"], "wall_seconds": round(result["wall_seconds"], 1)}))


if __name__ == "__main__":
    main()
