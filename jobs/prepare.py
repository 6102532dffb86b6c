"""spark-submit entry point: label, index genres and split the merged table into train and test."""

import sys

from lenspark import prepare
from lenspark.jobrunner import run_spark_stage

if __name__ == "__main__":
    sys.exit(run_spark_stage("prepare", __doc__, prepare.run))
