"""Synthetic MovieLens data with the shape of the ML-20M release, generated from a seed.

``python -m lenspark.synth --dataset ml-20m-synthetic --seed 1234 --out data/ml-20m-synthetic``
writes ``ratings.csv``, ``movies.csv``, ``tags.csv``, ``links.csv`` and ``README.txt`` in the
MovieLens CSV style: an unquoted header, quotes only around fields that contain a comma or a
quote, ratings with one decimal, rows ordered by userId and then movieId.

The model behind the ratings, per (user u, movie i):

    x_ui = mu + b_u + b_i + p_u . q_i + e_ui,    e_ui ~ N(0, noise^2)

with rank-``rank`` factors ``p_u``, ``q_i`` drawn from a normal law. The written rating is
``x_ui`` rounded to the nearest half star and clipped to [0.5, 5.0]. It is rounded to the nearest
whole star and clipped to [1, 5] instead when it is dated before ``HALF_STAR_START`` or when the
user rates in whole stars only. The generator knows both the noiseless value
``m_ui = x_ui - e_ui`` and the rounding rule of every rating.

The RMSE floor is the RMSE over all written ratings of the best possible predictor,
``E[R_ui | m_ui, rule_ui]``: the expected rating under the noise and the rounding and clipping.
It is computed exactly per rating from the normal CDF, and averaged over the noise draws of this
very data, so it is a Monte Carlo estimate of ``sqrt(mean Var(R_ui | m_ui, rule_ui))``. No model
that sees only the data can expect a lower RMSE on fresh ratings from this generator.

Output is streamed: ratings and tags are made and written one chunk of users at a time, so
memory holds the per-movie arrays, one 8-byte count per user and one chunk, whatever the scale.
The same seed and scale give the same bytes.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lenspark.columns import CSV_HEADERS
from lenspark.errors import ConfigError

logger = logging.getLogger(__name__)

# Cardinalities of the ML-20M release. Every other scale keeps their proportions.
ML20M_RATINGS = 20_000_263
ML20M_USERS = 138_493
ML20M_MOVIES = 27_278
ML20M_TAGS = 465_564
ML20M_MAX_MOVIE_ID = 131_262

DEFAULT_DATASET = "ml-20m-synthetic"
DEFAULT_SCALE = "20M"
DEFAULT_SEED = 1234
DEFAULT_RANK = 8
DEFAULT_NOISE = 0.7
MIN_RATINGS = 1_000

# Every user rates at least this many movies, as the ml-latest-small README states of its users.
MIN_RATINGS_PER_USER = 20
# No user rates more than this share of the catalogue (a modelling choice that leaves room for
# the heaviest users while keeping their sampling without replacement far from exhaustive).
MAX_USER_SHARE = 1 / 3
# Below about 7M ratings, proportional scaling would give too few movies for users with 20 or
# more ratings each to rate without repeats. The catalogue then keeps this many movies.
MIN_MOVIES = 1_000

# Timestamps lie in [1995-01-01 00:00:00, 2015-12-31 23:59:59] UTC.
FIRST_TIMESTAMP = 788_918_400
LAST_TIMESTAMP = 1_451_606_399
# Ratings before 2003-03-01 UTC are whole stars. The ml-latest-small sample has no half-star
# rating before May 2003.
HALF_STAR_START = 1_046_476_800

# Ratings per chunk of users. It bounds the memory of one chunk, about 300 bytes per rating.
CHUNK_RATINGS = 1_000_000
# Users rating more than this share of the catalogue are sampled by the exact O(movies) method.
HEAVY_USER_SHARE = 0.05
MAX_TOP_UP_ROUNDS = 6

# Rating values in half stars: code c stands for the rating (c + 1) / 2.
RATING_VALUES = np.arange(1, 11) / 2


@dataclasses.dataclass(frozen=True)
class ModelParameters:
    """Parameters of the rating model, user activity and movie popularity."""

    rank: int = DEFAULT_RANK
    noise: float = DEFAULT_NOISE
    # Global offset, tuned so that the mean rating is near 3.53 at every scale.
    # NOTE: tuned by runs of 20,000 to 20M ratings at the default rank and noise. Another
    # --noise changes how much clipping pulls the mean, so the mean moves off 3.53.
    global_mean: float = 3.55
    # Biases are sd * (1 - Exp(1)): mean 0 and a long tail of users and movies rated far below
    # the rest. Their negative skew makes 4.0 the most frequent rating at a mean near 3.53.
    user_bias_sd: float = 0.40
    movie_bias_sd: float = 0.50
    # Movie bias gained per standard deviation of log-popularity: popular movies rate higher.
    popularity_bias: float = 0.05
    # Standard deviation of p_u . q_i in stars.
    interaction_sd: float = 0.35
    # Share of users who rate in whole stars only, also after HALF_STAR_START.
    whole_star_user_share: float = 0.25
    # Ratings above the minimum per user: log-normal with this median and log-sd.
    activity_median: float = 48.0
    activity_log_sd: float = 1.38
    # Popularity weight of the movie of popularity rank r: exp(-(r / head)^shape), a stretched
    # exponential. ``head`` is fixed, so that the most popular movie gets a similar share of
    # the users at every scale. ``shape`` is set per scale so that the least popular movie's
    # weight is exp(-tail). At 20M that is shape 0.4, which gives the head tens of thousands
    # of ratings and the median movie a few tens (chosen by eye to resemble ML-20M).
    popularity_head: float = 70.0
    popularity_tail: float = 10.9
    # Days a user stays active: log-normal with this median and log-sd.
    active_days_median: float = 14.0
    active_days_log_sd: float = 2.0
    # Share of users who write tags, and the log-sd of tags per tagging user.
    tagger_share: float = 0.06
    tags_log_sd: float = 1.5

    def __post_init__(self) -> None:
        if not 1 <= self.rank <= 256:
            raise ConfigError(f"--rank must be between 1 and 256, got {self.rank}")
        if not 0 < self.noise <= 5:
            raise ConfigError(f"--noise must be in (0, 5] stars, got {self.noise}")


@dataclasses.dataclass(frozen=True)
class Cardinalities:
    """Row counts of one synthetic release."""

    ratings: int
    users: int
    movies: int
    tags: int
    max_movie_id: int


@dataclasses.dataclass
class RatingSummary:
    """Running totals over the written ratings: histogram and squared errors of the floor."""

    histogram: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(10, np.int64))
    squared_error: float = 0.0
    expected_variance: float = 0.0

    @property
    def count(self) -> int:
        """Number of ratings counted."""
        return int(self.histogram.sum())

    @property
    def mean(self) -> float:
        """Mean rating in stars."""
        return float(self.histogram @ RATING_VALUES) / self.count

    @property
    def mode(self) -> float:
        """Most frequent rating in stars."""
        return float(RATING_VALUES[int(np.argmax(self.histogram))])

    @property
    def floor_rmse(self) -> float:
        """RMSE of the conditional expectation on the written ratings (Monte Carlo)."""
        return math.sqrt(self.squared_error / self.count)

    @property
    def expected_floor_rmse(self) -> float:
        """Square root of the mean conditional variance over the written (user, movie) pairs."""
        return math.sqrt(self.expected_variance / self.count)


# --- scale -------------------------------------------------------------------------------------

_SCALE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KkMm]?)\s*$")


def parse_scale(scale: str) -> int:
    """Return the ratings count of ``scale``: "20M" is ML-20M's 20,000,263; "1M", "250K", "5000"."""
    match = _SCALE_PATTERN.match(scale)
    if match is None:
        raise ConfigError(
            f"--scale {scale!r} is not a number of ratings. Use a count such as 20000, "
            "or a count with a K or M suffix such as 1M."
        )
    number, suffix = match.groups()
    if suffix.upper() == "M" and float(number) == 20:
        return ML20M_RATINGS
    factor = {"": 1, "K": 1_000, "M": 1_000_000}[suffix.upper()]
    ratings = round(float(number) * factor)
    if ratings < MIN_RATINGS:
        raise ConfigError(f"--scale {scale!r} gives {ratings} ratings; use at least {MIN_RATINGS}.")
    return ratings


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def cardinalities(ratings: int) -> Cardinalities:
    """Scale ML-20M's users, movies and tags to ``ratings`` ratings (at least MIN_MOVIES movies)."""
    ratio = ratings / ML20M_RATINGS
    users = max(1, _round_half_up(ML20M_USERS * ratio))
    movies = max(MIN_MOVIES, _round_half_up(ML20M_MOVIES * ratio))
    tags = _round_half_up(ML20M_TAGS * ratio)
    max_movie_id = _round_half_up(movies * ML20M_MAX_MOVIE_ID / ML20M_MOVIES)
    return Cardinalities(ratings, users, movies, tags, max_movie_id)


