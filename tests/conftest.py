"""Shared fixtures: small IDX files written on the fly, a real HTTP server on 127.0.0.1, and an
MLflow store with two tiny registered models for the app's tests."""

from __future__ import annotations

import http.server
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from fmnist_lib import data as data_module


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)


@pytest.fixture
def isolated_search(tmp_path, monkeypatch):
    """Point every place the loader searches at empty folders under tmp_path, so that only
    what a test puts there (or downloads) is found. Returns the download folder."""
    empty = tmp_path / "nowhere"
    monkeypatch.setattr(data_module, "DATA_CACHE", tmp_path / "cache")
    monkeypatch.setattr(data_module, "DEBIAN_DIR", empty)
    monkeypatch.setattr(data_module, "KERAS_DIR", empty)
    target = tmp_path / "data"
    monkeypatch.setenv("FMNIST_DATA_DIR", str(target))
    return target


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


class _TruncatingHandler(_Handler):
    """Announces the full length, sends half, then hangs up: an interrupted download."""

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def serve():
    """Start a real HTTP server on 127.0.0.1 serving a folder; returns its base URL."""
    servers = []

    def start(directory: Path, truncate: bool = False) -> str:
        handler = partial(_TruncatingHandler if truncate else _Handler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def app_store(tmp_path_factory):
    """A store holding a tiny CNN and a tiny dense network (1,200 training images, one epoch),
    both registered, the better one champion. Returns its URI and the models as the app lists
    them, the champion first."""
    from fmnist_lib import registry
    from fmnist_lib.config import Profile
    from fmnist_lib.training import train

    tiny = Profile(name="tiny", train_size=1200, test_size=200, epochs=1)
    uri = f"sqlite:///{tmp_path_factory.mktemp('app-store') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        train("cnn", profile=tiny)
        train("dense", profile=tiny)
        registry.register_best()
        return uri, registry.registered_models()
