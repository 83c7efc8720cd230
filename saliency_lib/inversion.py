"""Inverting Gradients (Geiping et al. 2020), batched, with snapshots: the noise crafter of the paper.

Paper Eq. 6: find x minimising ``1 - <g(x, y), g(x*, y)> / (||g(x, y)|| ||g(x*, y)||)`` where
g(x, y) = grad_theta L_theta(x, y) is the gradient of the cross-entropy w.r.t. *all* classifier
parameters (one cosine over their concatenation), plus ``tv_weight`` x anisotropic total variation.
Settings of the reference ImageNet-ResNet18 configuration: Adam, lr 0.1, signed gradients, LR x0.1 at
3/8, 5/8 and 7/8 of the planned iterations, the image kept inside the valid pixel box of the
classifier space, init randn, restarts scored by the objective, BatchNorm in eval mode.

Parts: :func:`parameter_gradients` (per-sample, vectorised with ``torch.func``),
:func:`gradient_cosine_loss` (objective), :func:`total_variation` (regulariser), :func:`lr_at_iteration`
(schedule), :func:`invert_gradients` (the loop; returns ``(result, stats)``).

Tensors: guides ``[B, 3, H, W]`` in the classifier space (see :class:`~saliency_lib.classifiers.Normalization`);
snapshots ``[S, B, 3, H, W]`` in the classifier space too. B guides are inverted at once, each against
its own target gradient: the objective of guide b depends on x_b only and Adam is elementwise, so the
batched run equals B separate runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap
from tqdm.auto import tqdm

from .classifiers import Normalization
from .errors import SaliencyNoiseError, WeightsError, check_image_batch, check_labels, check_writable_dir
from .weights import load_tensors, remove_stale_temp_files, save_tensors, tensor_checksum


@dataclass(frozen=True)
class IGConfig:
    iterations: int = 1000                 # planned iterations (the LR milestones are fractions of it)
    lr: float = 0.1                        # Adam step size
    tv_weight: float = 0.1                 # weight of the total-variation prior
    signed: bool = True                    # use sign(grad) as Adam's input (reference: True)
    boxed: bool = True                     # project onto the valid pixel box after every step
    lr_decay: bool = True                  # x0.1 at 3/8, 5/8, 7/8 of `iterations`
    restarts: int = 1                      # independent inits per guide; the best by objective is kept
    temperature: float = 1.0               # logits / T in the cross-entropy (T > 1 softens a confident net)
    snapshots: tuple[int, ...] = (0,)      # iterations whose images are stored (0 = the init)

    def __post_init__(self) -> None:
        if self.iterations < 0 or self.restarts < 1 or self.lr <= 0 or self.temperature <= 0:
            raise SaliencyNoiseError(f"IGConfig: need iterations >= 0, restarts >= 1, lr > 0, temperature > 0; "
                                     f"got {self}")
        bad = [s for s in self.snapshots if not 0 <= s <= self.iterations]
        if bad:
            raise SaliencyNoiseError(f"IGConfig.snapshots {bad} lie beyond the planned iterations "
                                     f"[0, {self.iterations}]")


@dataclass
class IGResult:
    snapshots: dict[int, torch.Tensor]     # iteration -> [B, 3, H, W] images (classifier space), best restart
    best: torch.Tensor                     # [B, 3, H, W] lowest-objective image seen (classifier space)
    labels: torch.Tensor                   # [B] labels used (given or recovered)


# ------------------------------------------------------------------------------------------- parts
def _params_and_buffers(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    return params, buffers


def parameter_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, temperature: float = 1.0
                        ) -> dict[str, torch.Tensor]:
    """Per-sample grad_theta CE(model(x_b) / T, y_b): dict name -> ``[B, *param.shape]``.

    Differentiable w.r.t. ``x`` (the outer autograd sees through ``torch.func.grad``). The model must
    be in eval mode (BatchNorm uses its running statistics, so samples do not interact).
    """
    if model.training:
        raise SaliencyNoiseError("parameter_gradients: put the classifier in eval mode (BatchNorm in eval)")
    params, buffers = _params_and_buffers(model)

    def loss(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (p, buffers), (xb[None],))
        return F.cross_entropy(logits / temperature, yb[None])

    return vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)


def gradient_cosine_loss(trial: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> torch.Tensor:
    """Eq. 6 per sample, ``[B]``: 1 - cos of the concatenated gradients (one cosine over all parameters)."""
    dot = sum((trial[k] * target[k]).flatten(1).sum(1) for k in target)
    n1 = sum(trial[k].pow(2).flatten(1).sum(1) for k in target)
    n2 = sum(target[k].pow(2).flatten(1).sum(1) for k in target)
    return 1 - dot / (n1.sqrt() * n2.sqrt()).clamp_min(1e-30)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV per image, ``[B]``: mean ``|x[..., 1:] - x[..., :-1]|`` over columns plus over rows."""
    dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().flatten(1).mean(1)
    dy = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().flatten(1).mean(1)
    return dx + dy


