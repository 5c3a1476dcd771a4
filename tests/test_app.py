"""The Streamlit app through `streamlit.testing.v1.AppTest`: the script runs for real, in this
process, on a real MLflow store with two registered models (`app_store` in conftest); no
browser (see test_browser)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from badfiles import bomb, encode, truncated
from pictures import on_stripes
from PIL import Image
from streamlit.testing.v1 import AppTest

from fmnist_lib import artifact, custom_images, preprocess, registry, serving
from fmnist_lib.acquisition import load_test_set
from fmnist_lib.config import PROJECT_ROOT
from fmnist_lib.data import CLASS_NAMES

# Every test here reads the store of trained networks (`app_store`).
pytestmark = pytest.mark.slow

APP = str(PROJECT_ROOT / "streamlit_app.py")


def _session(uri: str, monkeypatch, generated) -> AppTest:
    """A fresh app on the store ``uri``, as in a new process: the caches are emptied."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("FMNIST_GENERATED_DIR", str(generated))
    st.cache_data.clear()
    st.cache_resource.clear()
    return AppTest.from_file(APP, default_timeout=120).run()


@pytest.fixture
def app(app_store, monkeypatch, tmp_path) -> AppTest:
    at = _session(app_store[0], monkeypatch, tmp_path / "generated")
    assert not at.exception
    return at


@pytest.fixture(scope="module")
def test_set():
    return load_test_set(download=False)


def _predicted(model: registry.Registered, images: np.ndarray) -> list[str]:
    return artifact.load(model.uri).classify(images)["class_name"].tolist()


def _captions(at: AppTest) -> list[str]:
    return [caption for image in at.image for caption in image.captions]


def _table(at: AppTest) -> pd.DataFrame:
    assert len(at.dataframe) == 1
    return at.dataframe[0].value


def test_without_a_model_the_app_says_what_to_run(monkeypatch, tmp_path):
    at = _session(f"sqlite:///{tmp_path / 'empty.db'}", monkeypatch, tmp_path)
    assert not at.exception
    assert "python -m fmnist_lib train cnn" in at.warning[0].value
    assert "python -m fmnist_lib register" in at.warning[0].value
    assert len(at.dataframe) == 0


def test_picking_test_images_classifies_them_with_the_champion(app, app_store, test_set):
    champion = app_store[1][0]
    assert champion.champion and app.selectbox(key="model").value == champion.label
    assert "Upload pictures, draw a garment or pick images" in app.info[-1].value
    app.button[0].click().run()  # "One of each class"
    picks = app.multiselect(key="test_picks").value
    assert len(picks) == 10
    indexes = [int(name.removeprefix("test #")) for name in picks]
    images, labels = test_set
    assert sorted(labels[indexes]) == list(range(10))

    table = _table(app)
    expected = _predicted(champion, images[indexes])
    assert table["image"].tolist() == picks
    assert table["true class"].tolist() == [CLASS_NAMES[labels[i]] for i in indexes]
    assert table[f"{champion.short}: class"].tolist() == expected
    right = [p == CLASS_NAMES[labels[i]] for p, i in zip(expected, indexes, strict=True)]
    assert table[f"{champion.short}: right"].tolist() == right
    # The served artifact's own "sure" flags, from the threshold chosen on validation.
    sure = artifact.load(champion.uri).classify(images[indexes])["sure"].tolist()
    assert table[f"{champion.short}: sure"].tolist() == sure
    # One verdict per image: a success when right and sure; a warning (amber) when the model
    # is not sure, or names the true class when it is sure and wrong.
    confident_and_right = sum(r and s for r, s in zip(right, sure, strict=True))
    assert len(app.success) == confident_and_right
    assert len(app.warning) == 10 - confident_and_right
    for box in app.warning:
        assert box.value.startswith(f"{champion.short}: ")
        assert "not sure" in box.value or ", but the true class is " in box.value
    # The input and what the model sees; where a network looked only on request (TensorFlow).
    assert len(app.image) == 20
    app.toggle(key="maps").set_value(True).run()
    assert len(app.image) == 30
    maps = [c for c in _captions(app) if c.startswith(("HiResCAM: ", "gradient × input: "))]
    assert len(maps) == 10
    assert not app.error


def test_switching_and_comparing_models(app, app_store, test_set):
    champion, other = app_store[1][0], app_store[1][2]  # the champion, and the approach that lost
    assert other.model != champion.model
    app.multiselect(key="test_picks").set_value(["test #0", "test #1", "test #2"]).run()
    app.selectbox(key="model").set_value(other.label).run()
    table = _table(app)
    images = test_set[0][:3]
    assert table[f"{other.short}: class"].tolist() == _predicted(other, images)
    assert not any(column.startswith(champion.short) for column in table.columns)

    app.selectbox(key="compare").set_value(champion.label).run()
    table = _table(app)
    assert table[f"{other.short}: class"].tolist() == _predicted(other, images)
    assert table[f"{champion.short}: class"].tolist() == _predicted(champion, images)
    assert len(app.success) + len(app.warning) == 6  # each image, by each model
    assert "chapter 6" in " ".join(c.value for c in app.sidebar.caption)
    assert len(app.image) == 6  # the input and what the model sees; maps only on request


