# syntax=docker/dockerfile:1
# One image for the Spark master, the workers, the history server and the submitting
# driver, so that Spark, Java and Python versions never differ between them.
# Build from the repository root: docker build -f docker/spark.Dockerfile .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# Debian bookworm's Java 17 runtime; curl serves the jar download and the health checks.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends \
        ca-certificates curl openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SPARK_HOME=/usr/local/lib/python3.11/site-packages/pyspark \
    LENSPARK_HOME=/opt/lenspark \
    PYSPARK_PYTHON=/usr/local/bin/python

# The package with its `spark` extra, pinned in pyproject.toml and nowhere else.
# pyspark brings Spark itself.
WORKDIR /opt/lenspark
COPY pyproject.toml README.md ./
COPY lib ./lib
# DL3013 asks for pins on the command line, but they live in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir '.[spark]' \
    && python -c "import pathlib, os, pyspark; \
assert pathlib.Path(pyspark.__file__).parent == pathlib.Path(os.environ['SPARK_HOME'])"

# Jars that the pyspark wheel leaves out, verified against Maven Central's checksums.
COPY docker/jars.env docker/download-jars.sh /opt/lenspark/docker/
RUN sh /opt/lenspark/docker/download-jars.sh /opt/lenspark/docker/jars.env "$SPARK_HOME/jars"

# Cluster settings: the shared file first, the cluster layer last so that its keys win.
COPY spark-defaults.conf docker/spark-cluster.conf conf/log4j2.properties /opt/lenspark/conf/
RUN cat /opt/lenspark/conf/spark-defaults.conf /opt/lenspark/conf/spark-cluster.conf \
        > /opt/lenspark/conf/spark-layered.conf

COPY jobs ./jobs
COPY --chmod=0755 docker/spark-entrypoint.sh /usr/local/bin/spark-entrypoint.sh

# An unprivileged user runs every Spark process. /data is the download cache, and a
# named volume mounted there starts with this ownership.
RUN useradd --create-home --uid 10001 --user-group spark \
    && mkdir -p /data \
    && chown spark:spark /data
USER 10001:10001

EXPOSE 7077 8080 8081 18080
ENTRYPOINT ["/usr/local/bin/spark-entrypoint.sh"]
CMD ["master"]
