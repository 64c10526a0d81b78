# Fine-tuning a pretrained model on Multi30k: the model's BLEU on the test set before
# and after `mtkit train --init-from`.
#   make -f recipes/finetune.mk                                     # OPUS-MT de-en from the hub
#   make -f recipes/finetune.mk INIT=path/to/opus-mt-de-en          # a local copy of that repo
#   make -f recipes/finetune.mk INIT=runs/x/checkpoint_best.pt      # any mtkit checkpoint
#   make -f recipes/finetune.mk show                                # then print both scores
#
#   RUN/init.pt         INIT imported (a Marian directory or hub id), or copied (a .pt)
#   RUN/before.txt      BLEU/chrF of INIT on DATA/test (translate + score)
#   RUN/train.done      train --init-from RUN/init.pt on DATA (checkpoints in RUN)
#   RUN/after.txt       BLEU/chrF of RUN/checkpoint_best.pt on DATA/test
#
# The model keeps INIT's settings, SentencePiece models and vocabulary (no train-bpe);
# optimiser, schedule and step count start afresh. Every variable can be set on the
# command line; a second `make` does nothing, an interrupted training resumes.

SRC ?= de
TGT ?= en
INIT ?= Helsinki-NLP/opus-mt-$(SRC)-$(TGT)
NAME ?= finetune-multi30k-$(SRC)-$(TGT)
MULTI30K ?= ../shared/data/multi30k
DATA ?= data/multi30k-$(SRC)-$(TGT)-files
RUN ?= runs/$(NAME)
LIMIT ?=
# Fine-tuning wants a small learning rate and a short warm-up (the weights are trained
# already); MAX_TIME bounds a CPU run, MAX_EPOCHS a GPU one.
MAX_TOKENS ?= 2048
LR ?= 5e-5
WARMUP ?= 200
MAX_EPOCHS ?= 3
MAX_TIME ?= 20m
VALID_EVERY ?= 200
VALID_SENTENCES ?= 300
TRAIN_ARGS ?=
BEAM ?= 4
TRANSLATE_ARGS ?=
SCORE_ARGS ?= --metrics bleu,chrf

include $(dir $(lastword $(MAKEFILE_LIST)))tools.mk
LIMIT_ARG = $(if $(LIMIT),--limit $(LIMIT))

.PHONY: all show import before train after
.DELETE_ON_ERROR:
.SUFFIXES:

all: $(RUN)/before.txt $(RUN)/after.txt
import: $(RUN)/init.pt
before: $(RUN)/before.txt
train: $(RUN)/train.done
after: $(RUN)/after.txt

show: all
	@echo "before fine-tuning ($(INIT)):"; cat $(RUN)/before.txt
	@echo "after fine-tuning ($(RUN)/checkpoint_best.pt):"; cat $(RUN)/after.txt

$(DATA)/manifest.json:
	$(MTKIT) prepare --src $(SRC) --tgt $(TGT) --out $(DATA) $(LIMIT_ARG) \
		--src-file $(MULTI30K)/train.$(SRC).gz --tgt-file $(MULTI30K)/train.$(TGT).gz \
		--valid-src-file $(MULTI30K)/val.$(SRC).gz --valid-tgt-file $(MULTI30K)/val.$(TGT).gz \
		--test-src-file $(MULTI30K)/test_2016_flickr.$(SRC).gz \
		--test-tgt-file $(MULTI30K)/test_2016_flickr.$(TGT).gz

# A .pt is an mtkit checkpoint already; anything else is a Marian directory or hub id.
$(RUN)/init.pt:
	mkdir -p $(RUN)
	$(if $(filter %.pt,$(INIT)),cp $(INIT) $@,$(MTKIT) import $(INIT) -o $@)

$(RUN)/before.hyp: $(RUN)/init.pt $(DATA)/manifest.json
	$(MTKIT) translate -m $< -i $(DATA)/test.$(SRC) -o $@ --beam $(BEAM) \
		--device $(DEVICE) $(TRANSLATE_ARGS)

$(RUN)/train.done: $(RUN)/init.pt $(DATA)/manifest.json
	$(MTKIT) train --init-from $< --data $(DATA) --src $(SRC) --tgt $(TGT) --out $(RUN) \
		--device $(DEVICE) --max-tokens $(MAX_TOKENS) --lr $(LR) --warmup $(WARMUP) \
		--max-epochs $(MAX_EPOCHS) --max-time $(MAX_TIME) --valid-every $(VALID_EVERY) \
		--valid-bleu-sentences $(VALID_SENTENCES) --resume $(TRAIN_ARGS)
	touch $@

$(RUN)/after.hyp: $(RUN)/train.done
	$(MTKIT) translate -m $(RUN)/checkpoint_best.pt -i $(DATA)/test.$(SRC) -o $@ \
		--beam $(BEAM) --device $(DEVICE) $(TRANSLATE_ARGS)

$(RUN)/%.txt: $(RUN)/%.hyp
	$(MTKIT) score -r $(DATA)/test.$(TGT) -i $< $(SCORE_ARGS) > $@.tmp || { rm -f $@.tmp; exit 1; }
	@mv $@.tmp $@
	@echo "$@:" && cat $@
