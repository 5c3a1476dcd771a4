"""Start real server processes on 127.0.0.1 for the tests, and stop them whatever happens."""

from __future__ import annotations

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
    """This environment, the venv's bin first on PATH (mlflow runs a bare `uvicorn`)."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **variables}


@contextmanager
def running(command: list[str], ready_url: str, log: Path, env=None, timeout: float = 120):
    """Run ``command`` until the block ends; wait until ``ready_url`` answers 200. The server's
    output goes to ``log``, shown if it dies or never answers."""
    with open(log, "wb") as out:
        # A session of its own: mlflow starts uvicorn or gunicorn as children, stopped with it.
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
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
        _stop(process)


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
