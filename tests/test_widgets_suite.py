"""Notebook support: widget callbacks and wiring, guide loading, the papermill suite runner."""

import json

import nbformat
import pytest
import torch

from saliency_lib import suite
from saliency_lib.errors import SaliencyNoiseError
from saliency_lib.pipeline import (
    CraftedNoise,
    Sampler,
    generate,
    guides_for,
    load_guide_images,
)
from saliency_lib.presets import load_tiny
from saliency_lib.widgets import (
    ExplorerState,
    explorer_x_T,
    generation_explorer,
    render_generation,
    render_snapshot,
    snapshot_explorer,
)


@pytest.fixture(scope="module")
def preset():
    return load_tiny()


@pytest.fixture(scope="module")
def state(preset):
    g = torch.Generator().manual_seed(0)
    noises = {0: torch.randn(2, 3, 32, 32, generator=g), 50: torch.randn(2, 3, 32, 32, generator=g)}
    crafted = CraftedNoise(noises=noises, raw=noises, stats={})
    return ExplorerState(preset, crafted, torch.randn(2, 3, 32, 32, generator=g), sampler=Sampler("ddim", 3))


def test_render_generation_is_deterministic_and_follows_the_controls(state):
    a = render_generation(state, 50, "fish", 0.3)
    assert a.shape == (2, 3, 32, 32) and torch.isfinite(a).all() and a.abs().max() <= 1
    assert torch.equal(a, render_generation(state, 50, "fish", 0.3))
    assert not torch.equal(a, render_generation(state, 0, "fish", 0.3))      # IG step matters
    assert not torch.equal(a, render_generation(state, 50, "key", 0.3))      # target class matters
    # strength 0 is Gaussian noise: the same as sampling the fresh draw directly
    g0 = render_generation(state, 50, "fish", 0.0)
    assert torch.allclose(g0, generate(state.preset, state.fresh, "fish", state.sampler), atol=1e-6)
    # strength 1 is the paper's recipe: x_T is the crafted snapshot itself
    assert torch.equal(explorer_x_T(state, 50, 1.0), state.crafted[50])


def test_explorer_rejects_bad_inputs(state):
    with pytest.raises(SaliencyNoiseError, match="no snapshot at IG step 7"):
        render_generation(state, 7, "fish", 0.3)
    with pytest.raises(SaliencyNoiseError, match="unknown class"):
        render_generation(state, 0, "zebra", 0.3)
    with pytest.raises(SaliencyNoiseError, match="strength .* must be in"):
        render_generation(state, 0, "fish", 1.5)
    with pytest.raises(SaliencyNoiseError, match="fresh noise has shape"):
        ExplorerState(state.preset, state.crafted, torch.randn(3, 3, 32, 32))


def test_render_snapshot_range(state):
    s = render_snapshot(state.crafted, 50)
    assert s.shape == (2, 3, 32, 32) and s.min() >= 0 and s.max() <= 1


def test_widgets_redraw_when_a_control_changes(state):
    pytest.importorskip("ipywidgets")
    guides = torch.rand(2, 3, 32, 32) * 2 - 1
    box = generation_explorer(state, target="fish", strength=0.3, guides=guides)
    controls, guide_caption, guide_image, caption, image, status = box.children
    k, cls, s = controls.children
    assert not k.continuous_update and not s.continuous_update   # a drag reports on release only
    assert "guides" in guide_caption.value and guide_image.value[:8] == b"\x89PNG\r\n\x1a\n"
    first = image.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and status.value.startswith("showing") and "target=fish" in status.value
    cls.value = "key"
    assert image.value != first and "target=key" in status.value and "key" in caption.value
    # the saved notebook's static rendering of the default state: guides above generations
    bundle = box._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and bundle["image/png"][:4] == b"\x89PNG"
    box2 = snapshot_explorer(state.crafted, guides)
    slider, _, _, caption2, img = box2.children
    before = img.value
    slider.value = 0
    assert img.value != before and "k = 0" in caption2.value
    with pytest.raises(SaliencyNoiseError, match="3 guides for 2 crafted noises"):
        generation_explorer(state, guides=torch.zeros(3, 3, 32, 32))


def test_a_redraw_samples_only_the_newest_settings(state, monkeypatch):
    """A change queued behind a redraw that already showed the controls' newest values samples nothing."""
    pytest.importorskip("ipywidgets")
    import saliency_lib.widgets as widgets

    calls = []
    real = widgets.render_generation

    def counting(*args):
        calls.append(args[1:])
        return real(*args)

    monkeypatch.setattr(widgets, "render_generation", counting)
    box = generation_explorer(state, target="fish", strength=0.3)
    s = box.children[0].children[2]
    image, status = box.children[2], box.children[3]
    s.value = 0.5                            # one sampling for the new value
    assert len(calls) == 2 and "strength=0.50" in status.value
    shown = image.value
    box.redraw({"name": "value", "new": 0.45})   # an event queued meanwhile (a value the slider has since left)
    assert len(calls) == 2 and image.value == shown


