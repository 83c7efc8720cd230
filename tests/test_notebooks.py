"""The notebooks' regression check is nbval (``pytest --nbval notebooks``, run by the README's test command); these
tests show that it catches regressions: nbval run on copies of a notebook whose stored outputs were altered fails
on each altered cell, except where the change lies within the tolerance the cell declares (``conftest.py``)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import nbformat
import pytest

from saliency_lib.outputs import Tolerance

pytestmark = pytest.mark.notebooks

REPO = Path(__file__).resolve().parents[1]
SANITIZE = REPO / "tests" / "nbval_sanitize.cfg"


@pytest.fixture
def workdir():
    """A folder under ``runs/`` (inside the repository, so that the repository's conftest.py, the nbval hook, applies)
    laid out like the checkout: the notebooks' relative paths (``../data``, ``../results``) resolve."""
    root = REPO / "runs" / "nbval_checks" / uuid.uuid4().hex[:8]
    (root / "notebooks").mkdir(parents=True)
    for name in ("data", "results"):
        (root / name).symlink_to(REPO / name, target_is_directory=True)
    yield root
    shutil.rmtree(root)


def _code_cells(nb) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]


def _stdout(cell) -> dict:
    return next(o for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def _alter(cell, old: str, new: str) -> None:
    out = _stdout(cell)
    assert old in out.text, (old, out.text[:200])
    out.text = out.text.replace(old, new, 1)


def _nbval(path: Path, *extra: str) -> dict[int, str]:
    """Run nbval on one notebook in a fresh process; the outcome of each nbval item, by code-cell number."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "--nbval", str(path), "--nbval-current-env",
                           "--nbval-sanitize-with", str(SANITIZE), "-p", "no:cacheprovider", "-rA", *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    found = {int(n): outcome for outcome, n in re.findall(r"^(PASSED|FAILED|SKIPPED|ERROR) \S+::Cell (\d+)", proc.stdout,
                                                           re.MULTILINE)}
    assert found, proc.stdout[-3000:] + proc.stderr[-3000:]
    return found


def _tolerant_cell(nb) -> int:
    return next(i for i in _code_cells(nb) if Tolerance.of_cell(nb.cells[i]).atol > 0.1)


def test_nbval_fails_on_altered_outputs_and_passes_within_a_declared_tolerance(workdir):
    """Notebook 06 (17 s): a changed number, a changed condition name, a flipped verdict and an extra line in cells
    that must match exactly each fail; the live run's table, whose cell allows atol 0.5, passes with a number moved
    by 0.1 and fails with one moved by 2; unaltered cells pass."""
    src = REPO / "notebooks" / "06_quantitative_evaluation.ipynb"
    nb = nbformat.read(src, as_version=4)
    code = _code_cells(nb)
    tol = _tolerant_cell(nb)
    printing = [i for i in code if any(o.output_type == "stream" and o.name == "stdout" for o in nb.cells[i].outputs)]
    exact = [i for i in printing if i != tol][:4]   # the full table, orientation rows, verdicts, realism table
    table, orientation, verdicts = exact[0], exact[1], exact[2]
    _alter(nb.cells[table], "iou 0.050 [0.031, 0.071]", "iou 0.051 [0.031, 0.071]")       # a number
    _alter(nb.cells[orientation], "orientation rot180", "orientation rot190")              # a name
    _alter(nb.cells[verdicts], "does not hold  IG beats", "HOLDS          IG beats")       # a verdict
    _stdout(nb.cells[exact[3]]).text += "an extra line\n"                                  # an extra line
    live = _stdout(nb.cells[tol]).text
    first = re.search(r"centroid_dist (\d+\.\d)", live).group(1)
    _stdout(nb.cells[tol]).text = live.replace(f"centroid_dist {first}", f"centroid_dist {float(first) + 0.1:.1f}", 1)
    within = workdir / "notebooks" / "within.ipynb"
    nbformat.write(nb, within)
    result = _nbval(within)
    for i in exact:
        assert result[code.index(i)] == "FAILED", (i, result)
    assert result[code.index(tol)] == "PASSED", result
    assert sum(v == "PASSED" for v in result.values()) == len(code) - len(exact), result
    # the same copy without the repository's hook (--noconftest): nbval alone rejects the tolerated change
    assert _nbval(within, "--noconftest")[code.index(tol)] == "FAILED"
    _stdout(nb.cells[tol]).text = live.replace(f"centroid_dist {first}", f"centroid_dist {float(first) + 2:.1f}", 1)
    beyond = workdir / "notebooks" / "beyond.ipynb"
    nbformat.write(nb, beyond)
    assert _nbval(beyond)[code.index(tol)] == "FAILED"


def test_nbval_fails_on_a_changed_shape_and_checks_the_cell_after_each_widget(workdir):
    """Notebook 02 (5 s): a changed tensor shape fails; the widget cell is not compared (NBVAL_IGNORE_OUTPUT), the
    cell after it, which calls the widget's callback, is, and fails when its stored output is altered."""
    src = REPO / "notebooks" / "02_noise_crafting.ipynb"
    nb = nbformat.read(src, as_version=4)
    code = _code_cells(nb)
    widget = next(i for i in code if "NBVAL_IGNORE_OUTPUT" in nb.cells[i].source)
    callback = code[code.index(widget) + 1]
    assert "render_snapshot" in nb.cells[callback].source
    _alter(nb.cells[callback], "(4, 3, 32, 32)", "(4, 3, 32, 31)")
    nb.cells[widget].outputs[0]["data"]["text/plain"] = "VBox(children=(something else,))"
    path = workdir / "notebooks" / "shape.ipynb"
    nbformat.write(nb, path)
    result = _nbval(path)
    assert result[code.index(callback)] == "FAILED" and result[code.index(widget)] == "PASSED", result
    assert sum(v == "FAILED" for v in result.values()) == 1, result


def test_every_shipped_tolerance_is_valid_and_explained_and_every_widget_cell_is_marked():
    declared = 0
    for path in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(path.read_text())
        for i, cell in enumerate(nb["cells"]):
            tol = Tolerance.of_cell(cell, where=f"{path.name} cell {i}")
            if tol.atol or tol.rtol:
                declared += 1
                assert len(tol.why) > 20, (path.name, i)
            widget = any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                         for o in cell.get("outputs", []))
            assert widget == ("# NBVAL_IGNORE_OUTPUT" in "".join(cell.get("source", ""))), (path.name, i)
    assert declared > 0
