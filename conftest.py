"""Lets `pytest --nbval book` run the chapters, which are jupytext MyST-markdown notebooks.

nbval collects only .ipynb files. For a .md file with a kernelspec header this hook returns
nbval's own collector, fed the notebook that jupytext parses from the markdown instead of
what nbformat would read from disk. The kernel runs in the chapter's folder, as in Jupyter.
"""

from unittest import mock

import jupytext
import nbval.plugin

collect_ignore = ["_build", ".venv", "data"]


def _is_notebook(path) -> bool:
    if path.suffix != ".md":
        return False
    with open(path, encoding="utf-8") as f:
        head = f.read(2000)
    return head.startswith("---") and "kernelspec:" in head


class MarkdownNotebook(nbval.plugin.IPyNbFile):
    def collect(self):
        notebook = jupytext.read(self.path)
        # nbval reads the file with nbformat.read at the top of collect(); hand it ours.
        with mock.patch.object(nbval.plugin.nbformat, "read", return_value=notebook):
            return list(super().collect())


def pytest_collect_file(file_path, parent):
    option = parent.config.option
    if (option.nbval or option.nbval_lax) and _is_notebook(file_path):
        return MarkdownNotebook.from_parent(parent, path=file_path)
    return None
