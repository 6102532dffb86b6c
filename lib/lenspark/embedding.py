"""The Keras embedding models: a biased matrix factorization for ratings and one for ranking.

The rating model predicts global mean + user bias + movie bias + user vector . movie
vector, where the movie vector is a learned embedding plus a dense projection of the
movie's side features (genre multi-hot and release year). It is trained on the
half-star ratings with mean squared error, an L2 penalty on the looked-up embeddings
and early stopping on the validation RMSE.

The ranking model has the same shape but learns whether a user rated a movie at all:
every fit row is a positive, and movies drawn uniformly at random are negatives. It
is trained with binary cross-entropy, and its logits rank movies for recommendation.

Both export their weights as a ``baselines.FactorModel`` so that every model is scored
by the same NumPy code.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator

import keras
import numpy as np

from lenspark.baselines import FactorModel, average_factor_models
from lenspark.features import MovieFeatures, Ratings

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EmbeddingSettings:
    """Hyperparameters of the embedding models."""

    dimension: int = 32
    # L2 penalty per looked-up embedding row, averaged over the batch.
    l2: float = 0.05
    # L2 penalty on every row of the embedding and bias tables at every step.
    weight_l2: float = 0.0
    # L2 penalty per looked-up user or movie bias, averaged over the batch.
    bias_l2: float = 0.05
    learning_rate: float = 2e-3
    # The learning rate of epoch n (from 0) is learning_rate * learning_rate_decay ** n.
    learning_rate_decay: float = 1.0
    batch_size: int = 2048
    max_epochs: int = 40
    patience: int = 3
    # Sampled negatives per positive row of the ranking model.
    negatives: int = 4
    # Per-user weights on the movie's side features (genres and year), a user-genre term.
    user_side_weights: bool = False
    # Rating models trained with seeds seed, seed + 1, ..., whose scores are averaged.
    members: int = 1


@dataclasses.dataclass(frozen=True)
class TrainingResult:
    """A trained model in factor form, its per-epoch curves and its training time."""

    model: FactorModel
    history: list[dict[str, float]]
    best_epoch: int
    seconds: float
    # The best epoch of each member of an averaged rating model.
    member_best_epochs: tuple[int, ...] = ()


def build_factorization(
    num_users: int,
    side_features: np.ndarray,
    settings: EmbeddingSettings,
    global_mean: float,
    name: str,
) -> keras.Model:
    """Build the uncompiled biased factorization over U + 1 users and M + 1 movies.

    Inputs: int32 user_index and movie_index of shape (batch,). Output: the score
    global_mean + user bias + movie bias + user vector . movie vector, of shape (batch,).
    ``side_features`` has M + 1 rows and is a fixed lookup table, not trained.
    """
    num_movie_rows, side_width = side_features.shape
    regularizer = keras.regularizers.L2(settings.l2)
    bias_regularizer = keras.regularizers.L2(settings.bias_l2)
    weight_regularizer = keras.regularizers.L2(settings.weight_l2) if settings.weight_l2 else None
    initializer = keras.initializers.RandomNormal(stddev=0.05)

    user_input = keras.Input(shape=(), dtype="int32", name="user_index")
    movie_input = keras.Input(shape=(), dtype="int32", name="movie_index")

    user_vector = keras.layers.Embedding(
        num_users + 1,
        settings.dimension,
        embeddings_initializer=initializer,
        activity_regularizer=regularizer,
        embeddings_regularizer=weight_regularizer,
        name="user_embedding",
    )(user_input)
    movie_vector = keras.layers.Embedding(
        num_movie_rows,
        settings.dimension,
        embeddings_initializer=initializer,
        activity_regularizer=regularizer,
        embeddings_regularizer=weight_regularizer,
        name="movie_embedding",
    )(movie_input)
    user_bias = keras.layers.Embedding(
        num_users + 1,
        1,
        embeddings_initializer="zeros",
        activity_regularizer=bias_regularizer,
        embeddings_regularizer=weight_regularizer,
        name="user_bias",
    )(user_input)
    movie_bias = keras.layers.Embedding(
        num_movie_rows,
        1,
        embeddings_initializer="zeros",
        activity_regularizer=bias_regularizer,
        embeddings_regularizer=weight_regularizer,
        name="movie_bias",
    )(movie_input)

    side = keras.layers.Embedding(
        num_movie_rows,
        side_width,
        embeddings_initializer=keras.initializers.Constant(side_features),
        trainable=False,
        name="side_features",
    )(movie_input)
    movie_vector = keras.layers.Add(name="movie_vector")(
        [movie_vector, keras.layers.Dense(settings.dimension, name="side_projection")(side)]
    )
    side_bias = keras.layers.Dense(1, name="side_bias")(side)

    dot = keras.layers.Dot(axes=1, name="dot")([user_vector, movie_vector])
    terms = [dot, user_bias, movie_bias, side_bias]
    if settings.user_side_weights:
        user_side = keras.layers.Embedding(
            num_users + 1,
            side_width,
            embeddings_initializer="zeros",
            activity_regularizer=regularizer,
            embeddings_regularizer=weight_regularizer,
            name="user_side_weights",
        )(user_input)
        terms.append(keras.layers.Dot(axes=1, name="user_side_dot")([user_side, side]))
    total = keras.layers.Add(name="score_sum")(terms)
    score = keras.layers.Rescaling(1.0, offset=global_mean, name="plus_global_mean")(total)
    score = keras.layers.Reshape((), name="score")(score)
    return keras.Model([user_input, movie_input], score, name=name)


def export_factors(model: keras.Model, features: MovieFeatures, global_mean: float) -> FactorModel:
    """Fold the trained weights into a FactorModel that computes the same scores.

    The side projection is added into each movie's vector and the side bias into each
    movie's bias. The OOV user and movie embedding rows, which no training row
    reaches, are set to zero, so that an unknown user is scored by the movie side alone.
    Each catalog movie absent from train gets an unseen-movie row with the same zero
    embedding and bias plus the terms of its own side features, so it is scored from
    its genres and year.
    """
    user_vectors = model.get_layer("user_embedding").get_weights()[0].astype(np.float64)
    movie_vectors = model.get_layer("movie_embedding").get_weights()[0].astype(np.float64)
    user_bias = model.get_layer("user_bias").get_weights()[0][:, 0].astype(np.float64)
    movie_bias = model.get_layer("movie_bias").get_weights()[0][:, 0].astype(np.float64)
    user_vectors[-1] = 0.0
    movie_vectors[-1] = 0.0
    user_bias[-1] = 0.0
    movie_bias[-1] = 0.0

    side = features.side_features.astype(np.float64)
    unseen_side = features.unseen_side_features.astype(np.float64).reshape(-1, side.shape[1])
    side_vectors, side_bias = _side_terms(model, side)
    unseen_vectors, unseen_bias = _side_terms(model, unseen_side)
    movie_vectors = movie_vectors + side_vectors
    movie_bias = movie_bias + side_bias

    # The user-genre weights dot the movie's own side features, so they are appended
    # as extra factor columns on both sides.
    if _has_layer(model, "user_side_weights"):
        user_side = model.get_layer("user_side_weights").get_weights()[0].astype(np.float64)
        user_side[-1] = 0.0
        user_vectors = np.concatenate([user_vectors, user_side], axis=1)
        movie_vectors = np.concatenate([movie_vectors, side], axis=1)
        unseen_vectors = np.concatenate([unseen_vectors, unseen_side], axis=1)

    num_users = user_vectors.shape[0] - 1
    num_movies = movie_vectors.shape[0] - 1
    user_known = np.arange(num_users + 1) < num_users
    movie_known = np.arange(num_movies + 1) < num_movies
    return FactorModel(
        global_mean=float(global_mean),
        user_bias=user_bias,
        movie_bias=movie_bias,
        user_factors=user_vectors,
        movie_factors=movie_vectors,
        user_known=user_known,
        movie_known=movie_known,
        unseen_movieids=np.asarray(features.unseen_movieids, dtype=np.int64),
        unseen_movie_bias=unseen_bias,
        unseen_movie_factors=unseen_vectors,
    )


def _has_layer(model: keras.Model, name: str) -> bool:
    return any(layer.name == name for layer in model.layers)


def _side_terms(model: keras.Model, side: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the side projection (movie vector part) and side bias of each side-feature row."""
    projection, projection_bias = model.get_layer("side_projection").get_weights()
    side_weights, side_offset = model.get_layer("side_bias").get_weights()
    vectors = side @ projection.astype(np.float64) + projection_bias
    bias = side @ side_weights[:, 0].astype(np.float64) + side_offset[0]
    return vectors, bias