def lr_at_iteration(i: int, cfg: IGConfig) -> float:
    """Reference schedule: lr, then x0.1 after iterations // 2.667, // 1.6 and // 1.142 (3/8, 5/8, 7/8)."""
    if not cfg.lr_decay:
        return cfg.lr
    milestones = (int(cfg.iterations // 2.667), int(cfg.iterations // 1.6), int(cfg.iterations // 1.142))
    return cfg.lr * 0.1 ** sum(i >= m for m in milestones)


def recover_labels(target: dict[str, torch.Tensor], last_weight: str) -> torch.Tensor:
    """iDLG label recovery: the row of the last layer's weight gradient whose sum is negative (the minimum)."""
    if last_weight not in target:
        raise SaliencyNoiseError(f"recover_labels: no parameter named {last_weight!r}")
    return target[last_weight].sum(dim=-1).argmin(dim=-1)


def _last_linear_weight(model: nn.Module) -> str:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise SaliencyNoiseError("label recovery needs a final nn.Linear layer; pass labels instead")
    return names[-1] + ".weight"


# ------------------------------------------------------------------------------------------- loop
def invert_gradients(model: nn.Module, guides: torch.Tensor, labels: torch.Tensor | None,
                     normalization: Normalization, config: IGConfig = IGConfig(), *,
                     init: torch.Tensor | None = None, generator: torch.Generator | None = None,
                     progress: bool = False) -> tuple[IGResult, dict]:
    """Craft images whose parameter gradients match the guides' (Eq. 6; Alg. 1 lines 1-2).

    guides: ``[B, 3, H, W]`` in the classifier space (``normalization.from_diffusion(x)`` of [-1, 1]
    images); labels: ``[B]``, or None for the classifier's own predictions. See :func:`match_gradients`
    for ``init``, ``generator`` and the returned ``(IGResult, stats)``.
    """
    check_image_batch("guides", guides)
    model.eval()
    if labels is None:
        with torch.no_grad():
            labels = model(guides).argmax(dim=1)
    labels = check_labels("labels", labels, guides.shape[0], _num_classes(model))
    with torch.no_grad():
        target = parameter_gradients(model, guides, labels, config.temperature)
    return match_gradients(model, target, labels, tuple(guides.shape[1:]), normalization, config, init=init,
                           generator=generator, progress=progress)


def match_gradients(model: nn.Module, target: dict[str, torch.Tensor], labels: torch.Tensor | None,
                    image_shape: tuple[int, ...], normalization: Normalization, config: IGConfig = IGConfig(), *,
                    init: torch.Tensor | None = None, generator: torch.Generator | None = None,
                    progress: bool = False) -> tuple[IGResult, dict]:
    """The IG loop against given per-sample target gradients (name -> ``[B, *param.shape]``).

    labels: ``[B]``, or None to recover them from the last linear layer's gradient (iDLG).
    init: ``[R, B, *image_shape]`` or ``[B, *image_shape]`` (R = restarts) in the classifier space;
    otherwise randn from ``generator``. Returns ``(IGResult, stats)``; stats: per-iteration objective
    ``loss`` ``[iters, B]`` of the kept restart, ``best_loss`` ``[B]``, ``iterations_done``,
    ``interrupted`` (Ctrl-C returns what it has), ``restart`` (index of the kept restart).
    """
    model.eval()
    cfg = config
    r = cfg.restarts
    b = next(iter(target.values())).shape[0]
    if labels is None:
        labels = recover_labels(target, _last_linear_weight(model))
    labels = check_labels("labels", labels, b, _num_classes(model))
    device = labels.device
    target = {k: v.repeat(r, *([1] * (v.dim() - 1))) for k, v in target.items()}  # restart-major [R*B, ...]
    y = labels.repeat(r)
    like = next(iter(target.values()))
    shape = (r, b, *image_shape)
    if init is None:
        x0 = torch.randn(shape, generator=generator, dtype=like.dtype).to(device)
    else:
        check_image_batch("init", init.reshape(-1, *init.shape[-3:]))
        if init.dim() == 4:
            init = init[None].expand(r, *init.shape)
        if tuple(init.shape) != shape:
            raise SaliencyNoiseError(f"init must have shape {shape[1:]} or {shape}, got {tuple(init.shape)}")
        x0 = init.to(like)
    x = x0.reshape(r * b, *image_shape).clone().requires_grad_(True)
    lo, hi = normalization.box(x)
    opt = torch.optim.Adam([x], lr=cfg.lr)

    snaps: dict[int, torch.Tensor] = {}
    losses: list[torch.Tensor] = []
    best_loss = torch.full((r * b,), float("inf"), device=device)
    best_x = x.detach().clone()
    want = set(cfg.snapshots)
    interrupted = False
    iterator = range(cfg.iterations)
    if progress:
        iterator = tqdm(iterator, desc="inverting gradients", leave=False)
    i = 0
    try:
        for i in iterator:
            if i in want:
                snaps[i] = x.detach().clone()
            for g in opt.param_groups:
                g["lr"] = lr_at_iteration(i, cfg)
            opt.zero_grad(set_to_none=True)
            trial = parameter_gradients(model, x, y, cfg.temperature)
            rec = gradient_cosine_loss(trial, target)
            loss = rec + cfg.tv_weight * total_variation(x)
            if not torch.isfinite(loss).all():
                bad = (~torch.isfinite(loss)).nonzero().flatten().tolist()
                raise FloatingPointError(f"Inverting Gradients: non-finite objective at iteration {i} for "
                                         f"batch entries {bad}; lower lr or check the classifier/guides")
            with torch.no_grad():  # keep the best candidate seen (breaching): x before this update
                better = loss.detach() < best_loss
                best_loss = torch.where(better, loss.detach(), best_loss)
                best_x[better] = x.detach()[better]
            losses.append(loss.detach())
            loss.sum().backward()
            if cfg.signed:
                x.grad.sign_()
            opt.step()
            if cfg.boxed:
                with torch.no_grad():
                    x.data = torch.maximum(torch.minimum(x, hi), lo)
        else:
            i = cfg.iterations
    except KeyboardInterrupt:
        interrupted = True
    done = i if interrupted else cfg.iterations
    if cfg.iterations in want and not interrupted:
        snaps[cfg.iterations] = x.detach().clone()
    with torch.no_grad():  # the final image's objective also competes for "best"
        if not interrupted:
            final = gradient_cosine_loss(parameter_gradients(model, x, y, cfg.temperature), target) \
                + cfg.tv_weight * total_variation(x)
            better = final < best_loss
            best_loss = torch.where(better, final, best_loss)
            best_x[better] = x.detach()[better]
    # choose the restart with the lowest objective for each guide
    best_loss_rb = best_loss.reshape(r, b)
    pick = best_loss_rb.argmin(dim=0)                      # [B]
    sel = pick * b + torch.arange(b, device=pick.device)  # flat index of the kept restart
    hist = torch.stack(losses)[:, sel] if losses else torch.zeros(0, b)
    result = IGResult(snapshots={k: v[sel] for k, v in sorted(snaps.items())}, best=best_x[sel],
                      labels=labels)
    stats = {"loss": hist.cpu(), "best_loss": best_loss_rb.min(dim=0).values.cpu(), "iterations_done": done,
             "interrupted": interrupted, "restart": pick.cpu()}
    return result, stats


def _num_classes(model: nn.Module) -> int:
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "num_classes"):
        return int(cfg.num_classes)
    return int(model.fc.out_features) if hasattr(model, "fc") else 1000


# ------------------------------------------------------------------------------------------- cache
def default_cache_dir() -> Path:
    """``$SALIENCY_NOISE_CACHE`` or ``~/.cache/saliency_noise``."""
    return Path(os.environ.get("SALIENCY_NOISE_CACHE", Path.home() / ".cache" / "saliency_noise"))


def digest(*parts: bytes | str) -> str:
    """sha256 of the parts (each followed by a NUL byte), first 24 hex digits: a cache key."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:24]


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of the model's state (names, shapes, bytes)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def cached_invert_gradients(model: nn.Module, guides: torch.Tensor, labels: torch.Tensor | None,
                            normalization: Normalization, config: IGConfig, seed: int,
                            cache_dir: str | Path | None = None, progress: bool = False,
                            allow_partial: bool = False, part: tuple[int, int] | None = None
                            ) -> tuple[IGResult, dict]:
    """:func:`invert_gradients` with init ``randn`` from ``seed``, cached on disk (safetensors, atomic).

    ``part=(first, total)``: the guides are rows ``first, first + 1, ...`` of a run over ``total`` guides, and get
    those rows of the init drawn for all ``total`` (so a run cut into parts, e.g. over several processes, starts
    every guide from the same init as the whole run; per-guide IG does not depend on the batch it runs in).

    The key hashes the guides, labels, config, seed, normalization and the classifier's weights. The cache folder is
    checked for writability before IG starts, and temporary files that interrupted writes left there (older than an
    hour) are removed. Each entry carries the sha256 of its tensors (:func:`~saliency_lib.weights.tensor_checksum`);
    an entry that cannot be read, fails its checksum or lacks one (corrupt, truncated, or from an older format) is
    reported, moved aside as ``<key>.corrupt`` and recomputed. Ctrl-C during IG raises
    ``KeyboardInterrupt`` (nothing is cached); with ``allow_partial`` the partial result is returned instead,
    ``stats["interrupted"]`` True, and not cached either.
    """
    cache = check_writable_dir(Path(cache_dir) if cache_dir is not None else default_cache_dir(), "IG cache folder")
    b = guides.shape[0]
    if part is not None:
        first, total = part
        if not (0 <= first and first + b <= total):
            raise SaliencyNoiseError(f"part=(first, total) = {part}: {b} guides from row {first} do not fit in {total}")
        part = None if (first, total) == (0, b) else (first, total)   # the whole run: the plain seeded init
    key = digest(guides.detach().cpu().contiguous().numpy().tobytes(),
                  "none" if labels is None else labels.cpu().numpy().tobytes(),
                  json.dumps(dataclasses.asdict(config), sort_keys=True), str(seed),
                  json.dumps(dataclasses.asdict(normalization)), model_fingerprint(model),
                  *([] if part is None else [f"part {part[0]} of {part[1]}"]))
    path = cache / "ig" / f"{key}.safetensors"
    if path.parent.is_dir():
        remove_stale_temp_files(path.parent)
    if path.exists():
        try:
            tensors, meta = load_tensors(path)
            if "sha256" not in meta:
                raise KeyError("it carries no checksum (an entry from an older format)")
            if tensor_checksum(tensors) != meta["sha256"]:
                raise ValueError("its tensors do not match their checksum (the file was altered or damaged)")
            snaps = {int(k.split(".", 1)[1]): v for k, v in tensors.items() if k.startswith("snapshot.")}
            if set(snaps) != set(config.snapshots):
                raise KeyError(f"snapshots {sorted(snaps)} instead of {sorted(config.snapshots)}")
            result = IGResult(snapshots=dict(sorted(snaps.items())), best=tensors["best"], labels=tensors["labels"])
            stats = {"loss": tensors["loss"], "best_loss": tensors["best_loss"],
                     "iterations_done": int(meta["iterations_done"]), "interrupted": False,
                     "restart": tensors["restart"], "cached": True,
                     "wall_seconds": float(meta.get("wall_seconds", "nan"))}
            return result, stats
        except (WeightsError, KeyError, ValueError) as err:
            aside = path.with_suffix(".corrupt")
            os.replace(path, aside)
            warnings.warn(f"IG cache entry {path} could not be read ({err}); moved it to {aside.name} and "
                          "recomputing", stacklevel=2)
    g = torch.Generator().manual_seed(seed)
    init = None
    if part is not None:
        whole = torch.randn((config.restarts, part[1], *guides.shape[1:]), generator=g, dtype=guides.dtype)
        init = whole[:, part[0]:part[0] + b].to(guides.device)
    t0 = time.time()
    result, stats = invert_gradients(model, guides, labels, normalization, config, init=init, generator=g,
                                     progress=progress)
    stats["wall_seconds"] = time.time() - t0
    if stats["interrupted"] and not allow_partial:
        raise KeyboardInterrupt(f"Inverting Gradients interrupted after {stats['iterations_done']} of "
                                f"{config.iterations} iterations; nothing was cached")
    if not stats["interrupted"]:  # never cache a partial run
        tensors = {f"snapshot.{k}": v for k, v in result.snapshots.items()}
        tensors.update(best=result.best, labels=result.labels, loss=stats["loss"],
                       best_loss=stats["best_loss"], restart=stats["restart"])
        save_tensors(path, tensors, {"iterations_done": str(stats["iterations_done"]),
                                     "sha256": tensor_checksum(tensors),
                                     "config": json.dumps(dataclasses.asdict(config)),
                                     "wall_seconds": f"{stats['wall_seconds']:.2f}"})
    stats["cached"] = False
    return result, stats
