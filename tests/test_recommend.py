"""Tests of the recommend stage on a tiny warehouse after a compare run."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from lenspark import compare, recommend, storage
from lenspark.baselines import FactorModel
from test_compare import NUM_USERS, TINY_SETTINGS, tiny_config, write_tiny_warehouse


@pytest.fixture
def compared(tmp_path):
    config = tiny_config(tmp_path, "bias,popularity")
    rated = write_tiny_warehouse(Path(config.warehouse))
    compare.run(config, TINY_SETTINGS, TINY_SETTINGS)
    return config, rated


def test_imdb_url_pads_to_seven_digits():
    assert recommend.imdb_url("114709") == "https://www.imdb.com/title/tt0114709/"
    assert recommend.imdb_url("0114709") == "https://www.imdb.com/title/tt0114709/"
    assert recommend.imdb_url(None) == ""


def test_recommend_movies_excludes_rated():
    model = FactorModel(
        global_mean=0.0,
        user_bias=np.zeros(2),
        movie_bias=np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0]),
        user_factors=np.zeros((2, 0)),
        movie_factors=np.zeros((6, 0)),
        user_known=np.array([True, False]),
        movie_known=np.array([True] * 5 + [False]),
    )
    movies, scores = recommend.recommend_movies(model, 0, np.array([0, 2]), top_n=2)
    assert movies.tolist() == [1, 3]
    assert scores.tolist() == [4.0, 2.0]


def test_printed_list_excludes_rated_movies(compared):
    config, rated = compared
    text = recommend.recommend_user(config, userid=10)
    assert "from the" in text
    titles = [line.split("  ")[1] for line in text.splitlines()[3:]]
    assert len(titles) == config.top_n
    rated_titles = {f"Movie {100 + movie}" for movie in rated[0]}
    for title in titles:
        assert title.split(" (")[0] not in rated_titles
    assert "https://www.imdb.com/title/tt" in text


def test_unknown_user_gives_clear_error(compared):
    config, _ = compared
    with pytest.raises(recommend.InputFormatError, match="User id 12345 has no ratings"):
        recommend.recommend_user(config, userid=12345)
    assert (
        recommend.main(
            [
                "--warehouse",
                config.warehouse,
                "--reports",
                config.reports,
                "--dataset",
                config.dataset,
                "--user-id",
                "12345",
            ]
        )
        == 1
    )


def test_all_users_writes_table_with_success(compared):
    config, rated = compared
    counts = recommend.write_recommendations(config)
    uri = storage.table_uri(config.warehouse, config.dataset, recommend.RECOMMENDATIONS_TABLE)
    location = storage.require_complete(uri, producer="recommend")
    assert storage.is_complete(location)
    table = pq.read_table(Path(location) / "part-00000.parquet")
    assert table.schema.names == ["userid", "rank", "movieid", "score"]
    assert counts["rows_out"] == table.num_rows == NUM_USERS * config.top_n
    for user, movies in rated.items():
        mine = table.filter(np.asarray(table.column("userid")) == 10 + user)
        assert mine.column("rank").to_pylist() == list(range(1, config.top_n + 1))
        assert not set(mine.column("movieid").to_pylist()) & {100 + m for m in movies}


def test_all_users_rerun_replaces_table(compared):
    config, _ = compared
    recommend.write_recommendations(config)
    uri = storage.table_uri(config.warehouse, config.dataset, recommend.RECOMMENDATIONS_TABLE)
    first = storage.require_complete(uri, producer="recommend")
    recommend.write_recommendations(config)
    second = storage.require_complete(uri, producer="recommend")
    assert second != first
    assert pq.read_table(Path(second) / "part-00000.parquet").num_rows == NUM_USERS * config.top_n
