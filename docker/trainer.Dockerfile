# syntax=docker/dockerfile:1
# The training container: Python, the lenspark package, pyarrow, boto3 and TensorFlow
# (tensorflow-cpu on x86_64, tensorflow elsewhere, as the `train` extra selects). No Java.
# Build from the repository root: docker build -f docker/trainer.Dockerfile .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=1

WORKDIR /opt/lenspark
COPY pyproject.toml README.md ./
COPY lib ./lib
# DL3013 asks for pins on the command line, but they live in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir '.[train]'

COPY --chmod=0755 docker/trainer-entrypoint.sh /usr/local/bin/trainer-entrypoint.sh

# docker-compose.yml may run this image as the host user (HOST_UID) so that the copied
# reports belong to that user; HOME is then set to a writable folder there.
RUN useradd --create-home --uid 10001 --user-group trainer
USER 10001:10001

ENTRYPOINT ["/usr/local/bin/trainer-entrypoint.sh"]
