"""Tests of the baselines and of the FactorModel scoring every model shares."""

import numpy as np
import pytest

from lenspark import baselines


def test_bias_only_on_tiny_frame():
    # Two users and two movies; user 0 rates higher by one star than user 1.
    # With no shrinkage the biases fit exactly: mean 3.0, movie biases +0.5/-0.5,
    # user biases +0.5/-0.5, so every prediction equals its rating.
    users = np.array([0, 0, 1, 1])
    movies = np.array([0, 1, 0, 1])
    ratings = np.array([4.0, 3.0, 3.0, 2.0])
    model = baselines.fit_biases(users, movies, ratings, 2, 2, regularization=0.0, sweeps=20)
    assert model.global_mean == pytest.approx(3.0)
    assert model.user_bias[:2] == pytest.approx([0.5, -0.5])
    assert model.movie_bias[:2] == pytest.approx([0.5, -0.5])
    assert model.predict(users, movies) == pytest.approx(ratings)


def test_bias_only_oov_rows_use_known_side():
    model = baselines.fit_biases(
        np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]), np.array([4.0, 3.0, 3.0, 2.0]), 2, 2, 0.0
    )
    # Index 2 is the OOV slot of both users and movies.
    predictions = model.predict(np.array([2, 0, 2]), np.array([0, 2, 2]))
    assert predictions == pytest.approx([3.5, 3.5, 3.0])
    assert model.fallback_rows(np.array([2, 0, 1]), np.array([0, 2, 1])).tolist() == [
        True,
        True,
        False,
    ]


def test_shrinkage_pulls_biases_to_zero():
    users = np.array([0, 1])
    movies = np.array([0, 1])
    ratings = np.array([5.0, 1.0])
    loose = baselines.fit_biases(users, movies, ratings, 2, 2, regularization=0.0)
    tight = baselines.fit_biases(users, movies, ratings, 2, 2, regularization=100.0)
    assert abs(tight.movie_bias[0]) < abs(loose.movie_bias[0])
    assert abs(tight.movie_bias[0]) < 0.05


def test_predictions_clip_to_half_and_five_stars():
    model = baselines.FactorModel(
        global_mean=3.0,
        user_bias=np.array([0.0, 0.0]),
        movie_bias=np.array([0.0, 0.0]),
        user_factors=np.array([[2.0], [0.0]]),
        movie_factors=np.array([[2.0], [0.0]]),
        user_known=np.array([True, False]),
        movie_known=np.array([True, False]),
    )
    assert model.predict(np.array([0]), np.array([0])).tolist() == [5.0]
    negative = baselines.FactorModel(**{**model.__dict__, "global_mean": -5.0})
    assert negative.predict(np.array([0]), np.array([0])).tolist() == [0.5]


def test_fallback_rating_replaces_rows_without_factors():
    model = baselines.FactorModel(
        global_mean=0.0,
        user_bias=np.zeros(3),
        movie_bias=np.zeros(2),
        user_factors=np.array([[1.0], [2.0], [0.0]]),
        movie_factors=np.array([[2.0], [0.0]]),
        user_known=np.array([True, False, False]),
        movie_known=np.array([True, False]),
        fallback_rating=3.25,
    )
    assert model.predict(np.array([0, 1, 0]), np.array([0, 0, 1])) == pytest.approx(
        [2.0, 3.25, 3.25]
    )
    assert model.score_matrix(np.array([1]))[0, 0] == pytest.approx(3.25)


def test_popularity_and_majority():
    popular = baselines.popularity_model(np.array([1, 1, 0, 1, 2]), num_users=1, num_movies=3)
    assert popular.score_matrix(np.array([0]))[0].tolist() == [1.0, 3.0, 1.0]
    assert baselines.majority_label(np.array([4, 3, 4, 5, 3])) == 3
    assert baselines.majority_label(np.array([4, 4, 5])) == 4


def test_factor_model_save_and_load_round_trip(tmp_path):
    model = baselines.global_mean_model(np.array([3.0, 4.0]), num_users=2, num_movies=3)
    uri = str(tmp_path / "models" / "global_mean.npz")
    model.save(uri)
    loaded = baselines.load_factor_model(uri)
    assert loaded.global_mean == pytest.approx(3.5)
    assert loaded.fallback_rating is None
    assert loaded.num_users == 2
    assert loaded.num_movies == 3


