"""Tests of the feature readers and the Keras embedding models on a tiny warehouse."""

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from lenspark import embedding, features
from test_compare import (
    NUM_MOVIES,
    NUM_USERS,
    TINY_SETTINGS,
    UNSEEN_MOVIEID,
    movie_rows,
    tiny_config,
    write_table,
    write_tiny_warehouse,
)


@pytest.fixture
def config(tmp_path):
    config = tiny_config(tmp_path, "embedding")
    write_tiny_warehouse(Path(config.warehouse))
    return config


def test_year_features_mark_unknown_years():
    encoded = features.year_features([1990, None, 2010])
    assert encoded[:, 0].tolist() == pytest.approx([0.0, 0.0, 1.0])
    assert encoded[:, 1].tolist() == [0.0, 1.0, 0.0]


def test_movie_features_append_zero_oov_row(config):
    loaded = features.load_movie_features(config)
    assert loaded.num_users == NUM_USERS
    assert loaded.num_movies == NUM_MOVIES
    assert loaded.genres == ("Action", "Comedy", "Drama")
    # Three genres plus the scaled year and its unknown flag, for M movies plus OOV.
    assert loaded.side_features.shape == (NUM_MOVIES + 1, 5)
    assert not loaded.side_features[NUM_MOVIES].any()


def test_shuffled_batches_cover_every_row_once(config):
    uri = features.table_uri(config, features.FIT_TABLE)
    columns = (features.USER_INDEX, features.MOVIE_INDEX)
    batches = list(features.shuffled_batches([uri], 5, seed=3, epoch=0, columns=columns))
    pairs = sorted(
        zip(
            np.concatenate([b[features.USER_INDEX] for b in batches]).tolist(),
            np.concatenate([b[features.MOVIE_INDEX] for b in batches]).tolist(),
            strict=True,
        )
    )
    fit = features.load_ratings(config, features.FIT_TABLE)
    expected = sorted(zip(fit.user_index.tolist(), fit.movie_index.tolist(), strict=True))
    assert pairs == expected
    assert max(len(b[features.USER_INDEX]) for b in batches) == 5
    again = list(features.shuffled_batches([uri], 5, seed=3, epoch=0, columns=columns))
    assert all(
        np.array_equal(a[features.USER_INDEX], b[features.USER_INDEX])
        for a, b in zip(batches, again, strict=True)
    )


def test_rating_model_smoke_one_epoch(config):
    settings = TINY_SETTINGS.__class__(dimension=4, batch_size=8, max_epochs=1, patience=1)
    movie_features = features.load_movie_features(config)
    fit_uri = features.table_uri(config, features.FIT_TABLE)
    validation_uri = features.table_uri(config, features.VALIDATION_TABLE)
    result = embedding.train_rating_model(
        features.rating_batches([fit_uri], 8, seed=1),
        features.rating_batches([validation_uri], 8, seed=1, shuffle=False),
        None,
        movie_features,
        3.5,
        settings,
        seed=1,
    )
    assert len(result.history) == 1
    assert {"rmse", "val_rmse"} <= set(result.history[0])
    model = result.model
    assert model.user_factors.shape == (NUM_USERS + 1, 4)
    assert model.movie_factors.shape == (NUM_MOVIES + 1, 4)
    # The OOV user has a zero vector and bias, so it is scored by the movie side alone.
    assert not model.user_factors[NUM_USERS].any()
    assert model.user_bias[NUM_USERS] == 0.0
    predictions = model.predict(np.array([0, NUM_USERS]), np.array([NUM_MOVIES, 0]))
    assert np.all((predictions >= 0.5) & (predictions <= 5.0))


def test_learning_rate_decays_per_epoch(config):
    settings = TINY_SETTINGS.__class__(
        dimension=4,
        batch_size=8,
        learning_rate=0.01,
        learning_rate_decay=0.5,
        max_epochs=3,
        patience=5,
    )
    fit_uri = features.table_uri(config, features.FIT_TABLE)
    validation_uri = features.table_uri(config, features.VALIDATION_TABLE)
    result = embedding.train_rating_model(
        features.rating_batches([fit_uri], 8, seed=1),
        features.rating_batches([validation_uri], 8, seed=1, shuffle=False),
        None,
        features.load_movie_features(config),
        3.5,
        settings,
        seed=1,
    )
    rates = [record["learning_rate"] for record in result.history]
    assert rates == pytest.approx([0.01, 0.005, 0.0025])


def test_export_factors_matches_keras_scores(config):
    movie_features = features.load_movie_features(config)
    model = embedding.build_factorization(
        NUM_USERS, movie_features.side_features, TINY_SETTINGS, 3.5, "check"
    )
    users = np.arange(NUM_USERS, dtype=np.int32)
    movies = (np.arange(NUM_USERS) % NUM_MOVIES).astype(np.int32)
    keras_scores = model.predict([users, movies], verbose=0)
    factors = embedding.export_factors(model, movie_features, 3.5)
    assert factors.raw_scores(users, movies) == pytest.approx(keras_scores, abs=1e-5)


