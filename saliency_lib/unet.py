"""The ADM UNet of Dhariwal & Nichol 2021 ("Diffusion Models Beat GANs"), class-conditional.

Same building blocks and the same ``state_dict`` keys and shapes as openai/guided-diffusion's
``UNetModel``, so the official checkpoints (e.g. ``128x128_diffusion.pt``) load with ``strict=True``:
timestep + class embedding, ResBlocks with scale-shift norm, ResBlock up/down-sampling, multi-head
self-attention at chosen resolutions, learned sigma (2C output channels).

Tensors: ``x`` is ``[N, C, H, W]`` in the diffusion space (x_0 in [-1, 1], x_t unbounded), ``t`` is
``[N]`` integer timesteps of the *original* process, ``y`` is ``[N]`` class ids. The model returns
``[N, out_channels, H, W]``: epsilon (and, with learned sigma, the variance interpolation values v).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import SaliencyNoiseError, WeightsError, check_image_batch
from .weights import (
    config_from_metadata,
    config_to_metadata,
    load_module_weights,
    load_tensors,
    load_torch_checkpoint,
    save_tensors,
)

# Keys of guided-diffusion's model_and_diffusion_defaults() that configure the diffusion, not the UNet.
DIFFUSION_FLAG_KEYS = frozenset({
    "diffusion_steps", "noise_schedule", "timestep_respacing", "use_kl", "predict_xstart",
    "rescale_timesteps", "rescale_learned_sigmas", "learn_sigma"})
UNET_FLAG_KEYS = frozenset({
    "image_size", "num_channels", "num_res_blocks", "num_heads", "num_heads_upsample",
    "num_head_channels", "attention_resolutions", "channel_mult", "dropout", "class_cond",
    "use_checkpoint", "use_scale_shift_norm", "resblock_updown", "use_fp16",
    "use_new_attention_order", "learn_sigma"})
# The official create_model's default channel multipliers by image size.
DEFAULT_CHANNEL_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4),
                        64: (1, 2, 3, 4)}


@dataclass(frozen=True)
class UNetConfig:
    image_size: int = 32                 # H = W of the images the model was trained on
    in_channels: int = 3                 # channels of x_t
    model_channels: int = 64             # base width ("num_channels" flag); widths are multiples of it
    out_channels: int = 6                # 3 = epsilon only; 6 = epsilon + learned variance (learn_sigma)
    num_res_blocks: int = 2              # ResBlocks per resolution level
    attention_resolutions: tuple[int, ...] = (16,)  # resolutions in pixels that get self-attention
    channel_mult: tuple[float, ...] = (1, 2)         # width multiplier per level; len-1 downsamplings
    dropout: float = 0.0                 # dropout inside ResBlocks
    num_classes: int | None = None       # class-conditional when set (label_emb of that size)
    null_class: bool = False             # one more label embedding, id num_classes = "no class" (trained by
                                         # label dropout; the unconditional branch of classifier-free guidance)
    num_heads: int = 4                   # attention heads (when num_head_channels == -1)
    num_head_channels: int = -1          # channels per head; overrides num_heads when != -1
    num_heads_upsample: int = -1         # heads in the decoder; -1 = same as num_heads
    use_scale_shift_norm: bool = True    # FiLM-like GroupNorm(h) * (1 + scale) + shift from the embedding
    resblock_updown: bool = True         # ResBlocks do the up/down-sampling (else (Up|Down)sample convs)
    use_new_attention_order: bool = False  # split qkv before heads (QKVAttention) vs legacy order
    norm_groups: int = 32                # GroupNorm groups (32 in ADM; channels must be divisible)

    def __post_init__(self) -> None:
        if self.image_size <= 0 or self.model_channels <= 0 or self.num_res_blocks < 0:
            raise SaliencyNoiseError(f"UNetConfig: sizes must be positive, got {self}")
        if not self.channel_mult:
            raise SaliencyNoiseError("UNetConfig.channel_mult must list at least one level")
        for res in self.attention_resolutions:
            if self.image_size % res:
                raise SaliencyNoiseError(
                    f"UNetConfig.attention_resolutions entry {res} does not divide image_size {self.image_size}")
        if self.image_size % (2 ** (len(self.channel_mult) - 1)):
            raise SaliencyNoiseError(
                f"UNetConfig: image_size {self.image_size} is not divisible by 2^(levels-1) for "
                f"channel_mult {self.channel_mult}")
        if self.null_class and self.num_classes is None:
            raise SaliencyNoiseError("UNetConfig.null_class needs a class-conditional model (num_classes set)")
        if self.out_channels not in (self.in_channels, 2 * self.in_channels):
            raise SaliencyNoiseError(
                f"UNetConfig.out_channels must be in_channels ({self.in_channels}) or 2x for learned sigma,"
                f" got {self.out_channels}")

    @property
    def learn_sigma(self) -> bool:
        return self.out_channels == 2 * self.in_channels

    @property
    def null_label(self) -> int:
        """The class id meaning "no class" (classifier-free guidance's unconditional branch)."""
        if not self.null_class:
            raise SaliencyNoiseError("this UNet has no null class (UNetConfig.null_class is False): it was not "
                                     "trained for classifier-free guidance")
        return int(self.num_classes)

    @property
    def attention_ds(self) -> tuple[int, ...]:
        """Downsampling rates where attention happens (what the official UNetModel receives)."""
        return tuple(self.image_size // r for r in self.attention_resolutions)


def _parse_int_list(name: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, str):
        return tuple(int(v) for v in value.split(",") if v.strip())
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    raise SaliencyNoiseError(f"flag {name!r} must be a comma-separated string or a list, got {value!r}")


def config_from_guided_diffusion_flags(flags: Mapping[str, Any], num_classes: int = 1000) -> UNetConfig:
    """Translate guided-diffusion flags (``model_and_diffusion_defaults()`` keys) to a UNetConfig."""
    unknown = set(flags) - UNET_FLAG_KEYS - DIFFUSION_FLAG_KEYS
    if unknown:
        raise SaliencyNoiseError(f"unknown guided-diffusion flags {sorted(unknown)}; expected keys of "
                                 f"model_and_diffusion_defaults(): {sorted(UNET_FLAG_KEYS | DIFFUSION_FLAG_KEYS)}")
    f = dict(flags)
    image_size = int(f.get("image_size", 64))
    mult = f.get("channel_mult", "")
    if mult in ("", None, ()):
        if image_size not in DEFAULT_CHANNEL_MULT:
            raise SaliencyNoiseError(f"flag channel_mult is empty and image_size {image_size} has no "
                                     f"official default; give it, e.g. '1,2,2,2'")
        channel_mult = DEFAULT_CHANNEL_MULT[image_size]
    elif isinstance(mult, str):
        channel_mult = tuple(float(m) if "." in m else int(m) for m in mult.split(","))
    else:
        channel_mult = tuple(mult)
    learn_sigma = bool(f.get("learn_sigma", False))
    if f.get("use_fp16", False):
        pass  # fp16 is a runtime choice (autocast); weights are stored in float32 either way
    return UNetConfig(
        image_size=image_size,
        in_channels=3,
        model_channels=int(f.get("num_channels", 128)),
        out_channels=6 if learn_sigma else 3,
        num_res_blocks=int(f.get("num_res_blocks", 2)),
        attention_resolutions=_parse_int_list("attention_resolutions", f.get("attention_resolutions", "16,8")),
        channel_mult=channel_mult,
        dropout=float(f.get("dropout", 0.0)),
        num_classes=num_classes if f.get("class_cond", False) else None,
        num_heads=int(f.get("num_heads", 4)),
        num_head_channels=int(f.get("num_head_channels", -1)),
        num_heads_upsample=int(f.get("num_heads_upsample", -1)),
        use_scale_shift_norm=bool(f.get("use_scale_shift_norm", True)),
        resblock_updown=bool(f.get("resblock_updown", False)),
        use_new_attention_order=bool(f.get("use_new_attention_order", False)),
    )


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[N, dim]`` of timesteps ``[N]``: [cos(t w_i), sin(t w_i)], w_i = P^(-i/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype (as in ADM)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class TimestepBlock(nn.Module):
    """A block that also takes the timestep(+class) embedding."""


class EmbedSequential(nn.Sequential):
    """Sequential that hands the embedding to the children that take it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest x2, then an optional 3x3 conv (key ``conv``)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """Strided 3x3 conv (key ``op``) or 2x2 average pooling."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.op = (nn.Conv2d(channels, out_channels or channels, 3, stride=2, padding=1) if use_conv
                   else nn.AvgPool2d(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(TimestepBlock):
    """GroupNorm-SiLU-conv, embedding injection (add, or scale-shift norm), GroupNorm-SiLU-dropout-conv(0).

    With ``up``/``down`` the resampling happens between the first norm-activation and the first conv,
    on both branches (skip and residual).
    """

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int,
                 use_scale_shift_norm: bool, groups: int, up: bool = False, down: bool = False):
        super().__init__()
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(GroupNorm32(groups, channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels))
        self.out_layers = nn.Sequential(GroupNorm32(groups, out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all spatial positions, residual, zero-initialised projection."""

    def __init__(self, channels: int, num_heads: int, num_head_channels: int, groups: int,
                 new_order: bool):
        super().__init__()
        if num_head_channels != -1:
            if channels % num_head_channels:
                raise SaliencyNoiseError(f"attention: {channels} channels not divisible by "
                                         f"num_head_channels {num_head_channels}")
            num_heads = channels // num_head_channels
        if channels % num_heads:
            raise SaliencyNoiseError(f"attention: {channels} channels not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.new_order = new_order
        self.norm = GroupNorm32(groups, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = self.proj_out(qkv_attention(self.qkv(self.norm(x)), self.num_heads, self.new_order))
        return (x + h).reshape(b, c, *spatial)


def qkv_attention(qkv: torch.Tensor, num_heads: int, new_order: bool) -> torch.Tensor:
    """Multi-head attention of ``qkv`` ``[B, 3 * heads * ch, L]`` -> ``[B, heads * ch, L]``: ``new_order`` splits q, k,
    v first, then heads (guided-diffusion's QKVAttention); else heads first, each holding its own [q; k; v]
    (QKVAttentionLegacy)."""
    b, width, length = qkv.shape
    ch = width // (3 * num_heads)
    if new_order:
        q, k, v = (z.reshape(b * num_heads, ch, length) for z in qkv.chunk(3, dim=1))
    else:
        q, k, v = qkv.reshape(b * num_heads, 3 * ch, length).split(ch, dim=1)
    scale = ch ** -0.25  # applied to q and k separately, as in ADM (better fp16 behaviour)
    w = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    w = torch.softmax(w.float(), dim=-1).type(w.dtype)
    return torch.einsum("bts,bcs->bct", w, v).reshape(b, -1, length)


class AttentionPool2d(nn.Module):
    """guided-diffusion's classifier head (from CLIP): the mean over positions is prepended as a query token, learned
    positional embeddings ``[C, HW + 1]`` are added, one multi-head attention (``num_head_channels`` per head, new
    order) and a 1x1 projection to ``out_channels``; the prepended token's output is the logits ``[N, out]``."""

    def __init__(self, spatial: int, channels: int, num_head_channels: int, out_channels: int):
        super().__init__()
        if num_head_channels < 1 or channels % num_head_channels:
            raise SaliencyNoiseError(f"attention pool: {channels} channels need a num_head_channels that divides "
                                     f"them, got {num_head_channels}")
        self.positional_embedding = nn.Parameter(torch.randn(channels, spatial ** 2 + 1) / channels ** 0.5)
        self.qkv_proj = nn.Conv1d(channels, 3 * channels, 1)
        self.c_proj = nn.Conv1d(channels, out_channels, 1)
        self.num_heads = channels // num_head_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1) + self.positional_embedding[None].to(x.dtype)
        return self.c_proj(qkv_attention(self.qkv_proj(x), self.num_heads, new_order=True))[:, :, 0]


def block_factories(cfg: Any):
    """``res(cin, cout, up=/down=)`` and ``attn(ch, heads)``: the ResBlock and AttentionBlock builders of a config
    (embedding width 4 * model_channels), shared by :class:`UNet` and the encoder of :mod:`.unet_encoder`."""
    emb_dim = 4 * cfg.model_channels

    def res(cin: int, cout: int, **kw: bool) -> ResBlock:
        return ResBlock(cin, emb_dim, cfg.dropout, cout, cfg.use_scale_shift_norm, cfg.norm_groups, **kw)

    def attn(ch: int, heads: int) -> AttentionBlock:
        return AttentionBlock(ch, heads, cfg.num_head_channels, cfg.norm_groups, cfg.use_new_attention_order)

    return res, attn


def encoder_blocks(cfg: Any, res, attn) -> tuple[nn.ModuleList, list[int], int, int]:
    """The ADM UNet's downsampling half (``input_blocks``), shared by :class:`UNet` and :class:`~saliency_lib.unet_encoder.EncoderUNet`: a conv,
    then per level ``num_res_blocks`` ResBlocks (+ attention at ``attention_resolutions``) and, between levels, a
    downsampling block, built with :func:`block_factories`' ``res`` and ``attn``. Returns the blocks, the channels of
    every skip connection, and the last level's channels and downsampling rate."""
    mc, attn_ds = cfg.model_channels, set(cfg.attention_ds)
    ch = int(cfg.channel_mult[0] * mc)
    blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))])
    skip_chans = [ch]
    ds = 1
    for level, mult in enumerate(cfg.channel_mult):
        for _ in range(cfg.num_res_blocks):
            layers: list[nn.Module] = [res(ch, int(mult * mc))]
            ch = int(mult * mc)
            if ds in attn_ds:
                layers.append(attn(ch, cfg.num_heads))
            blocks.append(EmbedSequential(*layers))
            skip_chans.append(ch)
        if level != len(cfg.channel_mult) - 1:
            blocks.append(EmbedSequential(res(ch, ch, down=True) if cfg.resblock_updown else Downsample(ch, True, ch)))
            skip_chans.append(ch)
            ds *= 2
    return blocks, skip_chans, ch, ds


class UNet(nn.Module):
    """ADM UNet. Call as the official model: ``model(x, t, y=labels)`` -> ``[N, out_channels, H, W]``."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        mc, g = cfg.model_channels, cfg.norm_groups
        emb_dim = 4 * mc
        heads_up = cfg.num_heads if cfg.num_heads_upsample == -1 else cfg.num_heads_upsample
        attn_ds = set(cfg.attention_ds)

        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if cfg.num_classes is not None:
            self.label_emb = nn.Embedding(cfg.num_classes + int(cfg.null_class), emb_dim)

        res, attn = block_factories(cfg)
        self.input_blocks, skip_chans, ch, ds = encoder_blocks(cfg, res, attn)
        self.middle_block = EmbedSequential(res(ch, ch), attn(ch, cfg.num_heads), res(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), int(mc * mult))]
                ch = int(mc * mult)
                if ds in attn_ds:
                    layers.append(attn(ch, heads_up))
                if level and i == cfg.num_res_blocks:
                    layers.append(res(ch, ch, up=True) if cfg.resblock_updown else Upsample(ch, True, ch))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))

        self.out = nn.Sequential(GroupNorm32(g, ch), nn.SiLU(),
                                 _zero(nn.Conv2d(ch, cfg.out_channels, 3, padding=1)))

    @classmethod
    def from_guided_diffusion_flags(cls, flags: Mapping[str, Any], num_classes: int = 1000) -> "UNet":
        """Build from the official flags dict (keys of ``model_and_diffusion_defaults()``)."""
        return cls(config_from_guided_diffusion_flags(flags, num_classes=num_classes))

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        if (y is None) != (cfg.num_classes is None):
            raise SaliencyNoiseError("y (class labels) must be given exactly when the model is class-conditional "
                                     f"(num_classes={cfg.num_classes}), got y={'None' if y is None else 'a tensor'}")
        emb = self.time_embed(timestep_embedding(t, cfg.model_channels))
        if y is not None:
            emb = emb + self.label_emb(y)
        skips = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.type(x.dtype))

    def check_input(self, x: torch.Tensor) -> None:
        """Validate x_t ``[N, in_channels, image_size, image_size]`` (finite floats)."""
        check_image_batch("x", x, channels=self.config.in_channels, size=self.config.image_size)


def _check_shared_config(who: str, models: Sequence[nn.Module], shared: Sequence[str]) -> None:
    """Raise unless every model's config agrees with the first's on the fields ``shared``."""
    differ = sorted({f for m in models[1:] for f in shared if getattr(m.config, f) != getattr(models[0].config, f)})
    if differ:
        raise SaliencyNoiseError(f"{who}: the UNets differ in {differ}; all must share {tuple(shared)}")


class TimestepExperts(nn.Module):
    """Two denoisers sharing one diffusion process, each for its own noise levels (the "expert denoisers" of
    eDiff-I, Balaji et al. 2022): ``low`` for original timesteps t < ``below_t``, ``high`` for the rest.

    Called like a UNet, ``model(x_t [N, C, H, W], t [N], y [N])``, and routed per sample, so samplers,
    classifier-free and classifier guidance wrap it unchanged. ``config`` is ``high``'s; both must agree on
    what the samplers and guidance read from it (image size, channels, classes, null class).
    """

    SHARED = ("image_size", "in_channels", "out_channels", "num_classes", "null_class")

    def __init__(self, high: nn.Module, low: nn.Module, below_t: int):
        super().__init__()
        _check_shared_config("TimestepExperts", [high, low], self.SHARED)
        if below_t < 1:
            raise SaliencyNoiseError(f"TimestepExperts: below_t must be >= 1, got {below_t}")
        self.high, self.low, self.below_t = high, low, int(below_t)

    @property
    def config(self) -> UNetConfig:
        return self.high.config

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        is_low = t < self.below_t
        if bool(is_low.all()):
            return self.low(x, t, y=y)
        if not bool(is_low.any()):
            return self.high(x, t, y=y)
        out = torch.empty((x.shape[0], self.config.out_channels, *x.shape[2:]), dtype=x.dtype, device=x.device)
        for mask, model in ((is_low, self.low), (~is_low, self.high)):
            out[mask] = model(x[mask], t[mask], y=None if y is None else y[mask])
        return out

    def bands(self, num_timesteps: int = 1000) -> list[tuple[nn.Module, int, int]]:
        """Which UNet takes which timesteps, ``[(unet, t_lo, t_hi), ...]`` with ``t_lo <= t < t_hi``, from the base
        (highest noise) to the expert for the lowest noise levels; a chain (``high`` itself a TimestepExperts, as
        ``presets.low_noise_experts`` builds it) is unrolled. ``num_timesteps`` is T, the top of the base's band."""
        above = self.high.bands(num_timesteps) if isinstance(self.high, TimestepExperts) else [(self.high, 0, num_timesteps)]
        head, (base, _, hi) = above[:-1], above[-1]   # the previous lowest band is cut at below_t
        return head + [(base, self.below_t, hi), (self.low, 0, self.below_t)]


def save_unet(model: UNet, path: str, extra_metadata: Mapping[str, str] | None = None) -> None:
    meta = config_to_metadata(model.config)
    meta.update(extra_metadata or {})
    save_tensors(path, model.state_dict(), meta)


def load_unet(path: str, config: UNetConfig | None = None) -> UNet:
    """Load a UNet from safetensors (config from the metadata unless given) or an official ``.pt``."""
    if str(path).endswith(".pt"):
        if config is None:
            raise WeightsError(f"{path!r} is a .pt checkpoint without a stored config: pass config= "
                               "(e.g. UNet.from_guided_diffusion_flags(flags).config)")
        state, stored = load_torch_checkpoint(path), None
    else:
        state, meta = load_tensors(path)
        stored = config_from_metadata(meta, UNetConfig) if "config" in meta else None
    if config is not None and stored is not None and config != stored:
        diff = {f.name: (getattr(config, f.name), getattr(stored, f.name))
                for f in dataclasses.fields(UNetConfig) if getattr(config, f.name) != getattr(stored, f.name)}
        raise WeightsError(f"configuration does not match the one stored in {path!r}: "
                           f"(given, stored) = {diff}")
    cfg = config or stored
    if cfg is None:
        raise WeightsError(f"{path!r} has no stored UNetConfig; pass config=")
    model = UNet(cfg)
    load_module_weights(model, state, repr(str(path)))
    return model.eval()
