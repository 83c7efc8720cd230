"""Training entry points of the ``tiny`` preset: the class-conditional DDPM, classifiers and the segmenter.

    python -m saliency_lib.train ddpm --out checkpoints/ddpm --minutes 110
    python -m saliency_lib.train classifier --arch resnet --out checkpoints/ig_classifier ...
    python -m saliency_lib.train segmenter --out checkpoints/segmenter ...

Reproducible from a seed: the batch of step s holds dataset samples ``s*B .. s*B+B-1`` of the train
split and every random draw of step s comes from a generator seeded with ``(seed, s)``, so a run
resumed from a checkpoint continues exactly as the uninterrupted run would have. Checkpoints are
safetensors (model, EMA, optimizer moments) with the configs and the step in the metadata, written
atomically every ``checkpoint_minutes``; ``--resume`` continues from ``<out>/last.safetensors``.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from .unet import UNet, UNetConfig
from .weights import config_to_metadata, load_tensors, save_tensors


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 6000                 # optimizer steps planned (the LR schedule spans them)
    batch_size: int = 64              # images per step
    lr: float = 4e-4                  # peak Adam learning rate
    warmup: int = 200                 # linear LR warm-up steps
    weight_decay: float = 0.0         # AdamW decoupled weight decay
    ema_decay: float = 0.999          # EMA of the weights (DDPM only; 0 disables)
    label_smoothing: float = 0.0      # classifiers only: cross-entropy label smoothing
    seed: int = 0                     # seeds the init and every per-step draw
    image_size: int = 32              # dataset resolution
    checkpoint_minutes: float = 5.0   # wall-clock period of atomic checkpoints


def lr_at(step: int, cfg: TrainConfig) -> float:
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
                    ema: nn.Module | None, train_cfg: TrainConfig, model_meta: dict[str, str],
                    history: list[float], wall_seconds: float) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    tensors.update(_optimizer_tensors(opt))
    meta = dict(model_meta)
    meta.update(step=str(step), train_config=json.dumps(dataclasses.asdict(train_cfg)),
                loss_history=json.dumps(history), wall_seconds=f"{wall_seconds:.1f}")
    save_tensors(path, tensors, meta)


def export_weights(ckpt: Path, out: Path, prefix: str = "ema.") -> None:
    """Write the (EMA) weights of a training checkpoint as a standalone safetensors file."""
    tensors, meta = load_tensors(ckpt)
    if not any(k.startswith(prefix) for k in tensors):
        prefix = "model."
    weights = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    keep = {k: meta[k] for k in ("config", "config_class", "step", "train_config", "wall_seconds",
                                 "diffusion_config", "arch") if k in meta}
    keep["weights"] = prefix.rstrip(".")
    save_tensors(out, weights, keep)


# ----------------------------------------------------------------------------- generic loop
def run_training(out: Path, model: nn.Module, cfg: TrainConfig, loss_fn: Callable[[nn.Module, int], torch.Tensor],
                 model_meta: dict[str, str], *, use_ema: bool, resume: bool, max_minutes: float | None,
                 progress: bool = True) -> dict:
    """Optimise ``loss_fn(model, step)`` for ``cfg.steps`` steps with AdamW, checkpoints and resume."""
    out.mkdir(parents=True, exist_ok=True)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = None
    if use_ema:
        import copy
        ema = copy.deepcopy(model).eval().requires_grad_(False)
    start, history, wall = 0, [], 0.0
    last = out / "last.safetensors"
    if resume and last.exists():
        tensors, meta = load_tensors(last)
        stored = TrainConfig(**json.loads(meta["train_config"]))
        fixed = ("batch_size", "lr", "warmup", "weight_decay", "ema_decay", "label_smoothing", "seed", "image_size")
        changed = [f for f in fixed if getattr(stored, f) != getattr(cfg, f)]
        if changed:  # only the planned length and checkpoint period may change (extending a run)
            raise ValueError(f"--resume: {changed} differ from the checkpoint's {stored}; only steps and "
                             "checkpoint_minutes may change")
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if ema is not None:
            ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        _load_optimizer(opt, tensors)
        start, history, wall = int(meta["step"]), json.loads(meta["loss_history"]), float(meta["wall_seconds"])
        print(f"resumed from {last} at step {start}")
    from tqdm.auto import tqdm

    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not progress, desc=out.name)
    t0, last_ckpt = time.time(), time.time()
    running = None
    done_steps = start
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        model.train()
        loss = loss_fn(model, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if ema is not None:
            with torch.no_grad():
                d = min(cfg.ema_decay, (1 + step) / (10 + step))
                for pe, pm in zip(ema.parameters(), model.parameters()):
                    pe.lerp_(pm, 1 - d)
                for be, bm in zip(ema.buffers(), model.buffers()):
                    be.copy_(bm)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 10 == 0:  # smoothed loss every 10 steps
            history.append(round(running, 5))
        bar.set_postfix(loss=f"{running:.4f}")
        elapsed = wall + time.time() - t0
        done = step + 1 == cfg.steps
        out_of_time = max_minutes is not None and time.time() - t0 > 60 * max_minutes
        if done or out_of_time or time.time() - last_ckpt > 60 * cfg.checkpoint_minutes:
            save_checkpoint(last, step + 1, model, opt, ema, cfg, model_meta, history, elapsed)
            last_ckpt = time.time()
        done_steps = step + 1
        if out_of_time:
            print(f"stopping after {max_minutes} minutes at step {step + 1}; --resume continues")
            break
    return {"step": done_steps, "wall_seconds": wall + time.time() - t0, "history": history}


# ----------------------------------------------------------------------------- DDPM
TINY_UNET = UNetConfig(image_size=32, model_channels=32, out_channels=3, num_res_blocks=1,
                       attention_resolutions=(8,), channel_mult=(1, 2, 2), num_classes=data.NUM_CLASSES,
                       num_head_channels=32, use_scale_shift_norm=True, resblock_updown=True)
TINY_DIFFUSION = DiffusionConfig(num_steps=1000, schedule="linear", learn_sigma=False, fixed_variance="small")


def ddpm_loss_fn(diffusion: GaussianDiffusion, cfg: TrainConfig, cond_drop: float = 0.0):
    def loss_fn(model: nn.Module, step: int) -> torch.Tensor:
        batch = data.make_batch("train", step * cfg.batch_size, cfg.batch_size, cfg.image_size)
        g = step_generator(cfg.seed, step)
        t = torch.randint(0, diffusion.num_timesteps, (cfg.batch_size,), generator=g)
        return diffusion.training_loss(model, batch.images, t, y=batch.labels, generator=g).mean()
    return loss_fn


def train_ddpm(out: Path, cfg: TrainConfig, unet_cfg: UNetConfig = TINY_UNET,
               diff_cfg: DiffusionConfig = TINY_DIFFUSION, resume: bool = False,
               max_minutes: float | None = None, progress: bool = True) -> dict:
    torch.manual_seed(cfg.seed)
    model = UNet(unet_cfg)
    diffusion = GaussianDiffusion.from_config(diff_cfg)
    meta = config_to_metadata(unet_cfg)
    meta["diffusion_config"] = json.dumps(dataclasses.asdict(diff_cfg))
    return run_training(out, model, cfg, ddpm_loss_fn(diffusion, cfg), meta, use_ema=cfg.ema_decay > 0,
                        resume=resume, max_minutes=max_minutes, progress=progress)


# ----------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m saliency_lib.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["ddpm", "classifier", "segmenter", "export"])
    p.add_argument("--out", type=Path, required=True, help="checkpoint folder (or file, for export)")
    p.add_argument("--arch", default="resnet", help="classifier architecture (classifier only)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.safetensors")
    p.add_argument("--minutes", type=float, default=None, help="stop (with a checkpoint) after this long")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--from-ckpt", type=Path, help="export: training checkpoint to export")
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
        result = train_ddpm(a.out, TrainConfig(**overrides), resume=a.resume, max_minutes=a.minutes)
    else:
        from .classifiers import train_classifier_cli
        result = train_classifier_cli(a.what, a.arch, a.out, overrides, resume=a.resume, max_minutes=a.minutes)
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))


if __name__ == "__main__":
    main()
