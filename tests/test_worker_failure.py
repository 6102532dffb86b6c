"""A lost executor in the middle of the ingest stage, on a standalone cluster with two workers.

The test submits the ingest stage with `make submit JOB=ingest`, the command a user
types, with small input splits so that reading ratings.csv takes dozens of tasks.
It polls the driver's REST API until a stage has tasks running on an executor,
kills that executor's JVM with SIGKILL and then checks that the stage still wrote
every rating of the sample exactly once. The application's event log shows that a
task failed because its executor was lost, so the kill happened during a stage.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from conftest import REPO, make_environment
from lenspark import columns, storage
from test_local_cluster import local_cluster

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

logger = logging.getLogger(__name__)

EXECUTOR_CLASS = "org.apache.spark.executor.CoarseGrainedExecutorBackend"
# 64 KiB splits turn the 2.3 MB ratings.csv of ml-latest-small into about 36 read tasks.
SPLIT_BYTES = 65_536
# A stage is a kill target only while at least this many of its tasks are unfinished,
# so the surviving executor and the replacement still have work to take over.
MIN_UNFINISHED_TASKS = 8
POLL_SECONDS = 0.2
KILL_DEADLINE_SECONDS = 600.0
JOB_DEADLINE_SECONDS = 900.0


def fetch_json(url: str) -> object:
    """Return the JSON document at ``url``, a path of the driver's REST API."""
    with urllib.request.urlopen(url, timeout=5.0) as response:
        return json.load(response)


def read_sample_ratings(path: Path) -> dict:
    """Return the number of ratings in ``path``, a hash of their sorted keys and a rating sum."""
    keys = []
    half_stars = 0
    with path.open(newline="") as file:
        for row in csv.DictReader(file):
            keys.append((int(row[columns.USER_ID]), int(row[columns.MOVIE_ID])))
            # Ratings are multiples of 0.5, so twice their sum is an exact integer.
            half_stars += round(float(row[columns.RATING]) * 2)
    return {"rows": len(keys), "keys_sha256": hash_keys(keys), "half_stars": half_stars}


def hash_keys(keys: list[tuple[int, int]]) -> str:
    """Return the sha256 of the sorted (user, movie) pairs, one ``user,movie`` line each."""
    digest = hashlib.sha256()
    for user, movie in sorted(keys):
        digest.update(f"{user},{movie}\n".encode())
    return digest.hexdigest()


def read_ingested_ratings(warehouse: Path) -> dict:
    """Return the same figures as ``read_sample_ratings`` for the current ratings table."""
    location = storage.require_complete(str(warehouse / "ratings"), producer="ingest")
    table = ds.dataset(location, format="parquet", exclude_invalid_files=True).to_table(
        columns=[columns.USER_ID, columns.MOVIE_ID, columns.RATING]
    )
    users = table.column(columns.USER_ID).to_pylist()
    movies = table.column(columns.MOVIE_ID).to_pylist()
    doubled = pc.multiply(table.column(columns.RATING), 2)
    return {
        "rows": table.num_rows,
        "keys_sha256": hash_keys(list(zip(users, movies, strict=True))),
        "half_stars": round(pc.sum(doubled).as_py()),
    }


def find_executor_process(worker_pids: tuple[int, ...], executor_id: str) -> psutil.Process:
    """Return the executor JVM with ``executor_id`` among the workers' child processes."""
    for worker_pid in worker_pids:
        for child in psutil.Process(worker_pid).children():
            try:
                command = child.cmdline()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if EXECUTOR_CLASS not in command or "--executor-id" not in command:
                continue
            if command[command.index("--executor-id") + 1] == executor_id:
                return child
    raise LookupError(f"no {EXECUTOR_CLASS} process with --executor-id {executor_id}")


def find_busy_executor(ui_url: str) -> tuple[str, dict] | None:
    """Return the id of an executor running tasks while a long stage is active, and the stage.

    Returns None while the driver's UI is not up or no stage has enough unfinished tasks.
    """
    try:
        applications = fetch_json(f"{ui_url}/api/v1/applications")
        if not applications:
            return None
        base = f"{ui_url}/api/v1/applications/{applications[0]['id']}"
        stages = fetch_json(f"{base}/stages?status=active")
        executors = fetch_json(f"{base}/executors")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    long_stages = [
        stage
        for stage in stages
        if stage["numTasks"] - stage["numCompleteTasks"] >= MIN_UNFINISHED_TASKS
        and stage["numActiveTasks"] > 0
    ]
    busy = [
        executor["id"]
        for executor in executors
        if executor["id"] != "driver" and executor["isActive"] and executor["activeTasks"] > 0
    ]
    if not long_stages or not busy:
        return None
    return busy[0], long_stages[0]


def read_event_log(event_dir: Path) -> list[dict]:
    """Return every event of the applications logged under ``event_dir``, in file order."""
    events = []
    for path in sorted(event_dir.rglob("events_*")):
        for line in path.read_text().splitlines():
            if line.strip():
                events.append(json.loads(line))
    return events


def kill_process_tree(process: subprocess.Popen) -> None:
    """Kill ``process`` and its descendants (make, spark-submit and the driver JVM)."""
    descendants = psutil.Process(process.pid).children(recursive=True)
    process.kill()
    for child in descendants:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            continue
    process.wait()
    psutil.wait_procs(descendants, timeout=30)