def max_ratings_per_user(movies: int) -> int:
    """Return the most ratings one user may have in a catalogue of ``movies`` movies."""
    return max(MIN_RATINGS_PER_USER, int(movies * MAX_USER_SHARE))


# --- counts that sum exactly -------------------------------------------------------------------


def allocate_counts(weights: np.ndarray, total: int, minimum: int, maximum: int) -> np.ndarray:
    """Split ``total`` into integers in [minimum, maximum], roughly proportional to ``weights``.

    Each count is ``minimum`` plus a share of the rest proportional to its weight, capped at
    ``maximum``. The rounding remainder goes to the largest fractional parts, ties by index.
    """
    n = len(weights)
    if not n * minimum <= total <= n * maximum:
        raise ConfigError(
            f"cannot split {total} into {n} counts between {minimum} and {maximum}. "
            "Use a larger --scale."
        )
    spare = total - n * minimum
    room = maximum - minimum
    weights = np.asarray(weights, dtype=np.float64)

    # Bisect on the multiplier f so that sum(min(f * weights, room)) equals spare.
    low, high = 0.0, 1.0
    while np.minimum(high * weights, room).sum() < spare:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        if np.minimum(middle * weights, room).sum() < spare:
            low = middle
        else:
            high = middle
    shares = np.minimum(high * weights, room)

    extra = np.floor(shares).astype(np.int64)
    remainder = spare - int(extra.sum())
    if remainder > 0:
        fraction = np.where(extra < room, shares - extra, -1.0)
        order = np.argsort(-fraction, kind="stable")
        extra[order[:remainder]] += 1
    elif remainder < 0:
        order = np.argsort(shares - extra, kind="stable")
        candidates = order[extra[order] > 0]
        extra[candidates[:-remainder]] -= 1
    return minimum + extra


# --- the catalogue: movies, links and their parameters -----------------------------------------

GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "IMAX",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
# Relative frequency of each genre above, Drama and Comedy the most common.
GENRE_WEIGHTS = np.array([12, 8, 3, 4, 30, 9, 9, 47, 5, 1, 9, 0.7, 3, 5, 15, 6, 15, 4, 2])
NO_GENRES = "(no genres listed)"
# ml-latest-small lists no genres for 18 of its 9,125 movies.
NO_GENRES_SHARE = 0.002

