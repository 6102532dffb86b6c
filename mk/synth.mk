# Synthetic MovieLens data: `make synth` writes a release with ML-20M's shape to
# $(DATA_DIR)/$(DATASET) (DATA_DIR defaults to data). DATASET defaults to ml-20m-synthetic
# here unless set on the command line or in the environment, because the generator only
# writes releases whose name ends in -synthetic.

SYNTH_DATASET = $(if $(filter command line environment,$(origin DATASET)),$(DATASET),ml-20m-synthetic)
SYNTH_SEED = $(or $(SEED),1234)
SCALE ?= 20M

.PHONY: synth

synth: $(STAMP) ## write a synthetic ML-20M twin: DATASET=ml-20m-synthetic SEED=1234 SCALE=20M|1M|100M
	$(PY) -m lenspark.synth --dataset $(SYNTH_DATASET) --seed $(SYNTH_SEED) --scale $(SCALE) \
		--out $(or $(DATA_DIR),data)/$(SYNTH_DATASET)
