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
