"""SparkSession access for the jobs; master, memory and partitions come from spark-submit."""

from pyspark.sql import SparkSession


def get_session(app_name: str) -> SparkSession:
    """Return the session that spark-submit configured, named after the stage."""
    spark = SparkSession.builder.appName(app_name).getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
