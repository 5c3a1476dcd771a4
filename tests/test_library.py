"""The library's shape: modules small enough to read in one sitting, and imports that run one way
(the README's "library" section draws the layout)."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import fmnist_lib

LIBRARY = Path(fmnist_lib.__file__).parent
# One job each, that needs the room: the dataset's views and its checks, and the course's plots.
LONGER = {"data", "plots"}


def _imports(path: Path) -> set[str]:
    """The library modules ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif (node.module or "").startswith("fmnist_lib."):
                found.add(node.module.split(".")[1])
            elif node.module == "fmnist_lib":
                found.update(alias.name for alias in node.names)
    return found - {"__future__"}


def test_no_module_is_longer_than_400_lines():
    lengths = {p.stem: len(p.read_text().splitlines()) for p in LIBRARY.glob("*.py")}
    assert {name: n for name, n in lengths.items() if n > 400 and name not in LONGER} == {}


def test_the_library_imports_one_way():
    graph = {p.stem: _imports(p) - {p.stem} for p in LIBRARY.glob("*.py")}
    graph["__init__"] = set()  # it imports only what applies the workarounds
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as err:
        raise AssertionError(f"import cycle: {' -> '.join(err.args[1])}") from None
    assert order.index("_compat") < order.index("serving") < order.index("artifact")
    assert order.index("artifact") < order.index("training")


def test_a_chapter_points_mlflows_own_functions_at_the_course_store_before_using_them():
    """The library reads through its own client and never moves MLflow's process-wide store, so
    a chapter calling ``mlflow.search_runs`` and the like sets it first (under pytest the
    environment would hide a chapter that forgot: the full build would read ./mlflow.db)."""
    import re

    from fmnist_lib.config import PROJECT_ROOT

    fluent = re.compile(r"\bmlflow\.(?!set_tracking_uri\b|MlflowClient\b)[a-z_.]+\(")
    for chapter in sorted((PROJECT_ROOT / "book").glob("[0-9][0-9]_*.md")):
        code = "\n".join(re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", chapter.read_text(), re.S))
        first_use = fluent.search(code)
        if first_use:
            pointed = code.find("mlflow.set_tracking_uri(tracking.tracking_uri())")
            assert 0 <= pointed < first_use.start(), f"{chapter.name}: {first_use.group()}"
