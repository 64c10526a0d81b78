# One multilingual model against bilingual ones (Johnson et al., 2017), on Multi30k's
# German, English and French (parallel line by line): one model trained on de-en, en-de,
# fr-en and en-fr at once (a <2xx> tag of the target language before every source), for
# the budget of the four bilingual models together, against the four bilingual models of
# the same size and budget each; then zero-shot de-fr and fr-de (no such pair in
# training) against pivoting through English with the same model. docs/multilingual.md
# says how to run it, how to read it, and how languages are named.
#
#   make -f recipes/multi30k-multilingual.mk simulate     # everything, then the report
#
#   DATA/S-T/                   prepare S -> T for each of PAIRS: train, val, test2016
#   DATA/spm/spm.model          train-bpe over every language once, --langs (the <2xx>
#                               tags), --sample-temperature SPM_TEMPERATURE
#   DATA/spm-A-B/spm.model      train-bpe of the bilingual models of A and B (both ways)
#   RUN/bi-S-T/                 train S -> T (recipes/models.mk's budget), average
#   RUN/multi/                  train on every pair of PAIRS at once, len(PAIRS) x the
#                               budget, --sample-temperature SAMPLE_TEMPERATURE, average
#   RUN/bi-S-T.hyp, RUN/multi-S-T.hyp   beam BEAM over test2016 (multi: --tgt-lang T)
#   RUN/multi-X-Y.hyp           zero-shot, for each X-Y of ZERO_SHOT: --tgt-lang Y
#   RUN/pivot-X-Y.hyp           RUN/multi-X-PIVOT.hyp translated by the same model, --tgt-lang Y
#   RUN/S-T.score               BLEU, chrF and sacreBLEU's paired bootstrap of the
#                               multilingual model against its baseline (bi-S-T, or pivot-S-T)
#   RUN/langid.tsv              each output's share of lines in its target language, by
#                               fastText lid.176 as `prepare --langid` decides it
#   RUN/report.txt              the machine, every .score's table, langid.tsv, the signatures
#
# On the CPU every bilingual model gets MAX_UPDATES updates (recipes/models.mk) and the
# multilingual one len(PAIRS) times as many: about 90 minutes of training on 2 quiet cores.

include $(dir $(lastword $(MAKEFILE_LIST)))tools.mk

NAME ?= multi30k-multilingual
DATA ?= data/$(NAME)
RUN ?= runs/$(NAME)
MULTI30K ?= ../shared/data/multi30k
# Supervised pairs; zero-shot pairs (each translated directly and through PIVOT).
PAIRS ?= de-en en-de fr-en en-fr
ZERO_SHOT ?= de-fr fr-de
PIVOT ?= en
VOCAB ?= 8000
BI_VOCAB ?= $(VOCAB)
SAMPLE_TEMPERATURE ?= 1
SPM_TEMPERATURE ?= 1
# Training pairs read from each language pair (empty: all); prepare's other options.
LIMIT ?=
PREPARE_ARGS ?=

include $(dir $(lastword $(MAKEFILE_LIST)))models.mk

space := $() $()
comma := ,
src_of = $(word 1,$(subst -, ,$1))
tgt_of = $(word 2,$(subst -, ,$1))
LANGS := $(sort $(foreach p,$(PAIRS),$(call src_of,$p) $(call tgt_of,$p)))
# The first pair that holds language $1: where its training and test text is read.
home_of = $(firstword $(foreach p,$(PAIRS),$(if $(filter $1,$(subst -, ,$p)),$p)))
test_of = $(DATA)/$(call home_of,$1)/test.$1
# The bilingual vocabulary of pair $1: one for both directions of a language pair.
bi_spm = $(DATA)/spm-$(subst $(space),-,$(sort $(subst -, ,$1)))/spm.model
MANIFESTS = $(foreach p,$(PAIRS),$(DATA)/$p/manifest.json)
ENCODED = $(foreach p,$(PAIRS),$(DATA)/$p/.encoded)
ML_SPM = $(DATA)/spm/spm.model
N_PAIRS := $(words $(PAIRS))
# The multilingual model's budget: the bilingual models' together (epochs hold every pair).
MULTI_UPDATES ?= $(shell echo $$(( $(MAX_UPDATES) * $(N_PAIRS) )))
MULTI_TIME ?= $(if $(filter 0 0s,$(MAX_TIME)),0,$(shell $(PY) -c \
	"from mtkit.train.config import parse_duration as d; print(f'{$(N_PAIRS) * d(\"$(MAX_TIME)\"):g}')"))
