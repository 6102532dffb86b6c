"""Warehouse locations and versioned tables: a crash or rerun never exposes a partial table."""

from __future__ import annotations

from pathlib import Path

import pytest

from lenspark import storage, tables
from lenspark.config import Config
from lenspark.errors import IncompleteTableError


def test_table_uri_local_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.table_uri("warehouse", "ml-latest-small", "ratings") == str(
        tmp_path / "warehouse" / "ml-latest-small" / "ratings"
    )


def test_table_uri_bucket():
    uri = storage.table_uri("s3a://lenspark/warehouse/", "ml-20m", "train")
    assert uri == "s3a://lenspark/warehouse/ml-20m/train"
    assert storage.spark_uri("s3://lenspark/x") == "s3a://lenspark/x"
    assert storage.is_s3(uri)
    assert not storage.is_s3("/tmp/warehouse")


def make_version(table: Path, *, complete: bool) -> str:
    version = storage.new_version(str(table))
    Path(version).mkdir(parents=True)
    (Path(version) / "part-0.parquet").write_text("rows")
    if complete:
        (Path(version) / storage.SUCCESS_MARKER).touch()
    return version


def test_publish_moves_pointer(tmp_path):
    table = tmp_path / "ratings"
    first = make_version(table, complete=True)
    storage.publish_version(str(table), first)
    assert storage.require_complete(str(table), "ingest") == first


def test_unfinished_write_keeps_last_good_version(tmp_path):
    table = tmp_path / "ratings"
    good = make_version(table, complete=True)
    storage.publish_version(str(table), good)
    crashed = make_version(table, complete=False)
    with pytest.raises(IncompleteTableError):
        storage.publish_version(str(table), crashed)
    assert storage.require_complete(str(table), "ingest") == good


def test_old_versions_pruned(tmp_path):
    table = tmp_path / "ratings"
    versions = [make_version(table, complete=True) for _ in range(4)]
    for version in versions:
        storage.publish_version(str(table), version)
    remaining = sorted(path.name for path in (table / storage.VERSIONS_FOLDER).iterdir())
    assert remaining == [Path(v).name for v in versions[-2:]]


def test_table_without_marker_is_refused(tmp_path):
    table = tmp_path / "merged"
    table.mkdir()
    (table / "part-0.parquet").write_text("rows")
    with pytest.raises(IncompleteTableError) as raised:
        storage.require_complete(str(table), "merge")
    assert str(table) in str(raised.value)
    assert "make merge" in str(raised.value)


def test_missing_table_names_stage(tmp_path):
    with pytest.raises(IncompleteTableError, match="does not exist"):
        storage.require_complete(str(tmp_path / "train"), "prepare")


def test_table_written_in_place_is_accepted(tmp_path):
    table = tmp_path / "train"
    table.mkdir()
    (table / storage.SUCCESS_MARKER).touch()
    assert storage.require_complete(str(table), "prepare") == str(table)


def test_spark_rerun_replaces_table_whole(spark, tmp_path):
    config = Config(warehouse=str(tmp_path), dataset="tiny")
    tables.write_table(spark.range(5), config, "numbers")
    tables.write_table(spark.range(3), config, "numbers")
    assert tables.count_rows(spark, config, "numbers", producer="test") == 3


def test_spark_crash_mid_write_keeps_old_table(spark, tmp_path):
    from pyspark.sql import functions as F

    config = Config(warehouse=str(tmp_path), dataset="tiny")
    tables.write_table(spark.range(5), config, "numbers")
    # A task that fails aborts the job after the write has started.
    failing = spark.range(100).withColumn(
        "checked", F.when(F.col("id") == 97, F.raise_error("injected failure")).otherwise(1)
    )
    with pytest.raises(Exception, match="injected failure"):
        tables.write_table(failing, config, "numbers")
    assert tables.count_rows(spark, config, "numbers", producer="test") == 5


def test_write_json_is_atomic_rename(tmp_path):
    target = tmp_path / "reports" / "metrics.json"
    storage.write_json(str(target), {"rmse": 0.85})
    assert storage.read_json(str(target)) == {"rmse": 0.85}
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]


def test_manifest_kept_per_run(tmp_path, monkeypatch):
    from lenspark import manifest

    config = Config(warehouse=str(tmp_path), dataset="tiny")
    for run in ("run-1", "run-2"):
        monkeypatch.setenv("RUN_ID", run)
        manifest.record_stage(config, "ingest", {"rows_in": len(run)}, {}, 1.0)
    runs = tmp_path / "tiny" / "_manifest" / "runs"
    assert sorted(path.name for path in runs.iterdir()) == ["run-1", "run-2"]
    assert manifest.load_manifest(config)["ingest"]["run_id"] == "run-2"


def test_invalid_run_id_rejected(monkeypatch):
    from lenspark import manifest
    from lenspark.errors import ConfigError

    monkeypatch.setenv("RUN_ID", "../escape")
    with pytest.raises(ConfigError, match="RUN_ID"):
        manifest.run_id()
