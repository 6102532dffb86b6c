"""Spark schemas of the MovieLens CSV files, in the column order of their headers."""

from pyspark.sql import types as T

from lenspark import columns as c

CORRUPT_RECORD = "_corrupt_record"

RATINGS = T.StructType(
    [
        T.StructField(c.USER_ID, T.IntegerType()),
        T.StructField(c.MOVIE_ID, T.IntegerType()),
        T.StructField(c.RATING, T.DoubleType()),
        T.StructField(c.TIMESTAMP, T.LongType()),
    ]
)

MOVIES = T.StructType(
    [
        T.StructField(c.MOVIE_ID, T.IntegerType()),
        T.StructField(c.TITLE, T.StringType()),
        T.StructField(c.GENRES, T.StringType()),
    ]
)

TAGS = T.StructType(
    [
        T.StructField(c.USER_ID, T.IntegerType()),
        T.StructField(c.MOVIE_ID, T.IntegerType()),
        T.StructField(c.TAG, T.StringType()),
        T.StructField(c.TIMESTAMP, T.LongType()),
    ]
)

# imdbId stays a string so that its leading zeros ("0114709") survive; tmdbId is
# empty for some movies and reads as null.
LINKS = T.StructType(
    [
        T.StructField(c.MOVIE_ID, T.IntegerType()),
        T.StructField(c.IMDB_ID, T.StringType()),
        T.StructField(c.TMDB_ID, T.IntegerType()),
    ]
)

CSV_SCHEMAS: dict[str, T.StructType] = {
    "ratings": RATINGS,
    "movies": MOVIES,
    "tags": TAGS,
    "links": LINKS,
}


def with_corrupt_record(schema: T.StructType) -> T.StructType:
    """Add the string column where Spark's CSV reader keeps the raw text of malformed lines."""
    return T.StructType([*schema.fields, T.StructField(CORRUPT_RECORD, T.StringType())])
