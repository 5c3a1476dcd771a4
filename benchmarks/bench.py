"""How fast the course, its models and the served artifact are on this machine.

    python benchmarks/bench.py [--sections training,inference,api,course] [--json PATH]
                               [--model URI] [--course-profile quick|full] [--smoke]

Prints one table (measure, value, target, met; the targets are in `common.TARGETS`, shared
with `app_speed.py`) and writes it as JSON (default
``benchmarks/results.json``) with the machine, the versions and the commit, so that runs on one
machine can be compared. Where a target is missed, the rows around it show where the time goes.
``--smoke`` runs every section on a few images, for the tests: its figures mean nothing.

Timings vary from run to run (up to 2x on a shared 2-core machine): compare figures from one
run, or from runs on a quiet machine.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from common import met, percentiles, target, timed

from fmnist_lib.config import PROJECT_ROOT, SEED, profile_named
from fmnist_lib.data import keras_input

SECTIONS = ("training", "inference", "api", "course")
DEFAULT_JSON = PROJECT_ROOT / "benchmarks" / "results.json"
BOOK = PROJECT_ROOT / "book"
ROUNDS = 2  # of the training timings


@dataclass
class Row:
    section: str
    measure: str
    value: float
    unit: str
    target: str = ""  # e.g. "<= 8"
    met: bool | None = None
    note: str = ""


class Report:
    def __init__(self, smoke: bool = False):
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.smoke = smoke  # a smoke run's figures mean nothing: no speed target applies

    def add(self, section, measure, value, unit, note="", always: bool = False) -> Row:
        """A figure, with its target from `common.TARGETS` if it has one (``always``: a target
        that holds in a smoke run too, such as no errors)."""
        found = target(measure) if always or not self.smoke else None
        text = f"{found[0]} {found[1]:g}" if found else ""
        verdict = met(measure, value) if found else None
        row = Row(section, measure, float(value), unit, text, verdict, note)
        self.rows.append(row)
        print(
            f"  {measure:<68} {_fmt(value):>9} {unit:<8} {text:<8} {_verdict(verdict)}", flush=True
        )
        return row

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def markdown(self) -> str:
        lines = ["| section | measure | value | unit | target | |", "|---|---|---:|---|---|---|"]
        for r in self.rows:
            lines.append(
                f"| {r.section} | {r.measure} | {_fmt(r.value)} | {r.unit} | {r.target} "
                f"| {_verdict(r.met)} |"
            )
        return "\n".join(lines)


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}".rstrip("0").rstrip(".")


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: ""}[met]


# --- the machine ---------------------------------------------------------------------------


def machine() -> dict:
    """Cores, clock, vector width, memory and versions: what the figures depend on."""
    info = {"python": platform.python_version(), "platform": platform.platform()}
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mhz = re.search(r"^cpu MHz\s*:\s*([\d.]+)$", cpuinfo, re.M)
    flags = set((re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M) or [None, ""])[1].split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    info.update(
        cpu=name[1].strip() if name else platform.processor(),
        cores=cores,
        clock_ghz=float(mhz[1]) / 1000 if mhz else float("nan"),
        fp32_lanes=lanes,
        fma="fma" in flags,
        bf16="avx512_bf16" in flags,
    )
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    from importlib.metadata import version

    info["versions"] = {n: version(n) for n in ("tensorflow-cpu", "keras", "onnxruntime", "mlflow")}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        info["commit"] = commit
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def peak_flops(info: dict) -> tuple[float, str]:
    """FP32 peak of the machine and the assumptions behind it."""
    units = 2  # FMA units per core: true of recent x86 server cores
    peak = info["cores"] * info["clock_ghz"] * 1e9 * info["fp32_lanes"] * 2 * units
    why = (
        f"{info['cores']} cores x {info['clock_ghz']:.2f} GHz x {info['fp32_lanes']} FP32 lanes "
        f"x 2 (FMA) x {units} FMA units = {peak / 1e9:.0f} GFLOP/s; a core that issues 512-bit "
        "FMAs as two halves (AMD Zen 4) has half that"
    )
    return peak, why


def forward_flops(model) -> int:
    """Multiply-adds x 2 of the convolutions and dense layers for one image (the rest of the
    network is a few percent)."""
    from keras import layers

    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            total += 2 * kh * kw * cin * cout * h * w
        elif isinstance(layer, layers.Dense):
            cin, cout = layer.kernel.shape
            total += 2 * cin * cout
    return int(total)


# --- training ------------------------------------------------------------------------------


def _epoch_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    return EpochTimer()


def _fit_pipeline(model, params: dict, data, epochs=None, callbacks=(), verbose=0, seed=SEED):
    """Compile ``model`` (see `catalogue.compile_keras`) and train it on ``data``'s training set
    through a `_batches` pipeline, validating after every epoch. Returns the Keras history.
    ``epochs`` (default ``params["epochs"]``) can stop early, e.g. to time one epoch; the
    learning-rate schedule still spans ``params["epochs"]``. ``seed`` draws the order of the
    training images."""
    from fmnist_lib.catalogue import compile_keras

    x, y = data.keras("train")
    compile_keras(model, params, len(x))
    return model.fit(
        _batches(x, y, params["batch_size"], seed=seed),
        validation_data=_batches(*data.keras("val"), 1024, shuffle=False),
        epochs=params["epochs"] if epochs is None else epochs,
        shuffle=False,  # the pipeline shuffles
        callbacks=list(callbacks),
        verbose=verbose,
    )


def _batches(x, y, batch_size: int, shuffle: bool = True, seed: int = SEED):
    """Images and labels as a `tf.data` pipeline of batches, reshuffled every epoch: TensorFlow
    shuffles the image numbers and gathers each batch in one operation, ahead of the training
    step."""
    import tensorflow as tf

    images, labels = tf.constant(x), tf.constant(y)
    order = tf.data.Dataset.range(len(x))
    if shuffle:
        order = order.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    batches = order.batch(batch_size).map(
        lambda i: (tf.gather(images, i), tf.gather(labels, i)),
        # One gather at a time cannot keep up with a small network's steps.
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return batches.prefetch(tf.data.AUTOTUNE)


def _keras_epoch(spec, params, data, path: str):
    """Seconds of the second epoch (the first one also traces the graphs) on one path:
    'plain' is model.fit on NumPy arrays as tutorials (and now the chapters) write it;
    'library' is `_fit_pipeline`, the `tf.data` pipeline the library trained with before the
    chapters wrote their fits; 'library, bfloat16' the same in mixed precision."""
    import keras

    precision = "mixed_bfloat16" if "bfloat16" in path else "float32"
    keras.mixed_precision.set_global_policy(precision)
    if "precision" in params:  # the catalogue's "auto" would choose for the CPU instead
        params = {**params, "precision": precision}
    try:
        keras.utils.set_random_seed(SEED)
        model = spec.build(params)
        timer = _epoch_timer()
        if path == "plain":
            model.compile(
                optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"]
            )
            x, y = data.keras("train")
            model.fit(
                x,
                y,
                batch_size=params["batch_size"],
                epochs=2,
                validation_data=data.keras("val"),
                callbacks=[timer],
                verbose=0,
            )
        else:
            _fit_pipeline(model, params, data, epochs=2, callbacks=[timer])
        return timer.seconds[-1], model
    finally:
        keras.mixed_precision.set_global_policy("float32")


def bench_training(report: Report, info: dict, smoke: bool, families: list[str]) -> None:
    from fmnist_lib.catalogue import MODELS
    from fmnist_lib.data import load_fashion_mnist

    full = profile_named("full")
    data = load_fashion_mnist().for_profile(full)
    if smoke:
        data = data.subset(1000, 200)
    n = len(data.y_train)
    print(
        f"Training: {n:,} images; each path's fastest of {ROUNDS} rounds of one epoch, after a "
        "first one that traces the graphs"
    )
    peak, why = peak_flops(info)
    for name in families:
        spec = MODELS[name]
        if spec.family == "keras":
            params = spec.default_params(full)
            paths = ["plain", "library"] + (["library, bfloat16"] if name == "cnn" else [])
            # Paths in turn, twice: a slow moment of a shared machine then hits each one, and
            # the fastest epoch of each is kept.
            seconds = {path: float("inf") for path in paths}
            for _ in range(1 if smoke else ROUNDS):
                for path in paths:
                    epoch, model = _keras_epoch(spec, params, data, path)
                    seconds[path] = min(seconds[path], epoch)
            per_image = forward_flops(model)  # the same network on every path
            for path in paths:
                report.add("training", f"{name}: {path}, seconds per epoch", seconds[path], "s")
                report.add("training", f"{name}: {path}, images/s", n / seconds[path], "img/s")
                if name == "cnn":
                    flops = 3 * per_image * n / seconds[path]  # forward + backward
                    report.add(
                        "training",
                        f"{name}: {path}, share of FP32 peak",
                        100 * flops / peak,
                        "%",
                        note=f"{flops / 1e9:.1f} GFLOP/s",
                    )
            report.add(
                "training",
                f"{name}: library speed-up over plain model.fit",
                seconds["plain"] / seconds["library"],
                "x",
            )
            if name == "cnn":
                report.note(f"peak: {why}")
                report.note(
                    f"cnn: {per_image / 1e6:.1f} MFLOP per image forward, x3 for a "
                    "training step (forward, gradients of activations and of weights)"
                )
        else:
            model = spec.builder(**spec.build_params, seed=SEED)
            x, y = data.sklearn("train")
            start = time.perf_counter()
            model.fit(x, y)
            seconds = time.perf_counter() - start
            report.add("training", f"{name}: fit on the training set", seconds, "s")
            report.add("training", f"{name}: images/s", n / seconds, "img/s")
    skipped = [m for m, spec in MODELS.items() if m not in families and spec.family == "sklearn"]
    if skipped and not smoke:
        recorded_fits(report, skipped)


def recorded_fits(report: Report, names: list[str]) -> None:
    """The fit times the newest full-profile runs of these models recorded; a store without
    such runs (a fresh clone) adds nothing."""
    from fmnist_lib import tracking

    runs = tracking.find_runs("full", variant="default")
    if runs.empty or "metrics.fit_time_s" not in runs:
        return
    for name in names:
        fits = runs.loc[runs["tags.model"] == name, "metrics.fit_time_s"].dropna()
        if len(fits):
            report.add(
                "training",
                f"{name}: fit (newest full-profile MLflow run)",
                float(fits.iloc[0]),
                "s",
                note="recorded, not measured here",
            )


# --- inference -----------------------------------------------------------------------------


def _rate(predict: Callable, batch) -> float:
    """Images per second of one ``predict(batch)``."""
    start = time.perf_counter()
    predict(batch)
    return len(batch) / (time.perf_counter() - start)


def _studio_jpeg(image: np.ndarray) -> bytes:
    """A test image rendered as a studio product photo (gradient, vignette, shadow, tilt),
    1000x1000, as a JPEG of quality 85: what a user uploads from a shop's page."""
    from PIL import Image

    from fmnist_lib import custom_images

    picture = custom_images.render_studio_photo(image, np.random.default_rng(0))
    return custom_images.encode(picture.resize((1000, 1000), Image.Resampling.BICUBIC), "JPEG", 85)


