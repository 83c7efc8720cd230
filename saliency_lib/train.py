"""Training jobs of the ``tiny`` preset: the class-conditional DDPM (and its low-noise experts), the noise-aware
classifier of classifier guidance, the clean classifiers (what IG inverts, the judge) and the judge's segmenter.

    python -m saliency_lib.train ddpm --out runs/train/ddpm --minutes 110
    python -m saliency_lib.train classifier --arch resnet --out runs/train/ig_classifier ...
    python -m saliency_lib.train segmenter --out runs/train/segmenter ...
    python -m saliency_lib.train noisy-classifier --out runs/train/noisy_classifier --init <clean resnet> ...
    python -m saliency_lib.train export --from-ckpt runs/train/ddpm/last.safetensors --out ddpm.safetensors

Each job has its own config (:class:`DDPMTrainConfig`, :class:`NoisyClassifierTrainConfig`,
:class:`ClassifierTrainConfig`: the loop's fields, :class:`~saliency_lib.training.LoopConfig`, and the job's),
stored in every checkpoint; the loop itself, its checkpoints and ``--resume`` are in :mod:`saliency_lib.training`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import data
from .classifiers import (
    ClassifierConfig,
    NoisyClassifier,
    NoisyClassifierConfig,
    Segmenter,
    SegmenterConfig,
    build_classifier,
    load_classifier,
    load_noisy_classifier,
    save_model,
)
from .diffusion import DiffusionConfig, GaussianDiffusion
from .errors import SaliencyNoiseError
from .training import LoopConfig, export_weights, run_training, step_generator
from .unet import UNet, UNetConfig
from .weights import (
    config_to_metadata,
    load_module_weights,
    load_tensors,
    read_metadata,
)


# ----------------------------------------------------------------------------- job configs
@dataclass(frozen=True)
class DDPMTrainConfig(LoopConfig):
    """The DDPM (and a low-noise expert): the simple loss of Ho et al. on x_t ~ q(x_t | x_0) (Eq. 2-3)."""
    ema_decay: float = 0.999          # EMA of the weights (what is exported and sampled)
    label_dropout: float = 0.0        # fraction of labels replaced by the null class (classifier-free guidance,
                                      # Ho & Salimans 2022); needs UNetConfig.null_class
    min_snr_gamma: float = 0.0        # Min-SNR-gamma loss weighting (Hang et al. 2023; 0: the unweighted loss)
    t_min: int = 0                    # training timesteps are drawn uniformly from [t_min, t_max), t_max 0 meaning
    t_max: int = 0                    # T: a range trains a low-noise expert (eDiff-I, Balaji et al. 2022)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.label_dropout < 1 or self.min_snr_gamma < 0:
            raise SaliencyNoiseError(f"DDPMTrainConfig: need 0 <= label_dropout < 1 and min_snr_gamma >= 0, got "
                                     f"{self.label_dropout}, {self.min_snr_gamma}")


@dataclass(frozen=True)
class NoisyClassifierTrainConfig(LoopConfig):
    """The noise-aware classifier p(y | x_t, t) of classifier guidance: cross-entropy on x_t ~ q(x_t | x_0)."""
    steps: int = 4000                 # optimizer steps planned
    batch_size: int = 128             # images per step
    lr: float = 1e-3                  # peak AdamW learning rate
    warmup: int = 100                 # linear LR warm-up steps
    weight_decay: float = 5e-4        # AdamW decoupled weight decay
    t_min: int = 0                    # timesteps drawn uniformly from [t_min, t_max), t_max 0 meaning T
    t_max: int = 0


@dataclass(frozen=True)
class ClassifierTrainConfig(LoopConfig):
    """A clean classifier (what IG inverts, the judge) or the judge's segmenter, on the train split's images."""
    steps: int = 1500                 # optimizer steps planned
    batch_size: int = 128             # images per step
    lr: float = 2e-3                  # peak AdamW learning rate
    warmup: int = 100                 # linear LR warm-up steps
    weight_decay: float = 5e-4        # AdamW decoupled weight decay
    label_smoothing: float = 0.0      # classifier only: cross-entropy label smoothing

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.label_smoothing < 1:
            raise SaliencyNoiseError(f"ClassifierTrainConfig: label_smoothing must be in [0, 1), got "
                                     f"{self.label_smoothing}")


def check_t_range(cfg: DDPMTrainConfig | NoisyClassifierTrainConfig, num_timesteps: int) -> None:
    """Refuse a training range of timesteps [cfg.t_min, cfg.t_max) that is empty or outside [0, T)."""
    if not 0 <= cfg.t_min < (cfg.t_max or num_timesteps) <= num_timesteps:
        raise SaliencyNoiseError(f"need 0 <= t_min < t_max <= T = {num_timesteps} (t_max 0 means T), got "
                                 f"t_min={cfg.t_min}, t_max={cfg.t_max}")


# ----------------------------------------------------------------------------- DDPM
TINY_UNET = UNetConfig(image_size=32, model_channels=32, out_channels=3, num_res_blocks=1,
                       attention_resolutions=(8,), channel_mult=(1, 2, 2), num_classes=data.NUM_CLASSES,
                       num_head_channels=32, use_scale_shift_norm=True, resblock_updown=True)
TINY_DIFFUSION = DiffusionConfig(num_steps=1000, schedule="linear", learn_sigma=False, fixed_variance="small")


SHAPE_PREFIX = "shape."   # step inputs that carry the drawn dataset parameters instead of rendered images


def ddpm_step_inputs(step: int, cfg: DDPMTrainConfig | NoisyClassifierTrainConfig, num_timesteps: int, render: bool = True) -> dict[str, torch.Tensor]:
    """Every random input of DDPM step ``step`` (CPU, from ``(cfg.seed, step)``): x_0 ``[B,3,H,W]`` in [-1, 1],
    labels ``[B]`` (a ``label_dropout`` fraction, where the config has one, replaced by the null class id
    ``data.NUM_CLASSES``),
    timesteps ``[B]`` and the noise eps ``[B,3,H,W]`` of the simple loss.

    ``render=False`` leaves the images unrendered: the inputs then carry the dataset's drawn parameters
    (``shape.*``, :func:`~saliency_lib.data.make_params`) and :func:`step_images` renders them on the training device (on a
    GPU, rendering in the CPU workers is what limits the step rate)."""
    params = data.make_params("train", step * cfg.batch_size, cfg.batch_size)
    g = step_generator(cfg.seed, step)
    t = torch.randint(cfg.t_min, cfg.t_max or num_timesteps, (cfg.batch_size,), generator=g)
    noise = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size, generator=g)
    y = params["label"]
    if getattr(cfg, "label_dropout", 0) > 0:  # drawn after t and eps, so runs without dropout keep their exact batches
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
    one: the null class's embedding starts as the mean of the class embeddings (the average condition)."""
    tensors, _ = load_tensors(path)
    state = model.state_dict()
    key = "label_emb.weight"
    if key in tensors and key in state and tensors[key].shape[0] + 1 == state[key].shape[0] and model.config.null_class:
        tensors[key] = torch.cat([tensors[key], tensors[key].mean(0, keepdim=True)])
    load_module_weights(model, tensors, repr(str(path)))


