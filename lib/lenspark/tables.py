"""Reading and writing warehouse tables from Spark, one complete version at a time.

A write goes to a new version folder and becomes visible only when Spark has
committed it (``_SUCCESS``) and the table's pointer is moved. A crash halfway
therefore leaves the last good version in place, and a rerun replaces a table whole.
"""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame, SparkSession

from lenspark import storage
from lenspark.config import Config

logger = logging.getLogger(__name__)


def table_location(config: Config, table: str) -> str:
    """Location of ``table`` in the configured warehouse and dataset."""
    return storage.table_uri(config.warehouse, config.dataset, table)


def read_table(spark: SparkSession, config: Config, table: str, producer: str) -> DataFrame:
    """Read the current complete version of ``table``; ``producer`` names its stage for errors."""
    location = storage.require_complete(table_location(config, table), producer)
    return spark.read.parquet(storage.spark_uri(location))


def write_table(df: DataFrame, config: Config, table: str, *, files: int | None = None) -> str:
    """Write ``df`` as a new version of ``table``, publish it and return the table's location.

    ``files`` coalesces the output to that many part files (for small tables).
    """
    location = table_location(config, table)
    version = storage.new_version(location)
    if files is not None:
        df = df.coalesce(files)
    df.write.mode("errorifexists").parquet(storage.spark_uri(version))
    storage.publish_version(location, version)
    logger.debug("published %s as the current version of %s", version, location)
    return location


def count_rows(spark: SparkSession, config: Config, table: str, producer: str) -> int:
    """Count the rows of the current version of ``table`` (Parquet footers only)."""
    return read_table(spark, config, table, producer).count()
