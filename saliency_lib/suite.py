"""Run the notebook suite headless with papermill.

    python -m saliency_lib.suite                              # every notebooks/NN_*.ipynb, preset tiny, CPU
    python -m saliency_lib.suite --preset imagenet128 --device cuda
    python -m saliency_lib.suite --only 02,03 -p seed 1 -p ig_steps "[0, 100, 300]"
    python -m saliency_lib.suite --preset imagenet128 --device cuda -p preset_options "{'classifier_guidance': True}" ...
    python -m saliency_lib.suite --store --only 03             # re-execute in place: the stored outputs

Each notebook runs into ``runs/<name>/<name>.ipynb`` with its ``parameters`` cell overridden (papermill
injects a cell after it). ``-p NAME VALUE`` values are parsed as Python literals when they are one
(numbers, lists, dicts, booleans), else kept as strings; each goes to the notebooks whose parameters cell defines
it, and a name that none defines is refused (exit code 2). Every notebook passes ``preset_options`` (a dict) to
``load_preset``. The first failing notebook stops the run with a non-zero exit code and a message naming the
notebook and the cell. ``--store`` re-executes the notebooks in place: the stored outputs that the README's test
command checks with nbval (``pytest --nbval notebooks``, tolerances as in ``saliency_lib.outputs``).
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import papermill as pm
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from tqdm.auto import tqdm

from .errors import SaliencyNoiseError
from .weights import atomic_write_bytes

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"


@dataclass(frozen=True)
class SuiteResult:
    name: str          # notebook stem, e.g. "01_ddpm_basics"
    output: Path       # executed copy
    seconds: float     # wall time of the run


class NotebookFailed(SaliencyNoiseError):
    """A notebook raised: names the notebook, the cell and the error."""


def discover(folder: Path = NOTEBOOKS, only: list[str] | None = None) -> list[Path]:
    """``NN_*.ipynb`` in ``folder``, sorted; ``only`` keeps those whose number or name is listed."""
    found = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise SaliencyNoiseError(f"no notebooks named NN_*.ipynb in {folder}")
    if only:
        keep = [p for p in found if p.stem[:2] in only or p.stem in only]
        unknown = [o for o in only if not any(p.stem[:2] == o or p.stem == o for p in found)]
        if unknown:
            raise SaliencyNoiseError(f"--only {unknown}: no such notebook; available: {[p.stem for p in found]}")
        found = keep
    return found


def parse_value(text: str):
    """``-p`` values: a Python literal when the text is one, else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def check_parameters(books: list[Path], params: dict) -> dict[Path, dict]:
    """Each notebook's share of the ``-p`` parameters: those its ``parameters`` cell defines. A name that none of
    the notebooks defines is refused (papermill would inject it unused, and the run would silently use the
    defaults, e.g. after a typo)."""
    known = {path: set(pm.inspect_notebook(str(path))) for path in books}
    unknown = sorted(set(params) - set().union(*known.values()))
    if unknown:
        raise SaliencyNoiseError(f"no notebook has the parameter(s) {unknown}; their parameters cells define "
                                 f"{sorted(set().union(*known.values()))}")
    return {path: {k: v for k, v in params.items() if k in known[path]} for path in books}


def run_notebook(path: Path, out_dir: Path, parameters: dict, kernel: str | None = None) -> SuiteResult:
    """Execute one notebook with papermill (cwd = the notebook's folder); raise :class:`NotebookFailed`."""

    out = out_dir / path.stem / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    try:
        pm.execute_notebook(str(path), str(out), parameters=parameters, kernel_name=kernel, progress_bar=False,
                            cwd=str(path.parent))
    except pm.PapermillExecutionError as e:
        raise NotebookFailed(f"{path.name}: cell {e.exec_count} (index {e.cell_index}) failed with "
                             f"{e.ename}: {e.evalue}\n  executed copy: {out}") from None
    return SuiteResult(path.stem, out, time.time() - t0)


def clean_metadata(nb) -> None:
    """Strip volatile metadata (timings, papermill records, widget state); keep execution counts."""
    for key in ("papermill", "widgets"):
        nb.metadata.pop(key, None)
    for cell in nb.cells:
        for key in ("execution", "papermill"):
            cell.metadata.pop(key, None)


def execute(path: Path, kernel: str = "python3", timeout: int = 2000):
    """Execute a copy of ``path`` with its own parameters (cwd = its folder); return the executed notebook.

    ``timeout`` is per cell, in seconds. Raises :class:`NotebookFailed` naming the failing cell."""

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel, record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except CellExecutionError as e:
        raise NotebookFailed(f"{path.name}: {str(e).splitlines()[0] if str(e) else 'a cell failed'}") from None
    return nb


def store_outputs(path: Path, kernel: str = "python3", timeout: int = 2000) -> SuiteResult:
    """Execute ``path`` in place with its own parameters (the outputs that nbval compares against), atomically."""


    t0 = time.time()
    nb = execute(path, kernel, timeout)
    clean_metadata(nb)
    atomic_write_bytes(path, (nbformat.writes(nb) + "\n").encode())
    return SuiteResult(path.stem, path, time.time() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m saliency_lib.suite", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", help="tiny (default, offline) or imagenet128 (GPU, downloads)")
    p.add_argument("--device", default="cpu", help="torch device passed to every notebook")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="override one parameter of every notebook (repeatable)")
    p.add_argument("--only", default=None, help="comma-separated notebook numbers or names")
    p.add_argument("--notebooks", type=Path, default=NOTEBOOKS, help="folder of NN_*.ipynb")
    p.add_argument("--out", type=Path, default=Path("runs"), help="executed notebooks go to <out>/<name>/")
    p.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's)")
    p.add_argument("--store", action="store_true",
                   help="execute the notebooks in place with their own parameters (refreshes the stored outputs that "
                        "nbval checks: pytest --nbval notebooks, the README's test command)")
    a = p.parse_args(argv)
    params = {"preset": a.preset, "device": a.device, **{k: parse_value(v) for k, v in a.parameter}}
    if a.store and (a.parameter or a.preset != "tiny" or a.device != "cpu"):
        flag = "--store"
        print(f"error: {flag} re-executes the notebooks with their own parameters (the stored, checked outputs); "
              f"drop --preset/--device/-p, or run without {flag} to write copies under --out", file=sys.stderr)
        return 2
    try:
        books = discover(a.notebooks, a.only.split(",") if a.only else None)
        per_book = check_parameters(books, params)
    except SaliencyNoiseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    bar = tqdm(books, desc="notebooks", unit="nb")
    for path in bar:
        bar.set_postfix_str(path.stem)
        try:
            if a.store:
                r = store_outputs(path, a.kernel or "python3")
            else:
                r = run_notebook(path, a.out, per_book[path], a.kernel)
        except NotebookFailed as e:
            bar.close()
            print(f"FAILED {e}", file=sys.stderr)
            return 1
        bar.write(f"{r.name}: ok in {r.seconds:.0f} s -> {r.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
