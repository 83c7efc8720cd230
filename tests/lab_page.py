"""Drive the notebooks as a user meets them: JupyterLab on a loopback port, opened in headless Chromium.

Used by ``tests/test_browser.py`` and ``scripts/bench_widgets_page.py``. JupyterLab serves a *copy* of the
notebooks (its autosave must never rewrite the stored outputs) with ``data/`` and ``results/`` linked beside it, so
the notebooks' relative paths resolve; its settings and workspaces live in that folder too. Chromium is Debian's
``/usr/bin/chromium`` (or ``$CHROMIUM``), driven by Playwright through ``executable_path``: Playwright's own
browser download is never used. Every process started here is stopped on exit.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("BROWSER_ARTIFACTS", ROOT / "runs" / "browser"))   # screenshots
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    """The Chromium binary: ``$CHROMIUM``, else ``chromium`` on the PATH (Debian's package)."""
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def explorer_notebook(break_callback: bool = False, main_thread_repeats: int = 0) -> dict:
    """A small notebook holding notebook 03's generation explorer at its defaults (4 guides, DDIM-20, the preset's
    guidance). ``break_callback``: a cell after it makes the explorer's sampling raise (what the browser test must
    catch); ``main_thread_repeats``: a cell that times the same redraw on the kernel's main thread
    and prints ``main-thread redraw seconds: [...]``."""
    import nbformat

    cells = [nbformat.v4.new_code_cell(
        "from saliency_lib.presets import load_preset\n"
        "from saliency_lib.pipeline import Sampler, prepare_guided_noise\n"
        "from saliency_lib.widgets import ExplorerState, generation_explorer\n"
        "import saliency_lib.widgets as W\n"
        "P = load_preset('tiny')\n"
        "noise = prepare_guided_noise(P, 4, [0, 100, 300, 1000], seed=0, cache_dir='../data/ig_cache')\n"
        "state = ExplorerState(P, noise.crafted, noise.fresh, sampler=Sampler('ddim', 20), seed=0)"
        )]
    if main_thread_repeats:
        cells.append(nbformat.v4.new_code_cell(
            "import time\nW.render_generation(state, 1000, 'fish', 0.3)\ntimes = []\n"
            f"for i in range({main_thread_repeats}):\n"
            "    t0 = time.perf_counter(); W.render_generation(state, [0, 100, 300, 1000][i % 4], "
            "P.class_names[i % 8], 0.3); times.append(time.perf_counter() - t0)\n"
            "print('main-thread redraw seconds:', [round(t, 3) for t in times])"))
    cells.append(nbformat.v4.new_code_cell(
        "generation_explorer(state, target='fish', strength=0.3, guides=noise.guides.images)"))
    if break_callback:
        cells.append(nbformat.v4.new_code_cell(
            "def broken(*args):\n"
            "    raise RuntimeError('callback broken on purpose')\n"
            "W.render_generation = broken"))
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stage_notebooks(dest: Path, names: list[str], extra: dict[str, dict] | None = None) -> Path:
    """Copy ``notebooks/<name>`` into ``dest/notebooks`` (plus ``extra`` notebooks given as JSON dicts) and link
    ``data`` and ``results`` beside them; returns ``dest``."""
    nb_dir = dest / "notebooks"
    nb_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(ROOT / "notebooks" / name, nb_dir / name)
    for name, nb in (extra or {}).items():
        (nb_dir / name).write_text(json.dumps(nb))
    for link in ("data", "results"):
        if not (dest / link).exists():
            (dest / link).symlink_to(ROOT / link, target_is_directory=True)
    return dest


@contextmanager
def jupyterlab(root: Path, timeout: float = 90.0) -> Iterator[str]:
    """JupyterLab serving ``root`` on 127.0.0.1 with a fresh token; yields the base URL with ``?token=``.

    Autosave is off, the news feed is not fetched and every cell is rendered (no windowing), by settings overrides
    in ``root/.lab-settings``."""
    token = secrets.token_hex(16)
    port = _free_port()
    settings = root / ".lab-settings"
    overrides = settings / "app"
    overrides.mkdir(parents=True, exist_ok=True)
    (overrides / "overrides.json").write_text(json.dumps({
        "@jupyterlab/docmanager-extension:plugin": {"autosave": False},
        "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
        "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},   # every cell in the page
    }))
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings / "user"),
               JUPYTERLAB_WORKSPACES_DIR=str(settings / "workspaces"), JUPYTER_CONFIG_DIR=str(settings / "config"),
               PYTHONUNBUFFERED="1")
    log = open(root / "jupyterlab.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
         f"--LabApp.app_settings_dir={overrides}", *(["--allow-root"] if os.geteuid() == 0 else [])],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {proc.returncode}; see {root / 'jupyterlab.log'}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"JupyterLab did not answer within {timeout:.0f} s; see {root / 'jupyterlab.log'}")
            time.sleep(0.5)
        yield f"{base}|{token}"
    finally:
        try:   # the server and the kernels it started share its process group
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


