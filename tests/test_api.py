"""The REST API: MLflow's scoring server on models:/fashion-mnist@champion at 127.0.0.1, with two
worker processes (`./course api --workers 2`), real test images as PNG, JPEG and arrays, and a
clear 4xx for every bad input; `mlflow models serve` itself answers the same."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from badfiles import bomb, encode, png_header, truncated
from pictures import on_stripes
from PIL import Image

from fmnist_lib import api, artifact, custom_images, limits, preprocess, registry, serving, tracking
from fmnist_lib.config import profile_named
from fmnist_lib.data import CLASS_NAMES, load_fashion_mnist
from fmnist_lib.training import train

# A real server on a trained model.
pytestmark = pytest.mark.slow

N = 40


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A quick dense network, registered as champion in a store of its own, served by two
    worker processes."""
    store = tmp_path_factory.mktemp("api")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
        train("dense", profile=profile_named("quick"))
        registry.register_best()
        classifier = artifact.load(registry.CHAMPION_URI)
        log = store / "serve.log"
        with api.api_server(registry.CHAMPION_URI, log=log, workers=2) as url:
            yield url, classifier


def test_mlflow_models_serve_answers_the_same(served, tmp_path):
    """MLflow's own command, as the README and chapter 9 show it, on the same model."""
    from fmnist_lib.processes import BIN, env_with, free_port, running

    url, _ = served
    images = load_fashion_mnist().x_test[:5]
    rows = [[b64(preprocess.encode_png(image))] for image in images]
    body = {"dataframe_split": {"columns": ["image"], "data": rows}}
    port = free_port()
    command = [str(BIN / "mlflow"), "models", "serve", "-m", registry.CHAMPION_URI]
    command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    with running(command, f"http://127.0.0.1:{port}/ping", tmp_path / "log", env=env_with()):
        theirs = post(f"http://127.0.0.1:{port}", body)
    assert theirs[0] == 200
    assert post(url, body) == theirs


def post(url: str, body) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{url}/invocations", data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def jpeg(image: np.ndarray) -> bytes:
    return encode(Image.fromarray(image), "JPEG", quality=95)


@pytest.fixture(scope="module")
def test_set():
    data = load_fashion_mnist()
    return data.x_test[:N], data.y_test[:N]


@pytest.mark.parametrize("encoding", ["png", "jpeg", "array"])
def test_real_test_images_get_the_labels_the_model_gives(served, test_set, encoding):
    url, classifier = served
    images, labels = test_set
    if encoding == "array":
        items = [image.tolist() for image in images]
        body = {"inputs": {"image": items}}  # one field holding every image
    else:
        encode = preprocess.encode_png if encoding == "png" else jpeg
        items = [b64(encode(image)) for image in images]
        body = {"dataframe_split": {"columns": ["image"], "data": [[item] for item in items]}}
    status, answer = post(url, body)
    assert status == 200, answer
    predictions = answer["predictions"]
    assert len(predictions) == N

    # The server answers what the same artifact answers in this process, on the same input.
    expected = classifier.classify(serving.images_frame(items))
    assert [p["class_id"] for p in predictions] == expected["class_id"].tolist()
    for p in predictions:
        assert p["class_name"] == CLASS_NAMES[p["class_id"]]
    proba = np.array([p["probabilities"] for p in predictions])
    np.testing.assert_allclose(proba, np.stack(expected["probabilities"]), atol=1e-6)
    # And those are mostly the true labels (a quick dense network scores about 0.8).
    assert (proba.argmax(axis=1) == labels).mean() >= 0.7


def test_cluttered_photos_are_classified_and_a_doubtful_mask_is_not_sure(served):
    """Through the served API: photos on textured surfaces (JPEGs as a phone sends them) get
    the answers the artifact gives in this process, and two garments in one photo, on wide
    stripes, come back "not sure" with the reason (a mask in two pieces) in ``doubt``."""
    url, classifier = served
    images = load_fashion_mnist().x_test[:4]
    rng = np.random.default_rng(3)
    photos = [custom_images.render_cluttered_photo(image, rng) for image in images]
    photos.append(Image.fromarray(on_stripes(images[2], [40, 220])).convert("RGB"))
    items = [b64(custom_images.encode(photo, "JPEG")) for photo in photos]
    status, answer = post(url, _split(*items))
    assert status == 200, answer
    predictions = answer["predictions"]
    expected = classifier.classify(serving.images_frame(items))
    assert [p["class_id"] for p in predictions] == expected["class_id"].tolist()
    assert [p["doubt"] for p in predictions] == expected["doubt"].tolist()
    assert predictions[-1]["doubt"] == "the mask is in 2 pieces"
    assert predictions[-1]["sure"] is False


def test_the_answer_says_not_sure_below_the_validation_threshold(served):
    url, classifier = served
    threshold = classifier.calibration.threshold
    assert 0 < threshold < 1
    images = load_fashion_mnist().x_test[:400]
    confidence = classifier.classify(images)["confidence"].to_numpy()
    # One image the model is sure of and one it is not, as the served artifact judges them.
    picks = [int(confidence.argmax()), int(confidence.argmin())]
    assert confidence[picks[0]] >= threshold > confidence[picks[1]]
    status, answer = post(url, _split(*(b64(preprocess.encode_png(images[i])) for i in picks)))
    assert status == 200, answer
    sure, unsure = answer["predictions"]
    assert sure["sure"] is True and unsure["sure"] is False
    # The class is still given, with its calibrated confidence.
    assert unsure["class_name"] == CLASS_NAMES[unsure["class_id"]]
    assert unsure["confidence"] == pytest.approx(confidence[picks[1]], abs=1e-6)