MULTI_ARGS ?= --arch $(ARCH) --sample-temperature $(SAMPLE_TEMPERATURE) \
	--max-updates $(MULTI_UPDATES) --max-time $(MULTI_TIME)
# Each output's share of lines that fastText lid.176 gives its target language, as
# `prepare --langid` decides (probability >= --langid-min-prob) and by its likeliest
# label; arguments FILE:LANG:NAME.
LANGID = $(PY) -c "import sys; from mtkit.prepare.langid import expected, labels, model_code; \
	print('output', 'language', 'lines', 'langid_min_prob_%', 'top_label_%', sep='\t'); \
	jobs = [arg.rsplit(':', 2) for arg in sys.argv[1:]]; \
	read = lambda path: open(path, encoding='utf-8').read().splitlines(); \
	rows = [(name, lang, read(path), model_code(lang)) for path, lang, name in jobs]; \
	share = lambda hits, lines: f'{100 * sum(hits) / max(1, len(lines)):.1f}'; \
	[print(name, lang, len(lines), share(expected(lines, code), lines), \
	       share([x == code for x in labels(lines)], lines), sep='\t') for name, lang, lines, code in rows]"

$(call remember,$(DATA)/.settings/prepare,$(abspath $(MULTI30K)) $(LIMIT) $(PREPARE_ARGS))
$(call remember,$(DATA)/.settings/bpe,$(VOCAB) $(SPM_TEMPERATURE) $(LANGS))
$(call remember,$(DATA)/.settings/bi-bpe,$(BI_VOCAB))
$(call remember,$(RUN)/.settings/score,$(SCORE_ARGS))

.PHONY: all simulate show prepare bpe
.DELETE_ON_ERROR:
.SUFFIXES:

all: $(RUN)/report.txt
prepare: $(MANIFESTS)
bpe: $(ML_SPM) $(foreach p,$(PAIRS),$(call bi_spm,$p))
simulate show: all
	@cat $(RUN)/report.txt

# -- data and vocabularies ------------------------------------------------------------

define prepare_pair
$(DATA)/$1/manifest.json: $(DATA)/.settings/prepare
	rm -rf $(DATA)/$1
	$(MTKIT) prepare --src $(call src_of,$1) --tgt $(call tgt_of,$1) --out $(DATA)/$1 \
		--src-file $(MULTI30K)/train.$(call src_of,$1).gz --tgt-file $(MULTI30K)/train.$(call tgt_of,$1).gz \
		--valid-src-file $(MULTI30K)/val.$(call src_of,$1).gz --valid-tgt-file $(MULTI30K)/val.$(call tgt_of,$1).gz \
		--test-src-file $(MULTI30K)/test_2016_flickr.$(call src_of,$1).gz \
		--test-tgt-file $(MULTI30K)/test_2016_flickr.$(call tgt_of,$1).gz \
		$(if $(LIMIT),--limit $(LIMIT)) $(PREPARE_ARGS)
	touch $(DATA)/$1/test.$(call src_of,$1) $(DATA)/$1/test.$(call tgt_of,$1)  # newer than the manifest
$(DATA)/$1/test.$(call src_of,$1) $(DATA)/$1/test.$(call tgt_of,$1): $(DATA)/$1/manifest.json ;
endef
$(foreach p,$(PAIRS),$(eval $(call prepare_pair,$p)))

# Every language once, from the first pair that holds it (the three are parallel).
$(ML_SPM): $(MANIFESTS) $(DATA)/.settings/bpe
	rm -rf $(ENCODED)
	$(MTKIT) train-bpe $(foreach l,$(LANGS),--input $(DATA)/$(call home_of,$l)/train.$l) \
		--langs $(subst $(space),$(comma),$(LANGS)) --sample-temperature $(SPM_TEMPERATURE) \
		--vocab-size $(VOCAB) --out $(dir $@)

define bilingual_spm
$1: $(DATA)/$2/manifest.json $(DATA)/.settings/bi-bpe
	$(MTKIT) train-bpe --input $(DATA)/$2/train.$(call src_of,$2) --input $(DATA)/$2/train.$(call tgt_of,$2) \
		--vocab-size $(BI_VOCAB) --out $(dir $1)
endef
$(foreach s,$(sort $(foreach p,$(PAIRS),$(call bi_spm,$p))),$(eval $(call bilingual_spm,$s,$(firstword \
	$(foreach p,$(PAIRS),$(if $(filter $s,$(call bi_spm,$p)),$p))))))

# -- the models -----------------------------------------------------------------------