def _history_records(history: dict[str, list[float]]) -> list[dict[str, float]]:
    epochs = len(next(iter(history.values())))
    return [
        {"epoch": epoch + 1, **{name: float(values[epoch]) for name, values in history.items()}}
        for epoch in range(epochs)
    ]


def compiled_rating_model(
    features: MovieFeatures, global_mean: float, settings: EmbeddingSettings, seed: int
) -> keras.Model:
    """Build and compile the rating model with its optimizer, loss and RMSE metric."""
    # set_random_seed seeds Python, NumPy and TensorFlow, so it runs before the weights exist.
    keras.utils.set_random_seed(seed)
    model = build_factorization(
        features.num_users, features.side_features, settings, global_mean, "rating_embedding"
    )
    model.compile(
        optimizer=keras.optimizers.Adam(settings.learning_rate),
        loss="mse",
        metrics=[keras.metrics.RootMeanSquaredError(name="rmse")],
    )
    return model


def _epoch_schedule(settings: EmbeddingSettings) -> list[keras.callbacks.Callback]:
    """Return the callback that lowers the learning rate per epoch, or none for a constant rate."""
    if settings.learning_rate_decay == 1.0:
        return []
    rate, decay = settings.learning_rate, settings.learning_rate_decay
    return [keras.callbacks.LearningRateScheduler(lambda epoch, _: rate * decay**epoch)]


