"""The recommend stage: top-N movies a user has not rated, from the model with the best nDCG.

``python -m lenspark.recommend --user-id 547 --top-n 10`` prints a table of rank, title,
genres, score and IMDb link. ``--all-users`` writes the top-N of every user in train to
the ``recommendations`` table (userid, rank, movieid, score) instead. The model is the
one that comparison.json names as ``best_ndcg_model``, read from the compare stage's
model files. Only movies with an index (rated in train) are recommended.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lenspark import baselines, ranking, storage
from lenspark import features as feature_tables
from lenspark.baselines import FactorModel
from lenspark.columns import GENRES, IMDBID, MOVIEID, TITLE, USERID
from lenspark.compare import comparison_uri, model_folder
from lenspark.config import Config, build_parser, config_from_args
from lenspark.errors import InputFormatError, LensparkError
from lenspark.logs import configure_logging, timed

logger = logging.getLogger(__name__)

RECOMMENDATIONS_TABLE = "recommendations"
RANK = "rank"
SCORE = "score"
RECOMMENDATION_SCHEMA = pa.schema(
    [(USERID, pa.int32()), (RANK, pa.int32()), (MOVIEID, pa.int32()), (SCORE, pa.float32())]
)
# Users ranked per block of the batch mode, and so rows per Parquet row group up to N times that.
BATCH_USERS = 1024


def imdb_url(imdbid: str | None) -> str:
    """Return the IMDb page of a movie from its numeric IMDb id, zero-padded to 7 digits."""
    if imdbid is None or not str(imdbid).strip():
        return ""
    return f"https://www.imdb.com/title/tt{str(imdbid).strip().zfill(7)}/"


def best_model_name(config: Config) -> str:
    """Return the model that comparison.json names as best by nDCG.

    Raises InputFormatError when the compare stage has not run or ranked no model.
    """
    uri = comparison_uri(config)
    if not storage.exists(uri):
        raise InputFormatError(f"{uri} not found. Run the compare stage first (make compare).")
    name = storage.read_json(uri).get("best_ndcg_model")
    if not name:
        raise InputFormatError(
            f"{uri} names no model with ranking metrics. Rerun the compare stage with a model "
            "that ranks, for example MODELS=ranking,popularity."
        )
    return name


def user_index_of(features: feature_tables.MovieFeatures, userid: int) -> int:
    """Return the index of ``userid``; raise InputFormatError when train has no such user."""
    position = int(np.searchsorted(features.userids, userid))
    if position < features.num_users and features.userids[position] == userid:
        return position
    raise InputFormatError(
        f"User id {userid} has no ratings in the train table, so there is nothing to base "
        f"recommendations on. Choose a user id from the train table (its user ids run from "
        f"{features.userids.min()} to {features.userids.max()}, {features.num_users} users)."
    )


def recommend_movies(
    model: FactorModel, user_index: int, rated: np.ndarray, top_n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return the movie indices and scores of the ``top_n`` best movies not in ``rated``."""
    scores = model.score_matrix(np.array([user_index]))[0]
    movies = ranking.top_k(scores, rated, top_n)
    return movies, scores[movies]


