"""The teacher's side of a team's tracking server with accounts: prepare the registry, add a
member.

The tracking server runs MLflow's own authentication (`mlflow server --app-name basic-auth`,
README "A team"), whose admin is the teacher and whose default permission is READ. Before any
member has an account, the teacher's account creates the registered models, so it owns them:
``fashion-mnist`` (the champion) stays the teacher's alone, and each member may add versions
to ``fashion-mnist-<model>``. A member's password is made here and written to a file for the
member's ``~/.mlflow/credentials``, never shown.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from . import accounts, promotion, registry, tracking
from .catalogue import CHAPTER_MODELS, MODELS


class TeamError(RuntimeError):
    """A member could not be added; the message says why."""


def _auth_client():
    from mlflow.server import get_app_client

    return get_app_client("basic-auth", tracking_uri=tracking.tracking_uri())


def approach_models() -> list[str]:
    """The registered models members may add versions to, one per model of the course."""
    return [registry.registered_name(name) for name in {**MODELS, **CHAPTER_MODELS}]


def prepare_registry() -> None:
    """Create the champion's registered model and each approach's, as the calling account (the
    teacher's), where they do not exist yet."""
    from mlflow.exceptions import MlflowException

    client = tracking.client()
    for name in [registry.CHAMPION_MODEL, *approach_models()]:
        try:
            client.get_registered_model(name)
        except MlflowException as err:
            if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            client.create_registered_model(name)
    # Where promotions copy the champion's files: the teacher's, before anyone else can make it.
    if client.get_experiment_by_name(promotion.CHAMPIONS_EXPERIMENT) is None:
        client.create_experiment(promotion.CHAMPIONS_EXPERIMENT)


def credentials_text(username: str, password: str) -> str:
    """MLflow's credentials file (``~/.mlflow/credentials``) for one account."""
    return (
        f"[mlflow]\nmlflow_tracking_username = {username}\nmlflow_tracking_password = {password}\n"
    )


def add_member(username: str, credentials: Path) -> Path:
    """Give ``username`` an account with a new random password, written to ``credentials``
    (created, readable by its owner only; never overwritten), and let it add versions to each
    approach's registered model. Run with the teacher's (the admin's) credentials."""
    from mlflow.exceptions import MlflowException

    if not username.replace("-", "").replace("_", "").isalnum():
        raise TeamError(f"{username!r}: use letters, digits, '-' and '_' for a member's name")
    password = secrets.token_urlsafe(18)
    try:
        handle = os.open(credentials, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise TeamError(f"{credentials} exists: choose another file or remove it") from None
    try:
        with os.fdopen(handle, "w") as out:
            out.write(credentials_text(username, password))
        prepare_registry()
        client = tracking.client()
        experiment = f"{accounts.EXPERIMENT_NAME}/{username}"
        if client.get_experiment_by_name(experiment) is not None:
            raise TeamError(
                f"the experiment {experiment} exists already (someone made it before the "
                "account): delete it (`mlflow experiments delete`) or choose another name"
            )
        auth = _auth_client()
        auth.create_user(username, password)
        # The member's experiment is made here, by the teacher, so nobody can take it first.
        experiment_id = client.create_experiment(experiment)
        auth.grant_user_permission(username, "experiment", experiment_id, "EDIT")
        for name in approach_models():
            auth.grant_user_permission(username, "registered_model", name, "EDIT")
    except MlflowException as err:
        credentials.unlink(missing_ok=True)
        raise TeamError(
            f"the tracking server refused: {err.message} (run this with the teacher's "
            "account: MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or "
            "~/.mlflow/credentials)"
        ) from None
    except BaseException:
        credentials.unlink(missing_ok=True)
        raise
    return credentials
