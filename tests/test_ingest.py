"""Ingest: headers, quoting, types and the rejects of bad rows, on tiny CSV files."""

from __future__ import annotations

from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import types as T

from lenspark import ingest, schemas, storage
from lenspark.config import Config
from lenspark.errors import DataQualityError, InputFormatError

HEADERS = {
    "ratings": "userId,movieId,rating,timestamp",
    "movies": "movieId,title,genres",
    "tags": "userId,movieId,tag,timestamp",
    "links": "movieId,imdbId,tmdbId",
}


def write_csv(folder: Path, table: str, *lines: str, header: str | None = None) -> Path:
    path = folder / f"{table}.csv"
    path.write_text("\n".join([header or HEADERS[table], *lines]) + "\n", encoding="utf-8")
    return path


def write_dataset(folder: Path, ratings: tuple[str, ...] = ("1,1,4.0,100",)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(folder, "ratings", *ratings)
    write_csv(folder, "movies", "1,Toy Story (1995),Animation|Comedy", "2,Heat (1995),Action")
    write_csv(folder, "tags", "1,1,pixar,101")
    write_csv(folder, "links", "1,0114709,862", "2,0113277,949")
    return folder


def read_valid(spark, path: Path, table: str):
    classified = ingest.classify_rows(ingest.read_csv(spark, str(path), table), table)
    return ingest.valid_rows(classified.cache(), table)


def test_title_with_commas_and_doubled_quotes(spark, tmp_path):
    path = write_csv(
        tmp_path,
        "movies",
        '1,"American President, The (1995)",Comedy|Drama',
        '2,"""Great Performances"" Cats (1998)",Musical',
    )
    expected = spark.createDataFrame(
        [
            (1, "American President, The (1995)", "Comedy|Drama"),
            (2, '"Great Performances" Cats (1998)', "Musical"),
        ],
        schemas.MOVIES,
    )
    assert_df_equality(
        read_valid(spark, path, "movies"), expected, ignore_nullable=True, ignore_row_order=True
    )


def test_imdb_id_keeps_leading_zeros(spark, tmp_path):
    path = write_csv(tmp_path, "links", "1,0114709,862")
    row = read_valid(spark, path, "links").first()
    assert row["imdbId"] == "0114709"


def test_empty_tmdb_id_reads_as_null(spark, tmp_path):
    path = write_csv(tmp_path, "links", "1,0114709,", "2,0113497,8844")
    expected = spark.createDataFrame([(1, "0114709", None), (2, "0113497", 8844)], schemas.LINKS)
    assert_df_equality(
        read_valid(spark, path, "links"), expected, ignore_nullable=True, ignore_row_order=True
    )


def test_ratings_types(spark, tmp_path):
    path = write_csv(tmp_path, "ratings", "1,31,2.5,1260759144")
    df = read_valid(spark, path, "ratings")
    assert df.schema["userId"].dataType == T.IntegerType()
    assert df.schema["rating"].dataType == T.DoubleType()
    assert df.schema["timestamp"].dataType == T.LongType()
    assert df.first()["timestamp"] == 1260759144


def test_non_ascii_title_is_utf8(spark, tmp_path):
    path = write_csv(tmp_path, "movies", '1,"Cité des enfants perdus, La (1995)",Fantasy')
    assert (
        read_valid(spark, path, "movies").first()["title"] == "Cité des enfants perdus, La (1995)"
    )


def test_wrong_header_names_file_and_columns(tmp_path):
    path = write_csv(tmp_path, "ratings", "31,1,2.5,1", header="movieId,userId,rating,timestamp")
    with pytest.raises(InputFormatError) as raised:
        ingest.check_header(str(path), "ratings")
    message = str(raised.value)
    assert str(path) in message
    assert "movieId,userId,rating,timestamp" in message
    assert "userId,movieId,rating,timestamp" in message


def test_header_with_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("\ufeffuserId,movieId,rating,timestamp\r\n1,1,4.0,1\r\n", encoding="utf-8")
    ingest.check_header(str(path), "ratings")


def test_empty_file_is_rejected(tmp_path):
    path = tmp_path / "tags.csv"
    path.write_text("", encoding="utf-8")
    with pytest.raises(InputFormatError, match="is empty"):
        ingest.check_header(str(path), "tags")


def test_missing_file_names_path(tmp_path):
    with pytest.raises(InputFormatError, match=r"links\.csv was not found"):
        ingest.check_header(str(tmp_path / "links.csv"), "links")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("1,x,3.0,101", "malformed line"),
        ("1,3", "malformed line"),
        ("1,4,2.0,102,extra", "malformed line"),
        (",5,1.0,103", "missing userId"),
        ("1,6,9.0,104", "rating outside 0.5..5.0"),
        ("1,7,0.0,104", "rating outside 0.5..5.0"),
        ("1,8,3.3,104", "rating not a multiple of 0.5"),
        ("-1,9,3.0,104", "userId not a positive integer"),
        ("1,0,3.0,104", "movieId not a positive integer"),
    ],
)
def test_bad_rating_row_is_rejected_with_reason(spark, tmp_path, line, reason):
    path = write_csv(tmp_path, "ratings", "1,2,3.5,100", line)
    classified = ingest.classify_rows(
        ingest.read_csv(spark, str(path), "ratings"), "ratings"
    ).cache()
    rejects = ingest.rejected_rows(classified, "ratings.csv", "ratings").collect()
    assert len(rejects) == 1
    assert rejects[0]["reason"].startswith(reason)
    assert rejects[0]["file"] == "ratings.csv"
    assert ingest.valid_rows(classified, "ratings").count() == 1


