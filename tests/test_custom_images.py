"""create_img.py and the images it makes: deterministic files, readable labels, and product
photos that the Fashion-MNIST conversion turns back into their test images."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fmnist_lib import custom_images, preprocess
from fmnist_lib.config import PROJECT_ROOT
from fmnist_lib.data import CLASS_NAMES, load_fashion_mnist


@pytest.fixture(scope="module")
def test_set():
    data = load_fashion_mnist()
    return data.x_test, data.y_test


def test_generation_is_deterministic_and_labelled(tmp_path, test_set):
    first = custom_images.generate(tmp_path / "a", *test_set, per_class=2, photos=6, seed=3)
    custom_images.generate(tmp_path / "b", *test_set, per_class=2, photos=6, seed=3)
    other = custom_images.generate(tmp_path / "c", *test_set, per_class=2, photos=6, seed=4)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert any(
        (tmp_path / "a" / i.file).read_bytes() != (tmp_path / "c" / i.file).read_bytes()
        for i in other
    )
    assert custom_images.read_labels(tmp_path / "a") == first
    assert len(first) == 2 * 10 + 6 and not any(p.startswith(".") for p in files)
    drawn = [i for i in first if i.kind == "drawn"]
    assert sorted({i.label for i in drawn}) == list(range(10))
    for item in first:
        assert item.class_name == CLASS_NAMES[item.label]
        if item.kind == "photo":
            assert item.label == test_set[1][item.source]
        image = Image.open(tmp_path / "a" / item.file)
        assert image.format == ("JPEG" if item.file.endswith(".jpg") else "PNG")
        assert min(image.size) > 100


def test_product_photos_convert_back_close_to_their_test_image(tmp_path, test_set):
    images = custom_images.generate(tmp_path, *test_set, per_class=0, photos=40, seed=0)
    errors = []
    for item in images:
        out = preprocess.prepare((tmp_path / item.file).read_bytes())
        errors.append(np.abs(out.astype(int) - test_set[0][item.source]).mean())
    # Measured here: about 12.5 grey levels on average (blur of the enlargement, JPEG).
    assert np.mean(errors) < 16, f"mean absolute error {np.mean(errors):.1f}"
    naive = [
        np.abs(
            preprocess.to_28x28(preprocess.decode((tmp_path / i.file).read_bytes())).astype(int)
            - test_set[0][i.source]
        ).mean()
        for i in images
    ]
    assert np.mean(naive) > 3 * np.mean(errors)


def run_create_img(*args):
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "create_img.py"), *args],
        capture_output=True,
        text=True,
    )


def test_create_img_command_line(tmp_path):
    result = run_create_img("--per-class", "1", "--photos", "2", "--out", str(tmp_path / "x"))
    assert result.returncode == 0, result.stderr
    assert "10 drawings and 2 photos" in result.stdout
    assert len(custom_images.read_labels(tmp_path / "x")) == 12
    help_text = run_create_img("--help").stdout
    assert "--seed" in help_text and "--per-class" in help_text and "--style" in help_text
    result = run_create_img(
        "--per-class",
        "0",
        "--photos",
        "3",
        "--style",
        "studio",
        "--style",
        "cluttered",
        "--out",
        str(tmp_path / "y"),
    )
    assert result.returncode == 0, result.stderr
    assert "0 drawings and 6 photos (studio, cluttered)" in result.stdout
    styles = [i.style for i in custom_images.read_labels(tmp_path / "y")]
    assert styles == ["studio"] * 3 + ["cluttered"] * 3
    bad_style = run_create_img("--style", "watercolour")
    assert bad_style.returncode == 2 and "--style" in bad_style.stderr
    bad = run_create_img("--photos", "-1")
    assert bad.returncode == 2 and "--photos" in bad.stderr and "Traceback" not in bad.stderr
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    result = run_create_img("--out", str(blocked))
    assert result.returncode == 1 and "cannot write" in result.stderr
    assert "Traceback" not in result.stderr


def test_studio_photos_are_real_shop_photos_that_the_full_conversion_undoes(tmp_path, test_set):
    images = custom_images.generate(
        tmp_path, *test_set, per_class=0, photos=30, seed=0, styles=("studio",)
    )
    sizes, full, recipe = [], [], []
    for item in images:
        data = (tmp_path / item.file).read_bytes()
        picture = preprocess.decode(data)
        assert data[:3] == b"\xff\xd8\xff" and item.style == "studio"  # a JPEG
        sizes.append(max(picture.size))
        rgb = np.asarray(picture.convert("RGB"), dtype=np.float64)
        # Not one grey: the border spans a gradient and a vignette, several grey levels wide.
        border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).mean(axis=1)
        assert np.ptp(border) > 15
        original = test_set[0][item.source]
        for errors, segment in [(full, True), (recipe, False)]:
            converted = preprocess.to_fashion_mnist(picture, segment).astype(int)
            errors.append(np.abs(converted - original).mean())
    assert max(sizes) > 2 * min(sizes)  # several sizes
    # Measured here: about 20 grey levels on average for the full conversion, 60 for the recipe.
    assert np.mean(full) < 0.5 * np.mean(recipe)
