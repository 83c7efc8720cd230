"""Model presets: ``tiny`` (shipped in ``data/models/tiny``, offline) and ``imagenet128`` (the paper's setup).

``imagenet128``: guided-diffusion's 128x128 class-conditional ImageNet checkpoint (Dhariwal & Nichol
2021) and torchvision's ResNet18 IMAGENET1K_V1. Both are downloaded into the torch hub cache
(``torch.hub.get_dir()/checkpoints``) with a progress bar, resumed after an interruption (HTTP Range),
checked by sha256 where the hash is known, and read without unpickling (``weights_only=True``).
Offline, the error says which file to place where.

Known hashes: torchvision publishes the first 8 hex digits of each file's sha256 in its file name
(``resnet18-f37072fd.pth``) and checks that prefix itself; we check the same prefix. OpenAI publishes no
hash for ``128x128_diffusion.pt``; the file is then only checked for being a complete, loadable state
dict with exactly the expected keys and shapes (strict loading), and its sha256 is printed after the
download so a user can pin it with ``SALIENCY_NOISE_ADM128_SHA256``. ``load_preset("imagenet128",
classifier_guidance=True)`` also fetches guided-diffusion's noise-aware ``128x128_classifier.pt`` the same way
(``SALIENCY_NOISE_ADM128_CLASSIFIER_SHA256`` pins it) and samples with classifier guidance.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18
from tqdm.auto import tqdm

from . import data
from .classifiers import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClassifierConfig,
    Normalization,
    imagenet_class_names,
    load_classifier,
    load_noisy_classifier,
    load_segmenter,
)
from .diffusion import DiffusionConfig, GaussianDiffusion, diffusion_config_from_flags
from .errors import DownloadError, SaliencyNoiseError
from .guidance import CFGModel, ClassifierGuidedModel
from .inversion import IGConfig
from .unet import TimestepExperts, UNet, load_unet
from .unet_encoder import EncoderUNet, classifier_config_from_guided_diffusion_flags
from .weights import load_module_weights, load_torch_checkpoint, read_metadata

ADM128_URL = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/128x128_diffusion.pt"
# Flags of the 128x128 class-conditional model, as in guided-diffusion's README (MODEL_FLAGS).
ADM128_FLAGS = {
    "attention_resolutions": "32,16,8", "class_cond": True, "diffusion_steps": 1000, "image_size": 128,
    "learn_sigma": True, "noise_schedule": "linear", "num_channels": 256, "num_heads": 4,
    "num_res_blocks": 2, "resblock_updown": True, "use_fp16": True, "use_scale_shift_norm": True}
# The official noise-aware classifier for that model (classifier guidance, Dhariwal & Nichol 2021; optional), its
# flags as in guided-diffusion's README (CLASSIFIER_FLAGS) and the scale its README samples the 128x128 model with.
ADM128_CLASSIFIER_URL = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/128x128_classifier.pt"
ADM128_CLASSIFIER_FLAGS = {
    "image_size": 128, "classifier_attention_resolutions": "32,16,8", "classifier_depth": 2, "classifier_width": 128,
    "classifier_pool": "attention", "classifier_resblock_updown": True, "classifier_use_scale_shift_norm": True}
ADM128_CLASSIFIER_CONFIG = classifier_config_from_guided_diffusion_flags(ADM128_CLASSIFIER_FLAGS)
ADM128_CLASSIFIER_SCALE = 0.5
REPO_ROOT = Path(__file__).resolve().parent.parent               # the checkout (shipped data)
REPO_DATA = REPO_ROOT / "data"                                      # shipped data: models, IG cache of the notebooks
TINY_DIR = REPO_DATA / "models" / "tiny"


# ------------------------------------------------------------------------------------ downloads
def checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: str | os.PathLike, sha256: str | None = None, progress: bool = True,
             timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` unless it is there; resume a ``.partial`` file; verify sha256 (or prefix).

    The file appears at ``dest`` only when complete and verified (rename from ``dest.partial``).
    """
    dest = Path(dest)
    if dest.exists():
        if sha256 and not sha256_of(dest).startswith(sha256):
            raise DownloadError(f"{dest} exists but its sha256 does not start with {sha256}: delete it and retry")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".partial")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the partial file is already complete
            resp = None
        else:
            raise DownloadError(_offline_message(url, dest, sha256, e)) from e
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(_offline_message(url, dest, sha256, e)) from e
    if resp is not None:
        with resp:
            if have and resp.status != 206:  # server ignored Range: start over
                have = 0
            total = resp.headers.get("Content-Length")
            total = int(total) + have if total is not None else None
            with open(part, "ab" if have else "wb") as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                                                 desc=dest.name, disable=not progress) as bar:
                try:
                    while block := resp.read(1 << 20):
                        f.write(block)
                        bar.update(len(block))
                except OSError as e:
                    raise DownloadError(f"download of {url} interrupted ({e}); run again to resume from "
                                        f"{part.stat().st_size} bytes") from e
        if total is not None and part.stat().st_size < total:
            raise DownloadError(f"download of {url} interrupted at {part.stat().st_size} of {total} bytes; "
                                "run again to resume")
    digest = sha256_of(part)
    if sha256 and not digest.startswith(sha256):
        part.unlink()
        raise DownloadError(f"sha256 of the download of {url} is {digest}, expected {sha256}...; "
                            "the partial file was deleted, run again")
    os.replace(part, dest)
    if progress:
        print(f"downloaded {dest} (sha256 {digest})")
    return dest


