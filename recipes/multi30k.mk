# Multi30k (Elliott et al., 2016), task 1: 29k image captions, transformer-small.
#   make -f recipes/multi30k.mk                  # de -> en
#   make -f recipes/multi30k.mk SRC=en TGT=de    # en -> de
# Reads Multi30k from the Hugging Face hub (bentrevett/multi30k) when it answers,
# else from MULTI30K, a directory of {train,val,test_2016_flickr}.{de,en}.gz.
# HUB=no skips the hub (as does HF_HUB_OFFLINE=1); HUB=yes insists on it.
#
# Training stops after MAX_EPOCHS, MAX_UPDATES or MAX_TIME of training (validation not
# counted), whichever comes first: on a GPU the epochs (a few minutes), on a CPU the time.
# Without a GPU (DEVICE=cpu, or DEVICE=auto and no nvidia-smi) the recipe sets
# CPU_MODEL=yes: 20 minutes of training with smaller batches and a shorter warm-up, run
# directory ...-cpu. docs/training-budget.md says how the budget shapes the schedule.

SRC ?= de
TGT ?= en
NAME ?= multi30k-$(SRC)-$(TGT)
MULTI30K ?= ../shared/data/multi30k
HUB_ID ?= bentrevett/multi30k
HUB ?= auto

ARCH ?= transformer-small
MAX_EPOCHS ?= 40
include $(dir $(lastword $(MAKEFILE_LIST)))tools.mk
ifeq ($(CPU_MODEL),yes)
# 20 minutes of training (MAX_TIME); the learning rate decays to 0 along a half cosine
# that ends with them (mtkit train --max-time), however many updates the machine makes,
# so a slow machine's last checkpoints are annealed too. Warm-up ends after WARMUP
# updates or WARMUP_SHARE of the budget, whichever comes first. Batch size, dropout, lr
# and warm-up are the best of `python -m bench schedule_sweep` (20 minutes on one core
# each; its figures are in docs/training-budget.md). The numbered checkpoint saved at
# 90% of the budget (SAVE_AT) and the last are the AVERAGE_LAST=2 that `average` takes.
MAX_TOKENS ?= 1024
MODEL_ARGS ?= --set dropout=0
VOCAB ?= 8000
LR ?= 2e-3
WARMUP ?= 500
WARMUP_SHARE ?= 0.35
SCHEDULE ?= cosine
VALID_EVERY ?= 200
VALID_SENTENCES ?= 300
MAX_TIME ?= 20m
AVERAGE_LAST ?= 2
SAVE_AT ?= 0.9
RUN ?= runs/$(NAME)-$(ARCH)-cpu
else
MAX_TOKENS ?= 4096
VOCAB ?= 8000
LR ?= 1e-3
WARMUP ?= 1000
VALID_EVERY ?= 0
VALID_SENTENCES ?= 500
MAX_TIME ?= 15m
AVERAGE_LAST ?= 5
endif
SCHEDULE ?= inverse_sqrt
WARMUP_SHARE ?= 0.25
MAX_UPDATES ?= 0
SAVE_AT ?=
TRAIN_ARGS ?= --max-epochs $(MAX_EPOCHS) --max-time $(MAX_TIME) --lr $(LR) --warmup $(WARMUP) \
	--warmup-share $(WARMUP_SHARE) \
	--schedule $(SCHEDULE) --max-updates $(MAX_UPDATES) \
	--valid-every $(VALID_EVERY) --valid-bleu-sentences $(VALID_SENTENCES) --keep-last $(AVERAGE_LAST) \
	$(if $(SAVE_AT),--save-at $(SAVE_AT))
BEAM ?= 5

HUB_PROBE = $(PY) -c "from huggingface_hub import HfApi; HfApi().dataset_info('$(HUB_ID)', timeout=10)"
LIMIT_ARG = $(if $(LIMIT),--limit $(LIMIT))

define PREPARE_CMD
@if [ "$(HUB)" = yes ] || { [ "$(HUB)" = auto ] && $(HUB_PROBE) >/dev/null 2>&1; }; then \
	echo "reading Multi30k from the hub ($(HUB_ID))" >&2; set -x; \
	$(MTKIT) prepare --dataset $(HUB_ID) --src $(SRC) --tgt $(TGT) --out $(DATA) $(LIMIT_ARG); \
else \
	echo "reading Multi30k from $(MULTI30K) (the hub was not used)" >&2; set -x; \
	$(MTKIT) prepare --src $(SRC) --tgt $(TGT) --out $(DATA) $(LIMIT_ARG) \
		--src-file $(MULTI30K)/train.$(SRC).gz --tgt-file $(MULTI30K)/train.$(TGT).gz \
		--valid-src-file $(MULTI30K)/val.$(SRC).gz --valid-tgt-file $(MULTI30K)/val.$(TGT).gz \
		--test-src-file $(MULTI30K)/test_2016_flickr.$(SRC).gz \
		--test-tgt-file $(MULTI30K)/test_2016_flickr.$(TGT).gz; \
fi
endef

include $(dir $(lastword $(MAKEFILE_LIST)))common.mk

# The run's training curves beside bleu.txt (`make demo` says where): mtkit plot.
all show: $(RUN)/curves.png
$(RUN)/curves.png: $(RUN)/train.done
	$(MTKIT) plot $(RUN) -o $@ --title "Multi30k $(SRC)-$(TGT), $(ARCH)"
