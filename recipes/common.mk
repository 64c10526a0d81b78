# The pipeline every recipe shares: prepare -> train-bpe -> train -> average ->
# translate -> score. Each stage writes a file the next one reads, so `make`
# resumes where it stopped, reruns only what changed, and a second `make` does
# nothing.
#
#   DATA/manifest.json, train.SRC ...    prepare
#   DATA/spm/spm.model                   train-bpe (joint)
#   DATA/NAME/manifest.json, train.SRC  prepare --subset NAME, for each NAME in CORPORA
#   DATA/.encoded/KEY/                   train, on first use: the encoded training corpus
#                                        that every later start, resume and GPU maps
#   RUN/train.done, checkpoint_*.pt      train (train.done: the run finished)
#   RUN/checkpoint_avg.pt                average of the last AVERAGE_LAST checkpoints
#   RUN/test.hyp                         translate DATA/test.SRC
#   RUN/bleu.txt                         score against DATA/test.TGT: BLEU, chrF, signatures
#
# A pair's recipe sets SRC, TGT, NAME and PREPARE_CMD (and its published
# settings), then includes this file.
#
# A data mix (the WMT recipes): CORPORA lists the dataset's training subsets as
# NAME:WEIGHT[:tag]. Each NAME is prepared on its own (PREPARE_CMD --subset NAME)
# into DATA/NAME/, DATA/ itself holds only valid and test, and train reads every
# DATA/NAME with its weight (docs/corpora.md). CORPORA= (empty) prepares the whole
# training split into DATA/ as one corpus, as for a copy whose subsets are merged. Every variable can be set on the command
# line:  make -f recipes/wmt14-en-de.mk DATA=/big/disk/wmt14 GPUS=8 ARCH=transformer-big
#
# Settings are remembered too: each stage's options are kept in DATA/.settings/
# and RUN/.settings/, and a file there is rewritten only when its options
# change, so `make VOCAB=16000` redoes train-bpe and everything after it.

# --- the data mix -----------------------------------------------------------------
CORPORA ?=
CORPUS_NAMES = $(foreach c,$(CORPORA),$(firstword $(subst :, ,$(c))))
CORPUS_MANIFESTS = $(foreach n,$(CORPUS_NAMES),$(DATA)/$(n)/manifest.json)
TRAIN_DIRS = $(if $(CORPORA),$(addprefix $(DATA)/,$(CORPUS_NAMES)),$(DATA))
TRAIN_DATA = $(if $(CORPORA),$(foreach c,$(CORPORA),--data $(DATA)/$(c)),--data $(DATA))
TRAIN_TEXT = $(foreach d,$(TRAIN_DIRS),--input $(d)/train.$(SRC) --input $(d)/train.$(TGT))
ENCODED = $(foreach d,$(TRAIN_DIRS),$(d)/.encoded)

# --- tools -------------------------------------------------------------------
include $(dir $(lastword $(MAKEFILE_LIST)))tools.mk
# One machine by default; for several, e.g. --nnodes 2 --node-rank 0 --rdzv-endpoint HOST:29500
TORCHRUN_ARGS ?= --standalone

# --- what to train -------------------------------------------------------------
ARCH ?= transformer-small
VOCAB ?= 8000
SPM_TYPE ?= bpe
BPE_ARGS ?=
DATA ?= data/$(NAME)
RUN ?= runs/$(NAME)-$(ARCH)
LIMIT ?=
GPUS ?= 1
MAX_TOKENS ?= 4096
UPDATE_FREQ ?= 1
# Model settings beyond the preset (--set KEY=VALUE ...), then the rest of train's options.
MODEL_ARGS ?=
TRAIN_ARGS ?=
AVERAGE_LAST ?= 5
BEAM ?= 5
TRANSLATE_ARGS ?=
# BLEU's tokenizer follows the target language, as sacreBLEU's own test sets do.
SCORE_TOKENIZE ?= $(if $(filter zh,$(TGT)),zh,13a)
SCORE_ARGS ?= --metrics bleu,chrf --tokenize $(SCORE_TOKENIZE)

ifeq ($(GPUS),1)
TRAIN_CMD = $(MTKIT) train
else
TRAIN_CMD = $(TORCHRUN) $(TORCHRUN_ARGS) --nproc_per_node $(GPUS) -m mtkit train
endif

