"""spark-submit entry point: index users, movies and genres on train and write indexed splits."""

import sys

from lenspark import index
from lenspark.jobrunner import run_spark_stage

if __name__ == "__main__":
    sys.exit(run_spark_stage("index", __doc__, index.run))
