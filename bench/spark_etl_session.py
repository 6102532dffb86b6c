"""spark-submit entry point: ingest, merge and prepare in one SparkSession, for the benchmark.

It runs the same ``lenspark.<stage>.run`` functions, preflight checks and manifests as the
three jobs under ``jobs/``, so the difference in time is the JVM start-up and session set-up
of the two extra spark-submit runs, plus what one warm session reuses.
"""

from __future__ import annotations

import logging
import sys

from lenspark import ingest, merge, prepare
from lenspark.config import parse_config
from lenspark.errors import LensparkError
from lenspark.logs import configure_logging, timed
from lenspark.manifest import record_stage
from lenspark.preflight import run_preflight

logger = logging.getLogger("bench.spark_etl_session")

STAGES = (("ingest", ingest.run), ("merge", merge.run), ("prepare", prepare.run))


def main() -> int:
    """Run the three ETL stages in one session and return the process exit code."""
    configure_logging()
    try:
        config = parse_config(__doc__.split("\n", 1)[0])
        run_preflight(config, "ingest")
    except LensparkError as error:
        logger.error("ETL session failed before Spark started: %s", error)
        return 2

    from lenspark.spark import get_session

    spark = get_session("lenspark-etl-session")
    try:
        for stage, run in STAGES:
            # The merge and prepare checks need the tables of the stage before, so each
            # stage's checks run just before it.
            run_preflight(config, stage)
            with timed(logger, stage, config.dataset) as clock:
                result = run(spark, config)
            record_stage(config, stage, result["counts"], result["outputs"], clock["seconds"])
    except LensparkError as error:
        logger.error("ETL session failed: %s", error)
        return 2
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
