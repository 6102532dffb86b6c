"""Print a plain-text summary of a run from its manifests and metrics.json.

``make run`` calls this last (``python -m lenspark.summary``). Every number comes from
the files the stages wrote, never from a recount, and nothing here imports Spark or Keras.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lenspark import manifest, storage
from lenspark.config import Config, parse_config
from lenspark.errors import LensparkError
from lenspark.logs import configure_logging

logger = logging.getLogger(__name__)


def format_value(value: Any) -> str:
    """Format one manifest count for display, with 4 decimals for floats and JSON for nesting."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def baseline_sentence(metrics: dict[str, Any]) -> str:
    """Return a sentence that states whether the test accuracy beat the majority-class baseline."""
    model_accuracy = metrics["test_accuracy"]
    baseline_accuracy = metrics["majority_class_accuracy"]
    gap_points = abs(model_accuracy - baseline_accuracy) * 100
    always = f"always predicting class {metrics['majority_class']}"
    if metrics["beats_majority"]:
        return (
            f"The model beat the majority-class baseline: its test accuracy is "
            f"{gap_points:.1f} percentage points higher than {always}."
        )
    if model_accuracy == baseline_accuracy:
        return f"The model did NOT beat the majority-class baseline: it ties with {always}."
    return (
        f"The model did NOT beat the majority-class baseline: its test accuracy is "
        f"{gap_points:.1f} percentage points lower than {always}."
    )


def _is_file_counts(value: Any) -> bool:
    return isinstance(value, dict) and "rows_in" in value and "rows_rejected" in value


def format_summary(
    config: Config, entries: dict[str, dict[str, Any]], metrics: dict[str, Any] | None
) -> str:
    """Build the summary text from the stage manifests (keyed by stage) and the metrics."""
    lines = [f"lenspark run on {config.dataset}", ""]

    lines.append("Counts per stage:")
    for stage, entry in entries.items():
        flat = {k: v for k, v in entry["counts"].items() if not _is_file_counts(v)}
        counts = ", ".join(f"{key}={format_value(value)}" for key, value in flat.items())
        lines.append(f"  {stage:<9} {entry['seconds']:>8.1f} s  {counts}".rstrip())
        for name, value in entry["counts"].items():
            if _is_file_counts(value):
                lines.append(
                    f"  {'':<9} {'':>10}  {name}: {value['rows_in']} in, "
                    f"{value.get('rows_out', '?')} out, {value['rows_rejected']} rejected"
                    + (f" ({format_value(value['reasons'])})" if value.get("reasons") else "")
                )
    missing = [stage for stage in manifest.STAGES if stage not in entries]
    if missing:
        lines.append(f"  No manifest for: {', '.join(missing)} (run make run to run every stage).")
    lines.append("")

    if metrics is None:
        lines.append("No metrics.json yet, so there is no test accuracy (run make evaluate).")
    else:
        lines.append(
            f"Test accuracy:            {metrics['test_accuracy']:.4f} "
            f"on {metrics['test_rows']} test rows"
        )
        lines.append(
            f"Majority-class accuracy:  {metrics['majority_class_accuracy']:.4f} "
            f"(always class {metrics['majority_class']}, the most frequent train label)"
        )
        lines.append(baseline_sentence(metrics))
    lines.append("")

    lines.append("Outputs:")
    report_dir = config.report_dir
    if not storage.is_s3(report_dir):
        report_dir = str(Path(report_dir).absolute())
    lines.append(f"  report folder: {report_dir}")
    for stage, entry in entries.items():
        for name, uri in entry["outputs"].items():
            lines.append(f"  {stage} {name}: {uri}")
    return "\n".join(lines) + "\n"


def run(config: Config) -> str:
    """Read the run's manifests and metrics.json and return the summary text.

    Raises LensparkError if no stage has written a manifest for ``config.dataset``.
    """
    entries = manifest.load_manifest(config)
    if not entries:
        raise LensparkError(
            f"No stage has written a manifest for dataset {config.dataset} in warehouse "
            f"{config.warehouse}. Run the pipeline first (make run)."
        )

    metrics = None
    evaluate_entry = entries.get("evaluate")
    if evaluate_entry is not None:
        metrics_uri = evaluate_entry["outputs"]["metrics"]
        if storage.exists(metrics_uri):
            metrics = storage.read_json(metrics_uri)
        else:
            logger.warning(
                "Metrics file %s from the evaluate manifest is missing. Rerun make evaluate.",
                metrics_uri,
            )
    return format_summary(config, entries, metrics)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the summary of the last run (``python -m lenspark.summary``)."""
    configure_logging()
    try:
        config = parse_config("Print a summary of the last run's counts and metrics.", argv)
        sys.stdout.write(run(config))
    except LensparkError as error:
        logger.error("summary failed: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
