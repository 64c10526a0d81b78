"""Sequence-to-sequence models: a Transformer and an attention RNN, and `build_model`.

Model code knows only tensors and a `ModelConfig`: no files, tokenizers or
optimizers. Every model offers the same interface, which training and search use:

    forward(src [B,S], tgt_in [B,T]) -> logits [B,T,V]          (teacher forcing)
    encode(src [B,S]) -> state                                  (a dict, batch-first tensors)
    decode_step(tokens [B], state) -> (logits [B,V], state)     (one target step, cached)
    reorder_state(state, index [B']) -> state                   (beam moves, dropped sentences)

Padding uses `config.pad_id`; target inputs start with `config.bos_id`.
"""
