"""The ingest, merge and prepare stages written in DuckDB, for the Spark-against-DuckDB benchmark.

``python bench/duckdb_etl.py --source data/ml-20m-synthetic --out build/bench/duckdb`` reads
the four MovieLens CSV files and writes, as snappy Parquet files in ``--out``, the tables the
Spark stages write: ratings, movies, tags, links, ingest_rejects, merged, merge_rejects,
genre_index, train and test. It prints the row counts as JSON.

The rules follow ``lenspark.ingest``, ``lenspark.merge`` and ``lenspark.prepare``:

- CSV files read with explicit column types and RFC 4180 quotes. A line whose fields do not
  parse is rejected as malformed, with its text (DuckDB's ``store_rejects`` tables);
- the same row checks in the same order (missing value, id not positive, rating outside
  0.5..5.0 or not a multiple of 0.5), and of rows repeating a unique key the first by the
  table's ordering columns kept;
- ratings inner-joined to movies and links, left-joined to the sorted tags of that user and
  movie, with an empty array for a rating without tags;
- the label floor(rating + 0.5), and the split bucket int(md5("userId:movieId:seed")[:8], 16)
  % 100, with train below ``train_percent``;
- a genre index fitted on train by count with ties in alphabetical order, and one extra index
  shared by every genre string absent from train.

NOTE: the rejects tables keep the same rows and reasons as Spark's, but a malformed line's
``record`` text can differ, because Spark and DuckDB split a broken line differently.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.dataset as pads

from lenspark import columns

logger = logging.getLogger(__name__)

TABLES = ("ratings", "movies", "tags", "links")

# Column names and DuckDB types of each CSV file, in header order (lenspark.schemas).
CSV_COLUMNS: dict[str, dict[str, str]] = {
    "ratings": {
        "userId": "INTEGER",
        "movieId": "INTEGER",
        "rating": "DOUBLE",
        "timestamp": "BIGINT",
    },
    "movies": {"movieId": "INTEGER", "title": "VARCHAR", "genres": "VARCHAR"},
    "tags": {"userId": "INTEGER", "movieId": "INTEGER", "tag": "VARCHAR", "timestamp": "BIGINT"},
    "links": {"movieId": "INTEGER", "imdbId": "VARCHAR", "tmdbId": "INTEGER"},
}
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "ratings": ("userId", "movieId", "rating", "timestamp"),
    "movies": ("movieId", "title", "genres"),
    "tags": ("userId", "movieId", "tag", "timestamp"),
    "links": ("movieId", "imdbId"),
}
POSITIVE_COLUMNS = ("userId", "movieId", "tmdbId")
UNIQUE_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ratings": (("userId", "movieId"), ("timestamp", "rating")),
    "movies": (("movieId",), ("title",)),
    "links": (("movieId",), ("imdbId",)),
}
MALFORMED_REASON = (
    "malformed line: a field does not parse or the line has too few or too many fields"
)
PREPARED_COLUMNS = (*columns.PREPARED_COLUMNS, columns.SPLIT_BUCKET)
PARQUET_OPTIONS = "(FORMAT parquet, COMPRESSION snappy)"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def reason_expression(table: str) -> str:
    """Return SQL giving the first row check that a row of ``table`` breaks, or NULL."""
    checks = [(f"{_quote(name)} IS NULL", f"missing {name}") for name in REQUIRED_COLUMNS[table]]
    checks += [
        (f"{_quote(name)} <= 0", f"{name} not a positive integer")
        for name in POSITIVE_COLUMNS
        if name in CSV_COLUMNS[table]
    ]
    if table == "ratings":
        checks.append(("rating < 0.5 OR rating > 5.0", "rating outside 0.5..5.0"))
        checks.append(("rating * 2 <> floor(rating * 2)", "rating not a multiple of 0.5"))
    branches = " ".join(f"WHEN {condition} THEN {_literal(text)}" for condition, text in checks)
    return f"CASE {branches} END"


def classify_sql(table: str, source: str) -> str:
    """Return SQL that reads one CSV file and adds ``reject_reason`` to every parsed row."""
    columns = ", ".join(
        f"{_literal(name)}: {_literal(kind)}" for name, kind in CSV_COLUMNS[table].items()
    )
    read = (
        f"read_csv({_literal(source)}, header = true, auto_detect = false, "
        f"columns = {{{columns}}}, delim = ',', quote = '\"', escape = '\"', "
        f"store_rejects = true, rejects_table = {_literal(table + '_reject_errors')}, "
        f"rejects_scan = {_literal(table + '_reject_scans')})"
    )
    reason = reason_expression(table)
    if table not in UNIQUE_KEYS:
        return f"SELECT *, {reason} AS reject_reason FROM {read}"
    keys, order = UNIQUE_KEYS[table]
    partition = ", ".join(_quote(name) for name in keys)
    ordering = ", ".join(["_reason IS NOT NULL", *(_quote(name) for name in order)])
    repeat = _literal(f"repeated {', '.join(keys)}")
    return f"""
        SELECT * EXCLUDE (_reason),
            CASE WHEN _reason IS NULL
                      AND row_number() OVER (PARTITION BY {partition} ORDER BY {ordering}) > 1
                 THEN {repeat} ELSE _reason END AS reject_reason
        FROM (SELECT *, {reason} AS _reason FROM {read})
    """


def copy_to_parquet(connection: duckdb.DuckDBPyConnection, query: str, path: Path) -> None:
    """Write the rows of ``query`` to one snappy Parquet file at ``path``."""
    connection.execute(f"COPY ({query}) TO {_literal(str(path))} {PARQUET_OPTIONS}")


def count(connection: duckdb.DuckDBPyConnection, query: str) -> int:
    """Return the single integer that ``query`` selects."""
    return int(connection.execute(query).fetchone()[0])


def ingest(connection: duckdb.DuckDBPyConnection, source: Path, out: Path) -> dict:
    """Write the four checked tables and ingest_rejects and return the counts per file."""
    counts = {}
    connection.execute(
        "CREATE TEMP TABLE ingest_rejects (file VARCHAR, record VARCHAR, reason VARCHAR)"
    )
    for table in TABLES:
        connection.execute(
            f"CREATE TEMP TABLE {table}_classified AS "
            f"{classify_sql(table, str(source / f'{table}.csv'))}"
        )
        names = list(CSV_COLUMNS[table])
        column_list = ", ".join(_quote(name) for name in names)
        malformed = count(connection, f"SELECT count(DISTINCT line) FROM {table}_reject_errors")
        reasons = dict(
            connection.execute(
                f"SELECT reject_reason, count(*) FROM {table}_classified "
                "WHERE reject_reason IS NOT NULL GROUP BY ALL"
            ).fetchall()
        )
        if malformed:
            reasons[MALFORMED_REASON] = malformed
        valid = count(
            connection, f"SELECT count(*) FROM {table}_classified WHERE reject_reason IS NULL"
        )
        rejected = sum(reasons.values())
        counts[table] = {
            "rows_in": valid + rejected,
            "rows_rejected": rejected,
            "rows_out": valid,
            "reasons": reasons,
        }
        copy_to_parquet(
            connection,
            f"SELECT {column_list} FROM {table}_classified WHERE reject_reason IS NULL",
            out / f"{table}.parquet",
        )
        record = " || ',' || ".join(f"coalesce(CAST({_quote(n)} AS VARCHAR), '')" for n in names)
        connection.execute(
            f"INSERT INTO ingest_rejects SELECT '{table}.csv', {record}, reject_reason "
            f"FROM {table}_classified WHERE reject_reason IS NOT NULL"
        )
        connection.execute(
            f"INSERT INTO ingest_rejects SELECT DISTINCT '{table}.csv', csv_line, "
            f"{_literal(MALFORMED_REASON)} FROM {table}_reject_errors"
        )
        connection.execute(f"DROP TABLE {table}_classified")
    copy_to_parquet(connection, "SELECT * FROM ingest_rejects", out / "ingest_rejects.parquet")
    connection.execute("DROP TABLE ingest_rejects")
    return counts


def merge(connection: duckdb.DuckDBPyConnection, out: Path) -> dict:
    """Write the merged and merge_rejects tables from the ingested ones and return the counts."""

    def table(name: str) -> str:
        return f"read_parquet({_literal(str(out / f'{name}.parquet'))})"

    merged_query = f"""
        WITH tag_lists AS (
            SELECT userId, movieId, list_sort(list(tag) FILTER (WHERE tag IS NOT NULL)) AS tags
            FROM {table("tags")} GROUP BY userId, movieId
        )
        SELECT r.userId, r.movieId, r.rating, m.title, m.genres, l.imdbId, l.tmdbId,
               r.timestamp, coalesce(t.tags, CAST([] AS VARCHAR[])) AS tags
        FROM {table("ratings")} r
        JOIN {table("movies")} m ON r.movieId = m.movieId
        JOIN {table("links")} l ON r.movieId = l.movieId
        LEFT JOIN tag_lists t ON r.userId = t.userId AND r.movieId = t.movieId
    """
    copy_to_parquet(connection, merged_query, out / "merged.parquet")

    record = "concat_ws(',', r.userId, r.movieId, r.rating, r.timestamp)"
    rejects_query = f"""
        SELECT 'ratings.csv' AS file, {record} AS record,
               'movieId absent from movies.csv' AS reason
        FROM {table("ratings")} r ANTI JOIN {table("movies")} m ON r.movieId = m.movieId
        UNION ALL
        SELECT 'ratings.csv', {record}, 'movieId absent from links.csv'
        FROM {table("ratings")} r SEMI JOIN {table("movies")} m ON r.movieId = m.movieId
        ANTI JOIN {table("links")} l ON r.movieId = l.movieId
    """
    copy_to_parquet(connection, rejects_query, out / "merge_rejects.parquet")

    ratings_in = count(connection, f"SELECT count(*) FROM {table('ratings')}")
    merged_rows = count(connection, f"SELECT count(*) FROM {table('merged')}")
    reasons = dict(
        connection.execute(
            f"SELECT reason, count(*) FROM {table('merge_rejects')} GROUP BY ALL"
        ).fetchall()
    )
    plain_left_join_rows = count(
        connection,
        f"""
        SELECT count(*) FROM (
            SELECT r.userId, r.movieId FROM {table("ratings")} r
            SEMI JOIN {table("movies")} m ON r.movieId = m.movieId
            SEMI JOIN {table("links")} l ON r.movieId = l.movieId
        ) j LEFT JOIN {table("tags")} t ON j.userId = t.userId AND j.movieId = t.movieId
        """,
    )
    orphan_tags = count(
        connection,
        f"SELECT count(*) FROM {table('tags')} t ANTI JOIN {table('ratings')} r "
        "ON t.userId = r.userId AND t.movieId = r.movieId",
    )
    return {
        "rows_in": ratings_in,
        "rows_out": merged_rows,
        "rows_rejected": sum(reasons.values()),
        "reasons": reasons,
        "plain_left_join_rows": plain_left_join_rows,
        "tags_without_rating": orphan_tags,
    }


def split_bucket_sql(seed: int) -> str:
    """Return SQL for the split bucket: the first 32 bits of md5("userId:movieId:seed") % 100."""
    text = f"CAST(userId AS VARCHAR) || ':' || CAST(movieId AS VARCHAR) || ':{int(seed)}'"
    return f"CAST(CAST('0x' || substr(md5({text}), 1, 8) AS BIGINT) % 100 AS INTEGER)"


def prepare(
    connection: duckdb.DuckDBPyConnection, out: Path, seed: int, train_percent: int
) -> dict:
    """Label, split and genre-index the merged table into train, test and genre_index."""
    merged = f"read_parquet({_literal(str(out / 'merged.parquet'))})"
    connection.execute(
        f"""
        CREATE TEMP TABLE labelled AS
        SELECT userId AS userid, movieId AS movieid, rating,
               CAST(floor(rating + 0.5) AS INTEGER) AS label, timestamp, title, genres,
               imdbId AS imdbid, tmdbId AS tmdbid, tags, {split_bucket_sql(seed)} AS split_bucket
        FROM {merged}
        """
    )
    in_train = f"split_bucket < {int(train_percent)}"
    copy_to_parquet(
        connection,
        f"""
        SELECT genres, CAST(row_number() OVER (ORDER BY "count" DESC, genres ASC) - 1 AS INTEGER)
                   AS genre_index, "count"
        FROM (SELECT genres, count(*) AS "count" FROM labelled WHERE {in_train} GROUP BY genres)
        """,
        out / "genre_index.parquet",
    )
    genre_index = f"read_parquet({_literal(str(out / 'genre_index.parquet'))})"
    known = count(connection, f"SELECT count(*) FROM {genre_index}")
    columns = ", ".join(
        f"CAST(coalesce(g.genre_index, {known}) AS INTEGER) AS genre_index"
        if name == "genre_index"
        else f"l.{name}"
        for name in PREPARED_COLUMNS
    )
    counts = {"rows_in": count(connection, "SELECT count(*) FROM labelled"), "genre_strings": known}
    for name, condition in (("train", in_train), ("test", f"NOT ({in_train})")):
        copy_to_parquet(
            connection,
            f"SELECT {columns} FROM labelled l LEFT JOIN {genre_index} g ON l.genres = g.genres "
            f"WHERE {condition}",
            out / f"{name}.parquet",
        )
        written = f"read_parquet({_literal(str(out / f'{name}.parquet'))})"
        counts[f"{name}_rows"] = count(connection, f"SELECT count(*) FROM {written}")
    counts["test_rows_with_unseen_genres"] = count(
        connection,
        f"SELECT count(*) FROM read_parquet({_literal(str(out / 'test.parquet'))}) "
        f"WHERE genre_index = {known}",
    )
    connection.execute("DROP TABLE labelled")
    return counts


def run(
    source: Path,
    out: Path,
    seed: int = 1234,
    train_percent: int = 80,
    memory_limit: str = "6GB",
    threads: int | None = None,
) -> dict:
    """Run ingest, merge and prepare in one DuckDB connection; return counts and seconds."""
    out.mkdir(parents=True, exist_ok=True)
    connection = duckdb.connect()
    connection.execute(f"SET memory_limit = {_literal(memory_limit)}")
    connection.execute(f"SET temp_directory = {_literal(str(out / '_spill'))}")
    if threads:
        connection.execute(f"SET threads = {int(threads)}")
    result: dict = {"seconds": {}}
    for stage, step in (
        ("ingest", lambda: ingest(connection, source, out)),
        ("merge", lambda: merge(connection, out)),
        ("prepare", lambda: prepare(connection, out, seed, train_percent)),
    ):
        started = time.perf_counter()
        result[stage] = step()
        result["seconds"][stage] = round(time.perf_counter() - started, 3)
        logger.info("duckdb %s finished in %.1f s", stage, result["seconds"][stage])
    connection.close()
    return result


def key_checksum(dataset: pads.Dataset) -> dict:
    """Return the row count and an order-independent checksum of the (userid, movieid) keys.

    Each key is packed into 64 bits, mixed with the splitmix64 finalizer and summed modulo
    2**64, so the checksum does not depend on row order, file count or engine.
    """
    total = 0
    rows = 0
    for batch in dataset.to_batches(columns=["userid", "movieid"], batch_size=1 << 20):
        users = batch.column("userid").to_numpy().astype(np.uint64)
        movies = batch.column("movieid").to_numpy().astype(np.uint64)
        mixed = (users << np.uint64(32)) | movies
        mixed ^= mixed >> np.uint64(30)
        mixed *= np.uint64(0xBF58476D1CE4E5B9)
        mixed ^= mixed >> np.uint64(27)
        mixed *= np.uint64(0x94D049BB133111EB)
        mixed ^= mixed >> np.uint64(31)
        total = (total + int(mixed.sum(dtype=np.uint64))) % (1 << 64)
        rows += batch.num_rows
    return {"rows": rows, "checksum": f"{total:016x}"}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the DuckDB ETL from the command line and print its counts as JSON."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--source", required=True, help="folder with the four CSV files")
    parser.add_argument("--out", required=True, help="folder for the Parquet files")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the md5 split")
    parser.add_argument("--train-percent", type=int, default=80, help="train share, in percent")
    parser.add_argument("--memory-limit", default="6GB", help="DuckDB's memory_limit setting")
    parser.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: cores)")
    parser.add_argument("--result", default=None, help="also write the JSON to this file")
    args = parser.parse_args(argv)
    result = run(
        Path(args.source),
        Path(args.out),
        args.seed,
        args.train_percent,
        args.memory_limit,
        args.threads,
    )
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if args.result:
        Path(args.result).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