def _offline_message(url: str, dest: Path, sha256: str | None, err: Exception) -> str:
    return (f"could not download {url} ({type(err).__name__}: {err}). Without internet, download it on "
            f"another machine and place it at {dest}" + (f" (sha256 starts with {sha256})" if sha256 else ""))


# ------------------------------------------------------------------------------------ presets
@dataclass
class Preset:
    name: str
    unet: nn.Module                      # eps-predicting UNet, called model(x_t, t, y=labels)
    diffusion_config: DiffusionConfig    # the training process (respace with GaussianDiffusion.from_config)
    classifier: nn.Module                # what Inverting Gradients inverts (eval mode)
    normalization: Normalization         # classifier space of `classifier`
    class_names: list[str]               # target classes of the DDPM (index = class id)
    image_size: int                      # DDPM resolution
    judge_classifier: nn.Module | None = None   # evaluation only (tiny preset)
    judge_segmenter: nn.Module | None = None    # evaluation only (tiny preset)
    info: dict = field(default_factory=dict)    # provenance (files, steps, choices)
    ig_config: IGConfig = field(default_factory=IGConfig)  # IG defaults for this classifier (iterations and
                                                           # snapshots are set per call by craft_noise)
    guidance_weight: float = 0.0         # default classifier-free guidance weight w of sampling (0 = unguided;
                                         # > 0 needs a UNet trained with a null class, see guidance.py)
    noisy_classifier: nn.Module | None = None  # noise-aware classifier p(y | x_t, t) for classifier guidance
    classifier_scale: float = 0.0        # default classifier guidance scale s (0 = none; > 0 needs noisy_classifier)
    saliency_classifier: nn.Module | None = None  # what saliency maps are taken from (None: `classifier`); the tiny
                                                  # preset's IG classifier is untrained, so it ships a trained one
    ig_alternatives: dict[str, nn.Module] = field(default_factory=dict)  # other classifiers IG can invert, by
                                                  # name (tiny: the trained ones the protocol compares)

    def diffusion(self, respacing: str | None = None) -> GaussianDiffusion:
        """The diffusion process, optionally respaced (e.g. "ddim25", "250")."""
        return GaussianDiffusion.from_config(self.diffusion_config, respacing)

    def denoiser(self, guidance: float | None = None, classifier_scale: float | None = None) -> nn.Module:
        """The model the sampling loops call, ``model(x_t, t, y=labels)``: the UNet, wrapped in classifier-free
        guidance with weight ``guidance`` (None: the preset's ``guidance_weight``) when that is > 0, and that in
        classifier guidance with scale ``classifier_scale`` (None: the preset's) when that is > 0."""
        weight = self.guidance_weight if guidance is None else float(guidance)
        scale = self.classifier_scale if classifier_scale is None else float(classifier_scale)
        model = self.unet
        if weight != 0:
            if not getattr(self.unet.config, "null_class", False):
                raise SaliencyNoiseError(f"preset {self.name!r}: its DDPM has no null class, so classifier-free "
                                         f"guidance is not available; use guidance 0 (got {weight})")
            model = CFGModel(self.unet, weight)
        if scale != 0:
            if self.noisy_classifier is None:
                raise SaliencyNoiseError(f"preset {self.name!r} has no noise-aware classifier, so classifier "
                                         f"guidance is not available; use classifier_scale 0 (got {scale})")
            model = ClassifierGuidedModel(model, self.noisy_classifier, scale, self.diffusion().alphas_cumprod)
        return model

    def unet_bands(self) -> list[tuple[nn.Module, int, int]]:
        """Which UNet of the DDPM denoises which original timesteps, ``[(unet, t_lo, t_hi), ...]`` with
        ``t_lo <= t < t_hi``, from the highest noise levels down: one band [0, T) for a single UNet, one per UNet for
        a chain of experts (:class:`~saliency_lib.unet.TimestepExperts`)."""
        T = self.diffusion_config.num_steps
        return self.unet.bands(T) if isinstance(self.unet, TimestepExperts) else [(self.unet, 0, T)]

    def class_id(self, name_or_id: str | int) -> int:
        if isinstance(name_or_id, int):
            if not 0 <= name_or_id < len(self.class_names):
                raise SaliencyNoiseError(f"class id must be in [0, {len(self.class_names)}), got {name_or_id}")
            return name_or_id
        if name_or_id not in self.class_names:
            raise SaliencyNoiseError(f"unknown class {name_or_id!r} for preset {self.name!r}")
        return self.class_names.index(name_or_id)

    def to(self, device: str | torch.device) -> "Preset":
        for m in (self.unet, self.classifier, self.judge_classifier, self.judge_segmenter, self.noisy_classifier,
                  self.saliency_classifier, *self.ig_alternatives.values()):
            if m is not None:
                m.to(device)
        return self


