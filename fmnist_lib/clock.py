"""How long a chapter ran, and on what: each chapter starts a `ChapterClock` in its first cell
and glues its minutes and the machine in its last, which the chapter's top sentence shows."""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

from .models import fast_precision


def machine() -> str:
    """This CPU in words: its model name, the cores this process may use, and whether it
    computes bfloat16 natively (training times depend on all three)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    name = found[1].strip() if found else (platform.processor() or platform.machine())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    bf16 = fast_precision() == "mixed_bfloat16"
    return f"{name}, {cores} cores, {'with' if bf16 else 'without'} native bfloat16"


class ChapterClock:
    """Started when a chapter's kernel runs its first cell; `glue` publishes the minutes since
    then as ``chapter_minutes`` and the machine as ``chapter_machine``."""

    def __init__(self):
        self.start = time.perf_counter()

    @property
    def minutes(self) -> float:
        return (time.perf_counter() - self.start) / 60

    def glue(self) -> float:
        """Glue the chapter's minutes so far and the machine; returns the minutes."""
        from myst_nb import glue

        minutes = self.minutes
        glue("chapter_minutes", minutes, display=False)
        glue("chapter_machine", machine(), display=False)
        return minutes
