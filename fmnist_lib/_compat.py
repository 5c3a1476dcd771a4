"""Every workaround for a version of a package we depend on, with the version that needs it and
how to know it can go. Importing `fmnist_lib` applies the process-wide ones (`apply`); the
others are called where they are needed. When a pin in requirements.txt moves, check these.
"""

from __future__ import annotations

import copy
import functools
import os
import warnings
from contextlib import contextmanager

import numpy as np


def apply() -> None:
    """The process-wide workarounds, applied once by ``import fmnist_lib``."""
    # mlflow 3.17 with pandas 3: saving an input example compares a column index with a range,
    # which pandas 3 deprecates ("Operation with range is deprecated"). Our columns are plain
    # names. Goes when logging a model under `python -W error::DeprecationWarning` stays silent.
    warnings.filterwarnings("ignore", message="Operation with range is deprecated", module="mlflow")
    # mlflow 3.17: logging a model imports mlflow.genai, which imports tqdm.auto (tqdm 4.70),
    # which warns "IProgress not found" in notebooks without ipywidgets. We draw no such bar.
    # Goes when chapter 2's first logged model prints no IProgress warning.
    warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")
    # mlflow 3.17 draws a tqdm bar for every artifact download, in every chapter cell that
    # loads a model. A setting, not a bug: stays while the chapters load models.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # mlflow 3.17: the thread that writes autolog's epoch scores polls its queue with a
    # 1-second timeout, and ending the run (or the process) waits for that poll: up to 1 s per
    # recorded Keras fit. With buffering, the thread waits on the stop signal instead, and a
    # run ends at once. An integer (a fraction kills the thread, and end_run then hangs). Goes
    # when `mlflow.end_run()` after an autologged fit returns in milliseconds without it.
    os.environ.setdefault("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", "1")


@contextmanager
def quiet_onnx_export():
    """keras 3.15's `export(format="onnx")` goes through tf2onnx 1.17, whose NumPy 2 shim in
    keras (``keras/src/export/tf2onnx_lib.py``) warns on every export that ``np.object`` will
    change. Silences the warnings raised from tf2onnx's code and that shim, nothing else. Goes
    when an export under ``-W error`` succeeds (tests/test_compat.py tries one)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"tf2onnx(\.|$)")
        warnings.filterwarnings("ignore", module=r"keras\.src\.export\.tf2onnx_lib")
        yield


@contextmanager
def optuna_experimental():
    """Optuna 5.0 calls its heartbeat (``heartbeat_interval``, ``fail_stale_trials``) experimental
    and warns on each use; it is the one way it offers to find a dead worker's trials. Goes when
    creating a storage with a heartbeat under `-W error` succeeds."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


@contextmanager
def fast_pin_check():
    """mlflow 3.17 compares a model's pinned packages with the installed ones when it logs or
    loads the model (``warn_dependency_requirement_mismatches``). First it maps every installed
    module to its distribution, reading the file list of each of the ~250 installed packages:
    0.5 to 2 s, once per process, in every chapter that logs or loads a model. The map only
    names a module to import for a pinned package that has no metadata, and every pin we write
    has metadata (`serving._requirements` reads the versions from it). Inside this block the map
    starts empty, so versions are read from the metadata alone and a mismatch still warns.
    Goes when MLflow's check stops calling ``packages_distributions`` for such pins
    (tests/test_compat.py watches it)."""
    try:
        from mlflow.utils import requirements_utils as utils

        original = utils._init_packages_to_modules_map
    except (ImportError, AttributeError):  # another MLflow: its own check, however long
        yield
        return

    def without_scan():
        if utils._PACKAGES_TO_MODULES is None:
            utils._PACKAGES_TO_MODULES = {}  # a later unpatched call builds the real map

    utils._init_packages_to_modules_map = without_scan
    try:
        yield
    finally:
        utils._init_packages_to_modules_map = original


def restore_mplbackend(previous: str | None) -> None:
    """streamlit 1.67 sets ``MPLBACKEND=Agg`` for the whole process on import
    (streamlit/__init__.py); chapter kernels started by that process then draw no figure.
    Puts back the value from before. Goes when ``python -c "import streamlit, os;
    print(os.environ.get('MPLBACKEND'))"`` prints None (tests/test_compat.py checks it)."""
    if previous is None:
        os.environ.pop("MPLBACKEND", None)
    else:
        os.environ["MPLBACKEND"] = previous


# A fitted SVM's state as libsvm keeps it; scikit-learn-intelex fills the same attributes.
_LIBSVM_STATE = (
    "support_vectors_ dual_coef_ _dual_coef_ intercept_ _intercept_ _probA _probB fit_status_ "
    "shape_fit_ _gamma _sparse class_weight_ classes_ n_features_in_"
).split()
# libsvm's index arrays (int32), and the intelex attribute each is copied from.
_LIBSVM_INDICES = {
    "support_": "support_",
    "_n_support": "_n_support",
    "n_iter_": "n_iter_",
    "_num_iter": "n_iter_",
}


