"""Several writers on one store: SQLite waits for a lock in WAL mode, and a run whose process
died is marked FAILED by the next run started on the machine, never a live process's run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys

import pytest

from fmnist_lib import stores, tracking


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path / "mlflow.db"


def test_the_sqlite_store_is_in_wal_mode_and_waits_a_minute_for_a_lock(store):
    from sqlalchemy import create_engine, text

    tracking.client().search_experiments()  # MLflow creates the file and its tables
    with sqlite3.connect(store) as plain:  # WAL belongs to the file: any connection sees it
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert plain.execute("PRAGMA busy_timeout").fetchone()[0] == 5000  # sqlite3 default: 5 s
    engine = create_engine(f"sqlite:///{store}")
    with engine.connect() as connection:  # any SQLAlchemy engine of the process, as MLflow's
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == stores.BUSY_TIMEOUT_MS
    engine.dispose()


STARTS_A_RUN = """
import time, mlflow
from fmnist_lib import stores, tracking
tracking.use_experiment()
run = mlflow.start_run(tags={"process": stores.process_tag()})
print(run.info.run_id, flush=True)
time.sleep(600)
"""


def test_a_run_whose_process_was_killed_is_failed_by_the_next_start(store):
    import mlflow

    child = subprocess.Popen(
        [sys.executable, "-c", STARTS_A_RUN], stdout=subprocess.PIPE, text=True, env=os.environ
    )
    try:
        dead = child.stdout.readline().strip()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    client = tracking.client()
    assert client.get_run(dead).info.status == "RUNNING"
    tracking.use_experiment()  # the next start on this machine finds it
    assert client.get_run(dead).info.status == "FAILED"
    assert "process had ended" in client.get_run(dead).data.tags["ended_by"]
    # A live process's run (this one's), and another machine's, are left alone.
    with mlflow.start_run(tags={"process": stores.process_tag()}) as alive:
        elsewhere = client.create_run(
            alive.info.experiment_id, tags={"process": "another-host:1:0"}
        ).info.run_id
        assert stores.fail_abandoned(client, alive.info.experiment_id) == []
        assert client.get_run(alive.info.run_id).info.status == "RUNNING"
    assert client.get_run(elsewhere).info.status == "RUNNING"
