"""The benchmarks run and report sane figures (smoke runs: speed is not asserted)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from chromium import CHROMIUM, HAVE_CHROMIUM, MISSING

from fmnist_lib import masking
from fmnist_lib.config import PROJECT_ROOT

# A real `streamlit run` in Chromium.
pytestmark = pytest.mark.slow


def run_benchmark(script: str, store: str, *args: str, timeout=None, **variables):
    """``benchmarks/<script>`` with ``args`` in a process of its own, on the MLflow store
    ``store``; its output captured."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, **variables}
    command = [sys.executable, str(PROJECT_ROOT / "benchmarks" / script), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.skipif(not HAVE_CHROMIUM, reason=MISSING)
def test_the_app_benchmark_prints_its_figures(app_store):
    result = run_benchmark(
        "app_speed.py",
        app_store[0],
        "--repeats",
        "3",
        "--cold-runs",
        "1",
        timeout=300,
        CHROMIUM=CHROMIUM,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert f"Model: {app_store[1][0].label}" in out
    warm = dict(re.findall(r"^  (.+?)\s+([\d.]+) ms", out, flags=re.M))
    assert {"28x28 PNG: model", "28x28 PNG: decode + preprocess"} <= set(warm)
    assert any(name.startswith("saliency map (") for name in warm)  # both models are networks
    assert all(0 < float(ms) < 10_000 for ms in warm.values())
    cold = dict(
        re.findall(
            r"^  (server answers|uploader shown|first prediction)\s+([\d.]+) s", out, flags=re.M
        )
    )
    assert (
        0
        < float(cold["server answers"])
        <= float(cold["uploader shown"])
        <= float(cold["first prediction"])
        < 300
    )
    assert re.search(r"Target: first prediction within 10 s: (met|missed)", out)
    # The first prediction does without TensorFlow: it loads for the saliency maps only.
    assert re.search(r"maps are turned on:\n  import TensorFlow +[\d.]+ s", out)


def test_the_app_benchmark_says_when_there_is_no_model(tmp_path):
    result = run_benchmark("app_speed.py", f"sqlite:///{tmp_path / 'empty.db'}")
    assert result.returncode == 1 and "python -m fmnist_lib register" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_load_benchmark_prints_its_tables(app_store):
    """Locust against a real `python -m fmnist_lib serve`: every worst-case request gets its
    expected answer, and the tables are printed (a smoke run: speed is not asserted)."""
    result = run_benchmark("load.py", app_store[0], "--smoke", timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    worst = dict(re.findall(r"^\| ([^|]+?) \| (\d+) \|", out, flags=re.M))
    assert worst["png"] == "200" and worst["phone jpeg"] == "200"
    assert worst["body of 40 MB"] == worst["32 MB of numbers"] == "413"
    assert worst["bomb 15000x15000"] == worst["1000 images"] == "400"
    growth = re.search(r"Largest growth: (\d+) MB", out)
    assert growth and 0 <= int(growth.group(1)) < 2000
    assert "| healthy (hostile beside) | 2 |" in out
    assert "The server answered a healthy request right after every run." in out


@pytest.mark.skipif(not HAVE_CHROMIUM, reason=MISSING)
def test_the_app_memory_benchmark_prints_its_figures(app_store):
    result = run_benchmark(
        "app_memory.py",
        app_store[0],
        "--uploads",
        "2",
        "--per-run",
        "1",
        "--maps",  # the longer path; the app's default (no maps) is test_browser's
        timeout=600,
        CHROMIUM=CHROMIUM,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    assert "saliency maps on (TensorFlow loaded)" in out
    assert re.search(r"run +2: +2 uploads", out)
    assert re.search(r"25 files at once: the message after [\d.]+ s", out)
    assert re.search(r"Target: peak during the uploads under 1024 MB: (met|missed)", out)


def test_the_mask_benchmark_prints_its_choice_and_timing(app_store):
    result = run_benchmark(
        "masks.py", app_store[0], "--photos", "10", "--repeats", "2", timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    kept = f"network {masking.ITEM_CHANCE:g}, floor {masking.SURFACE_FLOOR:g} (kept)"
    rows = re.findall(r"^  (plain|studio|cluttered) +(.+?) +([\d.]+)% +([\d.]+)%", out, re.M)
    assert {(style, kept) for style in ("plain", "studio", "cluttered")} <= {r[:2] for r in rows}
    assert all(0 <= float(r[2]) <= 100 for r in rows)
    assert re.search(r"1000x1000 cluttered JPEG, decode \+ full conversion: p50: [\d.]+ ms", out)
    assert re.search(r"Target: <= 100 ms: (met|missed)", out)
