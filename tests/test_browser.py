"""The widgets as a user meets them: notebooks 02 and 03 run in JupyterLab in headless Chromium, controls moved.

Marker ``browser`` (run by the README's test command). Needs Debian's ``chromium`` (scripts/setup.sh installs it)
and Playwright for Python (requirements.txt); Playwright's own browser download is never used. Screenshots go to
``$BROWSER_ARTIFACTS`` (default ``runs/browser``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab_page import (
    ARTIFACTS,
    ROOT,
    browser_page,
    cell_output,
    change_and_wait,
    chromium_path,
    explorer_notebook,
    jupyterlab,
    open_notebook,
    press_slider,
    run_all,
    select_option,
    stage_notebooks,
    widget_problems,
)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module", autouse=True)
def _requirements():
    pytest.importorskip("playwright", reason="the browser test needs Playwright for Python (requirements.txt)")
    if chromium_path() is None:
        pytest.fail("Chromium not found: scripts/setup.sh installs Debian's 'chromium' (or set $CHROMIUM)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)


def exercise_generation_explorer(page, output, shot: str) -> None:
    """Move the IG-step slider, pick another class, change the strength; each must show a new image and name the
    new setting in the status line."""
    output.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / f"{shot}-0-default.png"))
    change_and_wait(page, output, lambda: press_slider(output, 0, "ArrowLeft"), "k=300")
    page.screenshot(path=str(ARTIFACTS / f"{shot}-1-ig-step.png"))
    change_and_wait(page, output, lambda: select_option(output, "key"), "target=key")
    page.screenshot(path=str(ARTIFACTS / f"{shot}-2-target.png"))
    change_and_wait(page, output, lambda: press_slider(output, 1, "ArrowRight"), "strength=0.35")
    page.screenshot(path=str(ARTIFACTS / f"{shot}-3-strength.png"))


def test_notebooks_02_and_03_widgets_render_and_update(tmp_path):
    root = stage_notebooks(tmp_path, ["02_noise_crafting.ipynb", "03_generation_across_classes.ipynb"])
    console: list[str] = []
    with jupyterlab(root) as server, browser_page(console) as page:
        # notebook 02: the saved notebook shows the explorer's static image before it runs, then a live slider
        open_notebook(page, server, "notebooks/02_noise_crafting.ipynb")
        out = cell_output(page, "snapshot_explorer(crafted")
        out.locator("img").first.wait_for(timeout=60_000)     # a long notebook renders its outputs progressively
        assert widget_problems(page) == []
        assert out.locator("img").count() == 1, "before running, the explorer shows its saved static image"
        page.screenshot(path=str(ARTIFACTS / "02-before-run.png"))
        run_all(page)
        assert widget_problems(page) == []
        caption = out.locator(".widget-html").last
        old = out.locator("img").last.get_attribute("src")
        press_slider(out, 0, "Home")
        page.wait_for_function("([c]) => c.textContent.includes('k = 0')", arg=[caption.element_handle()],
                               timeout=30_000)
        assert out.locator("img").last.get_attribute("src") != old
        out.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "02-snapshot-explorer.png"))

        # notebook 03: the generation explorer, guides above generations
        open_notebook(page, server, "notebooks/03_generation_across_classes.ipynb")
        assert widget_problems(page) == []
        run_all(page, timeout_s=900)
        assert widget_problems(page) == []
        out = cell_output(page, "generation_explorer(state")
        assert "guides x*" in out.inner_text() and out.locator("img").count() == 2
        exercise_generation_explorer(page, out, "03")
    widget_errors = [m for m in console if "widget" in m.lower() or "saliency" in m.lower()]
    assert widget_errors == [], f"console errors from the widgets: {widget_errors}"


def test_a_broken_callback_is_caught(tmp_path):
    """The check above fails when the explorer stops updating: here its sampling callback raises."""
    root = stage_notebooks(tmp_path, [], extra={"broken.ipynb": explorer_notebook(break_callback=True)})
    with jupyterlab(root) as server, browser_page() as page:
        open_notebook(page, server, "notebooks/broken.ipynb")
        run_all(page, timeout_s=300)
        out = cell_output(page, "generation_explorer(state")
        with pytest.raises(TimeoutError, match="did not show 'target=key'"):
            change_and_wait(page, out, lambda: select_option(out, "key"), "target=key", timeout_s=15)
        page.screenshot(path=str(ARTIFACTS / "broken-callback.png"))


def test_the_site_builds_and_its_pages_show_their_figures(tmp_path):
    """scripts/build_site.py (warnings are errors) builds; the landing page and a notebook page load their images."""
    import functools
    import http.server
    import subprocess
    import sys
    import threading

    out = tmp_path / "site"
    build = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_site.py"), "--out", str(out)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out / "html"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with browser_page() as page:
            for path, min_images in (("index.html", 6), ("notebooks/03_generation_across_classes.html", 4)):
                page.goto(f"{base}/{path}", wait_until="load")
                sizes = page.evaluate("() => [...document.querySelectorAll('article img, main img')]"
                                      ".map(i => [i.getAttribute('src'), i.naturalWidth])")
                broken = [src for src, w in sizes if not w]
                assert len(sizes) >= min_images and not broken, f"{path}: images not loaded: {broken}"
                page.screenshot(path=str(ARTIFACTS / f"site-{Path(path).stem}.png"), full_page=False)
            nav = page.evaluate("() => [...document.querySelectorAll('nav a')].map(a => a.textContent.trim())")
            assert any(t.startswith("01") for t in nav) and any(t.startswith("06") for t in nav), nav
    finally:
        server.shutdown()
