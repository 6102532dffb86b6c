"""ALS stage: Spark MLlib's alternating least squares, the peer of the Keras models.

A small grid over rank and regParam is fitted on the fit rows and compared by RMSE on
the validation rows. The best point is refitted on fit and validation together, and its
user and movie factors are written. Python then scores ALS with the same code as every
other model: the dot product of the factors clipped to 0.5..5.0, or the global mean for
a user or movie without factors.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from urllib.parse import urlparse

from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from lenspark import columns as c
from lenspark import index, storage, tables
from lenspark.config import LARGE_FIT_ROWS, Config
from lenspark.errors import ConfigError

logger = logging.getLogger(__name__)

RANKS = (8, 16, 32)
REG_PARAMS = (0.05, 0.1, 0.2)
# From LARGE_FIT_ROWS fit rows on, one grid point takes minutes (80 to 130 s for 14M fit
# rows on 2 cores), so the grid keeps only the rank that won on the sample. On
# ml-20m-synthetic regParam 0.05 beat 0.1, so the grid reaches below it.
LARGE_RANKS = (16,)
LARGE_REG_PARAMS = (0.025, 0.05, 0.1)
MAX_ITER = 15
# ALS checkpoints its factors every this many iterations, which cuts the RDD lineage.
# Without that, serializing the tasks of a 15-iteration fit overflowed the driver's
# stack on the sample (Spark 4.3, default thread stack).
CHECKPOINT_INTERVAL = 5
CHECKPOINT_FOLDER = "_checkpoints"

USER_FACTORS_TABLE = "als_user_factors"
ITEM_FACTORS_TABLE = "als_item_factors"
REPORT_FILE = "als.json"

PREDICTION = "prediction"
MIN_RATING = 0.5
MAX_RATING = 5.0


@dataclasses.dataclass(frozen=True)
class GridPoint:
    """One fitted point of the grid and its RMSE on the validation rows."""

    rank: int
    reg_param: float
    validation_rmse: float
    seconds: float


def build_als(rank: int, reg_param: float, max_iter: int, seed: int, blocks: int) -> ALS:
    """Configure explicit-feedback ALS on (user_index, movie_index, rating).

    ``coldStartStrategy="nan"`` keeps rows whose user or movie has no factors, with a
    NaN prediction, so that they are scored by the fallback rather than dropped.
    ``blocks`` is the number of user blocks and of movie blocks. Each block is one task
    in every iteration, so a count near the number of cores keeps the task overhead low.
    """
    als = ALS(
        rank=rank,
        regParam=reg_param,
        maxIter=max_iter,
        seed=seed,
        userCol=c.USER_INDEX,
        itemCol=c.MOVIE_INDEX,
        ratingCol=c.RATING,
        coldStartStrategy="nan",
        implicitPrefs=False,
        nonnegative=False,
        numUserBlocks=blocks,
        numItemBlocks=blocks,
        checkpointInterval=CHECKPOINT_INTERVAL,
    )
    return als.setPredictionCol(PREDICTION)


def fill_and_clip(prediction: Column, global_mean: float) -> Column:
    """Replace a NaN or null prediction by ``global_mean`` and clip to 0.5..5.0 stars."""
    missing = prediction.isNull() | F.isnan(prediction)
    filled = F.when(missing, F.lit(global_mean)).otherwise(prediction.cast("double"))
    return F.least(F.greatest(filled, F.lit(MIN_RATING)), F.lit(MAX_RATING))


def rmse(scored: DataFrame) -> float:
    """Return the root mean squared error of ``prediction`` against ``rating``."""
    error = F.col(PREDICTION) - F.col(c.RATING)
    mean_squared = scored.agg(F.avg(error * error).alias("mse")).first()["mse"]
    if mean_squared is None:
        return math.nan
    return math.sqrt(mean_squared)


def global_mean_rating(df: DataFrame) -> float:
    """Return the mean of the ``rating`` column."""
    return float(df.agg(F.avg(c.RATING).alias("mean")).first()["mean"])


def score_with_model(model: ALSModel, df: DataFrame, global_mean: float) -> DataFrame:
    """Add ALS's ``prediction`` to rating rows, with the fallback and clipping applied."""
    predicted = model.transform(df)
    return predicted.withColumn(PREDICTION, fill_and_clip(F.col(PREDICTION), global_mean))


