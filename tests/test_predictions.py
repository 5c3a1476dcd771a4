"""What the app shows of each image: preprocessing with its steps, predictions in one batch,
one clear sentence per unusable file, and the results table."""

from __future__ import annotations

import io

import numpy as np
import pytest
from badfiles import bomb, encode, png_header, truncated
from pictures import on_stripes
from PIL import Image

from fmnist_lib import custom_images, predictions, preprocess, serving
from fmnist_lib.acquisition import load_test_set
from fmnist_lib.calibration import Calibration
from fmnist_lib.data import CLASS_NAMES
from fmnist_lib.predictions import Item


@pytest.fixture(scope="module")
def test_set():
    return load_test_set(download=False)


class Constant:
    """A stand-in classifier that says class 7 with probability 0.7, for any image: these
    tests are about the bookkeeping; real models are in test_app and test_serving."""

    calls = 0

    def predict_proba(self, images):
        Constant.calls += 1
        proba = np.full((len(images), 10), 0.3 / 9)
        proba[:, 7] = 0.7
        return proba


def test_a_picture_keeps_every_step_and_a_small_preview(test_set):
    photo = custom_images.render_product_photo(test_set[0][0], np.random.default_rng(0))
    examined = predictions.examine(Item("photo.jpg", encode(photo, "JPEG")))
    assert examined.ok and examined.image.shape == (28, 28)
    assert list(examined.steps)[-1] == "stretched"
    np.testing.assert_array_equal(examined.steps["stretched"], examined.image)
    # Served and shown images are the same conversion.
    np.testing.assert_array_equal(examined.image, preprocess.prepare(encode(photo, "JPEG")))
    assert max(examined.preview.shape[:2]) == predictions.PREVIEW
    assert all(max(step.shape[:2]) <= predictions.PREVIEW for step in examined.steps.values())


def test_a_test_image_is_used_as_it_is(test_set):
    examined = predictions.examine(Item("test #0", test_set[0][0], int(test_set[1][0])))
    assert examined.ok and list(examined.steps) == ["as it is"]
    np.testing.assert_array_equal(examined.image, test_set[0][0])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The file is empty."),
        (b"GIF89a but not really", "not an image"),
        (truncated("PNG"), "damaged or truncated"),
        (bomb(8000), "too large"),
        (png_header(30_000, 30_000), "too large to decode safely"),  # 900 megapixels
        (encode(Image.new("RGB", (300, 200), "white"), "PNG"), "blank"),
        (None, "could not be read"),
    ],
    ids=["empty", "not an image", "truncated", "bomb", "900 Mpx", "blank", "unreadable"],
)
def test_each_unusable_file_gets_its_sentence_and_the_others_are_classified(
    data, message, test_set
):
    good = Item("good.png", preprocess.encode_png(test_set[0][0]))
    examined = [predictions.examine(good), predictions.examine(Item("bad", data))]
    assert examined[0].ok and not examined[1].ok and message in examined[1].error
    calls = Constant.calls
    outputs = predictions.predict(Constant(), examined)
    assert Constant.calls == calls + 1  # one batch
    assert outputs[0].argmax() == 7 and outputs[1] is None
    table = predictions.results_table(examined, {"m": outputs})
    assert table["m: class"].tolist() == [CLASS_NAMES[7], ""]
    assert table["error"].tolist() == ["", examined[1].error]


def test_nothing_usable_calls_no_model():
    calls = Constant.calls
    assert predictions.predict(Constant(), [predictions.examine(Item("x", b""))]) == [None]
    assert Constant.calls == calls


def test_the_table_says_right_and_wrong_only_when_the_label_is_known(test_set):
    images, labels = test_set
    items = [
        Item("a", images[0], 7),
        Item("b", images[1], 2),
        Item("upload.png", preprocess.encode_png(images[2])),
    ]
    examined = [predictions.examine(item) for item in items]
    table = predictions.results_table(examined, {"one": predictions.predict(Constant(), examined)})
    assert table["true class"].tolist() == [CLASS_NAMES[7], CLASS_NAMES[2], ""]
    assert table["one: right"].tolist() == [True, False, None]
    assert table["one: probability"].tolist() == pytest.approx([0.7] * 3)
    assert list(table.columns) == [
        "image",
        "source",
        "true class",
        "one: class",
        "one: probability",
        "one: right",
        "doubt",
        "error",
    ]


def test_top_classes_most_probable_first():
    proba = np.array([0.05, 0.5, 0.0, 0.3, 0.0, 0.0, 0.0, 0.0, 0.15, 0.0])
    top = predictions.top_classes(proba)
    assert top["class"].tolist() == [CLASS_NAMES[1], CLASS_NAMES[3], CLASS_NAMES[8]]
    assert top["probability"].tolist() == [0.5, 0.3, 0.15]


def test_the_test_gallery_takes_the_first_images_of_each_class(test_set):
    images, labels = test_set
    gallery = predictions.test_gallery(images, labels, per_class=2)
    assert [item.label for item in gallery] == [c for c in range(10) for _ in range(2)]
    for item in gallery:
        index = int(item.name.removeprefix("test #"))
        assert labels[index] == item.label and (images[index] == item.data).all()
    first_bags = np.flatnonzero(labels == 8)[:2]
    assert [item.name for item in gallery if item.label == 8] == [f"test #{i}" for i in first_bags]