def with_libsvm(model):
    """``model`` (a pipeline or an SVM) with any scikit-learn-intelex SVM replaced by scikit-learn's
    own with the same support vectors and coefficients: the same predictions, from a file that
    scikit-learn alone loads. scikit-learn-intelex 2026.2 keeps its compiled model in an object
    skops 0.16 cannot save, and libsvm's state lives in private attributes of scikit-learn 1.9's
    SVC (the names above). Anything else is returned as it is. Goes when skops saves and loads
    an intelex SVC (tests/test_compat.py tries it)."""
    if hasattr(model, "steps"):
        steps = [(name, with_libsvm(step)) for name, step in model.steps]
        if all(new is old for (_, new), (_, old) in zip(steps, model.steps, strict=True)):
            return model
        portable = copy.copy(model)  # shares the fitted steps
        portable.steps = steps
        return portable
    from sklearn.svm import SVC as LibsvmSVC

    if not isinstance(model, LibsvmSVC) or type(model) is LibsvmSVC:
        return model
    names = LibsvmSVC().get_params()
    plain = LibsvmSVC(**{k: v for k, v in model.get_params().items() if k in names})
    for name in _LIBSVM_STATE:
        value = getattr(model, name)
        is_float = isinstance(value, np.ndarray) and value.dtype.kind == "f"
        setattr(plain, name, np.ascontiguousarray(value, np.float64) if is_float else value)
    for name, source in _LIBSVM_INDICES.items():
        setattr(plain, name, np.ascontiguousarray(getattr(model, source), np.int32))
    plain._effective_probability = False
    return plain


def begin_immediate(engine) -> None:
    """Make every SQLite transaction of a SQLAlchemy ``engine`` take the write lock when it
    begins. Optuna 5.0 hands a queued trial to one worker by reading it as WAITING and then
    marking it RUNNING, under ``SELECT ... FOR UPDATE``; SQLite ignores that lock, so two
    workers could both read WAITING and run the same trial (the second then fails on "Cannot
    tell a COMPLETE trial"). PostgreSQL and MySQL honour the lock and need nothing. Goes when
    Optuna's RDB storage locks SQLite itself (tests/test_compat.py races two workers' claims)."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves

    @event.listens_for(engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while Optuna set up the schema lack the hooks


def serve_model_at(folder_uri: str) -> str:
    """Point MLflow 3.17's scoring app at a model folder, as `mlflow models serve` does before
    it starts uvicorn: through an environment variable whose name only the private
    ``scoring_server._SERVER_MODEL_PATH`` holds. Returns the import string of the app. Needed
    because `mlflow models serve` cannot take our socket (see `TcpConfig`). Goes with
    `TcpConfig`, or when MLflow makes the variable public (tests/test_compat.py reads it)."""
    from mlflow.pyfunc import scoring_server

    os.environ[scoring_server._SERVER_MODEL_PATH] = folder_uri
    return "mlflow.pyfunc.scoring_server.app:app"


@contextmanager
def nbval_reading(notebook):
    """nbval 0.11 collects only .ipynb files: ``IPyNbFile.collect`` reads its path with
    ``nbformat.read``. Inside this block that read returns ``notebook`` (a chapter jupytext
    parsed from MyST markdown), for the root conftest.py. Goes when nbval accepts a notebook
    or another reader (tests/test_compat.py reads its collect)."""
    from unittest import mock

    import nbval.plugin

    with mock.patch.object(nbval.plugin.nbformat, "read", return_value=notebook):
        yield


def __getattr__(name: str):
    # `TcpConfig` subclasses uvicorn's Config: made on first use (only the API server imports
    # uvicorn), under this module's name so that uvicorn's worker processes can unpickle it.
    if name == "TcpConfig":
        return _tcp_config_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _tcp_config_class():
    import socket

    import uvicorn

    class TcpConfig(uvicorn.Config):
        """uvicorn 0.54 binds the listening socket itself when it runs several workers, with
        ``proto`` 0; accepted sockets inherit it, asyncio then leaves Nagle's algorithm on, and
        every keep-alive request after the first waits ~40 ms for the client's delayed ACK
        (uvicorn issue #3149). This socket says it is TCP, so asyncio sets ``TCP_NODELAY``.
        Goes when tests/test_serving.py finds uvicorn's own socket says so too."""

        def bind_socket(self) -> socket.socket:
            sock = super().bind_socket()
            if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto == 0:
                sock = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, sock.detach())
                sock.set_inheritable(True)
            return sock

    TcpConfig.__module__, TcpConfig.__qualname__ = __name__, "TcpConfig"
    return TcpConfig