TITLE_ADJECTIVES = (
    "Silent", "Broken", "Golden", "Last", "Crimson", "Hidden", "Little", "Wild", "Lonely",
    "Electric", "Frozen", "Burning", "Velvet", "Hollow", "Quiet", "Savage", "Distant", "Paper",
    "Iron", "Midnight", "Secret", "Lucky", "Endless", "Restless", "Bitter", "Sweet", "Strange",
)  # fmt: skip
TITLE_NOUNS = (
    "River", "Harbor", "Garden", "Kingdom", "Machine", "Summer", "Winter", "Stranger", "Mirror",
    "Letter", "Island", "Highway", "Orchard", "Lantern", "Engine", "Circus", "Signal", "Shadow",
    "Dancer", "Frontier", "Thief", "Witness", "Voyage", "Empire", "Canyon", "Bride", "Detective",
)  # fmt: skip
# Made-up names, some with accents, as in titles from many languages.
TITLE_NAMES = (
    "Morrow", "Kessel", "Tamsin", "Orlov", "Brandt", "Ivo", "Delacroft", "Wenna", "Pell",
    "Éloran", "Søvind", "Mäkkara", "Brûlette", "Niñoza", "Çavira", "Zoë", "Ångelin", "Görtz",
)  # fmt: skip
ACCENTED_NAMES = tuple(name for name in TITLE_NAMES if not name.isascii())
ARTICLES = ("The", "A", "An")

# Title patterns and their probabilities. Each of FORCED_PATTERNS appears at least once.
PLAIN, WITH_NAME, ALTERNATE, ARTICLE_MOVED, COMMA_INSIDE, QUOTED, ACCENTED = range(7)
TITLE_PATTERN_WEIGHTS = np.array([0.55, 0.12, 0.05, 0.18, 0.04, 0.01, 0.05])
FORCED_PATTERNS = (ARTICLE_MOVED, COMMA_INSIDE, QUOTED, ACCENTED)


def _pick(rng: np.random.Generator, words: Sequence[str]) -> str:
    return words[int(rng.integers(len(words)))]


def _base_title(rng: np.random.Generator) -> str:
    return f"{_pick(rng, TITLE_ADJECTIVES)} {_pick(rng, TITLE_NOUNS)}"


def make_title(rng: np.random.Generator, pattern: int, year: int) -> str:
    """Make one invented title of ``pattern`` with its release year, in MovieLens style."""
    if pattern == PLAIN:
        name = _base_title(rng)
    elif pattern == WITH_NAME:
        name = f"{_pick(rng, TITLE_NAMES)}'s {_pick(rng, TITLE_NOUNS)}"
    elif pattern == ALTERNATE:
        name = f"{_base_title(rng)} (a.k.a. {_pick(rng, TITLE_NAMES)} {_pick(rng, TITLE_NOUNS)})"
    elif pattern == ARTICLE_MOVED:
        # MovieLens moves a leading article to the end: "The Silent River" becomes
        # "Silent River, The".
        name = f"{_base_title(rng)}, {_pick(rng, ARTICLES)}"
    elif pattern == COMMA_INSIDE:
        name = f"{_pick(rng, TITLE_NOUNS)}, {_pick(rng, TITLE_NOUNS)} and {_pick(rng, TITLE_NOUNS)}"
    elif pattern == QUOTED:
        name = (
            f'"{_pick(rng, TITLE_ADJECTIVES)} {_pick(rng, TITLE_NOUNS)}" {_pick(rng, TITLE_NAMES)}'
        )
    else:
        name = f"{_pick(rng, ACCENTED_NAMES)} and the {_pick(rng, TITLE_NOUNS)}"
    return f"{name} ({year})"


def _genres_field(rng: np.random.Generator, genre_p: np.ndarray) -> str:
    count = int(rng.choice([1, 2, 3, 4, 5], p=[0.38, 0.33, 0.19, 0.08, 0.02]))
    picked = rng.choice(len(GENRES), size=count, replace=False, p=genre_p)
    return "|".join(GENRES[i] for i in sorted(picked))


def popularity_shape(movies: int, params: ModelParameters) -> float:
    """Return the shape that gives the least popular of ``movies`` movies weight exp(-tail)."""
    return math.log(params.popularity_tail) / math.log(movies / params.popularity_head)


def skewed_bias(rng: np.random.Generator, sd: float, size: int) -> np.ndarray:
    """Draw ``size`` biases sd * (1 - Exp(1)): mean 0, standard deviation ``sd``, skewness -2.

    The draws are stratified, one in each of ``size`` equal quantile bands in random order, so
    that a few hundred users or movies already have close to the law's spread and skew.
    """
    uniform = (rng.permutation(size) + rng.random(size)) / size
    return sd * (1.0 + np.log1p(-uniform))


@dataclasses.dataclass(frozen=True)
class Catalogue:
    """The movies: ids, popularity, rating parameters and the rows of movies.csv and links.csv."""

    movie_ids: np.ndarray
    # b"movieId," per movie, for the ratings writer.
    movie_fields: np.ndarray
    popularity: np.ndarray
    cdf: np.ndarray
    bias: np.ndarray
    factors: np.ndarray
    movie_rows: list[tuple[int, str, str]]
    link_rows: list[tuple[int, str, str]]


