"""The data layer: IDX parsing and its errors, checksums, search order, download, splits."""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from idxfiles import DEBIAN_DIR, idx_bytes, write_idx

from fmnist_lib import acquisition, config
from fmnist_lib.acquisition import (
    IDX_FILES,
    DatasetError,
    download_file,
    find_data,
    load_raw,
    parse_idx,
    read_idx_file,
    read_payload,
)
from fmnist_lib.data import load_fashion_mnist, stratified_split

TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = IDX_FILES


# --- Parsing small files the tests write themselves -------------------------------------------


@pytest.mark.parametrize("name", ["train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"])
def test_good_image_file_round_trips(tmp_path, images, name):
    path = write_idx(tmp_path / name, idx_bytes(images))
    parsed = parse_idx(read_payload(path), path, ndim=3)
    assert parsed.dtype == np.uint8 and parsed.shape == (5, 28, 28)
    np.testing.assert_array_equal(parsed, images)


def test_good_label_file_round_trips(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    path = write_idx(tmp_path / "labels.gz", idx_bytes(labels))
    np.testing.assert_array_equal(parse_idx(read_payload(path), path, ndim=1), labels)


def _error(path, ndim=3) -> str:
    with pytest.raises(DatasetError) as info:
        parse_idx(read_payload(path), path, ndim=ndim)
    message = str(info.value)
    assert str(path) in message, "the error must name the file"
    return message


def test_truncated_payload(tmp_path, images):
    path = write_idx(tmp_path / "train-images-idx3-ubyte.gz", idx_bytes(images)[:-100])
    assert "truncated" in _error(path)


def test_payload_longer_than_header(tmp_path, images):
    path = write_idx(tmp_path / "train-images-idx3-ubyte.gz", idx_bytes(images) + b"\0" * 7)
    assert "longer than its header says" in _error(path)


def test_truncated_gzip(tmp_path, images):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(images))[:-40])
    assert "truncated or corrupt" in _error(path)


def test_gz_name_but_not_gzip(tmp_path, images):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(idx_bytes(images))
    assert "not a gzip file" in _error(path)


def test_wrong_magic(tmp_path, images):
    path = write_idx(tmp_path / "x.gz", idx_bytes(images, magic_prefix=0x1234))
    assert "not an IDX file" in _error(path)


def test_wrong_dtype_code(tmp_path, images):
    path = write_idx(tmp_path / "x.gz", idx_bytes(images, dtype_code=0x0D))
    assert "not unsigned bytes" in _error(path)


def test_label_file_under_an_image_name(tmp_path):
    path = write_idx(
        tmp_path / "train-images-idx3-ubyte.gz", idx_bytes(np.zeros(10, dtype=np.uint8))
    )
    message = _error(path, ndim=3)
    assert "expected an image file" in message and "misnamed" in message


def test_images_of_the_wrong_size(tmp_path):
    path = write_idx(tmp_path / "x.gz", idx_bytes(np.zeros((2, 32, 32), dtype=np.uint8)))
    assert "not 28x28" in _error(path)


