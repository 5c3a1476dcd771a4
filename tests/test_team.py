"""Team mode: a real `mlflow server` with MLflow's own accounts (`--app-name basic-auth`) on
127.0.0.1, with its own databases (SQLite, and PostgreSQL as the README sets it up) and artifact
store, the library pointed at it by MLFLOW_TRACKING_URI and a member's credentials alone. The
teacher makes the members' accounts with `team add`; a member trains, compares and registers,
and is refused the champion and another member's runs; the teacher promotes; the app and the
API serve the champion with a member's credentials. Two promotions at once leave the better
model champion. Four tuning workers share one PostgreSQL study; one of them is killed
mid-trial and nothing is lost. No password is in any command line, log or output of it."""

from __future__ import annotations

import io
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image
from teamdocs import CHAPTER_9, auth_ini, server_command, team_sql

from fmnist_lib import artifact, promotion, registry, tracking, tuning
from fmnist_lib.config import PROJECT_ROOT, Profile
from fmnist_lib.data import load_fashion_mnist
from fmnist_lib.processes import BIN, env_with, free_port, running
from fmnist_lib.training import train

# A real `mlflow server` (and PostgreSQL), and models trained through it.
pytestmark = pytest.mark.slow

TINY = Profile(name="tiny", train_size=600, test_size=200, epochs=1)
TEACHER = "teacher"  # the README's admin_username
GRACE = "10"  # seconds: the workers below find a silent trial sooner than a team's 90 s would
# What the team's processes printed or logged, and their command lines: none may hold a password.
OUTPUTS: list[str] = []
LOGS: list[Path] = []


def test_chapter_9_shows_the_team_setup_the_readme_shows_and_the_tests_run():
    assert team_sql(CHAPTER_9) == team_sql()
    assert auth_ini(CHAPTER_9) == auth_ini()
    assert server_command(CHAPTER_9) == server_command()


def command_lines() -> str:
    """Every process's command line, as `ps` shows them to any user of the machine."""
    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout


@dataclass
class Team:
    url: str
    optuna: str
    artifacts: Path
    passwords: dict[str, str] = field(default_factory=dict)

    def env(self, who: str) -> dict[str, str]:
        """MLflow's own variables for ``who``."""
        return {"MLFLOW_TRACKING_USERNAME": who, "MLFLOW_TRACKING_PASSWORD": self.passwords[who]}


def run_cli(args: list[str], env: dict[str, str], cwd: Path | None = None):
    done = subprocess.run(
        [sys.executable, "-m", "fmnist_lib", *args],
        capture_output=True,
        text=True,
        env=env_with(**env),
        cwd=cwd,
    )
    OUTPUTS.append(done.stdout + done.stderr)
    return done


@contextmanager
def mlflow_server(mlflow_db: str, auth_db: str, folder: Path, optuna: str):
    """The README's `mlflow server` command and `auth.ini`, on 127.0.0.1 with these databases,
    its artifacts in ``folder``, the teacher's password and the secret key in its environment;
    then the README's `team add` for two members, alice and bob. Yields a `Team`."""
    port = free_port()
    artifacts = folder / "server-artifacts"
    ini = folder / "auth.ini"
    settings = auth_ini()
    assert re.search(r"^database_uri = ", settings, re.M), "the README's auth.ini changed"
    ini.write_text(
        re.sub(r"^database_uri = .*$", f"database_uri = {auth_db}", settings, flags=re.M)
    )
    command = server_command()
    values = {
        "--app-name": "basic-auth",
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
    team = Team(url, optuna, artifacts, {TEACHER: secrets.token_urlsafe(16)})
    env = env_with(
        MLFLOW_AUTH_CONFIG_PATH=str(ini),
        MLFLOW_AUTH_ADMIN_PASSWORD=team.passwords[TEACHER],
        MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(32),
    )
    LOGS.append(folder / "server.log")
    with running(command + ["--workers", "2"], f"{url}/health", folder / "server.log", env=env):
        OUTPUTS.append(command_lines())
        for member in ("alice", "bob"):
            made = run_cli(
                ["team", "add", member],
                {"MLFLOW_TRACKING_URI": url, **team.env(TEACHER)},
                cwd=folder,
            )
            assert made.returncode == 0, made.stderr[-3000:]
            path = folder / f"{member}.mlflow-credentials"
            assert path.stat().st_mode & 0o077 == 0, "a credentials file others can read"
            found = re.search(r"mlflow_tracking_password = (\S+)", path.read_text())
            team.passwords[member] = found[1]
        yield team


# One server per database for the whole module (each takes seconds to start): the tests keep
# apart by experiment, study and client folder.
@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sqlite-server")
    with mlflow_server(
        f"sqlite:///{folder / 'server.db'}",
        f"sqlite:///{folder / 'auth.db'}",
        folder,
        f"sqlite:///{folder / 'optuna.db'}",
    ) as team:
        yield team


@pytest.fixture(scope="module")
def postgresql_server(postgres, tmp_path_factory):
    """The databases and roles the README's SQL makes."""
    folder = tmp_path_factory.mktemp("pg-server")
    with mlflow_server(
        postgres("mlflow"), postgres("mlflow_auth"), folder, postgres("optuna")
    ) as team:
        team.passwords.update({f"postgres:{k}": v for k, v in postgres.passwords.items()})
        yield team


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request, tmp_path, monkeypatch):
    """The library pointed at a server (and Optuna at its database) by environment variables
    alone, as the member alice, working in a folder of its own: nothing may land beside it.
    Returns the `Team` and the client's folder."""
    team = request.getfixturevalue(f"{request.param}_server")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team.url)
    monkeypatch.setenv("FMNIST_OPTUNA_STORAGE", team.optuna)
    act_as(monkeypatch, team, "alice")
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    monkeypatch.chdir(client_dir)
    return team, client_dir


