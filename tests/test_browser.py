"""The app in a real browser: `streamlit run` on 127.0.0.1, Debian's Chromium driven headless by
Playwright. Uploads a real test image and a broken file, draws a garment with the mouse, reads
the predictions and the error from the page, downloads the results table, and saves a
screenshot."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from badfiles import truncated
from chromium import HAVE_CHROMIUM, MISSING, launched
from PIL import Image

from fmnist_lib import artifact, predictions, preprocess, serving
from fmnist_lib.acquisition import load_test_set
from fmnist_lib.config import PROJECT_ROOT
from fmnist_lib.data import CLASS_NAMES
from fmnist_lib.processes import BIN, env_with, free_port, running

pytestmark = [
    pytest.mark.slow,  # a real `streamlit run` in Chromium
    pytest.mark.skipif(not HAVE_CHROMIUM, reason=MISSING),
]


@pytest.fixture(scope="module")
def app_url(app_store, tmp_path_factory):
    uri, listed = app_store
    folder = tmp_path_factory.mktemp("browser")
    port = free_port()
    command = [str(BIN / "streamlit"), "run", str(PROJECT_ROOT / "streamlit_app.py")]
    command += ["--server.port", str(port), "--server.fileWatcherType", "none"]
    env = env_with(MLFLOW_TRACKING_URI=uri, FMNIST_GENERATED_DIR=str(folder / "generated"))
    url = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        classifier = artifact.load(listed[0].uri)
    # Started from another folder: the limits in .streamlit/config.toml still apply.
    with running(
        command, f"{url}/_stcore/health", folder / "streamlit.log", env=env, cwd=folder
    ) as app:
        yield url, listed[0], classifier, app.pid


def _has_tensorflow(pid: int) -> bool:
    return "_pywrap_tensorflow_internal" in Path(f"/proc/{pid}/maps").read_text()


@pytest.fixture(scope="module")
def browser():
    with launched() as browser:
        yield browser


def test_an_upload_is_classified_and_a_broken_file_explained(app_url, browser, tmp_path):
    url, champion, classifier, pid = app_url
    image = load_test_set(download=False)[0][0]
    png = preprocess.encode_png(image)
    expected = classifier.classify(serving.images_frame([png]))["class_name"][0]

    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.goto(url)
    uploader = page.wait_for_selector(
        '[data-testid="stFileUploaderDropzoneInput"]', state="attached", timeout=120_000
    )
    assert "20MB per file" in page.inner_text('[data-testid="stFileUploaderDropzone"]')
    uploader.set_input_files(
        [
            {"name": "boot.png", "mimeType": "image/png", "buffer": png},
            {"name": "broken.jpg", "mimeType": "image/jpeg", "buffer": truncated("JPEG")},
        ]
    )
    # Green when the model is sure, amber "not sure" below its validation threshold.
    verdict = page.wait_for_selector(
        '[data-testid="stAlertContentSuccess"], [data-testid="stAlertContentWarning"]',
        timeout=120_000,
    )
    text = verdict.inner_text()
    assert text.startswith(f"{champion.short}: ") and f"{expected} (" in text
    error = page.wait_for_selector('[data-testid="stAlertContentError"]', timeout=10_000)
    assert error.inner_text().startswith("broken.jpg: The image file is damaged or truncated")
    assert page.get_by_text("1 of 2 images classified").is_visible()

    with page.expect_download() as download:
        page.get_by_role("button", name="Download the table (CSV)").click()
    table = pd.read_csv(download.value.path())
    assert table["image"].tolist() == ["boot.png", "broken.jpg"]
    assert table[f"{champion.short}: class"].tolist()[0] == expected
    assert "damaged or truncated" in table["error"][1]

    # The network ran through onnxruntime: TensorFlow (450 MB) loads only for the maps.
    assert not _has_tensorflow(pid)
    page.get_by_text("Show where the network looked").click()
    caption = page.wait_for_selector("text=where it saw", timeout=120_000)
    assert caption.inner_text().split(":")[0] in ("HiResCAM", "gradient × input")
    assert _has_tensorflow(pid)

    shot = tmp_path / "app.png"
    page.screenshot(path=shot, full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}", file=sys.stderr)
    page.close()


def test_the_app_listens_on_127_0_0_1_only_wherever_it_is_started_from(app_url):
    """The app has no accounts: bound to the loopback address by the config file beside the
    script (`streamlit run` started from another folder, as app_url does)."""
    port = int(app_url[0].rsplit(":", 1)[1])
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                listening.append(local.rsplit(":", 1)[0])
    assert listening == ["0100007F"]  # 127.0.0.1, little-endian hex


def test_a_garment_drawn_with_the_mouse_is_classified(app_url, browser, tmp_path):
    """The Draw tab: a pair of trousers drawn with the mouse goes through the conversion of an
    upload; the app's answer is the library's for the pixels on the canvas."""
    import base64

    from playwright.sync_api import expect

    url, champion, classifier, pid = app_url
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.goto(url)
    page.get_by_role("tab", name="Draw").click()
    surface = page.locator("canvas.upper-canvas")
    surface.wait_for(state="visible", timeout=120_000)
    box = surface.bounding_box()
    strokes = [  # waistband, then each leg, in canvas pixels (280x280)
        [(90, 40), (190, 40)],
        [(92, 40), (80, 250), (125, 250), (140, 90)],
        [(188, 40), (200, 250), (155, 250), (140, 90)],
    ]
    for stroke in strokes:
        page.mouse.move(box["x"] + stroke[0][0], box["y"] + stroke[0][1])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x, box["y"] + y, steps=25)
        page.mouse.up()
    # The canvas sends the drawing after each stroke, and the app answers each time: compare
    # with the library's answer for the whole drawing once the app has caught up with it.
    drawn = page.locator("canvas.dc-canvas.lower-canvas").evaluate("c => c.toDataURL('image/png')")
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(drawn.split(",", 1)[1]))))
    item = predictions.drawing_item(pixels)
    assert item is not None
    expected = predictions.predict(classifier, [predictions.examine(item)])[0]
    # "<model>: <class> (p%)", or "<model>: not sure. Perhaps <class> (p%)"
    verdict = page.locator(
        '[data-testid="stAlertContentSuccess"], [data-testid="stAlertContentWarning"]'
    )
    answer = (
        re.escape(f"{champion.short}: ") + ".*" + re.escape(f"{CLASS_NAMES[expected.argmax()]} (")
    )
    expect(verdict).to_contain_text(re.compile(answer, re.S), timeout=120_000)
    assert page.get_by_text("1 of 1 images classified").is_visible()
    with page.expect_download() as download:
        page.get_by_role("button", name="Download the table (CSV)").click()
    table = pd.read_csv(download.value.path())
    assert table[["image", "source"]].values.tolist() == [["drawing", "drawing"]]
    page.screenshot(path=tmp_path / "drawing.png", full_page=True)
    page.close()
