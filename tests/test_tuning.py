"""An Optuna study on shared storage: two worker processes, one study, every trial in MLflow."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pytest

from fmnist_lib import tracking, tuning
from fmnist_lib.catalogue import MODELS
from fmnist_lib.config import profile_named
from fmnist_lib.redaction import redact


@pytest.fixture
def stores(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("FMNIST_OPTUNA_STORAGE", f"sqlite:///{tmp_path / 'optuna.db'}")
    return tmp_path


@pytest.mark.slow
def test_two_workers_share_one_study_and_log_every_trial(stores):
    study = tuning.create_study("shared", profile_named("quick"))
    settings = tuning.Settings(**study.user_attrs["settings"])
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "fmnist_lib", "tune", "shared", "--trials", "1"],
            env=os.environ.copy(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    for worker in workers:
        out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-3000:]
        assert out.startswith("study shared: ")

    study = tuning.load_study("shared")
    assert sorted(t.number for t in study.trials) == [0, 1]
    assert all(t.state.name == "COMPLETE" for t in study.trials)  # no pruning before 2 trials
    assert study.trials[0].params == tuning.course_settings()  # the course's settings first
    # The first trial, at full length, is the catalogue's own CNN: nothing overridden.
    course = MODELS["cnn"].default_params(profile_named("quick"))
    overrides = tuning.catalogue_settings(study.trials[0].params)
    assert MODELS["cnn"].params_with(profile_named("quick"), overrides) == course
    assert tuning.catalogue_settings(study.trials[1].params)["filters"] in tuning.FILTERS.values()
    table = tuning.trials_table(study)
    assert table["epochs"].tolist() == [settings.epochs] * 2
    assert table["val accuracy"].between(0.1, 1).all()

    runs = mlflow.search_runs(experiment_names=[tracking.EXPERIMENT_NAME])
    children = runs[runs["tags.mlflow.parentRunId"] == settings.mlflow_run_id]
    assert sorted(children["tags.optuna.trial"]) == ["0", "1"]
    assert (children["status"] == "FINISHED").all()
    client = mlflow.MlflowClient(tracking.tracking_uri())
    for _, run in children.iterrows():
        history = client.get_metric_history(run["run_id"], "val_accuracy")
        assert len(history) == settings.epochs
        trial = study.trials[int(run["tags.optuna.trial"])]
        assert run["metrics.best_val_accuracy"] == pytest.approx(trial.value)
    parent = runs[runs["run_id"] == settings.mlflow_run_id].iloc[0]
    assert parent["tags.model"] == tuning.TUNED_MODEL and "optuna.db" in parent["params.storage"]

    # Creating it again loads it: no second MLflow run, no second enqueued default trial.
    again = tuning.create_study("shared", profile_named("quick"))
    assert again.user_attrs["settings"]["mlflow_run_id"] == settings.mlflow_run_id
    assert len(again.trials) == 2


# Each worker says it is ready, waits for the go on its stdin, then asks for trials as fast as
# it can, and prints when it asked its first and its last.
_ASKER = """
import sys, time, optuna
from fmnist_lib import tuning
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.load_study(study_name="queue", storage=tuning._storage(sys.argv[1]))
print("ready", flush=True)
sys.stdin.readline()
first = time.monotonic()
numbers = [study.ask().number for _ in range(8)]
print(first, time.monotonic(), *numbers)
"""


@pytest.mark.slow
def test_workers_racing_for_queued_trials_never_get_the_same_one(tmp_path):
    # SQLite ignores SELECT ... FOR UPDATE: without BEGIN IMMEDIATE, 4 workers popping 24
    # queued trials got duplicates on every try here (and CI failed on the two-worker test).
    import optuna

    url = f"sqlite:///{tmp_path / 'queue.db'}"
    study = optuna.create_study(study_name="queue", storage=tuning._storage(url))
    for x in range(24):
        study.enqueue_trial({"x": float(x)})
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _ASKER, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(4)
    ]
    for worker in workers:  # a barrier: every worker has loaded the study
        assert worker.stdout.readline() == "ready\n"
    for worker in workers:
        worker.stdin.write("go\n")
        worker.stdin.flush()
    numbers, spans = [], []
    for worker in workers:
        out, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0
        first, last, *asked = out.split()
        spans.append((float(first), float(last)))
        numbers += [int(n) for n in asked]
    assert sorted(numbers) == list(range(32))  # 24 queued ones once each, then 8 new ones
    # The race took place: some two workers were asking at the same time.
    assert any(a[0] < b[1] and b[0] < a[1] for k, a in enumerate(spans) for b in spans[k + 1 :]), (
        spans
    )


def test_a_worker_without_a_study_is_told_to_create_it(stores):
    result = subprocess.run(
        [sys.executable, "-m", "fmnist_lib", "tune", "nothing"], capture_output=True, text=True
    )
    assert result.returncode == 1 and "--create" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "url, logged",
    [
        (
            "postgresql://course:s3cret@db.example.org/optuna",
            "postgresql://course:***@db.example.org/optuna",
        ),
        (  # percent-encoded "p@ss:w/d%", as a password with those characters must be written
            "postgresql+psycopg://course:p%40ss%3Aw%2Fd%25@db:5432/optuna?sslmode=require",
            "postgresql+psycopg://course:***@db:5432/optuna?sslmode=require",
        ),
        ("postgresql://course:pa:ss@db/optuna", "postgresql://course:***@db/optuna"),
        ("postgresql://u:@h/d", "postgresql://u:***@h/d"),
        ("postgresql://u:pw@[::1]:5432/d", "postgresql://u:***@[::1]:5432/d"),
        ("postgresql://course@db/optuna", "postgresql://course@db/optuna"),
        # Without a password, the URL as given, not re-quoted.
        ("sqlite:///optuna.db", "sqlite:///optuna.db"),
        ("sqlite:////home/me/my course/optuna.db", "sqlite:////home/me/my course/optuna.db"),
        ("sqlite:///C:\\course\\optuna.db", "sqlite:///C:\\course\\optuna.db"),
        ("sqlite:///ü.db", "sqlite:///ü.db"),
        # Not URLs SQLAlchemy reads: kept, less anything before an "@"; never an error.
        ("optuna.db", "optuna.db"),
        ("", ""),
        ("course:s3cret@db/optuna", "***@db/optuna"),
        ("postgresql://course:p@ss@db/optuna", "***@db/optuna"),  # an unquoted "@"
        ("postgresql://u:s3cret@h1:1,h2:2/d", "***@h1:1,h2:2/d"),
        # libpq also takes the password as a query parameter.
        ("postgresql://u@h/d?password=s3cret", "postgresql://u@h/d?password=***"),
        (
            "postgresql://u:pw@h/d?sslmode=require&PASSWORD=s3cret&sslpassword=k3y",
            "postgresql://u:***@h/d?PASSWORD=***&sslmode=require&sslpassword=***",  # sorted
        ),
        ("http://u:s3cret@tracking.example.org:5000", "http://u:***@tracking.example.org:5000"),
    ],
)
def test_passwords_stay_out_of_the_logs(url, logged):
    assert redact(url) == logged


def _chapter_8_objective(study):
    """Chapter 8's `Pruning` and `objective`, taken from its cells and defined on ``study``'s
    sample of images, with nothing else from the chapter."""
    import math

    import keras
    import optuna
    from chapters import chapter_definitions

    from fmnist_lib import models
    from fmnist_lib.config import SEED

    sample = tuning.trial_data(study)
    x_trial, y_trial = sample.keras("train")
    namespace = {
        "keras": keras, "optuna": optuna, "math": math, "models": models, "tuning": tuning,
        "tracking": tracking, "SEED": SEED, "sample": sample, "x_trial": x_trial,
        "y_trial": y_trial, "precision": tuning.trial_precision(),
        "settings": tuning.Settings(**study.user_attrs["settings"]),
    }  # fmt: skip
    return chapter_definitions("08_ensembles", ("Pruning", "objective"), namespace)["objective"]


@pytest.mark.slow
def test_chapter_8_objective_is_the_one_the_workers_run(stores):
    """The chapter writes its objective; the command line's workers run the library's. Given
    the same settings (the course's, then others queued in both studies), both search the same
    space and give each trial the same validation accuracy, epoch by epoch."""
    quick = profile_named("quick")
    other = {
        "learning_rate": 0.003, "batch_size": 64, "filters": "16-32",
        "conv_dropout": 0.1, "dense_dropout": 0.3,
    }  # fmt: skip
    in_chapter = tuning.create_study("chapter", quick)
    in_chapter.enqueue_trial(other)
    in_chapter.optimize(_chapter_8_objective(in_chapter), n_trials=2)
    tuning.create_study("workers", quick).enqueue_trial(other)
    by_workers = tuning.run_trials("workers", 2)
    for mine, theirs in zip(in_chapter.trials, by_workers.trials, strict=True):
        assert mine.state.name == theirs.state.name == "COMPLETE"
        assert mine.params == theirs.params
        assert mine.distributions == theirs.distributions
        assert mine.intermediate_values == pytest.approx(theirs.intermediate_values, abs=1e-6)
        assert mine.value == pytest.approx(theirs.value, abs=1e-6)
    assert in_chapter.trials[0].params == tuning.course_settings(quick)
    assert in_chapter.trials[1].params == other
    runs = mlflow.search_runs(experiment_names=[tracking.EXPERIMENT_NAME])
    trials = runs[runs["tags.optuna.trial"].notna()]
    assert len(trials) == 4 and (trials["status"] == "FINISHED").all()
    assert set(trials["tags.optuna.state"]) == {"complete"}
    assert trials["metrics.best_val_accuracy"].notna().all()


@pytest.mark.slow
def test_a_trial_the_chapter_prunes_ends_a_finished_run_tagged_pruned(stores):
    import optuna

    tuning.create_study("pruned", profile_named("quick"))
    # Any accuracy is below 1.1: the first epoch's report prunes the trial.
    study = optuna.load_study(
        study_name="pruned",
        storage=tuning.storage_url(),
        pruner=optuna.pruners.ThresholdPruner(1.1),
    )
    study.optimize(_chapter_8_objective(study), n_trials=1)
    (trial,) = study.trials
    assert trial.state.name == "PRUNED" and list(trial.intermediate_values) == [0]
    runs = mlflow.search_runs(experiment_names=[tracking.EXPERIMENT_NAME])
    (run,) = [row for _, row in runs.iterrows() if row.get("tags.optuna.trial") == "0"]
    assert run["status"] == "FINISHED" and run["tags.optuna.state"] == "pruned"
    assert run["metrics.best_val_accuracy"] == pytest.approx(trial.intermediate_values[0])
    assert tuning.trials_table(study).loc[0, "state"] == "pruned"
