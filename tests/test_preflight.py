"""Preflight checks: which locations each stage checks, and that jobs stop before Spark starts."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lenspark import ingest, jobrunner, preflight
from lenspark.config import Config
from lenspark.errors import ConfigError, InputFormatError
from test_ingest import HEADERS, write_dataset


def test_source_tables_match_ingest():
    assert set(preflight.SOURCE_TABLES) == set(ingest.TABLES)
    assert set(preflight.MAY_HAVE_NO_ROWS) == set(ingest.MAY_BE_EMPTY)


def test_local_folder_is_created_without_probe_left(tmp_path):
    warehouse = tmp_path / "a" / "b" / "warehouse"

    preflight.check_local_folder(warehouse, preflight.WAREHOUSE_SETTING)

    assert warehouse.is_dir()
    assert list(warehouse.iterdir()) == []


def test_existing_file_as_warehouse(tmp_path):
    warehouse = tmp_path / "warehouse"
    warehouse.write_text("", encoding="utf-8")

    with pytest.raises(ConfigError) as raised:
        preflight.check_local_folder(warehouse, preflight.WAREHOUSE_SETTING)

    assert f"{warehouse} is a file, not a folder" in str(raised.value)


def test_relative_warehouse_named_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blocker").write_text("", encoding="utf-8")

    with pytest.raises(ConfigError) as raised:
        preflight.check_writable("blocker/warehouse", preflight.WAREHOUSE_SETTING)

    assert str(tmp_path / "blocker" / "warehouse") in str(raised.value)


@pytest.mark.parametrize(("stage", "checks_reports"), [("merge", False), ("explore", True)])
def test_reports_checked_only_by_report_stages(tmp_path, stage, checks_reports):
    blocker = tmp_path / "blocker"
    blocker.write_text("", encoding="utf-8")
    config = Config(warehouse=str(tmp_path / "warehouse"), reports=str(blocker / "reports"))

    if checks_reports:
        with pytest.raises(ConfigError, match=r"^--reports \(env REPORTS\) is "):
            preflight.run_preflight(config, stage)
    else:
        preflight.run_preflight(config, stage)


def test_ingest_source_passes(tmp_path):
    source = write_dataset(tmp_path / "csv")
    config = Config(warehouse=str(tmp_path / "warehouse"), movielens_dir=str(source))

    assert preflight.check_ingest_source(config) == str(source)
    preflight.run_preflight(config, "ingest")


def test_source_not_checked_by_other_stages(tmp_path):
    config = Config(warehouse=str(tmp_path / "warehouse"), movielens_dir=str(tmp_path / "none"))

    preflight.run_preflight(config, "merge")


def test_several_missing_files_named(tmp_path):
    source = write_dataset(tmp_path / "csv")
    (source / "movies.csv").unlink()
    (source / "tags.csv").unlink()

    with pytest.raises(InputFormatError, match=r"has no movies\.csv, tags\.csv"):
        preflight.check_source_files(str(source))


@pytest.mark.parametrize(
    "after_header",
    ["", "\n", "\r\n\r\n", "\n \t\n", "\n\x00\n"],
    ids=["nothing", "newline", "crlf", "whitespace", "nul"],
)
def test_header_without_data_lines(tmp_path, after_header):
    source = write_dataset(tmp_path / "csv")
    (source / "links.csv").write_text(HEADERS["links"] + after_header, encoding="utf-8")

    with pytest.raises(InputFormatError, match=r"links\.csv contains the header line but no data"):
        preflight.check_source_files(str(source))


def test_non_ascii_space_counts_as_data(tmp_path):
    # Spark keeps a line of U+00A0 and rejects it as malformed, so it is not blank.
    source = write_dataset(tmp_path / "csv")
    (source / "links.csv").write_text(HEADERS["links"] + "\n\u00a0\n", encoding="utf-8")

    preflight.check_source_files(str(source))


def test_blank_lines_beyond_head_pass(tmp_path):
    # Only the first HEAD_BYTES are read, so a longer file is left to the ingest stage.
    source = write_dataset(tmp_path / "csv")
    blank = "\n" * (preflight.HEAD_BYTES + 1)
    (source / "links.csv").write_text(HEADERS["links"] + blank, encoding="utf-8")

    preflight.check_source_files(str(source))


def fail_if_spark_starts(monkeypatch) -> None:
    def get_session(app_name: str):
        raise AssertionError(f"Spark session {app_name} started despite a preflight error")

    monkeypatch.setattr("lenspark.spark.get_session", get_session)


def unused_stage(spark, config):
    raise AssertionError("the stage ran despite a preflight error")


def test_job_stops_before_spark_on_preflight_error(tmp_path, monkeypatch, caplog):
    fail_if_spark_starts(monkeypatch)
    blocker = tmp_path / "blocker"
    blocker.write_text("", encoding="utf-8")
    argv = ["--warehouse", str(blocker / "warehouse")]

    with caplog.at_level(logging.ERROR, logger="lenspark.job"):
        code = jobrunner.run_spark_stage("merge", "test job", unused_stage, argv)

    assert code == 2
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert message.startswith("merge failed before Spark started: --warehouse (env WAREHOUSE)")
    assert f"{blocker} is a file, not a folder" in message


def test_job_stops_before_spark_on_config_error(tmp_path, monkeypatch, caplog):
    fail_if_spark_starts(monkeypatch)
    argv = ["--warehouse", str(tmp_path / "warehouse"), "--train-percent", "0"]

    with caplog.at_level(logging.ERROR, logger="lenspark.job"):
        code = jobrunner.run_spark_stage("prepare", "test job", unused_stage, argv)

    assert code == 2
    assert [record.getMessage() for record in caplog.records] == [
        "prepare failed before Spark started: --train-percent must be between 1 and 99, got 0"
    ]


def test_job_source_error_before_spark(tmp_path, monkeypatch, caplog):
    fail_if_spark_starts(monkeypatch)
    source: Path = write_dataset(tmp_path / "csv")
    (source / "ratings.csv").write_text("movieId,userId,rating,timestamp\n1,1,4.0,1\n")
    argv = ["--warehouse", str(tmp_path / "warehouse"), "--movielens-dir", str(source)]

    with caplog.at_level(logging.ERROR, logger="lenspark.job"):
        code = jobrunner.run_spark_stage("ingest", "test job", unused_stage, argv)

    assert code == 2
    assert len(caplog.records) == 1
    assert "has the header 'movieId,userId,rating,timestamp'" in caplog.records[0].getMessage()
