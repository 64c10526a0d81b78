# What every recipe shares: where mtkit is, whether training runs on the CPU, and
# settings files that change only when their settings do. Included by the recipes.
ifndef MTKIT_TOOLS_MK
MTKIT_TOOLS_MK := 1

# This checkout's .venv when it has mtkit, else the mtkit on PATH.
VENV_BIN := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))../.venv/bin)
BIN ?= $(if $(wildcard $(VENV_BIN)/mtkit),$(VENV_BIN),$(patsubst %/,%,$(dir $(shell command -v mtkit))))
ifeq ($(strip $(BIN)),)
$(error mtkit not found in $(VENV_BIN) or on PATH: run `make install`, or set BIN=DIR that holds mtkit)
endif
MTKIT ?= $(BIN)/mtkit
PY ?= $(BIN)/python
TORCHRUN ?= $(BIN)/torchrun

# CPU_MODEL=yes when training runs on the CPU (DEVICE=cpu, or DEVICE=auto and no
# nvidia-smi): the recipes then take their CPU settings (a budget of time or updates,
# smaller batches).
DEVICE ?= auto
CPU_MODEL ?= $(if $(filter cpu,$(DEVICE)),yes,$(if $(filter cuda,$(DEVICE)),no,$(if \
	$(shell command -v nvidia-smi 2>/dev/null),no,yes)))

# $(call remember,FILE,TEXT): FILE holds TEXT; it is rewritten (and so turns newer than
# what was made from the old settings) only when TEXT changed. Tool paths are left out.
same = $(and $(findstring x$1,x$2),$(findstring x$2,x$1))
settings_text = $(strip $(notdir $1): $(subst $(BIN)/,,$2))
remember = $(if $(call same,$(strip $(file <$1)),$(settings_text)),,$(shell mkdir -p $(dir $1))$(file >$1,$(settings_text)))

# $(call set_aside,RUN_DIR) in a training rule: a run older than the rule's prerequisites
# (data, vocabulary or settings changed since its checkpoint_last.pt) is moved to
# RUN_DIR/replaced-DATE/, so the training after it starts over instead of resuming.
define set_aside
@last=$1/checkpoint_last.pt; \
if [ -e $$last ] && [ -n "$$(find $^ -newer $$last)" ]; then \
	old=$1/replaced-$$(date +%Y%m%d-%H%M%S); mkdir -p $$old; \
	echo "$1: data, vocabulary or settings changed since $$last; moving the old run to $$old" >&2; \
	find $1 -maxdepth 1 -type f ! -name '.*' -exec mv {} $$old/ \; ; \
fi
endef

endif