def test_load_factor_model_names_missing_file(tmp_path):
    with pytest.raises(baselines.InputFormatError, match="make compare"):
        baselines.load_factor_model(str(tmp_path / "missing.npz"))


def unseen_model(fallback_rating=None) -> baselines.FactorModel:
    # One indexed movie (index 0) plus the OOV slot (index 1), and two movies absent
    # from train, ids 70 and 90, each with its own bias and vector.
    return baselines.FactorModel(
        global_mean=3.0,
        user_bias=np.array([0.5, 0.0]),
        movie_bias=np.array([0.25, 0.0]),
        user_factors=np.array([[1.0], [0.0]]),
        movie_factors=np.array([[0.5], [0.0]]),
        user_known=np.array([True, False]),
        movie_known=np.array([True, False]),
        fallback_rating=fallback_rating,
        unseen_movieids=np.array([70, 90]),
        unseen_movie_bias=np.array([-0.5, 0.75]),
        unseen_movie_factors=np.array([[0.2], [-0.1]]),
    )


def test_unseen_movie_rows_replace_oov_slot():
    model = unseen_model()
    users = np.array([0, 0, 0, 0])
    movies = np.array([1, 1, 1, 0])
    movieids = np.array([70, 90, 80, 90])
    # Ids 70 and 90 at the OOV index use their own rows, id 80 has none and keeps the
    # OOV slot, and a movie with an index keeps its own row whatever id it is given.
    expected = [3.0 + 0.5 - 0.5 + 0.2, 3.0 + 0.5 + 0.75 - 0.1, 3.0 + 0.5, 3.0 + 0.5 + 0.25 + 0.5]
    assert model.raw_scores(users, movies, movieids) == pytest.approx(expected)
    assert model.unseen_slots(movies, movieids).tolist() == [0, 1, -1, -1]


def test_unseen_movie_rows_need_movie_ids():
    model = unseen_model()
    assert model.raw_scores(np.array([0]), np.array([1])) == pytest.approx([3.5])
    assert model.unseen_slots(np.array([1]), None).tolist() == [-1]


def test_unseen_movie_rows_count_as_known_for_fallback():
    model = unseen_model(fallback_rating=3.25)
    predictions = model.predict(np.array([0, 0, 1]), np.array([1, 1, 1]), np.array([70, 80, 70]))
    assert predictions == pytest.approx([3.2, 3.25, 3.25])


def test_unseen_movie_rows_survive_save_and_load(tmp_path):
    model = unseen_model()
    uri = str(tmp_path / "models" / "unseen.npz")
    model.save(uri)
    loaded = baselines.load_factor_model(uri)
    assert loaded.unseen_movieids.tolist() == [70, 90]
    assert loaded.unseen_movie_bias.tolist() == [-0.5, 0.75]
    assert loaded.unseen_movie_factors.tolist() == [[0.2], [-0.1]]


def test_model_file_without_unseen_rows_loads(tmp_path):
    model = unseen_model()
    path = tmp_path / "older.npz"
    arrays = {
        name: np.asarray(value)
        for name, value in model.__dict__.items()
        if not name.startswith("unseen_")
    }
    arrays["fallback_rating"] = np.nan
    np.savez(path, **arrays)
    loaded = baselines.load_factor_model(str(path))
    assert loaded.unseen_movieids.size == 0
    assert loaded.raw_scores(np.array([0]), np.array([1]), np.array([70])) == pytest.approx([3.5])


def test_average_factor_models_averages_raw_scores():
    first = unseen_model()
    second = baselines.FactorModel(
        **{
            **first.__dict__,
            "global_mean": 2.0,
            "user_factors": np.array([[3.0], [0.0]]),
            "unseen_movie_bias": np.array([1.0, -1.0]),
        }
    )
    averaged = baselines.average_factor_models([first, second])
    users = np.array([0, 0, 0, 1])
    movies = np.array([0, 1, 1, 0])
    movieids = np.array([5, 70, 80, 5])
    expected = (
        first.raw_scores(users, movies, movieids) + second.raw_scores(users, movies, movieids)
    ) / 2
    assert averaged.raw_scores(users, movies, movieids) == pytest.approx(expected)
    assert averaged.user_factors.shape == (2, 2)


def test_average_factor_models_rejects_fallback_rating():
    with pytest.raises(ValueError, match="fallback rating"):
        baselines.average_factor_models([unseen_model(), unseen_model(fallback_rating=3.0)])
