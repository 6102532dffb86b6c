"""Wall time and peak resident memory of a command and of every process it starts.

A sampler thread walks the command's process tree with psutil every ``interval``
seconds. Peaks are therefore lower bounds: a process that lives shorter than one
interval, or a spike between two samples, can be missed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

GIB = 1 << 30
SAMPLE_SECONDS = 0.25


@dataclasses.dataclass
class Measurement:
    """Cost of one command: wall seconds, exit code and peak RSS in bytes per process kind."""

    command: list[str]
    seconds: float
    returncode: int
    # Largest RSS seen of any single process, of the JVM (the driver, which in local mode
    # also runs the executor), of any Python process, and of the whole tree at one instant.
    peak_process_rss: int = 0
    peak_jvm_rss: int = 0
    peak_python_rss: int = 0
    peak_tree_rss: int = 0
    samples: int = 0

    def as_dict(self) -> dict:
        """Return the fields as JSON-ready values, RSS in GiB rounded to 3 digits."""
        return {
            "command": " ".join(self.command),
            "seconds": round(self.seconds, 2),
            "returncode": self.returncode,
            "peak_process_rss_gib": round(self.peak_process_rss / GIB, 3),
            "peak_jvm_rss_gib": round(self.peak_jvm_rss / GIB, 3),
            "peak_python_rss_gib": round(self.peak_python_rss / GIB, 3),
            "peak_tree_rss_gib": round(self.peak_tree_rss / GIB, 3),
            "samples": self.samples,
        }


def _process_kind(process: psutil.Process) -> str:
    name = process.name().lower()
    if name.startswith("java"):
        return "jvm"
    if name.startswith("python"):
        return "python"
    return "other"


def _sample_tree(root: psutil.Process, result: Measurement) -> None:
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    total = 0
    for process in processes:
        try:
            rss = process.memory_info().rss
            kind = _process_kind(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += rss
        result.peak_process_rss = max(result.peak_process_rss, rss)
        if kind == "jvm":
            result.peak_jvm_rss = max(result.peak_jvm_rss, rss)
        elif kind == "python":
            result.peak_python_rss = max(result.peak_python_rss, rss)
    result.peak_tree_rss = max(result.peak_tree_rss, total)
    result.samples += 1


def measure(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    log_path: Path | None = None,
    interval: float = SAMPLE_SECONDS,
) -> Measurement:
    """Run ``command`` to its end and return its wall time and the peak RSS of its tree.

    Standard output and error go to ``log_path`` when given, else to this process's.
    The exit code is returned, not raised, so the caller decides what a failure means.
    """
    merged_env = {**os.environ, **(env or {})}
    log_file = open(log_path, "wb") if log_path else None  # noqa: SIM115
    started = time.perf_counter()
    try:
        process = subprocess.Popen(
            list(command),
            env=merged_env,
            cwd=cwd,
            stdout=log_file,
            stderr=subprocess.STDOUT if log_file else None,
        )
        result = Measurement(command=list(command), seconds=0.0, returncode=-1)
        root = psutil.Process(process.pid)
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                _sample_tree(root, result)
                stop.wait(interval)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        result.returncode = process.wait()
        result.seconds = time.perf_counter() - started
        stop.set()
        sampler.join()
    finally:
        if log_file:
            log_file.close()
    logger.info(
        "%s: exit %d in %.1f s, peak RSS %.2f GiB (JVM %.2f GiB, tree %.2f GiB)",
        " ".join(command[-2:]),
        result.returncode,
        result.seconds,
        result.peak_process_rss / GIB,
        result.peak_jvm_rss / GIB,
        result.peak_tree_rss / GIB,
    )
    return result
