"""Sphinx configuration for the deepserve documentation."""

from __future__ import annotations

import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# autodoc imports deepserve.model from this checkout; the version is read from
# the source so that building the docs never depends on an installed copy.
sys.path.insert(0, str(ROOT))


def _read_version() -> str:
    tree = ast.parse((ROOT / "deepserve" / "__init__.py").read_text("utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id == "__version__":
                    value = ast.literal_eval(node.value)
                    if isinstance(value, str):
                        return value
    raise RuntimeError("deepserve/__init__.py defines no __version__")


project = "deepserve"
author = "deepserve authors"
copyright = "deepserve authors"
release = _read_version()
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc", "sphinx.ext.autosectionlabel"]

# Section titles are link targets, as "document:Title".
autosectionlabel_prefix_document = True

autodoc_member_order = "bysource"
autodoc_typehints = "description"

master_doc = "index"
exclude_patterns = ["_build"]
default_role = "literal"

html_theme = "alabaster"
html_title = f"deepserve {release}"
