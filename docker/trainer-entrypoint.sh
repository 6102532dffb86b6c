#!/bin/sh
# Entrypoint of the trainer image. Without arguments: train and evaluate on the tables
# in WAREHOUSE, then copy DATASET's reports from the bucket to /reports-out, which
# docker-compose.yml mounts from the repository's reports/ folder. With arguments:
# run them as a command.
set -eu

if [ "$#" -gt 0 ]; then
    exec "$@"
fi

lenspark-train
lenspark-evaluate
python -m lenspark.bucket download "${REPORTS%/}/$DATASET" "/reports-out/$DATASET"
