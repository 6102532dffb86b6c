"""The run manifest: each stage's row counts, outputs and duration, one JSON file per stage.

The report and the tests read these files rather than recounting the tables.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from typing import Any

from lenspark import storage
from lenspark.config import Config
from lenspark.errors import ConfigError

MANIFEST_TABLE = "_manifest"
RUNS_FOLDER = "runs"
# Stages started by one `make run` share the RUN_ID the Makefile sets; a stage started
# alone gets an id of its own.
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
STAGES = ("ingest", "merge", "explore", "prepare", "index", "als", "train", "evaluate", "compare")


def manifest_uri(config: Config, stage: str) -> str:
    """Location of one stage's manifest file."""
    folder = storage.table_uri(config.warehouse, config.dataset, MANIFEST_TABLE)
    return f"{folder}/{stage}.json"


def run_id() -> str:
    """Return this run's id: RUN_ID from the environment, else the current UTC time."""
    value = os.environ.get("RUN_ID") or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    if not RUN_ID_PATTERN.match(value):
        raise ConfigError(
            f"RUN_ID {value!r} is invalid: use up to 64 letters, digits, '.', '_' or '-'"
        )
    return value


def record_stage(
    config: Config,
    stage: str,
    counts: dict[str, Any],
    outputs: dict[str, str],
    seconds: float,
) -> dict[str, Any]:
    """Write one stage's manifest and return what was written."""
    current_run = run_id()
    entry = {
        "stage": stage,
        "run_id": current_run,
        "dataset": config.dataset,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "counts": counts,
        "outputs": outputs,
    }
    # The latest entry of each stage, which the report reads, and the run's own copy.
    storage.write_json(manifest_uri(config, stage), entry)
    folder = storage.table_uri(config.warehouse, config.dataset, MANIFEST_TABLE)
    storage.write_json(f"{folder}/{RUNS_FOLDER}/{current_run}/{stage}.json", entry)
    return entry


def load_manifest(config: Config) -> dict[str, dict[str, Any]]:
    """Read the manifests of every stage that has written one, keyed by stage name."""
    entries = {}
    for stage in STAGES:
        uri = manifest_uri(config, stage)
        if storage.exists(uri):
            entries[stage] = storage.read_json(uri)
    return entries