def load_ddpm_file(path: str | os.PathLike) -> tuple[nn.Module, DiffusionConfig]:
    """A DDPM weights file written by this package's training (``train export``): the UNet and the diffusion
    process it was trained for (stored in the file's metadata; epsilon prediction for files written before the
    ``prediction`` field existed)."""
    meta = read_metadata(path)
    if "diffusion_config" not in meta:
        raise SaliencyNoiseError(f"{path}: no diffusion_config in the metadata; expected a DDPM weights file "
                                 "exported by `python -m saliency_lib.train export`")
    return load_unet(str(path)), DiffusionConfig(**json.loads(meta["diffusion_config"]))


def with_ddpm_file(preset: Preset, path: str | os.PathLike) -> Preset:
    """``preset`` with the DDPM (UNet and diffusion process) of another weights file, e.g. a training run's
    exported EMA, for comparisons; every other model stays."""
    unet, diff_cfg = load_ddpm_file(path)
    device = next(preset.unet.parameters()).device
    return dataclasses.replace(preset, unet=unet.eval().to(device), diffusion_config=diff_cfg)


def low_noise_experts(high: nn.Module, diff_cfg: DiffusionConfig, path: str | os.PathLike,
                      below_t: int) -> TimestepExperts:
    """The DDPM ``high`` (trained for ``diff_cfg``) with the UNet in ``path`` taking the timesteps t < ``below_t``
    (a low-noise expert, :class:`~saliency_lib.unet.TimestepExperts`, trained with ``train ddpm --t-max``).

    Experts stack: the new expert always takes every t < ``below_t``. When ``high`` already hands t < t_0 to an
    expert and ``below_t`` < t_0, that expert keeps [below_t, t_0) (so experts are added from high to low noise,
    e.g. one for [200, 500) with below_t 500, then one for [0, 200) with below_t 200); when ``below_t`` >= t_0 the
    new expert covers all of its range and replaces it."""
    while isinstance(high, TimestepExperts) and below_t >= high.below_t:
        high = high.high   # the previous expert would never be called: drop it
    device = next(high.parameters()).device
    low, low_cfg = load_ddpm_file(path)
    if low_cfg != diff_cfg:
        raise SaliencyNoiseError(f"{path}: the expert was trained for {low_cfg}, the DDPM for {diff_cfg}; they "
                                 "must share one diffusion process")
    return TimestepExperts(high, low.eval().to(device), below_t)


