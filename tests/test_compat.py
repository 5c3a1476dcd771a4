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


def test_mlflow_still_compares_an_examples_columns_with_a_range_and_the_filter_hides_it():
    import warnings

    import pandas as pd
    from mlflow.models import utils

    frame = pd.DataFrame({"image": ["a"]})
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        utils._convert_dataframe_to_split_dict(frame)
    ranges = [w for w in seen if "Operation with range" in str(w.message)]
    assert ranges, "MLflow no longer compares columns with a range: drop the filter"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _compat.apply()
        utils._convert_dataframe_to_split_dict(frame)
    assert not [w for w in seen if "Operation with range" in str(w.message)]


def test_tqdm_still_has_no_notebook_bar_here_and_the_filter_hides_its_warning():
    import importlib.util
    import warnings

    from tqdm import TqdmWarning, notebook

    # tqdm.auto warns in a kernel when ipywidgets is missing: with it, drop the filter.
    assert importlib.util.find_spec("ipywidgets") is None, "ipywidgets is installed"
    assert notebook.IProgress is None
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _compat.apply()
        # As tqdm.autonotebook raises it (stacklevel 2: attributed to tqdm.auto).
        warnings.warn_explicit(notebook.WARN_NOIPYW, TqdmWarning, "auto.py", 1, "tqdm.auto")
        warnings.warn_explicit("IProgress not found", TqdmWarning, "x.py", 1, "elsewhere")
    assert [w.filename for w in seen] == ["x.py"]  # only tqdm's own is silenced


# Seconds `mlflow.end_run` waits for the thread that writes asynchronously logged metrics, when
# the thread is in the middle of its poll (as after an epoch of a Keras fit).
_END_RUN = """
import tempfile, time, mlflow
mlflow.set_tracking_uri(f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")
mlflow.start_run()
mlflow.log_metrics({"loss": 1.0}, step=0, synchronous=False)
time.sleep(1.5)
start = time.perf_counter()
mlflow.end_run()
print(time.perf_counter() - start)
"""


def test_mlflows_metric_thread_still_delays_end_run_without_buffering():
    name = "MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    runs = [
        subprocess.Popen([sys.executable, "-c", _END_RUN], env=e, stdout=subprocess.PIPE, text=True)
        for e in (env, {**env, name: "1"})
    ]
    without, with_buffering = (float(run.communicate()[0].split()[-1]) for run in runs)
    assert with_buffering < 0.15
    assert without > 0.25, f"end_run waited {without:.2f} s: drop {name}"


def test_optuna_still_calls_its_heartbeat_experimental_and_the_block_hides_it(tmp_path):
    import warnings

    import optuna

    def experimental_warnings(block) -> int:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with block():
                url = f"sqlite:///{tmp_path}/optuna.db"
                optuna.storages.RDBStorage(url, heartbeat_interval=60)
        return sum(issubclass(w.category, optuna.exceptions.ExperimentalWarning) for w in seen)

    from contextlib import nullcontext

    assert experimental_warnings(nullcontext) > 0, "the heartbeat is stable: drop the block"
    assert experimental_warnings(_compat.optuna_experimental) == 0


# Exports a small network under -W error in a fresh process (the warning comes once per
# process): first bare, then inside `quiet_onnx_export`, where another warning still raises.
_ONNX_EXPORT = """
import tempfile, warnings
import keras, numpy as np
from fmnist_lib import _compat
warnings.simplefilter("error")
net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3),
                        keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
net(np.zeros((1, 8, 8, 1), np.float32))
folder = tempfile.mkdtemp()
try:
    net.export(f"{folder}/bare.onnx", format="onnx", verbose=False)
    print("bare: exported")
except Warning as warning:
    print("bare:", type(warning).__name__)
with _compat.quiet_onnx_export():
    net.export(f"{folder}/quiet.onnx", format="onnx", verbose=False)
    print("quiet: exported")
    try:
        warnings.warn("ours", UserWarning)
    except UserWarning:
        print("ours: raised")
"""


def test_onnx_export_still_warns_and_only_its_warnings_are_silenced():
    out = subprocess.run([sys.executable, "-c", _ONNX_EXPORT], capture_output=True, text=True)
    lines = [
        line for line in out.stdout.splitlines() if line.split(":")[0] in {"bare", "quiet", "ours"}
    ]
    assert lines[1:] == ["quiet: exported", "ours: raised"], out.stderr[-2000:]
    assert lines[0] != "bare: exported", "the export no longer warns: drop quiet_onnx_export"


# Saves scikit-learn-intelex's SVM with skops, in a process of its own: today that aborts it.
_INTELEX_DUMP = """
import sys, tempfile
import numpy as np, skops.io
from sklearnex.svm import SVC
x, y = np.random.default_rng(0).normal(size=(90, 5)), np.repeat([0, 1, 2], 30)
skops.io.dump(SVC().fit(x, y), tempfile.mkdtemp() + "/svm.skops")
print("saved")
"""


