# WMT16 Romanian -> English: 610k pairs (hub wmt/wmt16 ro-en, Europarl and SETimes),
# newsdev2016 for validation, newstest2016 for test; transformer-base with a 40k joint
# BPE vocabulary, the setup most papers on this pair use since Gu et al. (2018).
#   make -f recipes/wmt16-ro-en.mk GPUS=1
#   make -f recipes/wmt16-ro-en.mk SRC=en TGT=ro
# Published systems also normalise Romanian punctuation and often strip diacritics
# (Sennrich et al., 2016, WMT16 scripts); mtkit prepare does neither.

SRC ?= ro
TGT ?= en
NAME ?= wmt16-$(SRC)-$(TGT)
DATASET ?= wmt16
PAIR ?= ro-en
ARCH ?= transformer-base
VOCAB ?= 40000
GPUS ?= 1
MAX_TOKENS ?= 4096
# About 32k tokens a side per update, whatever the number of GPUs.
UPDATE_FREQ ?= $(shell expr 8 / $(GPUS) \| 1)
MAX_UPDATES ?= 50000
AVERAGE_LAST ?= 5
TRAIN_ARGS ?= --max-updates $(MAX_UPDATES) --lr 7e-4 --warmup 4000 --label-smoothing 0.1 \
	--valid-every 1000 --keep-last $(AVERAGE_LAST)
BEAM ?= 5
TRANSLATE_ARGS ?= --len-penalty 1.0

# The training data as the builder names it: Europarl v8 and SETimes2, each its own corpus
# (DATA/NAME/), weighted here and only here (NAME:WEIGHT[:tag]; docs/corpora.md).
# CORPORA= prepares their union as one corpus (a hub copy whose subsets are merged).
CORPORA ?= europarl_v8_16:1 setimes_2:1

PREPARE_CMD = $(MTKIT) prepare --dataset $(DATASET) --pair $(PAIR) --src $(SRC) --tgt $(TGT) \
	--out $(DATA) --max-len 250 --max-ratio 1.5 $(if $(LIMIT),--limit $(LIMIT))

include $(dir $(lastword $(MAKEFILE_LIST)))common.mk