def make_catalogue(
    rng: np.random.Generator, counts: Cardinalities, params: ModelParameters
) -> Catalogue:
    """Draw the movie ids, popularity law, biases, factors, titles, genres and links."""
    movies = counts.movies
    movie_ids = np.sort(rng.choice(counts.max_movie_id, size=movies, replace=False)) + 1

    # Popularity ranks are assigned to movies at random.
    ranks = rng.permutation(movies) + 1
    popularity = np.exp(-((ranks / params.popularity_head) ** popularity_shape(movies, params)))
    popularity /= popularity.sum()
    cdf = np.cumsum(popularity)
    cdf /= cdf[-1]

    log_popularity = np.log(popularity)
    popularity_z = (log_popularity - log_popularity.mean()) / log_popularity.std()
    # generate() centres these on their mean over the first chunk's ratings.
    bias = skewed_bias(rng, params.movie_bias_sd, movies) + params.popularity_bias * popularity_z
    factor_sd = (params.interaction_sd**2 / params.rank) ** 0.25
    factors = rng.normal(0.0, factor_sd, (movies, params.rank)).astype(np.float32)

    # Release years lean to recent decades, as in a catalogue that grows each year.
    years = np.clip(2015 - np.floor(rng.exponential(16.0, movies)), 1902, 2015).astype(int)

    patterns = rng.choice(len(TITLE_PATTERN_WEIGHTS), size=movies, p=TITLE_PATTERN_WEIGHTS)
    forced = rng.permutation(movies)[: len(FORCED_PATTERNS) + 1]
    patterns[forced[:-1]] = FORCED_PATTERNS
    no_genres = rng.random(movies) < NO_GENRES_SHARE
    no_genres[forced[-1]] = True

    genre_p = GENRE_WEIGHTS / GENRE_WEIGHTS.sum()
    movie_rows = []
    for index in range(movies):
        title = make_title(rng, int(patterns[index]), int(years[index]))
        genres = NO_GENRES if no_genres[index] else _genres_field(rng, genre_p)
        movie_rows.append((int(movie_ids[index]), title, genres))

    link_rows = _make_links(rng, movie_ids, years)
    movie_fields = np.char.add(movie_ids.astype("S"), b",")
    return Catalogue(movie_ids, movie_fields, popularity, cdf, bias, factors, movie_rows, link_rows)


# IMDb ids are written with leading zeros to 7 digits, and titles before 2009 get ids below
# 1,000,000. ml-latest-small lacks a TMDb id for 13 of its 9,125 movies.
IMDB_OLD_LIMIT = 1_000_000
IMDB_NEW_LIMIT = 5_000_000
IMDB_NEW_FROM_YEAR = 2009
TMDB_LIMIT = 450_000
TMDB_MISSING_SHARE = 0.0015


def _make_links(
    rng: np.random.Generator, movie_ids: np.ndarray, years: np.ndarray
) -> list[tuple[int, str, str]]:
    movies = len(movie_ids)
    new = years >= IMDB_NEW_FROM_YEAR
    imdb = np.empty(movies, dtype=np.int64)
    imdb[~new] = rng.choice(IMDB_OLD_LIMIT - 1, size=int((~new).sum()), replace=False) + 1
    imdb[new] = (
        rng.choice(IMDB_NEW_LIMIT - IMDB_OLD_LIMIT, size=int(new.sum()), replace=False)
        + IMDB_OLD_LIMIT
    )
    tmdb = rng.choice(TMDB_LIMIT, size=movies, replace=False) + 2
    missing = rng.random(movies) < TMDB_MISSING_SHARE
    missing[int(rng.integers(movies))] = True
    return [
        (int(movie_ids[i]), f"{imdb[i]:07d}", "" if missing[i] else str(tmdb[i]))
        for i in range(movies)
    ]


# --- the floor: conditional mean and variance of a rating --------------------------------------

FLOOR_GRID_START = -6.0
FLOOR_GRID_STOP = 12.0
FLOOR_GRID_STEP = 0.001


