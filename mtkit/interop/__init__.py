"""Models in and out of other toolkits: `marian` imports Hugging Face Marian (OPUS-MT)
models as mtkit checkpoints; `ctranslate2` exports mtkit Transformers to CTranslate2.

Both translate between file formats and mtkit's checkpoint dict; the model code
itself stays one Transformer with settings. Imports flow one way: `mtkit translate`
loads Marian directories through `marian`, so nothing here imports mtkit.translate;
the lexical shortlist the export writes as vmap.txt is mtkit.shortlist's, below both.
"""
