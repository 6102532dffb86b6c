"""Merge stage: one row per rating with its movie, links and the tags of that user and movie.

The merge is written twice, with the DataFrame API and with Spark SQL, and the
tests hold the two equal.
"""

from __future__ import annotations

import logging
import uuid

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lenspark import columns as c
from lenspark import tables
from lenspark.config import Config

logger = logging.getLogger(__name__)

MERGED_TABLE = "merged"
REJECTS_TABLE = "merge_rejects"
# Helper column: the number of tags of one (userId, movieId) pair.
_TAG_ROWS = "_tag_rows"


def collect_tags(tags: DataFrame) -> DataFrame:
    """Return one row per (userId, movieId) with that user's tags for that movie, sorted.

    ``collect_list`` gathers in no fixed order, so the array is sorted.
    """
    return tags.groupBy(c.USER_ID, c.MOVIE_ID).agg(
        F.array_sort(F.collect_list(c.TAG)).alias(c.TAGS)
    )


def merge_ratings(
    ratings: DataFrame, movies: DataFrame, links: DataFrame, tags: DataFrame
) -> DataFrame:
    """Join ratings to movies and links (inner, on movieId) and to their tags (left).

    A rating without tags gets an empty ``tags`` array.
    """
    rated_movies = ratings.join(movies, c.MOVIE_ID, "inner").join(links, c.MOVIE_ID, "inner")
    tagged = rated_movies.join(collect_tags(tags), [c.USER_ID, c.MOVIE_ID], "left")
    return tagged.select(
        *[c_name for c_name in c.MERGED_COLUMNS if c_name != c.TAGS],
        F.coalesce(F.col(c.TAGS), F.array().cast("array<string>")).alias(c.TAGS),
    )


def merge_ratings_sql(
    spark: SparkSession,
    ratings: DataFrame,
    movies: DataFrame,
    links: DataFrame,
    tags: DataFrame,
) -> DataFrame:
    """Build the same table as ``merge_ratings`` with Spark SQL over temporary views."""
    suffix = uuid.uuid4().hex[:8]
    views = {name: f"{name}_{suffix}" for name in ("ratings", "movies", "links", "tags")}
    for name, df in zip(views, (ratings, movies, links, tags), strict=True):
        df.createOrReplaceTempView(views[name])
    query = f"""
        WITH tag_lists AS (
            SELECT userId, movieId, array_sort(collect_list(tag)) AS tags
            FROM {views["tags"]}
            GROUP BY userId, movieId
        )
        SELECT r.userId, r.movieId, r.rating, m.title, m.genres, l.imdbId, l.tmdbId,
               r.timestamp, coalesce(t.tags, CAST(array() AS array<string>)) AS tags
        FROM {views["ratings"]} r
        JOIN {views["movies"]} m ON r.movieId = m.movieId
        JOIN {views["links"]} l ON r.movieId = l.movieId
        LEFT JOIN tag_lists t ON r.userId = t.userId AND r.movieId = t.movieId
    """
    merged = spark.sql(query)
    # The views are only needed while the plan is built.
    for view in views.values():
        spark.catalog.dropTempView(view)
    return merged


def unmatched_ratings(ratings: DataFrame, movies: DataFrame, links: DataFrame) -> DataFrame:
    """Return the ratings an inner join drops, as (file, record, reason) rows."""
    record = F.concat_ws(",", *[F.col(name).cast("string") for name in c.CSV_HEADERS["ratings"]])
    no_movie = ratings.join(movies, c.MOVIE_ID, "left_anti").select(
        F.lit("ratings.csv").alias("file"),
        record.alias("record"),
        F.lit("movieId absent from movies.csv").alias("reason"),
    )
    no_link = (
        ratings.join(movies.select(c.MOVIE_ID), c.MOVIE_ID, "left_semi")
        .join(links, c.MOVIE_ID, "left_anti")
        .select(
            F.lit("ratings.csv").alias("file"),
            record.alias("record"),
            F.lit("movieId absent from links.csv").alias("reason"),
        )
    )
    return no_movie.unionByName(no_link)


