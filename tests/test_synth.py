"""Tests of the synthetic MovieLens generator on a release of 20,000 ratings."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

from lenspark import synth
from lenspark.columns import CSV_HEADERS
from lenspark.errors import ConfigError

SMALL_SCALE = 20_000
SEED = 1234
FILES = ("ratings.csv", "movies.csv", "tags.csv", "links.csv")
RATING_LINE = re.compile(rb"^[1-9]\d*,[1-9]\d*,[0-5]\.[05],\d{9,10}$")


def read_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as stream:
        return list(csv.reader(stream))


def digest(folder: Path) -> dict[str, str]:
    return {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in FILES}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, synth.SynthesisResult]:
    out = tmp_path_factory.mktemp("synth") / "small-synthetic"
    result = synth.generate(out, dataset="small-synthetic", seed=SEED, ratings=SMALL_SCALE)
    return out, result


@pytest.fixture(scope="module")
def ratings(release: tuple[Path, synth.SynthesisResult]) -> np.ndarray:
    rows = read_rows(release[0] / "ratings.csv")[1:]
    return np.array([[float(value) for value in row] for row in rows])


def test_cardinalities_in_proportion(release):
    out, _ = release
    ratio = SMALL_SCALE / synth.ML20M_RATINGS
    ratings = read_rows(out / "ratings.csv")[1:]
    movies = read_rows(out / "movies.csv")[1:]
    links = read_rows(out / "links.csv")[1:]
    tags = read_rows(out / "tags.csv")[1:]
    assert len(ratings) == SMALL_SCALE
    assert len({row[0] for row in ratings}) == round(synth.ML20M_USERS * ratio)
    assert len(tags) == round(synth.ML20M_TAGS * ratio)
    assert len(movies) == max(synth.MIN_MOVIES, round(synth.ML20M_MOVIES * ratio))
    assert [row[0] for row in links] == [row[0] for row in movies]


def test_cardinalities_at_full_scale():
    counts = synth.cardinalities(synth.parse_scale("20M"))
    assert counts.ratings == 20_000_263
    assert counts.users == 138_493
    assert counts.movies == 27_278
    assert counts.tags == 465_564
    assert counts.max_movie_id == 131_262


def test_user_ids_consecutive_with_min_ratings(ratings):
    user_ids, per_user = np.unique(ratings[:, 0].astype(int), return_counts=True)
    assert user_ids[0] == 1
    assert np.array_equal(user_ids, np.arange(1, len(user_ids) + 1))
    assert per_user.min() >= synth.MIN_RATINGS_PER_USER


def test_pairs_unique_and_sorted(ratings):
    keys = ratings[:, 0].astype(np.int64) * 10**7 + ratings[:, 1].astype(np.int64)
    assert len(np.unique(keys)) == len(keys)
    assert np.all(np.diff(keys) > 0)


def test_rated_movies_exist(release, ratings):
    movie_ids = {int(row[0]) for row in read_rows(release[0] / "movies.csv")[1:]}
    assert set(ratings[:, 1].astype(int)) <= movie_ids


def test_rating_distribution(ratings):
    values, counts = np.unique(ratings[:, 2], return_counts=True)
    assert set(values) <= set(np.arange(1, 11) / 2)
    assert abs(ratings[:, 2].mean() - 3.53) < 0.1
    assert values[np.argmax(counts)] == 4.0
    # Half stars appear, but only after whole-star-only years.
    half = ratings[:, 2] * 2 % 2 == 1
    assert half.any()
    assert ratings[half, 3].min() >= synth.HALF_STAR_START


def test_summary_matches_file(release, ratings):
    _, result = release
    assert result.summary.count == SMALL_SCALE
    assert result.summary.mean == pytest.approx(ratings[:, 2].mean())
    assert result.summary.mode == 4.0


def test_timestamps_in_range(release, ratings):
    tags = read_rows(release[0] / "tags.csv")[1:]
    tag_times = np.array([int(row[3]) for row in tags])
    for timestamps in (ratings[:, 3], tag_times):
        assert timestamps.min() >= synth.FIRST_TIMESTAMP
        assert timestamps.max() <= synth.LAST_TIMESTAMP


def test_headers_exact(release):
    out, _ = release
    for table, header in CSV_HEADERS.items():
        first_line = (out / f"{table}.csv").read_bytes().split(b"\n", 1)[0]
        assert first_line == ",".join(header).encode()


def test_rating_lines_style(release):
    data = (release[0] / "ratings.csv").read_bytes()
    assert data.endswith(b"\n")
    assert b"\r" not in data
    lines = data.split(b"\n")[1:-1]
    assert len(lines) == SMALL_SCALE
    assert all(RATING_LINE.match(line) for line in lines)


@pytest.mark.parametrize("name", ["movies.csv", "links.csv", "tags.csv"])
def test_quotes_only_where_needed(release, name):
    # Writing the parsed rows back with minimal quoting must give the same bytes.
    path = release[0] / name
    buffer = io.StringIO()
    csv.writer(buffer, quoting=csv.QUOTE_MINIMAL, lineterminator="\n").writerows(read_rows(path))
    assert buffer.getvalue() == path.read_text(encoding="utf-8")


def test_movies_hard_cases(release):
    out = release[0]
    raw_lines = (out / "movies.csv").read_text(encoding="utf-8").splitlines()[1:]
    rows = read_rows(out / "movies.csv")[1:]
    titles = [row[1] for row in rows]
    assert all(len(row) == 3 for row in rows)
    assert any(re.search(r", (The|A|An) \(\d{4}\)$", title) for title in titles)
    assert any('"' in title for title in titles)
    assert any('""' in line for line in raw_lines)
    assert any(not title.isascii() for title in titles)
    assert all(re.search(r" \(\d{4}\)$", title) for title in titles)
    assert any(row[2] == "(no genres listed)" for row in rows)
    genres = {genre for row in rows for genre in row[2].split("|")}
    assert genres <= {*synth.GENRES, synth.NO_GENRES}


def test_movie_ids_sparse_increasing(release):
    rows = read_rows(release[0] / "movies.csv")[1:]
    movie_ids = np.array([int(row[0]) for row in rows])
    counts = synth.cardinalities(SMALL_SCALE)
    assert np.all(np.diff(movie_ids) > 0)
    assert movie_ids.min() >= 1
    assert movie_ids.max() <= counts.max_movie_id
    assert movie_ids.max() > 2 * len(movie_ids)


def test_links_hard_cases(release):
    rows = read_rows(release[0] / "links.csv")[1:]
    imdb_ids = [row[1] for row in rows]
    assert all(re.fullmatch(r"\d{7}", imdb_id) for imdb_id in imdb_ids)
    assert any(imdb_id.startswith("0") for imdb_id in imdb_ids)
    assert len(set(imdb_ids)) == len(imdb_ids)
    assert any(row[2] == "" for row in rows)
    assert all(row[2] == "" or row[2].isdigit() for row in rows)


def test_tags_hard_cases(release):
    rows = read_rows(release[0] / "tags.csv")[1:]
    tags = [row[2] for row in rows]
    assert all(len(row) == 4 for row in rows)
    assert any("," in tag for tag in tags)
    assert any('"' in tag for tag in tags)
    assert any(not tag.isascii() for tag in tags)
    keys = [(int(row[0]), int(row[1])) for row in rows]
    assert keys == sorted(keys)


def test_readme_states_synthetic(release):
    out, result = release
    readme = (out / "README.txt").read_text(encoding="utf-8")
    assert readme.startswith(synth.README_FIRST_LINE)
    assert "SYNTHETIC" in readme
    assert f"Seed:       {SEED}" in readme
    assert f"rank:                    {synth.DEFAULT_RANK}" in readme
    assert f"{result.summary.floor_rmse:.4f}" in readme


def test_floor_rmse_estimates_agree(release):
    summary = release[1].summary
    # Rounding adds error, clipping removes some; the floor stays near the noise's sd.
    assert 0.5 * synth.DEFAULT_NOISE < summary.floor_rmse < 1.2 * synth.DEFAULT_NOISE
    assert summary.floor_rmse == pytest.approx(summary.expected_floor_rmse, rel=0.03)


def test_same_seed_same_bytes(release, tmp_path):
    out = tmp_path / "again-synthetic"
    synth.generate(out, dataset="small-synthetic", seed=SEED, ratings=SMALL_SCALE)
    assert digest(out) == digest(release[0])
    assert (out / "README.txt").read_bytes() == (release[0] / "README.txt").read_bytes()


def test_other_seed_other_bytes(release, tmp_path):
    out = tmp_path / "other-synthetic"
    synth.generate(out, dataset="small-synthetic", seed=SEED + 1, ratings=SMALL_SCALE)
    mine, theirs = digest(out), digest(release[0])
    for name in FILES:
        assert mine[name] != theirs[name], name


def test_several_chunks_match_proportions(tmp_path, monkeypatch):
    # Chunks of 5,000 ratings make this release of 20,000 span several chunks.
    monkeypatch.setattr(synth, "CHUNK_RATINGS", 5_000)
    out = tmp_path / "chunked-synthetic"
    result = synth.generate(out, dataset="chunked-synthetic", seed=7, ratings=SMALL_SCALE)
    rows = read_rows(out / "ratings.csv")[1:]
    keys = [(int(row[0]), int(row[1])) for row in rows]
    assert len(rows) == SMALL_SCALE
    assert len(set(keys)) == len(keys)
    assert keys == sorted(keys)
    assert abs(result.summary.mean - 3.53) < 0.1


def test_replaces_own_output(release, tmp_path):
    out = tmp_path / "twice-synthetic"
    synth.generate(out, dataset="twice-synthetic", seed=1, ratings=2_000)
    synth.generate(out, dataset="twice-synthetic", seed=2, ratings=3_000)
    assert len(read_rows(out / "ratings.csv")) == 3_001
    assert not (tmp_path / "twice-synthetic.partial").exists()


def test_rejects_foreign_folder(tmp_path):
    out = tmp_path / "ml-latest-small"
    out.mkdir()
    (out / "README.txt").write_text("Summary\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"not written by lenspark\.synth"):
        synth.generate(out, dataset="x-synthetic", seed=1, ratings=2_000)
    assert (out / "README.txt").read_text(encoding="utf-8") == "Summary\n"


def test_main_rejects_real_dataset_name(tmp_path):
    with pytest.raises(ConfigError, match="-synthetic"):
        synth.main(["--dataset", "ml-20m", "--scale", "2000", "--out", str(tmp_path / "x")])


def test_main_writes_release(tmp_path, capsys):
    out = tmp_path / "cli-synthetic"
    argv = ["--dataset", "cli-synthetic", "--seed", "3", "--scale", "2K", "--out", str(out)]
    assert synth.main(argv) == 0
    printed = capsys.readouterr().out
    assert "RMSE floor" in printed
    assert len(read_rows(out / "ratings.csv")) == 2_001


@pytest.mark.parametrize(
    ("scale", "expected"),
    [
        ("20M", 20_000_263),
        ("1M", 1_000_000),
        ("100M", 100_000_000),
        ("250K", 250_000),
        ("1.5m", 1_500_000),
        ("5000", 5_000),
    ],
)
def test_parse_scale(scale, expected):
    assert synth.parse_scale(scale) == expected


@pytest.mark.parametrize("scale", ["", "20G", "-5", "lots", "999"])
def test_parse_scale_rejects(scale):
    with pytest.raises(ConfigError, match="--scale"):
        synth.parse_scale(scale)


def test_allocate_counts_bounds_and_total():
    weights = np.random.default_rng(0).lognormal(0.0, 2.0, 1_000)
    counts = synth.allocate_counts(weights, 150_000, 20, 400)
    assert counts.sum() == 150_000
    assert counts.min() >= 20
    assert counts.max() <= 400
    assert counts[np.argmax(weights)] == 400


def test_allocate_counts_rejects_infeasible():
    with pytest.raises(ConfigError, match="cannot split"):
        synth.allocate_counts(np.ones(10), 100, 20, 400)


def test_sample_user_movies_light_and_heavy():
    movies = 500
    weights = np.exp(-np.arange(movies) / 50.0)
    weights /= weights.sum()
    cdf = np.cumsum(weights)
    # 20 and 24 are light users; 200 and 499 take the exact path for heavy users.
    counts = np.array([20, 200, 24, 499])
    rng = np.random.default_rng(5)
    users, chosen = synth.sample_user_movies(rng, counts, weights, cdf)
    assert np.array_equal(np.bincount(users), counts)
    keys = users * movies + chosen
    assert len(np.unique(keys)) == len(keys)
    assert np.all(np.diff(keys) > 0)


def test_sample_user_movies_follows_popularity():
    movies = 1_000
    weights = np.exp(-np.arange(movies) / 100.0)
    weights /= weights.sum()
    cdf = np.cumsum(weights)
    counts = np.full(2_000, 20)
    _users, chosen = synth.sample_user_movies(np.random.default_rng(6), counts, weights, cdf)
    frequency = np.bincount(chosen, minlength=movies)
    assert frequency[:100].sum() > 5 * frequency[500:].sum()


def test_rounding_tables_match_simulation():
    tables = synth.rounding_tables(0.7)
    rng = np.random.default_rng(8)
    for m in (0.2, 3.1, 4.8):
        for whole in (False, True):
            x = m + rng.normal(0.0, 0.7, 200_000)
            codes = synth.round_rating_codes(x, np.full(len(x), whole))
            values = synth.RATING_VALUES[codes]
            mean, variance = tables.moments(np.array([m]), np.array([whole]))
            assert mean[0] == pytest.approx(values.mean(), abs=0.01)
            assert variance[0] == pytest.approx(values.var(), rel=0.03)


def test_round_rating_codes():
    x = np.array([-1.0, 0.74, 0.76, 3.24, 3.26, 4.6, 9.0, 0.9, 3.6])
    whole = np.array([False] * 7 + [True] * 2)
    values = synth.RATING_VALUES[synth.round_rating_codes(x, whole)]
    assert values.tolist() == [0.5, 0.5, 1.0, 3.0, 3.5, 4.5, 5.0, 1.0, 4.0]
