"""The train stage resumes from its last epoch backup after the process is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_train_evaluate import synthetic_ratings, write_spark_table

pytestmark = pytest.mark.slow

EPOCHS = 6


def train_command(warehouse: Path, reports: Path, checkpoints: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lenspark.train",
        "--dataset",
        "resume-test",
        "--warehouse",
        str(warehouse),
        "--reports",
        str(reports),
        "--checkpoint-dir",
        str(checkpoints),
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        "8",
    ]


def wait_for_backup(metadata: Path, process: subprocess.Popen, timeout: float = 300) -> int:
    """Wait until the backup records at least two finished epochs; return that epoch count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"training ended (exit {process.returncode}) before it could be killed")
        if metadata.is_file():
            try:
                epoch = json.loads(metadata.read_text())["epoch"]
            except (ValueError, KeyError):
                epoch = 0
            if epoch >= 2:
                return epoch
        time.sleep(0.05)
    pytest.fail("no epoch backup appeared in time")


def test_killed_training_resumes(tmp_path):
    warehouse = tmp_path / "warehouse"
    reports = tmp_path / "reports"
    checkpoints = tmp_path / "checkpoints"
    write_spark_table(warehouse / "resume-test" / "train", synthetic_ratings(4_000, seed=3))
    command = train_command(warehouse, reports, checkpoints)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    metadata = checkpoints / "resume-test" / "reference" / "backup" / "training_metadata.json"
    killed_after = wait_for_backup(metadata, first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL
    assert not (warehouse / "resume-test" / "models" / "reference.keras").exists()

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming from the backup" in second.stderr
    epochs_run = second.stdout.count("Epoch ")
    assert epochs_run <= EPOCHS - killed_after
    history = json.loads((reports / "resume-test" / "training_history.json").read_text())
    assert [record["epoch"] for record in history] == list(range(1, EPOCHS + 1))
    assert (warehouse / "resume-test" / "models" / "reference.keras").is_file()
    # A finished run leaves no backup behind for the next one to resume.
    assert not (checkpoints / "resume-test" / "reference").exists()
