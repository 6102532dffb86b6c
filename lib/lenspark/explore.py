"""Explore stage: statistics and plots of the ratings in the merged table.

Only aggregates reach the driver (a handful of rows each), never the table.
"""

from __future__ import annotations

import logging
import math

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lenspark import columns as c
from lenspark import plots, report, storage, tables
from lenspark.config import Config
from lenspark.merge import MERGED_TABLE

logger = logging.getLogger(__name__)

TOP_USERS = 20
RATINGS_PER_USER = "ratings"
# Bins of ratings per user are half powers of two wide: 1, 1.41, 2, 2.83, 4, ...
BINS_PER_DOUBLING = 2


def rating_summary(df: DataFrame) -> dict[str, float]:
    """Return count, mean, stddev (sample), min and max of the rating."""
    row = df.agg(
        F.count(c.RATING).alias("count"),
        F.mean(c.RATING).alias("mean"),
        F.stddev_samp(c.RATING).alias("stddev"),
        F.min(c.RATING).alias("min"),
        F.max(c.RATING).alias("max"),
    ).first()
    return row.asDict()


def rating_value_counts(df: DataFrame) -> DataFrame:
    """Count each rating value, the most frequent first (ties by rating)."""
    return df.groupBy(c.RATING).count().orderBy(F.col("count").desc(), F.col(c.RATING).asc())


def ratings_per_user(df: DataFrame) -> DataFrame:
    """Count the ratings of each user, the most active users first (ties by userId)."""
    return (
        df.groupBy(c.USER_ID)
        .agg(F.count(F.lit(1)).alias(RATINGS_PER_USER))
        .orderBy(F.col(RATINGS_PER_USER).desc(), F.col(c.USER_ID).asc())
    )


def activity_histogram(per_user: DataFrame) -> DataFrame:
    """Count users per bin of ratings per user; bins grow by a factor sqrt(2).

    Returns (bin, low, high, users) where a user with n ratings falls in the bin
    with low <= n < high.
    """
    bin_number = F.floor(F.log2(F.col(RATINGS_PER_USER)) * BINS_PER_DOUBLING).cast("int")
    return (
        per_user.groupBy(bin_number.alias("bin"))
        .agg(F.count(F.lit(1)).alias("users"))
        .withColumn("low", F.ceil(F.pow(F.lit(2.0), F.col("bin") / BINS_PER_DOUBLING)))
        .withColumn("high", F.ceil(F.pow(F.lit(2.0), (F.col("bin") + 1) / BINS_PER_DOUBLING)))
        .orderBy("bin")
    )


def _format_rating(value: float) -> str:
    return f"{value:.1f}"


def run(spark: SparkSession, config: Config) -> dict:
    """Compute the figures, write the JSON, the plots and the HTML page, return the counts."""
    merged = tables.read_table(spark, config, MERGED_TABLE, producer="merge")

    summary = rating_summary(merged)
    value_counts = [row.asDict() for row in rating_value_counts(merged).collect()]
    per_user = ratings_per_user(merged).cache()
    top_users = [row.asDict() for row in per_user.limit(TOP_USERS).collect()]
    histogram = [row.asDict() for row in activity_histogram(per_user).collect()]
    users = per_user.count()
    per_user.unpersist()

    figures = {
        "dataset": config.dataset,
        "rating_summary": summary,
        "rating_counts": value_counts,
        "most_frequent_rating": value_counts[0] if value_counts else None,
        "users": users,
        "movies": merged.select(c.MOVIE_ID).distinct().count(),
        "top_users": top_users,
        "ratings_per_user_histogram": histogram,
    }
    report_dir = config.report_dir
    storage.write_json(f"{report_dir}/explore.json", figures)

    by_rating = sorted(value_counts, key=lambda row: row[c.RATING])
    storage.write_bytes(
        f"{report_dir}/{report.RATING_HISTOGRAM}",
        plots.bar_chart(
            [_format_rating(row[c.RATING]) for row in by_rating],
            [row["count"] for row in by_rating],
            title=f"Ratings by value ({config.dataset})",
            xlabel="rating (stars)",
            ylabel="number of ratings",
        ),
    )
    storage.write_bytes(
        f"{report_dir}/{report.ACTIVITY_HISTOGRAM}",
        plots.bar_chart(
            [f"{row['low']}-{row['high'] - 1}" for row in histogram],
            [row["users"] for row in histogram],
            title=f"Ratings per user ({config.dataset}, {users} users)",
            xlabel="ratings per user (bins grow by a factor of about 1.4)",
            ylabel="number of users",
        ),
    )
    report.render_report(config)

    mean = summary["mean"]
    logger.info(
        "explore: %d ratings, mean %.4f, most frequent rating %s, most active user %s",
        summary["count"],
        mean if mean is not None and not math.isnan(mean) else float("nan"),
        figures["most_frequent_rating"],
        top_users[0] if top_users else None,
    )
    counts = {"rows_in": summary["count"], "rows_out": summary["count"], "rows_rejected": 0}
    return {"counts": counts, "outputs": {"report": f"{report_dir}/{report.REPORT_PAGE}"}}
