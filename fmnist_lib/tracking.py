"""MLflow: where runs are stored, how a training run is logged, and how runs are read back.

By default runs go to an embedded SQLite store, ``mlflow.db`` at the project root, with
artifacts in ``mlartifacts/`` beside it: nothing to start, and notebooks (run from ``book/``)
and scripts share it. Set ``MLFLOW_TRACKING_URI`` to use another store or a tracking server.
On a team's server with accounts, each member writes to an experiment of their own and
reads everyone's (`accounts`).
"""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .accounts import EXPERIMENT_NAME, experiment_name, is_course_experiment
from .config import PROJECT_ROOT
from .redaction import redact
from .stores import fail_abandoned, patient_sqlite, process_tag

DEFAULT_DB = PROJECT_ROOT / "mlflow.db"


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, or the project's embedded SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_DB}"


def shown_uri() -> str:
    """`tracking_uri` as a message or a page may show it: without a password."""
    return redact(tracking_uri())


def client():
    """An MLflow client on the course's store: reads go through it, never through MLflow's
    process-wide tracking URI, so a caller's store never leaks into the next caller's."""
    import mlflow

    patient_sqlite()
    return mlflow.MlflowClient(tracking_uri(), registry_uri=tracking_uri())


def download(artifact_uri: str, dst_path: str | None = None) -> str:
    """The files of a ``runs:/``, ``models:/`` or artifact URI of the course's store, copied
    to ``dst_path`` (a new temporary folder by default); returns the local path."""
    import mlflow.artifacts

    uri = tracking_uri()
    return mlflow.artifacts.download_artifacts(
        _artifact_location(artifact_uri), dst_path=dst_path, tracking_uri=uri, registry_uri=uri
    )


def _artifact_location(artifact_uri: str) -> str:
    """Where the files of a ``runs:/`` or ``models:/`` URI live, found through `client`: MLflow
    3.17 resolves such URIs on its process-wide store, whatever store it is handed."""
    scheme, _, rest = artifact_uri.partition(":/")
    if scheme not in ("runs", "models"):
        return artifact_uri
    reader = client()
    head, _, path = rest.lstrip("/").partition("/")
    if scheme == "runs":
        root = reader.get_run(head).info.artifact_uri
    elif head.startswith("m-") and "@" not in head:  # a logged model's id
        root = reader.get_logged_model(head).artifact_location
    elif "@" in head:  # name@alias
        name, alias = head.split("@", 1)
        version = reader.get_model_version_by_alias(name, alias)
        root = reader.get_model_version_download_uri(name, version.version)
    else:  # name/version
        version, _, path = path.partition("/")
        root = reader.get_model_version_download_uri(head, version)
    if root.startswith(("runs:/", "models:/")):  # a version registered from a logged model
        root = _artifact_location(root)
    return f"{root.rstrip('/')}/{path}" if path else root


