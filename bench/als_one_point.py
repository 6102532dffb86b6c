"""spark-submit entry point: the ALS stage with a grid of one point, for the benchmark.

The full grid of ``lenspark.als`` fits 9 points before the refit. At 20M ratings on 2 cores one
point (rank 16) took 131 s, so the grid alone would take about 20 minutes (an estimate that
ignores the cost difference between ranks 8, 16 and 32). This job fits the one point given by
the environment variables ``BENCH_ALS_RANK`` (default 16) and ``BENCH_ALS_REG_PARAM`` (default
0.1), refits it on every train row and writes the same factor tables and als.json as
``make als``.
"""

from __future__ import annotations

import os
import sys

from lenspark import als
from lenspark.jobrunner import run_spark_stage


def run_one_point(spark, config) -> dict:
    """Run ``als.run`` with the one grid point of the environment."""
    rank = int(os.environ.get("BENCH_ALS_RANK") or 16)
    reg_param = float(os.environ.get("BENCH_ALS_REG_PARAM") or 0.1)
    return als.run(spark, config, ranks=(rank,), reg_params=(reg_param,))


if __name__ == "__main__":
    sys.exit(run_spark_stage("als", __doc__, run_one_point))
