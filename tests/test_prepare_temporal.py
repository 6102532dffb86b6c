"""Prepare's temporal split: each user's latest ratings go to test, rounded per user."""

from __future__ import annotations

from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lenspark import prepare, tables
from lenspark.config import Config
from lenspark.merge import MERGED_TABLE

RATINGS = T.StructType(
    [
        T.StructField("userid", T.IntegerType()),
        T.StructField("movieid", T.IntegerType()),
        T.StructField("timestamp", T.LongType()),
    ]
)


def rating_rows(user_timestamps: dict[int, list[int]]) -> list[tuple[int, int, int]]:
    """One row per timestamp; a user's movie ids are 1, 2, 3, ... in list order."""
    return [
        (user, movie, timestamp)
        for user, timestamps in user_timestamps.items()
        for movie, timestamp in enumerate(timestamps, start=1)
    ]


@pytest.mark.parametrize(
    ("rows", "numerator", "denominator", "expected"),
    [
        (1, 20, 100, 0),
        (2, 20, 100, 0),
        (3, 20, 100, 1),
        (7, 20, 100, 1),
        (8, 20, 100, 2),
        (12, 20, 100, 2),
        (13, 20, 100, 3),
        (100, 20, 100, 20),
        # 4 * 10 / 80 = 0.5 and 20 * 10 / 80 = 2.5 round half up.
        (4, 10, 80, 1),
        (20, 10, 80, 3),
        # 1 * 50 / 100 = 0.5 rounds to 1, but the user keeps one earlier row.
        (1, 50, 100, 0),
        (3, 99, 100, 2),
        (5, 0, 100, 0),
    ],
)
def test_latest_row_count_rounding(spark, rows, numerator, denominator, expected):
    df = spark.range(1).select(F.lit(rows).cast("long").alias("rows"))
    count = df.select(prepare.latest_row_count(F.col("rows"), numerator, denominator)).first()[0]
    assert count == expected


def test_temporal_split_breaks_timestamp_ties_by_movieid(spark):
    # Movies 3 and 4 share the latest timestamp, so the larger movie id counts as later.
    df = spark.createDataFrame(rating_rows({1: [10, 20, 30, 30, 5]}), RATINGS)
    train, test = prepare.split_train_test_temporal(df, train_percent=80)
    expected_test = spark.createDataFrame([(1, 4, 30)], RATINGS)
    expected_train = spark.createDataFrame([(1, 1, 10), (1, 2, 20), (1, 3, 30), (1, 5, 5)], RATINGS)
    assert_df_equality(test, expected_test, ignore_nullable=True, ignore_row_order=True)
    assert_df_equality(train, expected_train, ignore_nullable=True, ignore_row_order=True)


def test_temporal_split_test_rows_are_latest(spark):
    timestamps = {
        1: [50, 10, 40, 20, 30, 90, 80, 70, 60, 100],
        2: [7, 7, 7, 3, 3],
        3: [1000],
        4: [5, 1, 9, 2, 8, 3, 7, 4, 6, 10, 11, 12, 13],
    }
    df = spark.createDataFrame(rating_rows(timestamps), RATINGS)
    train, test = prepare.split_train_test_temporal(df, train_percent=80)
    train_rows = train.collect()
    test_rows = test.collect()

    expected_test_counts = {1: 2, 2: 1, 3: 0, 4: 3}
    for user, expected in expected_test_counts.items():
        user_train = [(r["timestamp"], r["movieid"]) for r in train_rows if r["userid"] == user]
        user_test = [(r["timestamp"], r["movieid"]) for r in test_rows if r["userid"] == user]
        assert len(user_test) == expected, f"user {user}"
        assert len(user_train) + len(user_test) == len(timestamps[user]), f"user {user}"
        if user_test:
            assert max(user_train) < min(user_test), f"user {user}"


def test_temporal_split_is_disjoint_and_complete(spark):
    timestamps = {user: [(user * 37 + i * 11) % 50 for i in range(user + 3)] for user in range(8)}
    df = spark.createDataFrame(rating_rows(timestamps), RATINGS)
    train, test = prepare.split_train_test_temporal(df, train_percent=70)
    keys = ["userid", "movieid"]
    assert train.join(test, keys).count() == 0
    assert train.count() + test.count() == df.count()


MERGED = T.StructType(
    [
        T.StructField("userId", T.IntegerType()),
        T.StructField("movieId", T.IntegerType()),
        T.StructField("rating", T.DoubleType()),
        T.StructField("title", T.StringType()),
        T.StructField("genres", T.StringType()),
        T.StructField("imdbId", T.StringType()),
        T.StructField("tmdbId", T.IntegerType()),
        T.StructField("timestamp", T.LongType()),
        T.StructField("tags", T.ArrayType(T.StringType())),
    ]
)


def write_merged(spark, config: Config, user_timestamps: dict[int, list[int]]) -> None:
    rows = [
        (user, movie, 3.5, f"Movie {movie} (1999)", "Drama", f"{movie:07d}", movie, timestamp, [])
        for user, movie, timestamp in rating_rows(user_timestamps)
    ]
    tables.write_table(spark.createDataFrame(rows, MERGED), config, MERGED_TABLE)


def test_run_with_temporal_split(spark, tmp_path: Path):
    config = Config(warehouse=str(tmp_path / "wh"), dataset="tiny", split="temporal")
    timestamps = {1: list(range(100, 110)), 2: list(range(200, 205))}
    write_merged(spark, config, timestamps)

    result = prepare.run(spark, config)

    assert result["counts"]["split"] == "temporal"
    assert result["counts"]["train_rows"] == 8 + 4
    assert result["counts"]["test_rows"] == 2 + 1
    test = tables.read_table(spark, config, "test", producer="prepare")
    latest = sorted((r["userid"], r["timestamp"]) for r in test.collect())
    assert latest == [(1, 108), (1, 109), (2, 204)]


def test_run_keeps_hash_split_by_default(spark, tmp_path: Path):
    config = Config(warehouse=str(tmp_path / "wh"), dataset="tiny")
    write_merged(spark, config, {1: list(range(100, 140))})

    result = prepare.run(spark, config)

    assert result["counts"]["split"] == "hash"
    train = tables.read_table(spark, config, "train", producer="prepare")
    test = tables.read_table(spark, config, "test", producer="prepare")
    assert train.filter(F.col("split_bucket") >= 80).count() == 0
    assert test.filter(F.col("split_bucket") < 80).count() == 0
    assert train.count() + test.count() == 40
