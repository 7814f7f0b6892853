"""Sphinx configuration: MyST Markdown pages, API reference and plugin catalogue generated from the code."""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).parent
sys.path.insert(0, str(DOCS))

import stcrank  # noqa: E402

project = "stcrank"
author = "stcrank contributors"
copyright = "2026, stcrank contributors"
release = stcrank.__version__

extensions = [
    "command_options",
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
templates_path = ["_templates"]
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
# Code blocks without a language are layouts and diagrams: no syntax colouring.
highlight_language = "text"

autosummary_generate = True
autosummary_imported_members = False
# Packages re-export their modules' members; document each object once, where it is defined.
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Type hints name third-party classes (torch, lightning, pyarrow) that have no inventory offline.
nitpicky = False
suppress_warnings = ["autodoc.import_object"]

# The PyData theme (as pandas, NumPy and Lightning's neighbours use): a top bar of sections, the section's pages on
# the left, the page's outline on the right, and a content column that uses a laptop screen's width.
html_theme = "pydata_sphinx_theme"
html_title = "stcrank"
html_static_path = ["_static"]
html_css_files = ["stcrank.css"]
html_show_sourcelink = False
html_theme_options = {
    "logo": {"text": "stcrank"},
    "navbar_align": "left",
    "header_links_before_dropdown": 6,
    "show_toc_level": 2,
    "secondary_sidebar_items": {"**": ["page-toc"], "index": []},
    "navigation_with_keys": False,
    "show_prev_next": True,
    "footer_start": ["copyright"],
    "footer_end": ["theme-version"],
}
# The home page is a map of the site, and the quick start a page without sub-pages: no section navigation.
html_sidebars = {"index": [], "quickstart": []}


def _write_plugin_catalogue(app: object) -> None:
    from plugin_catalogue import write_catalogue

    write_catalogue(DOCS / "generated" / "plugins.md")


def setup(app: object) -> None:
    app.connect("builder-inited", _write_plugin_catalogue)
