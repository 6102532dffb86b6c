"""Baselines and the factor form that every rating model is scored in.

A ``FactorModel`` predicts global mean + user bias + movie bias + the dot product of
a user and a movie factor vector. The bias-only baseline has no factors, the most
popular baseline is a movie bias equal to the number of train ratings, and the
embedding model and ALS export their learned weights into the same form, so one
piece of NumPy code scores every model on the same rows.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lenspark import storage
from lenspark.errors import InputFormatError

logger = logging.getLogger(__name__)

MIN_RATING = 0.5
MAX_RATING = 5.0

# Shrinkage strengths tried for the bias-only baseline; each is a count of pseudo-ratings
# at the global mean added to every user and movie.
BIAS_REGULARIZATION_GRID = (1.0, 3.0, 5.0, 10.0, 25.0)
BIAS_SWEEPS = 10


@dataclasses.dataclass(frozen=True)
class FactorModel:
    """Rating predictor: global mean + user bias + movie bias + user vector . movie vector.

    Arrays have U + 1 user rows and M + 1 movie rows, the last being the OOV slot. A
    model may also carry a bias and a vector for movies absent from train, keyed by
    ``unseen_movieids`` (ascending). A row at the OOV movie index whose movie id is
    listed there uses them in place of the OOV slot, when the caller passes movie ids.
    When ``fallback_rating`` is set, a row whose user or movie has no factors
    (``user_known`` or ``movie_known`` false, and no unseen-movie row) is predicted as
    that rating, which is the ALS fallback. Otherwise the OOV slot's zero bias and zero
    vector act as the fallback.
    """

    global_mean: float
    user_bias: np.ndarray
    movie_bias: np.ndarray
    user_factors: np.ndarray
    movie_factors: np.ndarray
    user_known: np.ndarray
    movie_known: np.ndarray
    fallback_rating: float | None = None
    unseen_movieids: np.ndarray = dataclasses.field(
        default_factory=lambda: np.zeros(0, dtype=np.int64)
    )
    unseen_movie_bias: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    unseen_movie_factors: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0)))

    @property
    def num_users(self) -> int:
        """U, the number of users with an index; row U is the OOV slot."""
        return int(self.user_bias.size) - 1

    @property
    def num_movies(self) -> int:
        """M, the number of movies with an index; row M is the OOV slot."""
        return int(self.movie_bias.size) - 1

    def unseen_slots(self, movie_index: np.ndarray, movieid: np.ndarray | None) -> np.ndarray:
        """Return each row's position in ``unseen_movieids``, or -1 when the row has none.

        Only rows at the OOV movie index get a position, and none without ``movieid``.
        """
        movies = np.asarray(movie_index, dtype=np.int64)
        slots = np.full(movies.size, -1, dtype=np.int64)
        if movieid is None or self.unseen_movieids.size == 0:
            return slots
        ids = np.asarray(movieid, dtype=np.int64)
        positions = np.searchsorted(self.unseen_movieids, ids)
        positions = np.minimum(positions, self.unseen_movieids.size - 1)
        found = (movies == self.num_movies) & (self.unseen_movieids[positions] == ids)
        slots[found] = positions[found]
        return slots

    def raw_scores(
        self,
        user_index: np.ndarray,
        movie_index: np.ndarray,
        movieid: np.ndarray | None = None,
    ) -> np.ndarray:
        """Return unclipped scores of the (user, movie) pairs given as index arrays.

        With ``movieid``, a movie absent from train is scored by its unseen-movie row
        where the model has one.
        """
        users = np.asarray(user_index, dtype=np.int64)
        movies = np.asarray(movie_index, dtype=np.int64)
        slots = self.unseen_slots(movies, movieid)
        unseen = slots >= 0
        movie_bias = self.movie_bias[movies]
        movie_factors = self.movie_factors[movies]
        if unseen.any():
            movie_bias = np.where(unseen, self.unseen_movie_bias[np.maximum(slots, 0)], movie_bias)
            movie_factors[unseen] = self.unseen_movie_factors[slots[unseen]]
        scores = self.global_mean + self.user_bias[users] + movie_bias
        if self.user_factors.shape[1]:
            scores = scores + np.einsum("ij,ij->i", self.user_factors[users], movie_factors)
        if self.fallback_rating is not None:
            known = self.user_known[users] & (self.movie_known[movies] | unseen)
            scores = np.where(known, scores, self.fallback_rating)
        return scores.astype(np.float64)

    def predict(
        self,
        user_index: np.ndarray,
        movie_index: np.ndarray,
        movieid: np.ndarray | None = None,
    ) -> np.ndarray:
        """Return ratings of the (user, movie) pairs, clipped to 0.5..5.0 stars.

        ``movieid`` is optional and used as ``raw_scores`` describes.
        """
        return np.clip(self.raw_scores(user_index, movie_index, movieid), MIN_RATING, MAX_RATING)

    def score_matrix(self, user_index: np.ndarray) -> np.ndarray:
        """Return scores of shape (users, M) for every indexed movie, for ranking."""
        users = np.asarray(user_index, dtype=np.int64)
        movies = slice(0, self.num_movies)
        scores = (
            self.global_mean
            + self.user_bias[users][:, None]
            + self.movie_bias[movies][None, :]
            + self.user_factors[users] @ self.movie_factors[movies].T
        )
        if self.fallback_rating is not None:
            known = self.user_known[users][:, None] & self.movie_known[movies][None, :]
            scores = np.where(known, scores, self.fallback_rating)
        return scores

    def fallback_rows(self, user_index: np.ndarray, movie_index: np.ndarray) -> np.ndarray:
        """Return a boolean mask of the rows whose user or movie is absent from train.

        These rows are scored by the fallback: the OOV slot, ``fallback_rating`` or, for
        a movie, its unseen-movie row.
        """
        users = np.asarray(user_index, dtype=np.int64)
        movies = np.asarray(movie_index, dtype=np.int64)
        return ~(self.user_known[users] & self.movie_known[movies])

    def save(self, uri: str) -> None:
        """Write the model's arrays as an ``.npz`` file to ``uri`` (a local path or S3 URI)."""
        buffer = io.BytesIO()
        arrays = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        # NaN stands for "no fallback rating" because npz stores arrays, not None.
        if arrays["fallback_rating"] is None:
            arrays["fallback_rating"] = np.nan
        np.savez(buffer, **{name: np.asarray(value) for name, value in arrays.items()})
        storage.write_bytes(uri, buffer.getvalue())


