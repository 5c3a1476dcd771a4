"""Team mode: a real `mlflow server` on 127.0.0.1 (its own database and artifact store), the
library pointed at it by MLFLOW_TRACKING_URI alone. Training, comparison, registry and loading
the champion work unchanged, and every file goes through the server."""

from __future__ import annotations

import pytest

from fmnist_lib import registry, serving, tracking
from fmnist_lib.config import Profile
from fmnist_lib.data import load_fashion_mnist
from fmnist_lib.processes import BIN, env_with, free_port, running
from fmnist_lib.training import train

# A real `mlflow server`, and models trained through it.
pytestmark = pytest.mark.slow

TINY = Profile(name="tiny", train_size=600, test_size=200, epochs=1)


@pytest.fixture
def server(tmp_path, monkeypatch):
    port = free_port()
    artifacts = tmp_path / "server-artifacts"
    command = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}"]
    command += ["--artifacts-destination", str(artifacts), "--workers", "1"]
    url = f"http://127.0.0.1:{port}"
    with running(command, f"{url}/health", tmp_path / "server.log", env=env_with()):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        # The client works in a folder of its own: nothing may land beside it.
        client_dir = tmp_path / "client"
        client_dir.mkdir()
        monkeypatch.chdir(client_dir)
        yield artifacts, client_dir


def test_train_compare_register_and_serve_through_a_tracking_server(server):
    artifacts, client_dir = server
    result = train("rf", profile=TINY, n_estimators=50)  # custom: compared, not registered
    best = train("rf", profile=TINY)

    runs = tracking.latest_runs("tiny", ["rf"], require=True)
    assert runs.loc["rf", "run_id"] == best.run_id
    assert set(tracking.find_runs("tiny")["run_id"]) == {result.run_id, best.run_id}

    table = registry.register_best()
    assert table["action"].tolist() == ["registered"]
    assert registry.champion()["run_id"] == best.run_id

    data = load_fashion_mnist().for_profile(TINY)
    out = serving.load(registry.CHAMPION_URI).classify(data.x_test)
    assert (out["class_id"].to_numpy() == data.y_test).mean() == pytest.approx(best.accuracy)

    # Models and figures went to the server's artifact store, nothing to the client's disk.
    stored = {p.name for p in artifacts.rglob("*") if p.is_file()}
    assert {"MLmodel", "model.skops", "confusion_matrix.png"} <= stored
    assert not any(client_dir.iterdir())
