# WMT14 English -> German as in Vaswani et al. (2017): 4.5M pairs, 32k joint BPE,
# newstest2013 for validation, newstest2014 for test, transformer-base or -big.
#   make -f recipes/wmt14-en-de.mk GPUS=8
#   make -f recipes/wmt14-en-de.mk ARCH=transformer-big GPUS=8
# The paper's batches held about 25k source and 25k target tokens (8 GPUs);
# UPDATE_FREQ keeps that size on fewer GPUs.

SRC ?= en
TGT ?= de
NAME ?= wmt14-$(SRC)-$(TGT)
DATASET ?= wmt14
PAIR ?= de-en
ARCH ?= transformer-base
VOCAB ?= 32000
GPUS ?= 1
MAX_TOKENS ?= 3584
UPDATE_FREQ ?= $(shell expr 8 / $(GPUS) \| 1)
MAX_UPDATES ?= $(if $(filter transformer-big,$(ARCH)),300000,100000)
TRAIN_ARGS ?= --max-updates $(MAX_UPDATES) --lr 7e-4 --warmup 4000 --valid-every 2500 \
	--keep-last 20
AVERAGE_LAST ?= $(if $(filter transformer-big,$(ARCH)),20,5)
BEAM ?= 4
TRANSLATE_ARGS ?= --len-penalty 0.6

PREPARE_CMD = $(MTKIT) prepare --dataset $(DATASET) --pair $(PAIR) --src $(SRC) --tgt $(TGT) \
	--out $(DATA) --max-len 250 --max-ratio 1.5 $(if $(LIMIT),--limit $(LIMIT))

include $(dir $(lastword $(MAKEFILE_LIST)))common.mk
