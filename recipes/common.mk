# The pipeline every recipe shares: prepare -> train-bpe -> train -> average ->
# translate -> score. Each stage writes a file the next one reads, so `make`
# resumes where it stopped and reruns only what changed.
#
# A pair's recipe sets the variables below (those marked "required") and includes
# this file. Every variable can be overridden on the command line:
#   make -f recipes/wmt14-en-de.mk DATA=/big/disk/wmt14 GPUS=8 ARCH=transformer-big

# --- tools -------------------------------------------------------------------
BIN ?= .venv/bin
MTKIT ?= $(BIN)/mtkit
TORCHRUN ?= $(BIN)/torchrun

# --- what to train (required: SRC, TGT, NAME and a prepare command) -----------
ARCH ?= transformer-small
VOCAB ?= 8000
SPM_TYPE ?= bpe
DATA ?= data/$(NAME)
RUN ?= runs/$(NAME)-$(ARCH)
LIMIT ?=
DEVICE ?= auto
GPUS ?= 1
MAX_TOKENS ?= 4096
UPDATE_FREQ ?= 1
TRAIN_ARGS ?=
AVERAGE_LAST ?= 5
BEAM ?= 5
TRANSLATE_ARGS ?=
SCORE_ARGS ?=

ifeq ($(GPUS),1)
TRAIN_CMD = $(MTKIT) train
else
TRAIN_CMD = $(TORCHRUN) --nproc_per_node $(GPUS) -m mtkit train
endif

.PHONY: all prepare bpe train average translate score clean-run
.DELETE_ON_ERROR:

all: score
	@cat $(RUN)/bleu.txt

prepare: $(DATA)/manifest.json
bpe: $(DATA)/spm/spm.model
train: $(RUN)/train.done
average: $(RUN)/checkpoint_avg.pt
translate: $(RUN)/test.hyp
score: $(RUN)/bleu.txt

$(DATA)/manifest.json:
	$(PREPARE_CMD)

$(DATA)/spm/spm.model: $(DATA)/manifest.json
	$(MTKIT) train-bpe --input $(DATA)/train.$(SRC) --input $(DATA)/train.$(TGT) \
		--vocab-size $(VOCAB) --model-type $(SPM_TYPE) --out $(DATA)/spm

# train.done marks a finished run: an interrupted one has a checkpoint_last.pt but
# no train.done, so the next `make` resumes it instead of starting over.
$(RUN)/train.done: $(DATA)/spm/spm.model
	$(TRAIN_CMD) --data $(DATA) --spm $(DATA)/spm/spm.model --src $(SRC) --tgt $(TGT) \
		--arch $(ARCH) --out $(RUN) --device $(DEVICE) --max-tokens $(MAX_TOKENS) \
		--update-freq $(UPDATE_FREQ) $(if $(wildcard $(RUN)/checkpoint_last.pt),--resume) \
		$(TRAIN_ARGS)
	touch $@

$(RUN)/checkpoint_avg.pt: $(RUN)/train.done
	$(MTKIT) average $(RUN) --last $(AVERAGE_LAST) -o $@

$(RUN)/test.hyp: $(RUN)/checkpoint_avg.pt $(DATA)/manifest.json
	$(MTKIT) translate -m $< -i $(DATA)/test.$(SRC) -o $@ --beam $(BEAM) \
		--device $(DEVICE) $(TRANSLATE_ARGS)

$(RUN)/bleu.txt: $(RUN)/test.hyp
	$(MTKIT) score -r $(DATA)/test.$(TGT) -i $< --metrics bleu,chrf $(SCORE_ARGS) > $@.tmp
	mv $@.tmp $@

clean-run:
	rm -rf $(RUN)
