"""ALS stage: fallback and clipping, scoring from factor tables, the grid, and the real sample."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from lenspark import als, index, ingest, merge, prepare, storage, tables
from lenspark.config import Config
from lenspark.errors import ConfigError

INDEXED_SCHEMA = (
    "user_index int, movie_index int, rating float, label int, userid int, movieid int, "
    "timestamp long, genre_index int"
)
FACTORS_SCHEMA = "{} int, factors array<float>"


def indexed_frame(spark, pairs: list[tuple[int, int, float]]):
    rows = [
        (user, movie, rating, math.floor(rating + 0.5), 100 + user, 1000 + movie, 0, 0)
        for user, movie, rating in pairs
    ]
    return spark.createDataFrame(rows, INDEXED_SCHEMA)


def rank_one_ratings(users: int, movies: int) -> list[tuple[int, int, float]]:
    """Ratings 1.0..5.0 with a rank-one structure that a low-rank model can learn."""
    user_taste = [-1.0 + 2.0 * u / (users - 1) for u in range(users)]
    movie_taste = [-1.0 + 2.0 * m / (movies - 1) for m in range(movies)]
    return [
        (u, m, round((3.0 + 2.0 * user_taste[u] * movie_taste[m]) * 2) / 2)
        for u in range(users)
        for m in range(movies)
    ]


def split_pairs(pairs, every: int, offset: int = 0):
    """Return (kept, held_out), holding out the pairs with (user + movie + offset) % every == 0.

    The held-out pairs lie on diagonals, so every user and every movie keeps ratings.
    """
    kept = [p for p in pairs if (p[0] + p[1] + offset) % every != 0]
    held_out = [p for p in pairs if (p[0] + p[1] + offset) % every == 0]
    return kept, held_out


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        (float("nan"), 3.25),
        (None, 3.25),
        (6.2, 5.0),
        (0.1, 0.5),
        (-3.0, 0.5),
        (3.7, 3.7),
    ],
)
def test_fill_and_clip(spark, prediction, expected):
    df = spark.createDataFrame([(prediction,)], "prediction double")
    value = df.select(als.fill_and_clip(F.col("prediction"), 3.25).alias("p")).first()["p"]
    assert value == pytest.approx(expected)


def test_score_with_factors(spark):
    user_factors = spark.createDataFrame(
        [(0, [0.5, 1.0]), (2, [-1.0, 0.0])], FACTORS_SCHEMA.format("user_index")
    )
    item_factors = spark.createDataFrame(
        [(0, [2.0, 1.0]), (1, [4.0, 2.0]), (2, [12.0, 0.0])], FACTORS_SCHEMA.format("movie_index")
    )
    rows = indexed_frame(
        spark, [(0, 0, 2.0), (0, 1, 4.0), (0, 2, 5.0), (1, 0, 3.0), (0, 5, 3.0), (2, 0, 1.0)]
    )

    scored = als.score_with_factors(rows, user_factors, item_factors, 3.25)

    predictions = {(r["user_index"], r["movie_index"]): r["prediction"] for r in scored.collect()}
    assert predictions == pytest.approx(
        {
            (0, 0): 2.0,  # 0.5 * 2 + 1 * 1
            (0, 1): 4.0,
            (0, 2): 5.0,  # 6.0 clipped
            (1, 0): 3.25,  # user without factors
            (0, 5): 3.25,  # movie without factors
            (2, 0): 0.5,  # -2.0 clipped
        }
    )
    assert scored.count() == 6


def test_rmse_of_scored_rows(spark):
    scored = spark.createDataFrame([(3.0, 4.0), (5.0, 2.0)], "rating double, prediction double")
    assert als.rmse(scored) == pytest.approx(math.sqrt((1.0 + 9.0) / 2))


def test_best_point_lowest_rmse_and_first_on_tie():
    points = [
        als.GridPoint(rank=8, reg_param=0.05, validation_rmse=0.95, seconds=1.0),
        als.GridPoint(rank=8, reg_param=0.1, validation_rmse=0.91, seconds=1.0),
        als.GridPoint(rank=16, reg_param=0.1, validation_rmse=0.91, seconds=1.0),
        als.GridPoint(rank=32, reg_param=0.2, validation_rmse=0.93, seconds=1.0),
    ]
    assert als.best_point(points) == points[1]


def test_best_point_rejects_empty_grid():
    with pytest.raises(ValueError, match="at least one grid point"):
        als.best_point([])


def test_search_grid_prefers_light_regularisation(spark):
    fit_pairs, validation_pairs = split_pairs(rank_one_ratings(12, 10), every=7)
    fit = indexed_frame(spark, fit_pairs).cache()
    validation = indexed_frame(spark, validation_pairs).cache()

    points = als.search_grid(
        fit, validation, ranks=[2], reg_params=[0.01, 50.0], max_iter=8, seed=1, blocks=2
    )

    assert [(p.rank, p.reg_param) for p in points] == [(2, 0.01), (2, 50.0)]
    light, heavy = points
    assert light.validation_rmse < 0.6
    assert heavy.validation_rmse > 1.0
    assert als.best_point(points) == light


def write_indexed(spark, config: Config, table: str, pairs) -> None:
    tables.write_table(indexed_frame(spark, pairs), config, table)


@pytest.mark.slow
def test_run_writes_factor_tables_and_report(spark, tmp_path: Path):
    config = Config(warehouse=str(tmp_path / "wh"), reports=str(tmp_path / "reports"), seed=7)
    pairs = rank_one_ratings(12, 10)
    train_pairs, test_pairs = split_pairs(pairs, every=5)
    fit_pairs, validation_pairs = split_pairs(train_pairs, every=7, offset=3)
    # User 12 is absent from train, so its test row is scored by the global mean.
    test_pairs = [*test_pairs, (12, 0, 4.0)]
    write_indexed(spark, config, index.INDEXED_FIT_TABLE, fit_pairs)
    write_indexed(spark, config, index.INDEXED_VALIDATION_TABLE, validation_pairs)
    write_indexed(spark, config, index.INDEXED_TEST_TABLE, test_pairs)

    result = als.run(spark, config, ranks=[2, 3], reg_params=[0.01, 50.0], max_iter=5)

    report_path = tmp_path / "reports" / config.dataset / "als.json"
    report = json.loads(report_path.read_text())
    assert len(report["grid"]) == 4
    assert set(report["grid"][0]) == {"rank", "reg_param", "validation_rmse", "seconds"}
    lowest = min(report["grid"], key=lambda point: point["validation_rmse"])
    assert (report["best_rank"], report["best_reg_param"]) == (lowest["rank"], lowest["reg_param"])
    assert report["best_reg_param"] == 0.01
    assert report["rows"] == len(fit_pairs) + len(validation_pairs)
    assert report["global_mean"] == pytest.approx(
        np.mean([r for _, _, r in fit_pairs + validation_pairs])
    )
    assert report["fit_global_mean"] == pytest.approx(np.mean([r for _, _, r in fit_pairs]))
    assert report["test_rows"] == len(test_pairs)
    assert report["test_rows_scored_by_global_mean"] == 1
    assert report["fit_seconds"] > 0

    user_factors = tables.read_table(spark, config, "als_user_factors", producer="als")
    item_factors = tables.read_table(spark, config, "als_item_factors", producer="als")
    for table in ("als_user_factors", "als_item_factors"):
        version = storage.require_complete(result["outputs"][table], producer="als")
        assert storage.is_complete(version), table
    assert user_factors.columns == ["user_index", "factors"]
    assert item_factors.columns == ["movie_index", "factors"]
    assert user_factors.count() == 12
    assert item_factors.count() == 10
    lengths = {len(r["factors"]) for r in user_factors.collect() + item_factors.collect()}
    assert lengths == {report["best_rank"]}
    assert result["counts"]["user_factors"] == 12
    # The run checkpointed into the warehouse and deleted its checkpoints afterwards.
    checkpoints = tmp_path / "wh" / config.dataset / als.CHECKPOINT_FOLDER
    assert checkpoints.is_dir()
    assert list(checkpoints.iterdir()) == []


def test_run_rejects_empty_validation(spark, tmp_path: Path):
    config = Config(warehouse=str(tmp_path / "wh"), validation_percent=0)
    pairs = rank_one_ratings(4, 4)
    write_indexed(spark, config, index.INDEXED_FIT_TABLE, pairs)
    write_indexed(spark, config, index.INDEXED_VALIDATION_TABLE, [])
    write_indexed(spark, config, index.INDEXED_TEST_TABLE, pairs)
    with pytest.raises(ConfigError, match="VALIDATION_PERCENT") as raised:
        als.run(spark, config, ranks=[2], reg_params=[0.1], max_iter=2)
    assert "indexed_validation" in str(raised.value)


def numpy_test_rmse(outputs: dict[str, str], test_uri: str, global_mean: float) -> float:
    """Score the test rows from the factor tables with NumPy, as the Python side does."""

    def read(uri: str, columns: list[str]) -> dict[str, list]:
        version = storage.require_complete(uri, producer="als")
        return pq.read_table(version, columns=columns).to_pydict()

    users = read(outputs["als_user_factors"], ["user_index", "factors"])
    items = read(outputs["als_item_factors"], ["movie_index", "factors"])
    user_factors = dict(zip(users["user_index"], users["factors"], strict=True))
    item_factors = dict(zip(items["movie_index"], items["factors"], strict=True))
    test = read(test_uri, ["user_index", "movie_index", "rating"])
    predictions = []
    for user, movie in zip(test["user_index"], test["movie_index"], strict=True):
        if user in user_factors and movie in item_factors:
            predictions.append(float(np.dot(user_factors[user], item_factors[movie])))
        else:
            predictions.append(global_mean)
    clipped = np.clip(np.array(predictions), 0.5, 5.0)
    return float(np.sqrt(np.mean((clipped - np.array(test["rating"])) ** 2)))


@pytest.mark.slow
def test_sample_prepare_index_als(spark, tmp_path: Path, sample_dir: Path, sample_is_2016: bool):
    config = Config(
        movielens_dir=str(sample_dir),
        warehouse=str(tmp_path / "wh"),
        reports=str(tmp_path / "reports"),
    )
    ingest.run(spark, config)
    merge.run(spark, config)
    prepared = prepare.run(spark, config)["counts"]
    indexed = index.run(spark, config)
    result = als.run(spark, config)

    counts = indexed["counts"]
    assert counts["fit_rows"] + counts["validation_rows"] == prepared["train_rows"]
    assert counts["test_rows"] == prepared["test_rows"]
    train = tables.read_table(spark, config, "train", producer="prepare")
    assert counts["users"] == train.select("userid").distinct().count()
    assert counts["movies"] == train.select("movieid").distinct().count()
    # The fit rows are stored in a hash order, not grouped by user as in ratings.csv.
    fit_version = storage.require_complete(indexed["outputs"]["indexed_fit"], producer="index")
    stored_users = pq.read_table(fit_version, columns=["userid"]).column("userid").to_pylist()
    same_user_neighbours = sum(a == b for a, b in itertools.pairwise(stored_users))
    assert same_user_neighbours < 0.5 * len(stored_users)
    if sample_is_2016:
        assert (counts["users"], counts["movies"], counts["genres"]) == (671, 8423, 19)
        assert (counts["fit_rows"], counts["validation_rows"]) == (70175, 10047)
        assert counts["test_rows_with_oov_movie"] == 705

    report = json.loads((tmp_path / "reports" / config.dataset / "als.json").read_text())
    assert len(report["grid"]) == len(als.RANKS) * len(als.REG_PARAMS)
    assert report["best_validation_rmse"] == min(p["validation_rmse"] for p in report["grid"])
    assert report["best_validation_rmse"] < 1.0

    test_uri = indexed["outputs"][index.INDEXED_TEST_TABLE]
    test_rmse = numpy_test_rmse(result["outputs"], test_uri, report["global_mean"])
    assert test_rmse == pytest.approx(report["test_rmse"], abs=1e-5)
    # About 0.92 on the 2016 edition with the hash split and seed 1234.
    assert test_rmse < 0.95


def test_grid_follows_the_size_of_the_fit_table():
    assert als.grid_for(70_175) == (als.RANKS, als.REG_PARAMS)
    assert als.grid_for(als.LARGE_FIT_ROWS) == (als.LARGE_RANKS, als.LARGE_REG_PARAMS)
    assert len(als.LARGE_RANKS) * len(als.LARGE_REG_PARAMS) < len(als.RANKS) * len(als.REG_PARAMS)