def expert_thresholds(n_experts: int, below_ts: list[int], default: int = 500) -> list[int]:
    """The ``below_t`` of each of ``n_experts`` low-noise experts of a chain, checked: one per expert (a single
    expert without one takes ``default``), strictly decreasing, since each takes the noise levels below the previous
    one's (added in another order, a later expert would hide an earlier one; :func:`low_noise_experts`)."""
    thresholds = [int(t) for t in below_ts] or ([default] if n_experts == 1 else [])
    if len(thresholds) != n_experts or any(a <= b for a, b in zip(thresholds, thresholds[1:])):
        raise SaliencyNoiseError(f"need one below_t per low-noise expert ({n_experts}), strictly decreasing (each "
                                 f"expert takes the noise levels below the previous one's), got {thresholds}")
    return thresholds


def with_low_noise_expert(preset: Preset, path: str | os.PathLike, below_t: int) -> Preset:
    """``preset`` whose DDPM hands the timesteps t < ``below_t`` to the UNet in ``path``, for comparisons."""
    return dataclasses.replace(preset, unet=low_noise_experts(preset.unet, preset.diffusion_config, path, below_t))


def load_tiny(device: str = "cpu", model_dir: str | os.PathLike | None = None) -> Preset:
    """The embedded preset: 32x32 shapes DDPM, IG classifier and judge models from ``data/models/tiny``."""
    d = Path(model_dir) if model_dir is not None else TINY_DIR
    manifest_path = d / "preset.json"
    if not manifest_path.exists():
        raise SaliencyNoiseError(f"the tiny preset's files are missing: no {manifest_path}; the repository "
                                 "ships them under data/models/tiny")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise SaliencyNoiseError(f"{manifest_path} is not valid JSON ({err}); restore it from the repository") from None
    unet, diff_cfg = load_ddpm_file(d / manifest["ddpm"])
    experts = manifest.get("ddpm_low_noise", [])   # {"file": ..., "below_t": ...}: a low-noise expert,
    experts = [experts] if isinstance(experts, dict) else experts   # or a chain of them, by decreasing below_t
    try:
        thresholds = expert_thresholds(len(experts), [e["below_t"] for e in experts])
    except SaliencyNoiseError as err:
        raise SaliencyNoiseError(f"{manifest_path}, ddpm_low_noise: {err}") from None
    for expert, below_t in zip(experts, thresholds):
        unet = low_noise_experts(unet, diff_cfg, d / expert["file"], below_t)
    classifiers: dict[str, nn.Module] = {}   # file -> model: a file named in several roles is loaded once

    def classifier_file(name: str) -> nn.Module:
        if name not in classifiers:
            classifiers[name] = load_classifier(d / name)
        return classifiers[name]

    classifier = classifier_file(manifest["ig_classifier"])
    cfg: ClassifierConfig = classifier.config
    return Preset(name="tiny", unet=unet, diffusion_config=diff_cfg, classifier=classifier,
                  normalization=cfg.normalization, class_names=list(data.CLASS_NAMES),
                  image_size=unet.config.image_size,
                  judge_classifier=load_classifier(d / manifest["judge_classifier"]),
                  judge_segmenter=load_segmenter(d / manifest["judge_segmenter"]),
                  info=manifest, ig_config=IGConfig(**manifest.get("ig", {})),
                  guidance_weight=float(manifest.get("guidance_weight", 0.0)),
                  noisy_classifier=(load_noisy_classifier(d / manifest["noisy_classifier"])
                                    if "noisy_classifier" in manifest else None),
                  classifier_scale=float(manifest.get("classifier_scale", 0.0)),
                  saliency_classifier=(classifier_file(manifest["saliency_classifier"])
                                       if "saliency_classifier" in manifest else None),
                  ig_alternatives={name: classifier_file(f)
                                   for name, f in manifest.get("ig_classifier_alternatives", {}).items()}).to(device)