def test_empty_file(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(b"")
    assert "too short" in _error(path, ndim=1)


def test_wrong_checksum_names_the_file(tmp_path, images):
    path = write_idx(tmp_path / TRAIN_IMAGES.filename, idx_bytes(images))
    with pytest.raises(DatasetError, match="does not match the published") as info:
        read_idx_file(path, TRAIN_IMAGES)
    assert str(path) in str(info.value)


def test_loader_reports_a_bad_file_in_the_data_dir(isolated_search, images):
    isolated_search.mkdir()
    for spec in IDX_FILES:
        array = images if spec.ndim == 3 else np.zeros(5, dtype=np.uint8)
        write_idx(isolated_search / spec.filename, idx_bytes(array))
    with pytest.raises(DatasetError, match="does not match the published"):
        load_raw(download=False)


# --- The real dataset --------------------------------------------------------------------------


def test_debian_copy_end_to_end(tmp_path, monkeypatch):
    """Debian's recompressed files pass the content checksums and load as Fashion-MNIST."""
    monkeypatch.delenv("FMNIST_DATA_DIR", raising=False)
    monkeypatch.setattr(acquisition, "DATA_CACHE", tmp_path / "empty-cache")
    source = find_data(download=False)
    assert source.directory == DEBIAN_DIR and "Debian" in source.description
    raw = acquisition._load_raw_from(source)
    assert raw.train_images.shape == (60000, 28, 28) and raw.test_images.shape == (10000, 28, 28)
    assert raw.train_labels.shape == (60000,) and raw.test_labels.shape == (10000,)
    np.testing.assert_array_equal(np.bincount(raw.test_labels), [1000] * 10)


def test_splits_are_stratified_and_disjoint():
    data = load_fashion_mnist()
    assert len(data.y_train) == 54000 and len(data.y_val) == 6000 and len(data.y_test) == 10000
    np.testing.assert_array_equal(np.bincount(data.y_val), [600] * 10)
    raw = load_raw()
    train_idx, val_idx = stratified_split(raw.train_labels, 6000, config.SEED)
    assert not set(train_idx) & set(val_idx)
    np.testing.assert_array_equal(data.x_val, raw.train_images[val_idx])


def test_dataset_is_loaded_once_per_process():
    assert load_fashion_mnist() is load_fashion_mnist()
    assert load_raw() is load_raw()


def test_keras_and_sklearn_views():
    data = load_fashion_mnist()
    x, y = data.keras("val")
    assert x.shape == (6000, 28, 28, 1) and x.dtype == np.float32
    assert 0.0 == x.min() and x.max() == 1.0 and y.dtype == np.int64
    x, y = data.sklearn("test")
    assert x.shape == (10000, 784) and x.dtype == np.float32 and x.max() == 1.0
    with pytest.raises(ValueError, match="split must be one of"):
        data.split("training")


def test_quick_profile_samples_each_split_and_its_validation_images_are_the_full_ones():
    data = load_fashion_mnist()
    quick = data.for_profile(config.profile_named("quick"))
    assert (len(quick.y_train), len(quick.y_val), len(quick.y_test)) == (2000, 1000, 500)
    np.testing.assert_array_equal(np.bincount(quick.y_train), [200] * 10)
    np.testing.assert_array_equal(np.bincount(quick.y_val), [100] * 10)
    full_val = {image.tobytes() for image in data.x_val}
    assert all(image.tobytes() in full_val for image in quick.x_val)
    full = data.for_profile(config.profile_named("full"))
    assert full.x_train is data.x_train and full.x_val is data.x_val


def test_stratified_split_is_exact_and_deterministic():
    labels = np.repeat(np.arange(3), [50, 30, 20])
    kept, taken = stratified_split(labels, 11, seed=1)
    assert len(taken) == 11 and len(kept) == 89
    assert sorted(np.concatenate([kept, taken])) == list(range(100))
    np.testing.assert_array_equal(np.bincount(labels[taken]), [6, 3, 2])
    np.testing.assert_array_equal(stratified_split(labels, 11, seed=1)[1], taken)
    assert not np.array_equal(stratified_split(labels, 11, seed=2)[1], taken)


# --- Downloading from a real server on 127.0.0.1 -----------------------------------------------


def test_download_into_empty_dir(isolated_search, serve, monkeypatch):
    monkeypatch.setenv("FMNIST_MIRROR", serve(DEBIAN_DIR))
    source = find_data(download=True)
    assert source.directory == isolated_search and source.description == "downloaded"
    assert sorted(p.name for p in isolated_search.iterdir()) == sorted(
        spec.filename for spec in IDX_FILES
    )
    # What was downloaded is found again next time, without a download.
    monkeypatch.setenv("FMNIST_MIRROR", "http://127.0.0.1:9/")
    assert find_data(download=False).directory == isolated_search


def test_download_falls_back_to_the_next_mirror(tmp_path, serve, monkeypatch):
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    monkeypatch.setenv("FMNIST_MIRROR", f"{serve(empty)},{serve(DEBIAN_DIR)}")
    path = download_file(TEST_LABELS, tmp_path / "out", progress=False)
    assert path.name == TEST_LABELS.filename and path.stat().st_size > 0


def _assert_nothing_left(directory):
    assert list(directory.iterdir()) == [], "a failed download must leave no file behind"


def test_download_of_a_corrupt_file_leaves_nothing(tmp_path, serve, monkeypatch, images):
    mirror = tmp_path / "bad-mirror"
    mirror.mkdir()
    write_idx(mirror / TRAIN_IMAGES.filename, idx_bytes(images))
    monkeypatch.setenv("FMNIST_MIRROR", serve(mirror))
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match="fails its checksum"):
        download_file(TRAIN_IMAGES, out, progress=False)
    _assert_nothing_left(out)


def test_interrupted_download_leaves_nothing(tmp_path, serve, monkeypatch):
    monkeypatch.setenv("FMNIST_MIRROR", serve(DEBIAN_DIR, truncate=True))
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=r"received \d+ of \d+ bytes"):
        download_file(TRAIN_LABELS, out, progress=False)
    _assert_nothing_left(out)


def test_offline_download_says_what_to_do(tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("FMNIST_MIRROR", f"http://127.0.0.1:{port}/")
    out = tmp_path / "out"
    with pytest.raises(DatasetError) as info:
        download_file(TEST_LABELS, out, progress=False)
    message = str(info.value)
    assert "offline" in message and "dataset-fashion-mnist" in message
    _assert_nothing_left(out)


# --- The command line --------------------------------------------------------------------------


def _run_cli(env_extra):
    env = {**os.environ, **env_extra}
    return subprocess.run(
        [sys.executable, "-m", "fmnist_lib.data"], env=env, capture_output=True, text=True
    )


def test_cli_prints_source_checksums_and_splits():
    result = _run_cli({"FMNIST_DATA_DIR": str(DEBIAN_DIR)})
    assert result.returncode == 0, result.stderr
    assert str(DEBIAN_DIR) in result.stdout
    assert result.stdout.count("verified") == 4
    assert "train  54000" in result.stdout and "test   10000" in result.stdout


def test_cli_reports_a_corrupt_file_without_a_traceback(tmp_path):
    for spec in IDX_FILES:
        (tmp_path / spec.filename).write_bytes((DEBIAN_DIR / spec.filename).read_bytes())
    corrupt = tmp_path / TRAIN_LABELS.filename
    corrupt.write_bytes(corrupt.read_bytes()[:-50])
    result = _run_cli({"FMNIST_DATA_DIR": str(tmp_path)})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert str(corrupt) in result.stderr and "truncated or corrupt" in result.stderr
