"""Several writers on one store: SQLite that waits for a lock instead of failing, and runs left
RUNNING by a process that died marked FAILED.

The embedded store (``mlflow.db``) and Optuna's ``optuna.db`` are SQLite files that the
chapters, the command line and tuning workers may write at once. sqlite3 gives up on a lock
after 5 s; here every SQLite connection uses WAL, where readers never block the writer, and
waits up to a minute for a lock (MLflow's store sets its own 20 s on each session). A run
whose process is killed (a kernel restarted mid-fit, a SIGKILL) stays RUNNING in MLflow
forever; each run records its process, and the next run started on the same machine and
experiment marks such runs FAILED.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

BUSY_TIMEOUT_MS = 60_000
_patient = False


def patient_sqlite() -> None:
    """Make every SQLite connection this process opens through SQLAlchemy (MLflow's store,
    Optuna's) wait up to `BUSY_TIMEOUT_MS` for another writer, in WAL mode. Idempotent."""
    global _patient
    if _patient:
        return
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _wait_for_locks(dbapi_connection, _record):
        if isinstance(dbapi_connection, sqlite3.Connection):
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")  # kept by the file once set
            cursor.close()

    _patient = True


def _started(pid: int) -> str | None:
    """When process ``pid`` started, None if there is no such process. On Linux the boot's id
    and the start in clock ticks since boot (the wall clock may jump; these do not); elsewhere
    psutil's creation time."""
    import psutil

    proc = Path("/proc")
    if (proc / "self" / "stat").exists():
        try:
            fields = (proc / str(pid) / "stat").read_text().rpartition(")")[2].split()
        except (FileNotFoundError, ProcessLookupError):
            return None
        boot = (proc / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
        return f"{boot}/{fields[19]}"  # field 22 of stat, starttime
    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except psutil.NoSuchProcess:
        return None


def process_tag() -> str:
    """This process as a run's ``process`` tag: host, pid and start (a pid is reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_started(os.getpid())}"


def _gone(tag: str) -> bool:
    """Whether the process a ``process`` tag names has ended; False if it cannot tell (another
    machine's process, or a tag it does not read)."""
    host, _, rest = tag.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return _started(int(pid)) != started


def fail_abandoned(client, experiment_id: str) -> list[str]:
    """Mark FAILED the runs of ``experiment_id`` left RUNNING by a process of this machine that
    has ended; returns their ids."""
    ended = []
    for run in client.search_runs(
        [experiment_id], "attributes.status = 'RUNNING'", max_results=1000
    ):
        tag = run.data.tags.get("process")
        if tag and _gone(tag):
            client.set_tag(run.info.run_id, "ended_by", "a later start: its process had ended")
            client.set_terminated(run.info.run_id, "FAILED")
            ended.append(run.info.run_id)
    return ended
