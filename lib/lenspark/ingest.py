"""Ingest stage: the four MovieLens CSV files into typed Parquet tables.

Every input row is accounted for: it lands in its table or, with the reason,
in the ``ingest_rejects`` table.
"""

from __future__ import annotations

import logging

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from lenspark import columns as c
from lenspark import schemas, sources, storage, tables
from lenspark.config import Config
from lenspark.errors import DataQualityError, InputFormatError

logger = logging.getLogger(__name__)

TABLES = ("ratings", "movies", "tags", "links")
REJECTS_TABLE = "ingest_rejects"
REJECT_REASON = "reject_reason"
REJECT_COLUMNS = ("file", "record", "reason")

# Columns that must hold a value; tmdbId is the only optional one.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "ratings": (c.USER_ID, c.MOVIE_ID, c.RATING, c.TIMESTAMP),
    "movies": (c.MOVIE_ID, c.TITLE, c.GENRES),
    "tags": (c.USER_ID, c.MOVIE_ID, c.TAG, c.TIMESTAMP),
    "links": (c.MOVIE_ID, c.IMDB_ID),
}

# Keys that identify a row; of repeated rows the first in the given order is kept.
UNIQUE_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ratings": ((c.USER_ID, c.MOVIE_ID), (c.TIMESTAMP, c.RATING)),
    "movies": ((c.MOVIE_ID,), (c.TITLE,)),
    "links": ((c.MOVIE_ID,), (c.IMDB_ID,)),
}

# Files that may hold a header and no rows.
MAY_BE_EMPTY = ("tags",)


def check_header(uri: str, table: str) -> None:
    """Raise InputFormatError unless the file at ``uri`` starts with the expected header.

    Spark ignores the header's names when it is given a schema, so a file with
    columns in another order would be read wrongly without this check.
    """
    expected = c.CSV_HEADERS[table]
    if not storage.exists(uri):
        raise InputFormatError(
            f"{uri} was not found. A MovieLens CSV release has ratings.csv, movies.csv, "
            "tags.csv and links.csv in one folder: point MOVIELENS_DIR at that folder."
        )
    fs, path = storage.filesystem(uri)
    with fs.open_input_stream(path) as stream:
        first_line = stream.read(4096).decode("utf-8", errors="replace").split("\n", 1)[0]
    first_line = first_line.lstrip("\ufeff").rstrip("\r")
    if not first_line:
        raise InputFormatError(f"{uri} is empty; expected the header {','.join(expected)}.")
    actual = tuple(name.strip() for name in first_line.split(","))
    if actual != expected:
        raise InputFormatError(
            f"{uri} has the header {','.join(actual)!r}, expected {','.join(expected)!r}. "
            "Use the CSV files of a MovieLens release as published, with their header line."
        )


def read_csv(spark: SparkSession, uri: str, table: str) -> DataFrame:
    """Read one MovieLens CSV file with its explicit schema, keeping malformed lines' text.

    Fields follow RFC 4180 quoting: a quote inside a quoted field is doubled, so the
    escape character is the quote itself, not Spark's default backslash.
    """
    return spark.read.csv(
        storage.spark_uri(uri),
        schema=schemas.with_corrupt_record(schemas.CSV_SCHEMAS[table]),
        header=True,
        quote='"',
        escape='"',
        encoding="UTF-8",
        mode="PERMISSIVE",
        columnNameOfCorruptRecord=schemas.CORRUPT_RECORD,
        enforceSchema=True,
    )


def _first_reason(checks: list[tuple[Column, str]]) -> Column:
    reason = F.lit(None).cast("string")
    for condition, text in reversed(checks):
        reason = F.when(condition, F.lit(text)).otherwise(reason)
    return reason


def _row_checks(table: str) -> list[tuple[Column, str]]:
    checks: list[tuple[Column, str]] = [
        (
            F.col(schemas.CORRUPT_RECORD).isNotNull(),
            "malformed line: a field does not parse or the line has too few or too many fields",
        ),
    ]
    checks += [(F.col(name).isNull(), f"missing {name}") for name in REQUIRED_COLUMNS[table]]
    # MovieLens ids start at 1; Spark's integer parser accepts a sign.
    checks += [
        (F.col(name) <= 0, f"{name} not a positive integer")
        for name in (c.USER_ID, c.MOVIE_ID, c.TMDB_ID)
        if name in schemas.CSV_SCHEMAS[table].fieldNames()
    ]
    if table == "ratings":
        rating = F.col(c.RATING)
        checks.append(((rating < 0.5) | (rating > 5.0), "rating outside 0.5..5.0"))
        checks.append(((rating * 2) != F.floor(rating * 2), "rating not a multiple of 0.5"))
    return checks


