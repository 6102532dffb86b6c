"""Training speed, in samples per second, of the embedding model and of the reference recipe.

``python bench/throughput.py --embedding-rows 20000000 --reference-rows 320000`` prints JSON.
The dataset, warehouse and seed come from the same environment variables as the stages.

- embedding: the rating model with the settings that the compare stage uses, and reports
  its RMSE for, on a fit table of this size (``lenspark.compare.settings_for``), fed by
  ``lenspark.features.rating_batches`` from the indexed_fit Parquet table, as the compare
  stage feeds it;
- reference: ``lenspark.model.build_reference_model`` with batch size 32 on the first rows
  of the train table, in memory, as ``make train`` runs it.

Both are timed from the end of the warm-up batches to the end of the last batch, so graph
tracing and the first Parquet reads are left out. A timed step includes waiting for its
input, so the embedding figure includes reading and shuffling the Parquet batches.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import pyarrow.compute as pc

from lenspark import compare, model, parquet_io, storage
from lenspark import features as feature_tables
from lenspark.config import parse_config
from lenspark.embedding import compiled_rating_model

logger = logging.getLogger("bench.throughput")

WARM_UP_BATCHES = 20


class BatchClock(keras.callbacks.Callback):
    """Record the time at the end of every training batch."""

    def __init__(self) -> None:
        super().__init__()
        self.ends: list[float] = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.ends.append(time.perf_counter())


def samples_per_second(clock: BatchClock, batch_size: int, batch_rows: Sequence[int]) -> dict:
    """Return the timed batches, rows and rows per second after the warm-up batches.

    ``batch_rows`` gives the rows of each batch in the order they ran.
    """
    timed_batches = len(clock.ends) - WARM_UP_BATCHES
    if timed_batches < 1:
        raise ValueError(
            f"only {len(clock.ends)} batches ran, fewer than the {WARM_UP_BATCHES} of warm-up; "
            "raise --embedding-rows or --reference-rows"
        )
    rows = int(sum(batch_rows[WARM_UP_BATCHES : len(clock.ends)]))
    seconds = clock.ends[-1] - clock.ends[WARM_UP_BATCHES - 1]
    return {
        "batch_size": batch_size,
        "timed_batches": timed_batches,
        "timed_rows": rows,
        "timed_seconds": round(seconds, 3),
        "samples_per_second": round(rows / seconds, 1),
    }


def embedding_throughput(config, rows: int) -> dict:
    """Train the compare stage's rating model on up to ``rows`` fit rows and time it."""
    features = feature_tables.load_movie_features(config)
    fit_uri = feature_tables.table_uri(config, feature_tables.FIT_TABLE)
    ratings = parquet_io.read_table(fit_uri, [feature_tables.RATING], producer="index")
    global_mean = float(pc.mean(ratings.column(feature_tables.RATING)).as_py())
    total_rows = ratings.num_rows
    del ratings
    settings = compare.settings_for(total_rows)[0]

    network = compiled_rating_model(features, global_mean, settings, config.seed)
    rows = min(rows, total_rows)
    batches = rows // settings.batch_size
    data = feature_tables.rating_batches([fit_uri], settings.batch_size, config.seed).take(batches)
    # The batch at the end of each Parquet file can be short, so the rows are counted from
    # the same batches the first epoch reads.
    first_epoch = feature_tables.shuffled_batches(
        [fit_uri], settings.batch_size, config.seed, 0, [feature_tables.RATING]
    )
    batch_rows = [batch[feature_tables.RATING].size for batch in first_epoch][:batches]
    clock = BatchClock()
    network.fit(data, epochs=1, callbacks=[clock], verbose=0)
    result = samples_per_second(clock, settings.batch_size, batch_rows)
    result["settings"] = {
        name: getattr(settings, name)
        for name in (
            "dimension",
            "batch_size",
            "learning_rate",
            "learning_rate_decay",
            "weight_l2",
            "user_side_weights",
            "members",
        )
    }
    result["fit_rows"] = total_rows
    return result


def reference_throughput(config, rows: int, batch_size: int = 32) -> dict:
    """Train the reference recipe on the first ``rows`` train rows for one epoch and time it."""
    train_uri = storage.table_uri(config.warehouse, config.dataset, "train")
    columns = [*model.FEATURE_COLUMNS, "label"]
    table = parquet_io.open_dataset(train_uri, columns).head(rows, columns=columns)
    inputs = model.reference_features(table)
    targets = model.one_hot_labels(model.table_labels(table, "label"))

    keras.utils.set_random_seed(config.seed)
    network = model.build_reference_model()
    clock = BatchClock()
    network.fit(inputs, targets, epochs=1, batch_size=batch_size, callbacks=[clock], verbose=0)
    last_batch_rows = table.num_rows - (len(clock.ends) - 1) * batch_size
    batch_rows = [batch_size] * (len(clock.ends) - 1) + [last_batch_rows]
    return samples_per_second(clock, batch_size, batch_rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Time both models and print the figures as JSON."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--embedding-rows", type=int, default=20_000_000)
    parser.add_argument("--reference-rows", type=int, default=320_000)
    parser.add_argument("--result", default=None, help="also write the JSON to this file")
    args = parser.parse_args(argv)
    config = parse_config("bench throughput", [], training=True)

    result = {"embedding": embedding_throughput(config, args.embedding_rows)}
    logger.info("embedding: %s", result["embedding"])
    result["reference"] = reference_throughput(config, args.reference_rows)
    logger.info("reference: %s", result["reference"])
    result["ratio"] = round(
        result["embedding"]["samples_per_second"] / result["reference"]["samples_per_second"], 2
    )
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if args.result:
        Path(args.result).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