def format_recommendations(rows: Sequence[dict[str, object]]) -> str:
    """Render rank, title, genres, score and IMDb link as a fixed-width text table."""
    headers = ("rank", "title", "genres", "score", "IMDb")
    cells = [
        (
            str(row["rank"]),
            str(row["title"]),
            str(row["genres"]),
            f"{row['score']:.3f}",
            str(row["imdb"]),
        )
        for row in rows
    ]
    widths = [
        max([len(header)] + [len(cell[i]) for cell in cells]) for i, header in enumerate(headers)
    ]
    lines = ["  ".join(header.ljust(width) for header, width in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    for cell in cells:
        lines.append(
            "  ".join(value.ljust(width) for value, width in zip(cell, widths, strict=True))
        )
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _rated_in_train(config: Config, num_users: int) -> ranking.RatedMovies:
    fit = feature_tables.load_ratings(config, feature_tables.FIT_TABLE)
    validation = feature_tables.load_ratings(config, feature_tables.VALIDATION_TABLE)
    train = fit.concat(validation)
    return ranking.group_by_user(train.user_index, train.movie_index, num_users)


def recommend_user(config: Config, userid: int) -> str:
    """Return the printed table of the top ``config.top_n`` movies for ``userid``."""
    name = best_model_name(config)
    model = baselines.load_factor_model(baselines.model_file(model_folder(config), name))
    features = feature_tables.load_movie_features(config)
    user = user_index_of(features, userid)
    rated = _rated_in_train(config, features.num_users).of(user)
    movies, scores = recommend_movies(model, user, rated, config.top_n)

    catalog = feature_tables.load_movie_catalog(config)
    details = {
        movieid: (title, genres, imdbid)
        for movieid, title, genres, imdbid in zip(
            catalog.column(MOVIEID).to_pylist(),
            catalog.column(TITLE).to_pylist(),
            catalog.column(GENRES).to_pylist(),
            catalog.column(IMDBID).to_pylist(),
            strict=True,
        )
    }
    rows = []
    for rank, (movie, score) in enumerate(zip(movies, scores, strict=True), start=1):
        title, genres, imdbid = details[int(features.movieids[movie])]
        rows.append(
            {
                "rank": rank,
                "title": title,
                "genres": genres,
                "score": float(score),
                "imdb": imdb_url(imdbid),
            }
        )
    cutoff = storage.read_json(comparison_uri(config))["ranking"]["k"]
    header = (
        f"Top {len(rows)} movies for user {userid} that the user did not rate in train, "
        f"from the {name} model (best nDCG@{cutoff} in comparison.json; "
        f"scores are that model's, not necessarily stars):\n"
    )
    return header + format_recommendations(rows)


def recommendation_batches(
    model: FactorModel,
    features: feature_tables.MovieFeatures,
    rated: ranking.RatedMovies,
    top_n: int,
) -> Iterator[pa.RecordBatch]:
    """Yield the top-N rows of every user in train, BATCH_USERS users per record batch."""
    for start in range(0, features.num_users, BATCH_USERS):
        users = np.arange(start, min(start + BATCH_USERS, features.num_users))
        scores = model.score_matrix(users)
        columns: dict[str, list] = {USERID: [], RANK: [], MOVIEID: [], SCORE: []}
        for row, user in enumerate(users):
            movies = ranking.top_k(scores[row], rated.of(int(user)), top_n)
            columns[USERID].extend([int(features.userids[user])] * movies.size)
            columns[RANK].extend(range(1, movies.size + 1))
            columns[MOVIEID].extend(features.movieids[movies].tolist())
            columns[SCORE].extend(scores[row, movies].tolist())
        yield pa.RecordBatch.from_pydict(columns, schema=RECOMMENDATION_SCHEMA)


def write_recommendations(config: Config) -> dict[str, int | str]:
    """Write the ``recommendations`` table with pyarrow as a new version, then publish it.

    Readers keep the previous version until the new one has its ``_SUCCESS`` marker.
    """
    name = best_model_name(config)
    model = baselines.load_factor_model(baselines.model_file(model_folder(config), name))
    features = feature_tables.load_movie_features(config)
    rated = _rated_in_train(config, features.num_users)

    uri = storage.table_uri(config.warehouse, config.dataset, RECOMMENDATIONS_TABLE)
    version = storage.new_version(uri)
    fs, path = storage.filesystem(version)
    fs.create_dir(path, recursive=True)
    rows = 0
    part = f"{path}/part-00000.parquet"
    with (
        fs.open_output_stream(part) as stream,
        pq.ParquetWriter(stream, RECOMMENDATION_SCHEMA) as writer,
    ):
        for batch in recommendation_batches(model, features, rated, config.top_n):
            writer.write_batch(batch)
            rows += batch.num_rows
    storage.write_bytes(f"{version}/{storage.SUCCESS_MARKER}", b"")
    storage.publish_version(uri, version)
    logger.info("Wrote %d recommendations from the %s model to %s", rows, name, uri)
    return {"rows_out": rows, "users": features.num_users, "model": name, "table": uri}


def build_recommend_parser() -> argparse.ArgumentParser:
    """Build the parser of the shared options plus --user-id and --all-users."""
    parser = build_parser("Print or write top-N movie recommendations from the best model.")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--user-id", type=int, help="MovieLens userId to print recommendations for")
    target.add_argument(
        "--all-users",
        action="store_true",
        help="write the top-N of every user in train to the recommendations table",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the recommend stage from the command line (``python -m lenspark.recommend``)."""
    configure_logging()
    args = build_recommend_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        if args.all_users:
            with timed(logger, "recommend", config.dataset):
                write_recommendations(config)
        else:
            sys.stdout.write(recommend_user(config, args.user_id))
    except LensparkError as error:
        logger.error("recommend failed: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
