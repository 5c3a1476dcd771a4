"""Who is calling a team's tracking server, and where that member's runs go.

On a tracking server with accounts (`mlflow server --app-name basic-auth`), each member writes
to an experiment of their own, ``fashion-mnist/<member>``: its creator may edit it and the
others only read it, so no member can change another's runs, and everyone reads everyone's.
"""

from __future__ import annotations

EXPERIMENT_NAME = "fashion-mnist"


def member(tracking_uri: str) -> str | None:
    """The account this machine uses on the tracking server at ``tracking_uri`` (MLflow's own
    ``MLFLOW_TRACKING_USERNAME``, or ``~/.mlflow/credentials``); None for a local store."""
    from mlflow.utils.credentials import read_mlflow_creds

    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return read_mlflow_creds().username or None


def experiment_name(tracking_uri: str) -> str:
    """Where this machine's runs go: ``fashion-mnist``, or ``fashion-mnist/<member>``."""
    who = member(tracking_uri)
    return f"{EXPERIMENT_NAME}/{who}" if who else EXPERIMENT_NAME


def is_course_experiment(name: str) -> bool:
    return name == EXPERIMENT_NAME or name.startswith(f"{EXPERIMENT_NAME}/")