# --- remembered settings (tools.mk's remember) ----------------------------------------
$(call remember,$(DATA)/.settings/prepare,$(PREPARE_CMD))
$(call remember,$(DATA)/.settings/bpe,$(SRC) $(TGT) $(VOCAB) $(SPM_TYPE) $(BPE_ARGS))
$(call remember,$(RUN)/.settings/train,$(abspath $(DATA)) $(SRC) $(TGT) $(ARCH) \
	$(MAX_TOKENS) $(UPDATE_FREQ) $(MODEL_ARGS) $(TRAIN_ARGS) $(CORPORA))
$(call remember,$(RUN)/.settings/average,$(AVERAGE_LAST))
$(call remember,$(RUN)/.settings/translate,$(BEAM) $(TRANSLATE_ARGS))
$(call remember,$(RUN)/.settings/score,$(SCORE_ARGS))

# --- the stages ------------------------------------------------------------------
.PHONY: all prepare bpe train average translate score show clean-run
.DELETE_ON_ERROR:
.SUFFIXES:

all: score

prepare: $(DATA)/manifest.json $(CORPUS_MANIFESTS)
bpe: $(DATA)/spm/spm.model
train: $(RUN)/train.done
average: $(RUN)/checkpoint_avg.pt
translate: $(RUN)/test.hyp
score: $(RUN)/bleu.txt

# `make show`: bleu.txt, made first if need be (make demo uses it).
show: score
	@cat $(RUN)/bleu.txt

# New text or a new vocabulary makes train encode the corpus again (under a new key):
# the old encoding is removed here rather than left to fill the disk.
$(DATA)/manifest.json: $(DATA)/.settings/prepare
	rm -rf $(DATA)/.encoded
	$(PREPARE_CMD) $(if $(CORPORA),--train-split -)

# One training subset of a mix: its own directory, its valid split (validation reads the
# first corpus's), no test split (DATA/test.* is the one translate and score read).
$(DATA)/%/manifest.json: $(DATA)/.settings/prepare
	rm -rf $(DATA)/$*/.encoded
	$(PREPARE_CMD) --subset $* --out $(DATA)/$* --test-split -

$(DATA)/spm/spm.model: $(DATA)/manifest.json $(CORPUS_MANIFESTS) $(DATA)/.settings/bpe
	rm -rf $(ENCODED)
	$(MTKIT) train-bpe $(TRAIN_TEXT) \
		--vocab-size $(VOCAB) --model-type $(SPM_TYPE) --out $(DATA)/spm $(BPE_ARGS)

# train.done marks a finished run. An interrupted run has checkpoint_last.pt but no
# train.done, and `make` continues it (--resume). A run older than its data, vocabulary
# or settings is moved to RUN/replaced-DATE/ first, and training starts over.
$(RUN)/train.done: $(DATA)/manifest.json $(CORPUS_MANIFESTS) $(DATA)/spm/spm.model \
		$(RUN)/.settings/train
	$(call set_aside,$(RUN))
	$(TRAIN_CMD) $(TRAIN_DATA) --spm $(DATA)/spm/spm.model --src $(SRC) --tgt $(TGT) \
		--arch $(ARCH) --out $(RUN) --device $(DEVICE) --max-tokens $(MAX_TOKENS) \
		--update-freq $(UPDATE_FREQ) --resume $(MODEL_ARGS) $(TRAIN_ARGS)
	touch $@

$(RUN)/checkpoint_avg.pt: $(RUN)/train.done $(RUN)/.settings/average
	$(MTKIT) average $(RUN) --last $(AVERAGE_LAST) -o $@

$(RUN)/test.hyp: $(RUN)/checkpoint_avg.pt $(RUN)/.settings/translate
	$(MTKIT) translate -m $< -i $(DATA)/test.$(SRC) -o $@ --beam $(BEAM) \
		--device $(DEVICE) $(TRANSLATE_ARGS)

$(RUN)/bleu.txt: $(RUN)/test.hyp $(RUN)/.settings/score
	$(MTKIT) score -r $(DATA)/test.$(TGT) -i $< $(SCORE_ARGS) > $@.tmp || { rm -f $@.tmp; exit 1; }
	@mv $@.tmp $@
	$(if $(filter show,$(MAKECMDGOALS)),,@echo "$@:" && cat $@)

# Settings files are written when the recipe is read; this rule only covers one removed
# by hand while make runs.
%/.settings/prepare %/.settings/bpe %/.settings/train %/.settings/average \
%/.settings/translate %/.settings/score: ;

clean-run:
	rm -rf $(RUN)
