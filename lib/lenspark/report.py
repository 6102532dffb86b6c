"""The HTML report page of a dataset, built from the JSON files the stages wrote.

It reads figures, never recounts them: explore.json, metrics.json, comparison.json
and the run manifests. Pure Python, so both the Spark jobs and the trainer can call it.
"""

from __future__ import annotations

import html
import logging
from typing import Any

from lenspark import storage
from lenspark.config import Config
from lenspark.manifest import load_manifest

logger = logging.getLogger(__name__)

REPORT_PAGE = "index.html"
RATING_HISTOGRAM = "rating_histogram.png"
ACTIVITY_HISTOGRAM = "ratings_per_user.png"
TRAINING_HISTORY = "training_history.png"
PLOTS = (
    (RATING_HISTOGRAM, "Ratings by value"),
    (ACTIVITY_HISTOGRAM, "Ratings per user"),
    (TRAINING_HISTORY, "Training accuracy and loss per epoch"),
    ("embedding_curves.png", "Embedding model: training and validation RMSE per epoch"),
    ("ranking_curves.png", "Ranking model: training and validation loss per epoch"),
)
COMPARISON_COLUMNS = (
    ("model", "model"),
    ("rmse", "RMSE"),
    ("mae", "MAE"),
    ("accuracy", "accuracy"),
    ("precision_at_{k}", "precision@{k}"),
    ("recall_at_{k}", "recall@{k}"),
    ("ndcg_at_{k}", "nDCG@{k}"),
    ("fallback_rows", "rows scored by fallback"),
    ("training_seconds", "training seconds"),
)


def _read_optional(uri: str) -> Any:
    return storage.read_json(uri) if storage.exists(uri) else None


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _stage_rows(manifest: dict[str, dict]) -> list[list[Any]]:
    rows = []
    for stage, entry in manifest.items():
        counts = entry.get("counts", {})
        rows.append(
            [
                stage,
                counts.get("rows_in", ""),
                counts.get("rows_out", ""),
                counts.get("rows_rejected", ""),
                entry.get("seconds", ""),
            ]
        )
    return rows


def comparison_section(comparison: dict) -> list[str]:
    """Return the HTML parts of the model comparison: its table, ranking set-up and skips."""
    k = comparison["ranking"]["k"]
    headers = [title.format(k=k) for _, title in COMPARISON_COLUMNS]
    rows = []
    for model in comparison["models"]:
        values = [model.get(key.format(k=k)) for key, _ in COMPARISON_COLUMNS]
        rows.append(["" if value is None else value for value in values])
    ranking = comparison["ranking"]
    sample = (
        f"a random sample (seed {ranking['sample_seed']}) of " if ranking["sampled"] else "all "
    )
    parts = [
        "<h2>Model comparison</h2>",
        _table(headers, rows),
        "<p>"
        + html.escape(
            f"All models are scored on the same {comparison['test_rows']:,} test rows. "
            f"Ranking metrics cover {sample}{ranking['users_evaluated']:,} of the "
            f"{ranking['users_with_relevant_test_rating']:,} users with a test rating of "
            f"{ranking['relevant_rating']} or more. Candidates are the movies a user did not "
            f"rate in train. Recommendations come from the model with the best nDCG@{k}: "
            f"{comparison['best_ndcg_model']}."
        )
        + "</p>",
    ]
    for skipped in comparison.get("skipped", []):
        parts.append(
            f"<p>{html.escape(skipped['model'])} did not run: {html.escape(skipped['reason'])}</p>"
        )
    return parts


def build_page(
    dataset: str,
    explore: dict | None,
    metrics: dict | None,
    manifest: dict[str, dict],
    plots_present: list[tuple[str, str]],
    comparison: dict | None = None,
) -> str:
    """Return the HTML page for the given figures; sections without figures are left out."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>lenspark report: {html.escape(dataset)}</title>",
        "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:4px 8px;text-align:right}img{max-width:100%}</style></head><body>",
        f"<h1>lenspark report: {html.escape(dataset)}</h1>",
    ]
    if manifest:
        parts.append("<h2>Rows per stage</h2>")
        parts.append(
            _table(
                ["stage", "rows in", "rows out", "rows rejected", "seconds"], _stage_rows(manifest)
            )
        )
    if explore:
        summary = explore["rating_summary"]
        parts.append("<h2>Ratings</h2>")
        parts.append(
            _table(
                ["count", "mean", "stddev", "min", "max", "users", "movies"],
                [
                    [
                        summary["count"],
                        summary["mean"],
                        summary["stddev"],
                        summary["min"],
                        summary["max"],
                        explore["users"],
                        explore["movies"],
                    ]
                ],
            )
        )
        parts.append("<h3>Ratings by value, most frequent first</h3>")
        parts.append(
            _table(
                ["rating", "ratings"], [[r["rating"], r["count"]] for r in explore["rating_counts"]]
            )
        )
        parts.append("<h3>Most active users</h3>")
        parts.append(
            _table(
                ["userId", "ratings"], [[u["userId"], u["ratings"]] for u in explore["top_users"]]
            )
        )
    if metrics:
        parts.append("<h2>Model</h2>")
        verdict = (
            "The model beat the majority-class baseline."
            if metrics.get("beats_majority")
            else "The model did not beat the majority-class baseline."
        )
        parts.append(
            _table(
                ["test rows", "test accuracy", "majority class", "majority-class accuracy"],
                [
                    [
                        metrics["test_rows"],
                        metrics["test_accuracy"],
                        metrics["majority_class"],
                        metrics["majority_class_accuracy"],
                    ]
                ],
            )
        )
        parts.append(f"<p>{html.escape(verdict)}</p>")
    if comparison:
        parts.extend(comparison_section(comparison))
    for file_name, title in plots_present:
        parts.append(f"<h2>{html.escape(title)}</h2><img src='{file_name}' alt='{title}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_report(config: Config) -> str:
    """Write ``index.html`` into the dataset's report folder and return its location."""
    report_dir = config.report_dir
    explore = _read_optional(f"{report_dir}/explore.json")
    metrics = _read_optional(f"{report_dir}/metrics.json")
    comparison = _read_optional(f"{report_dir}/comparison.json")
    plots_present = [
        (name, title) for name, title in PLOTS if storage.exists(f"{report_dir}/{name}")
    ]
    page = build_page(
        config.dataset, explore, metrics, load_manifest(config), plots_present, comparison
    )
    uri = f"{report_dir}/{REPORT_PAGE}"
    storage.write_text(uri, page)
    logger.info("report page written to %s", uri)
    return uri