def log_tail(path: Path, lines: int = 60) -> str:
    """Return the last ``lines`` lines of a log file."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def two_worker_cluster(tmp_path):
    """A cluster of two workers with one core and 1 GiB each; stopped and checked afterwards."""
    state_dir = tmp_path / "cluster"
    info = local_cluster.start_cluster(state_dir, cores=1, memory="1g", workers=2)
    yield info
    local_cluster.stop_cluster(state_dir)
    running = [pid for pid in info.pids if psutil.pid_exists(pid)]
    assert running == [], f"daemon PIDs still running after stop_cluster: {running}"


def test_ingest_survives_executor_kill(two_worker_cluster, sample_dir, tmp_path):
    cluster = two_worker_cluster
    workers = local_cluster.fetch_master_status(cluster.master_webui_url)["workers"]
    assert [worker["state"] for worker in workers] == ["ALIVE", "ALIVE"]
    expected = read_sample_ratings(sample_dir / "ratings.csv")
    warehouse = tmp_path / "warehouse"
    event_dir = tmp_path / "events"
    event_dir.mkdir()
    ui_port = local_cluster.free_port()
    ui_url = f"http://127.0.0.1:{ui_port}"
    spark_args = " ".join(
        [
            f"--conf spark.ui.port={ui_port}",
            f"--conf spark.sql.files.maxPartitionBytes={SPLIT_BYTES}",
            # Tasks wait for both executors (at most 30 s, Spark's default wait), so one survives.
            "--conf spark.scheduler.minRegisteredResourcesRatio=1.0",
            "--conf spark.eventLog.enabled=true",
            f"--conf spark.eventLog.dir={event_dir.as_uri()}",
            "--conf spark.eventLog.compress=false",
            # Rolling logs are files named events_<n>_<app id> in one folder per application.
            "--conf spark.eventLog.rolling.enabled=true",
        ]
    )
    command = [
        "make",
        "--no-print-directory",
        "submit",
        "JOB=ingest",
        f"CLUSTER_STATE={cluster.state_dir}",
        f"WAREHOUSE={warehouse}",
        f"REPORTS={tmp_path / 'reports'}",
        "DATASET=ml-latest-small",
        f"MOVIELENS_DIR={sample_dir}",
        f"SPARK_SUBMIT_ARGS={spark_args}",
    ]
    output_path = tmp_path / "submit.log"

    with output_path.open("w") as output:
        submit = subprocess.Popen(
            command, cwd=REPO, env=make_environment(), stdout=output, stderr=subprocess.STDOUT
        )
        try:
            # Wait for a stage with tasks on an executor, then kill that executor's JVM.
            deadline = time.monotonic() + KILL_DEADLINE_SECONDS
            target = find_busy_executor(ui_url)
            while target is None:
                assert submit.poll() is None, (
                    f"`make submit JOB=ingest` exited with {submit.returncode} before an "
                    f"executor could be killed. Output:\n{log_tail(output_path)}"
                )
                assert time.monotonic() < deadline, (
                    f"no stage with {MIN_UNFINISHED_TASKS} unfinished tasks appeared at {ui_url} "
                    f"within {KILL_DEADLINE_SECONDS:.0f} s. Output:\n{log_tail(output_path)}"
                )
                time.sleep(POLL_SECONDS)
                target = find_busy_executor(ui_url)
            executor_id, stage = target
            executor = find_executor_process(cluster.worker_pids, executor_id)
            executor_pid = executor.pid
            executor.send_signal(signal.SIGKILL)
            logger.info(
                "killed executor %s (PID %d) in stage %d with %d of %d tasks complete",
                executor_id,
                executor_pid,
                stage["stageId"],
                stage["numCompleteTasks"],
                stage["numTasks"],
            )
            executor.wait(timeout=60)

            returncode = submit.wait(timeout=JOB_DEADLINE_SECONDS)
        finally:
            if submit.poll() is None:
                kill_process_tree(submit)

    assert returncode == 0, f"`make submit JOB=ingest` failed. Output:\n{log_tail(output_path)}"
    assert not psutil.pid_exists(executor_pid), f"executor PID {executor_pid} survived SIGKILL"

    # The event log shows that tasks were running on the executor when it died.
    events = read_event_log(event_dir)
    lost_tasks = [
        event
        for event in events
        if event["Event"] == "SparkListenerTaskEnd"
        and event["Task End Reason"]["Reason"] == "ExecutorLostFailure"
        and event["Task End Reason"]["Executor ID"] == executor_id
    ]
    assert lost_tasks, (
        f"no task failed with ExecutorLostFailure on executor {executor_id}, which was "
        f"running tasks of stage {stage['stageId']} just before the kill"
    )
    removed = [
        event["Executor ID"] for event in events if event["Event"] == "SparkListenerExecutorRemoved"
    ]
    assert executor_id in removed

    # Every rating is written exactly once, although the lost tasks ran again elsewhere.
    counts = json.loads((warehouse / "ml-latest-small/_manifest/ingest.json").read_text())
    ratings_counts = counts["counts"]["ratings"]
    assert ratings_counts["rows_in"] == expected["rows"]
    assert ratings_counts["rows_rejected"] == 0
    assert ratings_counts["rows_out"] == expected["rows"]
    assert read_ingested_ratings(warehouse / "ml-latest-small") == expected

    status = local_cluster.fetch_master_status(cluster.master_webui_url)
    states = {app["name"]: app["state"] for app in status["completedapps"]}
    assert states == {"lenspark-ingest": "FINISHED"}
