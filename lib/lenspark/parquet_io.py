"""Read the warehouse's Parquet tables with pyarrow, from a folder or from S3, without Spark.

A table is a folder of part files written by Spark. Only complete tables (with a
``_SUCCESS`` marker) are read. Files and folders whose names start with ``_`` or ``.``
are skipped, which covers ``_SUCCESS``, Spark's ``_temporary`` folder and the ``.crc``
checksum files that Hadoop writes next to local part files.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.dataset as pads

from lenspark import storage
from lenspark.errors import InputFormatError

logger = logging.getLogger(__name__)

IGNORED_PREFIXES = ["_", "."]


def open_dataset(uri: str, columns: Sequence[str], producer: str = "prepare") -> pads.Dataset:
    """Open the complete table at ``uri`` as a pyarrow dataset and check its columns.

    Raises IncompleteTableError if the ``_SUCCESS`` marker is missing (the message
    names ``make <producer>``), and InputFormatError if a column in ``columns`` is missing.
    """
    location = storage.require_complete(uri, producer=producer)
    fs, path = storage.filesystem(location)
    dataset = pads.dataset(
        path,
        filesystem=fs,
        format="parquet",
        # Spark writes hive-style key=value folders when a table is partitioned.
        partitioning="hive",
        ignore_prefixes=IGNORED_PREFIXES,
    )
    missing = [name for name in columns if name not in dataset.schema.names]
    if missing:
        raise InputFormatError(
            f"Table {uri} is missing the columns {missing}. Its columns are "
            f"{dataset.schema.names}. Rerun the {producer} stage (make {producer})."
        )
    return dataset


def read_table(uri: str, columns: Sequence[str], producer: str = "prepare") -> pa.Table:
    """Read ``columns`` of the complete table at ``uri`` into memory.

    Raises the same errors as ``open_dataset``.
    """
    dataset = open_dataset(uri, columns, producer)
    table = dataset.to_table(columns=list(columns))
    logger.info("Read %d rows of %s from %s", table.num_rows, list(columns), uri)
    return table


def iter_batches(
    uri: str, columns: Sequence[str], batch_size: int, producer: str = "prepare"
) -> Iterator[pa.RecordBatch]:
    """Yield ``columns`` of the complete table at ``uri`` in batches of up to ``batch_size`` rows.

    The checks of ``open_dataset`` run before the first batch is yielded.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    dataset = open_dataset(uri, columns, producer)
    yield from dataset.to_batches(columns=list(columns), batch_size=batch_size)
