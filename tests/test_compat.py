"""The version workarounds in fmnist_lib/_compat.py: each still needed, each doing its job. A
failure here after a pin moved means a workaround can go."""

from __future__ import annotations

import os
import subprocess
import sys

from fmnist_lib import _compat


def test_streamlit_still_sets_mplbackend_on_import_and_restoring_undoes_it(monkeypatch):
    code = "import os, streamlit; print(os.environ.get('MPLBACKEND'))"
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "Agg", "streamlit no longer sets MPLBACKEND: drop the fix"
    monkeypatch.setenv("MPLBACKEND", "Agg")
    _compat.restore_mplbackend(None)
    assert "MPLBACKEND" not in os.environ
    _compat.restore_mplbackend("module://matplotlib_inline.backend_inline")
    assert os.environ["MPLBACKEND"] == "module://matplotlib_inline.backend_inline"


def test_importing_the_library_applies_the_process_wide_workarounds():
    code = (
        "import os, warnings; import fmnist_lib\n"
        "print(os.environ['MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR'])\n"
        "print(os.environ['MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS'])\n"
        "print(sum('IProgress' in str(f[1].pattern) for f in warnings.filters if f[1]))"
    )
    ours = ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS")
    env = {k: v for k, v in os.environ.items() if k not in ours}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["false", "1", "1"], out.stderr


# Counts MLflow's scans of the installed packages and prints the warnings of its pin check,
# first inside `fast_pin_check`, then without it, in a fresh process (the map is built once).
_PIN_CHECK = """
import logging
import importlib_metadata
from importlib.metadata import version
from mlflow.utils import requirements_utils as utils
from fmnist_lib import _compat

scans, warnings = [], []
scan = importlib_metadata.packages_distributions
importlib_metadata.packages_distributions = lambda: scans.append(1) or scan()
logging.getLogger(utils.__name__).addHandler(logging.Handler())
logging.getLogger(utils.__name__).handlers[-1].emit = lambda r: warnings.append(r.getMessage())
pins = ["numpy==0.0.1", f"pandas=={version('pandas')}", "no-such-package-here==1.0"]
with _compat.fast_pin_check():
    utils.warn_dependency_requirement_mismatches(pins)
print(len(scans), [w.count(" - ") for w in warnings])
utils.warn_dependency_requirement_mismatches(pins)
print(len(scans), [w.count(" - ") for w in warnings])
"""


def test_mlflows_pin_check_still_scans_every_package_and_the_fast_one_warns_the_same():
    out = subprocess.run([sys.executable, "-c", _PIN_CHECK], capture_output=True, text=True)
    inside, outside = out.stdout.splitlines()[-2:]
    # Inside the block: no scan, and the two wrong pins (a version, a missing package) warn.
    assert inside == "0 [2]", out.stderr
    # MLflow's own check: the same warning, after a scan. No scan: the workaround can go.
    assert outside == "1 [2, 2]", "MLflow no longer scans the packages: drop fast_pin_check"
