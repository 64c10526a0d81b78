# Back-translation (Sennrich et al., 2016; Edunov et al., 2018): a reverse TGT -> SRC model
# turns monolingual TGT text into synthetic SRC sentences, and the forward SRC -> TGT model
# trains on the real pairs plus these, tagged (Caswell et al., 2019). Scored against the
# same model trained on the real pairs only, with sacreBLEU's paired bootstrap.
#
#   make -f recipes/backtranslate.mk simulate     # the Multi30k simulation (below)
#   make -f recipes/backtranslate.mk SRC=de TGT=en TRAIN_SRC=corpus.de TRAIN_TGT=corpus.en \
#       MONO=news.en VALID_SRC=dev.de VALID_TGT=dev.en TEST_SRC=test.de TEST_TGT=test.en
#
#   DATA/real/manifest.json   prepare TRAIN_*, VALID_*, TEST_* (plain or .gz)
#   DATA/spm/spm.model        train-bpe on the real pairs (it reserves the <BT> tag)
#   RUN/reverse/              train TGT -> SRC on the real pairs, average
#   RUN/bt.tsv                translate MONO with the reverse model (BT_MODE): TGT<TAB>SRC,
#                             a resumable job (an interrupted make continues it)
#   RUN/bt-data/              prepare --tsv RUN/bt.tsv: the synthetic corpus
#   RUN/baseline/, RUN/bt/    train SRC -> TGT on DATA/real, and on DATA/real:REAL_WEIGHT
#                             plus RUN/bt-data:BT_WEIGHT:tag; average
#   RUN/baseline.hyp, RUN/bt.hyp   beam BEAM over TEST_SRC
#   RUN/compare.txt           BLEU and chrF of both, p-values of bt against baseline
#
# The simulation (the default files): Multi30k's training set cut in two, the first
# PARALLEL_LINES pairs as the parallel corpus and the TGT side of the rest (or of the
# next MONO_LINES) as the monolingual text; valid and test2016 as they are. On the CPU
# each model gets MAX_UPDATES updates (recipes/models.mk). docs/pipelines.md has the
# figures.

include $(dir $(lastword $(MAKEFILE_LIST)))tools.mk

# `simulate` takes the settings that gained in the simulation (docs/pipelines.md): plain
# beam back-translation (noised lost 1.8 BLEU there, as Edunov et al. found noise hurts
# with little real data) and, on the CPU, 1,600 updates a model (at 800 the BT model sees
# the real pairs a third as often as the baseline and gains nothing significant).
ifneq ($(filter simulate,$(MAKECMDGOALS)),)
BT_MODE ?= beam
ifeq ($(CPU_MODEL),yes)
MAX_UPDATES ?= 1600
endif
endif

SRC ?= de
TGT ?= en
NAME ?= bt-multi30k-$(SRC)-$(TGT)
DATA ?= data/$(NAME)
RUN ?= runs/$(NAME)
MULTI30K ?= ../shared/data/multi30k
PARALLEL_LINES ?= 10000
MONO_LINES ?=
SPLIT = $(DATA)/split
TRAIN_SRC ?= $(SPLIT)/parallel.$(SRC)
TRAIN_TGT ?= $(SPLIT)/parallel.$(TGT)
MONO ?= $(SPLIT)/mono.$(TGT)
VALID_SRC ?= $(MULTI30K)/val.$(SRC).gz
VALID_TGT ?= $(MULTI30K)/val.$(TGT).gz
TEST_SRC ?= $(MULTI30K)/test_2016_flickr.$(SRC).gz
TEST_TGT ?= $(MULTI30K)/test_2016_flickr.$(TGT).gz
VOCAB ?= 8000
# noised: beam search, then Edunov et al.'s noise on each output (words deleted, replaced
# by NOISE_FILLER, shuffled locally); sample: unrestricted sampling; beam: plain beam.
BT_MODE ?= noised
BT_SEED ?= 1
# The word that blanks stand for: translate's default, a piece train-bpe reserves in every
# model (with SPM= made elsewhere, a word of letters it knows, e.g. BLANK).
NOISE_FILLER ?= <blank>
BT_ARGS_noised = --beam 5 --noised --noise-filler '$(NOISE_FILLER)' --seed $(BT_SEED)
BT_ARGS_sample = --beam 1 --sampling --seed $(BT_SEED)
BT_ARGS_beam = --beam 5
BT_ARGS ?= $(BT_ARGS_$(BT_MODE))
REAL_WEIGHT ?= 1
BT_WEIGHT ?= 1
# Options of the two prepare steps (length filters and the like).
PREPARE_ARGS ?=

SPM = $(DATA)/spm/spm.model
REAL = $(DATA)/real
include $(dir $(lastword $(MAKEFILE_LIST)))models.mk

ifeq ($(BT_ARGS),)
$(error BT_MODE=$(BT_MODE) is not one of noised, sample, beam)
endif