@dataclasses.dataclass(frozen=True)
class RoundingTables:
    """E[R | m] and Var(R | m) on a grid of noiseless values m, for half and whole stars."""

    grid: np.ndarray
    half_mean: np.ndarray
    half_variance: np.ndarray
    whole_mean: np.ndarray
    whole_variance: np.ndarray

    def moments(self, m: np.ndarray, whole: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return E[R | m] and Var(R | m), interpolated, for the rounding rule of each rating."""
        m = np.clip(m, FLOOR_GRID_START, FLOOR_GRID_STOP)
        mean = np.where(
            whole,
            np.interp(m, self.grid, self.whole_mean),
            np.interp(m, self.grid, self.half_mean),
        )
        variance = np.where(
            whole,
            np.interp(m, self.grid, self.whole_variance),
            np.interp(m, self.grid, self.half_variance),
        )
        return mean, variance


def _rounding_moments(
    grid: np.ndarray, noise: float, values: np.ndarray, step: float
) -> tuple[np.ndarray, np.ndarray]:
    # Value v takes x in [v - step/2, v + step/2). The lowest and highest values also take
    # everything below and above them, which is the clipping.
    erf = np.vectorize(math.erf)
    edges = np.concatenate(([-np.inf], values[:-1] + step / 2, [np.inf]))
    z = (edges[None, :] - grid[:, None]) / (noise * math.sqrt(2))
    cdf = 0.5 * (1 + erf(z))
    probability = np.diff(cdf, axis=1)
    mean = probability @ values
    variance = probability @ values**2 - mean**2
    return mean, np.maximum(variance, 0.0)


def rounding_tables(noise: float) -> RoundingTables:
    """Tabulate the rating's conditional mean and variance for Gaussian noise of sd ``noise``."""
    steps = round((FLOOR_GRID_STOP - FLOOR_GRID_START) / FLOOR_GRID_STEP) + 1
    grid = np.linspace(FLOOR_GRID_START, FLOOR_GRID_STOP, steps)
    half_mean, half_variance = _rounding_moments(grid, noise, RATING_VALUES, 0.5)
    whole_mean, whole_variance = _rounding_moments(grid, noise, RATING_VALUES[1::2], 1.0)
    return RoundingTables(grid, half_mean, half_variance, whole_mean, whole_variance)


def round_rating_codes(x: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """Round ``x`` to half stars in [0.5, 5], or to whole stars in [1, 5] where ``whole``.

    Returns rating codes: code c stands for the rating (c + 1) / 2.
    """
    half_code = np.clip(np.floor(2 * x + 0.5), 1, 10) - 1
    whole_code = 2 * np.clip(np.floor(x + 0.5), 1, 5) - 1
    return np.where(whole, whole_code, half_code).astype(np.int8)


# --- sampling each user's movies without replacement -------------------------------------------


def _within_group_rank(groups: np.ndarray) -> np.ndarray:
    # Position of each element within its run of equal values in the sorted ``groups``.
    starts = np.flatnonzero(np.concatenate(([True], groups[1:] != groups[:-1])))
    lengths = np.diff(np.concatenate((starts, [len(groups)])))
    return np.arange(len(groups)) - np.repeat(starts, lengths)


def sample_user_movies(
    rng: np.random.Generator, counts: np.ndarray, popularity: np.ndarray, cdf: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``counts[u]`` distinct movies for each user u, weighted by ``popularity``.

    Every user gets the law of successive weighted sampling without replacement: draw by
    popularity and skip repeats. Light users draw with replacement and keep first occurrences,
    in vectorised rounds. Heavy users, and light users still short after the rounds, use the
    equivalent exponential-key method over the whole catalogue. Returns (user, movie) index
    arrays sorted by user, then movie.
    """
    movies = len(popularity)
    users = len(counts)
    heavy = counts > HEAVY_USER_SHARE * movies
    square_sum = float(popularity @ popularity)
    accepted: list[np.ndarray] = []

    # Draws needed for k distinct movies: about k + k^2 * sum(w^2) / 2 (birthday bound).
    pending = np.flatnonzero(~heavy)
    needed = counts[pending]
    draws = np.ceil(1.1 * (needed + needed**2 * square_sum / 2)).astype(np.int64) + 2
    draw_users = np.repeat(pending, draws)
    draw_movies = _draw_movies(rng, cdf, len(draw_users))

    for _ in range(MAX_TOP_UP_ROUNDS):
        keys = draw_users * movies + draw_movies
        unique_keys, first = np.unique(keys, return_index=True)
        key_users = unique_keys // movies
        distinct = np.bincount(key_users, minlength=users)
        done = distinct >= counts

        # Keep each finished user's first k distinct movies in draw order.
        by_draw = np.lexsort((first, key_users))
        ranked_users = key_users[by_draw]
        rank = _within_group_rank(ranked_users)
        keep = done[ranked_users] & (rank < counts[ranked_users])
        accepted.append(unique_keys[by_draw][keep])

        short = np.unique(draw_users[~done[draw_users]])
        if len(short) == 0:
            break
        # Continue each short user's sequence of draws after the ones it already has.
        deficit = counts[short] - distinct[short]
        extra = np.ceil(1.5 * deficit + deficit**2 * square_sum).astype(np.int64) + 4
        still_short = ~done[draw_users]
        new_users = np.repeat(short, extra)
        new_movies = _draw_movies(rng, cdf, len(new_users))
        draw_users = np.concatenate((draw_users[still_short], new_users))
        draw_movies = np.concatenate((draw_movies[still_short], new_movies))
        order = np.argsort(draw_users, kind="stable")
        draw_users = draw_users[order]
        draw_movies = draw_movies[order]
    else:
        heavy[np.unique(draw_users)] = True

    for user in np.flatnonzero(heavy):
        # Exponential keys: the k smallest of Exp(1) / w are a weighted sample of k without
        # replacement, with the same law as successive sampling.
        keys = rng.exponential(size=movies) / popularity
        chosen = np.argpartition(keys, counts[user] - 1)[: counts[user]]
        accepted.append(user * movies + chosen)

    all_keys = np.sort(np.concatenate(accepted))
    return all_keys // movies, all_keys % movies


def _draw_movies(rng: np.random.Generator, cdf: np.ndarray, size: int) -> np.ndarray:
    indices = np.searchsorted(cdf, rng.random(size), side="right")
    return np.minimum(indices, len(cdf) - 1)


# --- one chunk of users ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class UserChunk:
    """Per-user parameters of one chunk of consecutive users."""

    first_user_id: int
    counts: np.ndarray
    bias: np.ndarray
    factors: np.ndarray
    whole_star: np.ndarray
    start: np.ndarray
    duration: np.ndarray


def make_user_chunk(
    rng: np.random.Generator, first_user_id: int, counts: np.ndarray, params: ModelParameters
) -> UserChunk:
    """Draw biases, factors, whole-star habit and active period for a chunk of users."""
    users = len(counts)
    factor_sd = (params.interaction_sd**2 / params.rank) ** 0.25
    bias = skewed_bias(rng, params.user_bias_sd, users)
    # Centre the biases on their mean over this chunk's ratings, so that the mean rating does
    # not drift with the few users of a small release.
    bias -= counts @ bias / counts.sum()
    factors = rng.normal(0.0, factor_sd, (users, params.rank)).astype(np.float32)
    whole_star = rng.random(users) < params.whole_star_user_share

    span = LAST_TIMESTAMP - FIRST_TIMESTAMP
    days = np.exp(rng.normal(math.log(params.active_days_median), params.active_days_log_sd, users))
    duration = np.minimum(np.round(days * 86_400), span).astype(np.int64)
    start = FIRST_TIMESTAMP + np.floor(rng.random(users) * (span - duration + 1)).astype(np.int64)
    return UserChunk(first_user_id, counts, bias, factors, whole_star, start, duration)


def _timestamps(rng: np.random.Generator, chunk: UserChunk, users: np.ndarray) -> np.ndarray:
    offsets = np.floor(rng.random(len(users)) * (chunk.duration[users] + 1)).astype(np.int64)
    return chunk.start[users] + offsets


def make_ratings(
    rng: np.random.Generator,
    chunk: UserChunk,
    users: np.ndarray,
    movies: np.ndarray,
    catalogue: Catalogue,
    params: ModelParameters,
    tables: RoundingTables,
    summary: RatingSummary,
) -> bytes:
    """Rate the chunk's (user, movie) index pairs, add them to ``summary`` and return the lines.

    The returned bytes start each line with its newline, so the file is the header, then the
    chunks in order, then one final newline.
    """
    interaction = np.einsum("ij,ij->i", chunk.factors[users], catalogue.factors[movies])
    noiseless = params.global_mean + chunk.bias[users] + catalogue.bias[movies] + interaction
    x = noiseless + rng.normal(0.0, params.noise, len(users))
    timestamps = _timestamps(rng, chunk, users)
    whole = chunk.whole_star[users] | (timestamps < HALF_STAR_START)
    codes = round_rating_codes(x, whole)

    mean, variance = tables.moments(noiseless, whole)
    summary.histogram += np.bincount(codes, minlength=10)
    summary.squared_error += float(np.sum((RATING_VALUES[codes] - mean) ** 2))
    summary.expected_variance += float(variance.sum())

    user_ids = np.arange(len(chunk.counts)) + chunk.first_user_id
    user_fields = np.char.add(np.char.add(b"\n", user_ids.astype("S")), b",")
    return format_rating_lines(
        user_fields[users], catalogue.movie_fields[movies], codes, timestamps
    )


def _field_bytes(strings: np.ndarray, n: int) -> np.ndarray:
    # A NUL-padded fixed-width bytes array seen as an (n, width) matrix of byte values.
    return strings.view(np.uint8).reshape(n, strings.dtype.itemsize)


_RATING_FIELDS = np.array([f"{value:.1f},".encode() for value in RATING_VALUES])


def format_rating_lines(
    user_fields: np.ndarray, movie_fields: np.ndarray, codes: np.ndarray, timestamps: np.ndarray
) -> bytes:
    """Join ``b"\\nuserId,"``, ``b"movieId,"``, the rating and the timestamp of each row.

    Each field is a NUL-padded fixed-width bytes column. Laying the columns side by side as one
    byte matrix and dropping the NUL bytes joins fields of different widths without a Python
    loop.
    """
    n = len(codes)
    if n == 0:
        return b""
    matrix = np.concatenate(
        (
            _field_bytes(user_fields, n),
            _field_bytes(movie_fields, n),
            _field_bytes(_RATING_FIELDS[codes], n),
            _field_bytes(timestamps.astype("S"), n),
        ),
        axis=1,
    )
    return matrix[matrix != 0].tobytes()


# --- tags --------------------------------------------------------------------------------------

TAG_PHRASES = (
    "atmospheric", "twist ending", "dark comedy", "slow", "visually stunning", "quirky",
    "based on a book", "cult film", "great dialogue", "soundtrack", "time travel", "heist",
    "dystopia", "satire", "nostalgic", "surreal", "anthology", "revenge", "road trip",
    "coming of age", "noir", "remake", "true story", "overrated", "underrated", "funny",
    "boring", "predictable", "cinematography", "ensemble cast", "musical numbers", "space",
)  # fmt: skip
# Tags that need CSV quoting or UTF-8, placed high in the tag popularity order so that even a
# small release contains them.
HARD_TAGS = ("slow, but worth it", 'the "twist" ending', "Brûlette's best", "mélancolie")
HARD_TAG_RANKS = (2, 4, 6, 8)
TAG_ZIPF_EXPONENT = 1.0


def make_tag_vocabulary(rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """Return the tag texts in popularity order and the CDF of a Zipf law over them."""
    phrases = list(TAG_PHRASES)
    phrases += [f"{a.lower()} {n.lower()}" for a in TITLE_ADJECTIVES for n in TITLE_NOUNS]
    phrases += [name for name in TITLE_NAMES]
    order = rng.permutation(len(phrases))
    vocabulary = [phrases[i] for i in order]
    for rank, tag in zip(HARD_TAG_RANKS, HARD_TAGS, strict=True):
        vocabulary.insert(rank, tag)
    weights = np.arange(1, len(vocabulary) + 1, dtype=np.float64) ** -TAG_ZIPF_EXPONENT
    cdf = np.cumsum(weights)
    return vocabulary, cdf / cdf[-1]


def make_tag_rows(
    rng: np.random.Generator,
    chunk: UserChunk,
    tag_counts: np.ndarray,
    catalogue: Catalogue,
    vocabulary: Sequence[str],
    vocabulary_cdf: np.ndarray,
) -> list[tuple[int, int, str, int]]:
    """Generate one chunk's tag rows, ordered by userId, movieId and timestamp."""
    users = np.repeat(np.arange(len(tag_counts)), tag_counts)
    movies = _draw_movies(rng, catalogue.cdf, len(users))
    words = _draw_movies(rng, vocabulary_cdf, len(users))
    timestamps = _timestamps(rng, chunk, users)
    order = np.lexsort((timestamps, movies, users))
    user_ids = users[order] + chunk.first_user_id
    movie_ids = catalogue.movie_ids[movies[order]]
    return [
        (int(user_id), int(movie_id), vocabulary[word], int(timestamp))
        for user_id, movie_id, word, timestamp in zip(
            user_ids, movie_ids, words[order], timestamps[order], strict=True
        )
    ]


# --- writing -----------------------------------------------------------------------------------

README_FIRST_LINE = "Synthetic MovieLens data made by lenspark.synth"


def _csv_writer(stream: io.TextIOBase) -> csv.writer:
    return csv.writer(stream, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")


def _write_table(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = _csv_writer(stream)
        writer.writerow(header)
        writer.writerows(rows)


def _chunk_bounds(counts: np.ndarray) -> list[tuple[int, int]]:
    # Consecutive users whose first rating falls in the same block of CHUNK_RATINGS ratings.
    first_rating = np.cumsum(counts) - counts
    block = first_rating // CHUNK_RATINGS
    starts = np.flatnonzero(np.concatenate(([True], block[1:] != block[:-1])))
    ends = np.concatenate((starts[1:], [len(counts)]))
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=stream))


CATALOGUE_STREAM, USERS_STREAM, TAGS_STREAM, CHUNK_STREAM = range(4)


@dataclasses.dataclass(frozen=True)
class SynthesisResult:
    """Counts and rating statistics of one generated release."""

    counts: Cardinalities
    summary: RatingSummary
    seconds: float


def user_rating_counts(seed: int, counts: Cardinalities, params: ModelParameters) -> np.ndarray:
    """Draw each user's number of ratings: at least 20, log-normal above, summing to the total."""
    rng = _rng(seed, USERS_STREAM)
    activity = rng.lognormal(math.log(params.activity_median), params.activity_log_sd, counts.users)
    return allocate_counts(
        activity, counts.ratings, MIN_RATINGS_PER_USER, max_ratings_per_user(counts.movies)
    )


def user_tag_counts(seed: int, counts: Cardinalities, params: ModelParameters) -> np.ndarray:
    """Draw each user's number of tags: zero for most, log-normal for a few taggers."""
    rng = _rng(seed, TAGS_STREAM)
    tag_counts = np.zeros(counts.users, dtype=np.int64)
    taggers = min(counts.tags, max(1, _round_half_up(counts.users * params.tagger_share)))
    if counts.tags == 0:
        return tag_counts
    chosen = np.sort(rng.choice(counts.users, size=taggers, replace=False))
    weights = rng.lognormal(0.0, params.tags_log_sd, taggers)
    tag_counts[chosen] = allocate_counts(weights, counts.tags, 1, counts.tags)
    return tag_counts


def generate(
    out: Path,
    *,
    dataset: str,
    seed: int,
    ratings: int,
    params: ModelParameters | None = None,
) -> SynthesisResult:
    """Write a synthetic release of ``ratings`` ratings to the folder ``out``, replacing it.

    The files are written to ``<out>.partial`` and renamed at the end, so ``out`` is either the
    previous release or the complete new one.
    """
    params = params or ModelParameters()
    started = time.perf_counter()
    counts = cardinalities(ratings)
    _check_replaceable(out)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    logger.info(
        "generating %s: %d ratings, %d users, %d movies, %d tags, seed %d, into %s",
        dataset, counts.ratings, counts.users, counts.movies, counts.tags, seed, out,
    )  # fmt: skip

    catalogue = make_catalogue(_rng(seed, CATALOGUE_STREAM), counts, params)
    _write_table(partial / "movies.csv", CSV_HEADERS["movies"], catalogue.movie_rows)
    _write_table(partial / "links.csv", CSV_HEADERS["links"], catalogue.link_rows)

    rating_counts = user_rating_counts(seed, counts, params)
    tag_counts = user_tag_counts(seed, counts, params)
    vocabulary, vocabulary_cdf = make_tag_vocabulary(_rng(seed, TAGS_STREAM, 1))
    tables = rounding_tables(params.noise)
    summary = RatingSummary()

    bounds = _chunk_bounds(rating_counts)
    with (
        (partial / "ratings.csv").open("wb") as ratings_file,
        (partial / "tags.csv").open("w", encoding="utf-8", newline="") as tags_file,
    ):
        ratings_file.write(",".join(CSV_HEADERS["ratings"]).encode())
        tag_writer = _csv_writer(tags_file)
        tag_writer.writerow(CSV_HEADERS["tags"])
        for index, (first, last) in enumerate(bounds):
            rng = _rng(seed, CHUNK_STREAM, index)
            chunk = make_user_chunk(rng, first + 1, rating_counts[first:last], params)
            users, movies = sample_user_movies(
                rng, chunk.counts, catalogue.popularity, catalogue.cdf
            )
            if index == 0:
                # Saturation of the popular movies makes the share of ratings each movie gets
                # differ from its weight, most at small scales. Centring the movie biases on
                # the first chunk's ratings keeps the mean rating the same at every scale.
                offset = float(catalogue.bias[movies].mean())
                catalogue = dataclasses.replace(catalogue, bias=catalogue.bias - offset)
            ratings_file.write(
                make_ratings(rng, chunk, users, movies, catalogue, params, tables, summary)
            )
            tag_writer.writerows(
                make_tag_rows(
                    rng, chunk, tag_counts[first:last], catalogue, vocabulary, vocabulary_cdf
                )
            )
            if (index + 1) % 5 == 0 or index + 1 == len(bounds):
                logger.info("wrote ratings of users 1..%d (%d ratings)", last, summary.count)
        ratings_file.write(b"\n")

    seconds = time.perf_counter() - started
    (partial / "README.txt").write_text(
        readme_text(dataset, seed, counts, params, summary), encoding="utf-8"
    )
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    logger.info("generated %s in %.1f s", out, seconds)
    return SynthesisResult(counts, summary, seconds)


def _check_replaceable(out: Path) -> None:
    # Never overwrite a folder this generator did not write, such as a downloaded release.
    if not out.exists():
        return
    readme = out / "README.txt"
    is_synthetic = readme.is_file() and readme.read_text(encoding="utf-8").startswith(
        README_FIRST_LINE
    )
    if not out.is_dir() or not is_synthetic:
        raise ConfigError(
            f"--out {out} exists and was not written by lenspark.synth, so it was not replaced. "
            "Choose another --out folder or remove this one."
        )


def readme_text(
    dataset: str,
    seed: int,
    counts: Cardinalities,
    params: ModelParameters,
    summary: RatingSummary,
) -> str:
    """Describe the release: that it is synthetic, its seed, scale, model and RMSE floor."""
    share = summary.histogram / summary.count
    shape = popularity_shape(counts.movies, params)
    distribution = "\n".join(
        f"    {value:.1f}  {100 * part:5.2f} %"
        for value, part in zip(RATING_VALUES, share, strict=True)
    )
    return f"""{README_FIRST_LINE}
{"=" * len(README_FIRST_LINE)}

Dataset {dataset}. These files are SYNTHETIC: no row comes from MovieLens or from any
person. They copy the format and the shape of the MovieLens ML-20M release so that
software can be tested at scale without downloading it. Titles, tags and links are
invented.

Regenerate: python -m lenspark.synth --dataset {dataset} --seed {seed} --scale {counts.ratings}

Seed:       {seed}
Scale:      {counts.ratings} ratings (ML-20M has {ML20M_RATINGS})
Users:      {counts.users}, each with at least {MIN_RATINGS_PER_USER} ratings
Movies:     {counts.movies}, movieId up to {counts.max_movie_id}
Tags:       {counts.tags}
Timestamps: seconds since 1970-01-01 UTC, from {FIRST_TIMESTAMP} (1995-01-01) to
            {LAST_TIMESTAMP} (2015-12-31)

Rating model
------------
x = mu + user bias + movie bias + user factors . movie factors + noise, where each bias is
sd * (1 - Exp(1)) (mean 0, skewed towards low ratings) and the factors are Gaussian.
  rank:                    {params.rank}
  noise:                   Gaussian, sd {params.noise} stars
  mu:                      {params.global_mean}
  user bias sd:            {params.user_bias_sd}
  movie bias sd:           {params.movie_bias_sd}, plus {params.popularity_bias} per sd of
                           log-popularity
  factor dot product sd:   {params.interaction_sd}
The rating is x rounded to the nearest half star and clipped to [0.5, 5.0], or to the
nearest whole star in [1, 5] for ratings dated before 2003-03-01 and for the
{100 * params.whole_star_user_share:.0f} % of users who use whole stars only.

Movie popularity: weight exp(-(rank / {params.popularity_head})^{shape:.3f}) by popularity rank.
User activity: {MIN_RATINGS_PER_USER} ratings plus a log-normal amount (median
{params.activity_median}, log-sd {params.activity_log_sd}), capped at a third of the movies.

RMSE floor
----------
RMSE of the best possible predictor, E[rating | noiseless x, rounding rule], on these
ratings: {summary.floor_rmse:.4f}
(Monte Carlo over this data's noise draws; the mean conditional variance over the same
pairs gives {summary.expected_floor_rmse:.4f}.)

Ratings
-------
Mean {summary.mean:.4f}, most frequent value {summary.mode:.1f}. Share of each value:
{distribution}
"""


# --- command line ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Build the command-line parser of ``python -m lenspark.synth``."""
    parser = argparse.ArgumentParser(
        prog="python -m lenspark.synth",
        description="Write a synthetic MovieLens release with the shape of ML-20M.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--dataset",
        default=DEFAULT_DATASET,
        help="release name; must end in -synthetic so that it never shadows a real release",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    parser.add_argument(
        "--scale",
        default=DEFAULT_SCALE,
        help="number of ratings: 20M is ML-20M's 20,000,263; also 1M, 100M, 250K or a count",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output folder (default: $DATA_DIR/<dataset>, DATA_DIR defaulting to data)",
    )
    parser.add_argument("--rank", type=int, default=DEFAULT_RANK, help="rank of the factors")
    parser.add_argument(
        "--noise", type=float, default=DEFAULT_NOISE, help="sd of the Gaussian noise, in stars"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, generate the release and print its RMSE floor."""
    from lenspark.logs import configure_logging

    configure_logging()
    args = build_parser().parse_args(argv)
    if not args.dataset.endswith("-synthetic") or "/" in args.dataset:
        raise ConfigError(
            f"--dataset {args.dataset!r} must be a folder name ending in -synthetic, "
            "such as ml-20m-synthetic, so that it never replaces a downloaded release."
        )
    out = Path(args.out or Path(os.environ.get("DATA_DIR") or "data") / args.dataset)
    params = ModelParameters(rank=args.rank, noise=args.noise)
    result = generate(
        out, dataset=args.dataset, seed=args.seed, ratings=parse_scale(args.scale), params=params
    )
    summary = result.summary
    print(f"wrote {out}: {result.counts.ratings} ratings in {result.seconds:.1f} s")
    print(f"rating mean {summary.mean:.4f}, most frequent rating {summary.mode:.1f}")
    print(
        f"RMSE floor (Monte Carlo) {summary.floor_rmse:.4f}; "
        f"from the mean conditional variance {summary.expected_floor_rmse:.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
