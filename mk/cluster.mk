# Cluster targets, included by the Makefile.
#
# The Docker cluster (docker/docker-compose.yml): MinIO with the bucket, a Spark
# standalone master, WORKERS workers, a history server, and one-shot containers that
# submit the Spark stages and train the model. Without a Docker engine, a standalone
# master and LOCAL_WORKERS workers from the venv's pyspark (scripts/local_cluster.py)
# take the Spark stages instead, with the warehouse on local disk.

WORKERS ?= 1
# One Spark stage to submit, for example JOB=ingest; empty submits every Spark stage.
JOB ?=
# A service for cluster-logs, for example SERVICE=spark-master; empty shows all.
SERVICE ?=
CLUSTER_STATE ?= .local-cluster
# Workers of the local cluster; each offers LOCAL_WORKER_CORES and LOCAL_WORKER_MEMORY.
LOCAL_WORKERS ?= 1
LOCAL_WORKER_CORES ?= 2
LOCAL_WORKER_MEMORY ?= 4g
COMPOSE := docker compose --file docker/docker-compose.yml --env-file .env
PACKAGE_ZIP := dist/lenspark.zip
PACKAGE_SOURCES := $(sort $(shell find lib/lenspark -name '*.py' -not -path '*/__pycache__/*'))
CLUSTER_STAGES = $(or $(JOB),$(SPARK_STAGES))

.PHONY: cluster-up submit cluster-train cluster-down cluster-logs cluster-status \
	local-cluster-up local-cluster-down local-submit package docker-engine dotenv

docker-engine:
	@docker info >/dev/null 2>&1 || { \
		echo "No Docker engine responds (\`docker info\` failed), so the Docker cluster cannot run."; \
		echo "Start Docker, or use a Spark standalone cluster from the installed pyspark:"; \
		echo "  make local-cluster-up    then    make submit"; \
		exit 1; }

dotenv:
	@test -f .env || { \
		echo "error: .env not found. Copy .env.example to .env and fill in the empty values."; \
		exit 1; }

cluster-up: docker-engine dotenv ## build the images, start MinIO and Spark (WORKERS=N), wait until healthy
	$(COMPOSE) build
	$(COMPOSE) up --detach --wait --scale spark-worker=$(WORKERS) \
		minio spark-master spark-worker spark-history \
		|| { $(COMPOSE) logs --tail 40 minio-init spark-master; exit 1; }
	@echo "Spark master UI    http://$$($(COMPOSE) port spark-master 8080)"
	@echo "History server UI  http://$$($(COMPOSE) port spark-history 18080)"
	@echo "MinIO console      http://$$($(COMPOSE) port minio 9001)"
	@echo "MinIO S3 API       http://$$($(COMPOSE) port minio 9000)"

# With a Docker engine the stages run in the spark-submit container against the bucket.
# Without one they run against the local cluster, if it is up.
submit: ## run the Spark stages (JOB=<stage>, default all) on DATASET in the cluster
	@if docker info >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory dotenv && \
		DATASET='$(DATASET)' SPARK_SUBMIT_ARGS='$(SPARK_SIZE_ARGS) $(SPARK_SUBMIT_ARGS)' \
			$(COMPOSE) run --rm spark-submit submit $(CLUSTER_STAGES); \
	elif test -f $(CLUSTER_STATE)/master-url; then \
		echo "No Docker engine responds; submitting to the local cluster in $(CLUSTER_STATE)."; \
		$(MAKE) --no-print-directory local-submit; \
	else \
		echo "No Docker engine responds and no local cluster is running" \
			"($(CLUSTER_STATE)/master-url is missing)."; \
		echo "Start one with: make local-cluster-up"; \
		exit 1; \
	fi

# The same spark-submit commands as `make ingest` and the other stage targets, with the
# master URL and the secret of the local cluster and the package as a --py-files zip.
local-submit: $(PACKAGE_ZIP)
	@master=$$(cat $(CLUSTER_STATE)/master-url) && \
	properties=$$($(PY) scripts/local_cluster.py properties $(SPARK_PROPERTIES) \
		--state-dir $(CLUSTER_STATE)) && \
	for stage in $(CLUSTER_STAGES); do \
		$(MAKE) --no-print-directory $$stage SPARK_MASTER="$$master" \
			SPARK_PROPERTIES="$$properties" \
			SPARK_SUBMIT_ARGS="--py-files $(PACKAGE_ZIP) $(SPARK_SUBMIT_ARGS)" || exit 1; \
	done

cluster-train: docker-engine dotenv ## train and evaluate in the trainer container, copy reports/DATASET
	@mkdir -p reports
	DATASET='$(DATASET)' HOST_UID=$$(id -u) HOST_GID=$$(id -g) $(COMPOSE) run --rm trainer

cluster-down: docker-engine dotenv ## stop and remove the containers (the bucket's volume stays)
	$(COMPOSE) --profile jobs down --remove-orphans

cluster-logs: docker-engine dotenv ## follow the containers' logs (SERVICE=<name> for one)
	$(COMPOSE) logs --follow --tail 100 $(SERVICE)

cluster-status: ## show the Docker cluster's containers, or the local cluster's state
	@if docker info >/dev/null 2>&1; then \
		$(COMPOSE) ps; \
	else \
		echo "No Docker engine responds; showing the local cluster in $(CLUSTER_STATE)."; \
		$(PY) scripts/local_cluster.py status --state-dir $(CLUSTER_STATE); \
	fi

local-cluster-up: check-java $(STAMP) ## start a Spark master and LOCAL_WORKERS workers on 127.0.0.1
	$(PY) scripts/local_cluster.py start --state-dir $(CLUSTER_STATE) \
		--workers $(LOCAL_WORKERS) --cores $(LOCAL_WORKER_CORES) --memory $(LOCAL_WORKER_MEMORY)

local-cluster-down: ## stop exactly the master and workers that local-cluster-up started
	$(PY) scripts/local_cluster.py stop --state-dir $(CLUSTER_STATE)

package: $(PACKAGE_ZIP) ## zip lib/lenspark into dist/lenspark.zip for spark-submit --py-files

$(PACKAGE_ZIP): $(PACKAGE_SOURCES)
	@mkdir -p $(dir $@)
	$(PY) -c 'import sys, zipfile; \
		z = zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED); \
		[z.write(p, p.removeprefix("lib/")) for p in sys.argv[2:]]; z.close()' \
		$@ $(PACKAGE_SOURCES)
