"""End to end on the real ml-latest-small sample: `make pipeline` once, then every figure.

The pipeline runs once per test session through the same Make targets and
spark-submit commands a user types. The exact figures hold for the 2016 edition.
"""

from __future__ import annotations

import json
import subprocess

import pyarrow.dataset as ds
import pytest

from conftest import REPO, make_environment
from lenspark import storage

pytestmark = pytest.mark.slow

# sha256 (first 16 hex digits) of the sorted int64 (userid, movieid) keys of each split
# of the 2016 sample, seed 1234, train below 80 of 100.
SPLIT_DIGESTS_2016 = {"train": "5b5949df1c13a4f3", "test": "a26a7bcb72e66eb4"}


def manifest(run, stage: str) -> dict:
    return json.loads((run["warehouse"] / "_manifest" / f"{stage}.json").read_text())


def read_table(run, table: str, columns: list[str]):
    location = storage.require_complete(str(run["warehouse"] / table), producer="pipeline")
    return ds.dataset(location, format="parquet", exclude_invalid_files=True).to_table(
        columns=columns
    )


@pytest.mark.usefixtures("figures_2016")
class TestSampleFigures:
    def test_ingest_counts(self, pipeline_run):
        counts = manifest(pipeline_run, "ingest")["counts"]
        assert counts["movies"]["rows_out"] == 9_125
        assert counts["ratings"]["rows_out"] == 100_004
        assert counts["tags"]["rows_out"] == 1_296
        assert counts["links"]["rows_out"] == 9_125
        for table in ("ratings", "movies", "tags", "links"):
            assert counts[table]["rows_rejected"] == 0

    def test_merge_counts(self, pipeline_run):
        counts = manifest(pipeline_run, "merge")["counts"]
        assert counts["ratings_after_inner_joins"] == 100_004
        assert counts["plain_left_join_rows"] == 100_441
        assert counts["rows_out"] == 100_004
        assert counts["tags_without_rating"] == 357
        assert counts["ratings_dropped_by_inner_joins"] == 0

    def test_merged_table_rows(self, pipeline_run):
        assert read_table(pipeline_run, "merged", ["userId"]).num_rows == 100_004

    def test_explore_figures(self, pipeline_run):
        figures = json.loads((pipeline_run["reports"] / "explore.json").read_text())
        assert round(figures["rating_summary"]["mean"], 4) == 3.5436
        assert figures["rating_summary"]["count"] == 100_004
        assert figures["most_frequent_rating"] == {"rating": 4.0, "count": 28_750}
        assert figures["top_users"][0] == {"userId": 547, "ratings": 2_391}

    def test_train_test_disjoint_and_complete(self, pipeline_run):
        keys = ["userid", "movieid"]
        train = read_table(pipeline_run, "train", keys).to_pandas()
        test = read_table(pipeline_run, "test", keys).to_pandas()
        assert len(train) + len(test) == 100_004
        assert len(train.merge(test, on=keys)) == 0
        assert not train.duplicated(keys).any()
        counts = manifest(pipeline_run, "prepare")["counts"]
        assert counts["train_rows"] == len(train)
        assert counts["test_rows"] == len(test)


def test_report_files(pipeline_run):
    reports = pipeline_run["reports"]
    for name in (
        "explore.json",
        "rating_histogram.png",
        "ratings_per_user.png",
        "training_history.json",
        "training_history.png",
        "metrics.json",
        "index.html",
    ):
        assert (reports / name).is_file(), f"{name} missing from {reports}"
    page = (reports / "index.html").read_text()
    assert "rating_histogram.png" in page
    assert "majority-class baseline" in page


