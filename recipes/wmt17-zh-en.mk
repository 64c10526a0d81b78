# WMT17 Chinese -> English: about 25M pairs (hub wmt/wmt17 zh-en, with the UN corpus),
# newsdev2017 for validation, newstest2017 for test; transformer-big, the model of the
# strongest published systems on this pair (Hassan et al., 2018), with a 32k joint BPE
# vocabulary covering 99.95% of characters (SentencePiece's advice for Chinese: the
# rarest characters become <unk> instead of filling the vocabulary).
#   make -f recipes/wmt17-zh-en.mk GPUS=8
#   make -f recipes/wmt17-zh-en.mk SRC=en TGT=zh     # scored with sacreBLEU's zh tokenizer
# train-bpe samples 2M lines of the training text (--input-sentence-size).

SRC ?= zh
TGT ?= en
NAME ?= wmt17-$(SRC)-$(TGT)
DATASET ?= wmt17
PAIR ?= zh-en
ARCH ?= transformer-big
VOCAB ?= 32000
BPE_ARGS ?= --character-coverage 0.9995
GPUS ?= 1
MAX_TOKENS ?= 3584
UPDATE_FREQ ?= $(shell expr 8 / $(GPUS) \| 1)
MAX_UPDATES ?= 300000
AVERAGE_LAST ?= 10
TRAIN_ARGS ?= --max-updates $(MAX_UPDATES) --lr 5e-4 --warmup 4000 --label-smoothing 0.1 \
	--valid-every 2000 --keep-last $(AVERAGE_LAST)
BEAM ?= 5
TRANSLATE_ARGS ?= --len-penalty 1.0 --max-len-a 1.5

# The training data as the builder names it: News Commentary v12, the UN corpus and CWMT's
# parts, each its own corpus (DATA/NAME/), weighted here and only here (NAME:WEIGHT[:tag];
# docs/corpora.md). CORPORA= prepares their union as one corpus.
CORPORA ?= newscommentary_v12:1 uncorpus_v1:1 casia2015:1 casict2011:1 casict2015:1 datum2015:1 datum2017:1 neu2017:1

# Chinese has no spaces between words: count lengths in characters.
PREPARE_CMD = $(MTKIT) prepare --dataset $(DATASET) --pair $(PAIR) --src $(SRC) --tgt $(TGT) \
	--out $(DATA) --max-len 400 --len-unit chars --max-ratio 9 $(if $(LIMIT),--limit $(LIMIT))

include $(dir $(lastword $(MAKEFILE_LIST)))common.mk
