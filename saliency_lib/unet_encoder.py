"""The noise-aware classifier of classifier guidance as guided-diffusion builds it: the downsampling half of an
ADM UNet (``EncoderUNetModel``; Dhariwal & Nichol 2021, Sec. 4), with the official ``state_dict`` keys, so the
128x128 ImageNet classifier (``128x128_classifier.pt``) loads strictly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from .errors import SaliencyNoiseError
from .unet import (
    DEFAULT_CHANNEL_MULT,
    AttentionPool2d,
    EmbedSequential,
    GroupNorm32,
    _parse_int_list,
    _zero,
    block_factories,
    encoder_blocks,
    timestep_embedding,
)


@dataclass(frozen=True)
class EncoderUNetConfig:
    """The downsampling half of an ADM UNet as a noise-aware classifier (guided-diffusion's ``EncoderUNetModel``,
    the classifier of classifier guidance; Dhariwal & Nichol 2021, Sec. 4). Fields as in :class:`~saliency_lib.unet.UNetConfig`."""
    image_size: int = 32                 # H = W of x_t
    in_channels: int = 3                 # channels of x_t
    model_channels: int = 32             # base width; the embedding is 4x as wide
    out_channels: int = 8                # logits: the number of classes
    num_res_blocks: int = 1              # ResBlocks per resolution level
    attention_resolutions: tuple[int, ...] = (8,)    # resolutions in pixels that get self-attention
    channel_mult: tuple[float, ...] = (1, 2, 2)      # width multiplier per level; len-1 downsamplings
    dropout: float = 0.0                 # dropout inside ResBlocks
    num_heads: int = 4                   # attention heads (when num_head_channels == -1)
    num_head_channels: int = -1          # channels per head; overrides num_heads when != -1
    use_scale_shift_norm: bool = True    # FiLM-like GroupNorm(h) * (1 + scale) + shift from the embedding
    resblock_updown: bool = True         # ResBlocks do the downsampling (else Downsample convs)
    use_new_attention_order: bool = False  # split qkv before heads (QKVAttention) vs legacy order
    norm_groups: int = 32                # GroupNorm groups
    pool: str = "adaptive"               # head after GroupNorm and SiLU: "adaptive" (global average pool, zero 1x1
                                         # conv) or "attention" (AttentionPool2d; the official classifiers')
    num_timesteps: int = 1000            # T of the diffusion whose x_t it reads (t in [0, T))

    def __post_init__(self) -> None:
        if self.pool not in ("adaptive", "attention"):
            raise SaliencyNoiseError(f"EncoderUNetConfig.pool must be 'adaptive' or 'attention' (guided-diffusion's "
                                     f"'spatial' pools are not implemented), got {self.pool!r}")
        if self.pool == "attention" and self.num_head_channels < 1:
            raise SaliencyNoiseError("EncoderUNetConfig: pool 'attention' needs num_head_channels >= 1")
        if self.out_channels < 1 or self.num_timesteps < 1:
            raise SaliencyNoiseError(f"EncoderUNetConfig: out_channels and num_timesteps must be >= 1, got {self}")

    @property
    def attention_ds(self) -> tuple[int, ...]:
        return tuple(self.image_size // r for r in self.attention_resolutions)


class EncoderUNet(nn.Module):
    """Noise-aware classifier p(y | x_t, t): the UNet's timestep embedding, ``input_blocks`` and ``middle_block``,
    then ``out`` (GroupNorm, SiLU, and a pooling head: a global average pool and a zero-initialised 1x1 conv, or an
    attention pool), with the ``state_dict`` keys of guided-diffusion's ``EncoderUNetModel``, so its official
    classifiers (e.g. ``128x128_classifier.pt``) load strictly (:func:`classifier_config_from_guided_diffusion_flags`).

    ``forward(x_t, t)``: ``x_t`` ``[N, C, H, W]`` a diffusion-space noised image (q(x_t | x_0), Eq. 2-3; no
    classifier-space normalization), ``t`` ``[N]`` original timesteps in [0, T) -> logits ``[N, out_channels]``.
    """

    def __init__(self, config: EncoderUNetConfig):
        super().__init__()
        self.config = cfg = config
        mc = cfg.model_channels
        self.time_embed = nn.Sequential(nn.Linear(mc, 4 * mc), nn.SiLU(), nn.Linear(4 * mc, 4 * mc))
        res, attn = block_factories(cfg)
        self.input_blocks, _, ch, ds = encoder_blocks(cfg, res, attn)
        self.middle_block = EmbedSequential(res(ch, ch), attn(ch, cfg.num_heads), res(ch, ch))
        head = ([nn.AdaptiveAvgPool2d((1, 1)), _zero(nn.Conv2d(ch, cfg.out_channels, 1)), nn.Flatten()]
                if cfg.pool == "adaptive" else
                [AttentionPool2d(cfg.image_size // ds, ch, cfg.num_head_channels, cfg.out_channels)])
        self.out = nn.Sequential(GroupNorm32(cfg.norm_groups, ch), nn.SiLU(), *head)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cfg = self.config   # shapes only: a scan of the values would cost a host sync at every guided step
        if x_t.dim() != 4 or x_t.shape[1:] != (cfg.in_channels, cfg.image_size, cfg.image_size):
            raise SaliencyNoiseError(f"x_t must be [N, {cfg.in_channels}, {cfg.image_size}, {cfg.image_size}] (with "
                                     f"{cfg.in_channels} channels), got {tuple(x_t.shape)}")
        if t.shape != (x_t.shape[0],):
            raise SaliencyNoiseError(f"t must be [N] = [{x_t.shape[0]}] timesteps, got {tuple(t.shape)}")
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels))
        h = x_t
        for block in self.input_blocks:
            h = block(h, emb)
        return self.out(self.middle_block(h, emb))


CLASSIFIER_FLAG_KEYS = frozenset({
    "image_size", "classifier_use_fp16", "classifier_width", "classifier_depth", "classifier_attention_resolutions",
    "classifier_use_scale_shift_norm", "classifier_resblock_updown", "classifier_pool"})


def classifier_config_from_guided_diffusion_flags(flags: Mapping[str, Any], num_classes: int = 1000,
                                                  num_timesteps: int = 1000) -> "EncoderUNetConfig":
    """Translate guided-diffusion's classifier flags (``classifier_defaults()`` keys, as its ``create_classifier``
    reads them: channel multipliers by image size, 64 channels per attention head) to an EncoderUNetConfig."""
    unknown = set(flags) - CLASSIFIER_FLAG_KEYS
    if unknown:
        raise SaliencyNoiseError(f"unknown guided-diffusion classifier flags {sorted(unknown)}; expected keys of "
                                 f"classifier_defaults(): {sorted(CLASSIFIER_FLAG_KEYS)}")
    image_size = int(flags.get("image_size", 64))
    if image_size not in DEFAULT_CHANNEL_MULT:
        raise SaliencyNoiseError(f"guided-diffusion has classifiers for image sizes {sorted(DEFAULT_CHANNEL_MULT)}, "
                                 f"got {image_size}")
    return EncoderUNetConfig(
        image_size=image_size, in_channels=3, model_channels=int(flags.get("classifier_width", 128)),
        out_channels=num_classes, num_res_blocks=int(flags.get("classifier_depth", 2)),
        attention_resolutions=_parse_int_list("classifier_attention_resolutions",
                                              flags.get("classifier_attention_resolutions", "32,16,8")),
        channel_mult=DEFAULT_CHANNEL_MULT[image_size], num_heads=1, num_head_channels=64,
        use_scale_shift_norm=bool(flags.get("classifier_use_scale_shift_norm", True)),
        resblock_updown=bool(flags.get("classifier_resblock_updown", True)),
        pool=str(flags.get("classifier_pool", "attention")), num_timesteps=num_timesteps)
