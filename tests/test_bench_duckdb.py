"""The DuckDB transforms of the benchmark give the same tables as the Spark stages.

A 20,000-rating synthetic release, with a few invalid and unmatched rating lines added,
goes through ``lenspark.ingest``, ``merge`` and ``prepare`` on the test session and through
``bench/duckdb_etl.py``. Counts, reject reasons, train/test keys and the prepared columns
must agree.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from lenspark import ingest, merge, parquet_io, prepare, storage, synth
from lenspark.config import Config

pytest.importorskip("duckdb", reason="duckdb comes with the bench extra of pyproject.toml")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import duckdb_etl

SEED = 1234
RATINGS = 20_000
DATASET = "tiny-synthetic"
# Columns of the prepared tables compared row by row, besides the keys.
COMPARED_COLUMNS = duckdb_etl.PREPARED_COLUMNS


def _first_movie_id(movies_csv: Path) -> int:
    with movies_csv.open(encoding="utf-8") as lines:
        next(lines)
        return int(next(lines).split(",", 1)[0])


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """A small synthetic release with bad rating lines of every kind appended."""
    folder = tmp_path_factory.mktemp("bench-duckdb") / DATASET
    synth.generate(folder, dataset=DATASET, seed=SEED, ratings=RATINGS)
    movie = _first_movie_id(folder / "movies.csv")
    extra_lines = [
        f"999999,{movie},7.0,1100000000",  # rating outside 0.5..5.0
        f"999998,{movie},3.3,1100000000",  # not a multiple of 0.5
        f"999997,{movie},4.0,1100000000",  # repeat of the next line, which is earlier
        f"999997,{movie},3.0,1000000000",
        f"999996,{movie},4.0,1100000000,9",  # one field too many
        f"abc,{movie},4.0,1100000000",  # userId does not parse
        f"-5,{movie},4.0,1100000000",  # userId not positive
        f",{movie},4.0,1100000000",  # userId missing
        "999995,424242,4.0,1100000000",  # movie absent from movies.csv
    ]
    with (folder / "ratings.csv").open("a", encoding="utf-8") as ratings:
        ratings.write("\n".join(extra_lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def spark_counts(spark, release, tmp_path_factory) -> tuple[Config, dict]:
    """Run the three Spark stages and return the config and each stage's counts."""
    warehouse = tmp_path_factory.mktemp("bench-warehouse")
    config = Config(dataset=DATASET, warehouse=str(warehouse), seed=SEED)
    counts = {"ingest": ingest.run(spark, config, source=str(release))["counts"]}
    counts["merge"] = merge.run(spark, config)["counts"]
    counts["prepare"] = prepare.run(spark, config)["counts"]
    return config, counts


@pytest.fixture(scope="module")
def duckdb_counts(release, tmp_path_factory) -> tuple[Path, dict]:
    """Run the DuckDB ETL and return its output folder and counts."""
    out = tmp_path_factory.mktemp("bench-duckdb-out")
    return out, duckdb_etl.run(release, out, seed=SEED, memory_limit="1GB", threads=1)


def _spark_table(config: Config, table: str, columns) -> pads.Dataset:
    uri = storage.table_uri(config.warehouse, config.dataset, table)
    return parquet_io.open_dataset(uri, columns)


def _sorted_rows(dataset: pads.Dataset) -> list[dict]:
    rows = dataset.to_table(columns=list(COMPARED_COLUMNS)).to_pylist()
    return sorted(rows, key=lambda row: (row["userid"], row["movieid"]))


@pytest.mark.parametrize("table", ["ratings", "movies", "tags", "links"])
@pytest.mark.slow
def test_ingest_counts_equal(spark_counts, duckdb_counts, table):
    spark = spark_counts[1]["ingest"][table]
    duck = duckdb_counts[1]["ingest"][table]
    assert duck["rows_in"] == spark["rows_in"]
    assert duck["rows_out"] == spark["rows_out"]
    assert duck["rows_rejected"] == spark["rows_rejected"]
    assert duck["reasons"] == spark["reasons"]


@pytest.mark.slow
def test_ingest_rejects_every_bad_line(spark_counts, duckdb_counts):
    reasons = duckdb_counts[1]["ingest"]["ratings"]["reasons"]
    assert reasons["rating outside 0.5..5.0"] == 1
    assert reasons["rating not a multiple of 0.5"] == 1
    assert reasons["repeated userId, movieId"] == 1
    assert reasons["userId not a positive integer"] == 1
    assert reasons["missing userId"] == 1
    assert reasons[duckdb_etl.MALFORMED_REASON] == 2


@pytest.mark.slow
def test_merge_counts_equal(spark_counts, duckdb_counts):
    spark = spark_counts[1]["merge"]
    duck = duckdb_counts[1]["merge"]
    for name in ("rows_in", "rows_out", "rows_rejected", "reasons"):
        assert duck[name] == spark[name], name
    assert duck["plain_left_join_rows"] == spark["plain_left_join_rows"]
    assert duck["tags_without_rating"] == spark["tags_without_rating"]
    assert duck["reasons"] == {"movieId absent from movies.csv": 1}


@pytest.mark.slow
def test_prepare_counts_equal(spark_counts, duckdb_counts):
    spark = spark_counts[1]["prepare"]
    duck = duckdb_counts[1]["prepare"]
    for name in ("rows_in", "train_rows", "test_rows", "genre_strings"):
        assert duck[name] == spark[name], name
    assert duck["test_rows_with_unseen_genres"] == spark["test_rows_with_unseen_genres"]


@pytest.mark.parametrize("table", ["train", "test"])
@pytest.mark.slow
def test_split_key_checksums_equal(spark_counts, duckdb_counts, table):
    config = spark_counts[0]
    spark_keys = duckdb_etl.key_checksum(_spark_table(config, table, ["userid", "movieid"]))
    duckdb_path = duckdb_counts[0] / f"{table}.parquet"
    duckdb_keys = duckdb_etl.key_checksum(pads.dataset(str(duckdb_path), format="parquet"))
    assert spark_keys["rows"] > 0
    assert duckdb_keys == spark_keys


@pytest.mark.parametrize("table", ["train", "test"])
@pytest.mark.slow
def test_prepared_rows_equal(spark_counts, duckdb_counts, table):
    config = spark_counts[0]
    spark_rows = _sorted_rows(_spark_table(config, table, COMPARED_COLUMNS))
    duckdb_path = duckdb_counts[0] / f"{table}.parquet"
    duckdb_rows = _sorted_rows(pads.dataset(str(duckdb_path), format="parquet"))
    assert len(duckdb_rows) == len(spark_rows)
    assert duckdb_rows == spark_rows


@pytest.mark.slow
def test_parquet_written_with_snappy(duckdb_counts):
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(duckdb_counts[0] / "train.parquet").metadata
    assert metadata.row_group(0).column(0).compression == "SNAPPY"


def test_key_checksum_ignores_order(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = pa.table({"userid": [1, 2, 3], "movieid": [10, 20, 30]})
    pq.write_table(rows, tmp_path / "a.parquet")
    pq.write_table(rows.take([2, 0, 1]), tmp_path / "b.parquet")
    changed = pa.table({"userid": [1, 2, 3], "movieid": [10, 20, 31]})
    pq.write_table(changed, tmp_path / "c.parquet")

    def checksum(name: str) -> dict:
        return duckdb_etl.key_checksum(pads.dataset(str(tmp_path / name), format="parquet"))

    assert checksum("a.parquet") == checksum("b.parquet")
    assert checksum("a.parquet") != checksum("c.parquet")
    assert checksum("a.parquet")["rows"] == 3
