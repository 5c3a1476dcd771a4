"""How fast the app answers: the work behind one upload, warm, and a cold start to the first
prediction in a real browser. Prints figures; it is not a test and asserts no speed.

    python benchmarks/app_speed.py                  # the champion of the course's store
    python benchmarks/app_speed.py --repeats 20 --cold-runs 1

Warm: one uploaded image (a 28x28 test image as PNG, and a product photo of it as JPEG) goes
through what the app runs for it: decode and Fashion-MNIST preprocessing
(`predictions.examine`), the model (`predictions.predict`, the serving artifact's compiled
path), and the saliency map (`explain.saliency`). Cold: `streamlit run` is started with a
browser already open; the clock runs from starting the process to the predicted class shown on
the page after uploading the PNG; then a second upload, warm, to its prediction. The same
steps are then timed one after another in a fresh process, to show where the time goes.
Needs Chromium (/usr/bin/chromium, or $CHROMIUM).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from common import met, percentiles, target, timed

ROOT = Path(__file__).resolve().parent.parent
WARM = "app: model work per image"
COLD = "app: first prediction after `streamlit run`"


def _median_ms(function, repeats: int) -> tuple[float, float]:
    """Median and 90th percentile in ms; the first call compiles (once per process)."""
    return percentiles(timed(function, repeats, warmup=1), 50, 90)


def warm(repeats: int, model) -> list[tuple[str, float, float]]:
    import numpy as np

    from fmnist_lib import artifact, custom_images, explain, predictions, preprocess
    from fmnist_lib.acquisition import load_test_set

    classifier = artifact.load(model.uri)
    images, labels = load_test_set(download=False)
    photo = custom_images.render_product_photo(images[0], np.random.default_rng(0))
    inputs = {
        "28x28 PNG": preprocess.encode_png(images[0]),
        f"{photo.width}x{photo.height} JPEG photo": custom_images.encode(photo, "JPEG"),
    }
    rows = []
    for name, data in inputs.items():
        item = predictions.Item(name, data)
        examined = [predictions.examine(item)]
        rows.append(
            (
                f"{name}: decode + preprocess",
                *_median_ms(partial(predictions.examine, item), repeats),
            )
        )
        model_call = partial(predictions.predict, classifier, examined)
        rows.append((f"{name}: model", *_median_ms(model_call, repeats)))
    if explain.method(classifier):
        image, label = examined[0].image[np.newaxis], [int(labels[0])]
        rows.append(
            (
                f"saliency map ({explain.method(classifier)})",
                *_median_ms(lambda: explain.saliency(classifier, image, label), repeats),
            )
        )
    return rows


def cold(runs: int, log_dir: Path) -> list[dict[str, float]]:
    from playwright.sync_api import sync_playwright

    from fmnist_lib import preprocess
    from fmnist_lib.acquisition import load_test_set
    from fmnist_lib.processes import BIN, free_port, running

    images = load_test_set(download=False)[0]
    png, second = preprocess.encode_png(images[0]), preprocess.encode_png(images[1])
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    results = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        for run in range(runs):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            command = [str(BIN / "streamlit"), "run", str(ROOT / "streamlit_app.py")]
            command += ["--server.port", str(port), "--server.fileWatcherType", "none"]
            start = time.perf_counter()
            with running(command, f"{url}/_stcore/health", log_dir / f"streamlit-{run}.log"):
                health = time.perf_counter()
                page = browser.new_page()
                page.goto(url)
                uploader = page.wait_for_selector(
                    '[data-testid="stFileUploaderDropzoneInput"]', state="attached", timeout=120_000
                )
                shown = time.perf_counter()
                uploader.set_input_files(
                    [{"name": "boot.png", "mimeType": "image/png", "buffer": png}]
                )
                verdict = (
                    '[data-testid="stAlertContentSuccess"], [data-testid="stAlertContentWarning"]'
                )
                page.wait_for_selector(verdict, timeout=120_000)
                answered = time.perf_counter()
                # Once warm, a second upload: what a user waits for from then on.
                uploader = page.wait_for_selector(
                    '[data-testid="stFileUploaderDropzoneInput"]', state="attached"
                )
                again = time.perf_counter()
                uploader.set_input_files(
                    [{"name": "second.png", "mimeType": "image/png", "buffer": second}]
                )
                page.wait_for_function(
                    f"document.querySelectorAll('{verdict}').length >= 2", timeout=120_000
                )
                warm_answer = time.perf_counter() - again
                page.close()
            results.append(
                {
                    "server answers": health - start,
                    "uploader shown": shown - start,
                    "first prediction": answered - start,
                    "next upload to its prediction": warm_answer,
                }
            )
        browser.close()
    return results


# A cold start's steps, one after another in a fresh interpreter: where the time goes.
_STEPS = """
import json, sys, time
start = last = time.perf_counter()
steps = {}
def step(name):
    global last
    now = time.perf_counter()
    steps[name] = now - last
    last = now
