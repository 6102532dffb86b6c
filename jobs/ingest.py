"""spark-submit entry point: read the MovieLens CSV files into typed Parquet tables."""

import sys

from lenspark import ingest
from lenspark.jobrunner import run_spark_stage

if __name__ == "__main__":
    sys.exit(run_spark_stage("ingest", __doc__, ingest.run))
