"""Copy the figure of each notebook's cell tagged ``readme-figure`` from its stored outputs to docs/figures/.

    python scripts/export_figures.py        # after `python -m saliency_lib.suite --store`
"""

from __future__ import annotations

import base64

import nbformat

from saliency_lib.suite import NOTEBOOKS, discover
from saliency_lib.weights import atomic_write_bytes

OUT = NOTEBOOKS.parent / "docs" / "figures"


def main() -> None:
    for path in discover(NOTEBOOKS):
        nb = nbformat.read(path, as_version=4)
        pngs = [o["data"]["image/png"] for c in nb.cells if "readme-figure" in c.metadata.get("tags", [])
                for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        if not pngs:
            print(f"{path.name}: no stored figure in a cell tagged readme-figure")
            continue
        dest = OUT / f"{path.stem}.png"
        atomic_write_bytes(dest, base64.b64decode(pngs[-1]))
        print(f"{path.name} -> {dest.relative_to(NOTEBOOKS.parent)}")


if __name__ == "__main__":
    main()
