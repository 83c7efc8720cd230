"""Latency of the generation explorer as a user feels it: in JupyterLab, in headless Chromium, control to image.

    python scripts/bench_widgets_page.py [--changes 5] [--json runs/bench_widgets_page.json]

It opens a notebook holding notebook 03's explorer at its defaults (4 guides, DDIM-20, the preset's guidance),
times the same redraw in a cell (the kernel's main thread), then in the page: the time from
a control change to the new image, ``--changes`` times per control (IG step, target class, strength), and two fast
moves of the strength slider: a mouse drag across several values (the slider reports on release) and a burst of key
presses, each a change sent to the kernel (the explorer samples only the newest settings behind the one in
flight). Next to each page latency it records the sampling time the explorer's status line reports, measured in
the kernel's callback, so the page's own share and the callback's share can be told apart. Prints a line and
writes JSON with the CPU, threads and torch version.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from lab_page import (  # noqa: E402  (tests/ holds the page driver shared with the browser test)
    browser_page,
    cell_output,
    change_and_wait,
    explorer_notebook,
    jupyterlab,
    open_notebook,
    press_slider,
    run_all,
    select_option,
    stage_notebooks,
)

STATUS_LOG = """(root) => {
  const labels = root.querySelectorAll('.widget-label'); const s = labels[labels.length - 1];
  window.__statuses = [];
  new MutationObserver(() => window.__statuses.push([performance.now(), s.textContent]))
    .observe(s, {childList: true, characterData: true, subtree: true});
}"""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def settle(page, out, move, final: str, timeout_s: float = 120) -> dict:
    """Apply a fast ``move``; return the seconds from its end to the image of ``final`` and how many samplings the
    kernel started meanwhile (status lines that began with 'sampling')."""
    handle = out.element_handle()
    page.evaluate(STATUS_LOG, handle)
    move()
    seconds = change_and_wait(page, out, lambda: None, final, timeout_s)
    statuses = page.evaluate("() => window.__statuses.map(s => s[1])")
    started = len([s for s in dict.fromkeys(statuses) if s.startswith("sampling")])
    return {"seconds": round(seconds, 3), "samplings": started}


def kernel_seconds(out) -> float:
    """The sampling time the explorer's status line reports (measured in the kernel)."""
    m = re.search(r"sampled in ([\d.]+) s", out.locator(".widget-label").last.inner_text())
    return float(m.group(1)) if m else float("nan")


def measure(changes: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = stage_notebooks(Path(tmp), [], extra={"explorer.ipynb": explorer_notebook(
            main_thread_repeats=changes)})
        with jupyterlab(root) as server, browser_page() as page:
            open_notebook(page, server, "notebooks/explorer.ipynb")
            run_all(page)
            text = cell_output(page, "main-thread redraw seconds").inner_text()
            main = [float(v) for v in re.findall(r"[\d.]+", text.split(":", 1)[1])]
            out = cell_output(page, "generation_explorer(state")
            out.scroll_into_view_if_needed()
            lat: dict[str, list[float]] = {"IG step": [], "target class": [], "strength": []}
            in_kernel: list[float] = []
            k_values = ["k=300", "k=1000"]
            for i in range(changes):
                key = "ArrowLeft" if i % 2 == 0 else "ArrowRight"
                lat["IG step"].append(change_and_wait(page, out, lambda: press_slider(out, 0, key), k_values[i % 2]))
                in_kernel.append(kernel_seconds(out))
            names = ["key", "flag", "arrow", "crescent", "mushroom", "L-shape", "T-shape"]   # it starts at fish
            for i in range(changes):
                name = names[i % len(names)]
                lat["target class"].append(change_and_wait(page, out, lambda: select_option(out, name),
                                                           f"target={name}"))
                in_kernel.append(kernel_seconds(out))
            for i in range(changes):
                key, value = ("ArrowRight", "0.35") if i % 2 == 0 else ("ArrowLeft", "0.30")
                lat["strength"].append(change_and_wait(page, out, lambda: press_slider(out, 1, key),
                                                       f"strength={value}"))
                in_kernel.append(kernel_seconds(out))
            # a mouse drag of the strength handle to the right end, through several positions
            h = out.locator(".noUi-handle").nth(1)
            box, track = h.bounding_box(), out.locator(".noUi-target").nth(1).bounding_box()
            x0, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

            def drag() -> None:
                page.mouse.move(x0, y)
                page.mouse.down()
                for j in range(1, 9):
                    page.mouse.move(x0 + (track["x"] + track["width"] - x0) * j / 8, y, steps=2)
                page.mouse.up()

            drag_result = settle(page, out, drag, "strength=1.00")
            # a burst of five key presses on the strength slider, each sent to the kernel as it happens
            burst = settle(page, out, lambda: [press_slider(out, 1, "ArrowLeft") for _ in range(5)], "strength=0.75")
        return {"main_thread_redraw_s": main,
                "main_thread_median_s": round(statistics.median(main), 3),
                "page_latency_s": {c: [round(v, 3) for v in vs] for c, vs in lat.items()},
                "page_median_s": {c: round(statistics.median(vs), 3) for c, vs in lat.items()},
                "kernel_sampling_s": in_kernel, "kernel_sampling_median_s": round(statistics.median(in_kernel), 3),
                "drag_to_end": drag_result, "burst_of_5_keys": burst}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--changes", type=int, default=5, help="changes per control (median over them)")
    p.add_argument("--json", type=Path, default=ROOT / "runs" / "bench_widgets_page.json")
    a = p.parse_args()
    a.json.parent.mkdir(parents=True, exist_ok=True)
    import torch

    t0 = time.time()
    r = measure(a.changes)
    print(f"redraw in a cell {r['main_thread_median_s']:.2f} s; in the page, the callback's sampling "
          f"{r['kernel_sampling_median_s']:.2f} s and change to image "
          + ", ".join(f"{c} {m:.2f} s" for c, m in r["page_median_s"].items())
          + f"; drag {r['drag_to_end']['seconds']:.2f} s ({r['drag_to_end']['samplings']} sampling), "
          f"5-key burst {r['burst_of_5_keys']['seconds']:.2f} s ({r['burst_of_5_keys']['samplings']} samplings)"
          f"  (medians over {a.changes}; {time.time() - t0:.0f} s)", flush=True)
    result = {"cpu": cpu_model(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
              "changes_per_control": a.changes, **r}
    a.json.write_text(json.dumps(result, indent=1))
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
