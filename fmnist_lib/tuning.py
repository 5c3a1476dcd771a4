"""Hyperparameter search for the dropout CNN with Optuna, every trial an MLflow run.

A study lives in a database that Optuna and any number of worker processes share: several
terminals, or several machines, can each run ``python -m fmnist_lib tune NAME`` and
they work on the same study, each taking the next trial Optuna proposes. The database is
``$FMNIST_OPTUNA_STORAGE`` (for a team, a PostgreSQL URL such as
``postgresql+psycopg://fmnist_optuna@db-host/optuna``, its password in ``~/.pgpass``), or
``optuna.db`` at the project root.

In MLflow the study is one run (tagged ``model=cnn-tuning``) and each trial a run nested under
it, with the trial's hyperparameters and its validation accuracy at every epoch. Trials that
fall below the median of earlier trials at the same epoch are stopped early (pruned).

A worker that dies mid-trial (killed, its machine rebooted) loses nothing: each running trial
sends a heartbeat, and the next worker to start a trial finds any trial whose heartbeat stopped
`GRACE_SECONDS` ago, marks it and its MLflow run FAILED, and queues a copy of it, which a
worker then runs. A worker that was only paused longer than that (a laptop asleep) finds its
trial failed when it wakes, at the next epoch: it ends the trial's run FAILED too and goes on
with another trial, so a trial is either finished or failed and retried, never both.
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd

from . import _compat, models, stores, tracking
from .config import PROJECT_ROOT, SEED, Profile, get_profile
from .data import load_fashion_mnist
from .redaction import redact

TUNED_MODEL = "cnn-tuning"
# How much each trial trains, per profile: a search needs many short runs, not a few long ones.
BUDGETS = {
    "quick": {"train_size": 1000, "epochs": 2, "val_size": 1000},
    "full": {"train_size": 10000, "epochs": 4, "val_size": None},  # 5 trials: ~2 minutes
}
FILTERS = {"16-32": (16, 32), "32-64": (32, 64), "48-96": (48, 96)}
# A running trial writes a heartbeat this often; one silent for GRACE_SECONDS is a dead worker's:
# long enough for a laptop's lid closed a minute. $FMNIST_TUNING_GRACE_SECONDS changes it
# (every worker of a study should use the same).
HEARTBEAT_SECONDS = 2
GRACE_SECONDS = int(os.environ.get("FMNIST_TUNING_GRACE_SECONDS") or 90)
MAX_RETRIES = 2  # a trial that kills its worker twice more is left failed


def course_settings(profile: Profile | None = None) -> dict:
    """Chapter 4's CNN as the search space names it (from the model catalogue), tried first
    so that the search starts from the course's own settings."""
    from .catalogue import MODELS

    params = MODELS["cnn"].default_params(profile or get_profile())
    filters = {value: name for name, value in FILTERS.items()}[tuple(params["filters"])]
    space = ("learning_rate", "batch_size", "conv_dropout", "dense_dropout")
    return {"filters": filters, **{name: params[name] for name in space}}


def storage_url() -> str:
    return os.environ.get("FMNIST_OPTUNA_STORAGE") or f"sqlite:///{PROJECT_ROOT / 'optuna.db'}"


