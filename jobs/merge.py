"""spark-submit entry point: join ratings, movies, links and tags into one row per rating."""

import sys

from lenspark import merge
from lenspark.jobrunner import run_spark_stage

if __name__ == "__main__":
    sys.exit(run_spark_stage("merge", __doc__, merge.run))