def search_grid(
    fit: DataFrame,
    validation: DataFrame,
    ranks: Sequence[int],
    reg_params: Sequence[float],
    max_iter: int,
    seed: int,
    blocks: int,
) -> list[GridPoint]:
    """Fit ALS on ``fit`` for every (rank, regParam) and return each point's validation RMSE.

    Validation rows whose user or movie is absent from ``fit`` are scored by the mean
    rating of ``fit``. ``seconds`` covers the fit and the validation scoring of a point.
    """
    global_mean = global_mean_rating(fit)
    points = []
    for rank in ranks:
        for reg_param in reg_params:
            start = time.perf_counter()
            model = build_als(rank, reg_param, max_iter, seed, blocks).fit(fit)
            error = rmse(score_with_model(model, validation, global_mean))
            seconds = time.perf_counter() - start
            logger.info(
                "als: rank %d, regParam %g: validation RMSE %.4f in %.1f s",
                rank,
                reg_param,
                error,
                seconds,
            )
            points.append(GridPoint(rank, reg_param, error, seconds))
    return points


def best_point(points: Sequence[GridPoint]) -> GridPoint:
    """Return the point with the lowest validation RMSE; a tie goes to the earlier point."""
    if not points:
        raise ValueError("best_point needs at least one grid point")
    return min(points, key=lambda point: point.validation_rmse)


def factor_table(factors: DataFrame, index_column: str) -> DataFrame:
    """Rename an ALS factor frame (id, features) to (``index_column``, factors)."""
    return factors.select(
        F.col("id").cast("int").alias(index_column),
        F.col("features").cast("array<float>").alias(c.FACTORS),
    )


def score_with_factors(
    df: DataFrame, user_factors: DataFrame, item_factors: DataFrame, global_mean: float
) -> DataFrame:
    """Add ``prediction`` from factor tables: the dot product, else ``global_mean``, clipped.

    This is the rule the Python side applies to the written factors, so the test RMSE
    computed here cross-checks it.
    """
    users = user_factors.select(c.USER_INDEX, F.col(c.FACTORS).alias("_user_factors"))
    items = item_factors.select(c.MOVIE_INDEX, F.col(c.FACTORS).alias("_item_factors"))
    joined = df.join(users, c.USER_INDEX, "left").join(items, c.MOVIE_INDEX, "left")
    products = F.zip_with("_user_factors", "_item_factors", lambda u, i: u.cast("double") * i)
    dot = F.aggregate(products, F.lit(0.0), lambda total, x: total + x)
    return joined.withColumn(PREDICTION, fill_and_clip(dot, global_mean)).drop(
        "_user_factors", "_item_factors"
    )


def use_checkpoint_dir(spark: SparkSession, config: Config) -> str | None:
    """Point Spark's checkpoints to a new folder in the warehouse and return its URI.

    ALS checkpoints only when the SparkContext has a checkpoint folder. A folder set
    with the ``spark.checkpoint.dir`` property is kept, and then None is returned.
    """
    if spark.sparkContext.getConf().get("spark.checkpoint.dir"):
        return None
    folder = storage.table_uri(config.warehouse, config.dataset, CHECKPOINT_FOLDER)
    # Spark adds a subfolder with a random name on every call.
    spark.sparkContext.setCheckpointDir(storage.spark_uri(folder))
    return spark.sparkContext.getCheckpointDir()


def delete_checkpoints(uri: str) -> None:
    """Delete the checkpoint folder that ``use_checkpoint_dir`` returned."""
    parsed = urlparse(uri)
    fs, path = storage.filesystem(parsed.path if parsed.scheme == "file" else uri)
    fs.delete_dir(path)


def _cold_rows(df: DataFrame, seen: DataFrame) -> int:
    """Count rows of ``df`` whose user or movie does not occur in ``seen``."""
    users = seen.select(c.USER_INDEX).distinct().withColumn("_user_seen", F.lit(True))
    movies = seen.select(c.MOVIE_INDEX).distinct().withColumn("_movie_seen", F.lit(True))
    joined = df.join(users, c.USER_INDEX, "left").join(movies, c.MOVIE_INDEX, "left")
    return joined.filter(F.col("_user_seen").isNull() | F.col("_movie_seen").isNull()).count()