def suggest(trial) -> dict:
    """The search space: learning rate, batch size, filters and both dropout rates."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 3e-4, 5e-3, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [64, 128, 256]),
        "filters": trial.suggest_categorical("filters", list(FILTERS)),
        "conv_dropout": trial.suggest_float("conv_dropout", 0.0, 0.5),
        "dense_dropout": trial.suggest_float("dense_dropout", 0.0, 0.6),
    }


def catalogue_settings(params: dict) -> dict:
    """A trial's settings as overrides of the catalogue's ``cnn``, for `training.train` or
    `recorded.reuse_or_train`: the best trial trained at full length."""
    return {**params, "filters": FILTERS[params["filters"]]}


@dataclass(frozen=True)
class Settings:
    """What every trial of a study trains on, stored with the study so all workers agree."""

    profile: str
    train_size: int
    epochs: int
    mlflow_run_id: str
    val_size: int | None = None  # None: the whole validation set


def _dead_trial(study, trial) -> None:
    """Called by Optuna for a trial whose worker stopped sending heartbeats, once it is marked
    FAILED: end its MLflow run as FAILED too (its worker cannot), then queue a copy of it."""
    import optuna
    from mlflow.exceptions import MlflowException

    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id:
        client = tracking.client()
        try:
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_tag(run_id, "optuna.state", "failed")
                client.set_terminated(run_id, "FAILED")
        except MlflowException as err:
            # Another member's run, on a server with accounts: theirs to end. Retry the trial.
            if err.error_code != "PERMISSION_DENIED":
                raise
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)(study, trial)


def _storage(url: str | None):
    import optuna

    url = url or storage_url()
    sqlite = url.startswith("sqlite")
    stores.patient_sqlite()
    # SQLite: several workers may start at once, so wait for the database rather than fail on
    # a lock. Others: a connection the database server closed is replaced, not an error.
    engine = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
    with _compat.optuna_experimental():
        storage = optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
            heartbeat_stale_trial_callback=_dead_trial,
        )
    if sqlite:
        _compat.begin_immediate(storage.engine)
    return storage


def create_study(name: str, profile: Profile | None = None, storage: str | None = None):
    """The study ``name``: created (with its MLflow run) if it does not exist yet, else
    loaded as it is. Create it once, then start the workers."""
    import mlflow
    import optuna

    profile = profile or get_profile()
    study = optuna.create_study(
        study_name=name,
        storage=_storage(storage or storage_url()),
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=SEED),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        load_if_exists=True,
    )
    if "settings" not in study.user_attrs:
        budget = BUDGETS.get(profile.name, BUDGETS["quick"])
        tracking.use_experiment()
        tags = {"model": TUNED_MODEL, "profile": profile.name, "optuna.study": name}
        tags["process"] = stores.process_tag()
        with mlflow.start_run(run_name=f"study {name}", tags=tags) as run:
            mlflow.log_params({**budget, "storage": redact(storage or storage_url())})
        settings = Settings(profile.name, mlflow_run_id=run.info.run_id, **budget)
        study.set_user_attr("settings", settings.__dict__)
        study.enqueue_trial(course_settings(profile))
    return study


def load_study(name: str, storage: str | None = None):
    import optuna

    study = optuna.load_study(study_name=name, storage=_storage(storage or storage_url()))
    if "settings" not in study.user_attrs:
        raise LookupError(f"Study {name!r} was not made by tuning.create_study.")
    return study


def trial_data(study):
    """The images every trial of ``study`` trains and is validated on: a sample of the
    training images and the validation set (or a sample of it), the same for every worker."""
    settings = Settings(**study.user_attrs["settings"])
    return load_fashion_mnist().subset(settings.train_size, None, val_size=settings.val_size)


def trial_precision() -> str:
    """The precision a trial fits in: the one chapter 4's CNN, the network searched, fits in."""
    from .catalogue import MODELS, fit_precision

    return fit_precision(MODELS["cnn"].fit_params)


@contextmanager
def trial_run(trial):
    """The MLflow run of one trial, nested under its study's run, with the settings the trial
    has drawn, its validation accuracy at each epoch (`tracking.epoch_logger`) and its best.
    A trial pruned inside (``optuna.TrialPruned``) ends a finished run tagged ``pruned``,
    then is reported to Optuna as pruned; any other error fails the run."""
    import mlflow
    import optuna

    settings = Settings(**trial.study.user_attrs["settings"])
    tags = {
        "model": TUNED_MODEL,
        "profile": settings.profile,
        "optuna.trial": str(trial.number),
        "precision": trial_precision(),
        "process": stores.process_tag(),
    }
    # Where the trial runs, then its run: what `_dead_trial` needs if this worker dies. In this
    # order, whoever sees the run id (another worker, a test) also sees the worker.
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    tracking.use_experiment()
    with mlflow.start_run(
        run_name=f"trial {trial.number}", parent_run_id=settings.mlflow_run_id, tags=tags
    ) as run:
        trial.set_user_attr("mlflow_run_id", run.info.run_id)
        _HERE.update(trial=trial._trial_id, run=run.info.run_id, started=_HERE["started"] + 1)
        mlflow.log_params(
            {**trial.params, "epochs": settings.epochs, "train_size": settings.train_size}
        )
        state = "complete"
        try:
            yield run
            if failed_elsewhere(trial):
                raise StaleTrial(f"trial {trial.number} was failed by another worker")
        except optuna.TrialPruned:
            state = "pruned"
        except StaleTrial:
            mlflow.set_tag("optuna.state", "failed")
            raise  # the run ends FAILED, as the other worker left it
        client = tracking.client()
        epochs = client.get_metric_history(run.info.run_id, "val_accuracy")
        if epochs:
            mlflow.log_metric("best_val_accuracy", max(m.value for m in epochs))
        mlflow.set_tag("optuna.state", state)
    if state == "pruned":  # outside the run: a pruned trial is a finished run, not a failed one
        raise optuna.TrialPruned()


