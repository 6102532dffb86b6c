"""Run a make command and report each stage's peak resident memory, read from its processes.

``python bench/stage_peaks.py -- make run DATASET=ml-20m-synthetic`` runs the command and
samples its process tree every 0.5 s with psutil. A process counts towards the stage
named in its command line: ``jobs/<stage>.py`` for spark-submit, ``lenspark-<stage>`` or
``-m lenspark.<stage>`` for the Python stages. The stage's peak is its largest single
process. Executors of a standalone cluster are not in the tree, so every process on this
machine whose command line names Spark's executor class counts as "<stage> executor" for
the stage running at that moment. The wall time of each stage comes from the stage's
manifest, not from this script. Peaks are lower bounds: a spike between two samples is
missed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import psutil

GIB = 1 << 30
SAMPLE_SECONDS = 0.5
# Tried in this order, because a spark-submit line also names dist/lenspark.zip.
STAGE_PATTERNS = (
    re.compile(r"jobs/(\w+)\.py"),
    re.compile(r"bin/lenspark-(\w+)"),
    re.compile(r"-m lenspark\.(\w+)"),
)
EXECUTOR_CLASS = "org.apache.spark.executor.CoarseGrainedExecutorBackend"


def command_line(process: psutil.Process) -> str:
    """Return the process's command line, or "" once it has ended or is not readable."""
    try:
        return " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ""


def stage_of(command: str) -> str | None:
    """Return the stage a command line runs, or None."""
    for pattern in STAGE_PATTERNS:
        found = pattern.search(command)
        if found:
            return found.group(1)
    return None


def resident_bytes(process: psutil.Process) -> int:
    """Return the process's resident set size, or 0 once it has ended."""
    try:
        return process.memory_info().rss
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0


def main(argv: list[str]) -> int:
    """Run ``argv`` after ``--``, print the peaks as JSON and return the command's exit code."""
    command = argv[argv.index("--") + 1 :] if "--" in argv else argv
    if not command:
        print("usage: python bench/stage_peaks.py -- COMMAND...", file=sys.stderr)
        return 2
    started = time.perf_counter()
    child = subprocess.Popen(command)
    root = psutil.Process(child.pid)
    peaks: dict[str, int] = {}
    while child.poll() is None:
        try:
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            processes = []
        running = None
        for process in processes:
            stage = stage_of(command_line(process))
            if stage is not None:
                running = stage
                peaks[stage] = max(peaks.get(stage, 0), resident_bytes(process))
        if running is not None:
            for process in psutil.process_iter():
                if EXECUTOR_CLASS in command_line(process):
                    key = f"{running} executor"
                    peaks[key] = max(peaks.get(key, 0), resident_bytes(process))
        time.sleep(SAMPLE_SECONDS)
    result = {
        "command": " ".join(command),
        "returncode": child.returncode,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "peak_rss_gib": {stage: round(rss / GIB, 2) for stage, rss in peaks.items()},
    }
    print(json.dumps(result, indent=2))
    return child.returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