# Each bilingual model: models.mk's train_model with its pair's vocabulary (SPM).
define bilingual
SPM := $(call bi_spm,$1)
$$(eval $$(call train_model,bi-$1,$(call src_of,$1),$(call tgt_of,$1),--data $(DATA)/$1,$(DATA)/$1/manifest.json,--arch $(ARCH)))
endef
$(foreach p,$(PAIRS),$(eval $(call bilingual,$p)))

# The multilingual model: no --src/--tgt (each corpus's manifest names its pair).
$(call remember,$(RUN)/multi/.settings/train,$(PAIRS) $(MODEL_ARGS) $(TRAIN_ARGS) $(MULTI_ARGS) $(abspath $(ML_SPM)))
$(RUN)/multi/train.done: $(MANIFESTS) $(ML_SPM) $(RUN)/multi/.settings/train
	$(call set_aside,$(RUN)/multi)
	$(MTKIT) train $(foreach p,$(PAIRS),--data $(DATA)/$p) --spm $(ML_SPM) --out $(RUN)/multi \
		--device $(DEVICE) --threads $(TRAIN_THREADS) --resume $(MODEL_ARGS) $(TRAIN_ARGS) $(MULTI_ARGS)
	touch $@

$(RUN)/multi/checkpoint_avg.pt: $(RUN)/multi/train.done
	$(MTKIT) average $(RUN)/multi --last $(AVERAGE_LAST) -o $@

# -- translations and scores ---------------------------------------------------------------

MULTI = $(RUN)/multi/checkpoint_avg.pt
$(foreach p,$(PAIRS),$(eval $(call translate_test,bi-$p,$(RUN)/bi-$p/checkpoint_avg.pt,\
	$(DATA)/$p/test.$(call src_of,$p))))
$(foreach p,$(PAIRS) $(ZERO_SHOT),$(eval $(call translate_test,multi-$p,$(MULTI),\
	$(call test_of,$(call src_of,$p)),--tgt-lang $(call tgt_of,$p))))
$(foreach p,$(ZERO_SHOT),$(eval $(call translate_test,pivot-$p,$(MULTI),\
	$(RUN)/multi-$(call src_of,$p)-$(PIVOT).hyp,--tgt-lang $(call tgt_of,$p))))

# $(call score_rule,PAIR,BASELINE): the multilingual model's output against BASELINE's.
define score_rule
$(RUN)/$1.score: $(RUN)/$2-$1.hyp $(RUN)/multi-$1.hyp $(RUN)/.settings/score
	$(MTKIT) score -r $(call test_of,$(call tgt_of,$1)) -i $(RUN)/$2-$1.hyp -i $(RUN)/multi-$1.hyp \
		$(SCORE_ARGS) > $$@.tmp || { rm -f $$@.tmp; exit 1; }
	@mv $$@.tmp $$@
endef
$(foreach p,$(PAIRS),$(eval $(call score_rule,$p,bi)))
$(foreach p,$(ZERO_SHOT),$(eval $(call score_rule,$p,pivot)))

HYPS = $(foreach p,$(PAIRS),bi-$p multi-$p) $(foreach p,$(ZERO_SHOT),multi-$p pivot-$p)
# An output's target language: the last code of its name (bi-de-en, pivot-de-fr ...).
lang_of = $(lastword $(subst -, ,$1))
$(RUN)/langid.tsv: $(foreach h,$(HYPS),$(RUN)/$h.hyp)
	$(LANGID) $(foreach h,$(HYPS),$(RUN)/$h.hyp:$(call lang_of,$h):$h) > $@.tmp
	@mv $@.tmp $@

$(RUN)/report.txt: $(foreach p,$(PAIRS) $(ZERO_SHOT),$(RUN)/$p.score) $(RUN)/langid.tsv
	{ echo "machine: $$($(CPU_LINE))"; \
	  $(foreach p,$(PAIRS),echo; echo "== $p: bi-$p (baseline) against multi-$p"; sed '/^$$/q' $(RUN)/$p.score;) \
	  $(foreach p,$(ZERO_SHOT),echo; echo "== $p zero-shot: pivot-$p through $(PIVOT) (baseline) against multi-$p"; \
	    sed '/^$$/q' $(RUN)/$p.score;) \
	  echo "== output language (fastText lid.176)"; cat $(RUN)/langid.tsv; \
	  echo; sed -n '/^Metric signatures/,$$p' $(RUN)/$(firstword $(PAIRS)).score; } > $@.tmp
	@mv $@.tmp $@
	$(if $(filter show simulate,$(MAKECMDGOALS)),,@echo "$@:" && cat $@)

$(DATA)/.settings/% $(RUN)/.settings/% $(RUN)/multi/.settings/%: ;
