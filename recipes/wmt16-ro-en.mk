# WMT16 Romanian -> English: 610k pairs, newsdev2016 for validation, newstest2016
# for test; transformer-base with a 40k joint BPE, as in fairseq's and Marian's
# published setups (Sennrich et al., 2016 report 28.1 BLEU with back-translation).
#   make -f recipes/wmt16-ro-en.mk GPUS=1

SRC ?= ro
TGT ?= en
NAME ?= wmt16-$(SRC)-$(TGT)
DATASET ?= wmt16
PAIR ?= ro-en
ARCH ?= transformer-base
VOCAB ?= 40000
MAX_TOKENS ?= 4096
UPDATE_FREQ ?= $(shell expr 4 / $(GPUS) \| 1)
TRAIN_ARGS ?= --max-updates 50000 --lr 7e-4 --warmup 4000 --valid-every 2000 --keep-last 10
BEAM ?= 5
TRANSLATE_ARGS ?= --len-penalty 1.0

PREPARE_CMD = $(MTKIT) prepare --dataset $(DATASET) --pair $(PAIR) --src $(SRC) --tgt $(TGT) \
	--out $(DATA) --max-len 250 --max-ratio 1.5 $(if $(LIMIT),--limit $(LIMIT))

include $(dir $(lastword $(MAKEFILE_LIST)))common.mk