@contextmanager
def browser_page(console: list[str] | None = None):
    """A Playwright page in headless Chromium (``executable_path``), console errors appended to ``console``."""
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if exe is None:
        raise RuntimeError("Chromium not found: install Debian's 'chromium' package (scripts/setup.sh does) or set "
                           "$CHROMIUM to a Chromium binary")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            if console is not None:
                page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: console.append(f"page error: {e}"))
            yield page
        finally:
            browser.close()


def open_notebook(page, server: str, path: str, timeout_s: float = 120) -> None:
    """Open ``path`` (relative to the server root) in JupyterLab and wait until its kernel is idle."""
    base, token = server.split("|")
    page.goto(f"{base}/lab/tree/{path}?token={token}&reset", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=timeout_s * 1000)
    wait_kernel_idle(page, timeout_s)


def wait_kernel_idle(page, timeout_s: float) -> None:
    page.wait_for_function(
        """() => { const s = document.querySelector('.jp-Notebook-ExecutionIndicator');
                   return s && s.getAttribute('data-status') === 'idle'; }""", timeout=timeout_s * 1000)


def _menu(page, menu: str, item: str) -> None:
    page.click(f"li.lm-MenuBar-item:has-text('{menu}')")
    page.click(f"li.lm-Menu-item:has-text('{item}')")


def run_all(page, timeout_s: float = 600) -> None:
    """Clear every output, Run > Run All Cells, and wait until every code cell has run (or one failed and the run
    stopped); raise naming the first failing cell's error if any cell did not run."""
    _menu(page, "Edit", "Clear Outputs of All Cells")
    page.wait_for_function("() => ![...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
                           ".some(e => /\\[\\d+\\]/.test(e.textContent))", timeout=30_000)
    started = ("() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
               ".some(e => /\\[(\\*|\\d+)\\]/.test(e.textContent))")
    for attempt in range(3):   # a menu click that lands while JupyterLab is still settling can be lost: retry it
        _menu(page, "Run", "Run All Cells")
        try:
            page.wait_for_function(started, timeout=30_000, polling=250)
            break
        except Exception as err:
            if attempt == 2:
                raise RuntimeError(f"Run All Cells did not start any cell: {page_state(page)}") from err
            page.keyboard.press("Escape")
    try:
        page.wait_for_function(
            """() => { const p = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent);
                       const s = document.querySelector('.jp-Notebook-ExecutionIndicator');
                       const idle = s && s.getAttribute('data-status') === 'idle' && !p.some(t => t.includes('*'));
                       const failed = [...document.querySelectorAll('.jp-OutputArea-output')]
                                      .some(o => (o.textContent || '').includes('Traceback'));
                       return idle && (failed || p.every(t => /\\[\\d+\\]/.test(t))); }""",
            timeout=timeout_s * 1000, polling=500)
    except Exception as err:   # say what the page showed: prompts, kernel status, dialogs, and a screenshot
        raise RuntimeError(f"Run All did not finish in {timeout_s:.0f} s: {page_state(page)}") from err
    not_run = page.evaluate(
        """() => [...document.querySelectorAll('.jp-CodeCell')]
                 .filter(c => !/\\[\\d+\\]/.test(c.querySelector('.jp-InputPrompt').textContent))
                 .map(c => c.querySelector('.jp-InputArea').textContent.slice(0, 80))""")
    if not_run:
        errors = page.evaluate(
            """() => [...document.querySelectorAll('.jp-OutputArea-output')].map(o => o.textContent)
                     .filter(t => t.includes('Traceback')).map(t => t.slice(-400))""")
        raise RuntimeError(f"{len(not_run)} cells did not run (first: {not_run[0]!r}); errors shown: {errors[:2]}")


