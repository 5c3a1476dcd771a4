"""The serving artifact in-process: what every run logs, from bytes or arrays to predictions."""

from __future__ import annotations

import base64
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest

from fmnist_lib import artifact, model_files, preprocess, serving
from fmnist_lib.catalogue import MODELS
from fmnist_lib.config import Profile
from fmnist_lib.data import CLASS_NAMES, load_fashion_mnist
from fmnist_lib.preprocess import ImageError
from fmnist_lib.training import train

# Trained models (`trained`), logged and loaded back.
pytestmark = pytest.mark.slow

TINY = Profile(name="tiny", train_size=600, test_size=200, epochs=2)
COLUMNS = ["class_id", "class_name", "probabilities", "confidence", "sure", "doubt"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny CNN and a tiny SVM, logged to a store of their own."""
    store = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
        yield {name: train(name, profile=TINY) for name in ("cnn", "svm")}


@pytest.fixture(scope="module")
def test_images():
    data = load_fashion_mnist()
    return data.x_test[:40], data.y_test[:40]


@pytest.mark.parametrize("name", ["cnn", "svm"])
def test_the_logged_artifact_predicts_what_the_trained_model_predicts(trained, test_images, name):
    result = trained[name]
    classifier = artifact.load(result.model_uri)
    images, _ = test_images
    out = classifier.classify(images)
    assert list(out.columns) == COLUMNS

    x = images.astype(np.float32) / 255
    if name == "cnn":
        expected_proba = result.model.predict(x[..., None], verbose=0)
        np.testing.assert_allclose(np.stack(out["probabilities"]), expected_proba, atol=1e-5)
        expected = expected_proba.argmax(axis=1)
    else:
        expected = result.model.predict(x.reshape(len(x), -1))
        shares = np.stack(out["probabilities"])
        assert np.allclose(shares * 45, np.rint(shares * 45))  # votes out of 45 duels
    assert out["class_id"].tolist() == expected.tolist()
    assert out["class_name"].tolist() == [CLASS_NAMES[i] for i in expected]
    assert np.allclose(np.stack(out["probabilities"]).sum(axis=1), 1)
    assert classifier.has_probabilities == (name == "cnn")


def test_bytes_base64_and_arrays_give_the_same_answer(trained, test_images):
    classifier = artifact.load(trained["cnn"].model_uri)
    images, _ = test_images
    png = [preprocess.encode_png(image) for image in images[:5]]
    as_arrays = classifier.classify(images[:5])
    for model_input in (
        serving.images_frame(png),
        serving.images_frame(base64.b64encode(p).decode() for p in png),
        serving.images_frame(image.tolist() for image in images[:5]),
        pd.DataFrame({"image": [[base64.b64encode(p).decode() for p in png]]}),  # one cell
        {"image": png},
    ):
        out = classifier.classify(model_input)
        assert out["class_id"].tolist() == as_arrays["class_id"].tolist()


def test_a_bad_image_is_named_by_its_position(trained, sample_png):
    model = mlflow.pyfunc.load_model(trained["cnn"].model_uri)
    with pytest.raises(mlflow.exceptions.MlflowException, match="Image 1: The file is empty"):
        model.predict(serving.images_frame([sample_png, b"", sample_png]))
    with pytest.raises(ImageError, match="No image"):
        serving.to_images(serving.images_frame([]))
    with pytest.raises(ImageError, match="column named 'image'"):
        serving.to_images(pd.DataFrame({"a": [sample_png], "b": [sample_png]}))


@pytest.fixture
def sample_png(test_images):
    return preprocess.encode_png(test_images[0][0])


def test_a_big_batch_is_classified_in_chunks(trained):
    classifier = artifact.load(trained["cnn"].model_uri)
    images = np.repeat(load_fashion_mnist().x_test[:3], 1500, axis=0)  # 4500 > one chunk
    proba = classifier.predict_proba(images)
    assert proba.shape == (4500, 10)
    np.testing.assert_allclose(proba[:1500], np.repeat(proba[:1], 1500, axis=0), atol=1e-6)


def test_keras_artifacts_are_served_through_onnx(trained, test_images):
    classifier = artifact.load(trained["cnn"].model_uri)
    assert classifier.backend == "onnxruntime"
    images, _ = test_images
    expected = trained["cnn"].model.predict(images[..., None] / np.float32(255), verbose=0)
    np.testing.assert_allclose(classifier.predict_proba(images), expected, atol=1e-5)
    assert classifier.model.count_params() == trained["cnn"].model.count_params()  # on demand


@pytest.mark.parametrize("name", [n for n, spec in MODELS.items() if spec.family == "keras"])
def test_every_course_network_exports_to_onnx_with_the_same_outputs(name, tmp_path, test_images):
    import keras

    spec = MODELS[name]
    keras.utils.set_random_seed(0)
    model = spec.builder(**spec.build_params)
    images, _ = test_images
    path = model_files.export_onnx(model, tmp_path, images)  # None (and a warning) if it differs
    assert path is not None and path.stat().st_size > 0
    session = model_files.onnx_session(path)
    x = images[..., None] / np.float32(255)
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    # A network trained in bfloat16 is exported, and compared, in float32.
    expected = model_files.in_float32(model).predict(x, verbose=0)
    np.testing.assert_allclose(got, expected, atol=model_files.ONNX_TOLERANCE)


def test_serving_through_onnx_never_imports_tensorflow(trained, sample_png):
    # What makes `mlflow models serve` start in seconds: onnxruntime imports in a tenth of one.
    script = (
        "import sys, mlflow.pyfunc\n"
        f"model = mlflow.pyfunc.load_model({trained['cnn'].model_uri!r})\n"
        f"out = model.predict({{'image': [{sample_png!r}]}})\n"
        "print(out['class_name'][0], 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    name, tensorflow, keras = result.stdout.split("\n")[-2].rsplit(" ", 2)
    assert name in CLASS_NAMES and (tensorflow, keras) == ("False", "False")


def test_the_artifact_carries_the_calibration_chosen_on_validation(trained):
    from fmnist_lib.calibration import calibrate

    result = trained["cnn"]
    classifier = artifact.load(result.model_uri)
    data = load_fashion_mnist().for_profile(TINY)
    x_val, y_val = data.split("val")
    expected = calibrate(classifier.predict_proba(x_val), y_val)
    assert classifier.calibration.temperature == pytest.approx(expected.temperature, rel=1e-3)
    assert classifier.calibration.threshold == pytest.approx(expected.threshold, abs=1e-3)
    metrics = mlflow.get_run(result.run_id).data.metrics
    assert metrics["not_sure_threshold"] == pytest.approx(expected.threshold, abs=1e-6)
    # The SVM's votes are not probabilities: no threshold, always sure.
    svm = artifact.load(trained["svm"].model_uri)
    assert svm.calibration.threshold == 0 and svm.classify(x_val[:20])["sure"].all()


def test_answers_below_the_threshold_are_not_sure_and_above_are(trained):
    classifier = artifact.load(trained["cnn"].model_uri)
    threshold = classifier.calibration.threshold
    assert 0 < threshold < 1  # a 2-epoch network on 600 images has answers to withhold
    images = load_fashion_mnist().x_test[:500]
    out = classifier.classify(images)
    sure = out["sure"].to_numpy()
    assert sure.any() and not sure.all()
    assert (out["confidence"][sure] >= threshold).all()
    assert (out["confidence"][~sure] < threshold).all()
    # Temperature scaling never changes the answer, only how sure it is.
    assert out["class_id"].tolist() == np.stack(out["probabilities"]).argmax(axis=1).tolist()
