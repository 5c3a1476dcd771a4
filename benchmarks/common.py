"""What the two benchmark scripts share: one timer and one table of targets.

`bench.py` (training, inference, API, the chapters) and `app_speed.py` (the app) print their
figures beside these targets; neither asserts speed: a missed target is reported, not failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

# measure -> (comparison, limit), in the unit the script reports the measure in.
TARGETS: dict[str, tuple[str, float]] = {
    "cnn: library, seconds per epoch": ("<=", 8.0),
    **{f"{net}: library speed-up over plain model.fit": (">=", 1.0) for net in ("dense", "cnn")},
    "one 28x28 PNG, total: p50": ("<=", 2.0),
    "one 28x28 PNG, model: p50": ("<=", 0.5),
    "one 1000x1000 studio JPEG, decode + full conversion: p50": ("<=", 50.0),
    "one 1000x1000 cluttered JPEG, decode + full conversion: p50": ("<=", 100.0),
    "process start to first answer": ("<=", 5.0),
    "1 worker, 4 clients: requests/s": (">=", 300.0),
    **{
        f"{workers}, {clients} clients: errors": ("<=", 0.0)
        for workers in ("1 worker", "2 workers")
        for clients in (1, 4, 16)
    },
    **{
        f"{workers}, 4 clients, 64 images per request: errors": ("<=", 0.0)
        for workers in ("1 worker", "2 workers")
    },
    # Two server processes on two cores, the load client on the same cores.
    **{f"2 workers over 1, {clients} clients: requests/s": (">=", 1.3) for clients in (4, 16)},
    "batched requests, best: images/s over in-process": (">=", 0.5),
    "quick: whole book": ("<=", 300.0),
    "full: whole book": ("<=", 3600.0),
    "app: model work per image": ("<=", 5.0),
    "app: first prediction after `streamlit run`": ("<=", 10.0),
}


def target(measure: str) -> tuple[str, float] | None:
    """(comparison, limit) for ``measure``, or None where it has no target."""
    return TARGETS.get(measure)


def met(measure: str, value: float) -> bool | None:
    """Whether ``value`` meets the target of ``measure`` (None: it has none)."""
    found = target(measure)
    if found is None:
        return None
    op, limit = found
    return bool(value <= limit if op == "<=" else value >= limit)


def timed(call: Callable, repeats: int, warmup: int = 20) -> list[float]:
    """Seconds of each of ``repeats`` calls, after ``warmup`` untimed ones (the first calls
    compile and allocate: a user pays them once per process)."""
    for _ in range(warmup):
        call()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def percentiles(seconds: list[float], *qs: float) -> tuple[float, ...]:
    """The ``qs`` percentiles (default 50 and 99) of ``seconds``, in milliseconds."""
    ms = np.asarray(seconds) * 1000
    return tuple(float(np.percentile(ms, q)) for q in (qs or (50, 99)))
