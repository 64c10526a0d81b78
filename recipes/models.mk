# Training settings and rules shared by the recipes that train several models over one
# vocabulary (backtranslate.mk, distill.mk). Included after the recipe sets RUN and SPM.
#
#   $(eval $(call train_model,NAME,SRC,TGT,DATA_ARGS,PREREQUISITES,MORE_TRAIN_ARGS))
#     RUN/NAME/train.done         mtkit train DATA_ARGS --src SRC --tgt TGT --out RUN/NAME;
#                                 MORE_TRAIN_ARGS come last, so they override TRAIN_ARGS
#     RUN/NAME/checkpoint_avg.pt  mtkit average of its last AVERAGE_LAST checkpoints
#   $(eval $(call translate_test,NAME,CHECKPOINTS,SOURCE,MORE_TRANSLATE_ARGS,PREREQUISITES))
#     RUN/NAME.hyp, RUN/NAME.speed  beam BEAM over SOURCE in one process with THREADS
#                                   threads; .speed holds translate's closing line
#                                   (lines/s, model loading left out). PREREQUISITES
#                                   may end in "| FILES": made first, not compared.
include $(dir $(lastword $(MAKEFILE_LIST)))tools.mk

ARCH ?= transformer-small
ifeq ($(CPU_MODEL),yes)
# On the CPU every model of a comparison gets the same number of updates (a time budget
# would give fewer to the run that shared the machine with another): about 11 minutes
# each for transformer-small on 2 quiet cores. The cosine decays over them.
MAX_TOKENS ?= 2048
LR ?= 2e-3
WARMUP ?= 300
SCHEDULE ?= cosine
MAX_UPDATES ?= 800
MAX_EPOCHS ?= 0
MAX_TIME ?= 0
VALID_EVERY ?= 200
VALID_SENTENCES ?= 300
SAVE_AT ?= 0.9
AVERAGE_LAST ?= 2
# Long translation jobs (the monolingual or training text) run one process a core.
JOB_ARGS ?= --workers $(shell nproc 2>/dev/null || echo 1)
else
MAX_TOKENS ?= 4096
LR ?= 1e-3
WARMUP ?= 1000
SCHEDULE ?= inverse_sqrt
MAX_UPDATES ?= 0
MAX_EPOCHS ?= 40
MAX_TIME ?= 15m
VALID_EVERY ?= 0
VALID_SENTENCES ?= 500
SAVE_AT ?=
AVERAGE_LAST ?= 5
JOB_ARGS ?=
endif
# Threads of the timed test translations, and of training (TRAIN_THREADS; not a setting
# of the model: changing it continues a run rather than starting it over).
THREADS ?= 0
TRAIN_THREADS ?= $(THREADS)
BEAM ?= 5
# Model settings beyond ARCH's preset (--set KEY=VALUE ...).
MODEL_ARGS ?=
TRAIN_ARGS ?= --max-tokens $(MAX_TOKENS) --lr $(LR) --warmup $(WARMUP) --schedule $(SCHEDULE) \
	--max-updates $(MAX_UPDATES) --max-epochs $(MAX_EPOCHS) --max-time $(MAX_TIME) \
	--valid-every $(VALID_EVERY) --valid-bleu-sentences $(VALID_SENTENCES) \
	--keep-last $(AVERAGE_LAST) $(if $(SAVE_AT),--save-at $(SAVE_AT))
TRANSLATE_ARGS ?= --threads $(THREADS)
SCORE_ARGS ?= --metrics bleu,chrf --paired-bs

define train_model
$(call remember,$(RUN)/$1/.settings/train,$2 $3 $4 $6 $(MODEL_ARGS) $(TRAIN_ARGS) $(abspath $(SPM)))
$(RUN)/$1/train.done: $5 $(SPM) $(RUN)/$1/.settings/train
	$$(call set_aside,$(RUN)/$1)
	$(MTKIT) train $4 --spm $(SPM) --src $2 --tgt $3 --out $(RUN)/$1 --device $(DEVICE) \
		--threads $(TRAIN_THREADS) --resume $(MODEL_ARGS) $(TRAIN_ARGS) $6
	touch $$@

$(RUN)/$1/checkpoint_avg.pt: $(RUN)/$1/train.done
	$(MTKIT) average $(RUN)/$1 --last $(AVERAGE_LAST) -o $$@
endef

define translate_test
$(call remember,$(RUN)/.settings/$1.hyp,$3 $4 $(BEAM) $(TRANSLATE_ARGS))
$(RUN)/$1.hyp: $2 $3 $(RUN)/.settings/$1.hyp $5
	COLUMNS=200 $(MTKIT) translate $(foreach m,$2,-m $m) -i $3 -o $$@ --beam $(BEAM) --device $(DEVICE) \
		--restart $(TRANSLATE_ARGS) $4 2> $(RUN)/$1.log || { cat $(RUN)/$1.log >&2; exit 1; }
	grep -o 'translated .*lines/s' $(RUN)/$1.log > $(RUN)/$1.speed
endef

%/.settings/train: ;

# One line on the machine, for the tables that hold speed figures.
CPU_LINE = $(PY) -c "from mtkit.device import describe_cpu; print(describe_cpu())"