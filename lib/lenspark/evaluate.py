"""The evaluate stage: score the trained model on the test table against a majority-class baseline.

The baseline always predicts the most frequent class of the train labels, and its
accuracy is measured on the test labels, so both numbers come from the same rows.
Outputs: ``metrics.json`` in the dataset's report folder and the stage's manifest.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from lenspark import manifest, parquet_io, report, storage
from lenspark.columns import LABEL, NUM_CLASSES
from lenspark.config import Config, parse_config
from lenspark.errors import InputFormatError, LensparkError
from lenspark.logs import configure_logging, timed
from lenspark.model import (
    FEATURE_COLUMNS,
    constant_class_accuracy,
    majority_class,
    one_hot_labels,
    reference_features,
    table_labels,
)
from lenspark.train import MODEL_FILE, model_uri, report_uri

logger = logging.getLogger(__name__)

STAGE = "evaluate"
EVALUATION_BATCH_SIZE = 128


def metrics_uri(config: Config) -> str:
    """Location of the test metrics JSON."""
    return report_uri(config, "metrics.json")


def load_model(uri: str) -> keras.Model:
    """Load the reference model from ``uri``, a local path or an S3 URI.

    Raises InputFormatError, naming ``make train``, if the file is missing, is not a
    Keras model, or has input or output shapes that differ from the reference model's.
    """
    if not storage.exists(uri):
        raise InputFormatError(
            f"Model file {uri} not found. Run the train stage first (make train)."
        )

    # Keras reads only local files, so an S3 object is copied to a temporary file.
    fs, path = storage.filesystem(uri)
    with tempfile.TemporaryDirectory(prefix="lenspark-model-") as folder:
        local_path = Path(folder) / MODEL_FILE
        with fs.open_input_stream(path) as stream:
            local_path.write_bytes(stream.read())
        try:
            model = keras.models.load_model(local_path)
        except ValueError as error:
            raise InputFormatError(
                f"Model file {uri} could not be loaded as a Keras model ({error}). "
                "Rerun the train stage (make train)."
            ) from error

    expected_input = (None, len(FEATURE_COLUMNS))
    expected_output = (None, NUM_CLASSES)
    if model.input_shape != expected_input or model.output_shape != expected_output:
        raise InputFormatError(
            f"Model file {uri} has input shape {model.input_shape} and output shape "
            f"{model.output_shape}, expected {expected_input} and {expected_output}. "
            "Rerun the train stage (make train)."
        )
    return model


def run(config: Config) -> dict[str, Any]:
    """Evaluate the trained model on the test table, write metrics.json and return the metrics."""
    train_table_uri = storage.table_uri(config.warehouse, config.dataset, "train")
    test_table_uri = storage.table_uri(config.warehouse, config.dataset, "test")
    outputs = {"metrics": metrics_uri(config)}

    with timed(logger, STAGE, config.dataset) as clock:
        model = load_model(model_uri(config))
        test_table = parquet_io.read_table(test_table_uri, [*FEATURE_COLUMNS, LABEL])
        train_labels = table_labels(parquet_io.read_table(train_table_uri, [LABEL]), LABEL)
        test_labels = table_labels(test_table, LABEL)
        if test_table.num_rows == 0:
            raise InputFormatError(
                f"Table {test_table_uri} has no rows, so there is nothing to evaluate on. "
                "Check the prepare stage's split and rerun it (make prepare)."
            )
        logger.info(
            "Evaluating on %d test rows against a baseline from %d train rows",
            test_table.num_rows,
            train_labels.size,
        )

        features = reference_features(test_table)
        scores = model.evaluate(
            features,
            one_hot_labels(test_labels),
            batch_size=EVALUATION_BATCH_SIZE,
            verbose=0,
            return_dict=True,
        )
        # Keras reports accuracy as float32, which can differ from the baseline's exact
        # fraction in the 8th digit; both accuracies are counted here from whole rows.
        predicted = model.predict(features, batch_size=EVALUATION_BATCH_SIZE, verbose=0).argmax(
            axis=1
        )
        correct = int(np.count_nonzero(predicted == test_labels))
        majority, train_share = majority_class(train_labels)
        majority_correct = int(np.count_nonzero(test_labels == majority))
        predicted_classes = np.bincount(predicted, minlength=NUM_CLASSES)
        metrics = {
            "dataset": config.dataset,
            "test_rows": test_table.num_rows,
            "train_rows": int(train_labels.size),
            "test_accuracy": correct / test_labels.size,
            "test_correct": correct,
            "test_loss": float(scores["loss"]),
            "predicted_class_counts": {
                str(label): int(n) for label, n in enumerate(predicted_classes) if n
            },
            "majority_class": majority,
            "majority_class_train_share": train_share,
            "majority_class_accuracy": constant_class_accuracy(majority, test_labels),
            "majority_class_correct": majority_correct,
            "beats_majority": correct > majority_correct,
        }
        majority_accuracy = metrics["majority_class_accuracy"]

        storage.write_json(outputs["metrics"], metrics)
        logger.info(
            "Test accuracy %.4f and loss %.4f. Always predicting class %d has accuracy %.4f",
            metrics["test_accuracy"],
            metrics["test_loss"],
            majority,
            majority_accuracy,
        )
        logger.info("Wrote metrics to %s", outputs["metrics"])

    counts = {"rows_in": metrics["test_rows"]}
    counts.update((key, value) for key, value in metrics.items() if key != "dataset")
    manifest.record_stage(config, STAGE, counts, outputs, clock["seconds"])
    report.render_report(config)
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluate stage from the command line (console script ``lenspark-evaluate``)."""
    configure_logging()
    try:
        config = parse_config(
            "Evaluate the reference model on the test table against the majority class.", argv
        )
        run(config)
    except LensparkError as error:
        logger.error("evaluate failed: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