def act_as(monkeypatch, team: Team, who: str) -> None:
    for key, value in team.env(who).items():
        monkeypatch.setenv(key, value)


def refused(call) -> str:
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as caught:
        call()
    return caught.value.error_code


def test_members_train_and_register_the_teacher_promotes_and_everyone_serves(
    server, monkeypatch, tmp_path
):
    team, client_dir = server
    # Nobody without an account: the REST API and the course's commands.
    request = urllib.request.Request(f"{team.url}/api/2.0/mlflow/experiments/search?max_results=1")
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(request, timeout=30)
    assert anonymous.value.code == 401
    # No account: no variables, and a home without ~/.mlflow/credentials.
    anonymous = {k: v for k, v in env_with().items() if not k.startswith("MLFLOW_TRACKING_")}
    asked = subprocess.run(
        [sys.executable, "-m", "fmnist_lib", "champion"],
        capture_output=True,
        text=True,
        env={**anonymous, "MLFLOW_TRACKING_URI": team.url, "HOME": str(tmp_path)},
    )
    OUTPUTS.append(asked.stdout + asked.stderr)
    assert asked.returncode == 1 and "refused this account" in asked.stderr, asked.stderr[-2000:]

    # alice trains into her own experiment, compares with the team's runs, registers.
    result = train("rf", profile=TINY, n_estimators=50)  # custom: compared, not registered
    best = train("rf", profile=TINY)
    reader = tracking.client()
    experiment = reader.get_run(best.run_id).info.experiment_id
    assert reader.get_experiment(experiment).name == "fashion-mnist/alice"
    runs = tracking.latest_runs("tiny", ["rf"], require=True)
    assert runs.loc["rf", "run_id"] == best.run_id
    assert {result.run_id, best.run_id} <= set(tracking.find_runs("tiny")["run_id"])
    table = registry.register_best()
    assert table.loc[table["model"] == "rf", "action"].tolist() == ["registered"]
    assert "only the teacher's account" in str(table.attrs["refused"])
    champion_before = registry.registered_models()
    assert not any(m.champion and m.model == "rf" for m in champion_before)

    # bob may read alice's runs, not change them, nor move the champion.
    act_as(monkeypatch, team, "bob")
    reader = tracking.client()
    assert reader.get_run(best.run_id).info.status == "FINISHED"
    assert refused(lambda: reader.set_tag(best.run_id, "model", "forged")) == "PERMISSION_DENIED"
    assert refused(lambda: reader.log_metric(best.run_id, "validation_accuracy", 1.0)) == (
        "PERMISSION_DENIED"
    )
    # Nor take the name of a member's experiment before the teacher adds that member.
    reader.create_experiment("fashion-mnist/carol")
    taken = run_cli(
        ["team", "add", "carol"], {"MLFLOW_TRACKING_URI": team.url, **team.env(TEACHER)}, tmp_path
    )
    assert taken.returncode == 1 and "exists already" in taken.stderr, taken.stderr[-2000:]
    assert not (tmp_path / "carol.mlflow-credentials").exists()

    # The teacher's `register` promotes alice's model, scored from its recorded predictions.
    promoted = run_cli(
        ["register"],
        {"MLFLOW_TRACKING_URI": team.url, **team.env(TEACHER)},
        cwd=tmp_path,
    )
    assert promoted.returncode == 0, promoted.stderr[-3000:]
    act_as(monkeypatch, team, "bob")
    version = int(registry.champion()["version"])
    moved = lambda: reader.set_registered_model_alias(  # noqa: E731
        registry.CHAMPION_MODEL, registry.CHAMPION_ALIAS, version
    )
    assert refused(moved) == "PERMISSION_DENIED"
    act_as(monkeypatch, team, "alice")
    tags = registry.champion()
    assert tags["model"] == "rf" and tags["run_id"] == best.run_id
    assert float(tags["validation_accuracy"]) == pytest.approx(best.validation.accuracy)

    # alice forges a weak forest's recorded predictions (every answer right) and registers it:
    # the best forest on paper, never the champion: the teacher's promotion scores the model.
    data = load_fashion_mnist().for_profile(TINY)
    weak = train("rf", profile=TINY, n_estimators=2)
    reader = tracking.client()
    reader.set_tag(weak.run_id, "variant", "default")
    tracking.log_predictions({"validation": data.y_val, "test": data.y_test}, run_id=weak.run_id)
    forged = registry.register_best().set_index("model")
    assert forged.loc["rf", "action"] == "registered"
    again = run_cli(["register"], {"MLFLOW_TRACKING_URI": team.url, **team.env(TEACHER)}, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert registry.champion()["run_id"] == best.run_id

    champion = artifact.load(registry.CHAMPION_URI)
    out = champion.classify(data.x_test)
    assert (out["class_id"].to_numpy() == data.y_test).mean() == pytest.approx(best.accuracy)

    # The app lists the server's models and classifies with its champion, as alice.
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

    # The API (`./course api`) serves the champion with alice's credentials.
    port = free_port()
    api = [sys.executable, "-m", "fmnist_lib", "serve", "--port", str(port)]
    with running(api, f"http://127.0.0.1:{port}/ping", tmp_path / "api.log", env=env_with()):
        OUTPUTS.append(command_lines())
        png = io.BytesIO()
        Image.fromarray(test_images[indexes[0]]).save(png, format="PNG")
        answer = post_png(f"http://127.0.0.1:{port}", png.getvalue())
    LOGS.append(tmp_path / "api.log")
    assert answer["predictions"][0]["class_name"] == expected[0]

    # Models and figures went to the server's artifact store, nothing to the client's disk.
    stored = {p.name for p in team.artifacts.rglob("*") if p.is_file()}
    assert {"MLmodel", "model.skops", "confusion_matrix.png"} <= stored
    assert not any(client_dir.iterdir())


def post_png(url: str, data: bytes) -> dict:
    import base64
    import json

    body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(data).decode()]]}}
    request = urllib.request.Request(
        f"{url}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.mark.parametrize("server", ["postgresql"], indirect=True)
def test_two_promotions_at_once_leave_the_better_model_champion(server, monkeypatch):
    """Two `register` decisions at once (threads, released together), many times: each reads
    the champion, registers its candidate and sets the alias, in whatever order the server
    serves them. The better candidate ends champion every time."""
    team, _ = server
    act_as(monkeypatch, team, TEACHER)
    weak = train("rf", profile=TINY, n_estimators=2)
    strong = train("rf", profile=TINY)
    candidates = []
    for result in (weak, strong):
        run = tracking.find_runs("tiny").set_index("run_id").loc[result.run_id]
        candidates.append(
            registry.Candidate(
                model="rf",
                run_id=result.run_id,
                model_uri=result.model_uri,
                profile="tiny",
                validation_accuracy=registry.validation_score(
                    result.run_id, "tiny", int(run["params.validation_size"])
                ),
                accuracy=result.accuracy,
            )
        )
    assert candidates[0].rank < candidates[1].rank
    client = tracking.client()

    def no_champion():  # each round starts from none (and the test leaves none)
        if promotion.current(client, registry.CHAMPION_MODEL, registry.CHAMPION_ALIAS):
            client.delete_registered_model_alias(registry.CHAMPION_MODEL, registry.CHAMPION_ALIAS)

    for _ in range(8):
        no_champion()
        start = threading.Barrier(2)
        errors = []

        def promote(candidate, start=start, errors=errors):
            try:
                start.wait()
                registry._promote_if_better(tracking.client(), candidate)
            except Exception as err:  # reported below, in the test's thread
                errors.append(err)

        threads = [threading.Thread(target=promote, args=(c,)) for c in candidates]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
        assert registry.champion()["run_id"] == strong.run_id
    no_champion()


def start_workers(command: list[str], logs: list[Path]) -> list[subprocess.Popen]:
    """One tuning worker per log file, each with the short grace, its output in its log."""
    LOGS.extend(logs)
    workers = []
    for log in logs:
        with open(log, "wb") as out:
            workers.append(
                subprocess.Popen(
                    command,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env_with(FMNIST_TUNING_GRACE_SECONDS=GRACE),
                )
            )
    return workers


def first_started_trial(study):
    """The first trial that has started training (its MLflow run exists), within 5 minutes."""
    from optuna.trial import TrialState

    deadline = time.monotonic() + 300
    while True:
        assert time.monotonic() < deadline, "no trial started in 5 minutes"
        started = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if "mlflow_run_id" in t.user_attrs
        ]
        if started:
            return started[0]
        time.sleep(0.2)


