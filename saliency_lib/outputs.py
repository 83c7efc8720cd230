"""Stored notebook outputs and the tolerance a cell may declare for them (the nbval hook's comparison).

The notebooks ship with their outputs (what a reader sees before running anything), and the test command checks
them with nbval (``pytest --nbval``): every cell is re-executed and its outputs are compared with the stored ones.
nbval compares text exactly. A cell whose printout is a statistic over generated images declares how far its
numbers may move, and why, in its metadata, and the repository's ``conftest.py`` hooks that into nbval's comparison
through :func:`snap_outputs`; every other cell (shapes, schedules, class names, values read from a results JSON)
must print exactly what is stored.

Why tolerances: diffusion sampling and Inverting Gradients iterate float32 convolutions tens to hundreds of times,
and oneDNN picks kernels (and so summation orders) by CPU model. Two CPUs therefore draw slightly different images
from the same seed, and a statistic over a handful of images can move by a sample or two: with 8 images, one image
judged differently moves an accuracy by 0.125. The declaration::

    "reproduce": {"atol": 0.26, "why": "accuracies over 8 images: up to two images may be judged
                  differently on another CPU (2/8, plus 0.01 for the printed rounding)"}

(JupyterLab: the cell's property inspector, "Cell metadata".) Keys: ``atol``, ``rtol`` (numbers >= 0) and ``why``
(required when either is non-zero). The text around the numbers must still match exactly.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

from .errors import SaliencyNoiseError

METADATA_KEY = "reproduce"
# a decimal number with optional sign, fraction and exponent: "12", "-0.125", "+0.05", "1.23e+00"
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
COMPARED_MIME = "text/plain"   # the rich-output form whose numbers a tolerance covers


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


def snap_text(stored: str, fresh: str, tol: Tolerance) -> str:
    """``fresh`` with every number that lies within ``tol`` of the number at the same place in ``stored`` written as
    the stored one is. Only when the two texts are the same apart from their numbers (the same words, lines and
    count of numbers); otherwise, and for numbers beyond the tolerance, ``fresh`` keeps its own text, so that the
    exact comparison after this reports the difference."""
    if stored == fresh or NUMBER.split(stored) != NUMBER.split(fresh):
        return fresh
    parts, stored_numbers = NUMBER.split(fresh), NUMBER.findall(stored)
    out = [parts[0]]
    for a, b, rest in zip(stored_numbers, NUMBER.findall(fresh), parts[1:]):
        out += [a if tol.allows(float(a), float(b)) else b, rest]
    return "".join(out)


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def snap_outputs(fresh: list, stored: list, tol: Tolerance) -> list:
    """A copy of a cell's ``fresh`` outputs (nbformat output dicts, streams coalesced) with :func:`snap_text` applied
    against the ``stored`` outputs: each stream against the stored stream of the same name, the i-th rich output's
    ``text/plain`` against the stored i-th one's. Outputs without a counterpart are left as they are."""
    if not (tol.atol or tol.rtol):
        return fresh
    streams = {o.get("name"): o for o in stored if o.get("output_type") == "stream"}
    rich = [o for o in stored if o.get("output_type") in ("execute_result", "display_data")]
    out, i = [], 0
    for o in fresh:
        o = copy.deepcopy(o)
        kind = o.get("output_type")
        if kind == "stream" and o.get("name") in streams:
            o["text"] = snap_text(_text(streams[o["name"]]["text"]), _text(o["text"]), tol)
        elif kind in ("execute_result", "display_data"):
            if i < len(rich) and COMPARED_MIME in o.get("data", {}) and COMPARED_MIME in rich[i].get("data", {}):
                o["data"][COMPARED_MIME] = snap_text(_text(rich[i]["data"][COMPARED_MIME]),
                                                     _text(o["data"][COMPARED_MIME]), tol)
            i += 1
        out.append(o)
    return out
