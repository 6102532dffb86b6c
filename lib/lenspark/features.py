"""Model inputs from the index stage's tables, read with pyarrow and never with Spark.

The index stage maps users and movies to dense indices fitted on train: users get
0..U-1 and movies 0..M-1, and the out-of-vocabulary (OOV) index U or M stands for
every id absent from train. The movie table does not store the OOV row, so it is
appended here with zero side features. Movies of the catalog that are absent from
train keep their own side features, keyed by movie id, so that a model can score an
unseen movie from its genres and year. The rated rows come as ``indexed_fit``,
``indexed_validation`` and ``indexed_test``. ``rating_batches`` streams them in Parquet
batches into ``tf.data``, so large releases never sit in memory whole.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa

from lenspark import parquet_io, storage
from lenspark.columns import GENRE_INDEX, GENRES, IMDBID, LABEL, MOVIEID, RATING, TITLE, USERID
from lenspark.config import Config
from lenspark.errors import InputFormatError

logger = logging.getLogger(__name__)

INDEX_STAGE = "index"

# Tables the index stage writes.
USER_INDEX_TABLE = "user_index"
MOVIE_INDEX_TABLE = "movie_index"
MOVIE_CATALOG_TABLE = "movie_catalog"
GENRE_VOCABULARY_TABLE = "genre_vocabulary"
FIT_TABLE = "indexed_fit"
VALIDATION_TABLE = "indexed_validation"
TEST_TABLE = "indexed_test"

# Columns of the index tables.
USER_INDEX = "user_index"
MOVIE_INDEX = "movie_index"
YEAR = "year"
GENRE_MULTI_HOT = "genre_multi_hot"
TRAIN_RATINGS = "train_ratings"
MEAN_RATING = "mean_rating"
GENRE = "genre"
POSITION = "position"

RATING_COLUMNS = (USER_INDEX, MOVIE_INDEX, RATING, LABEL, USERID, MOVIEID, GENRE_INDEX)
MOVIE_COLUMNS = (
    MOVIEID,
    MOVIE_INDEX,
    TITLE,
    GENRES,
    IMDBID,
    YEAR,
    GENRE_MULTI_HOT,
    TRAIN_RATINGS,
    MEAN_RATING,
)

# Release years are centred and scaled so that the year feature stays near -2..1.
YEAR_CENTRE = 1990.0
YEAR_SCALE = 20.0

# Rows read from Parquet per chunk; a chunk is shuffled in memory before it is batched.
CHUNK_ROWS = 1 << 18


def table_uri(config: Config, table: str) -> str:
    """Location of one of the index stage's tables in the warehouse."""
    return storage.table_uri(config.warehouse, config.dataset, table)


@dataclasses.dataclass(frozen=True)
class MovieFeatures:
    """The index of users and movies and the side features of each movie index.

    Arrays over movies have M + 1 rows: row M is the OOV slot, with zero features.
    ``unseen_movieids`` (ascending) and ``unseen_side_features`` (one row each) are the
    catalog movies absent from train, which all share the OOV index M.
    """

    userids: np.ndarray
    movieids: np.ndarray
    genres: tuple[str, ...]
    side_features: np.ndarray
    train_ratings: np.ndarray
    unseen_movieids: np.ndarray = dataclasses.field(
        default_factory=lambda: np.zeros(0, dtype=np.int64)
    )
    unseen_side_features: np.ndarray = dataclasses.field(
        default_factory=lambda: np.zeros((0, 0), dtype=np.float32)
    )

    @property
    def num_users(self) -> int:
        """U, the number of users in train; U is also the OOV user index."""
        return int(self.userids.size)

    @property
    def num_movies(self) -> int:
        """M, the number of movies in train; M is also the OOV movie index."""
        return int(self.movieids.size)


def year_features(years: Sequence[int | None]) -> np.ndarray:
    """Encode release years as float32 rows (scaled year, 1.0 when the year is unknown).

    An unknown year gets a scaled year of 0 and the indicator 1, so the model learns
    a separate offset for it.
    """
    values = np.array([np.nan if year is None else float(year) for year in years], dtype=np.float64)
    missing = np.isnan(values)
    scaled = np.where(missing, 0.0, (values - YEAR_CENTRE) / YEAR_SCALE)
    return np.column_stack([scaled, missing.astype(np.float64)]).astype(np.float32)


def movie_side_features(
    genre_multi_hot: Sequence[Sequence[float]], years: Sequence[int | None], num_genres: int
) -> np.ndarray:
    """Stack the genre multi-hot and the year features of each movie.

    Returns float32 of shape (movies, num_genres + 2). Raises InputFormatError when a
    multi-hot row does not have ``num_genres`` entries.
    """
    rows = len(years)
    genres = np.zeros((rows, num_genres), dtype=np.float32)
    for row, values in enumerate(genre_multi_hot):
        if values is None or len(values) != num_genres:
            length = None if values is None else len(values)
            raise InputFormatError(
                f"Column {GENRE_MULTI_HOT!r} of row {row} has length {length}, but the genre "
                f"vocabulary has {num_genres} genres. Rerun the index stage (make index)."
            )
        genres[row] = values
    return np.concatenate([genres, year_features(years)], axis=1)


