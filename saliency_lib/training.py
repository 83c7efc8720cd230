"""The training loop every model of the ``tiny`` preset is trained with: AdamW with a warm-up and cosine schedule,
an optional EMA of the weights, gradient clipping, atomic safetensors checkpoints and exact resume.

Reproducible from a seed: the batch of step s is made by ``batch_fn(s)``, whose every random draw comes from
:func:`step_generator` seeded with ``(seed, s)``, so a run resumed from a checkpoint continues exactly as the
uninterrupted run would have. Checkpoints hold the model, the EMA and the optimizer moments, with the job's
config and the step in the metadata; they are written atomically every ``checkpoint_minutes``.
The jobs (what is trained, on which inputs, with which loss) are in :mod:`saliency_lib.train`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import SaliencyNoiseError, check_writable_dir
from .weights import load_tensors, save_tensors


@dataclass(frozen=True)
class LoopConfig:
    """What every training job shares; each job's config (:mod:`saliency_lib.train`) adds its own fields."""
    steps: int = 6000                 # optimizer steps planned (the LR schedule spans them)
    batch_size: int = 64              # images per step
    lr: float = 4e-4                  # peak AdamW learning rate
    warmup: int = 200                 # linear LR warm-up steps
    weight_decay: float = 0.0         # AdamW decoupled weight decay
    ema_decay: float = 0.0            # EMA of the weights (0 disables it)
    autocast: str = "none"            # "bf16": forward and backward under torch.autocast(bfloat16) (weights, optimizer
                                      # and the loss stay float32); "none": float32 throughout
    seed: int = 0                     # seeds the init and every per-step draw
    image_size: int = 32              # dataset resolution
    checkpoint_minutes: float = 5.0   # wall-clock period of atomic checkpoints

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.warmup < 0 or self.lr <= 0 or self.image_size < 1:
            raise SaliencyNoiseError(f"{type(self).__name__}: need steps >= 1, batch_size >= 1, warmup >= 0, lr > 0 "
                                     f"and image_size >= 1, got {self}")
        if not 0 <= self.ema_decay < 1:
            raise SaliencyNoiseError(f"{type(self).__name__}: ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.autocast not in AUTOCAST_DTYPES:
            raise SaliencyNoiseError(f"{type(self).__name__}: autocast must be one of {sorted(AUTOCAST_DTYPES)}, "
                                     f"got {self.autocast!r}")

    @classmethod
    def from_json(cls, text: str) -> "LoopConfig":
        """The config a checkpoint stored (fields this version does not know are dropped, new ones default)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})


AUTOCAST_DTYPES = {"none": None, "bf16": torch.bfloat16}



def lr_at(step: int, cfg: LoopConfig) -> float:
    """Linear warm-up then cosine decay to 10% of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


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
                    ema: nn.Module | None, train_cfg: LoopConfig, model_meta: dict[str, str],
                    loss_curve: list[float], wall_seconds: float) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    tensors.update(_optimizer_tensors(opt))
    tensors = {k: v.detach().cpu() for k, v in tensors.items()}
    meta = dict(model_meta)
    meta.update(step=str(step), train_config=json.dumps(dataclasses.asdict(train_cfg)),
                loss_curve=json.dumps(loss_curve), wall_seconds=f"{wall_seconds:.1f}")
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
                                 "diffusion_config", "arch", "loss_curve", "trained_on", "init_from") if k in meta}
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


def run_training(out: Path, model: nn.Module, cfg: LoopConfig,
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
    ``compile_model`` hands ``loss_fn`` a view of the model compiled by ``torch.compile`` (same parameters; checkpoints, EMA
    and optimizer use the model itself). Both are for GPUs, where a small UNet's eager float32 step, not the
    arithmetic, limits the rate.
    """
    out = check_writable_dir(out, "checkpoint folder")
    device = torch.device(device)
    if device.type == "cuda":   # fixed input shapes: let cuDNN pick the fastest convolution kernels
        torch.backends.cudnn.benchmark = True
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = None
    if use_ema:
        ema = copy.deepcopy(model).eval().requires_grad_(False)
    start, loss_curve, wall = 0, [], 0.0
    last = out / "last.safetensors"
    if resume and not last.exists():
        raise SaliencyNoiseError(f"--resume: there is no checkpoint {last} to resume from; drop --resume to start a "
                                 "fresh run, or give the --out of the run to continue")
    if resume:
        if fit_minutes is not None:
            raise SaliencyNoiseError("fit_minutes sets the planned length of a fresh run; with --resume give --steps")
        tensors, meta = load_tensors(last)
        stored = type(cfg).from_json(meta["train_config"])
        changed = [f.name for f in dataclasses.fields(cfg)
                   if f.name not in ("steps", "checkpoint_minutes") and getattr(stored, f.name) != getattr(cfg, f.name)]
        if changed:  # only the planned length and checkpoint period may change (extending a run)
            raise SaliencyNoiseError(f"--resume: {changed} differ from the checkpoint's {stored}; only steps and "
                                     "checkpoint_minutes may change")
        tensors = {k: v.to(device) for k, v in tensors.items()}
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if ema is not None:
            ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        _load_optimizer(opt, tensors)
        start, wall = int(meta["step"]), float(meta["wall_seconds"])
        loss_curve = json.loads(meta.get("loss_curve", "[]"))
        print(f"resumed from {last} at step {start}")
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
            loss_curve.append(round(running, 5))
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
            save_checkpoint(last, step + 1, model, opt, ema, cfg, model_meta, loss_curve, elapsed)
            last_ckpt = time.time()
        done_steps = step + 1
        step += 1
        if out_of_time:
            print(f"stopping after {max_minutes} minutes at step {step}; --resume continues")
            break
    bar.close()
    return {"step": done_steps, "wall_seconds": wall + time.time() - t0, "loss_curve": loss_curve, "config": cfg}
