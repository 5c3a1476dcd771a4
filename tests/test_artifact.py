"""Artifacts checked before they run: loading an MLflow model executes the code file it carries,
so `artifact.verify` refuses any folder that is not exactly what `log_model` writes, and the
library, the command line's server and the app never run a forged one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from sklearn.linear_model import LogisticRegression

from fmnist_lib import artifact, registry, tracking
from fmnist_lib.artifact import ArtifactError
from fmnist_lib.data import sklearn_input

REFUSED = "is not a model this course logged"
# A forged code file that leaves a mark when it runs: a refused artifact must leave none.
FORGED_CODE = "\nimport pathlib; pathlib.Path({mark!r}).write_text('ran')\n"


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A small logistic regression logged by the library in a store of its own: its URI, a
    downloaded copy of its folder, and the store's folder."""
    store = tmp_path_factory.mktemp("store")
    images = np.random.default_rng(0).integers(0, 256, size=(40, 28, 28), dtype=np.uint8)
    model = LogisticRegression(max_iter=50).fit(sklearn_input(images), np.arange(40) % 10)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
        tracking.use_experiment()
        with mlflow.start_run() as run:
            info = artifact.log_model(model, "sklearn", images[:2])
        # Registered as the champion, as the app and ./course api find it.
        client = tracking.client()
        client.create_registered_model(registry.CHAMPION_MODEL)
        version = client.create_model_version(
            registry.CHAMPION_MODEL, info.model_uri, run.info.run_id, model_id=info.model_id
        )
        client.set_registered_model_alias(
            registry.CHAMPION_MODEL, registry.CHAMPION_ALIAS, version.version
        )
        folder = Path(tracking.download(info.model_uri, str(store / "download")))
        yield info.model_uri, folder, store, patch


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "model"))


def _set_mlmodel(folder: Path, change) -> None:
    spec = yaml.safe_load((folder / "MLmodel").read_text())
    change(spec["flavors"]["python_function"])
    (folder / "MLmodel").write_text(yaml.safe_dump(spec))


def test_an_artifact_the_library_logged_passes_and_loads(logged):
    uri, folder, _, _ = logged
    artifact.verify(folder)
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    assert len(artifact.load(uri).classify(images)) == 2


def test_every_kind_of_model_uri_loads_from_the_course_store_whatever_mlflow_points_at(
    logged, tmp_path, monkeypatch
):
    """MLflow resolves ``models:/`` and ``runs:/`` URIs on its process-wide store, which a write
    elsewhere moves: the library finds the files through its own client."""
    import pandas as pd

    uri, _, store, _ = logged
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    tracking.log_table("table", "tiny", pd.DataFrame({"a": [1]}))  # MLflow now points there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    names = (uri, registry.CHAMPION_URI, f"models:/{registry.CHAMPION_MODEL}/1")
    for name in names:
        classifier = artifact.load(name)
        assert len(classifier.classify(np.zeros((1, 28, 28), dtype=np.uint8))) == 1


FORGERIES = {
    "a changed code file": lambda f, mark: (f / "_serving_model.py").write_text(
        (f / "_serving_model.py").read_text() + FORGED_CODE.format(mark=mark)
    ),
    "an added pickle": lambda f, mark: (f / "python_model.pkl").write_bytes(b"\x80\x04."),
    "a pickled Python model": lambda f, mark: _set_mlmodel(
        f, lambda flavor: flavor.update(loader_module="mlflow.pyfunc.model")
    ),
    "another code file": lambda f, mark: (
        (f / "other.py").write_text(FORGED_CODE.format(mark=mark)),
        _set_mlmodel(f, lambda flavor: flavor.update(model_code_path="/x/other.py")),
    ),
    "code paths": lambda f, mark: _set_mlmodel(f, lambda flavor: flavor.update(code="code")),
    "no MLmodel": lambda f, mark: (f / "MLmodel").unlink(),
    "an MLmodel that is not a table": lambda f, mark: (f / "MLmodel").write_text("- a\n- b\n"),
    "no model file": lambda f, mark: (f / "artifacts" / "model.skops").unlink(),
    # MLflow loads from the folder ``data`` names: a genuine-looking folder, another code file.
    "a data folder": lambda f, mark: _set_mlmodel(f, lambda flavor: flavor.update(data="/x")),
    "a model file outside the folder": lambda f, mark: _set_mlmodel(
        f, lambda flavor: flavor["artifacts"]["model"].update(path="/x/model.skops")
    ),
    "a symbolic link": lambda f, mark: (
        (f / "artifacts" / "model.skops").rename(f.parent / "elsewhere.skops"),
        (f / "artifacts" / "model.skops").symlink_to(f.parent / "elsewhere.skops"),
    ),
    "a requirement that is not a pin": lambda f, mark: (f / "requirements.txt").write_text(
        (f / "requirements.txt").read_text() + "-r /dev/zero\n"
    ),
}


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_forged_folder_is_refused_with_a_sentence(logged, tmp_path, forgery):
    folder = _copy(logged[1], tmp_path)
    FORGERIES[forgery](folder, str(tmp_path / "ran"))
    with pytest.raises(ArtifactError, match=REFUSED):
        artifact.verify(folder, "models:/forged")


@contextmanager
def _forged_in_the_store(store: Path, mark: Path):
    """The code file the store serves, changed in place as someone with write access could."""
    stored = next((store / "mlartifacts").rglob("_serving_model.py"))
    original = stored.read_text()
    stored.write_text(original + FORGED_CODE.format(mark=str(mark)))
    try:
        yield
    finally:
        stored.write_text(original)
    assert not mark.exists(), "the forged code ran"


def test_loading_a_forged_champion_runs_none_of_its_code(logged, tmp_path):
    _, _, store, patch = logged
    patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    with _forged_in_the_store(store, tmp_path / "ran"):
        with pytest.raises(ArtifactError, match=REFUSED):
            artifact.load(registry.CHAMPION_URI)


@pytest.mark.slow
def test_the_app_says_why_it_will_not_serve_a_forged_champion(logged, tmp_path, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from fmnist_lib.config import PROJECT_ROOT

    store = logged[2]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    monkeypatch.setenv("FMNIST_GENERATED_DIR", str(tmp_path / "generated"))
    st.cache_data.clear()
    st.cache_resource.clear()
    with _forged_in_the_store(store, tmp_path / "ran"):
        at = AppTest.from_file(str(PROJECT_ROOT / "streamlit_app.py"), default_timeout=120).run()
        at.button[0].click().run()  # "One of each class": the model is needed now
    assert not at.exception
    assert any(REFUSED in error.value for error in at.error), [e.value for e in at.error]


def test_the_command_lines_server_refuses_a_forged_folder_without_a_traceback(logged, tmp_path):
    folder = _copy(logged[1], tmp_path)
    mark = tmp_path / "ran"
    FORGERIES["a changed code file"](folder, str(mark))
    out = subprocess.run(
        [sys.executable, "-m", "fmnist_lib", "serve", str(folder), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert REFUSED in out.stderr and "Traceback" not in out.stderr
    assert not mark.exists()