@pytest.mark.parametrize("server", ["postgresql"], indirect=True)
def test_four_workers_share_a_study_and_a_killed_one_loses_nothing(server, tmp_path):
    """Four `tune --until` workers at once on one PostgreSQL study, all as alice (with a grace
    of 10 s instead of 90 s, to find the dead worker sooner); the first to run a trial is
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
    OUTPUTS.append(created.stdout + created.stderr)
    assert created.returncode == 0, created.stderr[-3000:]
    study = tuning.load_study(name)
    command = tune + ["--until", str(until)]
    logs = [tmp_path / f"worker-{k}.log" for k in range(4)]
    workers = start_workers(command, logs)
    try:
        victim = first_started_trial(study)  # its worker is killed
        OUTPUTS.append(command_lines())
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


@pytest.mark.parametrize("server", ["postgresql"], indirect=True)
def test_a_worker_paused_past_the_grace_leaves_its_trial_failed_and_retried(server, tmp_path):
    """Two `tune --until 3` workers (grace 10 s); the first to run a trial is stopped (SIGSTOP)
    for 30 s, like a laptop put to sleep, then resumed. The other worker fails its trial and
    queues a copy; the resumed one finds its trial failed at the next epoch, ends its MLflow
    run FAILED (not FINISHED) and goes on: the trial is failed and retried, never both, every
    trial recorded once, both workers exit cleanly."""
    import optuna
    from optuna.trial import TrialState

    name = "paused-study"
    tune = [sys.executable, "-m", "fmnist_lib", "tune", name]
    created = run_cli(tune[3:] + ["--create", "--trials", "0", "--profile", "quick"], {})
    assert created.returncode == 0, created.stderr[-3000:]
    study = tuning.load_study(name)
    logs = [tmp_path / f"worker-{k}.log" for k in range(2)]
    workers = start_workers(tune + ["--until", "3"], logs)
    try:
        paused = first_started_trial(study)
        pid = int(paused.user_attrs["worker"].rsplit(":", 1)[1])
        os.kill(pid, signal.SIGSTOP)
        time.sleep(30)  # a laptop asleep; then until the other worker has failed its trial
        deadline = time.monotonic() + 300
        while study._storage.get_trial(paused._trial_id).state != TrialState.FAIL:
            assert time.monotonic() < deadline, "the paused worker's trial was never failed"
            time.sleep(1)
        os.kill(pid, signal.SIGCONT)
        for worker, log in zip(workers, logs, strict=True):
            assert worker.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.kill(worker.pid, signal.SIGCONT)
                worker.kill()

    study = optuna.load_study(study_name=name, storage=tuning.storage_url())
    trials = study.get_trials(deepcopy=False)
    states = {t.number: t.state for t in trials}
    assert states[paused.number] == TrialState.FAIL, states
    assert list(states.values()).count(TrialState.FAIL) == 1
    retried = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number
    (retry,) = [t for t in trials if retried(t) == paused.number]
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    client = tracking.client()
    run = client.get_run(paused.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["optuna.state"] == "failed"
    parent = tuning.Settings(**study.user_attrs["settings"]).mlflow_run_id
    runs = client.search_runs(
        tracking.experiment_ids(client), f"tags.mlflow.parentRunId = '{parent}'"
    )
    numbers = sorted(int(r.data.tags["optuna.trial"]) for r in runs)
    assert numbers == sorted(states), "a trial without its one MLflow run, or with two"


def test_no_password_in_any_command_line_log_or_output_of_the_team(request):
    """Run after the others (pytest keeps a file's order): the command lines seen while the
    servers, the API and the workers ran, every server, API and worker log, and every command's
    output, against every password the team used (the teacher's, the members', PostgreSQL's)."""
    teams = [request.getfixturevalue(name) for name in ("sqlite_server", "postgresql_server")]
    secrets_used = {v for team in teams for v in team.passwords.values()}
    assert len(secrets_used) >= 6
    texts = OUTPUTS + [log.read_text(errors="replace") for log in LOGS if log.exists()]
    assert any("mlflow server" in text for text in texts), "no command line was captured"
    assert sum(log.exists() for log in LOGS) >= 2, LOGS  # the servers'; more after the others
    for text in texts:
        for secret in secrets_used:
            assert secret not in text, "a password in a command line, log or output"
