"""Run a make command and report each stage's peak resident memory, read from its processes.

``python bench/stage_peaks.py -- make run DATASET=ml-20m-synthetic`` runs the command and
samples its process tree every 0.5 s with psutil. A process counts towards the stage
named in its command line (``jobs/<stage>.py`` for spark-submit, ``lenspark-<stage>`` for
the Python stages); the stage's peak is its largest single process. The wall time of each
stage comes from the stage's manifest, not from this script. Peaks are lower bounds: a
spike between two samples is missed.
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
STAGE_PATTERN = re.compile(r"jobs/(\w+)\.py|lenspark-(\w+)|lenspark\.(\w+)")


def stage_of(process: psutil.Process) -> str | None:
    """Return the stage a process runs, from its command line, or None."""
    try:
        command = " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    found = STAGE_PATTERN.search(command)
    return next((group for group in found.groups() if group), None) if found else None


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
        for process in processes:
            stage = stage_of(process)
            if stage is None:
                continue
            try:
                rss = process.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            peaks[stage] = max(peaks.get(stage, 0), rss)
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
