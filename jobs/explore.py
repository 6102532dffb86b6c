"""spark-submit entry point: rating statistics, plots and an HTML report of the merged table."""

import sys

from lenspark import explore
from lenspark.jobrunner import run_spark_stage

if __name__ == "__main__":
    sys.exit(run_spark_stage("explore", __doc__, explore.run))
