"""Sphinx configuration of the tutorial site (built by scripts/build_site.py; never executes a notebook)."""

project = "saliency-noise"
author = "the saliency-noise authors"
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
root_doc = "index"
exclude_patterns = ["_build", "_extra", "**.ipynb_checkpoints"]

# notebooks are shown with their stored outputs, as nbval checks them
nb_execution_mode = "off"
nb_render_markdown_format = "myst"
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3


autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
autodoc_typehints = "description"
autodoc_mock_imports = ["ipywidgets"]
napoleon_google_docstring = False
napoleon_numpy_docstring = False

html_theme = "sphinx_book_theme"
html_title = "saliency-noise"
html_theme_options = {"show_navbar_depth": 1, "home_page_in_toc": True}
html_static_path: list[str] = []
html_extra_path = ["_extra"]   # the README's raw-HTML figures, at the paths it names
# widget views need a live kernel or saved widget state: render the static PNG stored beside each one instead
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None)]

# references are checked (-n): those into other projects' docs (no intersphinx: the build is offline) are let be
nitpick_ignore_regex = [("py:class", r"(torch|nn|np|numpy|pathlib|os|collections|typing|asyncio)\..*"),
                        ("py:class", r"Module|Tensor|Generator|Path"),
                        ("py:class", r"saliency_lib\.(weights\.C|widgets\.T|distributed\.T)"),   # TypeVars
                        ("py:class", r"'dict\[str")]                      # a dataclass field's quoted default type
