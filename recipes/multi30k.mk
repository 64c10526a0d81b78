# Multi30k (Elliott et al., 2016), task 1: 29k image captions, transformer-small.
#   make -f recipes/multi30k.mk                  # de -> en
#   make -f recipes/multi30k.mk SRC=en TGT=de    # en -> de
# Reads Multi30k from the Hugging Face hub (bentrevett/multi30k) when it can be
# reached, else from MULTI30K, a directory of {train,val,test_2016_flickr}.{de,en}.gz.

SRC ?= de
TGT ?= en
NAME ?= multi30k-$(SRC)-$(TGT)
MULTI30K ?= ../shared/data/multi30k
HUB_ID ?= bentrevett/multi30k
PY ?= $(BIN)/python

define PREPARE_CMD
if HF_HUB_OFFLINE=0 $(PY) -c "from huggingface_hub import HfApi; HfApi().dataset_info('$(HUB_ID)', timeout=10)" 2>/dev/null; then \
	$(MTKIT) prepare --dataset $(HUB_ID) --src $(SRC) --tgt $(TGT) --out $(DATA) $(if $(LIMIT),--limit $(LIMIT)); \
else \
	echo "hub not reachable: reading Multi30k from $(MULTI30K)" >&2; \
	$(MTKIT) prepare --src $(SRC) --tgt $(TGT) --out $(DATA) $(if $(LIMIT),--limit $(LIMIT)) \
		--src-file $(MULTI30K)/train.$(SRC).gz --tgt-file $(MULTI30K)/train.$(TGT).gz \
		--valid-src-file $(MULTI30K)/val.$(SRC).gz --valid-tgt-file $(MULTI30K)/val.$(TGT).gz \
		--test-src-file $(MULTI30K)/test_2016_flickr.$(SRC).gz \
		--test-tgt-file $(MULTI30K)/test_2016_flickr.$(TGT).gz; \
fi
endef

include $(dir $(lastword $(MAKEFILE_LIST)))common.mk