def side_feature_matrix(
    genre_multi_hot: Sequence[Sequence[float]], years: Sequence[int | None], num_genres: int
) -> np.ndarray:
    """Stack the side features of M movies, as ``movie_side_features``, plus a zero OOV row.

    Returns float32 of shape (M + 1, num_genres + 2).
    """
    features = movie_side_features(genre_multi_hot, years, num_genres)
    oov_row = np.zeros((1, features.shape[1]), dtype=np.float32)
    return np.concatenate([features, oov_row], axis=0)


def _require_dense(index: np.ndarray, uri: str, column: str) -> None:
    expected = np.arange(index.size)
    if not np.array_equal(np.sort(index), expected):
        raise InputFormatError(
            f"Column {column!r} of {uri} is not the dense range 0..{index.size - 1}. "
            "Rerun the index stage (make index)."
        )


def load_movie_features(config: Config) -> MovieFeatures:
    """Read the user index, the movie index and the genre vocabulary into MovieFeatures.

    Raises IncompleteTableError when the index stage has not finished and
    InputFormatError when an index is not dense.
    """
    user_uri = table_uri(config, USER_INDEX_TABLE)
    users = parquet_io.read_table(user_uri, [USERID, USER_INDEX], producer=INDEX_STAGE)
    users = users.sort_by(USER_INDEX)
    _require_dense(users.column(USER_INDEX).to_numpy(), user_uri, USER_INDEX)

    vocabulary_uri = table_uri(config, GENRE_VOCABULARY_TABLE)
    vocabulary = parquet_io.read_table(vocabulary_uri, [GENRE, POSITION], producer=INDEX_STAGE)
    vocabulary = vocabulary.sort_by(POSITION)
    genres = tuple(vocabulary.column(GENRE).to_pylist())

    movie_uri = table_uri(config, MOVIE_INDEX_TABLE)
    movies = parquet_io.read_table(movie_uri, list(MOVIE_COLUMNS), producer=INDEX_STAGE)
    movies = movies.sort_by(MOVIE_INDEX)
    _require_dense(movies.column(MOVIE_INDEX).to_numpy(), movie_uri, MOVIE_INDEX)

    side = side_feature_matrix(
        movies.column(GENRE_MULTI_HOT).to_pylist(), movies.column(YEAR).to_pylist(), len(genres)
    )
    movieids = movies.column(MOVIEID).to_numpy().astype(np.int64)
    unseen_movieids, unseen_side = _unseen_movies(config, movieids, len(genres))
    features = MovieFeatures(
        userids=users.column(USERID).to_numpy().astype(np.int64),
        movieids=movieids,
        genres=genres,
        side_features=side,
        train_ratings=movies.column(TRAIN_RATINGS).to_numpy().astype(np.int64),
        unseen_movieids=unseen_movieids,
        unseen_side_features=unseen_side,
    )
    logger.info(
        "Index has %d users, %d movies and %d genres, and the catalog has %d more movies "
        "that are absent from train",
        features.num_users,
        features.num_movies,
        len(genres),
        unseen_movieids.size,
    )
    return features


