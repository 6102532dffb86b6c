"""Index stage: dense indices with an out-of-vocabulary slot, genres, years and validation."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lenspark import index, storage, tables
from lenspark.config import Config

PREPARED = T.StructType(
    [
        T.StructField("userid", T.IntegerType()),
        T.StructField("movieid", T.IntegerType()),
        T.StructField("rating", T.DoubleType()),
        T.StructField("label", T.IntegerType()),
        T.StructField("timestamp", T.LongType()),
        T.StructField("title", T.StringType()),
        T.StructField("genres", T.StringType()),
        T.StructField("genre_index", T.IntegerType()),
        T.StructField("imdbid", T.StringType()),
        T.StructField("tmdbid", T.IntegerType()),
        T.StructField("tags", T.ArrayType(T.StringType())),
        T.StructField("split_bucket", T.IntegerType()),
    ]
)

MOVIES = {
    10: ("Heat (1995)", "Action|Crime"),
    20: ("Hyena Road", "(no genres listed)"),
    30: ("Alien (1979)", "Horror|Sci-Fi"),
    40: ("Babe (1995)", "Children|Drama"),
}


def prepared_row(user: int, movie: int, rating: float, timestamp: int, bucket: int) -> tuple:
    title, genres = MOVIES.get(movie, (f"Movie {movie} (2000)", "Drama"))
    label = int(rating + 0.5)
    return (
        user,
        movie,
        rating,
        label,
        timestamp,
        title,
        genres,
        0,
        f"{movie:07d}",
        movie,
        [],
        bucket,
    )


def prepared_frame(spark, rows: list[tuple[int, int, float, int, int]]):
    return spark.createDataFrame([prepared_row(*row) for row in rows], PREPARED)


# (userid, movieid, rating, timestamp, split_bucket); train buckets are below 80.
TRAIN_ROWS = [
    (7, 10, 4.0, 100, 5),
    (7, 20, 3.0, 101, 75),
    (3, 10, 5.0, 102, 40),
    (3, 30, 2.5, 103, 71),
    (9, 30, 1.0, 104, 12),
    (9, 20, 4.5, 105, 60),
]
# User 5 and movie 40 never occur in train.
TEST_ROWS = [
    (7, 30, 3.5, 200, 85),
    (5, 10, 4.0, 201, 90),
    (3, 40, 2.0, 202, 99),
]


def test_user_index_is_dense_in_id_order(spark):
    train = prepared_frame(spark, TRAIN_ROWS)
    expected = spark.createDataFrame([(3, 0), (7, 1), (9, 2)], "userid int, user_index int")
    assert_df_equality(
        index.fit_user_index(train), expected, ignore_nullable=True, ignore_row_order=True
    )


def test_index_round_trip_with_oov_ids(spark):
    train = prepared_frame(spark, TRAIN_ROWS)
    test = prepared_frame(spark, TEST_ROWS)
    users = index.fit_user_index(train)
    movies = index.fit_movie_index(train)

    indexed = index.apply_indices(test, users, movies, 3, 3)

    rows = {(r["userid"], r["movieid"]): r for r in indexed.collect()}
    assert (rows[(7, 30)]["user_index"], rows[(7, 30)]["movie_index"]) == (1, 2)
    assert rows[(5, 10)]["user_index"] == 3
    assert rows[(5, 10)]["movie_index"] == 0
    assert rows[(3, 40)]["user_index"] == 0
    assert rows[(3, 40)]["movie_index"] == 3
    # Joining the known indices back to the mapping tables returns the original ids.
    mapped_back = (
        indexed.join(users.withColumnRenamed("userid", "mapped_userid"), "user_index")
        .join(movies.select("movie_index", F.col("movieid").alias("mapped_movieid")), "movie_index")
        .collect()
    )
    assert len(mapped_back) == 1
    assert mapped_back[0]["mapped_userid"] == 7
    assert mapped_back[0]["mapped_movieid"] == 30


def test_indexed_columns_and_types(spark):
    train = prepared_frame(spark, TRAIN_ROWS)
    indexed = index.apply_indices(
        train, index.fit_user_index(train), index.fit_movie_index(train), 3, 3
    )
    types = {field.name: field.dataType.simpleString() for field in indexed.schema.fields}
    assert types == {
        "user_index": "int",
        "movie_index": "int",
        "rating": "float",
        "label": "int",
        "userid": "int",
        "movieid": "int",
        "timestamp": "bigint",
        "genre_index": "int",
    }


def test_movie_index_statistics(spark):
    train = prepared_frame(spark, TRAIN_ROWS)
    expected = spark.createDataFrame(
        [(10, 0, 2, 4.5), (20, 1, 2, 3.75), (30, 2, 2, 1.75)],
        "movieid int, movie_index int, train_ratings long, mean_rating double",
    )
    assert_df_equality(
        index.fit_movie_index(train), expected, ignore_nullable=True, ignore_row_order=True
    )


def test_genre_vocabulary_with_regex_characters(spark):
    movies = spark.createDataFrame(
        [("Sci-Fi|Film.Noir|A+B",), ("Comedy",), ("(no genres listed)",)], "genres string"
    )
    expected = spark.createDataFrame(
        [("A+B", 0), ("Comedy", 1), ("Film.Noir", 2), ("Sci-Fi", 3)], "genre string, position int"
    )
    assert_df_equality(
        index.fit_genre_vocabulary(movies), expected, ignore_nullable=True, ignore_row_order=True
    )


@pytest.mark.parametrize(
    ("genres", "expected"),
    [
        ("Sci-Fi|Film.Noir|A+B", [1.0, 0.0, 1.0, 1.0]),
        ("(no genres listed)", [0.0, 0.0, 0.0, 0.0]),
        ("Comedy", [0.0, 1.0, 0.0, 0.0]),
        # "." and "+" are literal: FilmXNoir and AAB are other genres, not matches.
        ("FilmXNoir|AAB", [0.0, 0.0, 0.0, 0.0]),
        ("Comedy|Unseen", [0.0, 1.0, 0.0, 0.0]),
    ],
)
def test_genre_multi_hot(spark, genres, expected):
    vocabulary = ["A+B", "Comedy", "Film.Noir", "Sci-Fi"]
    df = spark.createDataFrame([(genres,)], "genres string")
    row = df.select(index.genre_multi_hot(F.col("genres"), vocabulary).alias("hot")).first()
    assert row["hot"] == expected


def test_genre_multi_hot_type(spark):
    df = spark.createDataFrame([("Comedy",)], "genres string")
    hot = df.select(index.genre_multi_hot(F.col("genres"), ["Comedy"]).alias("hot"))
    assert hot.schema["hot"].dataType == T.ArrayType(T.FloatType())


@pytest.mark.parametrize(
    ("title", "year"),
    [
        ("Heat (1995)", 1995),
        ("Hyena Road", None),
        ("Twelve Monkeys (a.k.a. 12 Monkeys) (1995)", 1995),
        ("Shanghai Triad (Yao a yao yao dao waipo qiao) (1995)", 1995),
        ("1984 (1984)", 1984),
        ("Spaced Out ( 2015 ) ", 2015),
        ("Movie (1995) (Director's Cut)", None),
        ("Big Bang Theory (2007-)", None),
        ("Babylon 5 (199)", None),
        (None, None),
    ],
)
def test_release_year(spark, title, year):
    df = spark.createDataFrame([(title,)], "title string")
    assert df.select(index.release_year(F.col("title")).alias("year")).first()["year"] == year


def test_movie_catalog_marks_movies_absent_from_train(spark):
    train = prepared_frame(spark, TRAIN_ROWS)
    test = prepared_frame(spark, TEST_ROWS)
    movies = index.fit_movie_index(train)
    attributes = index.movie_attributes(train.unionByName(test))

    catalog = index.build_movie_catalog(attributes, movies, ["Drama", "Horror"], 3)

    assert catalog.columns == [
        "movieid",
        "movie_index",
        "title",
        "genres",
        "imdbid",
        "tmdbid",
        "year",
        "genre_multi_hot",
        "train_ratings",
        "mean_rating",
    ]
    rows = {r["movieid"]: r for r in catalog.collect()}
    assert sorted(rows) == [10, 20, 30, 40]
    assert rows[40]["movie_index"] == 3
    assert rows[40]["train_ratings"] == 0
    assert rows[40]["mean_rating"] is None
    assert rows[40]["genre_multi_hot"] == [1.0, 0.0]
    assert rows[40]["year"] == 1995
    assert rows[40]["imdbid"] == "0000040"
    assert rows[30]["movie_index"] == 2
    assert rows[30]["genre_multi_hot"] == [0.0, 1.0]
    assert rows[20]["year"] is None


def test_hash_validation_carving(spark):
    train = prepared_frame(spark, TRAIN_ROWS)
    fit, validation = index.carve_validation(train, "hash", 80, 10)
    keys = sorted((r["userid"], r["movieid"]) for r in validation.collect())
    assert keys == [(3, 30), (7, 20)]
    assert fit.join(validation, ["userid", "movieid"]).count() == 0
    assert fit.count() + validation.count() == train.count()


def test_validation_carving_is_deterministic(spark):
    rows = [
        (user, 100 + i, 3.0, 1000 + (i * 5) % 8, (user * 13 + i * 7) % 80)
        for user in (3, 7, 9)
        for i in range(8)
    ]
    train = prepared_frame(spark, rows).repartition(3)
    for split in ("hash", "temporal"):
        first = index.carve_validation(train, split, 80, 10)[1]
        again = index.carve_validation(train.repartition(2), split, 80, 10)[1]
        assert_df_equality(first, again, ignore_row_order=True)


def test_temporal_validation_carving(spark):
    # User 3 has 8 train rows and user 7 has 20, so 8 * 10 / 80 = 1 and 20 * 10 / 80 = 2.5,
    # rounded half up to 3, of their latest rows go to validation. Split buckets are ignored.
    rows = [(3, 100 + i, 3.0, 1000 + i, 0) for i in range(8)]
    rows += [(7, 100 + i, 3.0, 2000 - i, 0) for i in range(20)]
    train = prepared_frame(spark, rows)
    fit, validation = index.carve_validation(train, "temporal", 80, 10)
    assert sorted((r["userid"], r["timestamp"]) for r in validation.collect()) == [
        (3, 1007),
        (7, 1998),
        (7, 1999),
        (7, 2000),
    ]
    assert fit.count() == 24
    assert fit.join(validation, ["userid", "movieid"]).count() == 0


def write_prepared(spark, config: Config) -> None:
    for table, rows in (("train", TRAIN_ROWS), ("test", TEST_ROWS)):
        tables.write_table(prepared_frame(spark, rows), config, table)


@pytest.mark.slow
def test_run_writes_every_table(spark, tmp_path: Path):
    config = Config(warehouse=str(tmp_path / "wh"), dataset="tiny")
    write_prepared(spark, config)

    result = index.run(spark, config)

    counts = result["counts"]
    assert counts["users"] == 3
    assert counts["movies"] == 3
    assert counts["genres"] == 4
    assert counts["fit_rows"] == 4
    assert counts["validation_rows"] == 2
    assert counts["fit_rows"] + counts["validation_rows"] == counts["train_rows"]
    assert counts["test_rows"] == 3
    assert counts["test_rows_with_oov_user"] == 1
    assert counts["test_rows_with_oov_movie"] == 1
    assert counts["catalog_movies"] == 4
    for uri in result["outputs"].values():
        assert storage.is_complete(storage.require_complete(uri, producer="index")), uri

    movie_index = tables.read_table(spark, config, "movie_index", producer="index")
    assert sorted(r["movie_index"] for r in movie_index.collect()) == [0, 1, 2]
    vocabulary = tables.read_table(spark, config, "genre_vocabulary", producer="index").orderBy(
        "position"
    )
    # Genres are fitted on train, so Children and Drama of the test-only movie are absent.
    assert [r["genre"] for r in vocabulary.collect()] == ["Action", "Crime", "Horror", "Sci-Fi"]
    catalog = {
        r["movieid"]: r
        for r in tables.read_table(spark, config, "movie_catalog", producer="index").collect()
    }
    assert catalog[40]["movie_index"] == 3
    assert catalog[40]["genre_multi_hot"] == [0.0, 0.0, 0.0, 0.0]
    assert catalog[10]["genre_multi_hot"] == [1.0, 1.0, 0.0, 0.0]

    fit = tables.read_table(spark, config, "indexed_fit", producer="index")
    assert sorted((r["userid"], r["movieid"]) for r in fit.collect()) == [
        (3, 10),
        (7, 10),
        (9, 20),
        (9, 30),
    ]

    # The fit rows are stored in the order of a seeded hash, so users come mixed.
    keyed = fit.select(
        "userid", "movieid", F.xxhash64("userid", "movieid", F.lit(config.seed)).alias("key")
    ).collect()
    hash_order = [(r["userid"], r["movieid"]) for r in sorted(keyed, key=lambda r: r["key"])]
    version = storage.require_complete(result["outputs"]["indexed_fit"], producer="index")
    stored = pq.read_table(version, columns=["userid", "movieid"]).to_pylist()
    assert [(r["userid"], r["movieid"]) for r in stored] == hash_order
