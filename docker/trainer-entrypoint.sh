#!/bin/sh
# Entrypoint of the trainer image. Without arguments: train and evaluate the reference
# model, train and compare the selected models (MODELS) on the tables in WAREHOUSE, write
# every user's top N, then copy DATASET's reports from the bucket to /reports-out, which
# docker-compose.yml mounts from the repository's reports/ folder. With arguments:
# run them as a command.
set -eu

if [ "$#" -gt 0 ]; then
    exec "$@"
fi

# The reference recipe (batch size 32) takes hours beyond the sample; MODELS=auto
# leaves it out of the comparison there, and it is trained here only on the sample.
if [ "$DATASET" = ml-latest-small ]; then
    lenspark-train
    lenspark-evaluate
fi
lenspark-compare
lenspark-recommend --all-users
python -m lenspark.bucket download "${REPORTS%/}/$DATASET" "/reports-out/$DATASET"