def _train_member(
    fit_data,
    validation_data,
    refit_data,
    features: MovieFeatures,
    global_mean: float,
    settings: EmbeddingSettings,
    seed: int,
) -> tuple[keras.Model, list[dict[str, float]], int]:
    model = compiled_rating_model(features, global_mean, settings, seed)
    stopping = keras.callbacks.EarlyStopping(
        monitor="val_rmse", mode="min", patience=settings.patience, restore_best_weights=True
    )
    history = model.fit(
        fit_data,
        validation_data=validation_data,
        epochs=settings.max_epochs,
        callbacks=[stopping, *_epoch_schedule(settings)],
        verbose=2,
    )
    records = _history_records(history.history)
    best_epoch = int(np.argmin([record["val_rmse"] for record in records])) + 1
    logger.info(
        "Rating model with seed %d: best validation RMSE %.4f at epoch %d of %d",
        seed,
        records[best_epoch - 1]["val_rmse"],
        best_epoch,
        len(records),
    )
    if refit_data is not None:
        model = compiled_rating_model(features, global_mean, settings, seed)
        model.fit(refit_data, epochs=best_epoch, callbacks=_epoch_schedule(settings), verbose=2)
    return model, records, best_epoch


def train_rating_model(
    fit_data,
    validation_data,
    refit_data,
    features: MovieFeatures,
    global_mean: float,
    settings: EmbeddingSettings,
    seed: int,
) -> TrainingResult:
    """Choose the epoch count on the validation rows, then train the rating model.

    The datasets are ``tf.data`` datasets of ((user_index, movie_index), rating)
    batches, such as ``features.rating_batches`` builds. A first model trains on
    ``fit_data`` until the validation RMSE has not improved for ``settings.patience``
    epochs. When ``refit_data`` is None that model is kept with the weights of its
    best epoch. Otherwise a new model with the same seed trains on ``refit_data`` (fit
    plus validation rows) for the best epoch count and is kept. With
    ``settings.members`` above 1 this repeats with seeds seed + 1, seed + 2, ..., and
    the returned model averages their scores. The history and best epoch returned
    are those of the first member.
    """
    started = time.perf_counter()
    members, best_epochs, first_records = [], [], []
    for member in range(settings.members):
        model, records, best_epoch = _train_member(
            fit_data,
            validation_data,
            refit_data,
            features,
            global_mean,
            settings,
            seed + member,
        )
        members.append(export_factors(model, features, global_mean))
        best_epochs.append(best_epoch)
        first_records = first_records or records
    seconds = time.perf_counter() - started
    logger.info("Rating model of %d members trained in %.1f s", len(members), seconds)
    factors = members[0] if len(members) == 1 else average_factor_models(members)
    return TrainingResult(factors, first_records, best_epochs[0], seconds, tuple(best_epochs))


