"""The shared body of every spark-submit job: parse, start Spark, run, record, stop."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from lenspark.config import Config, parse_config
from lenspark.errors import LensparkError
from lenspark.logs import configure_logging, timed
from lenspark.manifest import record_stage
from lenspark.preflight import run_preflight

logger = logging.getLogger("lenspark.job")

StageRun = Callable[[Any, Config], dict]


def run_spark_stage(
    stage: str, description: str, run: StageRun, argv: Sequence[str] | None = None
) -> int:
    """Run one Spark stage and return the process exit code.

    ``run(spark, config)`` returns ``{"counts": ..., "outputs": ...}``, which goes
    into the stage's manifest. The preflight checks run before Spark starts. A
    LensparkError is logged as one line and gives exit code 2, so the user reads
    the cause before any Java stack trace.
    """
    configure_logging()
    try:
        config = parse_config(description, argv)
        run_preflight(config, stage)
    except LensparkError as error:
        logger.error("%s failed before Spark started: %s", stage, error)
        return 2

    # pyspark is imported here, not at module level, so that --help returns without a JVM.
    from lenspark.spark import get_session

    spark = get_session(f"lenspark-{stage}")
    try:
        with timed(logger, stage, config.dataset) as clock:
            result = run(spark, config)
        record_stage(config, stage, result["counts"], result["outputs"], clock["seconds"])
        for name, uri in result["outputs"].items():
            logger.info("%s output %s: %s", stage, name, uri)
    except LensparkError as error:
        logger.error("%s failed: %s", stage, error)
        return 2
    finally:
        spark.stop()
    return 0