def classify_rows(df: DataFrame, table: str) -> DataFrame:
    """Add ``reject_reason``: null for a valid row, else the first rule the row breaks.

    A row that repeats the unique key of an earlier valid row is rejected as a
    repeat. The row kept is the first by the table's ordering columns.
    """
    classified = df.withColumn(REJECT_REASON, _first_reason(_row_checks(table)))
    if table not in UNIQUE_KEYS:
        return classified
    keys, order = UNIQUE_KEYS[table]
    # Invalid rows sort last, so they never take a valid row's place as the first.
    window = Window.partitionBy(*keys).orderBy(
        F.col(REJECT_REASON).isNotNull(), *[F.col(name) for name in order]
    )
    repeat_reason = f"repeated {', '.join(keys)}"
    return (
        classified.withColumn("_position", F.row_number().over(window))
        .withColumn(
            REJECT_REASON,
            F.when(
                F.col(REJECT_REASON).isNull() & (F.col("_position") > 1), F.lit(repeat_reason)
            ).otherwise(F.col(REJECT_REASON)),
        )
        .drop("_position")
    )


def valid_rows(classified: DataFrame, table: str) -> DataFrame:
    """Keep the rows without a reject reason, in the file's schema."""
    names = schemas.CSV_SCHEMAS[table].fieldNames()
    return classified.filter(F.col(REJECT_REASON).isNull()).select(*names)


def rejected_rows(classified: DataFrame, file_name: str, table: str) -> DataFrame:
    """Return the rejected rows as (file, record, reason), with the raw text where Spark kept it."""
    names = schemas.CSV_SCHEMAS[table].fieldNames()
    rebuilt = F.concat_ws(",", *[F.coalesce(F.col(n).cast("string"), F.lit("")) for n in names])
    return classified.filter(F.col(REJECT_REASON).isNotNull()).select(
        F.lit(file_name).alias("file"),
        F.coalesce(F.col(schemas.CORRUPT_RECORD), rebuilt).alias("record"),
        F.col(REJECT_REASON).alias("reason"),
    )


def check_reject_rate(file_name: str, counts: dict, max_rate: float, rejects_uri: str) -> None:
    """Raise DataQualityError when the share of rejected rows exceeds ``max_rate``."""
    rows_in = counts["rows_in"]
    rejected = counts["rows_rejected"]
    if rows_in == 0 or rejected / rows_in <= max_rate:
        return
    reasons = sorted(counts["reasons"].items(), key=lambda item: -item[1])[:3]
    listed = "; ".join(f"{reason}: {n} rows" for reason, n in reasons)
    raise DataQualityError(
        f"{file_name}: {rejected} of {rows_in} rows ({rejected / rows_in:.2%}) are invalid, above "
        f"MAX_REJECT_RATE={max_rate}. Most frequent reasons: {listed}. The rows are in "
        f"{rejects_uri}. Fix the input, or raise MAX_REJECT_RATE to accept them."
    )


def run(spark: SparkSession, config: Config, source: str | None = None) -> dict:
    """Ingest the four CSV files of ``config.dataset`` and return the row counts per file.

    ``source`` is the folder or URI with the CSV files; by default it is found
    with ``sources.locate_dataset``.
    """
    if source is None:
        source = sources.locate_dataset(config)
    source = source.rstrip("/")
    for table in TABLES:
        check_header(f"{source}/{table}.csv", table)

    classified: dict[str, DataFrame] = {}
    counts: dict[str, dict] = {}
    for table in TABLES:
        df = classify_rows(read_csv(spark, f"{source}/{table}.csv", table), table)
        # Spark only lets the corrupt-record column be queried on persisted data, and
        # the rows are read once for the counts and once per output.
        classified[table] = df.persist(StorageLevel.DISK_ONLY)
        reasons = {
            row["reason"]: row["count"]
            for row in classified[table]
            .groupBy(F.col(REJECT_REASON).alias("reason"))
            .count()
            .collect()
        }
        valid = reasons.pop(None, 0)
        counts[table] = {
            "rows_in": valid + sum(reasons.values()),
            "rows_rejected": sum(reasons.values()),
            "reasons": reasons,
        }
        logger.info(
            "%s.csv: %d rows read, %d rejected",
            table,
            counts[table]["rows_in"],
            counts[table]["rows_rejected"],
        )

    rejects = None
    for table in TABLES:
        part = rejected_rows(classified[table], f"{table}.csv", table)
        rejects = part if rejects is None else rejects.unionByName(part)
    rejects_uri = tables.write_table(rejects, config, REJECTS_TABLE, files=1)

    for table in TABLES:
        check_reject_rate(
            f"{source}/{table}.csv", counts[table], config.max_reject_rate, rejects_uri
        )
        if (
            counts[table]["rows_in"] - counts[table]["rows_rejected"] == 0
            and table not in MAY_BE_EMPTY
        ):
            raise InputFormatError(
                f"{source}/{table}.csv has no valid rows; a MovieLens release has at least one."
            )

    outputs = {"rejects": rejects_uri}
    for table in TABLES:
        uri = tables.write_table(valid_rows(classified[table], table), config, table)
        rows_out = tables.count_rows(spark, config, table, producer="ingest")
        table_counts = counts[table]
        table_counts["rows_out"] = rows_out
        if rows_out + table_counts["rows_rejected"] != table_counts["rows_in"]:
            raise RuntimeError(
                f"{table}: {rows_out} rows written and {table_counts['rows_rejected']} rejected "
                f"do not add up to the {table_counts['rows_in']} rows read"
            )
        outputs[table] = uri
        classified[table].unpersist()
        logger.info("%s: %d rows written to %s", table, rows_out, uri)
    counts["source"] = source
    return {"counts": counts, "outputs": outputs}
