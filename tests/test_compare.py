"""Tests of the compare stage on a tiny warehouse of index-stage tables written with pyarrow.

``write_tiny_warehouse`` writes the index stage's tables in the layout that stage
produces (Parquet part files plus ``_SUCCESS``); the recommend and embedding tests
import it too.
"""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lenspark import compare, features, storage
from lenspark.config import Config
from lenspark.embedding import EmbeddingSettings

DATASET = "ml-tiny"
GENRES = ("Action", "Comedy", "Drama")
NUM_USERS = 8
NUM_MOVIES = 10
# Ids absent from train: a test user and a catalog movie, both scored by the fallback.
UNSEEN_USERID = 900
UNSEEN_MOVIEID = 9000

TINY_SETTINGS = EmbeddingSettings(dimension=4, batch_size=16, max_epochs=2, patience=1)

RATING_SCHEMA = pa.schema(
    [
        ("user_index", pa.int32()),
        ("movie_index", pa.int32()),
        ("rating", pa.float32()),
        ("label", pa.int32()),
        ("userid", pa.int32()),
        ("movieid", pa.int32()),
        ("timestamp", pa.int64()),
        ("genre_index", pa.int32()),
    ]
)
MOVIE_SCHEMA = pa.schema(
    [
        ("movieid", pa.int32()),
        ("movie_index", pa.int32()),
        ("title", pa.string()),
        ("genres", pa.string()),
        ("imdbid", pa.string()),
        ("tmdbid", pa.int32()),
        ("year", pa.int32()),
        ("genre_multi_hot", pa.list_(pa.float32())),
        ("train_ratings", pa.int64()),
        ("mean_rating", pa.float64()),
    ]
)


def write_table(root: Path, name: str, table: pa.Table) -> None:
    folder = root / DATASET / name
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "part-00000.parquet")
    (folder / "_SUCCESS").write_text("")


def movie_rows(movieids, indices, counts):
    rows = []
    for movieid, index in zip(movieids, indices, strict=True):
        genre = GENRES[movieid % len(GENRES)]
        multi_hot = [1.0 if g == genre else 0.0 for g in GENRES]
        year = None if movieid % 4 == 0 else 1980 + movieid
        rows.append(
            {
                "movieid": movieid,
                "movie_index": index,
                "title": f"Movie {movieid} ({year})" if year else f"Movie {movieid}",
                "genres": genre,
                "imdbid": f"{movieid * 7:07d}",
                "tmdbid": movieid,
                "year": year,
                "genre_multi_hot": multi_hot,
                "train_ratings": int(counts.get(index, 0)),
                "mean_rating": 3.5,
            }
        )
    return pa.Table.from_pylist(rows, schema=MOVIE_SCHEMA)


def rating_table(users, movies, ratings, userids, movieids) -> pa.Table:
    ratings = np.asarray(ratings, dtype=np.float32)
    return pa.Table.from_pydict(
        {
            "user_index": np.asarray(users, dtype=np.int32),
            "movie_index": np.asarray(movies, dtype=np.int32),
            "rating": ratings,
            "label": np.floor(ratings + 0.5).astype(np.int32),
            "userid": np.asarray(userids, dtype=np.int32),
            "movieid": np.asarray(movieids, dtype=np.int32),
            "timestamp": np.arange(len(ratings), dtype=np.int64),
            "genre_index": (np.asarray(movieids) % len(GENRES)).astype(np.int32),
        },
        schema=RATING_SCHEMA,
    )