def _objective(settings: Settings, data):
    """The objective the command line's workers run: the same as chapter 8's `objective`
    (a test checks that both give a trial the same validation accuracies)."""
    import keras
    import optuna

    from .catalogue import compile_keras

    x_train, y_train = data.keras("train")
    val_data = data.keras("val")
    precision = trial_precision()

    class Pruning(keras.callbacks.Callback):
        def __init__(self, trial):
            super().__init__()
            self.trial = trial

        def on_epoch_end(self, epoch, logs=None):
            if failed_elsewhere(self.trial):
                raise StaleTrial(f"trial {self.trial.number} was failed by another worker")
            self.trial.report(float(logs["val_accuracy"]), epoch)
            if self.trial.should_prune():
                raise optuna.TrialPruned()

    def objective(trial) -> float:
        params = suggest(trial)
        with trial_run(trial):
            keras.utils.set_random_seed(SEED + trial.number)  # each trial its own draw
            with models.computing_in(precision):
                model = models.build_dropout_cnn(
                    FILTERS[params["filters"]],
                    conv_dropout=params["conv_dropout"],
                    dense_dropout=params["dense_dropout"],
                )
            # Adam with the cosine decay over the trial's epochs, as chapter 8 writes it
            fit = {**params, "epochs": settings.epochs, "schedule": "cosine"}
            compile_keras(model, fit, len(y_train))
            history = model.fit(
                x_train, y_train, batch_size=params["batch_size"], epochs=settings.epochs,
                validation_data=val_data, verbose=0,
                callbacks=[tracking.epoch_logger(), Pruning(trial)],
            )  # fmt: skip
            return max(history.history["val_accuracy"])

    return objective


class StaleTrial(RuntimeError):
    """This worker's trial was found dead while the worker was paused, and failed elsewhere."""


def failed_elsewhere(trial) -> bool:
    """Whether another worker has failed ``trial`` (its heartbeat stopped past the grace)."""
    from optuna.trial import TrialState

    return trial.study._storage.get_trial(trial._trial_id).state == TrialState.FAIL


# The trial this process runs now, and how many it has started: what `_optimize` needs when
# Optuna refuses to tell a trial another worker failed.
_HERE = {"trial": None, "run": None, "started": 0}


def _optimize(study, objective, n_trials: int | None = None, **options) -> None:
    """``study.optimize``, going on after a trial another worker failed while this one was
    paused: Optuna then refuses to tell it (a ValueError). The trial stays failed (a worker runs
    its copy) and so does its MLflow run, even one that ended between the last check and then."""
    from optuna.trial import TrialState

    while True:
        started = _HERE["started"]
        try:
            study.optimize(objective, n_trials=n_trials, **options)
            return
        except ValueError:
            trial, run_id = _HERE["trial"], _HERE["run"]
            if trial is None or study._storage.get_trial(trial).state != TrialState.FAIL:
                raise
        client = tracking.client()
        if client.get_run(run_id).info.status != "FAILED":
            client.set_tag(run_id, "optuna.state", "failed")
            client.set_terminated(run_id, "FAILED")
        if n_trials is not None:
            n_trials -= _HERE["started"] - started
            if n_trials <= 0:
                return


def finished(study) -> int:
    """How many trials of ``study`` are done: complete or pruned."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def run_trials(
    name: str, n_trials: int | None = 1, storage: str | None = None, until: int | None = None
):
    """Run trials of the study ``name`` in this process (one worker): ``n_trials`` of them, or,
    with ``until``, as many as it takes for the study to hold ``until`` finished trials (with
    other workers on the same study). Before returning, a worker with ``until`` waits for the
    trials still running elsewhere to finish or be found dead, and runs the copies of dead ones,
    so that the study ends with none running or queued."""
    import optuna
    from optuna.trial import TrialState

    study = load_study(name, storage)
    settings = Settings(**study.user_attrs["settings"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tracking.use_experiment()
    objective = _objective(settings, trial_data(study))
    if until is None:
        _optimize(study, objective, n_trials=n_trials)
        return study

    def done(study) -> bool:
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        return finished(study) >= until and not waiting

    def enough(study, _trial) -> None:
        if done(study):
            study.stop()

    while True:
        with _compat.optuna_experimental():
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial: failed, queued
        if not done(study):
            _optimize(study, objective, callbacks=[enough])
        elif study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            time.sleep(HEARTBEAT_SECONDS)  # running elsewhere: it ends, or its heartbeat does
        else:
            return study


def trials_table(study) -> pd.DataFrame:
    """One row per trial: state, validation accuracy (a pruned trial's last epoch), epochs
    trained, seconds and hyperparameters; Optuna's own `trials_dataframe`, renamed."""
    table = study.trials_dataframe(
        attrs=("number", "state", "value", "duration", "params", "intermediate_values")
    )
    epochs = table.filter(like="intermediate_values_")
    table = table.assign(
        state=table["state"].str.lower(),
        value=table["value"].fillna(epochs.max(axis=1)),
        epochs=epochs.notna().sum(axis=1),
        duration=table["duration"].dt.total_seconds(),
    ).drop(columns=epochs.columns)
    params = [c for c in table.columns if c.startswith("params_")]
    table = table[["number", "state", "value", "epochs", "duration", *params]]
    table.columns = ["trial", "state", "val accuracy", "epochs", "seconds"] + [
        c.removeprefix("params_") for c in params
    ]
    return table.set_index("trial")


def importances(study) -> pd.Series:
    """How much each hyperparameter mattered for validation accuracy (Optuna's default
    evaluator, PED-ANOVA in Optuna 5; the shares sum to 1)."""
    import optuna

    return pd.Series(optuna.importance.get_param_importances(study), name="importance")
