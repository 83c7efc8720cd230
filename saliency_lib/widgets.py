"""Interactive controls of the notebooks: plain callbacks (tested) plus thin ipywidgets wrappers.

The callbacks take everything they use as arguments and return tensors, so tests and the checked
notebook cells call them directly; the ``*_explorer`` functions only wire them to ipywidgets 8 controls
(imported lazily, so the package works without ipywidgets installed):

- IG step: picks among the stored snapshots of a :class:`~saliency_lib.pipeline.CraftedNoise` (instant);
- target class: chosen by name;
- strength: ``s`` in x_T = s * crafted + sqrt(1 - s^2) * eps (1 = the paper's recipe, Alg. 1; 0 = N(0, I)).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import torch
from PIL import Image

from .errors import SaliencyNoiseError
from .noise import mix_with_gaussian
from .pipeline import CraftedNoise, Sampler, generate
from .plotting import grid, noise_to_display, to_display
from .presets import Preset


@dataclass
class ExplorerState:
    """What the generation explorer samples from (built once per notebook section)."""
    preset: Preset              # models; the DDPM samples at preset.image_size
    crafted: CraftedNoise       # IG snapshots k -> standardized noise [G, 3, S, S]
    fresh: torch.Tensor         # [G, 3, S, S] N(0, I) draw mixed in below strength 1 (and strength 0 itself)
    sampler: Sampler = Sampler("ddim", 20)  # few deterministic steps keep a redraw near one second on 2 cores
    seed: int = 0               # sampler seed (only used by stochastic samplers)

    def __post_init__(self) -> None:
        any_noise = next(iter(self.crafted.noises.values()))
        if self.fresh.shape != any_noise.shape:
            raise SaliencyNoiseError(f"fresh noise has shape {tuple(self.fresh.shape)}, the crafted noise "
                                     f"{tuple(any_noise.shape)}: draw it with the same shape")


def explorer_x_T(state: ExplorerState, ig_step: int, strength: float) -> torch.Tensor:
    """x_T ``[G, 3, S, S]`` for one slider position: the IG snapshot at ``ig_step`` mixed at ``strength``."""
    return mix_with_gaussian(state.crafted[ig_step], strength, fresh=state.fresh)


def render_generation(state: ExplorerState, ig_step: int, target: str | int, strength: float) -> torch.Tensor:
    """Callback of the generation explorer: images ``[G, 3, S, S]`` in [-1, 1], one per guide."""
    return generate(state.preset, explorer_x_T(state, ig_step, strength), target, state.sampler, seed=state.seed)


def render_snapshot(crafted: CraftedNoise, ig_step: int) -> torch.Tensor:
    """Callback of the IG-step explorer: the standardized snapshot as displayable ``[G, 3, S, S]`` in [0, 1]."""
    return noise_to_display(crafted[ig_step])


def _png(images01: torch.Tensor, nrow: int, scale: int = 4) -> bytes:
    """Tile ``[N, 3, H, W]`` in [0, 1] and encode as PNG, upscaled ``scale`` x (nearest) for the screen."""
    g = grid(images01, nrow)
    g = g.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    arr = (g.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def snapshot_explorer(crafted: CraftedNoise, guides: torch.Tensor | None = None):
    """IG-step slider over the stored snapshots (and the guides above them, if given)."""
    import ipywidgets as w   # an optional dependency (the notebooks extra): only the widgets need it

    steps = sorted(crafted.noises)
    slider = w.SelectionSlider(options=steps, value=steps[-1], description="IG step k")
    image = w.Image(format="png")
    top = [w.Image(value=_png(to_display(guides), guides.shape[0]), format="png")] if guides is not None else []

    def update(change=None) -> None:
        imgs = render_snapshot(crafted, slider.value)
        image.value = _png(imgs, imgs.shape[0])

    slider.observe(update, names="value")
    update()
    return w.VBox([slider, *top, image])


def generation_explorer(state: ExplorerState, ig_step: int | None = None, target: str | None = None,
                        strength: float = 0.3):
    """IG step, target class (by name) and strength controls over :func:`render_generation`."""
    import ipywidgets as w

    steps = sorted(state.crafted.noises)
    names = list(state.preset.class_names)
    k = w.SelectionSlider(options=steps, value=steps[-1] if ig_step is None else ig_step, description="IG step k")
    cls = w.Dropdown(options=names, value=target or names[0], description="target")
    s = w.FloatSlider(value=strength, min=0.0, max=1.0, step=0.05, description="strength",
                      tooltip="1 = the paper's recipe (standardized IG noise), 0 = Gaussian noise")
    image = w.Image(format="png")
    status = w.Label()

    def update(change=None) -> None:
        status.value = "sampling..."
        imgs = render_generation(state, k.value, cls.value, s.value)
        image.value = _png(to_display(imgs), imgs.shape[0])
        status.value = f"{state.sampler.label}, k={k.value}, target={cls.value}, strength={s.value:.2f}"

    for c in (k, cls, s):
        c.observe(update, names="value")
    update()
    return w.VBox([w.HBox([k, cls, s]), image, status])