def test_png_files_are_images(pipeline_run):
    for name in ("rating_histogram.png", "ratings_per_user.png", "training_history.png"):
        assert (pipeline_run["reports"] / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reference_model_accuracy_near_majority(pipeline_run):
    metrics = json.loads((pipeline_run["reports"] / "metrics.json").read_text())
    history = json.loads((pipeline_run["reports"] / "training_history.json").read_text())
    assert len(history) == 20
    assert metrics["majority_class"] == 4
    assert 0.37 <= metrics["majority_class_accuracy"] <= 0.42
    # The reference recipe feeds raw ids into dense layers and learns little.
    assert 0.30 <= metrics["test_accuracy"] <= 0.46
    # The verdict compares whole counts of correct rows, never float32 accuracies.
    assert metrics["beats_majority"] == (
        metrics["test_correct"] > metrics["majority_class_correct"]
    )
    assert metrics["test_accuracy"] == metrics["test_correct"] / metrics["test_rows"]


def test_summary_states_verdict(pipeline_run):
    assert "majority-class baseline" in pipeline_run["stdout"]
    assert "Test accuracy" in pipeline_run["stdout"]


def test_model_saved(pipeline_run):
    assert (pipeline_run["warehouse"] / "models" / "reference.keras").is_file()


def comparison_by_model(run) -> dict[str, dict]:
    comparison = json.loads((run["reports"] / "comparison.json").read_text())
    return {row["model"]: row for row in comparison["models"]}


@pytest.mark.usefixtures("figures_2016")
class TestModelComparison:
    def test_every_model_ran(self, pipeline_run):
        models = comparison_by_model(pipeline_run)
        expected = {
            "reference",
            "embedding",
            "bias",
            "global_mean",
            "majority",
            "popularity",
            "als",
        }
        assert expected <= set(models)

    def test_embedding_rmse_target(self, pipeline_run):
        models = comparison_by_model(pipeline_run)
        assert models["embedding"]["rmse"] <= 0.87

    def test_embedding_beats_als_by_margin(self, pipeline_run):
        models = comparison_by_model(pipeline_run)
        assert models["embedding"]["rmse"] <= models["als"]["rmse"] - 0.03

    def test_embedding_beats_bias_only(self, pipeline_run):
        models = comparison_by_model(pipeline_run)
        assert models["embedding"]["rmse"] < models["bias"]["rmse"]

    def test_embedding_accuracy_target(self, pipeline_run):
        models = comparison_by_model(pipeline_run)
        assert models["embedding"]["accuracy"] >= 0.44
        assert models["majority"]["accuracy"] < 0.41

    def test_cold_rows_scored_not_dropped(self, pipeline_run):
        models = comparison_by_model(pipeline_run)
        counts = manifest(pipeline_run, "index")["counts"]
        cold = counts["test_rows_with_oov_movie"] + counts["test_rows_with_oov_user"]
        assert cold > 0
        assert models["als"]["fallback_rows"] >= cold - counts["test_rows_with_oov_user"]

    def test_best_ndcg_beats_popularity(self, pipeline_run):
        comparison = json.loads((pipeline_run["reports"] / "comparison.json").read_text())
        models = comparison_by_model(pipeline_run)
        best = comparison["best_ndcg_model"]
        assert best == max(
            (name for name, row in models.items() if row.get("ndcg_at_10") is not None),
            key=lambda name: models[name]["ndcg_at_10"],
        )
        assert models[best]["ndcg_at_10"] > models["popularity"]["ndcg_at_10"]


def test_split_keys_fixed(pipeline_run, figures_2016):
    """The md5 split gives the same keys in every run, Spark version and partitioning."""
    import hashlib

    digests = {}
    for table in ("train", "test"):
        keys = read_table(pipeline_run, table, ["userid", "movieid"]).to_pandas()
        ordered = keys.sort_values(["userid", "movieid"]).to_numpy()
        digests[table] = hashlib.sha256(ordered.astype("int64").tobytes()).hexdigest()[:16]
    assert digests == SPLIT_DIGESTS_2016


def test_recommend_prints_best_model(pipeline_run):
    env = make_environment()
    env.update(
        WAREHOUSE=str(pipeline_run["warehouse"].parent), REPORTS=str(pipeline_run["reports"].parent)
    )
    result = subprocess.run(
        ["make", "--no-print-directory", "recommend", "USER_ID=547", "N=10"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    comparison = json.loads((pipeline_run["reports"] / "comparison.json").read_text())
    assert comparison["best_ndcg_model"] in result.stdout
    assert result.stdout.count("https://www.imdb.com/title/tt") == 10


def test_rerun_metrics_within_tolerance(pipeline_run, tmp_path):
    first = comparison_by_model(pipeline_run)["embedding"]["rmse"]
    env = make_environment()
    env.update(
        DATASET="ml-latest-small",
        WAREHOUSE=str(pipeline_run["warehouse"].parent),
        REPORTS=str(tmp_path / "reports"),
        MODELS="embedding",
    )
    result = subprocess.run(
        [str(REPO / ".venv/bin/lenspark-compare")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rerun = json.loads((tmp_path / "reports/ml-latest-small/comparison.json").read_text())
    second = {row["model"]: row for row in rerun["models"]}["embedding"]["rmse"]
    assert abs(first - second) <= 0.005
