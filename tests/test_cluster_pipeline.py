"""Every Spark stage through `make submit` on a standalone cluster, compared with the local run.

The cluster is a master and one worker on 127.0.0.1 (scripts/local_cluster.py).
The stages run with the same spark-submit commands as `make ingest` and the other
stage targets, with the package shipped to the executors as a --py-files zip. The
outputs must equal those of `make pipeline` with a local master on the same sample.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import psutil
import pyarrow.dataset as ds
import pytest

from conftest import REPO, make_environment
from lenspark import columns, storage
from test_local_cluster import local_cluster

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

DATASET = "ml-latest-small"
# Stages whose manifests hold row counts; explore writes a report instead.
COUNTED_STAGES = ("ingest", "merge", "prepare")
SPLIT_TABLES = ("train", "test")


def spark_stages() -> list[str]:
    """Return the stages that `make submit` runs: SPARK_STAGES from the Makefile."""
    match = re.search(r"^SPARK_STAGES\s*:?=\s*(.+)$", (REPO / "Makefile").read_text(), re.M)
    assert match, "SPARK_STAGES is not defined in the Makefile"
    return match.group(1).split()


def without_source(counts: object) -> object:
    """Return ``counts`` without the "source" entries, which name the input folder of a run."""
    if isinstance(counts, dict):
        return {key: without_source(value) for key, value in counts.items() if key != "source"}
    return counts


def manifest_counts(warehouse: Path, stage: str) -> object:
    """Return a stage's counts from the manifest in ``warehouse``, without "source" entries."""
    entry = json.loads((warehouse / "_manifest" / f"{stage}.json").read_text())
    return without_source(entry["counts"])


def split_fingerprint(warehouse: Path, table: str) -> tuple[int, str]:
    """Return the row count and the sha256 of the sorted (user, movie) keys of a split table."""
    location = storage.require_complete(str(warehouse / table), producer="prepare")
    data = ds.dataset(location, format="parquet", exclude_invalid_files=True).to_table(
        columns=[columns.USERID, columns.MOVIEID]
    )
    keys = zip(
        data.column(columns.USERID).to_pylist(),
        data.column(columns.MOVIEID).to_pylist(),
        strict=True,
    )
    digest = hashlib.sha256()
    for user, movie in sorted(keys):
        digest.update(f"{user},{movie}\n".encode())
    return data.num_rows, digest.hexdigest()


@pytest.fixture(scope="module")
def cluster_run(pipeline_run, sample_dir, tmp_path_factory):
    """Run `make submit` on a one-worker cluster; return the paths, output and master status.

    It depends on ``pipeline_run`` so that the local run finishes before the cluster
    starts, and the two never share the machine's cores.
    """
    root = tmp_path_factory.mktemp("cluster-run")
    state_dir = root / "cluster"
    warehouse = root / "warehouse"
    reports = root / "reports"
    info = local_cluster.start_cluster(state_dir, cores=2, memory="2g")
    try:
        command = [
            "make",
            "--no-print-directory",
            "submit",
            f"CLUSTER_STATE={state_dir}",
            f"WAREHOUSE={warehouse}",
            f"REPORTS={reports}",
            f"DATASET={DATASET}",
            f"MOVIELENS_DIR={sample_dir}",
            # The driver's UI would bind to Spark's default port 4040, and no check reads it.
            "SPARK_SUBMIT_ARGS=--conf spark.ui.enabled=false",
        ]
        result = subprocess.run(
            command, cwd=REPO, env=make_environment(), capture_output=True, text=True, timeout=1800
        )
        if result.returncode != 0:
            pytest.fail(
                f"{' '.join(command)} exited with {result.returncode}\n"
                f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-8000:]}"
            )
        status = local_cluster.fetch_master_status(info.master_webui_url)
        yield {
            "info": info,
            "warehouse": warehouse / DATASET,
            "reports": reports / DATASET,
            "stdout": result.stdout,
            "status": status,
        }
    finally:
        local_cluster.stop_cluster(state_dir)
        running = [pid for pid in info.pids if psutil.pid_exists(pid)]
        assert running == [], f"daemon PIDs still running after stop_cluster: {running}"


def test_every_stage_submitted_to_cluster(cluster_run):
    stdout = cluster_run["stdout"]
    master_url = cluster_run["info"].master_url
    assert "submitting to the local cluster" in stdout
    for stage in spark_stages():
        # The stage targets echo their spark-submit command line.
        pattern = (
            rf"spark-submit --master '{re.escape(master_url)}' .*--py-files .*jobs/{stage}\.py"
        )
        assert re.search(pattern, stdout), f"no spark-submit of jobs/{stage}.py to {master_url}"


def test_applications_finished(cluster_run):
    status = cluster_run["status"]
    finished = [app["name"] for app in status["completedapps"] if app["state"] == "FINISHED"]
    assert sorted(finished) == sorted(f"lenspark-{stage}" for stage in spark_stages())
    assert status["activeapps"] == []


@pytest.mark.parametrize("stage", COUNTED_STAGES)
def test_stage_counts_match_local_run(cluster_run, pipeline_run, stage):
    cluster_counts = manifest_counts(cluster_run["warehouse"], stage)
    local_counts = manifest_counts(pipeline_run["warehouse"], stage)
    assert cluster_counts == local_counts


@pytest.mark.parametrize("table", SPLIT_TABLES)
def test_split_matches_local_run(cluster_run, pipeline_run, table):
    cluster_rows, cluster_hash = split_fingerprint(cluster_run["warehouse"], table)
    local_rows, local_hash = split_fingerprint(pipeline_run["warehouse"], table)
    assert cluster_rows == local_rows
    assert cluster_hash == local_hash


def test_explore_report_written(cluster_run):
    assert (cluster_run["reports"] / "explore.json").is_file()