def test_guides_for(preset, tmp_path):
    g = guides_for(preset, 3)
    assert g.images.shape == (3, 3, 32, 32) and g.labels.shape == (3,) and g.masks.dtype == torch.bool
    from PIL import Image
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (20, 0, 40, 20))
    img.save(tmp_path / "a.png")
    x = load_guide_images([tmp_path / "a.png"], 16)
    assert x.shape == (1, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert x[0, 0, 8, 2] > 0.9 and x[0, 2, 8, 13] > 0.9   # centre crop keeps both halves, left red, right blue
    g2 = guides_for(preset, 0, paths=[tmp_path / "a.png"], labels=["fish"])
    assert g2.masks is None and g2.labels.tolist() == [preset.class_id("fish")]
    with pytest.raises(SaliencyNoiseError, match="does not exist"):
        load_guide_images([tmp_path / "missing.png"], 16)
    import dataclasses
    with pytest.raises(SaliencyNoiseError, match="no built-in guides"):
        guides_for(dataclasses.replace(preset, name="imagenet128"), 2)


# ----------------------------------------------------------------------------- suite
def _notebook(path, body):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    p = nbformat.v4.new_code_cell("preset = 'tiny'\ndevice = 'cpu'\nvalue = 1")
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)


def test_discover_and_parse(tmp_path):
    for name in ("01_a.ipynb", "02_b.ipynb", "notes.ipynb"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in suite.discover(tmp_path)] == ["01_a.ipynb", "02_b.ipynb"]
    assert [p.name for p in suite.discover(tmp_path, ["02"])] == ["02_b.ipynb"]
    with pytest.raises(SaliencyNoiseError, match="no such notebook"):
        suite.discover(tmp_path, ["07"])
    with pytest.raises(SaliencyNoiseError, match="no notebooks"):
        suite.discover(tmp_path / "empty")
    assert suite.parse_value("[0, 100]") == [0, 100] and suite.parse_value("cuda") == "cuda"
    assert suite.parse_value("{'classifier_guidance': True}") == {"classifier_guidance": True}


def test_every_notebook_hands_its_preset_options_to_the_loader():
    """The suite's ``-p preset_options ...`` reaches ``load_preset`` in every notebook (the template's one
    ``parameters`` cell defines it as an empty dict, and the preset is loaded with it)."""
    import nbformat

    for path in suite.discover():
        nb = nbformat.read(path, as_version=4)
        params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1, path.name
        scope: dict = {}
        exec(params[0].source, scope)
        assert scope["preset_options"] == {}, path.name
        loads = [c.source for c in nb.cells if c.cell_type == "code" and "load_preset(" in c.source and c is not params[0]]
        assert any("load_preset(preset, device, **preset_options)" in src for src in loads), path.name


def test_suite_runs_passes_parameters_and_names_the_failing_cell(tmp_path, capsys):
    pytest.importorskip("papermill")
    books = tmp_path / "nb"
    books.mkdir()
    _notebook(books / "01_ok.ipynb", "open('seen.json', 'w').write(__import__('json').dumps([preset, device, value]))")
    _notebook(books / "02_bad.ipynb", "raise ValueError(f'broken {value}')")
    out = tmp_path / "runs"
    rc = suite.main(["--notebooks", str(books), "--out", str(out), "--only", "01", "--device", "meta", "-p", "value", "7"])
    assert rc == 0
    assert json.loads((books / "seen.json").read_text()) == ["tiny", "meta", 7]
    assert (out / "01_ok" / "01_ok.ipynb").exists()
    rc = suite.main(["--notebooks", str(books), "--out", str(out), "-p", "value", "3"])
    err = capsys.readouterr().err
    assert rc == 1 and "02_bad.ipynb" in err and "ValueError" in err and "broken 3" in err and "cell" in err


def test_save_class_rows_puts_each_class_on_its_own_row(tmp_path):
    """The sweeps' and probes' sample grids (plotting.save_class_rows): row c holds class c's first images."""
    from PIL import Image

    from saliency_lib.plotting import save_class_rows

    y = torch.tensor([0, 1, 0, 1, 0, 1])
    images = torch.where(y.view(-1, 1, 1, 1) == 0, -1.0, 1.0).expand(6, 3, 4, 4).clone()   # class 0 black, 1 white
    path = save_class_rows(images, y, 2, tmp_path / "rows.png", columns=2)
    import numpy as np

    grid = torch.from_numpy(np.array(Image.open(path).convert("L"))).float()   # [H, W] in [0, 255]
    assert grid.shape == (2 + 2 * (4 + 2), 2 + 2 * (4 + 2))   # 2 x 2 tiles of 4 px, 2 px padding around each
    assert grid[2:6, 2:6].max() == 0 and grid[8:12, 2:6].min() == 255


def test_enlarge_repeats_every_pixel():
    from saliency_lib.plotting import enlarge

    x = torch.arange(8.0).view(2, 1, 2, 2)
    big = enlarge(x, 3)
    assert big.shape == (2, 1, 6, 6)
    assert torch.equal(big[:, :, ::3, ::3], x) and torch.equal(big[1, 0, 3:6, 0:3], torch.full((3, 3), 6.0))
    assert torch.equal(enlarge(x, 1), x)
    with pytest.raises(ValueError, match="enlarge factor must be >= 1"):
        enlarge(x, 0)