$(call remember,$(DATA)/.settings/prepare,$(TRAIN_SRC) $(TRAIN_TGT) $(VALID_SRC) $(VALID_TGT) \
	$(TEST_SRC) $(TEST_TGT) $(PREPARE_ARGS))
$(call remember,$(DATA)/.settings/bpe,$(VOCAB))
$(call remember,$(RUN)/.settings/bt-translate,$(abspath $(MONO)) $(BT_ARGS) $(JOB_ARGS) $(PREPARE_ARGS))
$(call remember,$(RUN)/.settings/score,$(SCORE_ARGS))

.PHONY: all simulate show prepare bpe
.DELETE_ON_ERROR:
.SUFFIXES:

all: $(RUN)/compare.txt
prepare: $(REAL)/manifest.json
bpe: $(SPM)
simulate show: all
	@cat $(RUN)/compare.txt

# The simulation's split of Multi30k's training set.
$(SPLIT)/parallel.%: $(MULTI30K)/train.%.gz
	mkdir -p $(SPLIT)
	gzip -dc $< | head -n $(PARALLEL_LINES) > $@.tmp && mv $@.tmp $@
$(SPLIT)/mono.$(TGT): $(MULTI30K)/train.$(TGT).gz
	mkdir -p $(SPLIT)
	gzip -dc $< | tail -n +$$(( $(PARALLEL_LINES) + 1 )) $(if $(MONO_LINES),| head -n $(MONO_LINES)) \
		> $@.tmp && mv $@.tmp $@

$(REAL)/manifest.json: $(TRAIN_SRC) $(TRAIN_TGT) $(DATA)/.settings/prepare
	rm -rf $(REAL)/.encoded
	$(MTKIT) prepare --src $(SRC) --tgt $(TGT) --out $(REAL) \
		--src-file $(TRAIN_SRC) --tgt-file $(TRAIN_TGT) \
		--valid-src-file $(VALID_SRC) --valid-tgt-file $(VALID_TGT) \
		--test-src-file $(TEST_SRC) --test-tgt-file $(TEST_TGT) $(PREPARE_ARGS)

$(REAL)/train.$(SRC) $(REAL)/train.$(TGT) $(REAL)/test.$(SRC) $(REAL)/test.$(TGT): $(REAL)/manifest.json ;

$(SPM): $(REAL)/manifest.json $(DATA)/.settings/bpe
	rm -rf $(REAL)/.encoded $(RUN)/bt-data/.encoded
	$(MTKIT) train-bpe --input $(REAL)/train.$(SRC) --input $(REAL)/train.$(TGT) \
		--vocab-size $(VOCAB) --out $(DATA)/spm

$(eval $(call train_model,reverse,$(TGT),$(SRC),--data $(REAL),$(REAL)/manifest.json,--arch $(ARCH)))

# The reverse model's output is the synthetic source: translate writes MONO<TAB>output,
# which prepare reads as TGT, SRC (--pair TGT-SRC).
$(RUN)/bt.tsv: $(RUN)/reverse/checkpoint_avg.pt $(MONO) $(RUN)/.settings/bt-translate
	$(MTKIT) translate -m $< -i $(MONO) -o $@ --output-format tsv --device $(DEVICE) \
		$(BT_ARGS) $(JOB_ARGS)

$(RUN)/bt-data/manifest.json: $(RUN)/bt.tsv
	rm -rf $(RUN)/bt-data
	$(MTKIT) prepare --pair $(TGT)-$(SRC) --src $(SRC) --tgt $(TGT) --tsv $< \
		--out $(RUN)/bt-data $(PREPARE_ARGS)

$(eval $(call train_model,baseline,$(SRC),$(TGT),--data $(REAL),$(REAL)/manifest.json,--arch $(ARCH)))
$(eval $(call train_model,bt,$(SRC),$(TGT),--data $(REAL):$(REAL_WEIGHT) \
	--data $(RUN)/bt-data:$(BT_WEIGHT):tag,$(REAL)/manifest.json $(RUN)/bt-data/manifest.json,\
	--arch $(ARCH)))
$(eval $(call translate_test,baseline,$(RUN)/baseline/checkpoint_avg.pt,$(REAL)/test.$(SRC)))
$(eval $(call translate_test,bt,$(RUN)/bt/checkpoint_avg.pt,$(REAL)/test.$(SRC)))

$(RUN)/compare.txt: $(RUN)/baseline.hyp $(RUN)/bt.hyp $(RUN)/.settings/score
	$(MTKIT) score -r $(REAL)/test.$(TGT) -i $(RUN)/baseline.hyp -i $(RUN)/bt.hyp \
		$(SCORE_ARGS) > $@.tmp || { rm -f $@.tmp; exit 1; }
	@mv $@.tmp $@
	$(if $(filter show simulate,$(MAKECMDGOALS)),,@echo "$@:" && cat $@)

$(DATA)/.settings/% $(RUN)/.settings/%: ;
