"""The train stage: fit the reference Keras model on the train table, without Spark.

Outputs: the model at ``<warehouse>/<dataset>/models/reference.keras``, the per-epoch
accuracy and loss as ``training_history.json`` and a plot of them as
``training_history.png`` in the dataset's report folder, and the stage's manifest.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lenspark import manifest, parquet_io, storage
from lenspark.columns import LABEL
from lenspark.config import Config, parse_config
from lenspark.errors import InputFormatError, LensparkError
from lenspark.logs import configure_logging, timed
from lenspark.model import (
    FEATURE_COLUMNS,
    build_reference_model,
    one_hot_labels,
    reference_features,
    table_labels,
)

logger = logging.getLogger(__name__)

STAGE = "train"
MODEL_TABLE = "models"
MODEL_FILE = "reference.keras"


def model_uri(config: Config) -> str:
    """Location of the trained reference model."""
    return storage.table_uri(config.warehouse, config.dataset, MODEL_TABLE) + "/" + MODEL_FILE


def report_uri(config: Config, name: str) -> str:
    """Location of file ``name`` in the dataset's report folder, made absolute unless on S3."""
    uri = f"{config.report_dir}/{name}"
    return uri if storage.is_s3(uri) else str(Path(uri).absolute())


def history_uri(config: Config) -> str:
    """Location of the per-epoch training history JSON."""
    return report_uri(config, "training_history.json")


def history_plot_uri(config: Config) -> str:
    """Location of the training history plot (PNG)."""
    return report_uri(config, "training_history.png")


def plot_history(records: list[dict[str, float | int]], dataset: str) -> bytes:
    """Render training accuracy and loss against the epoch as PNG bytes."""
    epochs = [record["epoch"] for record in records]
    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    accuracy_axes, loss_axes = figure.subplots(1, 2)

    accuracy_axes.plot(epochs, [record["accuracy"] for record in records], marker="o")
    accuracy_axes.set_title("Accuracy on the train table")
    accuracy_axes.set_xlabel("epoch")
    accuracy_axes.set_ylabel("accuracy (share of rows classified correctly)")

    loss_axes.plot(epochs, [record["loss"] for record in records], marker="o", color="tab:red")
    loss_axes.set_title("Loss on the train table")
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("categorical cross-entropy (nats, mean over rows)")

    # Epochs are whole numbers, so the x axis gets integer ticks only.
    for axes in (accuracy_axes, loss_axes):
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.grid(alpha=0.3)
    figure.suptitle(f"Reference model training on {dataset}")

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


class EpochHistory(keras.callbacks.Callback):
    """Append each finished epoch's accuracy and loss to a JSON file.

    ``BackupAndRestore`` resumes a killed run at the epoch after its last backup,
    and ``fit`` then reports only the epochs it ran, so the earlier epochs are kept
    here. Records past the epoch being finished are dropped, which covers a kill
    between this file's write and the backup's.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def load(self) -> list[dict[str, float | int]]:
        """Return the records written so far, oldest first."""
        return json.loads(self.path.read_text()) if self.path.is_file() else []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        records = [record for record in self.load() if record["epoch"] <= epoch]
        records.append(
            {"epoch": epoch + 1, "accuracy": float(logs["accuracy"]), "loss": float(logs["loss"])}
        )
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(records))
        temporary.replace(self.path)


def checkpoint_folder(config: Config, fingerprint: dict[str, Any]) -> Path:
    """Return the local folder of this training run's backups, emptied if it is from another run.

    A backup is only resumed when the dataset, rows, seed, epochs and batch size
    are those it was made with, recorded in ``fingerprint.json``.
    """
    folder = Path(config.checkpoint_dir) / config.dataset / "reference"
    recorded = folder / "fingerprint.json"
    if folder.exists() and (
        not recorded.is_file() or json.loads(recorded.read_text()) != fingerprint
    ):
        logger.info("Discarding the training backup in %s: it belongs to another run", folder)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    recorded.write_text(json.dumps(fingerprint))
    return folder


def save_model(model: keras.Model, uri: str) -> None:
    """Save ``model`` in the ``.keras`` format to ``uri``, a local path or an S3 URI.

    Keras writes only to local files, so the model goes to a temporary file first.
    """
    with tempfile.TemporaryDirectory(prefix="lenspark-model-") as folder:
        local_path = Path(folder) / MODEL_FILE
        model.save(local_path)
        storage.upload_file(local_path, uri)


def run(config: Config) -> dict[str, Any]:
    """Train the reference model on the train table, write its outputs and return the counts."""
    train_table_uri = storage.table_uri(config.warehouse, config.dataset, "train")
    outputs = {
        "model": model_uri(config),
        "training_history": history_uri(config),
        "training_history_plot": history_plot_uri(config),
    }

    with timed(logger, STAGE, config.dataset) as clock:
        # NOTE: the reference model trains from the whole train table in memory, not from
        # streamed Parquet batches. At 20M ratings the stage peaked at 2.5 GiB.
        table = parquet_io.read_table(train_table_uri, [*FEATURE_COLUMNS, LABEL])
        if table.num_rows == 0:
            raise InputFormatError(
                f"Table {train_table_uri} has no rows, so there is nothing to train on. "
                "Check the prepare stage's split and rerun it (make prepare)."
            )
        features = reference_features(table)
        targets = one_hot_labels(table_labels(table, LABEL))
        logger.info(
            "Training on %d rows for %d epochs in batches of %d rows",
            table.num_rows,
            config.epochs,
            config.batch_size,
        )

        # set_random_seed seeds Python, NumPy and the backend, so it must run before the
        # model's weights are initialized.
        keras.utils.set_random_seed(config.seed)
        model = build_reference_model()
        fingerprint = {
            "dataset": config.dataset,
            "rows": table.num_rows,
            "seed": config.seed,
            "epochs": config.epochs,
            "batch_size": config.batch_size,
        }
        checkpoints = checkpoint_folder(config, fingerprint)
        epoch_history = EpochHistory(checkpoints / "history.json")
        if epoch_history.load():
            logger.info(
                "Resuming from the backup in %s after epoch %d",
                checkpoints,
                epoch_history.load()[-1]["epoch"],
            )
        model.fit(
            features,
            targets,
            epochs=config.epochs,
            batch_size=config.batch_size,
            verbose=2,
            # The history file is written before the backup, so it never lags behind it.
            callbacks=[
                epoch_history,
                keras.callbacks.BackupAndRestore(str(checkpoints / "backup")),
            ],
        )
        records = epoch_history.load()
        shutil.rmtree(checkpoints)

        save_model(model, outputs["model"])
        storage.write_json(outputs["training_history"], records)
        storage.write_bytes(outputs["training_history_plot"], plot_history(records, config.dataset))
        for name, uri in outputs.items():
            logger.info("Wrote %s to %s", name, uri)

    counts = {
        "rows_in": table.num_rows,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "final_accuracy": records[-1]["accuracy"],
        "final_loss": records[-1]["loss"],
    }
    manifest.record_stage(config, STAGE, counts, outputs, clock["seconds"])
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """Run the train stage from the command line (console script ``lenspark-train``)."""
    configure_logging()
    try:
        config = parse_config(
            "Train the reference Keras model on the train table.", argv, training=True
        )
        run(config)
    except LensparkError as error:
        logger.error("train failed: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