def write_tiny_warehouse(root: Path, seed: int = 5) -> dict[str, np.ndarray]:
    """Write index-stage tables of 8 users and 10 movies; return the train pairs per user.

    User index u is userid 10 + u and movie index m is movieid 100 + m. Each user rates
    6 movies: 4 go to fit, 1 to validation and 1 to test. Test also gets one row of an
    unseen user and one of an unseen movie.
    """
    rng = np.random.default_rng(seed)
    userids = 10 + np.arange(NUM_USERS)
    movieids = 100 + np.arange(NUM_MOVIES)
    parts = {"fit": [], "validation": [], "test": []}
    for user in range(NUM_USERS):
        movies = rng.choice(NUM_MOVIES, size=6, replace=False)
        for position, movie in enumerate(movies):
            part = "fit" if position < 4 else ("validation" if position == 4 else "test")
            rating = float(
                np.clip(np.round((2.5 + 0.2 * movie + rng.normal(0, 0.5)) * 2) / 2, 0.5, 5)
            )
            parts[part].append((user, int(movie), rating, int(userids[user]), int(movieids[movie])))
    parts["test"].append((NUM_USERS, 0, 4.0, UNSEEN_USERID, int(movieids[0])))
    parts["test"].append((0, NUM_MOVIES, 2.0, int(userids[0]), UNSEEN_MOVIEID))

    for name, rows in parts.items():
        users, movies, ratings, row_userids, row_movieids = zip(*rows, strict=True)
        table = rating_table(users, movies, ratings, row_userids, row_movieids)
        write_table(root, f"indexed_{name}", table)

    train_rows = parts["fit"] + parts["validation"]
    counts = {}
    for _, movie, *_ in train_rows:
        counts[movie] = counts.get(movie, 0) + 1
    write_table(
        root,
        "user_index",
        pa.Table.from_pydict(
            {"userid": userids.astype(np.int32), "user_index": np.arange(NUM_USERS, dtype=np.int32)}
        ),
    )
    write_table(root, "movie_index", movie_rows(movieids.tolist(), range(NUM_MOVIES), counts))
    write_table(root, "movie_catalog", movie_rows([UNSEEN_MOVIEID], [NUM_MOVIES], {}))
    write_table(
        root,
        "genre_vocabulary",
        pa.Table.from_pydict(
            {"genre": list(GENRES), "position": np.arange(len(GENRES), dtype=np.int32)}
        ),
    )
    rated: dict[int, set[int]] = {}
    for user, movie, *_ in train_rows:
        rated.setdefault(user, set()).add(movie)
    return rated


def tiny_config(tmp_path: Path, models: str) -> Config:
    return Config(
        dataset=DATASET,
        warehouse=str(tmp_path / "warehouse"),
        reports=str(tmp_path / "reports"),
        models=models,
        top_n=3,
        seed=11,
    )


FAST_MODELS = "embedding,ranking,bias,global_mean,majority,popularity,als"


@pytest.fixture
def tiny_config_written(tmp_path):
    config = tiny_config(tmp_path, FAST_MODELS)
    write_tiny_warehouse(Path(config.warehouse))
    return config


def test_selected_models_auto_and_list():
    small = Config(dataset="ml-latest-small")
    large = Config(dataset="ml-20m")
    assert compare.selected_models(small) == list(compare.MODEL_NAMES)
    assert "reference" not in compare.selected_models(large)
    listed = Config(models="popularity, bias")
    assert compare.selected_models(listed) == ["bias", "popularity"]


def test_settings_follow_the_size_of_the_fit_table():
    small_rating, small_ranking = compare.settings_for(72_000)
    assert (small_rating, small_ranking) == (compare.RATING_SETTINGS, compare.RANKING_SETTINGS)
    rating, ranking_settings = compare.settings_for(compare.LARGE_FIT_ROWS)
    assert rating == compare.LARGE_RATING_SETTINGS
    assert ranking_settings == compare.LARGE_RANKING_SETTINGS
    # The large settings are the fast ones: big batches, one member, no per-user side weights.
    assert rating.batch_size >= 16384
    assert ranking_settings.batch_size >= 16384
    assert rating.members == 1
    assert not rating.user_side_weights


def test_selected_models_rejects_unknown_name():
    with pytest.raises(compare.ConfigError, match="svd"):
        compare.selected_models(Config(models="bias,svd"))


@pytest.mark.slow
def test_compare_writes_every_selected_model(tiny_config_written):
    config = tiny_config_written
    comparison = compare.run(config, TINY_SETTINGS, TINY_SETTINGS)

    written = json.loads(Path(compare.comparison_uri(config)).read_text())
    assert written == json.loads(json.dumps(comparison))
    ran = [row["model"] for row in written["models"]]
    skipped = [entry["model"] for entry in written["skipped"]]
    # No ALS factor tables exist, so ALS is skipped with its reason.
    assert ran == ["embedding", "ranking", "bias", "global_mean", "majority", "popularity"]
    assert skipped == ["als"]
    assert "make als" in written["skipped"][0]["reason"]
    assert written["models_selected"] == FAST_MODELS.split(",")
    assert written["test_rows"] == NUM_USERS + 2

    rows = {row["model"]: row for row in written["models"]}
    for name in ("embedding", "bias", "global_mean", "majority"):
        assert 0.0 <= rows[name]["accuracy"] <= 1.0
        assert rows[name]["rmse"] >= rows[name]["mae"] - 1e-12
    assert rows["popularity"]["rmse"] is None
    assert rows["popularity"]["ndcg_at_10"] is not None
    assert rows["global_mean"]["ndcg_at_10"] is None
    assert written["best_ndcg_model"] in {"embedding", "ranking", "bias", "popularity"}