def train_ddpm(out: Path, cfg: DDPMTrainConfig, unet_cfg: UNetConfig = TINY_UNET,
               diff_cfg: DiffusionConfig = TINY_DIFFUSION, resume: bool = False,
               max_minutes: float | None = None, progress: bool = True, device: str = "cpu",
               workers: int = 0, fit_minutes: float | None = None, init: Path | None = None,
               render_on_device: bool = False, compile_model: bool = False) -> dict:
    """Train the class-conditional DDPM (``init``: start from these exported weights, e.g. to fine-tune
    with label dropout for classifier-free guidance; ``render_on_device``: the workers draw the dataset's
    parameters and the training device renders the images, see :func:`ddpm_step_inputs`; ``compile_model``:
    see :func:`~saliency_lib.training.run_training`)."""
    check_t_range(cfg, diff_cfg.num_steps)
    if cfg.label_dropout > 0 and not unet_cfg.null_class:
        raise SaliencyNoiseError("label_dropout needs a UNet with a null class (--unet '{\"null_class\": true}')")
    last = out / "last.safetensors"
    if resume and last.exists():
        stored = DiffusionConfig(**json.loads(read_metadata(last)["diffusion_config"]))
        if stored != diff_cfg:
            raise SaliencyNoiseError(f"--resume: the checkpoint was trained with {stored}, not {diff_cfg}")
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
    noise-level channel, or from a trained NoisyClassifier (to fine-tune it)."""
    if init is not None and read_metadata(init).get("config_class") == NoisyClassifierConfig.__name__:
        model = load_noisy_classifier(init)
        if (model.config.image_size, model.config.num_timesteps) != (image_size, num_timesteps):
            raise SaliencyNoiseError(f"--init {init}: a noise-aware classifier for {model.config.image_size}px and "
                             f"T = {model.config.num_timesteps}, not the {image_size}px and T = {num_timesteps} "
                             "trained here")
        return model, config_to_metadata(model.config)
    clean = load_classifier(init) if init is not None else None
    model = NoisyClassifier(NoisyClassifierConfig(image_size=image_size, num_timesteps=num_timesteps,
                                                  **({} if clean is None else {"width": clean.config.width})))
    if clean is not None:
        model.init_from_clean(clean)
    return model, config_to_metadata(model.config)


def train_noisy_classifier(out: Path, cfg: NoisyClassifierTrainConfig, diff_cfg: DiffusionConfig = TINY_DIFFUSION,
                           init: Path | None = None, resume: bool = False, max_minutes: float | None = None,
                           progress: bool = True, workers: int = 0, device: str = "cpu",
                           render_on_device: bool = False) -> dict:
    """Train p(y | x_t, t) on x_t ~ q(x_t | x_0) (Eq. 2-3) of the train split, for classifier guidance; t is
    uniform in [cfg.t_min, cfg.t_max).

    The model is a :class:`~saliency_lib.classifiers.NoisyClassifier` (``init``: an optional clean small ResNet, or
    a NoisyClassifier to fine-tune). ``device`` and ``render_on_device`` as for :func:`train_ddpm`.
    Writes ``<out>/model.safetensors`` (the plain weights; no EMA) next to the checkpoint.
    """
    diffusion = GaussianDiffusion.from_config(diff_cfg)
    check_t_range(cfg, diffusion.num_timesteps)
    torch.manual_seed(cfg.seed)
    model, meta = _noisy_resnet(init, cfg.image_size, diffusion.num_timesteps)
    meta["diffusion_config"] = json.dumps(dataclasses.asdict(diff_cfg))
    if init is not None:
        meta["init_from"] = str(init)

    def loss_fn(m: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
        x_t = diffusion.q_sample(step_images(b), b["t"], noise=b["noise"])
        return F.cross_entropy(m(x_t, b["t"]), b["y"])

    # the DDPM's step inputs (x_0, labels, t, eps from (seed, step)), without label dropout
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


# ----------------------------------------------------------------------------- clean classifiers, segmenter
def classifier_step_inputs(step: int, batch_size: int, image_size: int) -> dict[str, torch.Tensor]:
    """Batch of step ``step``: train-split samples ``step*B .. step*B+B-1`` (images in [-1, 1], labels, masks)."""
    b = data.make_batch("train", step * batch_size, batch_size, image_size)
    return {"images": b.images, "labels": b.labels, "masks": b.masks}


def train_classifier(what: str, out: Path, cfg: ClassifierTrainConfig, arch: str = "resnet", resume: bool = False,
                     max_minutes: float | None = None, progress: bool = True) -> dict:
    """``what`` = "classifier" (``arch`` "resnet" or "cnn"; cross-entropy) or "segmenter" (per-pixel object-mask
    logits; binary cross-entropy), trained on the shapes train split. Writes ``<out>/model.safetensors``."""
    if what not in ("classifier", "segmenter"):
        raise SaliencyNoiseError(f"train_classifier trains a 'classifier' or a 'segmenter', got {what!r}")
    torch.manual_seed(cfg.seed)
    if what == "classifier":
        model: nn.Module = build_classifier(ClassifierConfig(arch=arch, image_size=cfg.image_size))
    else:
        model = Segmenter(SegmenterConfig(image_size=cfg.image_size))
    norm = model.config.normalization
    batch_fn = functools.partial(classifier_step_inputs, batch_size=cfg.batch_size, image_size=cfg.image_size)

    def loss_fn(m: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
        x = norm.from_diffusion(b["images"])
        if what == "classifier":
            return F.cross_entropy(m(x), b["labels"], label_smoothing=cfg.label_smoothing)
        return F.binary_cross_entropy_with_logits(m(x), b["masks"].float())

    result = run_training(out, model, cfg, batch_fn, loss_fn, config_to_metadata(model.config), use_ema=False,
                          resume=resume, max_minutes=max_minutes, progress=progress)
    save_model(model.eval(), out / "model.safetensors",
               {"train_config": json.dumps(dataclasses.asdict(cfg)), "step": str(result["step"])})
    return result


# ----------------------------------------------------------------------------- CLI
JOB_CONFIGS = {"ddpm": DDPMTrainConfig, "noisy-classifier": NoisyClassifierTrainConfig,
               "classifier": ClassifierTrainConfig, "segmenter": ClassifierTrainConfig}
CONFIG_FIELDS = {f.name: type(f.default) for cls in JOB_CONFIGS.values() for f in dataclasses.fields(cls)}


def job_config(what: str, given: dict) -> LoopConfig:
    """The config of job ``what`` from the config options given (name -> value); one the job has no field for is
    refused rather than ignored."""
    cls = JOB_CONFIGS[what]
    known = {f.name for f in dataclasses.fields(cls)}
    foreign = sorted(set(given) - known)
    if foreign:
        raise SaliencyNoiseError(f"train {what}: {['--' + f.replace('_', '-') for f in foreign]} are not options of "
                                 f"this job; its config ({cls.__name__}) has {sorted(known)}")
    return cls(**given)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m saliency_lib.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=[*JOB_CONFIGS, "export"])
    p.add_argument("--out", type=Path, required=True, help="checkpoint folder (or file, for export)")
    p.add_argument("--arch", default="resnet", help="classifier: resnet or cnn")
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
                        "from this clean small ResNet")
    p.add_argument("--unet", type=json.loads, default=None,
                   help='ddpm: JSON overrides of the tiny UNet config, e.g. \'{"num_res_blocks": 2}\'')
    p.add_argument("--diffusion", type=json.loads, default=None,
                   help='ddpm: JSON overrides of the tiny diffusion config, e.g. \'{"prediction": "v"}\'')
    for name, kind in CONFIG_FIELDS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None,
                       help="job config field (see the job's config class)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.what == "export":
        if a.from_ckpt is None:
            p.error("export needs --from-ckpt")
        export_weights(a.from_ckpt, a.out)
        return
    try:
        cfg = job_config(a.what, {k: getattr(a, k) for k in CONFIG_FIELDS if getattr(a, k) is not None})
    except SaliencyNoiseError as err:
        p.error(str(err))
    if a.what == "ddpm":
        unet_cfg = dataclasses.replace(TINY_UNET, **{k: tuple(v) if isinstance(v, list) else v
                                                     for k, v in (a.unet or {}).items()})
        diff_cfg = dataclasses.replace(TINY_DIFFUSION, **(a.diffusion or {}))
        result = train_ddpm(a.out, cfg, unet_cfg=unet_cfg, diff_cfg=diff_cfg, resume=a.resume,
                            max_minutes=a.minutes, device=a.device, workers=a.workers, fit_minutes=a.fit_minutes,
                            init=a.init, render_on_device=a.render_on_device, compile_model=a.compile)
    elif a.what == "noisy-classifier":
        result = train_noisy_classifier(a.out, cfg, init=a.init, resume=a.resume, max_minutes=a.minutes,
                                        workers=a.workers, device=a.device, render_on_device=a.render_on_device)
    else:
        result = train_classifier(a.what, a.out, cfg, arch=a.arch, resume=a.resume, max_minutes=a.minutes)
    print(json.dumps({"step": result["step"], "wall_seconds": round(result["wall_seconds"], 1)}))


if __name__ == "__main__":
    main()
