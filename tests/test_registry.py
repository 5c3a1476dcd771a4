"""The registry in a real store: each approach's best run, and a champion that only improves."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import numpy as np
import pytest
from sklearn.dummy import DummyClassifier

from fmnist_lib import artifact, registry, tracking
from fmnist_lib.config import Profile
from fmnist_lib.data import load_fashion_mnist
from fmnist_lib.training import train

# Same 200 test images (a stratified sample with the course's seed), more training images.
TINY = Profile(name="tiny", train_size=600, test_size=200, epochs=1)
SMALL = Profile(name="small", train_size=3000, test_size=200, epochs=1)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def _versions(name: str) -> list[int]:
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    return sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "fmnist_lib", *args], capture_output=True, text=True, env=os.environ
    )


@pytest.mark.slow
def test_an_empty_store_says_how_to_make_a_champion(store):
    assert registry.registered_models() == []
    assert registry.register_best().empty
    with pytest.raises(registry.NoModelError, match="python -m fmnist_lib train cnn"):
        registry.champion()
    result = _cli("champion")
    assert result.returncode == 1 and "python -m fmnist_lib register" in result.stderr
    assert "Traceback" not in result.stderr
    result = _cli("register")
    assert result.returncode == 1 and "train a model first" in result.stderr


@pytest.mark.slow
def test_each_approach_is_registered_and_the_champion_only_improves(store):
    rf_tiny = train("rf", profile=TINY)
    dense = train("dense", profile=TINY)
    train("rf", profile=TINY, n_estimators=20)  # custom settings: never registered
    table = registry.register_best().set_index("model")
    assert set(table.index) == {"rf", "dense"}
    assert (table["action"] == "registered").all()
    assert _versions("fashion-mnist-rf") == [1] and _versions("fashion-mnist-dense") == [1]
    leader = max((rf_tiny, dense), key=lambda r: r.validation_accuracy)
    champion = registry.champion()
    assert champion["run_id"] == leader.run_id and champion["version"] == "1"
    assert table.loc[leader.name, "champion"]

    # Nothing better: registering again changes nothing.
    table = registry.register_best()
    assert (table["action"] == "kept").all()
    assert _versions("fashion-mnist") == [1]

    # A better forest (five times the training images, the same validation images) is promoted.
    rf_small = train("rf", profile=SMALL)
    assert rf_small.validation_accuracy > max(
        rf_tiny.validation_accuracy, dense.validation_accuracy
    )
    table = registry.register_best().set_index("model")
    assert table.loc["rf", "action"] == "registered" and table.loc["rf", "version"] == 2
    assert registry.champion()["run_id"] == rf_small.run_id
    assert _versions("fashion-mnist") == [1, 2]

    # A worse forest trained later does not replace it.
    train("rf", profile=TINY)
    registry.register_best()
    assert _versions("fashion-mnist-rf") == [1, 2]
    assert registry.champion()["run_id"] == rf_small.run_id

    # The champion serves what the run recorded, and the command line says who it is.
    data = load_fashion_mnist().for_profile(SMALL)
    out = artifact.load(registry.CHAMPION_URI).classify(data.x_test)
    accuracy = (out["class_id"].to_numpy() == data.y_test).mean()
    assert accuracy == pytest.approx(rf_small.accuracy)
    result = _cli("champion")
    assert result.returncode == 0 and "version 2: rf (small profile)" in result.stdout

    # What the app offers: the champion first, then each approach's newest version, best first.
    listed = registry.registered_models()
    assert [(m.name, m.version, m.champion) for m in listed] == [
        ("fashion-mnist", 2, True),
        ("fashion-mnist-rf", 2, False),
        ("fashion-mnist-dense", 1, False),
    ]
    assert listed[0].uri == "models:/fashion-mnist/2" and listed[0].short == "rf (champion)"
    assert listed[0].accuracy == pytest.approx(rf_small.accuracy, abs=1e-6)
    assert listed[2].short == "dense v1" and "test accuracy" in listed[2].label


def test_a_full_profile_model_outranks_any_quick_one():
    full = registry.Candidate("cnn", "a", "models:/m-a", "full", 0.80, 0.80)
    quick = registry.Candidate("cnn", "b", "models:/m-b", "quick", 0.95, 0.95)
    assert full.rank > quick.rank


def predictions_scoring(validation: float, test: float = 0.5) -> dict[str, np.ndarray]:
    """Recorded predictions of TINY's validation and test images that score ``validation`` and
    ``test``: the true labels, the first ones shifted to a wrong class."""
    data = load_fashion_mnist().for_profile(TINY)
    found = {}
    for split, labels, accuracy in (
        ("validation", data.y_val, validation),
        ("test", data.y_test, test),
    ):
        wrong = round(len(labels) * (1 - accuracy))
        found[split] = np.where(np.arange(len(labels)) < wrong, (labels + 1) % 10, labels)
    return found


@pytest.mark.slow
def test_runs_that_logged_no_serving_artifact_are_never_registered(store):
    served = train("rf", profile=TINY)
    # A run as the course made them before the serving artifact: the bare model, a high score.
    tracking.use_experiment()
    with mlflow.start_run(tags={"model": "rf", "profile": "tiny", "variant": "default"}):
        mlflow.log_metrics({"validation_accuracy": 0.99, "test_accuracy": 0.99})
        mlflow.log_param("validation_size", 6000)
        tracking.log_predictions(predictions_scoring(0.99))
        bare = DummyClassifier().fit(np.zeros((2, 784)), [0, 1])
        mlflow.sklearn.log_model(bare, name="model", serialization_format="pickle")
    registry.register_best()
    assert registry.champion()["run_id"] == served.run_id


@pytest.mark.slow
def test_the_champion_is_chosen_on_validation_not_on_test(store):
    forest = train("rf", profile=TINY)
    dense = train("dense", profile=TINY)
    # Make the two rankings disagree: the forest better on validation, the network on test. The
    # validation score comes from the recorded predictions, the test score from the metric.
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    for run, validation, test in ((forest, 0.90, 0.70), (dense, 0.80, 0.95)):
        tracking.log_predictions(predictions_scoring(validation), run_id=run.run_id)
        client.log_metric(run.run_id, "test_accuracy", test)
    table = registry.register_best().set_index("model")
    champion = registry.champion()
    assert champion["run_id"] == forest.run_id and bool(table.loc["rf", "champion"])
    assert champion["validation_accuracy"] == "0.900000" and champion["test_accuracy"] == "0.700000"
    # A newer forest better on test but worse on validation does not replace it.
    newer = train("rf", profile=TINY)
    tracking.log_predictions(predictions_scoring(0.85), run_id=newer.run_id)
    client.log_metric(newer.run_id, "test_accuracy", 0.99)
    registry.register_best()
    assert registry.champion()["run_id"] == forest.run_id


@pytest.mark.slow
def test_a_run_that_reports_a_forged_validation_score_is_ranked_on_its_predictions(store):
    forest = train("rf", profile=TINY)
    registry.register_best()
    forged = train("rf", profile=TINY, n_estimators=3)  # custom: then made to look default
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    client.set_tag(forged.run_id, "variant", "default")
    client.log_metric(forged.run_id, "validation_accuracy", 0.999)
    assert forged.validation.accuracy < forest.validation.accuracy
    table = registry.register_best().set_index("model")
    assert registry.champion()["run_id"] == forest.run_id
    assert table.loc["rf", "validation accuracy"] == pytest.approx(forest.validation.accuracy)
    # (Forged predictions too: on a tracking server the model itself is scored before it is
    # promoted; tests/test_team.py.)


@pytest.mark.slow
def test_a_model_from_outside_the_catalogue_is_registered_and_promoted_only_if_better(store):
    """Chapter 10's capstone: a chapter's own model under its own name. Registered whatever its
    score; the champion only when it ranks above on validation."""
    from dataclasses import replace

    from sklearn.dummy import DummyClassifier
    from sklearn.ensemble import RandomForestClassifier

    from fmnist_lib.catalogue import description
    from fmnist_lib.training import training_run

    forest = train("rf", profile=TINY)
    registry.register_best()
    data = load_fashion_mnist().for_profile(TINY)
    with training_run("capstone", data, TINY) as run:
        run_model = DummyClassifier(strategy="most_frequent").fit(*data.sklearn("train"))
        weak = run.record(run_model)
    outcome = registry.register_result(weak)
    assert outcome == {
        "registered model": "fashion-mnist-capstone",
        "version": 1,
        "champion": False,
    }
    assert registry.champion()["run_id"] == forest.run_id
    # A score the caller claims does not make it champion: the registry scores the predictions
    # the run recorded.
    claimed = replace(weak, validation=replace(weak.validation, accuracy=1.0))
    assert not registry.register_result(claimed)["champion"]
    assert registry.champion()["run_id"] == forest.run_id
    # A better model of the chapter's own, trained on five times the images, is promoted.
    more = load_fashion_mnist().subset(train_size=3000, test_size=200)
    with training_run("capstone", more, TINY) as run:
        forest_3000 = RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=0)
        strong = run.record(forest_3000.fit(*more.sklearn("train")))
    assert strong.validation.accuracy > forest.validation.accuracy
    assert registry.register_result(strong)["champion"]
    champion = registry.champion()
    assert champion["model"] == "capstone" and champion["run_id"] == strong.run_id
    assert float(champion["validation_accuracy"]) == pytest.approx(strong.validation.accuracy)
    assert description(champion["model"]) == "capstone"
    assert description("rf") != "rf"
    listed = {(m.name, m.champion) for m in registry.registered_models()}
    assert ("fashion-mnist", True) in listed and ("fashion-mnist-capstone", False) in listed
