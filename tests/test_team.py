"""Team mode: a real `mlflow server` on 127.0.0.1 with its own database (SQLite, and PostgreSQL
as the README sets it up) and artifact store, the library pointed at it by
MLFLOW_TRACKING_URI alone. Training, comparison, registry and loading the champion work
unchanged, and every file goes through the server. Four tuning workers share one PostgreSQL
study; one of them is killed mid-trial and nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from teamdocs import CHAPTER_9, server_command, team_sql

from fmnist_lib import artifact, registry, tracking, tuning
from fmnist_lib.config import PROJECT_ROOT, Profile
from fmnist_lib.data import load_fashion_mnist
from fmnist_lib.processes import BIN, env_with, free_port, running
from fmnist_lib.training import train

# A real `mlflow server` (and PostgreSQL), and models trained through it.
pytestmark = pytest.mark.slow

TINY = Profile(name="tiny", train_size=600, test_size=200, epochs=1)


def test_chapter_9_shows_the_team_setup_the_readme_shows_and_the_tests_run():
    assert team_sql(CHAPTER_9) == team_sql()
    assert server_command(CHAPTER_9) == server_command()


@contextmanager
def mlflow_server(mlflow_db: str, folder: Path):
    """The README's `mlflow server` command, on 127.0.0.1 with this database, its artifacts
    in ``folder``. Yields its URL and artifact folder."""
    port = free_port()
    artifacts = folder / "server-artifacts"
    command = server_command()
    values = {
        "--host": "127.0.0.1",
        "--port": str(port),
        "--backend-store-uri": mlflow_db,
        "--artifacts-destination": str(artifacts),
        "--allowed-hosts": f"127.0.0.1:{port}",
    }
    assert set(values) == set(command[2::2]), "the README's server options changed"
    command = [str(BIN / "mlflow"), "server"]
    for option, value in values.items():
        command += [option, value]
    url = f"http://127.0.0.1:{port}"
    with running(
        command + ["--workers", "2"], f"{url}/health", folder / "server.log", env=env_with()
    ):
        yield url, artifacts


# One server per database for the whole module (each takes seconds to start): the tests keep
# apart by experiment, study and client folder.
@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sqlite-server")
    with mlflow_server(f"sqlite:///{folder / 'server.db'}", folder) as (url, artifacts):
        yield url, f"sqlite:///{folder / 'optuna.db'}", artifacts


@pytest.fixture(scope="module")
def postgresql_server(postgres, tmp_path_factory):
    """The databases the README's SQL makes."""
    folder = tmp_path_factory.mktemp("pg-server")
    with mlflow_server(postgres("mlflow"), folder) as (url, artifacts):
        yield url, postgres("optuna"), artifacts


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request, tmp_path, monkeypatch):
    """The library pointed at a server (and Optuna at its database) by environment variables
    alone, working in a folder of its own: nothing may land beside it. Returns the server's
    artifact folder and the client's folder."""
    url, optuna_db, artifacts = request.getfixturevalue(f"{request.param}_server")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("FMNIST_OPTUNA_STORAGE", optuna_db)
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    monkeypatch.chdir(client_dir)
    return artifacts, client_dir


def test_train_compare_register_and_serve_through_a_tracking_server(server):
    artifacts, client_dir = server
    result = train("rf", profile=TINY, n_estimators=50)  # custom: compared, not registered
    best = train("rf", profile=TINY)

    runs = tracking.latest_runs("tiny", ["rf"], require=True)
    assert runs.loc["rf", "run_id"] == best.run_id
    assert set(tracking.find_runs("tiny")["run_id"]) == {result.run_id, best.run_id}

    table = registry.register_best()
    assert table["action"].tolist() == ["registered"]
    assert registry.champion()["run_id"] == best.run_id

    data = load_fashion_mnist().for_profile(TINY)
    champion = artifact.load(registry.CHAMPION_URI)
    out = champion.classify(data.x_test)
    assert (out["class_id"].to_numpy() == data.y_test).mean() == pytest.approx(best.accuracy)

    # The app lists the server's models and classifies with its champion.
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_data.clear()
    st.cache_resource.clear()
    app = AppTest.from_file(str(PROJECT_ROOT / "streamlit_app.py"), default_timeout=120).run()
    assert not app.exception
    listed = registry.registered_models()[0]  # the champion first
    assert listed.champion and app.selectbox(key="model").value == listed.label
    app.button[0].click().run()  # "One of each class"
    indexes = [int(name.removeprefix("test #")) for name in app.multiselect(key="test_picks").value]
    table = app.dataframe[0].value
    test_images = load_fashion_mnist().x_test
    expected = champion.classify(test_images[indexes])["class_name"].tolist()
    assert table[f"{listed.short}: class"].tolist() == expected

    # Models and figures went to the server's artifact store, nothing to the client's disk.
    stored = {p.name for p in artifacts.rglob("*") if p.is_file()}
    assert {"MLmodel", "model.skops", "confusion_matrix.png"} <= stored
    assert not any(client_dir.iterdir())


