"""bench/stage_peaks.py: which stage a process belongs to, and a real measured command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
import stage_peaks  # noqa: E402


@pytest.mark.parametrize(
    ("command", "stage"),
    [
        (
            "java -cp x org.apache.spark.deploy.SparkSubmit --py-files dist/lenspark.zip "
            "/repo/jobs/ingest.py",
            "ingest",
        ),
        ("/repo/.venv/bin/python /repo/.venv/bin/lenspark-train", "train"),
        ("python -m lenspark.compare --models bias", "compare"),
        ("make run DATASET=ml-20m", None),
    ],
)
def test_stage_of_command_line(command, stage):
    assert stage_peaks.stage_of(command) == stage


def test_peaks_of_a_python_stage(tmp_path):
    # A stand-in for a Python stage: a process whose command line names lenspark-train.
    script = tmp_path / "bin" / "lenspark-train"
    script.parent.mkdir()
    script.write_text("import time\nblock = bytearray(64 << 20)\ntime.sleep(1.5)\n")
    result = subprocess.run(
        [sys.executable, str(BENCH / "stage_peaks.py"), "--", sys.executable, str(script)],
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(result.stdout)
    assert figures["returncode"] == 0
    assert figures["peak_rss_gib"]["train"] >= 0.06
