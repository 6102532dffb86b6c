"""Index stage: dense user and movie indices fitted on train, movie features, indexed splits.

Users and movies get contiguous indices 0..U-1 and 0..M-1 in id order, fitted on every
train row (the fit rows and the validation rows), so that embedding tables stay small on
releases whose ids are sparse. An id absent from train maps to the out-of-vocabulary
index U for users or M for movies. The validation rows are carved from train the same
way the prepare stage split train from test.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from lenspark import columns as c
from lenspark import prepare, tables
from lenspark.config import Config

logger = logging.getLogger(__name__)

USER_INDEX_TABLE = "user_index"
MOVIE_INDEX_TABLE = "movie_index"
MOVIE_CATALOG_TABLE = "movie_catalog"
GENRE_VOCABULARY_TABLE = "genre_vocabulary"
INDEXED_FIT_TABLE = "indexed_fit"
INDEXED_VALIDATION_TABLE = "indexed_validation"
INDEXED_TEST_TABLE = "indexed_test"

# A release year in parentheses at the end of a title, as in "Heat (1995)". Spaces
# inside the parentheses and after them are tolerated.
TRAILING_YEAR_PATTERN = r"\(\s*(\d{4})\s*\)\s*$"


def carve_validation(
    train: DataFrame, split: str, train_percent: int, validation_percent: int
) -> tuple[DataFrame, DataFrame]:
    """Split train into (fit, validation) the way ``split`` split train from test.

    Hash split: a row is validation when its split bucket is at least
    train_percent - validation_percent, so validation_percent percent of all ratings
    land there. Temporal split: each user's latest validation_percent / train_percent
    of their train rows, rounded per user as ``prepare.latest_row_count`` describes.
    """
    if split == "temporal":
        return prepare.split_latest_per_user(train, validation_percent, train_percent)
    in_validation = F.col(c.SPLIT_BUCKET) >= train_percent - validation_percent
    return train.filter(~in_validation), train.filter(in_validation)


def dense_index(ids: DataFrame, id_column: str, index_column: str) -> DataFrame:
    """Number the distinct values of ``id_column`` 0, 1, 2, ... in ascending order.

    The window has no partition, so Spark ranks the distinct ids in one task. That is
    fine for the 10^5 to 10^6 users and movies of the MovieLens releases.
    """
    distinct_ids = ids.select(id_column).distinct()
    order = Window.orderBy(id_column)
    index = (F.row_number().over(order) - F.lit(1)).cast("int")
    return distinct_ids.withColumn(index_column, index)


def fit_user_index(train: DataFrame) -> DataFrame:
    """Return (userid, user_index) with one row per user of ``train``."""
    return dense_index(train, c.USERID, c.USER_INDEX)


def fit_movie_index(train: DataFrame) -> DataFrame:
    """Return (movieid, movie_index, train_ratings, mean_rating), one row per movie of train."""
    stats = train.groupBy(c.MOVIEID).agg(
        F.count(F.lit(1)).alias(c.TRAIN_RATINGS),
        F.avg(c.RATING).alias(c.MEAN_RATING),
    )
    return dense_index(train, c.MOVIEID, c.MOVIE_INDEX).join(stats, c.MOVIEID)


def split_genres(genres: Column) -> Column:
    """Split a "Comedy|Drama" string into its genres; "(no genres listed)" gives none.

    Spark's ``split`` takes a regular expression, so the bar is escaped.
    """
    parts = F.split(genres, r"\|")
    return F.filter(parts, lambda genre: (genre != F.lit(c.NO_GENRES)) & (genre != F.lit("")))


def fit_genre_vocabulary(movies: DataFrame) -> DataFrame:
    """Return (genre, position) for every genre of ``movies``, positions 0..G-1 alphabetically."""
    genres = movies.select(F.explode(split_genres(F.col(c.GENRES))).alias(c.GENRE)).distinct()
    position = (F.row_number().over(Window.orderBy(c.GENRE)) - F.lit(1)).cast("int")
    return genres.withColumn(c.GENRE_POSITION, position)


def genre_multi_hot(genres: Column, vocabulary: Sequence[str]) -> Column:
    """Return a float array with 1.0 at the position of each of the movie's genres, else 0.0.

    Genres absent from ``vocabulary`` are ignored. The array has len(vocabulary) entries.
    """
    movie_genres = split_genres(genres)
    flags = [
        F.when(F.array_contains(movie_genres, F.lit(genre)), F.lit(1.0)).otherwise(F.lit(0.0))
        for genre in vocabulary
    ]
    return F.array(*flags).cast("array<float>")


def release_year(title: Column) -> Column:
    """Return the year of a title that ends in "(YYYY)" as an int, else null."""
    year = F.regexp_extract(title, TRAILING_YEAR_PATTERN, 1)
    return F.when(year != F.lit(""), year.cast("int"))


def movie_attributes(rows: DataFrame) -> DataFrame:
    """Return (movieid, title, genres, imdbid, tmdbid), one row per movie of the rating rows.

    These columns come from movies.csv and links.csv, so they are equal on every rating
    of a movie. ``max`` picks that value deterministically.
    """
    return rows.groupBy(c.MOVIEID).agg(
        *[F.max(name).alias(name) for name in (c.TITLE, c.GENRES, c.IMDBID, c.TMDBID)]
    )


def build_movie_catalog(
    attributes: DataFrame,
    movie_index: DataFrame,
    vocabulary: Sequence[str],
    unknown_movie_index: int,
) -> DataFrame:
    """Return every movie of ``attributes`` with the movie_index table's columns.

    A movie absent from ``movie_index`` gets ``unknown_movie_index``, 0 train ratings and
    a null mean rating.
    """
    indexed = attributes.join(movie_index, c.MOVIEID, "left")
    return indexed.select(
        F.col(c.MOVIEID),
        F.coalesce(F.col(c.MOVIE_INDEX), F.lit(unknown_movie_index))
        .cast("int")
        .alias(c.MOVIE_INDEX),
        F.col(c.TITLE),
        F.col(c.GENRES),
        F.col(c.IMDBID),
        F.col(c.TMDBID),
        release_year(F.col(c.TITLE)).alias(c.YEAR),
        genre_multi_hot(F.col(c.GENRES), vocabulary).alias(c.GENRE_MULTI_HOT),
        F.coalesce(F.col(c.TRAIN_RATINGS), F.lit(0)).cast("long").alias(c.TRAIN_RATINGS),
        F.col(c.MEAN_RATING).cast("double"),
    )


def apply_indices(
    df: DataFrame,
    user_index: DataFrame,
    movie_index: DataFrame,
    unknown_user_index: int,
    unknown_movie_index: int,
) -> DataFrame:
    """Add user_index and movie_index to rating rows and keep the indexed columns.

    An id absent from the index tables gets ``unknown_user_index`` or
    ``unknown_movie_index``, the out-of-vocabulary slot.
    """
    users = F.broadcast(user_index.select(c.USERID, c.USER_INDEX))
    movies = F.broadcast(movie_index.select(c.MOVIEID, c.MOVIE_INDEX))
    joined = df.join(users, c.USERID, "left").join(movies, c.MOVIEID, "left")
    return joined.select(
        F.coalesce(F.col(c.USER_INDEX), F.lit(unknown_user_index)).cast("int").alias(c.USER_INDEX),
        F.coalesce(F.col(c.MOVIE_INDEX), F.lit(unknown_movie_index))
        .cast("int")
        .alias(c.MOVIE_INDEX),
        F.col(c.RATING).cast("float"),
        F.col(c.LABEL).cast("int"),
        F.col(c.USERID).cast("int"),
        F.col(c.MOVIEID).cast("int"),
        F.col(c.TIMESTAMP).cast("long"),
        F.col(c.GENRE_INDEX).cast("int"),
    )


def in_hash_order(df: DataFrame, seed: int) -> DataFrame:
    """Sort rating rows by a seeded hash of (userid, movieid), so users are mixed.

    The ratings files are sorted by user, and a reader that streams the table through a
    small shuffle buffer would otherwise see one user at a time.
    """
    key = F.xxhash64(F.col(c.USERID), F.col(c.MOVIEID), F.lit(seed))
    return df.orderBy(key, c.USERID, c.MOVIEID)


def _write_small(df: DataFrame, config: Config, table: str, *order: str) -> str:
    """Write a small table as one Parquet file sorted by ``order``; return its location."""
    return tables.write_table(df.coalesce(1).sortWithinPartitions(*order), config, table)


def run(spark: SparkSession, config: Config) -> dict:
    """Write the index, catalog, vocabulary and indexed tables, and return their counts."""
    train = tables.read_table(spark, config, prepare.TRAIN_TABLE, producer="prepare")
    test = tables.read_table(spark, config, prepare.TEST_TABLE, producer="prepare")

    def read(table: str) -> DataFrame:
        return tables.read_table(spark, config, table, producer="index")

    # Users, movies and genres are indexed on all of train, fit and validation rows alike.
    outputs = {}
    outputs[USER_INDEX_TABLE] = _write_small(
        fit_user_index(train), config, USER_INDEX_TABLE, c.USER_INDEX
    )
    user_index = read(USER_INDEX_TABLE)
    users = user_index.count()

    outputs[GENRE_VOCABULARY_TABLE] = _write_small(
        fit_genre_vocabulary(train), config, GENRE_VOCABULARY_TABLE, c.GENRE_POSITION
    )
    vocabulary = [
        row[c.GENRE] for row in read(GENRE_VOCABULARY_TABLE).orderBy(c.GENRE_POSITION).collect()
    ]

    movie_stats = fit_movie_index(train)
    movies = movie_stats.count()
    attributes = movie_attributes(train.unionByName(test))
    catalog = build_movie_catalog(attributes, movie_stats, vocabulary, movies)
    outputs[MOVIE_CATALOG_TABLE] = _write_small(
        catalog, config, MOVIE_CATALOG_TABLE, c.MOVIE_INDEX, c.MOVIEID
    )
    indexed_movies = read(MOVIE_CATALOG_TABLE).filter(F.col(c.MOVIE_INDEX) < movies)
    outputs[MOVIE_INDEX_TABLE] = _write_small(
        indexed_movies, config, MOVIE_INDEX_TABLE, c.MOVIE_INDEX
    )
    movie_index = read(MOVIE_INDEX_TABLE)

    fit, validation = carve_validation(
        train, config.split, config.train_percent, config.validation_percent
    )
    parts = {
        INDEXED_FIT_TABLE: fit,
        INDEXED_VALIDATION_TABLE: validation,
        INDEXED_TEST_TABLE: test,
    }
    rows = {}
    for table, part in parts.items():
        indexed = apply_indices(part, user_index, movie_index, users, movies)
        if table == INDEXED_FIT_TABLE:
            # The sort comes last because Spark drops a sort that a join follows.
            indexed = in_hash_order(indexed, config.seed)
        outputs[table] = tables.write_table(indexed, config, table)
        rows[table] = read(table).count()

    indexed_test = read(INDEXED_TEST_TABLE)
    catalog_movies = read(MOVIE_CATALOG_TABLE).count()
    train_rows = train.count()
    counts = {
        "rows_in": train_rows + test.count(),
        "train_rows": train_rows,
        "test_rows": rows[INDEXED_TEST_TABLE],
        "fit_rows": rows[INDEXED_FIT_TABLE],
        "validation_rows": rows[INDEXED_VALIDATION_TABLE],
        "users": users,
        "movies": movies,
        "genres": len(vocabulary),
        "catalog_movies": catalog_movies,
        "catalog_movies_absent_from_train": catalog_movies - movies,
        "test_rows_with_oov_user": indexed_test.filter(F.col(c.USER_INDEX) == users).count(),
        "test_rows_with_oov_movie": indexed_test.filter(F.col(c.MOVIE_INDEX) == movies).count(),
        "split": config.split,
    }
    counts["rows_out"] = sum(rows.values())
    counts["rows_rejected"] = 0
    if counts["fit_rows"] + counts["validation_rows"] != counts["train_rows"]:
        raise RuntimeError(
            f"index: fit ({counts['fit_rows']}) and validation ({counts['validation_rows']}) "
            f"rows do not add up to the {counts['train_rows']} train rows"
        )
    if counts["rows_out"] != counts["rows_in"]:
        raise RuntimeError(
            f"index: {counts['rows_out']} indexed rows do not match the {counts['rows_in']} "
            "train and test rows read"
        )
    logger.info(
        "index: %d users, %d movies, %d genres; %d fit, %d validation, %d test rows; "
        "%d test rows with an unknown user, %d with an unknown movie",
        users,
        movies,
        len(vocabulary),
        counts["fit_rows"],
        counts["validation_rows"],
        counts["test_rows"],
        counts["test_rows_with_oov_user"],
        counts["test_rows_with_oov_movie"],
    )
    return {"counts": counts, "outputs": outputs}