def test_records_format_mixes_bytes_and_arrays(served, test_set):
    url, _ = served
    images, labels = test_set
    body = {
        "dataframe_records": [
            {"image": b64(preprocess.encode_png(images[0]))},
            {"image": images[0].tolist()},
        ]
    }
    status, answer = post(url, body)
    assert status == 200
    first, second = answer["predictions"]
    assert first["class_id"] == second["class_id"]


def large_photo() -> bytes:
    """A 24-megapixel PNG of a dark square on white: 4 of these fit in a request, not 5."""
    image = Image.new("L", (4900, 4900), 255)
    image.paste(0, (1500, 1000, 3400, 3900))
    return encode(image, "PNG")


def _split(*cells) -> dict:
    return {"dataframe_split": {"columns": ["image"], "data": [[cell] for cell in cells]}}


BAD = {
    "not an image": (lambda: _split(b64(b"%PDF-1.4 not a picture")), "The file is not an image"),
    "empty": (lambda: _split(""), "The file is empty"),
    "truncated": (lambda: _split(b64(truncated("PNG"))), "damaged or truncated"),
    "decompression bomb": (lambda: _split(b64(bomb(15000))), "too large to decode safely"),
    "900-megapixel PNG header": (lambda: _split(b64(png_header(30000, 30000))), "too large"),
    "wrong array shape": (lambda: {"inputs": {"image": [[[0] * 27] * 28]}}, "shape (28, 27)"),
    "not base64": (lambda: _split("%%% not base64 %%%"), "not base64"),
    "second image bad": (
        lambda: _split(b64(preprocess.encode_png(np.zeros((28, 28), np.uint8))), ""),
        "Image 1: The file is empty",
    ),
    "ragged array": (
        lambda: {"inputs": {"image": [[[0] * 28] * 27 + [[0] * 5]]}},
        "rows of different lengths",
    ),
    "too many images": (
        lambda: _split(*[b64(preprocess.encode_png(np.zeros((28, 28), np.uint8)))] * 300),
        f"at most {serving.MAX_IMAGES} are classified per request",
    ),
    "too many pixels": (
        lambda: _split(*[b64(large_photo())] * 5),
        "add up to more than",
    ),
    "malformed JSON": (lambda: b'{"dataframe_split": {"columns": ["image"], "data": [', "JSON"),
    "no image field": (lambda: {"dataframe_split": {"columns": ["a"], "data": [[1]]}}, "image"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_answering(served, test_set, case):
    url, _ = served
    make, message = BAD[case]
    status, answer = post(url, make())
    assert 400 <= status < 500, answer
    assert message in answer["message"]
    # The sentence alone: no traceback, and not the request's data echoed before it.
    assert "Traceback" not in answer["message"] and "stack_trace" not in answer
    assert not answer["message"].startswith("Failed to predict data")
    status, answer = post(url, _split(b64(preprocess.encode_png(test_set[0][0]))))
    assert status == 200 and len(answer["predictions"]) == 1


def test_a_body_over_the_limit_gets_413_with_a_sentence(served):
    """Refused without being parsed, whether its size is announced or not (a chunked upload),
    and read to the end first so that the client receives the answer."""
    import http.client

    url, _ = served
    body = b"x" * (limits.MAX_BODY + 2**20)
    status, answer = post(url, body)
    assert status == 413 and "at most 32 MB is accepted" in answer["message"]
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=60)
    parts = (body[i : i + 2**20] for i in range(0, len(body), 2**20))
    connection.request(
        "POST", "/invocations", parts, {"Content-Type": "application/json"}, encode_chunked=True
    )
    response = connection.getresponse()
    assert response.status == 413 and "at most" in json.loads(response.read())["message"]
    connection.close()


def test_a_phone_jpeg_with_a_second_picture_gets_the_jpeg_answer(served, test_set):
    url, _ = served
    photo = Image.fromarray(test_set[0][0]).resize((280, 280)).convert("RGB")
    depth = Image.new("RGB", photo.size)
    mpo = encode(photo, "MPO", save_all=True, append_images=[depth], quality=95)
    status, answer = post(url, _split(b64(mpo)))
    assert status == 200, answer
    assert answer == post(url, _split(b64(encode(photo, "JPEG", quality=95))))[1]


def test_a_worker_that_dies_is_replaced(served, tmp_path):
    """With several workers, uvicorn's supervisor starts a new one in place of a dead one."""
    import os
    import signal
    import sys
    import time

    from fmnist_lib.processes import env_with, free_port, running

    model = tracking.download(registry.CHAMPION_URI, str(tmp_path / "model"))
    port = free_port()
    command = [sys.executable, "-m", "fmnist_lib", "serve", model, "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "log"
    with running([*command, "--workers", "2"], f"{url}/ping", log, env=env_with()) as server:
        parent = server.pid
        workers = _children(parent)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and workers[0] in _children(parent):
            time.sleep(0.2)
        while time.monotonic() < deadline and len(_children(parent)) < 2:
            time.sleep(0.2)
        assert len(_children(parent)) == 2 and workers[0] not in _children(parent)
        for _ in range(4):  # whichever worker takes it
            status, _ = post(url, _split(b64(preprocess.encode_png(np.zeros((28, 28), np.uint8)))))
            assert status == 200


def _children(pid: int) -> list[int]:
    """The worker processes uvicorn started from ``pid`` (from Linux's /proc): spawned by
    multiprocessing, unlike its resource tracker."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"spawn_main" in command:
            children.append(int(stat.parent.name))
    return sorted(children)
