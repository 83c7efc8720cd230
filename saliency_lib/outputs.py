"""Stored notebook outputs: does a fresh run reproduce them, to within each cell's stated tolerance?

The notebooks ship with their outputs (what a reader sees before running anything). The test suite
re-executes every notebook and compares its text outputs with the stored ones, cell by cell:

- the text around the numbers must match exactly (the same lines, labels, columns, number of values);
- every number must match to within the cell's tolerance, ``|fresh - stored| <= atol + rtol * |stored|``.
  The default tolerance is zero: a cell whose printout is deterministic (shapes, schedules, values read
  from a results JSON) must print exactly what is stored.
- memory addresses (``0x7f...``) are masked; images and widget models are not compared (their bytes
  change with the CPU's rounding and with matplotlib); an output missing on one side is a mismatch.

Why tolerances: diffusion sampling and Inverting Gradients iterate float32 convolutions tens to hundreds of
times, and oneDNN/BLAS pick kernels (and so summation orders) by CPU model. Two CPUs therefore draw
slightly different images from the same seed, and a statistic over a handful of images can move by a sample
or two: with 8 images, one image judged differently moves an accuracy by 0.125. A cell that prints such a
statistic declares how far it may move, and why, in its metadata::

    "reproduce": {"atol": 0.26, "why": "accuracies over 8 images: up to two images may be judged
                  differently on another CPU (2/8, plus 0.01 for the printed rounding)"}

(JupyterLab: the cell's property inspector, "Cell metadata".) Keys: ``atol``, ``rtol`` (numbers >= 0) and
``why`` (required when either is non-zero).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from .errors import SaliencyNoiseError

METADATA_KEY = "reproduce"
# a decimal number with optional sign, fraction and exponent: "12", "-0.125", "+0.05", "1.23e+00"
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,16}")
# rich outputs compared through their text/plain form; images and widget models are not compared
COMPARED_MIME = "text/plain"


@dataclass(frozen=True)
class Tolerance:
    atol: float = 0.0   # absolute tolerance on every number the cell prints
    rtol: float = 0.0   # relative tolerance, as a fraction of the stored value
    why: str = ""       # the reason a fresh run may print different numbers (required when non-zero)

    def allows(self, stored: float, fresh: float) -> bool:
        return abs(fresh - stored) <= self.atol + self.rtol * abs(stored)

    @classmethod
    def of_cell(cls, cell: dict, where: str = "cell") -> Tolerance:
        """The tolerance a cell declares in ``metadata["reproduce"]`` (zero when absent); checked."""
        spec = cell.get("metadata", {}).get(METADATA_KEY)
        if spec is None:
            return cls()
        if not isinstance(spec, dict):
            raise SaliencyNoiseError(f"{where}: metadata[{METADATA_KEY!r}] must be a dict with atol/rtol/why, "
                                     f"got {type(spec).__name__}")
        unknown = sorted(set(spec) - {"atol", "rtol", "why"})
        if unknown:
            raise SaliencyNoiseError(f"{where}: metadata[{METADATA_KEY!r}] has unknown keys {unknown}; "
                                     "expected atol, rtol, why")
        values = {}
        for key in ("atol", "rtol"):
            v = spec.get(key, 0.0)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise SaliencyNoiseError(f"{where}: metadata[{METADATA_KEY!r}][{key!r}] must be a number >= 0, "
                                         f"got {v!r}")
            values[key] = float(v)
        why = spec.get("why", "")
        if not isinstance(why, str) or ((values["atol"] or values["rtol"]) and not why.strip()):
            raise SaliencyNoiseError(f"{where}: metadata[{METADATA_KEY!r}] needs a 'why' (a non-empty string) "
                                     "saying why its numbers may change between runs")
        return cls(values["atol"], values["rtol"], why)


@dataclass(frozen=True)
class Mismatch:
    cell: int      # index of the cell in the notebook (all cells, 0-based, as nbformat counts)
    stream: str    # "stdout", "stderr", or "text/plain #i" (the i-th rich output)
    message: str   # what differs, stored against fresh

    def __str__(self) -> str:
        return f"cell {self.cell} ({self.stream}): {self.message}"


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def text_outputs(cell: dict) -> dict[str, str]:
    """A code cell's comparable outputs: its stdout and stderr (all chunks joined, as the reader sees
    them) and the ``text/plain`` of each rich output, keyed ``"text/plain #0"``, ``#1``, ... in order."""
    out: dict[str, str] = {}
    rich = 0
    for o in cell.get("outputs", []):
        kind = o.get("output_type")
        if kind == "stream":
            out[o["name"]] = out.get(o["name"], "") + _text(o["text"])
        elif kind in ("execute_result", "display_data"):
            data = o.get("data", {})
            if COMPARED_MIME in data:
                out[f"{COMPARED_MIME} #{rich}"] = _text(data[COMPARED_MIME])
            rich += 1
        elif kind == "error":
            out["error"] = f"{o.get('ename')}: {o.get('evalue')}"
    return out


def compare_text(stored: str, fresh: str, tol: Tolerance) -> str | None:
    """``None`` when ``fresh`` reproduces ``stored`` (same text around the numbers, every number within
    ``tol``); else a message naming the first differences."""
    stored, fresh = ADDRESS.sub("0xADDRESS", stored), ADDRESS.sub("0xADDRESS", fresh)
    if stored == fresh:
        return None
    if NUMBER.split(stored) != NUMBER.split(fresh):
        diff = difflib.unified_diff(stored.splitlines(), fresh.splitlines(), "stored", "fresh", lineterm="", n=0)
        return "the text differs (not only its numbers):\n  " + "\n  ".join(list(diff)[:24])
    bad = []
    for line_s, line_f in zip(stored.splitlines(), fresh.splitlines()):
        pairs = zip(NUMBER.findall(line_s), NUMBER.findall(line_f))
        off = [(a, b) for a, b in pairs if not tol.allows(float(a), float(b))]
        if off:
            bad.append(f"{', '.join(f'{a} -> {b}' for a, b in off)} in {line_s.strip()!r}")
    if not bad:
        return None
    limit = f"atol {tol.atol:g}, rtol {tol.rtol:g}" + (f" ({tol.why})" if tol.why else "")
    return f"numbers beyond the cell's tolerance ({limit}):\n  " + "\n  ".join(bad[:12])


def compare_notebooks(stored: dict, fresh: dict) -> list[Mismatch]:
    """Every code cell of ``fresh`` (an executed copy of ``stored``) against the stored outputs."""
    s_cells, f_cells = stored["cells"], fresh["cells"]
    if [c["cell_type"] for c in s_cells] != [c["cell_type"] for c in f_cells]:
        raise SaliencyNoiseError("the fresh notebook's cells do not line up with the stored notebook's: "
                                 "compare an executed copy of the same notebook")
    found = []
    for i, (s, f) in enumerate(zip(s_cells, f_cells)):
        if s["cell_type"] != "code":
            continue
        tol = Tolerance.of_cell(s, where=f"cell {i}")
        s_out, f_out = text_outputs(s), text_outputs(f)
        for key in sorted(set(s_out) | set(f_out)):
            message = compare_text(s_out.get(key, ""), f_out.get(key, ""), tol)
            if message is not None:
                found.append(Mismatch(i, key, message))
    return found
