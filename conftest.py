"""Lets `pytest --nbval book` run the chapters, which are jupytext MyST-markdown notebooks.

nbval collects only .ipynb files. For a .md file with a kernelspec header this hook returns
nbval's own collector, fed the notebook that jupytext parses from the markdown instead of
what nbformat would read from disk. The kernel runs in the chapter's folder, as in Jupyter.
"""

import os
import shutil
import tempfile

import jupytext
import nbval.plugin

collect_ignore = ["_build", ".venv", "data", "mlartifacts"]
_SCRATCH_STORE = None
_MPLBACKEND = None


def pytest_configure(config):
    """Under pytest, tests and chapters log to a throwaway MLflow store (and Optuna storage),
    never to the project's mlflow.db, unless MLFLOW_TRACKING_URI says otherwise."""
    global _SCRATCH_STORE, _MPLBACKEND
    _MPLBACKEND = os.environ.get("MPLBACKEND")
    # A scratch store made by the pytest process that started this one (pytest-xdist's
    # controller): each worker makes its own, so no two processes share a SQLite store.
    ours = os.environ.get("FMNIST_SCRATCH_STORE")
    if "MLFLOW_TRACKING_URI" not in os.environ or (
        ours and os.environ["MLFLOW_TRACKING_URI"].startswith(f"sqlite:///{ours}/")
    ):
        _SCRATCH_STORE = tempfile.mkdtemp(prefix="fmnist-test-mlflow-")
        os.environ["FMNIST_SCRATCH_STORE"] = _SCRATCH_STORE
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SCRATCH_STORE}/mlflow.db"
        # Chapter 8's Optuna study too: never the project's optuna.db.
        optuna = os.environ.get("FMNIST_OPTUNA_STORAGE", "")
        if not optuna or (ours and optuna.startswith(f"sqlite:///{ours}/")):
            os.environ["FMNIST_OPTUNA_STORAGE"] = f"sqlite:///{_SCRATCH_STORE}/optuna.db"


def pytest_collection_finish(session):
    """Importing streamlit (the app's tests do) sets MPLBACKEND for the whole process."""
    from fmnist_lib._compat import restore_mplbackend

    restore_mplbackend(_MPLBACKEND)


def pytest_unconfigure(config):
    if _SCRATCH_STORE:
        shutil.rmtree(_SCRATCH_STORE, ignore_errors=True)


def _is_notebook(path) -> bool:
    if path.suffix != ".md":
        return False
    with open(path, encoding="utf-8") as f:
        head = f.read(2000)
    return head.startswith("---") and "kernelspec:" in head


class MarkdownNotebook(nbval.plugin.IPyNbFile):
    def collect(self):
        from fmnist_lib._compat import nbval_reading

        with nbval_reading(jupytext.read(self.path)):
            return list(super().collect())


def pytest_collect_file(file_path, parent):
    option = parent.config.option
    if (option.nbval or option.nbval_lax) and _is_notebook(file_path):
        return MarkdownNotebook.from_parent(parent, path=file_path)
    return None
