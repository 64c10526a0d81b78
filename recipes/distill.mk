# Sequence-level knowledge distillation (Kim & Rush, 2016): a teacher translates the
# training source, and a small, fast student (deep encoder, shallow decoder: the
# efficiency task's kind) trains on the teacher's output. Teacher and student are scored
# side by side (BLEU, chrF, paired bootstrap) and timed at beam BEAM on the same test
# set, one process each with THREADS threads, with and without the student's lexical
# shortlist and int8.
#
#   make -f recipes/distill.mk simulate        # Multi30k: the demo's model teaches
#   make -f recipes/distill.mk TEACHER="runs/x/checkpoint_avg.pt" DATA=data/x SRC=de TGT=en
#   make -f recipes/distill.mk TEACHER="a.pt b.pt"               # an ensemble teaches
#
#   TEACHER                     checkpoint(s); by default the demo's (recipes/multi30k.mk
#                               with DATA and TEACHER_RUN), made first if missing
#   RUN/teacher-train.TGT       beam TEACHER_BEAM over DATA/train.SRC: a resumable job
#   RUN/data/                   prepare: DATA/train.SRC with the teacher's output; DATA's valid
#   RUN/student/                train STUDENT_ARCH on RUN/data (DATA's SentencePiece model)
#   RUN/shortlist.npz           mtkit shortlist from RUN/data and the student
#   RUN/{teacher,student,student-shortlist,student-shortlist-int8}.hyp and .speed
#   RUN/compare.txt             the scores against the teacher, then lines/s and speed-ups
#
# DATA is a directory `mtkit prepare` wrote, with DATA/spm/spm.model (SPM=) the
# teacher's. On the CPU the student gets STUDENT_UPDATES updates, the other settings of
# recipes/models.mk; STUDENT_ARGS adds or overrides train options for it.

SRC ?= de
TGT ?= en
NAME ?= distill-multi30k-$(SRC)-$(TGT)
RUN ?= runs/$(NAME)
include $(dir $(lastword $(MAKEFILE_LIST)))tools.mk
DATA ?= data/multi30k-$(SRC)-$(TGT)
TEACHER_RUN ?= runs/multi30k-$(SRC)-$(TGT)-transformer-small$(if $(filter yes,$(CPU_MODEL)),-cpu)
TEACHER ?= $(TEACHER_RUN)/checkpoint_avg.pt
TEACHER_BEAM ?= 5
SPM ?= $(DATA)/spm/spm.model
STUDENT_ARCH ?= transformer-student-narrow
STUDENT_ARGS ?=
SHORTLIST_ARGS ?=
PREPARE_ARGS ?=
include $(dir $(lastword $(MAKEFILE_LIST)))models.mk
# A narrow student learns less an update than its teacher: in the simulation its valid
# BLEU was 27.4 after the teacher's 800 updates and 32.7 after 2,400.
STUDENT_UPDATES ?= $(if $(filter yes,$(CPU_MODEL)),$(shell echo $$(( 3 * $(MAX_UPDATES) ))))

$(call remember,$(RUN)/.settings/teacher,$(abspath $(TEACHER) $(DATA)) $(TEACHER_BEAM) $(JOB_ARGS))
$(call remember,$(RUN)/.settings/prepare,$(PREPARE_ARGS))
$(call remember,$(RUN)/.settings/shortlist,$(SHORTLIST_ARGS))
$(call remember,$(RUN)/.settings/score,$(SCORE_ARGS))

SYSTEMS = teacher student student-shortlist student-shortlist-int8

.PHONY: all simulate show teacher
.DELETE_ON_ERROR:
.SUFFIXES:

all: $(RUN)/compare.txt
teacher: $(TEACHER)
simulate show: all
	@cat $(RUN)/compare.txt

