# Benchmark target, included by the Makefile; not part of `make test`.
#
# `make bench` runs bench/run_bench.py on DATASET (default ml-20m-synthetic here unless set
# on the command line or in the environment): Spark ETL as a user runs it, against DuckDB and
# against one Spark session, the index and ALS stages, the training speed of the embedding
# model against the reference recipe, and the compare stage. It writes BENCHMARKS.md and
# docs/bench/stage_times.png. Make the data first with `make synth`.
#
# Every spark-submit of the run gets the options `make ingest` and the other stages would
# pass for that dataset: conf/spark-large.conf unless it is a small sample, then
# SPARK_SUBMIT_ARGS.

BENCH_DATASET = $(if $(filter command line environment,$(origin DATASET)),$(DATASET),ml-20m-synthetic)
BENCH_MOVIELENS_DIR = $(or $(MOVIELENS_DIR),data/$(BENCH_DATASET))
BENCH_SPARK_SUBMIT_ARGS ?= $(strip $(if $(filter $(SMALL_DATASETS),$(BENCH_DATASET)),,\
	$(LARGE_SPARK_ARGS)) $(SPARK_SUBMIT_ARGS))
BENCH_MODELS ?= embedding,bias,global_mean,majority,popularity,als
# Comma-separated phases of bench/run_bench.py, or all.
BENCH_PHASES ?= all

.PHONY: bench bench-deps

# DuckDB is a benchmark-only dependency: the `bench` extra of pyproject.toml. It is
# installed only when the venv's Python cannot import it yet.
bench-deps: $(STAMP)
	@$(PY) -c 'import duckdb, psutil' 2>/dev/null || $(PY) -m pip install -q -e '.[bench]'

bench: check-java bench-deps ## benchmark ETL, training and ALS on DATASET; writes BENCHMARKS.md
	@test -f '$(BENCH_MOVIELENS_DIR)/ratings.csv' || { \
		echo "$(BENCH_MOVIELENS_DIR)/ratings.csv not found. Make the data first:" \
			"make synth DATASET=$(BENCH_DATASET), or set MOVIELENS_DIR."; exit 2; }
	BENCH_COMMAND="make bench DATASET=$(BENCH_DATASET)" \
	$(PY) bench/run_bench.py --dataset '$(BENCH_DATASET)' \
		--movielens-dir '$(BENCH_MOVIELENS_DIR)' \
		--spark-submit-args '$(BENCH_SPARK_SUBMIT_ARGS)' --spark-master '$(SPARK_MASTER)' \
		--models '$(BENCH_MODELS)' --phases '$(BENCH_PHASES)'
