"""spark-submit entry point: choose and fit Spark MLlib ALS on the indexed splits."""

import sys

from lenspark import als
from lenspark.jobrunner import run_spark_stage

if __name__ == "__main__":
    sys.exit(run_spark_stage("als", __doc__, als.run))
