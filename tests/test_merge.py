"""Merge: joins, tag lists and the counts of what the joins drop, on tiny inline frames."""

from __future__ import annotations

import pytest
from chispa import assert_df_equality
from pyspark.sql import types as T

from lenspark import merge, schemas

MERGED_SCHEMA = T.StructType(
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


@pytest.fixture
def tables(spark):
    ratings = spark.createDataFrame(
        [
            (1, 10, 4.0, 100),
            (1, 20, 3.5, 101),
            (2, 10, 5.0, 102),
            # Movie 99 is absent from movies.csv, movie 30 from links.csv.
            (2, 99, 1.0, 103),
            (3, 30, 2.0, 104),
        ],
        schemas.RATINGS,
    )
    movies = spark.createDataFrame(
        [
            (10, "Heat (1995)", "Action"),
            (20, "Up (2009)", "Animation"),
            (30, "Jaws (1975)", "Horror"),
        ],
        schemas.MOVIES,
    )
    links = spark.createDataFrame([(10, "0113277", 949), (20, "1049413", None)], schemas.LINKS)
    tags = spark.createDataFrame(
        [
            (1, 10, "tense", 200),
            (1, 10, "classic", 201),
            (1, 10, "Pacino", 202),
            # User 2 never rated movie 20, so this tag attaches to nothing.
            (2, 20, "cute", 203),
        ],
        schemas.TAGS,
    )
    return ratings, movies, links, tags


def test_several_tags_give_one_sorted_row(spark, tables):
    merged = merge.merge_ratings(*tables)
    expected = spark.createDataFrame(
        [
            (
                1,
                10,
                4.0,
                "Heat (1995)",
                "Action",
                "0113277",
                949,
                100,
                ["Pacino", "classic", "tense"],
            ),
            (1, 20, 3.5, "Up (2009)", "Animation", "1049413", None, 101, []),
            (2, 10, 5.0, "Heat (1995)", "Action", "0113277", 949, 102, []),
        ],
        MERGED_SCHEMA,
    )
    assert_df_equality(
        merged, expected, ignore_row_order=True, ignore_nullable=True, ignore_column_order=False
    )


def test_dataframe_and_sql_merges_are_equal(spark, tables):
    by_dataframe = merge.merge_ratings(*tables)
    by_sql = merge.merge_ratings_sql(spark, *tables)
    assert_df_equality(by_dataframe, by_sql, ignore_row_order=True, ignore_nullable=True)


def test_rating_of_unknown_movie_is_dropped_and_counted(spark, tables):
    ratings, movies, links, _ = tables
    unmatched = {
        row["record"]: row["reason"]
        for row in merge.unmatched_ratings(ratings, movies, links).collect()
    }
    assert unmatched == {
        "2,99,1.0,103": "movieId absent from movies.csv",
        "3,30,2.0,104": "movieId absent from links.csv",
    }


def test_tag_without_rating_is_counted(spark, tables):
    ratings, _, _, tags = tables
    orphans = merge.orphan_tags(tags, ratings).collect()
    assert [(row["userId"], row["movieId"], row["tag"]) for row in orphans] == [(2, 20, "cute")]


def test_plain_left_join_duplicates_tagged_ratings(spark, tables):
    ratings, _, _, tags = tables
    # Five ratings, one of which carries three tags: 5 - 1 + 3 rows.
    assert merge.plain_left_join_rows(ratings, tags) == 7


def test_shortcut_counts_equal_joins(spark):
    """The broadcast shortcuts give the counts of the plain joins, duplicates included."""
    ratings = spark.createDataFrame(
        [
            (1, 10, 4.0, 100),
            # The same pair rated twice: each copy joins every tag of the pair.
            (1, 10, 3.0, 105),
            (1, 20, 3.5, 101),
            (2, 10, 5.0, 102),
        ],
        schemas.RATINGS,
    )
    tags = spark.createDataFrame(
        [
            (1, 10, "tense", 200),
            (1, 10, "classic", 201),
            (2, 10, "loud", 202),
            (2, 10, "loud", 203),
            (3, 10, "unrated", 204),
            (3, 10, "unrated too", 205),
        ],
        schemas.TAGS,
    )
    keys = ["userId", "movieId"]
    assert merge.plain_left_join_rows(ratings, tags) == ratings.join(tags, keys, "left").count()
    assert merge.plain_left_join_rows(ratings, tags) == 2 * 2 + 1 + 2
    expected_orphans = tags.join(ratings, keys, "left_anti")
    assert_df_equality(merge.orphan_tags(tags, ratings), expected_orphans, ignore_row_order=True)
    assert merge.orphan_tags(tags, ratings).count() == 2


def test_run_counts_add_up(spark, tables, tmp_path):
    from lenspark import storage
    from lenspark.config import Config

    config = Config(warehouse=str(tmp_path / "wh"), dataset="tiny")
    for name, df in zip(("ratings", "movies", "links", "tags"), tables, strict=True):
        df.write.parquet(storage.table_uri(config.warehouse, config.dataset, name))
    counts = merge.run(spark, config)["counts"]
    assert counts["rows_in"] == 5
    assert counts["rows_out"] == 3
    assert counts["rows_rejected"] == 2
    assert counts["ratings_dropped_by_inner_joins"] == 2
    assert counts["tags_without_rating"] == 1
    assert counts["plain_left_join_rows"] == 5


def test_run_requires_complete_ingest(spark, tmp_path):
    from lenspark.config import Config
    from lenspark.errors import IncompleteTableError

    config = Config(warehouse=str(tmp_path / "wh"), dataset="tiny")
    with pytest.raises(IncompleteTableError, match="make ingest"):
        merge.run(spark, config)