def test_repeated_rating_keeps_earliest(spark, tmp_path):
    path = write_csv(tmp_path, "ratings", "1,2,3.5,200", "1,2,4.0,100", "1,3,1.0,100")
    classified = ingest.classify_rows(
        ingest.read_csv(spark, str(path), "ratings"), "ratings"
    ).cache()
    expected = spark.createDataFrame([(1, 2, 4.0, 100), (1, 3, 1.0, 100)], schemas.RATINGS)
    assert_df_equality(
        ingest.valid_rows(classified, "ratings"),
        expected,
        ignore_nullable=True,
        ignore_row_order=True,
    )
    rejects = ingest.rejected_rows(classified, "ratings.csv", "ratings").collect()
    assert [r["reason"] for r in rejects] == ["repeated userId, movieId"]
    assert rejects[0]["record"] == "1,2,3.5,200"


def test_run_accounts_for_every_row(spark, tmp_path):
    source = write_dataset(tmp_path / "csv", ratings=("1,1,4.0,100", "1,2,7.0,100", "2,1,bad,1"))
    config = Config(warehouse=str(tmp_path / "wh"), dataset="tiny", max_reject_rate=1.0)
    result = ingest.run(spark, config, source=str(source))
    ratings = result["counts"]["ratings"]
    assert ratings["rows_in"] == 3
    assert ratings["rows_out"] == 1
    assert ratings["rows_rejected"] == 2
    assert ratings["rows_in"] == ratings["rows_out"] + ratings["rows_rejected"]
    rejects = spark.read.parquet(storage.require_complete(result["outputs"]["rejects"], "ingest"))
    assert rejects.count() == 2
    assert storage.is_complete(storage.require_complete(result["outputs"]["ratings"], "ingest"))


def test_run_fails_above_max_reject_rate(spark, tmp_path):
    source = write_dataset(tmp_path / "csv", ratings=("1,1,4.0,100", "1,2,7.0,100"))
    config = Config(warehouse=str(tmp_path / "wh"), dataset="tiny", max_reject_rate=0.001)
    with pytest.raises(DataQualityError) as raised:
        ingest.run(spark, config, source=str(source))
    message = str(raised.value)
    assert "ratings.csv" in message
    assert "rating outside 0.5..5.0: 1 rows" in message
    assert "MAX_REJECT_RATE" in message
    # Nothing the next stage could read as complete was written.
    assert not (tmp_path / "wh" / "tiny" / "ratings").exists()
