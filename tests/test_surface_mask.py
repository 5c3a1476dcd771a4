"""The surface-mask network: its composites, its training command, its export, and the shipped
network's use by the conversion."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from fmnist_lib import custom_images, masking, preprocess, surface_mask
from fmnist_lib.data import load_fashion_mnist


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return load_fashion_mnist().x_train[:6]


def test_a_composite_is_the_cluttered_rendering_and_its_true_mask(images):
    photo = custom_images.render_cluttered_photo(images[0], np.random.default_rng(5))
    same, coverage = custom_images.cluttered_photo_and_coverage(images[0], np.random.default_rng(5))
    assert np.array_equal(np.asarray(photo), np.asarray(same))
    assert coverage.shape == (photo.height, photo.width)
    assert 0 < (coverage > 0.2).mean() < 0.8
    x, y = surface_mask.composites(images[:4], seed=7, workers=1)
    assert x.shape == (4, surface_mask.INPUT, surface_mask.INPUT, 4)
    assert y.shape == (4, surface_mask.INPUT, surface_mask.INPUT) and y.dtype == bool
    assert 0 <= float(x[..., 3].min()) and float(x[..., 3].max()) <= 1
    # The item is where the surface distance is high, and the true mask says so.
    assert x[..., 3][y].mean() > x[..., 3][~y].mean() + 0.05


def test_the_shipped_network_was_trained_for_todays_input():
    """The network's input depends on the conversion's settings: if one changed since it was
    trained, it must be retrained (`python -m fmnist_lib train-surface-mask`)."""
    record = json.loads(surface_mask.RECORD.read_text())
    assert record["inputs"] == surface_mask.inputs()
    shape = masking._network().get_inputs()[0].shape
    assert list(shape[1:]) == [surface_mask.INPUT, surface_mask.INPUT, 4]
    for key in ["composites", "epochs", "minutes", "rendering minutes", "machine"]:
        assert record[key]  # chapter 6 glues these
    assert 0.5 < record["item IoU"] < record["pixels right"] <= 1


def test_the_shipped_network_gives_a_chance_for_each_pixel_of_the_working_copy(images):
    photo, coverage = custom_images.cluttered_photo_and_coverage(
        images[1], np.random.default_rng(11)
    )
    rgb = preprocess.light_backdrop_copy(photo).astype(np.float32)
    backdrop = preprocess.backdrop_model(rgb)
    chance = masking.network_chance(rgb, backdrop, masking.surface_distance(rgb, backdrop))
    assert chance.shape == rgb.shape[:2] and chance.dtype == np.float32
    assert 0 <= chance.min() and chance.max() <= 1
    from PIL import Image

    truth = np.asarray(Image.fromarray(coverage).resize(rgb.shape[1::-1])) > 0.2
    assert chance[truth].mean() > chance[~truth].mean() + 0.3


@pytest.mark.slow
def test_the_training_command_writes_a_network_onnxruntime_runs(tmp_path):
    """A tiny training through the command line: the file is written whole, elsewhere than
    the library's own network, and runs on the network's input."""
    from fmnist_lib.model_files import onnx_session

    shipped = surface_mask.FILE.read_bytes()
    path = tmp_path / "mask.onnx"
    result = subprocess.run(
        [sys.executable, "-m", "fmnist_lib", "train-surface-mask", "--composites", "24"]
        + ["--epochs", "1", "--output", str(path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "of held-out pixels right" in result.stdout
    assert surface_mask.FILE.read_bytes() == shipped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.json", "mask.onnx"]  # no draft
    record = json.loads((tmp_path / "mask.json").read_text())
    assert record["composites"] == 24 and 0 <= record["pixels right"] <= 1
    assert record["minutes"] > 0 and record["machine"]
    session = onnx_session(path)
    x = np.random.default_rng(0).random((2, surface_mask.INPUT, surface_mask.INPUT, 4))
    out = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]
    assert out.shape == (2, surface_mask.INPUT, surface_mask.INPUT, 1)
    assert ((0 <= out) & (out <= 1)).all()


@pytest.mark.slow
def test_an_export_that_differs_from_keras_writes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "mask.onnx"
    path.write_bytes(b"the previous network")
    monkeypatch.setattr(surface_mask, "TOLERANCE", -1.0)  # any difference is too much
    check = np.zeros((1, surface_mask.INPUT, surface_mask.INPUT, 4), dtype=np.float32)
    with pytest.raises(RuntimeError, match="differs from Keras"):
        surface_mask.export(surface_mask.network(), path, check)
    assert path.read_bytes() == b"the previous network"
    assert [p.name for p in tmp_path.iterdir()] == ["mask.onnx"]


def _blob(shape, rows, cols) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    return mask


def test_only_the_pieces_the_clusters_vouch_for_are_kept(monkeypatch):
    """A dark square on a fine carpet: the clusters find it. A second piece the network draws
    far from anything the clusters see is its guess on an unknown surface, and is dropped; with
    no vouched piece at all, the clusters' own mask is the answer."""
    from scipy import ndimage

    noise = ndimage.gaussian_filter(np.random.default_rng(0).normal(0, 1, (256, 256)), 1.5)
    surface = np.clip(170 + 18 * noise / noise.std(), 0, 255)
    rgb = np.repeat(surface[..., None], 3, axis=2).astype(np.float32)
    item = _blob((256, 256), slice(80, 180), slice(60, 140))
    rgb[item] = 60
    backdrop = preprocess.backdrop_model(rgb)
    stray = _blob((256, 256), slice(20, 60), slice(190, 240))

    def network(pieces):
        def chance(rgb, backdrop, distance):
            return np.where(pieces, np.float32(1), np.float32(0))

        return chance

    monkeypatch.setattr(masking, "SURFACE_FLOOR", float("-inf"))  # the network's pieces as drawn
    monkeypatch.setattr(masking, "network_chance", network(item | stray))
    mask = masking._textured_mask(rgb, backdrop)
    assert (mask & item).sum() == item.sum() and not (mask & stray).any()
    monkeypatch.setattr(masking, "network_chance", network(stray))
    alone = masking._textured_mask(rgb, backdrop)
    assert not (alone & stray).any() and (alone & item).sum() > 0.8 * item.sum()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--composites", "5"], "at least 10 composites"),
        (["--epochs", "0"], "at least one epoch"),
        (["--output", "mask.json"], "give an .onnx file"),
        (["--output", ""], "give an .onnx file"),
        (["--output", "no/such/folder/mask.onnx"], "give an .onnx file"),
    ],
)
def test_the_training_command_refuses_bad_arguments_before_any_work(arguments, message, capsys):
    from fmnist_lib.__main__ import main

    shipped = surface_mask.FILE.read_bytes()
    assert main(["train-surface-mask", *arguments]) == 1
    assert message in capsys.readouterr().err
    assert surface_mask.FILE.read_bytes() == shipped
