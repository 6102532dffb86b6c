"""One test per bad input: each fails with one clear message or lands in a rejects table.

The preflight checks catch file and location problems before Spark starts. Bad rows
go through the ingest stage in-process and must reach ``ingest_rejects`` (or
``merge_rejects``) with their file, record text and reason.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lenspark import bucket, ingest, merge, preflight, storage
from lenspark.config import Config
from lenspark.errors import ConfigError, DataQualityError, DataSourceError, InputFormatError
from test_ingest import HEADERS, write_csv, write_dataset

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GOOD_RATING = "1,1,4.0,100"
MALFORMED = "malformed line: a field does not parse or the line has too few or too many fields"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ingest_config(tmp_path: Path, **settings) -> Config:
    values = {"warehouse": str(tmp_path / "warehouse"), "dataset": "tiny", "max_reject_rate": 1.0}
    values.update(settings)
    return Config(**values)


def preflight_error(tmp_path: Path, source: Path | str, error_type: type[Exception]) -> str:
    """Run the ingest preflight on ``source`` and return the message of the error it raises."""
    config = ingest_config(tmp_path, movielens_dir=str(source))
    with pytest.raises(error_type) as raised:
        preflight.run_preflight(config, "ingest")
    return str(raised.value)


# Files and folders, caught before Spark starts.


def test_missing_file(tmp_path):
    source = write_dataset(tmp_path / "csv")
    (source / "links.csv").unlink()

    message = preflight_error(tmp_path, source, InputFormatError)

    assert str(source) in message
    assert "has no links.csv" in message
    assert "Set --movielens-dir (env MOVIELENS_DIR) to that folder" in message


def test_header_with_swapped_columns(tmp_path):
    source = write_dataset(tmp_path / "csv")
    write_csv(source, "ratings", "1,1,4.0,100", header="movieId,userId,rating,timestamp")

    message = preflight_error(tmp_path, source, InputFormatError)

    assert str(source / "ratings.csv") in message
    assert "'movieId,userId,rating,timestamp'" in message
    assert "expected 'userId,movieId,rating,timestamp'" in message
    assert "with their header line" in message


def test_empty_file(tmp_path):
    source = write_dataset(tmp_path / "csv")
    (source / "movies.csv").write_bytes(b"")

    message = preflight_error(tmp_path, source, InputFormatError)

    assert str(source / "movies.csv") in message
    assert "is empty (0 bytes)" in message
    assert "Replace it with movies.csv from the MovieLens release" in message


def test_ratings_with_header_only(tmp_path):
    source = write_dataset(tmp_path / "csv")
    (source / "ratings.csv").write_text(HEADERS["ratings"] + "\n\n  \n", encoding="utf-8")

    message = preflight_error(tmp_path, source, InputFormatError)

    assert str(source / "ratings.csv") in message
    assert "contains the header line but no data lines" in message
    assert "Replace it with the complete ratings.csv" in message


def test_tags_with_header_only_passes(tmp_path):
    source = write_dataset(tmp_path / "csv")
    (source / "tags.csv").write_text(HEADERS["tags"] + "\n", encoding="utf-8")
    config = ingest_config(tmp_path, movielens_dir=str(source))

    preflight.run_preflight(config, "ingest")


def test_ml_100k_folder(tmp_path):
    source = tmp_path / "ml-100k"
    source.mkdir()
    (source / "u.data").write_text("196\t242\t3\t881250949\n", encoding="utf-8")

    message = preflight_error(tmp_path, source, InputFormatError)

    assert str(source) in message
    assert "u.data" in message
    assert "tab-separated" in message
    assert "ml-100k" in message
    assert "not supported yet" in message
    assert "--dataset ml-latest-small" in message


def test_ml_1m_folder(tmp_path):
    source = tmp_path / "ml-1m"
    source.mkdir()
    (source / "ratings.dat").write_text("1::1193::5::978300760\n", encoding="utf-8")

    message = preflight_error(tmp_path, source, InputFormatError)

    assert str(source) in message
    assert "ratings.dat" in message
    assert "'::'-separated" in message
    assert "ml-1m" in message
    assert "not supported yet" in message


def test_folder_without_ratings(tmp_path):
    source = write_dataset(tmp_path / "csv")
    (source / "ratings.csv").unlink()

    message = preflight_error(tmp_path, source, DataSourceError)

    assert str(source) in message
    assert "contains no ratings.csv" in message
    assert "Set MOVIELENS_DIR" in message


# Bad rows: each reaches ingest_rejects with its file, record text and reason. One
# ingest run reads them all, next to one valid rating that a later line repeats.

REPEATED_PAIR = "1,1,2.5,200"
BAD_LINES = {
    "too_few_fields": ("1,3", MALFORMED),
    "too_many_fields": ("1,4,4.0,100,extra", MALFORMED),
    "non_numeric_id": ("one,5,4.0,100", MALFORMED),
    "rating_7_0": ("1,6,7.0,100", "rating outside 0.5..5.0"),
    "rating_3_3": ("1,7,3.3,100", "rating not a multiple of 0.5"),
    "null_user_id": (",8,4.0,100", "missing userId"),
}


@pytest.fixture(scope="module")
def ingested_bad_lines(spark, tmp_path_factory) -> tuple[dict, list]:
    """Ingest a ratings.csv with every line of BAD_LINES and REPEATED_PAIR after a valid line.

    Returns the ratings counts and the (file, record, reason) rows of ingest_rejects.
    """
    root = tmp_path_factory.mktemp("bad-lines")
    lines = (GOOD_RATING, *(line for line, _ in BAD_LINES.values()), REPEATED_PAIR)
    source = write_dataset(root / "csv", ratings=lines)
    result = ingest.run(spark, ingest_config(root), source=str(source))
    rejects_location = storage.require_complete(result["outputs"]["rejects"], "ingest")
    rejects = [tuple(row) for row in spark.read.parquet(rejects_location).collect()]
    return result["counts"]["ratings"], rejects


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_bad_rating_line(ingested_bad_lines, case):
    line, reason = BAD_LINES[case]
    counts, rejects = ingested_bad_lines

    assert ("ratings.csv", line, reason) in rejects
    assert counts["reasons"][reason] >= 1


def test_repeated_user_movie_pair(ingested_bad_lines):
    # The valid line has the earlier timestamp, so it is kept and the later one is the repeat.
    counts, rejects = ingested_bad_lines

    assert ("ratings.csv", REPEATED_PAIR, "repeated userId, movieId") in rejects
    assert counts["reasons"]["repeated userId, movieId"] == 1


def test_bad_lines_accounting(ingested_bad_lines):
    counts, rejects = ingested_bad_lines

    assert counts["rows_in"] == len(BAD_LINES) + 2
    assert counts["rows_out"] == 1
    assert counts["rows_rejected"] == len(BAD_LINES) + 1
    assert len(rejects) == counts["rows_rejected"]
    assert counts["reasons"][MALFORMED] == 3


@pytest.mark.slow
def test_rating_for_movie_absent_from_movies(spark, tmp_path):
    source = write_dataset(tmp_path / "csv", ratings=(GOOD_RATING, "1,99,3.0,100"))
    config = ingest_config(tmp_path)
    ingested = ingest.run(spark, config, source=str(source))
    assert ingested["counts"]["ratings"]["rows_rejected"] == 0

    merged = merge.run(spark, config)

    counts = merged["counts"]
    assert counts["rows_in"] == 2
    assert counts["rows_out"] == 1
    assert counts["reasons"] == {"movieId absent from movies.csv": 1}
    rejects_location = storage.require_complete(merged["outputs"]["rejects"], "merge")
    rejects = [tuple(row) for row in spark.read.parquet(rejects_location).collect()]
    assert rejects == [("ratings.csv", "1,99,3.0,100", "movieId absent from movies.csv")]


def test_reject_rate_above_maximum(spark, tmp_path):
    ratings = ("1,1,4.0,100", "1,2,7.0,100", "2,1,9.5,100", "2,2,0.0,100", "3,1,x,100")
    source = write_dataset(tmp_path / "csv", ratings=ratings)
    config = ingest_config(tmp_path, max_reject_rate=0.001)

    with pytest.raises(DataQualityError) as raised:
        ingest.run(spark, config, source=str(source))

    message = str(raised.value)
    assert str(source / "ratings.csv") in message
    assert "4 of 5 rows (80.00%) are invalid" in message
    assert "MAX_REJECT_RATE=0.001" in message
    # The most frequent reason comes first.
    assert f"reasons: rating outside 0.5..5.0: 3 rows; {MALFORMED}: 1 rows." in message
    assert "ingest_rejects" in message
    assert "raise MAX_REJECT_RATE" in message


# Output locations.


def test_warehouse_under_a_file(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be\n", encoding="utf-8")
    warehouse = blocker / "warehouse"
    config = Config(warehouse=str(warehouse))

    with pytest.raises(ConfigError) as raised:
        preflight.run_preflight(config, "merge")

    message = str(raised.value)
    assert f"--warehouse (env WAREHOUSE) is {warehouse}" in message
    assert f"{blocker} is a file, not a folder" in message
    assert "Set --warehouse (env WAREHOUSE) to a folder that you can write" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_warehouse_in_read_only_folder(tmp_path):
    parent = tmp_path / "read-only"
    parent.mkdir()
    parent.chmod(0o555)
    config = Config(warehouse=str(parent / "warehouse"))
    try:
        with pytest.raises(ConfigError) as raised:
            preflight.run_preflight(config, "merge")
    finally:
        parent.chmod(0o755)

    message = str(raised.value)
    assert str(parent / "warehouse") in message
    assert "cannot be created (Permission denied)" in message
    assert "Set --warehouse (env WAREHOUSE) to a folder that you can write" in message


def set_s3_environment(monkeypatch, endpoint: str) -> None:
    monkeypatch.setenv("S3_ENDPOINT_URL", endpoint)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-key-value")
    monkeypatch.setenv("AWS_REGION", "us-east-1")


@pytest.mark.slow
def test_warehouse_bucket_missing(monkeypatch, moto_endpoint):
    set_s3_environment(monkeypatch, moto_endpoint)
    config = Config(warehouse="s3a://no-such-bucket/warehouse")

    with pytest.raises(ConfigError) as raised:
        preflight.run_preflight(config, "merge")

    message = str(raised.value)
    assert "Bucket no-such-bucket" in message
    assert "s3a://no-such-bucket/warehouse" in message
    assert f"does not exist at {moto_endpoint}" in message
    assert "set --warehouse (env WAREHOUSE) to an existing bucket" in message


@pytest.mark.slow
def test_bucket_source_missing_file(monkeypatch, moto_endpoint, tmp_path):
    set_s3_environment(monkeypatch, moto_endpoint)
    client = bucket.s3_client(max_attempts=1)
    client.create_bucket(Bucket="lenspark-source")
    local = write_dataset(tmp_path / "csv")
    for name in ("ratings.csv", "tags.csv", "links.csv"):
        client.upload_file(str(local / name), "lenspark-source", f"raw/tiny/{name}")
    source = "s3://lenspark-source/raw/tiny"

    message = preflight_error(tmp_path, source, InputFormatError)

    assert f"{source} has no movies.csv" in message
    assert "Set --movielens-dir (env MOVIELENS_DIR) to that folder" in message

    client.upload_file(str(local / "movies.csv"), "lenspark-source", "raw/tiny/movies.csv")
    preflight.run_preflight(ingest_config(tmp_path, movielens_dir=source), "ingest")


def test_s3_endpoint_not_responding(monkeypatch):
    # Nothing listens on a port that was free a moment ago, so the connection is refused.
    endpoint = f"http://127.0.0.1:{free_port()}"
    set_s3_environment(monkeypatch, endpoint)
    config = Config(warehouse="s3a://lenspark/warehouse")

    with pytest.raises(ConfigError) as raised:
        preflight.run_preflight(config, "merge")

    message = str(raised.value)
    assert f"The S3 endpoint {endpoint} (from S3_ENDPOINT_URL) did not respond" in message
    assert "s3a://lenspark/warehouse" in message
    assert "correct S3_ENDPOINT_URL" in message


# A real job through spark-submit: lenspark's message is the first error the user reads.


def spark_submit_ingest(source: Path, warehouse: Path) -> subprocess.CompletedProcess:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MAKE", "MFLAGS", "PYSPARK", "SPARK_"))
    }
    environment.update(
        PYSPARK_PYTHON=sys.executable,
        SPARK_LOCAL_IP="127.0.0.1",
        SPARK_CONF_DIR=str(REPO / "conf"),
    )
    command = [
        str(BIN / "spark-submit"),
        "--master",
        "local[1]",
        "--properties-file",
        str(REPO / "spark-defaults.conf"),
        "--conf",
        "spark.ui.enabled=false",
        str(REPO / "jobs" / "ingest.py"),
        "--movielens-dir",
        str(source),
        "--warehouse",
        str(warehouse),
        "--dataset",
        "tiny",
    ]
    # spark-submit copies the Python driver's stderr to its own stdout, while Spark's
    # log4j writes to stderr. One pipe for both keeps the order a terminal shows.
    return subprocess.run(
        command,
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("ratings", "expected_error"),
    [
        (None, "ERROR lenspark.job: ingest failed before Spark started: "),
        (("1,1,4.0,100", "1,2,7.0,100"), "ERROR lenspark.job: ingest failed: "),
    ],
    ids=["preflight_error", "error_inside_spark"],
)
def test_spark_submit_error_comes_first(tmp_path, ratings, expected_error):
    source = write_dataset(tmp_path / "csv", ratings=ratings or (GOOD_RATING,))
    if ratings is None:
        (source / "movies.csv").unlink()

    result = spark_submit_ingest(source, tmp_path / "warehouse")

    assert result.returncode == 2, result.stdout[-4000:]
    lines = result.stdout.splitlines()
    error_lines = [number for number, line in enumerate(lines) if " ERROR " in f" {line}"]
    assert error_lines, result.stdout[-4000:]
    first_error = lines[error_lines[0]]
    assert expected_error in first_error
    assert str(source) in first_error
    before = "\n".join(lines[: error_lines[0]])
    assert "Exception in thread" not in before
    assert "Traceback" not in before
    assert "py4j" not in before.lower()