# The demo's teacher, when TEACHER is left to its default and is not there yet.
$(TEACHER_RUN)/checkpoint_avg.pt:
	$(MAKE) -f $(dir $(lastword $(MAKEFILE_LIST)))multi30k.mk SRC=$(SRC) TGT=$(TGT) \
		DATA=$(DATA) RUN=$(TEACHER_RUN) BIN=$(BIN) average
$(DATA)/train.$(SRC) $(DATA)/valid.$(SRC) $(DATA)/test.$(SRC) $(SPM): | $(TEACHER) ;

$(RUN)/teacher-train.$(TGT): $(TEACHER) $(DATA)/train.$(SRC) $(RUN)/.settings/teacher
	$(MTKIT) translate $(foreach m,$(TEACHER),-m $m) -i $(DATA)/train.$(SRC) -o $@ \
		--beam $(TEACHER_BEAM) --device $(DEVICE) $(JOB_ARGS)

$(RUN)/data/manifest.json: $(RUN)/teacher-train.$(TGT) $(RUN)/.settings/prepare
	rm -rf $(RUN)/data
	$(MTKIT) prepare --src $(SRC) --tgt $(TGT) --out $(RUN)/data \
		--src-file $(DATA)/train.$(SRC) --tgt-file $< \
		--valid-src-file $(DATA)/valid.$(SRC) --valid-tgt-file $(DATA)/valid.$(TGT) \
		$(PREPARE_ARGS)

$(eval $(call train_model,student,$(SRC),$(TGT),--data $(RUN)/data,$(RUN)/data/manifest.json,\
	--arch $(STUDENT_ARCH) $(if $(STUDENT_UPDATES),--max-updates $(STUDENT_UPDATES)) $(STUDENT_ARGS)))

$(RUN)/shortlist.npz: $(RUN)/student/checkpoint_avg.pt $(RUN)/.settings/shortlist
	$(MTKIT) shortlist --data $(RUN)/data -m $< -o $@ $(SHORTLIST_ARGS)

STUDENT = $(RUN)/student/checkpoint_avg.pt
TEST = $(DATA)/test.$(SRC)
$(eval $(call translate_test,teacher,$(TEACHER),$(TEST)))
$(eval $(call translate_test,student,$(STUDENT),$(TEST),,| $(RUN)/teacher.hyp))
$(eval $(call translate_test,student-shortlist,$(STUDENT),$(TEST),\
	--shortlist $(RUN)/shortlist.npz,$(RUN)/shortlist.npz | $(RUN)/student.hyp))
$(eval $(call translate_test,student-shortlist-int8,$(STUDENT),$(TEST),\
	--shortlist $(RUN)/shortlist.npz --quantize int8,$(RUN)/shortlist.npz | $(RUN)/student-shortlist.hyp))

# rate FILE: the lines/s of a .speed file.
rate = sed 's/.* \([0-9.]*\) lines\/s$$/\1/' $1
$(RUN)/compare.txt: $(foreach s,$(SYSTEMS),$(RUN)/$s.hyp) $(RUN)/.settings/score
	$(MTKIT) score -r $(DATA)/test.$(TGT) $(foreach s,$(SYSTEMS),-i $(RUN)/$s.hyp) \
		$(SCORE_ARGS) > $@.tmp || { rm -f $@.tmp; exit 1; }
	@{ echo; echo "Decoding $(TEST) at beam $(BEAM), one process each, --threads $(THREADS)" \
		"(0: torch's choice), in the order below, on $$($(CPU_LINE)):"; \
	teacher=$$($(call rate,$(RUN)/teacher.speed)); \
	for s in $(SYSTEMS); do \
		r=$$($(call rate,$(RUN)/$$s.speed)); \
		printf '%-24s %s  (%sx the teacher)\n' $$s "$$(cat $(RUN)/$$s.speed)" \
			"$$(awk "BEGIN { printf \"%.2f\", $$r / $$teacher }")"; \
	done; } >> $@.tmp
	@mv $@.tmp $@
	$(if $(filter show simulate,$(MAKECMDGOALS)),,@echo "$@:" && cat $@)

$(RUN)/.settings/%: ;