def test_skops_still_cannot_save_an_intelex_svm_and_its_libsvm_copy_answers_the_same(tmp_path):
    import numpy as np
    import pytest
    import skops.io

    intelex = pytest.importorskip("sklearnex.svm", reason="scikit-learn-intelex is x86-64 only")
    out = subprocess.run([sys.executable, "-c", _INTELEX_DUMP], capture_output=True, text=True)
    assert out.returncode != 0 and "saved" not in out.stdout, "skops saves it: drop with_libsvm"
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(90, 5)), np.repeat([0, 1, 2], 30)
    svm = intelex.SVC(C=10.0).fit(x, y)
    skops.io.dump(_compat.with_libsvm(svm), tmp_path / "libsvm.skops")
    loaded = skops.io.load(tmp_path / "libsvm.skops")
    np.testing.assert_array_equal(loaded.predict(x), svm.predict(x))
    np.testing.assert_allclose(loaded.decision_function(x), svm.decision_function(x), atol=1e-8)


def test_sqlite_still_ignores_select_for_update_and_begin_immediate_takes_the_lock(tmp_path):
    import inspect

    import optuna.storages._rdb.models as optuna_tables
    import pytest
    import sqlalchemy as sa
    from sqlalchemy.dialects import sqlite

    # Optuna claims a queued trial under SELECT ... FOR UPDATE; SQLite's dialect drops it.
    assert "with_for_update" in inspect.getsource(optuna_tables)
    locked = sa.select(sa.table("t", sa.column("x"))).with_for_update()
    sql = str(locked.compile(dialect=sqlite.dialect()))
    assert "FOR UPDATE" not in sql.upper(), "SQLite honours the lock: drop begin_immediate"
    url = f"sqlite:///{tmp_path}/db.sqlite"
    first, second = sa.create_engine(url), sa.create_engine(url, connect_args={"timeout": 0.1})
    for engine in (first, second):
        _compat.begin_immediate(engine)
    with first.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (x)")
    with first.begin(), pytest.raises(sa.exc.OperationalError, match="locked"):
        with second.begin():  # a second transaction waits for the first's write lock
            pass


def test_mlflows_scoring_app_still_reads_its_model_from_a_private_variable(monkeypatch):
    import importlib.util
    from pathlib import Path

    from mlflow.pyfunc import scoring_server

    name = scoring_server._SERVER_MODEL_PATH
    assert "SERVER_MODEL_PATH" not in dir(scoring_server), "public now: use it, drop the helper"
    monkeypatch.delenv(name, raising=False)
    app = _compat.serve_model_at("file:///models/m")
    assert os.environ[name] == "file:///models/m"
    # The app loads the model when imported: read its source instead.
    spec = importlib.util.find_spec(app.partition(":")[0])
    assert "_SERVER_MODEL_PATH" in Path(spec.origin).read_text()


def test_nbval_still_reads_its_notebooks_with_nbformat_and_the_block_hands_it_ours():
    import inspect

    import nbformat
    import nbval.plugin

    assert "nbformat.read(" in inspect.getsource(nbval.plugin.IPyNbFile.collect)
    notebook = nbformat.v4.new_notebook()
    with _compat.nbval_reading(notebook):
        assert nbval.plugin.nbformat.read("chapter.md", as_version=4) is notebook
    assert nbval.plugin.nbformat.read is nbformat.read


def test_the_api_server_socket_turns_on_tcp_nodelay_for_every_connection():
    """What keeps a multi-worker API from answering ~40 ms late: the listening socket uvicorn's
    supervisor hands its workers says it is TCP, so asyncio sets TCP_NODELAY on accepted
    connections (with uvicorn's own socket it does not: uvicorn issue #3149)."""
    import asyncio
    import pickle
    import socket

    import uvicorn

    def accepted_nodelay(config) -> tuple[int, int]:
        sock = config.bind_socket()
        seen = []

        class Probe(asyncio.Protocol):
            def connection_made(self, transport):
                accepted = transport.get_extra_info("socket")
                seen.append(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        async def main():
            server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
            port = sock.getsockname()[1]
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(1000):  # 10 s at most
                if seen:
                    break
                await asyncio.sleep(0.01)
            assert seen, "the server never accepted the connection"
            writer.close()
            server.close()
            await server.wait_closed()

        asyncio.run(main())
        return sock.proto, seen[0]

    ours = _compat.TcpConfig("x:app", host="127.0.0.1", port=0, workers=2)
    assert pickle.loads(pickle.dumps(ours)).bind_socket  # uvicorn sends it to each worker
    assert accepted_nodelay(ours) == (socket.IPPROTO_TCP, 1)
    # uvicorn's own: the bug this works around. When this fails, uvicorn fixed it.
    theirs = uvicorn.Config("x:app", host="127.0.0.1", port=0, workers=2)
    assert accepted_nodelay(theirs) == (0, 0)
