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
        "print(sum('IProgress' in str(f[1].pattern) for f in warnings.filters if f[1]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["false", "1"], out.stderr