def test_export_with_user_side_weights_matches_keras(config):
    movie_features = features.load_movie_features(config)
    settings = dataclasses.replace(TINY_SETTINGS, user_side_weights=True)
    model = embedding.build_factorization(
        NUM_USERS, movie_features.side_features, settings, 3.5, "check"
    )
    # The user-side weights start at zero, so give them values that change the scores.
    table = model.get_layer("user_side_weights")
    table.set_weights([np.random.default_rng(2).normal(size=table.get_weights()[0].shape)])
    users = np.arange(NUM_USERS, dtype=np.int32)
    movies = (np.arange(NUM_USERS) % NUM_MOVIES).astype(np.int32)
    keras_scores = model.predict([users, movies], verbose=0)
    factors = embedding.export_factors(model, movie_features, 3.5)
    side_width = movie_features.side_features.shape[1]
    assert factors.user_factors.shape == (NUM_USERS + 1, TINY_SETTINGS.dimension + side_width)
    assert factors.raw_scores(users, movies) == pytest.approx(keras_scores, abs=1e-5)


def test_unseen_movie_scored_from_side_features(config):
    movie_features = features.load_movie_features(config)
    settings = dataclasses.replace(TINY_SETTINGS, user_side_weights=True)
    model = embedding.build_factorization(
        NUM_USERS, movie_features.side_features, settings, 3.5, "check"
    )
    rng = np.random.default_rng(4)
    for name in ("side_bias", "side_projection", "user_bias", "user_side_weights"):
        layer = model.get_layer(name)
        layer.set_weights([rng.normal(size=w.shape) for w in layer.get_weights()])
    # Movie index 2 gets a zero embedding and bias, so Keras scores it from its side
    # features alone, as an unseen movie with the same genres and year must be scored.
    movie = 2
    for name in ("movie_embedding", "movie_bias"):
        weights = model.get_layer(name).get_weights()[0]
        weights[movie] = 0.0
        model.get_layer(name).set_weights([weights])
    users = np.arange(NUM_USERS, dtype=np.int32)
    keras_scores = model.predict([users, np.full(NUM_USERS, movie, np.int32)], verbose=0)

    unseen = dataclasses.replace(
        movie_features,
        unseen_movieids=np.array([UNSEEN_MOVIEID]),
        unseen_side_features=movie_features.side_features[[movie]],
    )
    factors = embedding.export_factors(model, unseen, 3.5)
    oov = np.full(NUM_USERS, NUM_MOVIES)
    scores = factors.raw_scores(users, oov, np.full(NUM_USERS, UNSEEN_MOVIEID))
    assert scores == pytest.approx(keras_scores, abs=1e-5)
    plain_fallback = factors.raw_scores(users, oov)
    assert not np.allclose(scores, plain_fallback)


def test_movie_features_keep_unseen_catalog_movies(config):
    loaded = features.load_movie_features(config)
    assert loaded.unseen_movieids.tolist() == [UNSEEN_MOVIEID]
    # Movie id 9000 is an Action movie without a year in the tiny catalog.
    assert loaded.unseen_side_features.tolist() == [[1.0, 0.0, 0.0, 0.0, 1.0]]


def test_movie_features_skip_indexed_movies_in_catalog(config):
    # The index stage's catalog also lists the indexed movies, and only the others are unseen.
    root = Path(config.warehouse)
    catalog = pa.concat_tables(
        [
            movie_rows([101, UNSEEN_MOVIEID + 1], [1, NUM_MOVIES], {}),
            movie_rows([UNSEEN_MOVIEID, UNSEEN_MOVIEID + 1], [NUM_MOVIES, NUM_MOVIES], {}),
        ]
    )
    write_table(root, "movie_catalog", catalog)
    loaded = features.load_movie_features(config)
    assert loaded.unseen_movieids.tolist() == [UNSEEN_MOVIEID, UNSEEN_MOVIEID + 1]
    assert loaded.unseen_side_features.shape == (2, 5)


def test_sampled_pairs_add_negatives_per_positive(config):
    fit = features.load_ratings(config, features.FIT_TABLE)
    users, movies, target = embedding.sampled_pairs(fit, NUM_MOVIES, 3, np.random.default_rng(0))
    assert target.size == fit.rows * 4
    assert target[: fit.rows].tolist() == [1.0] * fit.rows
    assert target[fit.rows :].sum() == 0.0
    assert movies.max() < NUM_MOVIES
    assert users[fit.rows : fit.rows + 3].tolist() == [fit.user_index[0]] * 3


def test_rating_model_members_are_averaged(config):
    settings = dataclasses.replace(TINY_SETTINGS, max_epochs=1, patience=1, batch_size=8, members=2)
    movie_features = features.load_movie_features(config)
    fit_uri = features.table_uri(config, features.FIT_TABLE)
    validation_uri = features.table_uri(config, features.VALIDATION_TABLE)
    result = embedding.train_rating_model(
        features.rating_batches([fit_uri], 8, seed=1),
        features.rating_batches([validation_uri], 8, seed=1, shuffle=False),
        None,
        movie_features,
        3.5,
        settings,
        seed=1,
    )
    assert result.member_best_epochs == (1, 1)
    # Two members of dimension 4 without user-side weights give 8 factor columns.
    assert result.model.user_factors.shape == (NUM_USERS + 1, 2 * settings.dimension)