def load_imagenet128(device: str = "cuda", progress: bool = True, classifier_guidance: bool = False) -> Preset:
    """The paper's setup: ADM 128x128 class-conditional (421.5M parameters) + ResNet18 IMAGENET1K_V1.

    ``classifier_guidance``: also download guided-diffusion's noise-aware 128x128 classifier (42.6M parameters; not part
    of the paper's recipe) and sample with classifier guidance at its README's scale, s = 0.5 (ADM-G)."""
    ddpm_path = download(ADM128_URL, checkpoint_dir() / "128x128_diffusion.pt",
                         sha256=os.environ.get("SALIENCY_NOISE_ADM128_SHA256"), progress=progress)
    unet = UNet.from_guided_diffusion_flags(ADM128_FLAGS)
    load_module_weights(unet, load_torch_checkpoint(ddpm_path), repr(str(ddpm_path)))
    weights = ResNet18_Weights.IMAGENET1K_V1
    name = weights.url.rsplit("/", 1)[1]                      # resnet18-f37072fd.pth
    prefix = name.rsplit("-", 1)[1].split(".")[0]            # sha256 prefix published in the name
    rn_path = download(weights.url, checkpoint_dir() / name, sha256=prefix, progress=progress)
    classifier = resnet18(weights=None)
    load_module_weights(classifier, load_torch_checkpoint(rn_path), repr(str(rn_path)))
    info = {"ddpm": str(ddpm_path), "classifier": str(rn_path)}
    noisy = None
    if classifier_guidance:
        noisy = load_adm128_classifier(progress)
        info["noisy_classifier"] = ADM128_CLASSIFIER_URL
    return Preset(name="imagenet128", unet=unet.eval(), diffusion_config=diffusion_config_from_flags(ADM128_FLAGS),
                  classifier=classifier.eval(), normalization=Normalization(IMAGENET_MEAN, IMAGENET_STD),
                  class_names=imagenet_class_names(), image_size=128, info=info, noisy_classifier=noisy,
                  classifier_scale=ADM128_CLASSIFIER_SCALE if classifier_guidance else 0.0).to(device)


def load_adm128_classifier(progress: bool = True) -> EncoderUNet:
    """guided-diffusion's ``128x128_classifier.pt`` (downloaded once into the torch hub cache, like the DDPM; its
    sha256 pinned by ``SALIENCY_NOISE_ADM128_CLASSIFIER_SHA256`` if set) as an
    :class:`~saliency_lib.unet_encoder.EncoderUNet` reading x_t ``[N, 3, 128, 128]`` and original t, strictly loaded."""

    path = download(ADM128_CLASSIFIER_URL, checkpoint_dir() / ADM128_CLASSIFIER_URL.rsplit("/", 1)[1],
                    sha256=os.environ.get("SALIENCY_NOISE_ADM128_CLASSIFIER_SHA256"), progress=progress)
    model = EncoderUNet(ADM128_CLASSIFIER_CONFIG)
    load_module_weights(model, load_torch_checkpoint(path), repr(str(path)))
    return model.eval()


PRESETS: dict[str, Callable[..., Preset]] = {"tiny": load_tiny, "imagenet128": load_imagenet128}


def load_preset(name: str = "tiny", device: str = "cpu", **options) -> Preset:
    """Load a preset by name ("tiny" or "imagenet128") onto ``device``; ``options`` go to its loader (e.g.
    ``classifier_guidance=True`` for imagenet128)."""
    if name not in PRESETS:
        raise SaliencyNoiseError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    loader = PRESETS[name]
    accepted = [k for k in inspect.signature(loader).parameters if k != "device"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise SaliencyNoiseError(f"preset {name!r} has no option(s) {unknown}; its loader takes {accepted}")
    return loader(device=device, **options)
