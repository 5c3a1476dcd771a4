"""Every workaround for a version of a package we depend on, with the version that needs it and
how to know it can go. Importing `fmnist_lib` applies the process-wide ones (`apply`); the
others are called where they are needed. When a pin in requirements.txt moves, check these.
"""

from __future__ import annotations

import functools
import os
import warnings
from contextlib import contextmanager


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
    """tf2onnx 1.17 (through keras 3.15's `export(format="onnx")`) emits NumPy 2 deprecation
    notices on every export. Goes when an export under `-W error` succeeds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
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
