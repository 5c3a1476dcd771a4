"""The REST API: MLflow's scoring server (what `mlflow models serve` runs) on a model, in this
process or, for the length of a ``with`` block, in a process of its own."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from . import _compat, artifact, limits, tracking


def serve_api(model: str, host: str = "127.0.0.1", port: int = 5001, workers: int = 1) -> None:
    """Serve ``model`` (a local model folder or a ``models:/`` or ``runs:/`` URI) as the REST API
    of `mlflow models serve`: MLflow's own scoring app under uvicorn, until interrupted, with
    ``workers`` processes (see `_compat.TcpConfig` for why not through ``mlflow models serve``)
    and the limits of `limits` in front. With several workers, uvicorn's supervisor starts a
    new one in place of one that dies."""
    import uvicorn
    from mlflow.utils.file_utils import path_to_local_file_uri
    from uvicorn.supervisors import Multiprocess

    with tempfile.TemporaryDirectory() as scratch:
        # A copy of its own, checked: a worker (re)started later loads exactly what was checked.
        folder = Path(scratch, "model")
        if Path(model).is_dir():
            shutil.copytree(model, folder, symlinks=True)
        else:
            folder = Path(tracking.download(model, str(folder)))
        artifact.verify(folder, model)  # MLflow's app would run the code the folder carries
        _compat.serve_model_at(path_to_local_file_uri(str(folder)))
        config = _compat.TcpConfig(
            "fmnist_lib.limits:app",
            host=host,
            port=port,
            workers=workers,
            limit_concurrency=limits.MAX_CONNECTIONS,
        )
        if workers > 1:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        else:
            uvicorn.Server(config).run()


@contextmanager
def api_server(model_uri: str, port: int | None = None, log: Path | None = None, workers: int = 1):
    """Serve ``model_uri`` as a REST API at 127.0.0.1 (`serve_api`, in a process of its own:
    ``python -m fmnist_lib serve``) for the length of a ``with`` block; yields its base URL once
    it answers. The same store as the library's is used; the server's output goes to ``log``
    (a temporary file by default).

    The model's files are fetched here first and the server started on that folder: it then
    starts about a second sooner, as it no longer opens the store itself."""
    import sys

    from .processes import env_with, free_port, running

    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    env = env_with(MLFLOW_TRACKING_URI=tracking.tracking_uri())
    with tempfile.TemporaryDirectory() as folder:
        local = tracking.download(model_uri, f"{folder}/model")
        artifact.verify(local, model_uri)  # a clear error here, not a server that dies
        command = [sys.executable, "-m", "fmnist_lib", "serve", local, "--port", str(port)]
        command += ["--workers", str(workers)]
        log = log or Path(folder) / "serve.log"
        with running(command, f"{url}/ping", log, env=env):
            yield url