def page_state(page, shot: str = "timeout") -> str:
    """What the notebook page shows, for an error message: the cells' prompts, the kernel status, any open dialog;
    a screenshot goes to ``$BROWSER_ARTIFACTS/<shot>.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{shot}.png"))
    return str(page.evaluate(
        """() => ({prompts: [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent),
                   kernel: document.querySelector('.jp-Notebook-ExecutionIndicator')?.getAttribute('data-status'),
                   dialog: document.querySelector('.jp-Dialog')?.textContent?.slice(0, 200) ?? null})"""))


def widget_problems(page) -> list[str]:
    """What a user would see as a broken widget: error texts, views still loading, widgets shown as text reprs."""
    return page.evaluate(
        """() => {
          const out = [];
          for (const el of document.querySelectorAll('.jp-OutputArea-output')) {
            const t = el.textContent || '';
            if (t.includes('Error displaying widget')) out.push('error: ' + t.slice(0, 120));
            if (t.includes('Loading widget...')) out.push('still loading: ' + t.slice(0, 120));
            if (/^\\s*(VBox|HBox)\\(children=/.test(t)) out.push('shown as text: ' + t.slice(0, 120));
          }
          return out;
        }""")


def explorer(page, index: int = 0):
    """Locators of the ``index``-th widget box that holds a status line (the generation explorer)."""
    box = page.locator(".widget-vbox:has(.widget-label)").nth(index)
    return box


def image_sources(locator) -> list[str]:
    return locator.locator("img").evaluate_all("els => els.map(e => e.src)")


def cell_output(page, code_fragment: str):
    """The output area of the code cell whose source contains ``code_fragment``."""
    return page.locator(f".jp-CodeCell:has(.jp-InputArea:has-text({json.dumps(code_fragment)})) .jp-OutputArea")


def change_and_wait(page, output, action, expect: str, timeout_s: float = 60.0) -> float:
    """Apply ``action()`` (a control change) and wait until the output's last image is replaced *and* its status
    line (the last ``.widget-label``) reads ``showing ...`` with ``expect`` in it; returns the seconds from the
    change to the new image, measured in the page. Raises ``TimeoutError`` naming what was still shown."""
    handle = output.element_handle()
    page.evaluate(
        """(root) => {
             const imgs = root.querySelectorAll('img'); const img = imgs[imgs.length - 1];
             window.__sn = {src: img.src, t0: performance.now(), done: null};
           }""", handle)
    page.evaluate("() => { window.__sn.t0 = performance.now(); }")
    action()
    try:
        page.wait_for_function(
            """([root, expect]) => {
                 const labels = root.querySelectorAll('.widget-label'); const s = labels[labels.length - 1];
                 const imgs = root.querySelectorAll('img'); const img = imgs[imgs.length - 1];
                 const ok = s && s.textContent.startsWith('showing') && s.textContent.includes(expect)
                            && img.src !== window.__sn.src;
                 if (ok) window.__sn.done = performance.now();
                 return ok;
               }""", arg=[handle, expect], timeout=timeout_s * 1000, polling=20)
    except Exception as e:
        status = page.evaluate("(root) => [...root.querySelectorAll('.widget-label')].map(e => e.textContent)",
                               handle)
        raise TimeoutError(f"the explorer did not show {expect!r} within {timeout_s:.0f} s; status line: "
                           f"{status}") from e
    return page.evaluate("() => (window.__sn.done - window.__sn.t0) / 1000")


def press_slider(output, index: int, key: str) -> None:
    """Focus the ``index``-th slider handle of ``output`` and press ``key`` (ArrowLeft/ArrowRight/Home/End)."""
    h = output.locator(".noUi-handle").nth(index)
    h.focus()
    h.press(key)


def select_option(output, label: str) -> None:
    output.locator("select").first.select_option(label=label)
