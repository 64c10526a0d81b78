"""Sequence-to-sequence models: a Transformer and an attention RNN, and `build_model`.

Model code knows only tensors and a `ModelConfig`: no files, tokenizers or
optimizers. Every model offers the same interface, which training and search use:

    forward(src [B,S], tgt_in [B,T]) -> logits [B,T,V]          (teacher forcing)
    encode(src [B,S]) -> state                                  (a dict, batch-first tensors)
    decode_step(tokens [B], state) -> (logits [B,V], state)     (one target step, cached)
    reorder_state(state, index [B']) -> state                   (beam moves, dropped sentences)
    output_projection(vocab [V']) -> output                     (a shortlist's output layer:
        decode_step(tokens, state, output) then gives logits [B,V'] of those ids)

Padding uses `config.pad_id`; target inputs start with `config.bos_id`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtkit.errors import ConfigError
from mtkit.models.config import ModelConfig, config_from_dict, validate

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ModelConfig", "build_model"]


def build_model(config: ModelConfig | dict) -> nn.Module:
    """A freshly initialised model for `config` (a ModelConfig, or its dict from a checkpoint)."""
    if isinstance(config, dict):
        config = config_from_dict(config)
    if not isinstance(config, ModelConfig):
        raise ConfigError(f"build_model needs a ModelConfig or a dict, got {type(config).__name__}")
    config = validate(config)
    if config.arch == "transformer":
        from mtkit.models.transformer import Transformer

        return Transformer(config)
    elif config.arch == "rnn":
        from mtkit.models.rnn import RNNModel

        return RNNModel(config)
    raise ConfigError(f"unknown arch {config.arch!r}; choose one of: transformer, rnn")