@pytest.mark.parametrize("server", ["postgresql"], indirect=True)
def test_four_workers_share_a_study_and_a_killed_one_loses_nothing(server, tmp_path):
    """Four `tune --until` workers at once on one PostgreSQL study; the first to run a trial is
    killed (SIGKILL) in the middle of it. Its trial and MLflow run end FAILED, a copy of the
    trial is run by another worker, and the study reaches its count with every trial recorded
    once in Optuna and once in MLflow, none left running or queued."""
    import optuna
    from optuna.trial import TrialState

    until = 8
    name = "team-study"
    # The README's commands: create the study once, then one `--until` worker per machine.
    tune = [sys.executable, "-m", "fmnist_lib", "tune", name]
    created = subprocess.run(
        tune + ["--create", "--trials", "0", "--profile", "quick"],
        capture_output=True,
        text=True,
        env=env_with(),
    )
    assert created.returncode == 0, created.stderr[-3000:]
    study = tuning.load_study(name)
    command = tune + ["--until", str(until)]
    logs = [tmp_path / f"worker-{k}.log" for k in range(4)]
    workers = []
    for log in logs:
        with open(log, "wb") as out:
            workers.append(
                subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env_with())
            )
    try:
        # The first trial that has started training (its MLflow run exists): kill its worker.
        deadline = time.monotonic() + 300
        while True:
            assert time.monotonic() < deadline, "no trial started in 5 minutes"
            running_now = [
                t
                for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if "mlflow_run_id" in t.user_attrs
            ]
            if running_now:
                break
            time.sleep(0.5)
        victim = running_now[0]
        pid = int(victim.user_attrs["worker"].rsplit(":", 1)[1])
        assert pid in {w.pid for w in workers}
        os.kill(pid, signal.SIGKILL)
        for worker, log in zip(workers, logs, strict=True):
            code = worker.wait(timeout=600)
            if worker.pid != pid:
                assert code == 0, log.read_text()[-3000:]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()

    study = optuna.load_study(study_name=name, storage=tuning.storage_url())
    trials = study.get_trials(deepcopy=False)
    states = {t.number: t.state for t in trials}
    assert states[victim.number] == TrialState.FAIL
    assert tuning.finished(study) >= until
    assert set(states.values()) <= {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL}
    assert list(states.values()).count(TrialState.FAIL) == 1
    # The dead trial was queued again with its settings, and another worker ran it to the end.
    retried = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number
    (retry,) = [t for t in trials if retried(t) == victim.number]
    assert retry.params == victim.params
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retry.user_attrs["worker"] != victim.user_attrs["worker"]

    # MLflow: one run per trial under the study's run, each in its trial's final state.
    client = tracking.client()
    parent = tuning.Settings(**study.user_attrs["settings"]).mlflow_run_id
    runs = client.search_runs(
        [client.get_run(parent).info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent}'",
        max_results=1000,
    )
    by_trial = {}
    for run in runs:
        by_trial.setdefault(int(run.data.tags["optuna.trial"]), []).append(run)
    assert sorted(by_trial) == sorted(states)
    assert all(len(found) == 1 for found in by_trial.values())
    for number, state in states.items():
        status = by_trial[number][0].info.status
        assert status == ("FAILED" if state == TrialState.FAIL else "FINISHED"), number
    assert by_trial[victim.number][0].info.run_id == victim.user_attrs["mlflow_run_id"]
