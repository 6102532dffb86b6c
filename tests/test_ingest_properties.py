"""Property test of the ingest classification: random ratings.csv lines, every row accounted for.

Spark's CSV reader (pyspark 4.3) skips a line whose characters are all at most U+0020,
the ones Java's String.trim removes: empty lines, spaces, tabs, NUL and other control
characters. A line of U+00A0 is kept and rejected as malformed. Skipped lines carry no
fields, so they are not rows, and rows_in counts the other data lines. Lines end at
"\\n" or "\\r" (Hadoop's line reader splits on both), so the generated lines
contain neither. Without the multiLine option a quote never joins two lines.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lenspark import ingest
from lenspark.errors import DataQualityError
from test_ingest import HEADERS

# Small id ranges, so that repeated (userId, movieId) pairs are common.
ids = st.integers(min_value=1, max_value=4).map(str)
timestamps = st.integers(min_value=0, max_value=2_000_000_000).map(str)
on_grid_ratings = st.integers(min_value=1, max_value=10).map(lambda halves: str(halves / 2))
bad_ratings = st.sampled_from(
    ["7.0", "3.3", "0.0", "-1", "5.5", "0.25", "NaN", "Infinity", "1e400", "4,5", "four"]
)
# Any text without line terminators or surrogates: commas, quotes, spaces, control
# characters and letters beyond ASCII.
free_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    max_size=8,
)
bad_fields = st.one_of(
    st.just(""),
    st.sampled_from(["x", "1.5", "-", "\uff19", "99999999999", " 1", '"', '""', "\x00", "é"]),
    free_text,
)


def quoted(field: str) -> str:
    """Quote ``field`` as RFC 4180 does, doubling its quotes."""
    return '"' + field.replace('"', '""') + '"'


valid_fields = st.tuples(ids, ids, on_grid_ratings, timestamps).map(list)
invalid_fields = st.lists(st.one_of(ids, timestamps, on_grid_ratings, bad_fields), max_size=6)
off_range_fields = st.tuples(ids, ids, bad_ratings, timestamps).map(list)


@st.composite
def ratings_lines(draw) -> str:
    """Draw one ratings.csv line: valid, out of range, or with bad fields, some quoted."""
    fields = draw(st.one_of(valid_fields, valid_fields, off_range_fields, invalid_fields))
    if fields and draw(st.booleans()):
        position = draw(st.integers(min_value=0, max_value=len(fields) - 1))
        fields[position] = quoted(fields[position])
    return ",".join(fields)


# Blank lines, the header again, an unclosed quote, a trailing comma, empty fields and
# a byte order mark.
special_lines = st.sampled_from(
    [
        "",
        "   ",
        "\t",
        "\x00",
        HEADERS["ratings"],
        '1,"2,3.0,4',
        "1,2,3.0,4,",
        ",,,",
        "\ufeff1,1,1.0,1",
    ]
)
files = st.lists(st.one_of(ratings_lines(), ratings_lines(), special_lines), max_size=25)


def is_blank(line: str) -> bool:
    """Return whether Spark's CSV reader skips ``line``: all its characters are <= U+0020."""
    return all(character <= " " for character in line)


def classify(spark, lines: list[str]) -> tuple[list, list, list]:
    """Write ``lines`` under the ratings header and classify them as the ingest stage does.

    Returns the classified rows, the valid rows and the (file, record, reason) rejects.
    """
    with tempfile.TemporaryDirectory(prefix="lenspark-properties-") as folder:
        path = Path(folder) / "ratings.csv"
        path.write_bytes("\n".join([HEADERS["ratings"], *lines]).encode("utf-8") + b"\n")
        classified = ingest.classify_rows(ingest.read_csv(spark, str(path), "ratings"), "ratings")
        classified = classified.cache()
        try:
            everything = classified.collect()
            valid = ingest.valid_rows(classified, "ratings").collect()
            rejects = ingest.rejected_rows(classified, "ratings.csv", "ratings").collect()
        finally:
            classified.unpersist()
    return everything, valid, rejects


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(lines=files)
def test_every_line_accounted_for(spark, lines):
    everything, valid, rejects = classify(spark, lines)

    data_lines = [line for line in lines if not is_blank(line)]
    assert len(everything) == len(data_lines)
    assert len(everything) == len(valid) + len(rejects)

    for row in rejects:
        assert row["file"] == "ratings.csv"
        assert row["reason"]
        assert row["record"]
        if row["reason"].startswith("malformed line"):
            # Spark keeps a malformed line's text as it was written.
            assert row["record"] in data_lines

    pairs = [(row["userId"], row["movieId"]) for row in valid]
    assert len(pairs) == len(set(pairs))
    for row in valid:
        assert row["userId"] is not None
        assert row["movieId"] is not None
        assert row["timestamp"] is not None
        assert 0.5 <= row["rating"] <= 5.0
        assert row["rating"] * 2 == int(row["rating"] * 2)

    if rejects:
        reasons: dict[str, int] = {}
        for row in rejects:
            reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
        counts = {"rows_in": len(everything), "rows_rejected": len(rejects), "reasons": reasons}
        with pytest.raises(DataQualityError) as raised:
            ingest.check_reject_rate("ratings.csv", counts, 0.0, "rejects-location")
        message = str(raised.value)
        assert f"{len(rejects)} of {len(everything)} rows" in message
        assert max(reasons, key=reasons.get) in message
