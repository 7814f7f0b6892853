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

html_theme = "alabaster"
html_title = "stcrank"


def _write_plugin_catalogue(app: object) -> None:
    from plugin_catalogue import write_catalogue

    write_catalogue(DOCS / "generated" / "plugins.md")


def setup(app: object) -> None:
    app.connect("builder-inited", _write_plugin_catalogue)
