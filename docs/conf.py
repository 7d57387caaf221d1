"""Sphinx configuration of the tfpathloader docs (Sphinx + MyST Markdown; see index.md).

Built offline with warnings as errors, as .ci/run does::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the package and train_app, from this checkout
sys.path.insert(0, os.path.join(ROOT, "docs", "_ext"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tfpathloader import __version__  # noqa: E402

project = "tfpathloader"
author = "tfpathloader developers"
copyright = "tfpathloader developers"
release = version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "tfpl_docs",  # the generated reference pages (docs/_ext/tfpl_docs.py)
]
source_suffix = {".md": "markdown"}
root_doc = "index"
# _generated/ is included into pages, not a page; bench/ tables likewise; comparison.md is a
# sweep's output kept as an example file.
exclude_patterns = ["_build", "_generated", "bench", "comparison.md", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "undoc-members": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # Attributes: as a field list (dataclass fields are not documented twice)

html_theme = "furo"
html_title = f"tfpathloader {release}"
# No intersphinx and nothing fetched: the build runs without network access.
