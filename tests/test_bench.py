"""The benchmark command runs every section and writes its table (a smoke run: speed is not
asserted, only that each figure is there and sane)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fmnist_lib.config import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "benchmarks" / "bench.py"
sys.path.insert(0, str(SCRIPT.parent))
import bench  # noqa: E402  (a script in benchmarks/, not a package)
import common  # noqa: E402


@pytest.mark.slow
def test_a_smoke_run_measures_every_section_and_writes_json(app_store, tmp_path):
    out = tmp_path / "results.json"
    env = {**os.environ, "MLFLOW_TRACKING_URI": app_store[0]}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(out.read_text())
    rows = {row["measure"]: row for row in document["rows"]}
    assert {row["section"] for row in document["rows"]} == set(bench.SECTIONS)
    for measure in (
        "cnn: plain, seconds per epoch",
        "cnn: library, seconds per epoch",
        "cnn: library, share of FP32 peak",
        "one 28x28 PNG, decode + preprocess: p50",
        "one 28x28 PNG, model: p50",
        "one image, naive Keras model.predict: p50",
        "process start to first answer",
        "1 worker, 4 clients: requests/s",
        "2 workers, 16 clients: requests/s",
        "2 workers, 4 clients, 64 images per request: images/s",
        "in process, 64 images per call: images/s",
        "2 workers over 1, 4 clients: requests/s",
        "quick: 00_smoke",
    ):
        assert 0 < rows[measure]["value"] < 1e7, measure
    for workers in ("1 worker", "2 workers"):
        for clients in (1, 4, 16):
            assert rows[f"{workers}, {clients} clients: errors"]["value"] == 0
            assert rows[f"{workers}, {clients} clients: errors"]["met"] is True
        assert rows[f"{workers}, 4 clients, 64 images per request: errors"]["met"] is True
    assert 0 < rows["cnn: library, share of FP32 peak"]["value"] < 100
    assert document["machine"]["cores"] >= 1 and "onnxruntime" in document["machine"]["versions"]
    assert "| section | measure |" in result.stdout  # the table, as the README shows it
    assert not list(tmp_path.glob(".*.tmp"))  # written whole


def test_unknown_sections_and_a_missing_model_are_told_not_raised(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'empty.db'}"}
    run = [sys.executable, str(SCRIPT), "--json", str(tmp_path / "r.json")]
    result = subprocess.run([*run, "--sections", "speed"], capture_output=True, text=True, env=env)
    assert result.returncode == 2 and "unknown section" in result.stderr
    result = subprocess.run([*run, "--sections", "api"], capture_output=True, text=True, env=env)
    assert result.returncode == 1 and "python -m fmnist_lib register" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "r.json").exists()


def test_both_scripts_share_the_targets_and_a_smoke_run_applies_only_the_error_ones():
    app = (SCRIPT.parent / "app_speed.py").read_text()
    assert "from common import" in app and "TARGET_" not in app
    rate = "1 worker, 4 clients: requests/s"
    assert common.met(rate, 301.0) and not common.met(rate, 1)
    assert common.met("cnn: library, seconds per epoch", 9.0) is False
    # Both networks' library path is held to plain model.fit's speed, as before the move.
    assert common.met("dense: library speed-up over plain model.fit", 0.98) is False
    assert common.met("no such measure", 1.0) is None
    smoke = bench.Report(smoke=True)
    assert smoke.add("api", rate, 1.0, "req/s").met is None
    assert smoke.add("api", "2 workers, 4 clients: errors", 1, "", always=True).met is False
    assert bench.Report().add("api", rate, 1.0, "req/s").met is False


def test_flops_of_a_network_come_from_its_layer_shapes():
    from fmnist_lib import models

    network = models.build_dropout_cnn(filters=(32, 64), dense_units=128)
    conv1 = 2 * 3 * 3 * 1 * 32 * 28 * 28  # "same" 3x3 convolutions, each followed by a 2x2 pool
    conv2 = 2 * 3 * 3 * 32 * 64 * 14 * 14
    dense = 2 * (7 * 7 * 64) * 128 + 2 * 128 * 10
    assert bench.forward_flops(network) == conv1 + conv2 + dense


def test_recorded_fit_times_come_from_full_profile_runs_and_an_empty_store_adds_none(
    tmp_path, monkeypatch
):
    import mlflow

    from fmnist_lib import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    report = bench.Report()
    bench.recorded_fits(report, ["rf", "svm-hog"])  # a fresh clone's store: no run at all
    assert report.rows == []
    tracking.use_experiment()
    for profile, seconds in (("full", 120.0), ("quick", 3.0)):
        tags = {"profile": profile, "model": "rf", "variant": "default"}
        with mlflow.start_run(tags=tags):
            mlflow.log_metric("fit_time_s", seconds)
    bench.recorded_fits(report, ["rf", "svm-hog"])
    assert [(row.measure, row.value) for row in report.rows] == [
        ("rf: fit (newest full-profile MLflow run)", 120.0)
    ]
