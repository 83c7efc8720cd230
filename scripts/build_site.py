"""Build the tutorial site: README as the landing page, the six notebooks with their stored outputs (never
re-executed), the model card and an API reference from the package's docstrings. Sphinx + myst-nb; any warning
(a broken link, a missing figure, an unresolved reference, a docstring that does not parse) fails the build.

    python scripts/build_site.py            # -> _site/html/index.html (open it in a browser)

The sources are staged in ``_site/src`` with the repository's relative paths, so README links resolve as they do
on GitHub; a link to a repository file that is not part of the site becomes plain text naming the file.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("0*.ipynb"))
PAGES = {"README.md": "index.md", "data/models/tiny/MODEL_CARD.md": "data/models/tiny/MODEL_CARD.md"}
ASSETS = ["docs/figures", "data/models/tiny"]          # folders whose images the pages show
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def api_modules() -> list[str]:
    return sorted(f"saliency_lib.{p.stem}" for p in (ROOT / "saliency_lib").glob("*.py") if p.stem != "__init__")


def unlink_missing(text: str, page: Path, src: Path) -> str:
    """Markdown links from ``page`` to relative targets that the site does not contain become plain text."""
    def fix(m: re.Match) -> str:
        bang, label, target = m.groups()
        if bang or re.match(r"[a-z]+:", target) or target.startswith("#"):
            return m.group(0)
        path = (page.parent / target.split("#")[0]).resolve()
        if path.exists() and src.resolve() in path.parents:
            return m.group(0)
        return f"{label} (`{target.lstrip('./')}` in the repository)" if label != target else f"`{target}`"
    return LINK.sub(fix, text)


def stage(src: Path) -> None:
    if src.exists():
        shutil.rmtree(src)
    (src / "notebooks").mkdir(parents=True)
    for name in NOTEBOOKS:
        shutil.copy2(ROOT / "notebooks" / name, src / "notebooks" / name)
    for folder in ASSETS:
        for f in (ROOT / folder).glob("*.png"):
            (src / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, src / folder / f.name)
    for f in (ROOT / "docs" / "figures").glob("*.png"):   # raw-HTML <img> in the README: copied verbatim
        (src / "_extra" / "docs" / "figures").mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, src / "_extra" / "docs" / "figures" / f.name)
    shutil.copy2(ROOT / "docs" / "site" / "conf.py", src / "conf.py")
    api = src / "api"
    api.mkdir()
    for mod in api_modules():
        (api / f"{mod}.md").write_text(f"# `{mod}`\n\n```{{eval-rst}}\n.. automodule:: {mod}\n```\n")
    (api / "index.md").write_text("# API reference\n\nGenerated from the package's docstrings.\n\n```{toctree}\n"
                                  ":maxdepth: 1\n\n" + "\n".join(api_modules()) + "\n```\n")
    for origin, dest in PAGES.items():
        (src / dest).parent.mkdir(parents=True, exist_ok=True)
        (src / dest).write_text((ROOT / origin).read_text())
    for origin, dest in PAGES.items():   # after every page exists, so links between pages are kept
        page = src / dest
        page.write_text(unlink_missing(page.read_text(), ROOT / origin, src if dest != "index.md" else src))
    toc = ["notebooks/" + n[:-6] for n in NOTEBOOKS] + ["data/models/tiny/MODEL_CARD", "api/index"]
    with open(src / "index.md", "a") as f:
        f.write("\n```{toctree}\n:hidden:\n:maxdepth: 1\n\n" + "\n".join(toc) + "\n```\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "_site", help="build folder (untracked); html/ inside it")
    a = p.parse_args(argv)
    src, html = a.out / "src", a.out / "html"
    stage(src)
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html",
           "-d", str(a.out / "doctrees"), str(src), str(html)]
    rc = subprocess.call(cmd, cwd=ROOT)
    if rc == 0:
        print(f"site built: {html / 'index.html'}")
    else:
        print(f"site build failed (warnings are errors): {' '.join(cmd)}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
