"""The app's memory over many large uploads in one browser session: `streamlit run` (started
from another folder, as a user might), Debian's Chromium driven by Playwright, runs of a few
phone photos of just under the upload limit (20 MB each), each run classified, then removed.
Prints the server's resident memory through the session; asserts nothing.

    python benchmarks/app_memory.py                 # 200 uploads, 3 a run: about 8 minutes
    python benchmarks/app_memory.py --uploads 10 --per-run 2
    python benchmarks/app_memory.py --maps          # with the saliency maps on (TensorFlow)

Every upload is a different file (a comment segment with its number makes each JPEG's bytes,
so its hash, unique): the app's cache of examined images never answers for one, as it would
for a student who uploads new photos all session. Then one run with more files than the app
classifies at once (`MAX_FILES` in streamlit_app.py): how long until its message shows.
Needs Chromium (/usr/bin/chromium, or $CHROMIUM).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TARGET_MB = 1024
LIMIT_MB = 20  # server.maxUploadSize in .streamlit/config.toml
DROPZONE = '[data-testid="stFileUploaderDropzoneInput"]'


def base_photos(count: int) -> list[bytes]:
    """``count`` phone photos of test images, each a JPEG of just under the upload limit: a
    product photo enlarged to 6000 pixels wide, with sensor noise that JPEG cannot squeeze."""
    import numpy as np
    from PIL import Image

    from fmnist_lib import custom_images
    from fmnist_lib.acquisition import load_test_set

    images = load_test_set(download=False)[0]
    photos = []
    for k in range(count):
        photo = custom_images.render_product_photo(images[k], np.random.default_rng(k))
        width = 6000
        big = photo.resize((width, round(width * photo.height / photo.width)))
        noise = np.random.default_rng(k).normal(0, 1, (big.height, big.width, 3)).astype(np.float32)
        for quality in (97, 95, 92, 90, 85, 80):  # the best that fits under the limit
            pixels = np.clip(np.asarray(big, dtype=np.float32) + noise * 16, 0, 255)
            buffer = io.BytesIO()
            Image.fromarray(pixels.astype(np.uint8)).save(buffer, "JPEG", quality=quality)
            if buffer.tell() < (LIMIT_MB - 0.5) * 2**20:
                break
        photos.append(buffer.getvalue())
    return photos


def unique(jpeg: bytes, number: int) -> bytes:
    """The same JPEG with a comment segment (COM) holding ``number`` after its start marker."""
    text = f"upload {number}".encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + jpeg[2:]


def resident_mb(pid: int, field: str = "VmRSS") -> tuple[float, float]:
    """Resident (or ``field``: RssAnon, the memory that is not mapped files such as
    TensorFlow's libraries) and peak resident memory of ``pid`` and its children, in MB."""
    rss = peak = 0.0
    for status in [Path(f"/proc/{pid}/status"), *_children_status(pid)]:
        fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
        rss += int(fields[field].split()[0]) / 1024
        peak += int(fields["VmHWM"].split()[0]) / 1024
    return rss, peak


def reset_peak(pid: int) -> None:
    for status in [Path(f"/proc/{pid}/status"), *_children_status(pid)]:
        (status.parent / "clear_refs").write_text("5")  # Linux: the peak restarts from now


def _children_status(pid: int) -> list[Path]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(stat.parent / "status")
        except (OSError, ValueError):
            continue
    return found


def remove_all(page) -> None:
    """Remove every uploaded file (×), as a student clears the uploader for the next photos."""
    while page.locator('[data-testid="stFileChipDeleteBtn"]').count():
        page.locator('[data-testid="stFileChipDeleteBtn"] button').first.click()
        time.sleep(0.2)
    page.get_by_text("Upload pictures, draw a garment").wait_for(timeout=60_000)


def session(uploads: int, per_run: int, folder: Path, maps: bool = False) -> dict:
    from playwright.sync_api import sync_playwright

    from fmnist_lib import preprocess
    from fmnist_lib.acquisition import load_test_set
    from fmnist_lib.processes import BIN, free_port, running

    photos = base_photos(min(per_run, 5))
    sizes = [len(p) / 2**20 for p in photos]
    print(f"Photos: {len(photos)} JPEGs of {min(sizes):.1f}-{max(sizes):.1f} MB, made unique")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(BIN / "streamlit"), "run", str(ROOT / "streamlit_app.py")]
    command += ["--server.port", str(port), "--server.fileWatcherType", "none"]
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    log = folder / "streamlit.log"
    trace = []
    with (
        running(command, f"{url}/_stcore/health", log, cwd=folder) as server,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.wait_for_selector(DROPZONE, state="attached", timeout=120_000)
        cold = resident_mb(server.pid)[0]
        if maps:  # the app's default is off: TensorFlow loads when they are turned on
            page.get_by_text("Show where the network looked").click()
        # A first small upload loads the model (and, for the maps, TensorFlow).
        warm_up = folder / "warm-up.png"
        warm_up.write_bytes(preprocess.encode_png(load_test_set(download=False)[0][0]))
        page.wait_for_selector(DROPZONE, state="attached").set_input_files([str(warm_up)])
        page.get_by_text("1 of 1 images classified").wait_for(timeout=300_000)
        if maps:
            page.get_by_text("where it saw").wait_for(timeout=300_000)
        remove_all(page)
        start_rss, loaded_peak = resident_mb(server.pid)
        reset_peak(server.pid)  # from here: the uploads' peak
        done = 0
        run = 0
        while done < uploads:
            count = min(per_run, uploads - done)
            files = []
            for k in range(count):
                path = folder / f"photo-{done + k}.jpg"
                path.write_bytes(unique(photos[(done + k) % len(photos)], done + k))
                files.append(str(path))
            began = time.perf_counter()
            page.wait_for_selector(DROPZONE, state="attached").set_input_files(files)
            page.get_by_text(f"{count} of {count} images classified").wait_for(timeout=300_000)
            seconds = time.perf_counter() - began
            for path in files:
                Path(path).unlink()
            remove_all(page)
            done += count
            run += 1
            rss, peak = resident_mb(server.pid)
            anon = resident_mb(server.pid, "RssAnon")[0]
            trace.append(
                {"uploads": done, "seconds": seconds, "rss": rss, "peak": peak, "anon": anon}
            )
            print(f"  run {run:3d}: {done:4d} uploads, {seconds:5.1f} s, {rss:6.0f} MB resident")

        # More files than a run classifies: the message, not a slow page.
        images = load_test_set(download=False)[0]
        many = []
        for k in range(25):
            path = folder / f"small-{k}.png"
            path.write_bytes(preprocess.encode_png(images[k]))
            many.append(str(path))
        began = time.perf_counter()
        page.wait_for_selector(DROPZONE, state="attached").set_input_files(many)
        page.get_by_text("25 pictures uploaded").wait_for(timeout=120_000)
        message = time.perf_counter() - began
        page.get_by_text("20 of 20 images classified").wait_for(timeout=120_000)
        classified = time.perf_counter() - began
        browser.close()
        final = resident_mb(server.pid)
    return {
        "cold": cold,
        "start": start_rss,
        "loaded peak": loaded_peak,
        "trace": trace,
        "final": final,
        "message": message,
        "classified": classified,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=200, help="photos uploaded in all (200)")
    parser.add_argument("--per-run", type=int, default=3, help="photos per run (3)")
    parser.add_argument(
        "--maps", action="store_true", help="turn the saliency maps on (loads TensorFlow)"
    )
    args = parser.parse_args(argv)

    from fmnist_lib import registry, tracking

    models = registry.registered_models()
    if not models:
        print(f"error: {registry.no_model_message()}", file=sys.stderr)
        return 1
    maps = "on (TensorFlow loaded)" if args.maps else "off (the default: no TensorFlow)"
    print(f"Model: {models[0].label}, from {tracking.shown_uri()}; saliency maps {maps}")
    with tempfile.TemporaryDirectory() as folder:
        result = session(args.uploads, args.per_run, Path(folder), args.maps)
    trace = result["trace"]
    highest = max(row["rss"] for row in trace)
    peak = max(row["peak"] for row in trace)
    print(
        f"\nResident memory (the app's process and its children): {result['cold']:.0f} MB "
        f"started, {result['start']:.0f} MB with the model loaded (one small upload; "
        f"{result['loaded peak']:.0f} MB at its peak, tracing the networks), then "
        f"{highest:.0f} MB at most between runs, {peak:.0f} MB peak during the runs, "
        f"{trace[-1]['rss']:.0f} MB after {trace[-1]['uploads']} uploads."
    )
    print(
        f"Of which not mapped files (RssAnon): {trace[0]['anon']:.0f} MB after the first run, "
        f"{max(row['anon'] for row in trace):.0f} MB at most, {trace[-1]['anon']:.0f} MB at "
        "the end; the rest is the libraries' code, mapped from their files."
    )
    print(f"Seconds per run: median {statistics.median(r['seconds'] for r in trace):.1f}.")
    print(
        f"25 files at once: the message after {result['message']:.1f} s, the first 20 "
        f"classified after {result['classified']:.1f} s."
    )
    verdict = "met" if peak < TARGET_MB else "missed"
    print(f"Target: peak during the uploads under {TARGET_MB} MB: {verdict} ({peak:.0f} MB).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
