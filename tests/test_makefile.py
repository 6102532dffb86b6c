"""The Makefile's spark-submit command line for small and large datasets (make -n, no run)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import make_environment

REPO = Path(__file__).resolve().parents[1]


def dry_run(*arguments: str) -> str:
    """Return what `make --dry-run` prints for these targets, options and assignments."""
    result = subprocess.run(
        ["make", "--dry-run", *arguments],
        cwd=REPO,
        env=make_environment(),
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def submit_line(*assignments: str) -> str:
    """Return the spark-submit line that `make ingest` would run with these assignments."""
    output = dry_run("--always-make", "ingest", *assignments)
    lines = [line for line in output.splitlines() if "spark-submit" in line]
    assert len(lines) == 1, output
    return lines[0]


def large_settings() -> list[str]:
    """The --conf options conf/spark-large.conf stands for."""
    options = []
    for line in (REPO / "conf" / "spark-large.conf").read_text().splitlines():
        if line.startswith("spark."):
            key, value = line.split()
            options.append(f"--conf {key}={value}")
    return options


@pytest.mark.parametrize("dataset", ["ml-20m", "ml-20m-synthetic", "ml-25m"])
def test_large_releases_get_the_large_settings(dataset):
    line = submit_line(f"DATASET={dataset}")
    options = large_settings()
    assert "--conf spark.sql.shuffle.partitions=32" in options
    for option in options:
        assert option in line
    # The layered options come after the properties file, so they override it.
    assert line.index("--properties-file") < line.index(options[0])


def test_sample_keeps_the_defaults():
    line = submit_line("DATASET=ml-latest-small")
    assert "--conf" not in line
    assert "--properties-file spark-defaults.conf" in line


def test_data_size_overrides_the_choice():
    assert "--conf" not in submit_line("DATASET=ml-20m", "DATA_SIZE=small")
    assert "shuffle.partitions=32" in submit_line("DATASET=ml-latest-small", "DATA_SIZE=large")


def make_variables(*assignments: str) -> set[str]:
    """Return the variable lines of make's database for `make help` with these assignments."""
    return set(dry_run("--print-data-base", "help", *assignments).splitlines())


def test_large_data_reference_batches():
    large = make_variables("DATASET=ml-20m")
    assert "EPOCHS := 2" in large
    assert "BATCH_SIZE := 1024" in large
    # The sample keeps the recipe's defaults, and a value given by the user wins.
    assert "EPOCHS := 2" not in make_variables("DATASET=ml-latest-small")
    assert "EPOCHS = 5" in make_variables("DATASET=ml-20m", "EPOCHS=5")


def test_invalid_data_size_is_rejected():
    result = subprocess.run(
        ["make", "--dry-run", "ingest", "DATA_SIZE=huge"],
        cwd=REPO,
        env=make_environment(),
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "DATA_SIZE must be small or large, got 'huge'" in result.stderr
