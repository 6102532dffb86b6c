"""The run manifest: each stage's row counts, outputs and duration, one JSON file per stage.

The report and the tests read these files rather than recounting the tables.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from lenspark import storage
from lenspark.config import Config

MANIFEST_TABLE = "_manifest"
STAGES = ("ingest", "merge", "explore", "prepare", "index", "als", "train", "evaluate", "compare")


def manifest_uri(config: Config, stage: str) -> str:
    """Location of one stage's manifest file."""
    folder = storage.table_uri(config.warehouse, config.dataset, MANIFEST_TABLE)
    return f"{folder}/{stage}.json"


def record_stage(
    config: Config,
    stage: str,
    counts: dict[str, Any],
    outputs: dict[str, str],
    seconds: float,
) -> dict[str, Any]:
    """Write one stage's manifest and return what was written."""
    entry = {
        "stage": stage,
        "dataset": config.dataset,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "counts": counts,
        "outputs": outputs,
    }
    storage.write_json(manifest_uri(config, stage), entry)
    return entry


def load_manifest(config: Config) -> dict[str, dict[str, Any]]:
    """Read the manifests of every stage that has written one, keyed by stage name."""
    entries = {}
    for stage in STAGES:
        uri = manifest_uri(config, stage)
        if storage.exists(uri):
            entries[stage] = storage.read_json(uri)
    return entries
