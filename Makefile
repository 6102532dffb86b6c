# lenspark: every entry point a person types. `make help` lists them.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATASET ?= ml-latest-small
WAREHOUSE ?= warehouse
REPORTS ?= reports
SPARK_MASTER ?= local[*]
SPARK_PROPERTIES ?= spark-defaults.conf
# Extra spark-submit options, for example SPARK_SUBMIT_ARGS="--driver-memory 8g".
SPARK_SUBMIT_ARGS ?=
PYTEST_ARGS ?=

# Driver and executors must run the same Python: the venv's, by absolute path so that
# standalone workers, whose working folder differs, find it too.
PYSPARK_PYTHON ?= $(abspath $(PY))
export PYSPARK_PYTHON
# One id for every stage of one make command, so their manifests group under
# warehouse/<DATASET>/_manifest/runs/<RUN_ID>/.
ifndef RUN_ID
RUN_ID := $(shell date -u +%Y%m%dT%H%M%SZ)
endif
export RUN_ID
# Spark's log settings (conf/log4j2.properties) and, for local runs, the loopback address.
SPARK_CONF_DIR ?= $(abspath conf)
SPARK_LOCAL_IP ?= 127.0.0.1
export SPARK_CONF_DIR SPARK_LOCAL_IP
# Settings that depend on the size of the data. DATA_SIZE is large unless DATASET is one
# of the small samples; DATA_SIZE=small or DATA_SIZE=large overrides the choice. For
# large data, conf/spark-large.conf is layered on SPARK_PROPERTIES as --conf options,
# and the reference model of `make train` runs 2 epochs in batches of 1024 rows unless
# EPOCHS or BATCH_SIZE is set: its recipe of 20 epochs of 32 rows would take hours.
SMALL_DATASETS ?= ml-latest-small
DATA_SIZE ?= $(if $(filter $(SMALL_DATASETS),$(DATASET)),small,large)
ifeq ($(filter small large,$(DATA_SIZE)),)
$(error DATA_SIZE must be small or large, got '$(DATA_SIZE)')
endif
# An empty value, as an enclosing make exports for an unset variable, counts as unset.
ifeq ($(DATA_SIZE),large)
ifeq ($(strip $(EPOCHS)),)
EPOCHS := 2
endif
ifeq ($(strip $(BATCH_SIZE)),)
BATCH_SIZE := 1024
endif
endif
LARGE_SPARK_ARGS = $(shell awk '/^spark\./ {printf "--conf %s=%s ", $$1, $$2}' conf/spark-large.conf)
SPARK_SIZE_ARGS = $(if $(filter large,$(DATA_SIZE)),$(LARGE_SPARK_ARGS))
export DATASET WAREHOUSE REPORTS MOVIELENS_DIR DATA_DIR SEED EPOCHS BATCH_SIZE \
	TRAIN_PERCENT MAX_REJECT_RATE SPLIT VALIDATION_PERCENT MODELS N RANKING_USERS CHECKPOINT_DIR

STAMP := $(VENV)/.installed
SPARK_STAGES := ingest merge explore prepare index als
PYTHON_STAGES := train evaluate compare
SPARK_SUBMIT = $(VENV)/bin/spark-submit --master '$(SPARK_MASTER)' \
	--properties-file $(SPARK_PROPERTIES) $(SPARK_SIZE_ARGS) $(SPARK_SUBMIT_ARGS)

.PHONY: help setup check-java run pipeline $(SPARK_STAGES) $(PYTHON_STAGES) summary \
	recommend recommend-all \
	lint format test test-fast clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "} {printf "  %-20s %s\n", $$1, $$2}'

check-java: ## fail with a hint unless Java 17 or newer is on PATH
	@$(PYTHON) scripts/check_java.py

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[spark,train,dev,bench]'
	@touch $@

setup: check-java $(STAMP) ## create .venv and install the pinned dependencies

run: setup pipeline ## set up, then run every stage on DATASET (default ml-latest-small)

pipeline: $(SPARK_STAGES) $(PYTHON_STAGES) summary

$(SPARK_STAGES): setup
	$(SPARK_SUBMIT) jobs/$@.py

ingest: ## read the four CSV files into typed Parquet tables
merge: ## join ratings, movies, links and tags into one row per rating
explore: ## write rating statistics, plots and an HTML page to reports/DATASET
prepare: ## label, index genres and split into train and test Parquet (SPLIT=hash|temporal)
index: ## index users, movies and genres on train; write indexed fit, validation and test tables
als: ## choose Spark MLlib ALS on the validation rows, refit it, write its factors and als.json

train: setup ## train the reference Keras model on the train table
	$(VENV)/bin/lenspark-train

evaluate: setup ## score the model on the test table against the majority class
	$(VENV)/bin/lenspark-evaluate

compare: setup ## train and score every selected model (MODELS) on the same test rows
	$(VENV)/bin/lenspark-compare

recommend: setup ## print the top N movies (default 10) for USER_ID, from the best model by nDCG@10
	@test -n '$(USER_ID)' || { echo "Set USER_ID, for example: make recommend USER_ID=547 N=10"; exit 2; }
	$(VENV)/bin/lenspark-recommend --user-id '$(USER_ID)' --top-n '$(or $(N),10)'

recommend-all: setup ## write the top N movies of every user to the recommendations table
	$(VENV)/bin/lenspark-recommend --all-users --top-n '$(or $(N),10)'

summary:
	@$(PY) -m lenspark.summary

lint: $(STAMP) ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: check-java $(STAMP) lint ## lint, then every test, slow ones included
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: check-java $(STAMP) ## every test not marked slow
	$(PY) -m pytest -m 'not slow' $(PYTEST_ARGS)

clean: ## remove the warehouse, reports and build files (keeps .venv and data/)
	rm -rf $(WAREHOUSE) $(REPORTS) build dist spark-warehouse metastore_db .pytest_cache

-include mk/*.mk
