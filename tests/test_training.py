"""Every fit is one complete MLflow run in a real (temporary) store; failures are marked."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest

from fmnist_lib import artifact, models, tracking
from fmnist_lib.acquisition import IDX_FILES
from fmnist_lib.catalogue import MODELS, learning_rate_schedule
from fmnist_lib.config import PROJECT_ROOT, Profile, profile_named
from fmnist_lib.data import load_fashion_mnist
from fmnist_lib.recorded import predictions, recorded_scores, reuse_or_train
from fmnist_lib.training import train, training_run

TINY = Profile(name="tiny", train_size=600, test_size=200, epochs=2)
CLASS_METRICS = 10


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return tmp_path


def _artifacts(run_id: str) -> set[str]:
    client = mlflow.MlflowClient(tracking.tracking_uri())
    return {a.path for a in client.list_artifacts(run_id)}


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("svm", {"n_components": 20}),
        ("svm-hog", {"n_pixel_components": 10}),
        ("rf", {"n_estimators": 20}),
        ("dense", {}),
        ("cnn", {}),
        ("cnn-bn", {"filters": (8, 16, 32), "batch_size": 32, "epochs": 4}),  # BN needs steps
    ],
)
@pytest.mark.slow
def test_a_quick_fit_logs_a_complete_run(store, name, overrides):
    result = train(name, profile=TINY, **overrides)
    run = mlflow.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    keras = MODELS[name].family == "keras"

    # Hyperparameters (all of them, overrides included), sizes, profile, seed, data, versions.
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    for key, value in {**MODELS[name].default_params(TINY), **overrides}.items():
        assert params[key] == str(value)
    assert params["train_size"] == "600" and params["test_size"] == "200"
    assert tags["profile"] == "tiny" and tags["model"] == name and tags["seed"] == "42"
    for spec in IDX_FILES:
        assert tags[f"data.sha256.{spec.key}"] == spec.sha256
    assert {"version.numpy", "version.mlflow", "version.scikit-learn"} <= set(tags)

    # Final scores, per class, and times.
    assert metrics["test_accuracy"] == pytest.approx(result.accuracy)
    assert 0.1 < metrics["test_accuracy"] <= 1 and 0 < metrics["test_macro_f1"] <= 1
    per_class = [k for k in metrics if k.startswith("test_class_accuracy_")]
    assert len(per_class) == CLASS_METRICS and "test_class_accuracy_t_shirt_top" in per_class
    assert metrics["fit_time_s"] > 0 and metrics["predict_time_s"] > 0
    assert ("test_log_loss" in metrics) == (name != "svm" and name != "svm-hog")

    # Per-epoch curves for networks.
    if keras:
        history = tracking.load_history(result.run_id)
        assert len(history) == int(params["epochs"])
        # Trained in bfloat16 or not, the logged network is served through ONNX.
        assert artifact.load(result.model_uri).backend == "onnxruntime"
        assert list(history.columns) == ["loss", "accuracy", "val_loss", "val_accuracy"]
        assert history["loss"].tolist() == pytest.approx(result.history["loss"].tolist())

    # Figures and report.
    expected = {"confusion_matrix.png", "classification_report.txt", "misclassified.png"}
    if keras:
        expected.add("learning_curves.png")
    assert expected <= _artifacts(result.run_id)

    # Size and learned numbers, for the comparison chapter.
    assert metrics["n_parameters"] > 1000 and metrics["model_size_mb"] > 0

    # The model is the serving artifact, with signature and input example (two PNG images);
    # it loads back and predicts what the trained model predicts.
    info = mlflow.models.get_model_info(result.model_uri)
    assert info.signature is not None and info.saved_input_example_info is not None
    assert info.run_id == result.run_id
    # The scores are the logged model's too (logged after it, linked to it).
    linked = mlflow.get_logged_model(result.model_uri.removeprefix("models:/")).metrics or []
    assert {"test_accuracy", "validation_accuracy"} <= {m.key for m in linked}
    loaded = mlflow.pyfunc.load_model(result.model_uri)
    example = mlflow.models.Model.load(result.model_uri).load_input_example()
    prediction = loaded.predict(example)
    assert list(prediction.columns) == [
        "class_id",
        "class_name",
        "probabilities",
        "confidence",
        "sure",
        "doubt",
    ]
    assert not prediction["doubt"].any()  # 28x28 arrays are not masked: nothing to doubt
    x = load_fashion_mnist().for_profile(TINY).keras("test")[0][:2]
    expected = result.model.predict(x if keras else x.reshape(2, -1))
    if expected.ndim == 2:
        expected = expected.argmax(axis=1)
    assert prediction["class_id"].tolist() == expected.tolist()


def test_artifacts_live_beside_the_sqlite_store(store):
    tracking.use_experiment()
    location = mlflow.get_experiment_by_name(tracking.EXPERIMENT_NAME).artifact_location
    assert location == (store / "mlartifacts").as_uri()


def test_reads_follow_the_store_of_the_moment_and_move_nothing(tmp_path, monkeypatch):
    """A write points MLflow's fluent API at its store (MLflow's runs are process-wide); a read
    goes through `tracking.client`, so it reads the store of the moment and moves nothing."""
    from fmnist_lib import registry

    first, second = (f"sqlite:///{tmp_path / name}.db" for name in ("first", "second"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", first)
    tracking.log_table("scores", "tiny", pd.DataFrame({"model": ["a"], "accuracy": [0.5]}))
    assert mlflow.get_tracking_uri() == first
    monkeypatch.setenv("MLFLOW_TRACKING_URI", second)
    assert tracking.find_runs().empty
    with pytest.raises(tracking.MissingRunError):
        tracking.load_table("scores", "tiny")
    assert registry.registered_models() == []
    assert mlflow.get_tracking_uri() == first  # no read moved it
    tracking.log_table("other", "tiny", pd.DataFrame({"model": ["b"], "accuracy": [0.7]}))
    assert mlflow.get_tracking_uri() == second  # a write did
    monkeypatch.setenv("MLFLOW_TRACKING_URI", first)
    assert tracking.load_table("scores", "tiny")["accuracy"].tolist() == [0.5]
    assert tracking.find_runs(model="scores")["tags.model"].tolist() == ["scores"]


def test_default_store_is_the_project_database(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri() == f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


@pytest.mark.slow
def test_a_failed_fit_is_marked_failed(store):
    with pytest.raises(ValueError):
        train("svm", profile=TINY, n_components=5000)  # more components than pixels
    runs = mlflow.search_runs(experiment_names=[tracking.EXPERIMENT_NAME])
    assert runs["status"].tolist() == ["FAILED"]


def test_unknown_hyperparameter_is_refused_before_any_run(store):
    with pytest.raises(ValueError, match="has no hyperparameter"):
        train("rf", profile=TINY, n_trees=10)
    with pytest.raises(ValueError, match="Unknown model"):
        train("knn", profile=TINY)
    assert tracking.find_runs().empty


@pytest.mark.slow
def test_latest_runs_are_the_newest_default_run_of_each_model(store):
    first = train("dense", profile=TINY)
    second = train("dense", profile=TINY)
    custom = train("dense", profile=TINY, hidden_units=(32, 16))
    assert mlflow.get_run(custom.run_id).data.tags["variant"] == "custom"
    latest = tracking.latest_runs("tiny", models=["cnn", "dense"])
    assert latest.index.tolist() == ["dense"]
    assert latest.loc["dense", "run_id"] == second.run_id != first.run_id
    assert tracking.latest_runs("full").empty


def _cli(*args, store):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"}
    return subprocess.run(
        [sys.executable, "-m", "fmnist_lib", "train", *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=store,
    )


@pytest.mark.slow
def test_cli_trains_and_tracks(store):
    result = _cli("rf", "--profile", "quick", "--set", "n_estimators=10", store=store)
    assert result.returncode == 0, result.stderr
    assert "rf: validation accuracy 0." in result.stdout and "test accuracy 0." in result.stdout
    runs = tracking.find_runs()
    assert runs["tags.profile"].tolist() == ["quick"]
    assert runs["params.n_estimators"].tolist() == ["10"]


@pytest.mark.parametrize(
    "text, value",
    [
        ("5", 5),
        ("-3", -3),
        ("1_000", 1000),
        ("0.5", 0.5),
        (".5", 0.5),
        ("1e-3", 0.001),
        ("32,16", (32, 16)),
        ("32, 16", (32, 16)),
        ("32,", (32,)),
        ("[32, 64]", (32, 64)),  # a list is a tuple, like the defaults
        ("(32, 64)", (32, 64)),
        ("0.1,0.2", (0.1, 0.2)),
        ("relu,3", ("relu", 3)),
        ("True", True),
        ("False", False),
        ("None", None),
        ("relu", "relu"),
        ("'relu'", "relu"),
        ("warmup-cosine", "warmup-cosine"),
        ("mixed_bfloat16", "mixed_bfloat16"),
        ("", ""),
    ],
)
def test_set_values_are_the_literals_they_spell(text, value):
    from fmnist_lib.__main__ import parse_value

    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)
    if isinstance(value, tuple):
        assert [type(v) for v in parsed] == [type(v) for v in value]


def test_each_command_has_its_function_and_its_defaults():
    from fmnist_lib import __main__ as cli
    from fmnist_lib.registry import CHAMPION_URI

    parser = cli.build_parser()
    train_args = parser.parse_args(["train", "rf", "--set", "a=1", "--set", "b=2"])
    assert train_args.func is cli._train and train_args.set == ["a=1", "b=2"]
    assert parser.parse_args(["register"]).func is cli._register
    assert parser.parse_args(["champion"]).func is cli._champion
    tune = parser.parse_args(["tune", "s", "--until", "8"])
    assert tune.func is cli._tune and (tune.trials, tune.until, tune.create) == (1, 8, False)
    serve = parser.parse_args(["serve"])
    assert serve.func is cli._serve and serve.model == CHAMPION_URI
    assert (serve.host, serve.port, serve.workers) == ("127.0.0.1", 5001, 1)


def test_cli_refuses_bad_input_before_training(store, capsys):
    from fmnist_lib.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", "rf", "--set", "trees"])
    assert exit_.value.code == 2
    assert "python -m fmnist_lib: error: --set expects KEY=VALUE, got 'trees'" in (
        capsys.readouterr().err
    )
    assert main(["train", "rf", "--profile", "quick", "--set", "trees=3"]) == 1
    assert capsys.readouterr().err.startswith("error: rf has no hyperparameter ['trees']")
    assert main(["train", "rf", "--profile", "fast"]) == 1
    assert "Unknown profile 'fast'" in capsys.readouterr().err
    assert main(["serve", "--workers", "0"]) == 2
    assert capsys.readouterr().err == "error: --workers must be 1 or more\n"


@pytest.mark.slow
def test_cli_reports_bad_input_without_traceback(store):
    result = _cli("rf", "--profile", "quick", "--set", "trees=3", store=store)
    assert result.returncode == 1 and "has no hyperparameter" in result.stderr
    assert "Traceback" not in result.stderr
    result = _cli("rf", "--profile", "fast", store=store)
    assert result.returncode == 1 and "Unknown profile" in result.stderr


def test_a_chapter_asking_for_a_missing_run_is_told_how_to_make_it(store):
    train("rf", profile=TINY, n_estimators=5)  # a custom run does not count
    with pytest.raises(tracking.MissingRunError, match="python -m fmnist_lib train rf"):
        tracking.latest_runs("tiny", ["rf"], require=True)


@pytest.mark.slow
def test_unknown_learning_rate_schedule_fails_the_run(store):
    with pytest.raises(ValueError, match="schedule must be"):
        train("dense", profile=TINY, schedule="step")
    assert tracking.find_runs().empty  # finished runs only: the failed one is not among them
    statuses = mlflow.search_runs(experiment_names=[tracking.EXPERIMENT_NAME])["status"]
    assert statuses.tolist() == ["FAILED"]


@pytest.mark.slow
def test_cli_help_lists_every_model_with_its_description(store):
    result = _cli("--help", store=store)
    assert result.returncode == 0
    for name, spec in MODELS.items():
        assert f"{name} " in result.stdout and spec.description in result.stdout


@pytest.mark.slow
def test_a_model_already_trained_is_reused_not_retrained(store):
    first = reuse_or_train("dense", profile=TINY)
    again = reuse_or_train("dense", profile=TINY)
    assert again.run_id == first.run_id and again.accuracy == pytest.approx(first.accuracy)
    assert again.fit_time == pytest.approx(first.fit_time) and len(again.history) == 2
    # The reloaded run predicts through its ONNX artifact; the network is read only when asked.
    images = load_fashion_mnist().for_profile(TINY).x_test[:50]
    assert again.classifier.backend == "onnxruntime" and again.classifier._model is None
    np.testing.assert_allclose(
        again.classifier.predict_proba(images), first.classifier.predict_proba(images), atol=1e-5
    )
    assert first.classifier.backend == "tensorflow" and again.model.count_params() > 0
    other = reuse_or_train("dense", profile=TINY, dropout=0.1)
    assert other.run_id != first.run_id
    assert len(tracking.find_runs("tiny", "dense")) == 2


def test_another_seed_trains_another_network_kept_apart_from_the_course_run(store):
    course = reuse_or_train("dense", profile=TINY)
    twin = reuse_or_train("dense", profile=TINY, seed=1)
    assert twin.run_id != course.run_id
    images = load_fashion_mnist().for_profile(TINY).x_test[:50]
    assert not np.allclose(
        twin.classifier.predict_proba(images), course.classifier.predict_proba(images)
    )
    # Reused by seed; a variant, so "the newest run of dense" is still the course's.
    assert reuse_or_train("dense", profile=TINY, seed=1).run_id == twin.run_id
    runs = tracking.find_runs("tiny", "dense").set_index("run_id")
    assert runs.loc[twin.run_id, "tags.seed"] == "1"
    assert runs.loc[twin.run_id, "tags.variant"] == "custom"
    assert tracking.latest_runs("tiny", ["dense"]).loc["dense", "run_id"] == course.run_id


def test_warmup_cosine_rises_then_decays():
    params = {"learning_rate": 2e-3, "schedule": "warmup-cosine", "epochs": 30, "batch_size": 100}
    schedule = learning_rate_schedule(params, 1000)  # 10 steps per epoch, 300 in all
    values = [float(schedule(step)) for step in range(301)]
    assert values[0] == 0 and int(np.argmax(values)) == 15  # a twentieth of the run
    assert values[15] == pytest.approx(2e-3) and values[-1] < 1e-8
    assert all(a <= b for a, b in zip(values[:15], values[1:16], strict=True))
    assert all(a >= b for a, b in zip(values[15:-1], values[16:], strict=True))
    constant = learning_rate_schedule({**params, "schedule": "constant"}, 1000)
    assert constant == 2e-3


def test_chapter_7_settings_compile_adamw_label_smoothing_and_weight_averaging():
    import keras

    from fmnist_lib.catalogue import compile_keras
    from fmnist_lib.losses import SmoothedCrossentropy

    spec = MODELS["cnn-bn"]
    params = spec.default_params(profile_named("full"))
    full = profile_named("full")
    assert params["epochs"] == full.deeper_epochs > full.epochs
    assert spec.default_params(profile_named("quick"))["epochs"] == 2
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    compile_keras(model, params, 1000)  # 120 steps: too few to average
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.AdamW) and not optimizer.use_ema
    assert optimizer.weight_decay == params["weight_decay"]
    assert isinstance(model.loss, SmoothedCrossentropy)
    compile_keras(model, params, 54_000)  # epochs of 211 steps: the average settles
    assert model.optimizer.use_ema and model.optimizer.ema_momentum == params["ema"]
    compile_keras(model, MODELS["cnn-bn"].default_params(profile_named("quick")), 2000)
    assert not model.optimizer.use_ema, "16 steps: too few to average"
    compile_keras(model, MODELS["cnn"].default_params(profile_named("full")), 1000)
    assert type(model.optimizer) is keras.optimizers.Adam and not model.optimizer.use_ema
    assert model.loss == "sparse_categorical_crossentropy"


@pytest.mark.parametrize("name", ["cnn", "cnn-no-dropout", "cnn-aug", "cnn-bn"])
def test_each_cnn_is_the_same_model_in_either_precision(name):
    """Precision is how a CPU fits the network, not what the network is: the catalogue's
    settings, and `is_default`'s answer, are the same on a bfloat16 CPU and on an AVX2 one. The
    probabilities come out in float32 either way, and augmentation computes in float32."""
    from fmnist_lib.catalogue import compile_keras, fit_precision, is_default

    profile = profile_named("quick")
    spec = MODELS[name]
    params = spec.default_params(profile)
    assert params["precision"] == "auto" and "precision" not in spec.build_params
    assert fit_precision(params) == models.fast_precision()
    answers = {}
    for precision in ("float32", "mixed_bfloat16"):
        model = spec.build({**params, "precision": precision})
        assert models.precision_of(model) == precision
        assert model.layers[-1].dtype_policy.name == "float32"
        for layer in model.layers:
            if layer.__class__.__name__.startswith("Random"):
                assert layer.dtype_policy.name == "float32", layer.name
        compile_keras(model, params, 2000)
        answers[precision] = is_default(
            name, model, profile, 2000, params["batch_size"], params["epochs"]
        )
    assert answers == {"float32": True, "mixed_bfloat16": True}
    with pytest.raises(ValueError, match="precision must be"):
        fit_precision({"precision": "float16"})


def test_label_smoothing_on_class_ids_matches_keras_on_one_hot_labels():
    import keras

    from fmnist_lib.losses import SmoothedCrossentropy

    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(10), size=32).astype(np.float32)
    labels = rng.integers(0, 10, 32)
    one_hot = np.eye(10, dtype=np.float32)[labels]
    smoothed = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(one_hot, proba)
    assert float(SmoothedCrossentropy(0.1)(labels, proba)) == pytest.approx(float(smoothed))
    plain = keras.losses.SparseCategoricalCrossentropy()(labels, proba)
    assert float(SmoothedCrossentropy(0.0)(labels, proba)) == pytest.approx(float(plain))
    assert float(smoothed) != pytest.approx(float(plain)), "smoothing changes the loss"


@pytest.mark.slow
def test_a_chapter_table_is_recorded_and_read_back(store):
    table = pd.DataFrame({"test accuracy": [0.9, 0.95], "note": ["a", "b"]}, index=["x", "y"])
    table.index.name = "step"
    tracking.log_table("steps", "tiny", table)
    newer = table.assign(**{"test accuracy": [0.91, 0.96]})
    tracking.log_table("steps", "tiny", newer)
    read = tracking.load_table("steps", "tiny")
    assert read.index.tolist() == ["x", "y"] and read["test accuracy"].tolist() == [0.91, 0.96]
    with pytest.raises(tracking.MissingRunError, match="run the chapter"):
        tracking.load_table("steps", "full")
    assert tracking.latest_runs("tiny").empty  # a table is not a model


def _chapter_dense(units=512, steps_per_epoch=None):
    """The dense network as chapter 3 writes it: layer list, compile with its schedule."""
    import math

    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            layers.Flatten(),
            layers.Dense(units, activation="relu"),
            layers.Dropout(0.4),
            layers.Dense(256, activation="relu"),
            layers.Dropout(0.4),
            layers.Dense(10, activation="softmax"),
        ]
    )
    steps = TINY.epochs * math.ceil(TINY.train_size / 128)
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=steps)
        ),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _fit_in_run(model, data, name="dense", batch_size=128):
    with training_run(name, data, TINY) as run:
        model.fit(
            *data.keras("train"),
            batch_size=batch_size,
            epochs=TINY.epochs,
            validation_data=data.keras("val"),
            verbose=0,
        )
        return run.record(model)


@pytest.mark.slow
def test_a_chapter_fit_is_recorded_and_recognised_as_the_course_model(store):
    data = load_fashion_mnist().for_profile(TINY)
    result = _fit_in_run(_chapter_dense(), data)
    run = mlflow.get_run(result.run_id)
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert run.info.status == "FINISHED"
    assert tags["variant"] == "default" and tags["dataset"] == "course"
    assert tags["family"] == "keras" and tags["profile"] == "tiny"
    # MLflow's autolog read the optimiser and the fit; the catalogue names what was trained.
    # Keras numbers optimisers after the first one of a process: adam, adam_1, ...
    assert params["optimizer_name"].startswith("adam") and params["batch_size"] == "128"
    assert params["hidden_units"] == "(512, 256)" and params["schedule"] == "cosine"
    assert len(tracking.load_history(result.run_id)) == TINY.epochs
    assert metrics["validation_accuracy"] == pytest.approx(result.validation_accuracy)
    low, high = result.evaluation.accuracy_interval
    assert metrics["test_accuracy_ci_low"] == pytest.approx(low) and low < result.accuracy < high
    assert "learning_curves.png" in _artifacts(result.run_id)
    # The command line and chapters 7 and 8 find it: no second training.
    assert reuse_or_train("dense", profile=TINY).run_id == result.run_id
    # Later chapters compare it image by image from what the run recorded.
    recorded = predictions("dense", TINY)
    np.testing.assert_array_equal(recorded["test"], result.evaluation.y_pred)
    np.testing.assert_array_equal(recorded["validation"], result.validation.y_pred)
    assert len(recorded["validation"]) == len(data.y_val)


@pytest.mark.slow
@pytest.mark.parametrize("change", ["layer", "batch size", "data"])
def test_an_edited_chapter_fit_is_a_custom_run(store, change):
    data = load_fashion_mnist().for_profile(TINY)
    model = _chapter_dense(units=64 if change == "layer" else 512)
    if change == "data":
        data = dataclasses.replace(data, x_train=data.x_train[:, ::-1])  # mirrored images
    result = _fit_in_run(model, data, batch_size=64 if change == "batch size" else 128)
    tags = mlflow.get_run(result.run_id).data.tags
    assert tags["variant"] == "custom"
    assert tags["dataset"] == ("modified" if change == "data" else "course")
    assert tracking.latest_runs("tiny").empty  # later chapters never compare against it


@pytest.mark.slow
def test_a_chapter_pipeline_is_default_only_with_the_course_settings(store):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline

    data = load_fashion_mnist().for_profile(TINY)
    variants = {}
    for trees in (100, 30):
        forest = make_pipeline(
            RandomForestClassifier(
                n_estimators=trees, max_features="sqrt", n_jobs=-1, random_state=7
            )
        )
        with training_run("rf", data, TINY) as run:
            forest.fit(*data.sklearn("train"))
            result = run.record(forest)
        run_data = mlflow.get_run(result.run_id).data
        variants[trees] = run_data.tags["variant"]
        assert run_data.params["randomforestclassifier__n_estimators"] == str(trees)
    assert variants == {100: "default", 30: "custom"}


@pytest.mark.slow
def test_a_run_left_without_record_is_failed_not_finished(store):
    data = load_fashion_mnist().for_profile(TINY)
    with pytest.warns(UserWarning, match="without `run.record"):
        with training_run("rf", data, TINY):
            pass
    statuses = mlflow.search_runs(experiment_names=[tracking.EXPERIMENT_NAME])["status"]
    assert statuses.tolist() == ["FAILED"]
    assert tracking.find_runs().empty


@pytest.mark.slow
def test_predictions_of_a_run_that_recorded_none_are_computed_once_and_recorded(store):
    result = train("rf", profile=TINY)
    # A run as the course logged them before predictions were recorded.
    files = (store / "mlartifacts").rglob("predictions.json")
    next(path for path in files if result.run_id in str(path)).unlink()
    with pytest.raises(tracking.MissingRunError):
        tracking.load_predictions(result.run_id)
    before = tracking.client().get_run(result.run_id).info
    found = predictions("rf", TINY)
    np.testing.assert_array_equal(found["test"], result.evaluation.y_pred)
    np.testing.assert_array_equal(tracking.load_predictions(result.run_id)["test"], found["test"])
    assert len(tracking.find_runs("tiny", "rf")) == 1  # reloaded, not trained again
    after = tracking.client().get_run(result.run_id).info
    # Amended, never reopened: still finished, at the time it finished.
    assert (after.status, after.end_time) == ("FINISHED", before.end_time)


@pytest.mark.slow
def test_an_svm_run_records_its_vote_shares_for_later_votes(store):
    result = train("svm", profile=TINY)
    data = load_fashion_mnist().for_profile(TINY)
    assert result.evaluation.log_loss is None  # vote shares are not probabilities
    recorded = recorded_scores("svm", TINY)
    assert recorded.run_id == result.run_id and recorded.fit_time == pytest.approx(result.fit_time)
    for split, images in (("validation", data.x_val), ("test", data.x_test)):
        shares = recorded.scores[split]
        assert shares.shape == (len(images), 10)
        np.testing.assert_allclose(shares.sum(axis=1), 1, atol=1e-6)
        # What the run recorded is what the served model answers, and SVC.predict's answer.
        np.testing.assert_allclose(shares, result.classifier.predict_proba(images), atol=1e-6)
    np.testing.assert_array_equal(recorded.scores["test"].argmax(axis=1), result.evaluation.y_pred)
    np.testing.assert_array_equal(
        result.evaluation.y_pred, result.model.predict(data.sklearn("test")[0])
    )


@pytest.mark.slow
def test_scores_of_a_run_that_recorded_none_are_computed_once_and_recorded(store):
    result = train("rf", profile=TINY)
    files = (store / "mlartifacts").rglob(tracking.SCORES_FILE)
    next(path for path in files if result.run_id in str(path)).unlink()
    with pytest.raises(tracking.MissingRunError):
        tracking.load_scores(result.run_id)
    found = recorded_scores("rf", TINY)
    assert found.run_id == result.run_id
    np.testing.assert_allclose(found.scores["test"], result.scores["test"], atol=1e-6)
    np.testing.assert_allclose(
        tracking.load_scores(result.run_id)["validation"], result.scores["validation"], atol=1e-6
    )
    assert len(tracking.find_runs("tiny", "rf")) == 1  # reloaded, not trained again