def grid_for(fit_rows: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Return the (ranks, regParams) grid for a fit table of ``fit_rows`` rows."""
    if fit_rows >= LARGE_FIT_ROWS:
        return LARGE_RANKS, LARGE_REG_PARAMS
    return RANKS, REG_PARAMS


def run(
    spark: SparkSession,
    config: Config,
    ranks: Sequence[int] | None = None,
    reg_params: Sequence[float] | None = None,
    max_iter: int = MAX_ITER,
) -> dict:
    """Choose ALS on the validation rows, refit it, and write the factor tables and als.json.

    ``ranks`` and ``reg_params`` left at None are the full grid below LARGE_FIT_ROWS fit
    rows and the large-data grid from there on.
    """
    fit = tables.read_table(spark, config, index.INDEXED_FIT_TABLE, producer="index").cache()
    validation = tables.read_table(
        spark, config, index.INDEXED_VALIDATION_TABLE, producer="index"
    ).cache()
    test = tables.read_table(spark, config, index.INDEXED_TEST_TABLE, producer="index")

    fit_rows = fit.count()
    validation_rows = validation.count()
    if validation_rows == 0:
        raise ConfigError(
            f"{tables.table_location(config, index.INDEXED_VALIDATION_TABLE)}"
            f" has no rows (--validation-percent is {config.validation_percent}), so the ALS grid "
            "cannot be compared. Set --validation-percent (env VALIDATION_PERCENT) to 1 or more "
            "and rerun the index stage."
        )

    sized_ranks, sized_reg_params = grid_for(fit_rows)
    ranks = ranks or sized_ranks
    reg_params = reg_params or sized_reg_params
    grid_start = time.perf_counter()
    # Spark sets the default parallelism to the cores of the local master or the cluster.
    blocks = max(1, spark.sparkContext.defaultParallelism)
    checkpoints = use_checkpoint_dir(spark, config)
    points = search_grid(fit, validation, ranks, reg_params, max_iter, config.seed, blocks)
    grid_seconds = time.perf_counter() - grid_start
    best = best_point(points)
    fit_global_mean = global_mean_rating(fit)
    validation_cold = _cold_rows(validation, fit)

    # The chosen point is refitted on every train row, as the Python models are.
    refit_rows = fit.unionByName(validation)
    global_mean = global_mean_rating(refit_rows)
    refit_start = time.perf_counter()
    model = build_als(best.rank, best.reg_param, max_iter, config.seed, blocks).fit(refit_rows)
    fit_seconds = time.perf_counter() - refit_start

    outputs = {}
    for table, factors, index_column in (
        (USER_FACTORS_TABLE, model.userFactors, c.USER_INDEX),
        (ITEM_FACTORS_TABLE, model.itemFactors, c.MOVIE_INDEX),
    ):
        one_file = factor_table(factors, index_column).coalesce(1)
        outputs[table] = tables.write_table(
            one_file.sortWithinPartitions(index_column), config, table
        )
    user_factors = tables.read_table(spark, config, USER_FACTORS_TABLE, producer="als")
    item_factors = tables.read_table(spark, config, ITEM_FACTORS_TABLE, producer="als")

    scored_test = score_with_factors(test, user_factors, item_factors, global_mean)
    test_rmse = rmse(scored_test)
    test_rows = test.count()
    test_cold = _cold_rows(test, refit_rows)
    fit.unpersist()
    validation.unpersist()
    if checkpoints is not None:
        # Spark keeps the last checkpoint of every fit, and nothing reads them later.
        delete_checkpoints(checkpoints)

    report = {
        "model": "als",
        "grid": [dataclasses.asdict(point) for point in points],
        "best_rank": best.rank,
        "best_reg_param": best.reg_param,
        "best_validation_rmse": best.validation_rmse,
        "max_iter": max_iter,
        "seed": config.seed,
        "blocks": blocks,
        "global_mean": global_mean,
        "fit_global_mean": fit_global_mean,
        "fit_seconds": fit_seconds,
        "grid_seconds": grid_seconds,
        "rows": fit_rows + validation_rows,
        "fit_rows": fit_rows,
        "validation_rows": validation_rows,
        "validation_rows_scored_by_global_mean": validation_cold,
        "test_rows": test_rows,
        "test_rows_scored_by_global_mean": test_cold,
        "test_rmse": test_rmse,
    }
    report_uri = f"{config.report_dir}/{REPORT_FILE}"
    storage.write_json(report_uri, report)
    outputs["report"] = report_uri

    counts = {
        "rows_in": fit_rows + validation_rows,
        "rows_out": user_factors.count() + item_factors.count(),
        "rows_rejected": 0,
        "user_factors": user_factors.count(),
        "item_factors": item_factors.count(),
        "best_rank": best.rank,
        "best_reg_param": best.reg_param,
        "best_validation_rmse": round(best.validation_rmse, 6),
        "test_rmse": round(test_rmse, 6),
        "test_rows_scored_by_global_mean": test_cold,
    }
    logger.info(
        "als: best rank %d, regParam %g (validation RMSE %.4f) of %d points in %.1f s; "
        "refit on %d rows in %.1f s; test RMSE %.4f with %d of %d rows by the global mean",
        best.rank,
        best.reg_param,
        best.validation_rmse,
        len(points),
        grid_seconds,
        fit_rows + validation_rows,
        fit_seconds,
        test_rmse,
        test_cold,
        test_rows,
    )
    return {"counts": counts, "outputs": outputs}