def _unseen_movies(
    config: Config, indexed_movieids: np.ndarray, num_genres: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return the ascending ids and the side features of catalog movies absent from train.

    The catalog table also repeats the indexed movies, so rows whose id has an index
    are dropped, and an id listed twice keeps its first row.
    """
    uri = table_uri(config, MOVIE_CATALOG_TABLE)
    catalog = parquet_io.read_table(uri, [MOVIEID, GENRE_MULTI_HOT, YEAR], producer=INDEX_STAGE)
    movieids = catalog.column(MOVIEID).to_numpy().astype(np.int64)
    unseen = ~np.isin(movieids, indexed_movieids)
    unique_ids, first_rows = np.unique(movieids[unseen], return_index=True)
    rows = np.flatnonzero(unseen)[first_rows]
    side = movie_side_features(
        catalog.column(GENRE_MULTI_HOT).take(rows).to_pylist(),
        catalog.column(YEAR).take(rows).to_pylist(),
        num_genres,
    )
    return unique_ids, side.reshape(unique_ids.size, num_genres + 2)


def load_movie_catalog(config: Config) -> pa.Table:
    """Read every movie's id, title, genres and IMDb id: the movie index plus the catalog.

    The catalog table lists every movie of train and test, those absent from train at
    the OOV index M, so an indexed movie appears twice with the same values.
    """
    columns = [MOVIEID, MOVIE_INDEX, TITLE, GENRES, IMDBID]
    indexed = parquet_io.read_table(
        table_uri(config, MOVIE_INDEX_TABLE), columns, producer=INDEX_STAGE
    )
    catalog = parquet_io.read_table(
        table_uri(config, MOVIE_CATALOG_TABLE), columns, producer=INDEX_STAGE
    )
    return pa.concat_tables([indexed, catalog.cast(indexed.schema)])


@dataclasses.dataclass(frozen=True)
class Ratings:
    """Rated rows as NumPy arrays, one entry per row."""

    user_index: np.ndarray
    movie_index: np.ndarray
    rating: np.ndarray
    label: np.ndarray
    userid: np.ndarray
    movieid: np.ndarray
    genre_index: np.ndarray

    @property
    def rows(self) -> int:
        """Number of rated rows."""
        return int(self.rating.size)

    def concat(self, other: Ratings) -> Ratings:
        """Return the rows of ``self`` followed by the rows of ``other``."""
        return Ratings(
            **{
                field.name: np.concatenate([getattr(self, field.name), getattr(other, field.name)])
                for field in dataclasses.fields(self)
            }
        )


def ratings_from_table(table: pa.Table) -> Ratings:
    """Convert a table with the indexed rating columns into Ratings.

    Raises InputFormatError when a column has nulls.
    """
    arrays = {}
    dtypes = {RATING: np.float32}
    for name in RATING_COLUMNS:
        column = table.column(name)
        if column.null_count:
            raise InputFormatError(
                f"Column {name!r} has {column.null_count} null values. "
                "Rerun the index stage (make index)."
            )
        arrays[name] = column.to_numpy().astype(dtypes.get(name, np.int64))
    return Ratings(**arrays)


def load_ratings(config: Config, table: str) -> Ratings:
    """Read one of the indexed rating tables into memory as NumPy arrays."""
    uri = table_uri(config, table)
    dataset = parquet_io.open_dataset(uri, RATING_COLUMNS, producer=INDEX_STAGE)
    table = dataset.to_table(columns=list(RATING_COLUMNS), batch_size=CHUNK_ROWS)
    ratings = ratings_from_table(table)
    logger.info("Read %d rows from %s", ratings.rows, uri)
    return ratings


def shuffled_batches(
    uris: Sequence[str], batch_size: int, seed: int, epoch: int, columns: Sequence[str]
) -> Iterator[dict[str, np.ndarray]]:
    """Yield batches of ``columns`` of the Parquet tables at ``uris``, shuffled per chunk.

    The tables are read one after the other in chunks of CHUNK_ROWS rows. Each chunk is
    permuted with a generator seeded by (seed, epoch), so the order differs between
    epochs and is the same on every rerun. A table smaller than a chunk is shuffled whole.
    """
    rng = np.random.default_rng([seed, epoch])
    for uri in uris:
        for batch in parquet_io.iter_batches(uri, columns, CHUNK_ROWS, producer=INDEX_STAGE):
            order = rng.permutation(batch.num_rows)
            arrays = {name: batch.column(name).to_numpy() for name in columns}
            for start in range(0, batch.num_rows, batch_size):
                rows = order[start : start + batch_size]
                yield {name: values[rows] for name, values in arrays.items()}


def _stored_batches(
    uris: Sequence[str], batch_size: int, columns: Sequence[str]
) -> Iterator[dict[str, np.ndarray]]:
    for uri in uris:
        for batch in parquet_io.iter_batches(uri, columns, batch_size, producer=INDEX_STAGE):
            yield {name: batch.column(name).to_numpy() for name in columns}


def rating_batches(uris: Sequence[str], batch_size: int, seed: int, *, shuffle: bool = True):
    """Build a ``tf.data.Dataset`` of ((user_index, movie_index), rating) batches from Parquet.

    Each pass over the dataset reads the tables at ``uris`` again in Parquet batches.
    With ``shuffle`` the n-th pass uses the order of ``shuffled_batches`` for epoch n,
    else the stored row order.
    """
    import tensorflow as tf

    columns = (USER_INDEX, MOVIE_INDEX, RATING)
    passes = {"count": 0}

    def generate() -> Iterator[tuple[tuple[np.ndarray, np.ndarray], np.ndarray]]:
        epoch = passes["count"]
        passes["count"] += 1
        if shuffle:
            batches = shuffled_batches(uris, batch_size, seed, epoch, columns)
        else:
            batches = _stored_batches(uris, batch_size, columns)
        for batch in batches:
            yield (
                (
                    batch[USER_INDEX].astype(np.int32),
                    batch[MOVIE_INDEX].astype(np.int32),
                ),
                batch[RATING].astype(np.float32),
            )

    signature = (
        (
            tf.TensorSpec(shape=(None,), dtype=tf.int32),
            tf.TensorSpec(shape=(None,), dtype=tf.int32),
        ),
        tf.TensorSpec(shape=(None,), dtype=tf.float32),
    )
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return dataset.prefetch(2)
