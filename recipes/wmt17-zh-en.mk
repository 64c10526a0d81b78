# WMT17 Chinese -> English: about 25M pairs (hub wmt/wmt17 zh-en), newsdev2017 for
# validation, newstest2017 for test; transformer-big with separate vocabularies
# would be the published choice (Hassan et al., 2018 used far more); here a 32k
# joint unigram model with 0.9995 character coverage, the SentencePiece advice for CJK.
#   make -f recipes/wmt17-zh-en.mk GPUS=8

SRC ?= zh
TGT ?= en
NAME ?= wmt17-$(SRC)-$(TGT)
DATASET ?= wmt17
PAIR ?= zh-en
ARCH ?= transformer-base
VOCAB ?= 32000
SPM_TYPE ?= unigram
MAX_TOKENS ?= 4096
UPDATE_FREQ ?= $(shell expr 8 / $(GPUS) \| 1)
TRAIN_ARGS ?= --max-updates 150000 --lr 7e-4 --warmup 4000 --valid-every 2500 --keep-last 10
BEAM ?= 5
TRANSLATE_ARGS ?= --len-penalty 1.0

# Chinese has no spaces: cap lengths in characters, not words.
PREPARE_CMD = $(MTKIT) prepare --dataset $(DATASET) --pair $(PAIR) --src $(SRC) --tgt $(TGT) \
	--out $(DATA) --max-len 400 --len-unit chars --max-ratio 9 $(if $(LIMIT),--limit $(LIMIT))

include $(dir $(lastword $(MAKEFILE_LIST)))common.mk