def _tag_counts(tags: DataFrame) -> DataFrame:
    """Return (userId, movieId, tag count) for every pair that has a tag."""
    return tags.groupBy(c.USER_ID, c.MOVIE_ID).agg(F.count(F.lit(1)).alias(_TAG_ROWS))


def orphan_tags(tags: DataFrame, ratings: DataFrame) -> DataFrame:
    """Return the tags whose user never rated that movie, so they attach to no rating.

    The ratings are first cut down to the pairs that have a tag, by a broadcast
    semi-join on the tag pairs, so that the large table is scanned once and never
    shuffled. Tags are a small share of the ratings in every MovieLens release.
    """
    tag_pairs = _tag_counts(tags).select(c.USER_ID, c.MOVIE_ID)
    rated_tag_pairs = (
        ratings.select(c.USER_ID, c.MOVIE_ID)
        .join(F.broadcast(tag_pairs), [c.USER_ID, c.MOVIE_ID], "left_semi")
        .distinct()
    )
    return tags.join(rated_tag_pairs, [c.USER_ID, c.MOVIE_ID], "left_anti")


def plain_left_join_rows(ratings: DataFrame, tags: DataFrame) -> int:
    """Count the rows a plain left join of ratings with tags gives (one per rating and tag).

    A rating with n tags gives n rows and a rating without tags gives one, so the count
    is the sum of max(1, n) over the ratings. It is computed with a broadcast of the
    per-pair tag counts instead of building the joined rows.
    """
    joined = ratings.select(c.USER_ID, c.MOVIE_ID).join(
        F.broadcast(_tag_counts(tags)), [c.USER_ID, c.MOVIE_ID], "left"
    )
    total = joined.agg(F.sum(F.coalesce(F.col(_TAG_ROWS), F.lit(1)))).first()[0]
    return int(total or 0)


def run(spark: SparkSession, config: Config) -> dict:
    """Merge the ingested tables, write the merged table, and return the join counts."""
    inputs = {
        name: tables.read_table(spark, config, name, producer="ingest")
        for name in ("ratings", "movies", "links", "tags")
    }
    ratings, movies, links, tags = (inputs[n] for n in ("ratings", "movies", "links", "tags"))

    merged_uri = tables.write_table(
        merge_ratings(ratings, movies, links, tags), config, MERGED_TABLE
    )
    rejects_uri = tables.write_table(
        unmatched_ratings(ratings, movies, links), config, REJECTS_TABLE, files=1
    )

    rejects = tables.read_table(spark, config, REJECTS_TABLE, producer="merge")
    reasons = {row["reason"]: row["count"] for row in rejects.groupBy("reason").count().collect()}
    ratings_in = ratings.count()
    merged_rows = tables.count_rows(spark, config, MERGED_TABLE, producer="merge")
    inner_joined = ratings.join(movies.select(c.MOVIE_ID), c.MOVIE_ID).join(
        links.select(c.MOVIE_ID), c.MOVIE_ID
    )
    counts = {
        "rows_in": ratings_in,
        "rows_out": merged_rows,
        "rows_rejected": sum(reasons.values()),
        "reasons": reasons,
        "movies": movies.count(),
        "links": links.count(),
        "tags": tags.count(),
        "ratings_after_inner_joins": merged_rows,
        "ratings_dropped_by_inner_joins": ratings_in - merged_rows,
        "plain_left_join_rows": plain_left_join_rows(inner_joined, tags),
        "tags_without_rating": orphan_tags(tags, ratings).count(),
    }
    if counts["rows_out"] + counts["rows_rejected"] != ratings_in:
        raise RuntimeError(
            f"merge: {merged_rows} merged and {counts['rows_rejected']} rejected ratings do not "
            f"add up to the {ratings_in} ratings read"
        )
    logger.info(
        "merge: %d ratings in, %d merged rows, %d dropped by the inner joins, "
        "%d rows in a plain left join with tags, %d tags with no rating",
        ratings_in,
        merged_rows,
        counts["ratings_dropped_by_inner_joins"],
        counts["plain_left_join_rows"],
        counts["tags_without_rating"],
    )
    return {"counts": counts, "outputs": {"merged": merged_uri, "rejects": rejects_uri}}