def test_compare_counts_oov_rows_as_fallback(tiny_config_written):
    comparison = compare.run(
        Config(**{**tiny_config_written.__dict__, "models": "bias,embedding"}),
        TINY_SETTINGS,
        TINY_SETTINGS,
    )
    rows = {row["model"]: row for row in comparison["models"]}
    # One test row has an unseen user and one an unseen movie.
    assert rows["bias"]["fallback_rows"] == 2
    assert rows["embedding"]["fallback_rows"] == 2
    # The unseen movie is in the catalog, so the embedding model scores it from its
    # genres and year. The bias-only baseline has no side features and uses the OOV slot.
    details = comparison["details"]
    assert details["embedding"]["unseen_movie_rows_scored_by_side_features"] == 1
    assert "unseen_movie_rows_scored_by_side_features" not in details["bias"]


@pytest.mark.slow
def test_compare_writes_report_and_curves(tiny_config_written):
    config = tiny_config_written
    compare.run(config, TINY_SETTINGS, TINY_SETTINGS)
    report_dir = Path(config.report_dir)
    page = (report_dir / "index.html").read_text()
    assert "Model comparison" in page
    assert "nDCG@10" in page
    assert (report_dir / "embedding_curves.png").read_bytes().startswith(b"\x89PNG")
    assert (report_dir / "ranking_curves.png").is_file()


def test_compare_scores_als_from_factor_tables(tiny_config_written):
    config = tiny_config_written
    root = Path(config.warehouse)
    # Rank-1 factors: every known pair predicts 1.0 * 3.0 = 3.0. User index 7 has no
    # factors, so its test row gets the global mean 3.5 like the OOV rows.
    write_table(
        root,
        "als_user_factors",
        pa.table(
            {
                "user_index": pa.array(range(NUM_USERS - 1), pa.int32()),
                "factors": pa.array([[1.0]] * (NUM_USERS - 1), pa.list_(pa.float32())),
            }
        ),
    )
    write_table(
        root,
        "als_item_factors",
        pa.table(
            {
                "movie_index": pa.array(range(NUM_MOVIES), pa.int32()),
                "factors": pa.array([[3.0]] * NUM_MOVIES, pa.list_(pa.float32())),
            }
        ),
    )
    storage.write_json(f"{config.report_dir}/als.json", {"global_mean": 3.5, "fit_seconds": 1.5})
    comparison = compare.run(
        Config(**{**config.__dict__, "models": "als"}), TINY_SETTINGS, TINY_SETTINGS
    )
    row = comparison["models"][0]
    assert row["model"] == "als"
    assert row["fallback_rows"] == 3
    assert row["training_seconds"] == 1.5

    test = features.load_ratings(config, features.TEST_TABLE)
    expected = np.where(
        (test.user_index < NUM_USERS - 1) & (test.movie_index < NUM_MOVIES), 3.0, 3.5
    )
    expected_rmse = float(np.sqrt(np.mean((expected - test.rating) ** 2)))
    assert row["rmse"] == pytest.approx(expected_rmse)


@pytest.mark.slow
def test_compare_rerun_is_deterministic(tiny_config_written):
    config = Config(**{**tiny_config_written.__dict__, "models": "embedding,ranking,bias"})
    first = compare.run(config, TINY_SETTINGS, TINY_SETTINGS)
    second = compare.run(config, TINY_SETTINGS, TINY_SETTINGS)
    for before, after in zip(first["models"], second["models"], strict=True):
        assert before["model"] == after["model"]
        for key in ("rmse", "mae", "accuracy", "ndcg_at_10"):
            if before[key] is not None:
                assert after[key] == pytest.approx(before[key], abs=1e-6)
