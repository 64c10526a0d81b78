# WMT14 English -> German as in Vaswani et al. (2017), "Attention is all you need":
# 4.5M pairs (hub wmt/wmt14 de-en), newstest2013 for validation, newstest2014 for test,
# a joint BPE vocabulary, transformer-base (100k updates) or transformer-big (300k).
#   make -f recipes/wmt14-en-de.mk GPUS=8
#   make -f recipes/wmt14-en-de.mk GPUS=8 ARCH=transformer-big
#   make -f recipes/wmt14-en-de.mk SRC=de TGT=en          # the other direction
# The paper's settings, section 5 and table 3:
# - batches of about 25k source and 25k target tokens on 8 GPUs: MAX_TOKENS per GPU,
#   and UPDATE_FREQ keeps the same batch on fewer GPUs (8 / GPUS);
# - Adam (0.9, 0.98, 1e-9), inverse square-root schedule with 4000 warm-up updates and
#   a peak of d_model^-0.5 * 4000^-0.5 (7e-4 base, 5e-4 big); label smoothing 0.1;
#   dropout 0.1 (base) or 0.3 (big): the presets; post-norm layers (mtkit defaults to pre-norm);
# - the average of the last 5 (base) or 20 (big) checkpoints written 10 minutes apart:
#   about 1500 (base) or 600 (big) updates apart on the paper's hardware;
# - beam 4, length penalty 0.6, at most source length + 50 tokens.
# The paper reports a shared vocabulary of "about 37000" BPE tokens; tensor2tensor, the
# paper's code, used 32k word pieces (translate_ende_wmt32k): VOCAB=37000 for the former.
# Its BLEU (27.3 base, 28.4 big) is tokenized BLEU with compound splitting; sacreBLEU,
# written to bleu.txt here, is usually somewhat lower.

SRC ?= en
TGT ?= de
NAME ?= wmt14-$(SRC)-$(TGT)
DATASET ?= wmt14
PAIR ?= de-en
ARCH ?= transformer-base
BIG = $(filter transformer-big,$(ARCH))
VOCAB ?= 32000
GPUS ?= 1
MAX_TOKENS ?= 3584
UPDATE_FREQ ?= $(shell expr 8 / $(GPUS) \| 1)
MAX_UPDATES ?= $(if $(BIG),300000,100000)
LR ?= $(if $(BIG),5e-4,7e-4)
SAVE_EVERY ?= $(if $(BIG),600,1500)
AVERAGE_LAST ?= $(if $(BIG),20,5)
MODEL_ARGS ?= --set pre_norm=false
TRAIN_ARGS ?= --max-updates $(MAX_UPDATES) --lr $(LR) --warmup 4000 --schedule inverse_sqrt \
	--label-smoothing 0.1 --valid-every $(SAVE_EVERY) --keep-last $(AVERAGE_LAST)
BEAM ?= 4
TRANSLATE_ARGS ?= --len-penalty 0.6 --max-len-a 1 --max-len-b 50

# The training data as WMT14 systems use it: the builder's three subsets, each its own
# corpus (DATA/NAME/), weighted here and only here (NAME:WEIGHT[:tag]; docs/corpora.md).
# Vaswani et al. train on their plain union: weight 1 each. CORPORA= prepares the union
# as one corpus (a hub copy whose subsets are merged).
CORPORA ?= europarl_v7:1 commoncrawl:1 newscommentary_v9:1

# Cleaning as fairseq's prepare-wmt14en2de.sh (at most 250 tokens, length ratio 1.5;
# it counts BPE pieces, mtkit counts words). newstest2013/2014 stay untouched.
PREPARE_CMD = $(MTKIT) prepare --dataset $(DATASET) --pair $(PAIR) --src $(SRC) --tgt $(TGT) \
	--out $(DATA) --max-len 250 --max-ratio 1.5 $(if $(LIMIT),--limit $(LIMIT))

include $(dir $(lastword $(MAKEFILE_LIST)))common.mk