def sampled_pairs(
    positives: Ratings, num_movies: int, negatives: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (user_index, movie_index, target) of the positives plus sampled negatives.

    Each positive row gets ``negatives`` rows of the same user with a movie drawn
    uniformly from 0..num_movies-1 and target 0. A drawn movie may be one the user
    rated; at a few dozen ratings among thousands of movies such draws are rare.
    """
    users = np.repeat(positives.user_index, negatives)
    drawn = rng.integers(0, num_movies, size=users.size)
    user_index = np.concatenate([positives.user_index, users])
    movie_index = np.concatenate([positives.movie_index, drawn])
    target = np.concatenate(
        [np.ones(positives.rows, dtype=np.float32), np.zeros(users.size, dtype=np.float32)]
    )
    return user_index.astype(np.int32), movie_index.astype(np.int32), target


def _pair_dataset(generate, batch_size: int):
    import tensorflow as tf

    signature = (
        (
            tf.TensorSpec(shape=(None,), dtype=tf.int32),
            tf.TensorSpec(shape=(None,), dtype=tf.int32),
        ),
        tf.TensorSpec(shape=(None,), dtype=tf.float32),
    )
    return tf.data.Dataset.from_generator(generate, output_signature=signature).prefetch(2)


def train_ranking_model(
    fit: Ratings,
    validation: Ratings,
    features: MovieFeatures,
    settings: EmbeddingSettings,
    seed: int,
) -> TrainingResult:
    """Train the implicit-feedback ranking model on the fit rows with sampled negatives.

    Negatives are drawn anew for every epoch from a generator seeded by (seed, 0, epoch).
    The validation rows get one fixed draw seeded by (seed, 1, 0), and training stops
    on their loss. The returned FactorModel's scores are logits, which rank movies but are
    not ratings.
    """
    keras.utils.set_random_seed(seed)
    model = build_factorization(
        features.num_users, features.side_features, settings, 0.0, "ranking_embedding"
    )
    model.compile(
        optimizer=keras.optimizers.Adam(settings.learning_rate),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    passes = {"count": 0}

    def generate_fit() -> Iterator[tuple[tuple[np.ndarray, np.ndarray], np.ndarray]]:
        rng = np.random.default_rng([seed, 0, passes["count"]])
        passes["count"] += 1
        users, movies, target = sampled_pairs(fit, features.num_movies, settings.negatives, rng)
        order = rng.permutation(target.size)
        for start in range(0, target.size, settings.batch_size):
            rows = order[start : start + settings.batch_size]
            yield (users[rows], movies[rows]), target[rows]

    validation_pairs = sampled_pairs(
        validation, features.num_movies, settings.negatives, np.random.default_rng([seed, 1, 0])
    )

    def generate_validation() -> Iterator[tuple[tuple[np.ndarray, np.ndarray], np.ndarray]]:
        users, movies, target = validation_pairs
        for start in range(0, target.size, settings.batch_size):
            rows = slice(start, start + settings.batch_size)
            yield (users[rows], movies[rows]), target[rows]

    stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", mode="min", patience=settings.patience, restore_best_weights=True
    )
    started = time.perf_counter()
    history = model.fit(
        _pair_dataset(generate_fit, settings.batch_size),
        validation_data=_pair_dataset(generate_validation, settings.batch_size),
        epochs=settings.max_epochs,
        callbacks=[stopping, *_epoch_schedule(settings)],
        verbose=2,
    )
    seconds = time.perf_counter() - started
    records = _history_records(history.history)
    best_epoch = int(np.argmin([record["val_loss"] for record in records])) + 1
    logger.info(
        "Ranking model: best validation loss %.4f at epoch %d of %d, %.1f s",
        records[best_epoch - 1]["val_loss"],
        best_epoch,
        len(records),
        seconds,
    )
    factors = export_factors(model, features, 0.0)
    return TrainingResult(factors, records, best_epoch, seconds)