def load_factor_model(uri: str) -> FactorModel:
    """Read a FactorModel written by ``FactorModel.save``.

    A file saved without unseen-movie rows loads with none. Raises InputFormatError,
    naming the compare stage, when the file is missing.
    """
    if not storage.exists(uri):
        raise InputFormatError(
            f"Model file {uri} not found. Run the compare stage first (make compare)."
        )
    fs, path = storage.filesystem(uri)
    with fs.open_input_stream(path) as stream:
        data = np.load(io.BytesIO(stream.read()))
        values = {name: data[name] for name in data.files}
    values["global_mean"] = float(values["global_mean"])
    fallback = float(values["fallback_rating"])
    values["fallback_rating"] = None if np.isnan(fallback) else fallback
    return FactorModel(**values)


def average_factor_models(models: Sequence[FactorModel]) -> FactorModel:
    """Return the FactorModel whose raw scores are the mean of the ``models``' raw scores.

    Biases are averaged, and the factor columns of all models are concatenated, each
    scaled by 1 / sqrt(n), so that the dot product sums the n dot products over n.
    Raises ValueError when the models differ in size, in unseen movies or have a
    ``fallback_rating``, since those cannot be averaged this way.
    """
    if not models:
        raise ValueError("Cannot average zero factor models.")
    first = models[0]
    for model in models:
        if model.fallback_rating is not None:
            raise ValueError("Cannot average factor models that have a fallback rating.")
        if (
            model.user_bias.shape != first.user_bias.shape
            or model.movie_bias.shape != first.movie_bias.shape
            or not np.array_equal(model.unseen_movieids, first.unseen_movieids)
        ):
            raise ValueError(
                "Cannot average factor models of different users or movies: bias shapes "
                f"{model.user_bias.shape}/{model.movie_bias.shape} against "
                f"{first.user_bias.shape}/{first.movie_bias.shape}, or other unseen movie ids."
            )
    scale = 1.0 / np.sqrt(len(models))

    def mean_of(name: str) -> np.ndarray:
        return np.mean([getattr(model, name) for model in models], axis=0)

    def scaled_columns(name: str) -> np.ndarray:
        return np.concatenate([getattr(model, name) * scale for model in models], axis=1)

    return FactorModel(
        global_mean=float(np.mean([model.global_mean for model in models])),
        user_bias=mean_of("user_bias"),
        movie_bias=mean_of("movie_bias"),
        user_factors=scaled_columns("user_factors"),
        movie_factors=scaled_columns("movie_factors"),
        user_known=first.user_known,
        movie_known=first.movie_known,
        unseen_movieids=first.unseen_movieids,
        unseen_movie_bias=mean_of("unseen_movie_bias"),
        unseen_movie_factors=scaled_columns("unseen_movie_factors"),
    )


