"""Server processes on 127.0.0.1 (the API, a tracking server, the app): start one, wait until it
answers, and stop it and its children whatever happens. Chapters, tests and benchmarks use it."""

from __future__ import annotations

import atexit
import functools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_with(**variables) -> dict[str, str]:
    """This environment with the Python environment's bin first on PATH (mlflow starts a bare
    `uvicorn`), and ``variables``."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **variables}


@contextmanager
def running(
    command: list[str], ready_url: str, log: Path, env=None, timeout: float = 120, cwd=None
):
    """Run ``command`` (in the folder ``cwd``) until the block ends; wait until ``ready_url``
    answers 200. The server's output goes to ``log``, shown if it dies or never answers."""
    with open(log, "wb") as out:
        # A session of its own: mlflow starts uvicorn or gunicorn as children, stopped with it.
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    # Also stopped if the interpreter exits first (a notebook kernel shut down mid-chapter).
    stop = functools.partial(_stop, process)
    atexit.register(stop)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                code = process.returncode
                raise RuntimeError(f"{command[0]} exited ({code}):\n{log.read_text()}")
            try:
                with urllib.request.urlopen(ready_url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{ready_url} did not answer in {timeout} s:\n{log.read_text()}")
            time.sleep(0.25)
        yield process
    finally:
        stop()
        atexit.unregister(stop)


def _stop(process: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            pass


def give_back_freed_memory() -> None:
    """Make glibc's malloc return a large block's memory to the system once it is freed (for
    a long-lived server: the API, the app). By default it serves blocks up to 32 MB from heaps
    that it keeps (one per thread, each growing to its largest request), so a server that once
    decoded big pictures or received big uploads in several threads stays hundreds of MB
    larger. Blocks of 1 MB and more then come from mmap, given
    back on free, and the threads share two heaps. Nothing happens off glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_mmap_threshold, m_arena_max = -3, -8  # from glibc's malloc.h
    mallopt(m_mmap_threshold, 2**20)
    mallopt(m_arena_max, 2)