import streamlit
step("import Streamlit")
import numpy as np
from fmnist_lib import explain, plots, predictions, registry, tracking
step("import the app's modules (NumPy, pandas, Pillow, Matplotlib)")
import mlflow.store.tracking.sqlalchemy_store
step("import MLflow and its database store")
models = registry.registered_models()
step("list the registered models")
from fmnist_lib import artifact
classifier = artifact.load(models[0].uri)
step("load the model from the registry")
blank = np.zeros((1, 28, 28), np.uint8)
classifier.predict_proba(blank)
step("first prediction (onnxruntime)")
print(json.dumps(steps))
steps.clear()
last = time.perf_counter()
import tensorflow
step("import TensorFlow")
if explain.method(classifier):
    explain.saliency(classifier, blank, [0])
step("load the Keras network, trace its saliency map")
print(json.dumps(steps))
"""


def breakdown() -> tuple[dict[str, float], dict[str, float]]:
    import json
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", _STEPS], capture_output=True, text=True, check=True, cwd=ROOT
    )
    first, maps = (json.loads(line) for line in result.stdout.strip().splitlines()[-2:])
    return first, maps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=200, help="warm measurements (200)")
    parser.add_argument("--cold-runs", type=int, default=3, help="app cold starts (3)")
    parser.add_argument("--logs", type=Path, help="keep the app's logs in this folder")
    args = parser.parse_args(argv)

    from fmnist_lib import registry, tracking

    models = registry.registered_models()
    if not models:
        print(f"error: {registry.no_model_message()}", file=sys.stderr)
        return 1
    model = models[0]
    print(f"Model: {model.label}, from {tracking.shown_uri()}")
    print(f"\nWarm, per uploaded image (median and 90th percentile of {args.repeats}):")
    rows = warm(args.repeats, model)
    for name, median, p90 in rows:
        print(f"  {name:<45} {median:8.2f} ms  (p90 {p90:.2f} ms)")
    model_ms = max(median for name, median, _ in rows if name.endswith(": model"))
    verdict = "met" if met(WARM, model_ms) else "missed"
    print(
        f"Target: model work <= {target(WARM)[1]:.0f} ms per image: {verdict} ({model_ms:.2f} ms)."
    )

    if args.cold_runs:
        with tempfile.TemporaryDirectory() as folder:
            logs = args.logs or Path(folder)
            logs.mkdir(parents=True, exist_ok=True)
            runs = cold(args.cold_runs, logs)
        print(f"\nIn the browser, from `streamlit run` to ... (median of {len(runs)}):")
        for key in runs[0]:
            values = [run[key] for run in runs]
            each = ", ".join(f"{v:.2f}" for v in values)
            print(f"  {key:<45} {statistics.median(values):8.2f} s   (each: {each})")
        steps, maps = breakdown()
        print("\nWhere a cold start's time goes (the same steps in one fresh process, in turn):")
        for name, seconds in steps.items():
            print(f"  {name:<60} {seconds:6.2f} s")
        print(f"  {'total':<60} {sum(steps.values()):6.2f} s")
        print("Then, once, when the saliency maps are turned on:")
        for name, seconds in maps.items():
            print(f"  {name:<60} {seconds:6.2f} s")
        first = statistics.median(run["first prediction"] for run in runs)
        verdict = "met" if met(COLD, first) else "missed"
        limit = target(COLD)[1]
        print(f"\nTarget: first prediction within {limit:.0f} s: {verdict} ({first:.1f} s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