def bench_inference(report: Report, model_uri: str, smoke: bool) -> None:

    from fmnist_lib import artifact, preprocess, serving
    from fmnist_lib.acquisition import load_test_set

    images = load_test_set()[0]
    pngs = [preprocess.encode_png(image) for image in images]
    classifier = artifact.load(model_uri)
    print(f"Inference: {model_uri} through {classifier.backend}")
    repeats = 30 if smoke else 3000

    decode, model, total = [], [], []
    for i in range(repeats + 20):
        png = pngs[i % len(pngs)]
        start = time.perf_counter()
        image = preprocess.prepare(png)
        middle = time.perf_counter()
        classifier.predict_proba(image[np.newaxis])
        end = time.perf_counter()
        if i >= 20:  # warm-up
            decode.append(middle - start)
            model.append(end - middle)
            total.append(end - start)
    single = {"decode + preprocess": decode, "model": model, "total": total}
    for part, seconds in single.items():
        p50, p99 = percentiles(seconds)
        report.add("inference", f"one 28x28 PNG, {part}: p50", p50, "ms")
        report.add("inference", f"one 28x28 PNG, {part}: p99", p99, "ms")
    photo = _studio_jpeg(images[0])
    for label, segment in [("full conversion", True), ("dataset recipe alone", False)]:
        seconds = timed(
            lambda segment=segment: preprocess.to_fashion_mnist(preprocess.decode(photo), segment),
            10 if smoke else 300,
            warmup=3,
        )
        p50, p99 = percentiles(seconds)
        measure = f"one 1000x1000 studio JPEG, decode + {label}"
        report.add("inference", f"{measure}: p50", p50, "ms")
        report.add("inference", f"{measure}: p99", p99, "ms")
    p50, _ = percentiles(timed(lambda: classifier.classify([pngs[0]]), repeats // 3))
    report.add("inference", "one PNG through classify() (with its output table): p50", p50, "ms")
    pyfunc = artifact.load_pyfunc(model_uri)
    frame = serving.images_frame([base64.b64encode(pngs[0]).decode()])
    p50, _ = percentiles(timed(lambda: pyfunc.predict(frame), repeats // 3))
    report.add(
        "inference",
        "one base64 PNG through mlflow.pyfunc predict(): p50",
        p50,
        "ms",
        note="adds MLflow's schema check",
    )

    sizes = (100, 1000) if smoke else (1000, 10_000)
    classifier.classify(pngs[:100])  # the first batch of a new size sets up its buffers
    for size in sizes:
        report.add(
            "inference",
            f"batch of {size:,} arrays, model: images/s",
            _rate(classifier.predict_proba, images[:size]),
            "img/s",
        )
        report.add(
            "inference",
            f"batch of {size:,} PNGs, bytes to probabilities: images/s",
            _rate(classifier.classify, pngs[:size]),
            "img/s",
        )

    if classifier.family == "keras":
        network = classifier.model  # loads Keras (and TensorFlow) now, not before
        x = keras_input(images[:1])
        through_tf = serving.Classifier.from_model(network, "keras")
        p50, p99 = percentiles(timed(lambda: through_tf.predict_proba(images[:1]), repeats // 3))
        report.add("inference", "one image, model through a TensorFlow tf.function: p50", p50, "ms")
        naive = timed(lambda: network.predict(x, verbose=0), 10 if smoke else 200, warmup=5)
        p50, p99 = percentiles(naive)
        report.add("inference", "one image, naive Keras model.predict: p50", p50, "ms")
        report.add("inference", "one image, naive Keras model.predict: p99", p99, "ms")
        x = keras_input(images[: sizes[-1]])
        report.add(
            "inference",
            f"batch of {sizes[-1]:,}, naive Keras model.predict: images/s",
            _rate(lambda batch: network.predict(batch, batch_size=1024, verbose=0), x),
            "img/s",
        )


# --- the REST API --------------------------------------------------------------------------


def _load(url: str, body: bytes, clients: int, requests: int, seconds: float):
    """``clients`` threads, each with its own keep-alive connection, posting ``body`` until
    ``requests`` answers in all or ``seconds`` have passed. Returns (latencies, errors,
    elapsed)."""
    host, port = url.removeprefix("http://").split(":")
    latencies, errors, lock = [], [], threading.Lock()
    deadline = time.perf_counter() + seconds
    remaining = [requests]

    def client():
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        headers = {"Content-Type": "application/json"}
        while True:
            with lock:
                if remaining[0] <= 0 or time.perf_counter() > deadline:
                    break
                remaining[0] -= 1
            start = time.perf_counter()
            try:
                connection.request("POST", "/invocations", body, headers)
                response = connection.getresponse()
                answer = response.read()
                ok = response.status == 200 and b"class_name" in answer
            except (OSError, http.client.HTTPException) as err:
                ok, answer = False, repr(err).encode()
                connection.close()
                connection = http.client.HTTPConnection(host, int(port), timeout=30)
            with lock:
                (latencies if ok else errors).append(
                    time.perf_counter() - start if ok else answer[:200]
                )
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, time.perf_counter() - start


def _serve_and_load(report, url, single, batch, batch_size, workers, in_process, smoke):
    """Single-image requests at 1, 4 and 16 clients, then batched ones at 4 clients, on the
    server at ``url``. Returns {clients: requests/s} and the batched images/s."""
    label = f"{workers} worker{'s' if workers > 1 else ''}"
    rates = {}
    for clients in (1, 4, 16):
        count, seconds = (20, 10.0) if smoke else (4000, 15.0)
        latencies, errors, elapsed = _load(url, single, clients, count, seconds)
        rates[clients] = len(latencies) / elapsed
        p50, p99 = percentiles(latencies or [float("nan")])
        report.add("api", f"{label}, {clients} clients: requests/s", rates[clients], "req/s")
        report.add("api", f"{label}, {clients} clients: p50", p50, "ms")
        report.add("api", f"{label}, {clients} clients: p99", p99, "ms")
        report.add("api", f"{label}, {clients} clients: errors", len(errors), "", always=True)
        if clients == 1 and workers == 1:
            report.add(
                "api",
                "1 worker, 1 client: p50 spent outside the model (HTTP, JSON, server)",
                p50 - in_process,
                "ms",
                note=f"the model's pyfunc predict: {in_process:.2f} ms",
            )
        if errors:
            report.note(f"{label}, {clients} clients, first error: {errors[0]!r}")
    count, seconds = (4, 10.0) if smoke else (400, 15.0)
    latencies, errors, elapsed = _load(url, batch, 4, count, seconds)
    images = len(latencies) * batch_size / elapsed
    report.add(
        "api", f"{label}, 4 clients, {batch_size} images per request: images/s", images, "img/s"
    )
    report.add(
        "api",
        f"{label}, 4 clients, {batch_size} images per request: p50",
        percentiles(latencies or [float("nan")])[0],
        "ms",
    )
    report.add(
        "api",
        f"{label}, 4 clients, {batch_size} images per request: errors",
        len(errors),
        "",
        always=True,
    )
    return rates, images


def bench_api(report: Report, model_uri: str, smoke: bool) -> None:
    """The REST API (`api.api_server`: MLflow's scoring app under uvicorn) with 1 and 2
    worker processes: its start, and its load from a client of threads on keep-alive
    connections, each request sent in one write, single images and batches of 64."""
    import urllib.request

    from fmnist_lib import api, artifact, preprocess, serving
    from fmnist_lib.acquisition import load_test_set

    test_images = load_test_set()[0]
    encoded = [
        base64.b64encode(preprocess.encode_png(image)).decode() for image in test_images[:64]
    ]

    def body(images):
        return json.dumps(
            {"dataframe_split": {"columns": ["image"], "data": [[i] for i in images]}}
        ).encode()

    single, batch = body(encoded[:1]), body(encoded)
    # What the model itself costs per request, to tell it from the server's share.
    pyfunc = artifact.load_pyfunc(model_uri)
    one, many = serving.images_frame(encoded[:1]), serving.images_frame(encoded)
    in_process, _ = percentiles(timed(lambda: pyfunc.predict(one), 50 if smoke else 500))
    in_batch, _ = percentiles(timed(lambda: pyfunc.predict(many), 5 if smoke else 100))
    in_batch_rate = len(encoded) / (in_batch / 1000)
    report.add(
        "api",
        f"in process, {len(encoded)} images per call: images/s",
        in_batch_rate,
        "img/s",
        note="the pyfunc model's predict, no server",
    )
    results = {}
    for workers in (1, 2):
        print(f"REST API: {model_uri} on 127.0.0.1, {workers} worker(s)")
        start = time.perf_counter()
        with api.api_server(model_uri, workers=workers) as url:
            pinged = time.perf_counter() - start
            request = urllib.request.Request(
                f"{url}/invocations", single, {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
            started = time.perf_counter() - start
            if workers == 1:
                report.add("api", "process start to /ping answering", pinged, "s")
                report.add("api", "process start to first answer", started, "s")
                report.note(
                    "the API's start-up: fetching the model's files, then the server process "
                    "importing MLflow (1.5 s here) and loading the model"
                )
            results[workers] = _serve_and_load(
                report, url, single, batch, len(encoded), workers, in_process, smoke
            )
    for clients in (4, 16):
        ratio = results[2][0][clients] / max(results[1][0][clients], 1e-9)
        report.add("api", f"2 workers over 1, {clients} clients: requests/s", ratio, "x")
    best = max(results[1][1], results[2][1])
    report.add(
        "api",
        "batched requests, best: images/s over in-process",
        best / in_batch_rate,
        "x",
        note=f"in process {in_batch_rate:,.0f} images/s",
    )


# --- the course ----------------------------------------------------------------------------

# Runs one chapter in a fresh kernel; prints its seconds and the kernel's peak memory.
_CHAPTER_RUNNER = """
import resource, sys, time
import jupytext, nbclient
notebook = jupytext.read(sys.argv[1])
start = time.perf_counter()
nbclient.NotebookClient(notebook, timeout=None, kernel_name="python3",
                        resources={"metadata": {"path": sys.argv[2]}}).execute()
seconds = time.perf_counter() - start
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the kernel, once it ended
print(f"BENCH {seconds} {peak_kib / 1024}")
"""


def chapters() -> list[Path]:
    return sorted(BOOK.glob("[0-9][0-9]_*.md"))


def _smoke_chapter(folder: Path) -> Path:
    chapter = folder / "00_smoke.md"
    chapter.write_text(
        "---\njupytext:\n  text_representation: {extension: .md, format_name: myst}\n"
        "kernelspec: {display_name: Python 3, language: python, name: python3}\n---\n\n"
        "```{code-cell} ipython3\nfrom fmnist_lib.config import get_profile\n```\n\n"
        "```{code-cell} ipython3\nprint(get_profile().name)\n```\n"
    )
    return chapter


def bench_course(report: Report, profile: str, smoke: bool) -> None:
    """Every chapter in order in a fresh kernel, on a scratch MLflow store, Optuna storage and
    image folder (so that the project's own are left alone)."""
    print(f"Course: {profile} profile, each chapter in a fresh kernel, on a scratch store")
    total, peak = 0.0, 0.0
    with tempfile.TemporaryDirectory() as scratch:
        # A smoke run times a two-cell chapter through the same runner: the real chapters run
        # in the test suite's book build.
        selected = [_smoke_chapter(Path(scratch))] if smoke else chapters()
        env = {
            **os.environ,
            "FMNIST_PROFILE": profile,
            "MLFLOW_TRACKING_URI": f"sqlite:///{scratch}/mlflow.db",
            "FMNIST_OPTUNA_STORAGE": f"sqlite:///{scratch}/optuna.db",
            "FMNIST_GENERATED_DIR": f"{scratch}/generated_images",
        }
        for chapter in selected:
            result = subprocess.run(
                [sys.executable, "-c", _CHAPTER_RUNNER, str(chapter), str(BOOK)],
                capture_output=True,
                text=True,
                env=env,
            )
            found = re.search(r"^BENCH ([\d.]+) ([\d.]+)$", result.stdout, re.M)
            if result.returncode != 0 or not found:
                report.note(f"{chapter.stem} failed: {result.stderr.strip()[-500:]}")
                continue
            seconds, memory = float(found[1]), float(found[2])
            total, peak = total + seconds, max(peak, memory)
            report.add(
                "course",
                f"{profile}: {chapter.stem}",
                seconds,
                "s",
                note=f"peak memory {memory:,.0f} MiB",
            )
            report.add("course", f"{profile}: {chapter.stem}, peak memory", memory, "MiB")
    report.add("course", f"{profile}: whole book", total, "s")
    report.add("course", f"{profile}: peak memory of any chapter", peak, "MiB")


def last_build(report: Report) -> None:
    """The execution time of each chapter in the newest `./course book` (full profile), from
    the build's cache: a chapter that reused MLflow runs there shows its reuse time."""
    import sqlite3

    cache = PROJECT_ROOT / "_build" / ".jupyter_cache" / "global.db"
    if not cache.exists():
        return
    with sqlite3.connect(cache) as db:
        rows = db.execute("SELECT uri, data, created FROM nbcache ORDER BY created").fetchall()
    newest = {Path(uri).stem: (json.loads(data), created) for uri, data, created in rows}
    for stem, (data, created) in sorted(newest.items()):
        if "execution_seconds" in data:
            report.add(
                "course",
                f"last full build: {stem}",
                data["execution_seconds"],
                "s",
                note=f"executed {created[:16]}",
            )


# --- the command ---------------------------------------------------------------------------


def write_json(path: Path, report: Report, info: dict, args) -> None:
    """Written whole or not at all: a temporary file, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "python benchmarks/bench.py " + " ".join(args),
        "machine": info,
        "rows": [asdict(row) for row in report.rows],
        "notes": report.notes,
    }
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(document, indent=1, allow_nan=True))
    temporary.replace(path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python benchmarks/bench.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated, among {', '.join(SECTIONS)} (default: all)",
    )
    parser.add_argument("--model", help="model URI (default: the registry's champion)")
    parser.add_argument(
        "--families",
        default="dense,cnn,rf,svm",
        help="models whose training is timed (svm-hog takes ~11 min: its newest "
        "full-profile run's fit time is shown instead)",
    )
    parser.add_argument(
        "--course-profile",
        default="quick",
        choices=["quick", "full"],
        help="the profile the chapters run in (full: over an hour here)",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write it")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to test the script")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}: choose among {', '.join(SECTIONS)}")

    from fmnist_lib import registry

    model_uri = args.model or registry.CHAMPION_URI
    if {"inference", "api"} & set(sections) and not args.model:
        try:
            registry.champion()
        except registry.NoModelError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    info = machine()
    smoke = " (smoke run: the figures mean nothing)" if args.smoke else ""
    print(
        f"Machine: {info['cpu']}, {info['cores']} cores at {info['clock_ghz']:.2f} GHz, "
        f"commit {info.get('commit', '?')}{smoke}"
    )
    report = Report(args.smoke)
    if "training" in sections:
        families = [f.strip() for f in args.families.split(",") if f.strip()]
        bench_training(report, info, args.smoke, ["dense", "cnn"] if args.smoke else families)
    if "inference" in sections:
        bench_inference(report, model_uri, args.smoke)
    if "api" in sections:
        bench_api(report, model_uri, args.smoke)
    if "course" in sections:
        bench_course(report, args.course_profile, args.smoke)
        if not args.smoke:
            last_build(report)
    write_json(args.json, report, info, argv)
    print()
    print(report.markdown())
    missed = [r.measure for r in report.rows if r.met is False]
    print(
        f"\nTargets: {sum(r.met is True for r in report.rows)} met, {len(missed)} missed"
        f"{': ' + '; '.join(missed) if missed else ''}. JSON: {args.json}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