def test_an_answer_below_the_threshold_says_not_sure_in_amber(app, app_store, test_set):
    champion = app_store[1][0]
    classifier = artifact.load(champion.uri)
    gallery = [name for name in app.multiselect(key="test_picks").options]
    indexes = [int(name.split("#")[1].split(" ")[0]) for name in gallery]
    answers = classifier.classify(test_set[0][indexes])
    unsure = answers.index[~answers["sure"]].tolist()
    sure = answers.index[answers["sure"]].tolist()
    assert unsure and sure  # a two-epoch network on a few thousand images has both
    picks = [f"test #{indexes[unsure[0]]}", f"test #{indexes[sure[0]]}"]
    app.multiselect(key="test_picks").set_value(picks).run()
    first, second = _table(app)[f"{champion.short}: sure"].tolist()
    assert first is False and second is True
    not_sure = [box for box in app.warning if "not sure" in box.value]
    assert len(not_sure) == 1
    assert not_sure[0].value.startswith(f"{champion.short}: not sure. Perhaps ")
    assert CLASS_NAMES[int(answers["class_id"][unsure[0]])] in not_sure[0].value


def test_uploads_good_and_bad_each_get_an_answer(app, app_store, test_set):
    images = test_set[0]
    photo = custom_images.render_product_photo(images[0], np.random.default_rng(0))
    uploader = app.file_uploader[0]
    uploader.upload("boot.png", preprocess.encode_png(images[0]), "image/png")
    uploader.upload("photo.jpg", encode(photo, "JPEG"), "image/jpeg")
    bad = {
        "empty.png": (b"", "The file is empty."),
        "notes.png": (b"my holiday notes", "The file is not an image"),
        "cut.jpg": (truncated("JPEG"), "damaged or truncated"),
        "huge.png": (bomb(8000), "too large to decode safely"),
        "white.png": (encode(Image.new("RGB", (64, 64), "white"), "PNG"), "blank"),
    }
    for name, (data, _) in bad.items():
        uploader.upload(name, data, "image/png")
    app.run()
    assert not app.exception
    errors = [box.value for box in app.error]
    assert len(errors) == len(bad)
    for (name, (_, sentence)), error in zip(bad.items(), errors, strict=True):
        assert error.startswith(f"{name}: ") and sentence in error

    champion = app_store[1][0]
    table = _table(app)
    assert table["image"].tolist() == ["boot.png", "photo.jpg", *bad]
    served = artifact.load(champion.uri).classify(
        serving.images_frame([preprocess.encode_png(images[0]), encode(photo, "JPEG")])
    )
    assert table[f"{champion.short}: class"].tolist()[:2] == served["class_name"].tolist()
    assert (table["error"][2:] != "").all() and (table["error"][:2] == "").all()
    assert app.subheader[0].value == f"2 of {2 + len(bad)} images classified"

    # Its content is checked in a real browser (test_browser): AppTest keeps no file.
    assert app.get("download_button")[0].proto.label == "Download the table (CSV)"

    app.toggle(key="steps").set_value(True).run()
    assert len(app.image) == 2 * 2 + 2  # + one row of steps per image (maps are off)


def test_generated_images_can_be_picked(app_store, monkeypatch, tmp_path, test_set):
    folder = tmp_path / "generated"
    at = _session(app_store[0], monkeypatch, folder)
    assert any("python create_img.py" in box.value for box in at.info)
    made = custom_images.generate(folder, *test_set, per_class=1, photos=2)
    at = _session(app_store[0], monkeypatch, folder)
    picks = [made[0].file, made[-1].file]
    at.multiselect(key="generated_picks").set_value(picks).run()
    table = _table(at)
    assert table["image"].tolist() == picks
    assert table["source"].tolist() == ["generated"] * 2
    assert table["true class"].tolist() == [made[0].class_name, made[-1].class_name]


APP_MAX_FILES = 20  # streamlit_app.MAX_FILES (the script is not imported: it runs the app)


def test_more_files_than_a_run_classifies_get_a_message(app, test_set):
    uploader = app.file_uploader[0]
    extra = 3
    for k in range(APP_MAX_FILES + extra):
        uploader.upload(f"image{k}.png", preprocess.encode_png(test_set[0][k]), "image/png")
    app.run()
    assert not app.exception
    assert any(f"{APP_MAX_FILES + extra} pictures uploaded" in w.value for w in app.warning)
    assert _table(app)["image"].tolist() == [f"image{k}.png" for k in range(APP_MAX_FILES)]


def test_the_examined_cache_keeps_no_upload(app, test_set):
    """What the app keeps of an upload (shared by every session, for an hour at most) is what
    it shows, not the file."""
    uploader = app.file_uploader[0]
    photo = custom_images.render_product_photo(test_set[0][0], np.random.default_rng(0))
    data = encode(photo.resize((photo.width * 4, photo.height * 4)), "PNG")
    uploader.upload("large.png", data, "image/png")
    app.run()
    assert not app.exception and len(_table(app)) == 1
    # Streamlit's own account of its caches' memory (what its /_stcore/metrics page reports).
    from streamlit.runtime.caching.cache_data_api import _data_caches

    stats = [s for group in _data_caches.get_stats().values() for s in group]
    kept = [s.byte_length for s in stats if s.cache_name.endswith("_examined")]
    assert len(kept) == 1 and kept[0] < min(len(data) / 2, 2**20), kept


def test_a_doubtful_mask_says_not_sure_and_shows_the_mask(app, app_store, test_set):
    """Two garments in one photo, on a print of wide stripes: the mask is in two pieces, the
    answer is "not sure" with the reason, and the mask is shown without asking."""
    champion = app_store[1][0]
    picture = Image.fromarray(on_stripes(test_set[0][2], [40, 220]))
    app.file_uploader[0].upload("two-on-stripes.png", encode(picture, "PNG"), "image/png")
    app.run()
    assert not app.error
    (box,) = app.warning
    assert box.value.startswith(f"{champion.short}: not sure, the mask is in 2 pieces")
    assert any(c.startswith("Why not sure: the mask is in 2 pieces") for c in _captions(app))
    assert _table(app)[f"{champion.short}: sure"].tolist() == [False]
