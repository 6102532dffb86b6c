"""The trainer against a bucket: Spark's tables on an S3 server, model and metrics back in it.

moto_server on 127.0.0.1 replaces MinIO. The tables are those the Spark stages
wrote for the real sample in this test session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lenspark import bucket

pytestmark = pytest.mark.slow

BUCKET = "lenspark"
DATASET = "ml-latest-small"


def upload_folder(client, folder: Path, bucket_name: str, prefix: str) -> int:
    """Upload every file below ``folder`` under ``prefix``; return the number of files."""
    files = [path for path in folder.rglob("*") if path.is_file()]
    for path in files:
        client.upload_file(str(path), bucket_name, f"{prefix}/{path.relative_to(folder)}")
    return len(files)


def object_keys(client, prefix: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


@pytest.fixture
def s3_environment(moto_endpoint, tmp_path):
    """Environment of a trainer process that reads and writes the moto bucket."""
    env = {
        **os.environ,
        "S3_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "moto-test-key",
        "AWS_SECRET_ACCESS_KEY": "moto-test-value",
        "AWS_REGION": "us-east-1",
        "CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    env.pop("AWS_ENDPOINT_URL", None)
    return env


def run_stage(command: str, env: dict, *arguments: str) -> subprocess.CompletedProcess:
    executable = Path(sys.executable).parent / command
    return subprocess.run(
        [str(executable), *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_trainer_reads_and_writes_bucket(pipeline_run, sample_dir, s3_environment, monkeypatch):
    for key in ("S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.setenv(key, s3_environment[key])
    client = bucket.s3_client(max_attempts=1)
    client.create_bucket(Bucket=BUCKET)

    raw_keys = bucket.upload_raw(sample_dir, f"s3://{BUCKET}", dataset=DATASET)
    assert len(raw_keys) == 4
    for table in ("train", "test"):
        uploaded = upload_folder(
            client, pipeline_run["warehouse"] / table, BUCKET, f"warehouse/{DATASET}/{table}"
        )
        assert uploaded > 0

    locations = [
        "--dataset",
        DATASET,
        "--warehouse",
        f"s3://{BUCKET}/warehouse",
        "--reports",
        f"s3://{BUCKET}/reports",
    ]
    trained = run_stage("lenspark-train", s3_environment, *locations, "--epochs", "1")
    assert trained.returncode == 0, trained.stderr[-3000:]
    evaluated = run_stage("lenspark-evaluate", s3_environment, *locations)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]

    assert f"warehouse/{DATASET}/models/reference.keras" in object_keys(client, "warehouse/")
    report_keys = object_keys(client, f"reports/{DATASET}/")
    for name in ("metrics.json", "training_history.json", "training_history.png", "index.html"):
        assert f"reports/{DATASET}/{name}" in report_keys
    body = client.get_object(Bucket=BUCKET, Key=f"reports/{DATASET}/metrics.json")["Body"]
    metrics = json.loads(body.read())
    local = json.loads((pipeline_run["reports"] / "metrics.json").read_text())
    assert metrics["test_rows"] == local["test_rows"]
    assert metrics["train_rows"] == local["train_rows"]


def test_trainer_refuses_table_without_marker(pipeline_run, s3_environment, monkeypatch):
    for key in ("S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.setenv(key, s3_environment[key])
    client = bucket.s3_client(max_attempts=1)
    client.create_bucket(Bucket=BUCKET)
    # The Parquet part files of train without the pointer or the _SUCCESS marker, as a
    # writer that died before its commit leaves them.
    version = Path((pipeline_run["warehouse"] / "train" / "_CURRENT").read_text().strip())
    parts = pipeline_run["warehouse"] / "train" / "_versions" / version
    for path in parts.glob("part-*.parquet"):
        client.upload_file(str(path), BUCKET, f"warehouse/unfinished/train/{path.name}")

    result = run_stage(
        "lenspark-train",
        s3_environment,
        "--dataset",
        "unfinished",
        "--warehouse",
        f"s3://{BUCKET}/warehouse",
        "--reports",
        f"s3://{BUCKET}/reports",
        "--epochs",
        "1",
    )
    assert result.returncode != 0
    assert f"s3://{BUCKET}/warehouse/unfinished/train" in result.stderr
    assert "make prepare" in result.stderr
    assert "Traceback" not in result.stderr
