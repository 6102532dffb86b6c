"""Prepare: labels, genre index and the hash split, on tiny inline frames."""

from __future__ import annotations

import hashlib

from chispa import assert_df_equality
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lenspark import columns as c
from lenspark import prepare


def test_labels_round_half_up(spark):
    ratings = spark.createDataFrame([(0.5,), (1.5,), (2.5,), (4.5,), (5.0,), (3.0,)], ["rating"])
    expected = spark.createDataFrame(
        [(0.5, 1), (1.5, 2), (2.5, 3), (4.5, 5), (5.0, 5), (3.0, 3)],
        T.StructType(
            [T.StructField("rating", T.DoubleType()), T.StructField("label", T.IntegerType())]
        ),
    )
    assert_df_equality(prepare.add_label(ratings), expected, ignore_nullable=True)


def test_lower_case_columns():
    names = {"userId", "movieId", "imdbId", "tmdbId", "rating"}
    renamed = {prepare.RENAMES.get(name, name) for name in names}
    assert renamed == {"userid", "movieid", "imdbid", "tmdbid", "rating"}


def test_genre_index_ties_alphabetical(spark):
    rows = [("Drama",)] * 3 + [("Comedy",)] * 2 + [("Action",)] * 2 + [("Western",)]
    index = prepare.fit_genre_index(spark.createDataFrame(rows, ["genres"]))
    expected = spark.createDataFrame(
        [("Drama", 0, 3), ("Action", 1, 2), ("Comedy", 2, 2), ("Western", 3, 1)],
        T.StructType(
            [
                T.StructField("genres", T.StringType()),
                T.StructField("genre_index", T.IntegerType()),
                T.StructField("count", T.LongType()),
            ]
        ),
    )
    assert_df_equality(index, expected, ignore_nullable=True, ignore_row_order=True)


def test_unseen_genres_share_one_index(spark):
    index = prepare.fit_genre_index(spark.createDataFrame([("Drama",), ("Comedy",)], ["genres"]))
    later = spark.createDataFrame(
        [(1, "Drama"), (2, "Horror"), (3, "Sci-Fi|IMAX")], ["id", "genres"]
    )
    indexed = {
        row["id"]: row["genre_index"]
        for row in prepare.apply_genre_index(later, index, 2).collect()
    }
    assert indexed[1] == 1
    assert indexed[2] == 2
    assert indexed[3] == 2


def test_split_bucket_matches_python_md5(spark):
    df = spark.createDataFrame([(547, 1), (1, 31), (671, 6565)], ["userid", "movieid"])
    buckets = {
        (row["userid"], row["movieid"]): row[c.SPLIT_BUCKET]
        for row in prepare.add_split_bucket(df, 1234).collect()
    }
    for (user, movie), bucket in buckets.items():
        digest = hashlib.md5(f"{user}:{movie}:1234".encode()).hexdigest()
        assert bucket == int(digest[:8], 16) % 100


def _ratings_frame(spark, users: int = 40, movies: int = 50):
    rows = [
        (u, m, 0.5 + (u * m) % 10 / 2) for u in range(1, users + 1) for m in range(1, movies + 1)
    ]
    return spark.createDataFrame(rows, ["userid", "movieid", "rating"])


def test_split_disjoint_and_complete(spark):
    df = prepare.add_split_bucket(_ratings_frame(spark), 1234)
    train, test = prepare.split_train_test(df, 80)
    keys = ["userid", "movieid"]
    assert train.join(test, keys).count() == 0
    assert train.count() + test.count() == df.count()
    # About 80 percent of 2,000 rows; a binomial spread of a few percent.
    assert 0.75 < train.count() / df.count() < 0.85


def test_split_same_at_1_and_8_partitions(spark):
    base = _ratings_frame(spark)
    results = []
    for partitions in (1, 8):
        df = prepare.add_split_bucket(base.repartition(partitions), 1234)
        train, _ = prepare.split_train_test(df, 80)
        results.append(train.select("userid", "movieid"))
    assert_df_equality(results[0], results[1], ignore_row_order=True)


def test_split_changes_with_seed(spark):
    base = _ratings_frame(spark)
    first = prepare.add_split_bucket(base, 1234).select("userid", "movieid", F.col(c.SPLIT_BUCKET))
    second = prepare.add_split_bucket(base, 99).select(
        "userid", "movieid", F.col(c.SPLIT_BUCKET).alias("other")
    )
    differing = first.join(second, ["userid", "movieid"]).filter("split_bucket != other").count()
    assert differing > 0