def local_artifact_root(uri: str) -> str | None:
    """For a SQLite store, a folder beside the database (MLflow would otherwise put artifacts
    under the current directory, which differs between the book and the scripts)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return None


def experiment_ids(reader=None) -> list[str]:
    """The course's experiments in the store: ``fashion-mnist`` and every member's."""
    reader = reader or client()
    found = reader.search_experiments(filter_string=f"name LIKE '{EXPERIMENT_NAME}%'")
    return [e.experiment_id for e in found if is_course_experiment(e.name)]


def use_experiment(name: str | None = None) -> str:
    """Point MLflow's fluent API at the store and the experiment (default: this machine's,
    `accounts.experiment_name`, created if needed); returns its id. Only writers call it, as
    they start a run: ``mlflow.start_run`` and Keras autolog know no other store than the
    process-wide one. Readers use `client`."""
    import mlflow

    uri = tracking_uri()
    name = name or experiment_name(uri)
    patient_sqlite()
    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name(name)
    location = local_artifact_root(uri)
    experiment_id = found.experiment_id if found else mlflow.create_experiment(name, location)
    mlflow.set_experiment(experiment_id=experiment_id)
    fail_abandoned(client(), experiment_id)
    return experiment_id


def library_versions() -> dict[str, str]:
    """Versions of what a run depends on, as tags."""
    from importlib.metadata import PackageNotFoundError, version

    tags = {"version.python": platform.python_version()}
    for package in ("numpy", "scikit-learn", "scikit-image", "tensorflow-cpu", "keras", "mlflow"):
        try:
            tags[f"version.{package}"] = version(package)
        except PackageNotFoundError:
            pass
    return tags


def log_figure(fig, filename: str) -> None:
    """Save a matplotlib figure as a PNG artifact of the active run, then close it."""
    import matplotlib.pyplot as plt
    import mlflow

    mlflow.log_figure(fig, filename)
    plt.close(fig)


def log_text(text: str, filename: str) -> None:
    import mlflow

    mlflow.log_text(text, filename)


def epoch_logger():
    """A Keras callback that logs loss, accuracy, val_loss and val_accuracy at every epoch."""
    import keras
    import mlflow

    class EpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            mlflow.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=epoch)

    return EpochLogger()


def find_runs(
    profile: str | None = None, model: str | None = None, variant: str | None = None
) -> pd.DataFrame:
    """Finished runs of the course's experiments (`experiment_ids`), newest first, optionally
    of one profile, one model and one variant (``default``: trained with the course's
    hyperparameters; ``custom``), as the table `mlflow.search_runs` gives (read through
    `client`, not MLflow's global store)."""
    reader = client()
    experiments = experiment_ids(reader)
    filters = ["attributes.status = 'FINISHED'"]
    for key, value in (("profile", profile), ("model", model), ("variant", variant)):
        if value:
            filters.append(f"tags.{key} = '{value}'")
    runs, token = [], None
    while experiments:
        page = reader.search_runs(
            experiments,
            " and ".join(filters),
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        runs += page
        token = page.token
        if not token:
            break
    return _runs_table(runs)


def _runs_table(runs) -> pd.DataFrame:
    """`mlflow.search_runs`'s table for a list of runs: one row per run, the run's info, then
    ``metrics.*``, ``params.*`` and ``tags.*`` columns (None where a run has no such param or
    tag, NaN for a metric)."""
    info = ["run_id", "experiment_id", "status", "artifact_uri", "start_time", "end_time"]
    rows = []
    for run in runs:
        row = {key: getattr(run.info, key) for key in info}
        for key in ("start_time", "end_time"):
            row[key] = pd.to_datetime(row[key], unit="ms", utc=True)
        for group in ("metrics", "params", "tags"):
            row.update({f"{group}.{k}": v for k, v in getattr(run.data, group).items()})
        rows.append(row)
    table = pd.DataFrame(rows, columns=None if rows else info)
    ordered = info + sorted(c for c in table.columns if c not in info)
    table = table[ordered]
    for column in table.columns:
        if column.startswith(("params.", "tags.")):
            table[column] = table[column].astype(object).where(table[column].notna(), None)
    return table


def serving_model_uri(run) -> str | None:
    """The serving artifact (`classifier.Classifier`) the run logged, as ``models:/m-...``;
    None for a run that logged none (runs made before the artifact existed logged the bare
    model)."""
    from mlflow.models import Model

    logged = client().search_logged_models(
        [run["experiment_id"]], filter_string=f"source_run_id = '{run['run_id']}'"
    )
    # The newest first, should a run log its serving artifact more than once.
    for model in sorted(logged, key=lambda m: m.creation_timestamp, reverse=True):
        with tempfile.TemporaryDirectory() as folder:
            spec = Model.load(download(f"{model.artifact_location}/MLmodel", folder))
        if "family" in spec.flavors.get("python_function", {}).get("config", {}):
            return model.model_uri
    return None


class MissingRunError(LookupError):
    """A chapter needs a run that is not in the store yet."""


def latest_runs(
    profile: str, models: list[str] | None = None, require: bool = False
) -> pd.DataFrame:
    """The newest finished run of each model trained with the course's own hyperparameters
    for ``profile``, one row per model (indexed by model name), in the order of ``models``
    when given. With ``require``, a model of ``models`` without such a run is an error that
    says how to make one."""
    runs = find_runs(profile, variant="default")
    latest = runs.drop_duplicates("tags.model").set_index("tags.model") if len(runs) else runs
    latest.index.name = "model"
    if models is not None:
        missing = [m for m in models if m not in latest.index]
        if require and missing:
            raise MissingRunError(
                f"No finished {profile!r} run of {', '.join(missing)} in the MLflow store "
                f"({shown_uri()}). Run the chapter that trains it first, or "
                f"`python -m fmnist_lib train {missing[0]} --profile {profile}`."
            )
        latest = latest.reindex([m for m in models if m in latest.index])
    return latest


def load_history(run_id: str) -> pd.DataFrame:
    """The per-epoch metrics of a Keras run, one row per epoch."""
    reader = client()
    columns = {}
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        points = sorted(reader.get_metric_history(run_id, key), key=lambda m: m.step)
        columns[key] = [m.value for m in points]
    return pd.DataFrame(columns)


PREDICTIONS_FILE = "predictions.json"


def log_predictions(predictions: dict[str, np.ndarray], run_id: str | None = None) -> None:
    """Record a run's predicted class ids per split (``{"validation": ..., "test": ...}``), so
    that later chapters compare two models image by image without running them again. In the
    active run, or added to the finished run ``run_id`` without reopening it."""
    import mlflow

    lists = {k: np.asarray(v).tolist() for k, v in predictions.items()}
    if run_id is None:
        mlflow.log_dict(lists, PREDICTIONS_FILE)
    else:
        client().log_dict(run_id, lists, PREDICTIONS_FILE)


def load_predictions(run_id: str) -> dict[str, np.ndarray]:
    """The predictions `log_predictions` recorded in a run; `MissingRunError` if it has none."""
    import json

    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as folder:
        try:
            path = download(f"runs:/{run_id}/{PREDICTIONS_FILE}", folder)
        except (MlflowException, OSError) as err:
            raise MissingRunError(f"Run {run_id} recorded no predictions.") from err
        loaded = json.loads(Path(path).read_text())
    return {k: np.asarray(v, dtype=np.int64) for k, v in loaded.items()}


SCORES_FILE = "scores.npz"


def log_scores(scores: dict[str, np.ndarray], run_id: str | None = None) -> None:
    """Record a run's class scores per split (``{"validation": (n, 10), "test": (n, 10)}``:
    probabilities, or an SVM's vote shares), so that a later chapter can vote with the model
    without running it again: reloaded, an SVM predicts with libsvm on one core, for minutes.
    In the active run, or added to the finished run ``run_id`` without reopening it."""
    import mlflow

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / SCORES_FILE
        arrays = {k: np.asarray(v, dtype=np.float32) for k, v in scores.items()}
        np.savez_compressed(path, **arrays)
        if run_id is None:
            mlflow.log_artifact(str(path))
        else:
            client().log_artifact(run_id, str(path))


def load_scores(run_id: str) -> dict[str, np.ndarray]:
    """The class scores `log_scores` recorded in a run; `MissingRunError` if it has none."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as folder:
        try:
            path = download(f"runs:/{run_id}/{SCORES_FILE}", folder)
        except (MlflowException, OSError) as err:
            raise MissingRunError(f"Run {run_id} recorded no class scores.") from err
        with np.load(path) as loaded:  # plain arrays: no pickle
            return {k: loaded[k].astype(np.float64) for k in loaded.files}


SUMMARY_COLUMNS = {
    "metrics.validation_accuracy": "validation accuracy",
    "metrics.test_accuracy": "test accuracy",
    "metrics.test_accuracy_ci_low": "test 95% CI low",
    "metrics.test_accuracy_ci_high": "test 95% CI high",
    "metrics.test_macro_f1": "macro-F1",
    "metrics.fit_time_s": "fit time (s)",
    "metrics.predict_ms_per_image": "predict (ms/image)",
}


# How the chapters print a summary table: table.style.format(SUMMARY_FORMAT).
SUMMARY_FORMAT = {
    "validation accuracy": "{:.4f}",
    "test accuracy": "{:.4f}",
    "test 95% CI low": "{:.4f}",
    "test 95% CI high": "{:.4f}",
    "macro-F1": "{:.4f}",
    "fit time (s)": "{:.1f}",
    "predict (ms/image)": "{:.3f}",
}


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Scores and times of runs (as from `latest_runs`), one row per model."""
    return runs[list(SUMMARY_COLUMNS)].rename(columns=SUMMARY_COLUMNS)


COMPARISON_COLUMNS = {
    **SUMMARY_COLUMNS,
    "metrics.n_parameters": "parameters",
    "metrics.model_size_mb": "size (MB)",
}
COMPARISON_FORMAT = {**SUMMARY_FORMAT, "parameters": "{:,.0f}", "size (MB)": "{:.1f}"}


def comparison_table(runs: pd.DataFrame) -> pd.DataFrame:
    """`summary_table` plus what each model costs to keep: learned numbers and file size."""
    return runs.reindex(columns=list(COMPARISON_COLUMNS)).rename(columns=COMPARISON_COLUMNS)


def per_class_table(runs: pd.DataFrame, class_names: tuple[str, ...]) -> pd.DataFrame:
    """Test accuracy per class (rows) for each run (columns, by model)."""
    from .evaluation import metric_slug

    columns = [f"metrics.test_class_accuracy_{metric_slug(name)}" for name in class_names]
    table = runs[columns].T
    table.index = pd.Index(class_names, name="class")
    return table


def log_table(name: str, profile: str, table: pd.DataFrame) -> str:
    """Record a chapter's results table as a run of its own (tagged ``model=name``), so that a
    later chapter reads the figures from MLflow instead of retyping them. Returns the run id."""
    import mlflow

    use_experiment()
    tags = {"model": name, "profile": profile, "process": process_tag()}
    with mlflow.start_run(run_name=name, tags=tags) as run:
        mlflow.log_table(table.reset_index(), "table.json")
    return run.info.run_id


def load_table(name: str, profile: str) -> pd.DataFrame:
    """The newest table recorded by `log_table` under ``name`` for ``profile``."""
    runs = find_runs(profile, name)
    if runs.empty:
        raise MissingRunError(
            f"No {name!r} table for the {profile!r} profile in {shown_uri()}: "
            "run the chapter that records it first."
        )
    # Not MlflowClient.load_table: it searches runs on MLflow's process-wide store.
    with tempfile.TemporaryDirectory() as folder:
        path = download(f"runs:/{runs['run_id'].iloc[0]}/table.json", folder)
        table = pd.read_json(path, orient="split")  # as mlflow.log_table wrote it
    return table.set_index(table.columns[0])
