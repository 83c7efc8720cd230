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
import time
from dataclasses import dataclass

import torch
from PIL import Image

from .errors import SaliencyNoiseError, check_image_batch
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


def _png(images01: torch.Tensor, nrow: int, scale: int | None = None) -> bytes:
    """Tile ``[N, 3, H, W]`` in [0, 1] and encode as PNG, upscaled ``scale`` x (nearest) for the screen (default:
    to about 128 px a tile, e.g. 4 x for the tiny preset's 32 px, 1 x for 128 px photos)."""
    scale = max(1, 128 // images01.shape[-2]) if scale is None else scale
    g = grid(images01, nrow)
    g = g.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    arr = (g.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def dimmed(images01: torch.Tensor) -> torch.Tensor:
    """The stale image shown while a redraw samples: halfway to white, ``[N, 3, H, W]`` in [0, 1]."""
    return 0.5 + 0.5 * images01


def _static_fallback(box, png: bytes):
    """Give the widget box an ``image/png`` rendering of its default state next to its widget view, for readers that
    cannot show live widgets (a saved notebook before it runs, GitHub, the rendered site)."""
    base = box._repr_mimebundle_

    def bundle(**kwargs):
        data = base(**kwargs)
        if data is not None:
            data = dict(data)
            data["image/png"] = png
        return data

    box._repr_mimebundle_ = bundle
    return box


def snapshot_explorer(crafted: CraftedNoise, guides: torch.Tensor | None = None):
    """IG-step slider over the stored snapshots, each row captioned (the guides above, if given, at the snapshots'
    size: for photos pass ``crafted.at_ig_resolution()``)."""
    import ipywidgets as w   # an optional dependency (the notebooks extra): only the widgets need it

    steps = sorted(crafted.noises)
    if guides is not None:
        check_image_batch("guides", guides, size=crafted[steps[-1]].shape[-1])
    slider = w.SelectionSlider(options=steps, value=steps[-1], description="IG step k", continuous_update=False)
    image = w.Image(format="png")
    caption = w.HTML()
    top = []
    if guides is not None:
        top = [w.HTML("<b>guides x*</b>: the images whose gradients IG matches"),
               w.Image(value=_png(to_display(guides), guides.shape[0]), format="png")]

    shown: dict = {}

    def update(change=None) -> None:
        imgs = shown["images"] = render_snapshot(crafted, slider.value)
        image.value = _png(imgs, imgs.shape[0])
        caption.value = (f"<b>IG snapshot at step k = {slider.value}</b>, standardized (the x_T of Alg. 1; "
                         "grey = 0, black/white = -3/+3 standard deviations)")

    slider.observe(update, names="value")
    update()
    box = w.VBox([slider, *top, caption, image])
    still = shown["images"] if guides is None else torch.cat([to_display(guides), shown["images"]])
    return _static_fallback(box, _png(still, len(shown["images"])))


def generation_explorer(state: ExplorerState, ig_step: int | None = None, target: str | None = None,
                        strength: float = 0.3, guides: torch.Tensor | None = None):
    """IG step, target class (by name) and strength controls over :func:`render_generation`.

    Shows the guides (if given, ``[G, 3, S, S]`` in [-1, 1]) above their generations, so that layout control can
    be judged; while a redraw samples, the stale images are dimmed and the status line says so; afterwards it
    names the settings of the images shown. Sliders report on release (``continuous_update=False``), and a redraw
    that finds the controls moved again samples their newest values only, so a fast drag costs at most one
    sampling beyond the one in flight.
    """
    import ipywidgets as w

    steps = sorted(state.crafted.noises)
    if guides is not None:   # checked before the first sampling
        check_image_batch("guides", guides, channels=3, value_range=(-1, 1))
        n = len(state.crafted[steps[-1]])
        if len(guides) != n:
            raise SaliencyNoiseError(f"{len(guides)} guides for {n} crafted noises: pass the guides the noise was "
                                     "crafted from")
    names = list(state.preset.class_names)
    k = w.SelectionSlider(options=steps, value=steps[-1] if ig_step is None else ig_step, description="IG step k",
                          continuous_update=False)
    cls = w.Dropdown(options=names, value=target or names[0], description="target")
    s = w.FloatSlider(value=strength, min=0.0, max=1.0, step=0.05, description="strength", continuous_update=False,
                      tooltip="1 = the paper's recipe (standardized IG noise), 0 = Gaussian noise")
    image = w.Image(format="png")
    caption = w.HTML()
    status = w.Label()
    shown: dict = {"settings": None, "images": None}

    def describe(settings) -> str:
        return f"{state.sampler.label}, k={settings[0]}, target={settings[1]}, strength={settings[2]:.2f}"

    def update(change=None) -> None:
        settings = (k.value, cls.value, float(s.value))
        if settings == shown["settings"]:   # a queued change that a later redraw already showed
            return
        status.value = f"sampling {describe(settings)} ..."
        if shown["images"] is not None:
            image.value = _png(dimmed(shown["images"]), len(shown["images"]))
        t0 = time.perf_counter()
        try:
            imgs = to_display(render_generation(state, *settings))
        except Exception as err:   # say it where the user looks, then let the kernel log the traceback
            status.value = f"could not draw {describe(settings)}: {err}"
            raise
        image.value = _png(imgs, len(imgs))
        shown.update(settings=settings, images=imgs)
        caption.value = f"<b>generated</b>: target class <b>{settings[1]}</b>, one image per guide"
        status.value = f"showing {describe(settings)} (sampled in {time.perf_counter() - t0:.2f} s)"

    for c in (k, cls, s):
        c.observe(update, names="value")
    update()
    rows = [w.HBox([k, cls, s])]
    still = shown["images"]
    if guides is not None:
        rows += [w.HTML("<b>guides x*</b>: where and how each object lies"),
                 w.Image(value=_png(to_display(guides), len(guides)), format="png")]
        still = torch.cat([to_display(guides), still])
    box = w.VBox([*rows, caption, image, status])
    box.redraw = update   # what a control change calls (tests and the latency benchmark drive it directly)
    return _static_fallback(box, _png(still, len(shown["images"])))
