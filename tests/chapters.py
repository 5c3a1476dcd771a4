"""Definitions taken from a chapter's code cells, so that a test runs the chapter's own code."""

from __future__ import annotations

import ast
from pathlib import Path

import jupytext

BOOK = Path(__file__).resolve().parent.parent / "book"


def chapter_definitions(chapter: str, names: tuple[str, ...], namespace: dict) -> dict:
    """The functions and classes ``names`` of ``book/<chapter>.md``, defined from its code cells
    and nothing else, in ``namespace`` (which supplies the names they use); returns it."""
    path = BOOK / f"{chapter}.md"
    for cell in jupytext.read(path).cells:
        if cell.cell_type != "code" or cell.source.lstrip().startswith(("%", "!")):
            continue
        defs = [
            node
            for node in ast.parse(cell.source).body
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name in names
        ]
        if defs:
            exec(compile(ast.Module(defs, type_ignores=[]), str(path), "exec"), namespace)
    missing = set(names) - set(namespace)
    assert not missing, f"{chapter} no longer defines {sorted(missing)}"
    return namespace