def test_generated_images_are_listed_with_their_labels(tmp_path, test_set):
    assert predictions.generated_gallery(tmp_path) == []
    made = custom_images.generate(tmp_path, test_set[0], test_set[1], per_class=1, photos=2)
    listed = predictions.generated_gallery(tmp_path)
    assert listed == made
    item = predictions.generated_item(tmp_path, listed[-1])
    assert item.label == listed[-1].label and item.data == (tmp_path / listed[-1].file).read_bytes()
    (tmp_path / listed[0].file).unlink()
    missing = predictions.examine(predictions.generated_item(tmp_path, listed[0]))
    assert missing.error == "The file could not be read."


def test_real_model_probabilities_match_the_served_ones(test_set):
    from fmnist_lib import models

    classifier = serving.Classifier.from_model(models.build_dense(), "keras")
    images = test_set[0][:5]
    examined = [
        predictions.examine(Item(str(k), preprocess.encode_png(im))) for k, im in enumerate(images)
    ]
    outputs = predictions.predict(classifier, examined)
    served = classifier.classify(serving.images_frame(preprocess.encode_png(im) for im in images))
    np.testing.assert_allclose(np.stack(outputs), np.stack(served["probabilities"]), rtol=1e-6)


def _drawing(background: tuple[int, int, int, int]) -> np.ndarray:
    """A pair of trousers drawn with a thick pen on a 280x280 canvas, as the app's canvas
    returns it (RGBA)."""
    from PIL import ImageDraw

    canvas = Image.new("RGBA", (280, 280), background)
    pen = ImageDraw.Draw(canvas)
    black = (0, 0, 0, 255)
    pen.line([(90, 40), (190, 40)], fill=black, width=10)  # waistband
    pen.line([(92, 40), (80, 250), (125, 250), (140, 90)], fill=black, width=10)
    pen.line([(188, 40), (200, 250), (155, 250), (140, 90)], fill=black, width=10)
    return np.asarray(canvas)


@pytest.mark.parametrize("background", [(255, 255, 255, 255), (0, 0, 0, 0)])
def test_a_drawing_goes_through_the_conversion_of_an_upload(background):
    """On white or on a transparent canvas, the drawing becomes a PNG file, and the model sees
    what it would see of that file uploaded: the item light on black, filling the frame."""
    item = predictions.drawing_item(_drawing(background))
    assert item.source == "drawing" and item.label is None
    assert Image.open(io.BytesIO(item.data)).format == "PNG"
    examined = predictions.examine(item)
    assert examined.ok and examined.image.shape == (28, 28)
    uploaded = predictions.examine(Item("trousers.png", item.data))
    np.testing.assert_array_equal(examined.image, uploaded.image)
    image = examined.image.astype(float)
    assert image[:, :3].mean() < 10 and image[:, -3:].mean() < 10  # dark margins
    assert image.max() > 200 and image[4:24, 6:22].mean() > 40  # a bright item in the middle
    assert list(examined.steps) == list(uploaded.steps)


def test_a_blank_canvas_is_no_drawing_and_a_wrong_array_is_refused():
    assert predictions.drawing_item(np.full((280, 280, 4), 255, np.uint8)) is None
    assert predictions.drawing_item(np.zeros((280, 280, 4), np.uint8)) is None  # transparent
    with pytest.raises(ValueError, match="RGB\\(A\\) array"):
        predictions.drawing_item(np.zeros((280, 280), np.uint8))
    with pytest.raises(ValueError, match="RGB\\(A\\) array"):
        predictions.drawing_item(np.zeros((0, 280, 4), np.uint8))


def test_a_doubtful_mask_makes_the_answer_not_sure(test_set):
    """An item on a plain backdrop gives no doubt, nor on a print of wide stripes; two items
    in one picture make a mask in two pieces: a doubt, and the table's "sure" is then False
    whatever the model's confidence."""
    images = test_set[0]
    item = 255 - np.kron(images[0], np.ones((5, 5), np.uint8))
    plain = np.full((400, 400), 235, np.uint8)
    plain[130:270, 130:270] = item
    pictures = [
        Image.fromarray(p).convert("RGB")
        for p in (plain, on_stripes(images[0], [130]), on_stripes(images[2], [40, 220]))
    ]
    items = [
        Item(f"p{k}.png", custom_images.encode(p, "PNG"), 9, "upload")
        for k, p in enumerate(pictures)
    ]
    examined = [predictions.examine(item) for item in items]
    assert examined[0].doubt is None and examined[1].doubt is None
    assert examined[2].doubt == "the mask is in 2 pieces"
    sure = Calibration(1.0, 0.0)  # sure of everything
    table = predictions.results_table(
        examined, {"one": predictions.predict(Constant(), examined)}, {"one": sure}
    )
    assert table["one: sure"].tolist() == [True, True, False]
    assert table["doubt"].tolist() == ["", "", examined[2].doubt]