def _empty_factors(num_users: int, num_movies: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((num_users + 1, 0)), np.zeros((num_movies + 1, 0))


def _known_mask(size: int) -> np.ndarray:
    known = np.ones(size + 1, dtype=bool)
    known[size] = False
    return known


def fit_biases(
    user_index: np.ndarray,
    movie_index: np.ndarray,
    rating: np.ndarray,
    num_users: int,
    num_movies: int,
    regularization: float,
    sweeps: int = BIAS_SWEEPS,
) -> FactorModel:
    """Fit global mean + user bias + movie bias by alternating shrunken averages.

    Each sweep sets a movie's bias to sum(r - mean - user bias) / (n + regularization)
    over its ratings, then each user's bias likewise. The OOV rows keep bias 0, so an
    unknown user or movie is scored by the other side's bias alone.
    """
    if rating.size == 0:
        raise InputFormatError("Cannot fit the bias-only baseline on zero ratings.")
    users = np.asarray(user_index, dtype=np.int64)
    movies = np.asarray(movie_index, dtype=np.int64)
    values = np.asarray(rating, dtype=np.float64)
    global_mean = float(values.mean())
    user_bias = np.zeros(num_users + 1)
    movie_bias = np.zeros(num_movies + 1)
    user_counts = np.bincount(users, minlength=num_users + 1)
    movie_counts = np.bincount(movies, minlength=num_movies + 1)
    for _ in range(sweeps):
        residual = values - global_mean - user_bias[users]
        movie_bias = np.bincount(movies, residual, num_movies + 1) / (movie_counts + regularization)
        residual = values - global_mean - movie_bias[movies]
        user_bias = np.bincount(users, residual, num_users + 1) / (user_counts + regularization)
    user_bias[num_users] = 0.0
    movie_bias[num_movies] = 0.0
    user_factors, movie_factors = _empty_factors(num_users, num_movies)
    return FactorModel(
        global_mean=global_mean,
        user_bias=user_bias,
        movie_bias=movie_bias,
        user_factors=user_factors,
        movie_factors=movie_factors,
        user_known=_known_mask(num_users),
        movie_known=_known_mask(num_movies),
    )


def global_mean_model(rating: np.ndarray, num_users: int, num_movies: int) -> FactorModel:
    """Return the model that predicts the mean of ``rating`` for every pair."""
    if rating.size == 0:
        raise InputFormatError("Cannot take the global mean of zero ratings.")
    user_factors, movie_factors = _empty_factors(num_users, num_movies)
    return FactorModel(
        global_mean=float(np.mean(rating, dtype=np.float64)),
        user_bias=np.zeros(num_users + 1),
        movie_bias=np.zeros(num_movies + 1),
        user_factors=user_factors,
        movie_factors=movie_factors,
        user_known=_known_mask(num_users),
        movie_known=_known_mask(num_movies),
    )


def popularity_model(movie_index: np.ndarray, num_users: int, num_movies: int) -> FactorModel:
    """Return the most-popular ranker: each movie's score is its number of train ratings.

    Its scores rank movies and are not ratings, so it gets no rating metrics.
    """
    counts = np.bincount(np.asarray(movie_index, dtype=np.int64), minlength=num_movies + 1)
    counts = counts.astype(np.float64)
    counts[num_movies] = 0.0
    user_factors, movie_factors = _empty_factors(num_users, num_movies)
    return FactorModel(
        global_mean=0.0,
        user_bias=np.zeros(num_users + 1),
        movie_bias=counts,
        user_factors=user_factors,
        movie_factors=movie_factors,
        user_known=_known_mask(num_users),
        movie_known=_known_mask(num_movies),
    )


def majority_label(labels: np.ndarray) -> int:
    """Return the most frequent whole-star label; a tie goes to the lowest label."""
    values = np.asarray(labels, dtype=np.int64)
    if values.size == 0:
        raise InputFormatError("Cannot find the majority class of zero labels.")
    return int(np.argmax(np.bincount(values)))


def choose_bias_regularization(
    fit_users: np.ndarray,
    fit_movies: np.ndarray,
    fit_ratings: np.ndarray,
    validation_users: np.ndarray,
    validation_movies: np.ndarray,
    validation_ratings: np.ndarray,
    num_users: int,
    num_movies: int,
) -> tuple[float, list[dict[str, float]]]:
    """Return the regularization of BIAS_REGULARIZATION_GRID with the lowest validation RMSE.

    Also returns one record (regularization, validation_rmse) per grid value. With no
    validation rows the middle of the grid is returned.
    """
    if validation_ratings.size == 0:
        middle = BIAS_REGULARIZATION_GRID[len(BIAS_REGULARIZATION_GRID) // 2]
        return middle, []
    grid = []
    for regularization in BIAS_REGULARIZATION_GRID:
        model = fit_biases(
            fit_users, fit_movies, fit_ratings, num_users, num_movies, regularization
        )
        error = model.predict(validation_users, validation_movies) - validation_ratings
        grid.append(
            {"regularization": regularization, "validation_rmse": float(np.sqrt(np.mean(error**2)))}
        )
    best = min(grid, key=lambda record: record["validation_rmse"])
    return best["regularization"], grid


def model_file(folder: str, name: str) -> str:
    """Location of model ``name``'s ``.npz`` file in ``folder``."""
    return (
        str(Path(folder) / f"{name}.npz") if not storage.is_s3(folder) else f"{folder}/{name}.npz"
    )
