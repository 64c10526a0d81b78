"""Model configuration: one typed dataclass, named presets, and checked overrides.

This is the single source of model defaults. A preset is a named set of
overrides; `--set key=value` flags and a JSON config file override further.
Everything is validated here, once, so the models can trust their config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

from mtkit.errors import ConfigError

ARCHS = ("transformer", "rnn")
RNN_CELLS = ("lstm", "gru")
ATTENTIONS = ("luong", "bahdanau")
ACTIVATIONS = ("relu", "swish", "gelu")
# Where the sinusoid puts sines and cosines: "interleaved" (sin on even, cos on odd
# dims, mtkit's own and fairseq's layout) or "halves" (sines in the first half, cosines
# in the second, as Marian, Tensor2Tensor and Hugging Face's Marian port do) or
# "fairseq" (halves with fairseq's frequencies, from position pad_id + 1: M2M-100, NLLB).
POSITION_LAYOUTS = ("interleaved", "halves", "fairseq")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; saved in every checkpoint."""

    arch: str = "transformer"
    src_vocab_size: int = 8000
    tgt_vocab_size: int = 8000
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3
    d_model: int = 256
    n_heads: int = 4
    d_ff: int = 1024
    enc_layers: int = 3
    dec_layers: int = 3
    dropout: float = 0.1
    attn_dropout: float = 0.0
    pre_norm: bool = True
    # Source, target and output embeddings are one matrix (Press & Wolf, 2017);
    # needs a joint vocabulary, so src_vocab_size == tgt_vocab_size.
    share_embeddings: bool = True
    max_positions: int = 1024
    # RNN only: the cell of encoder and decoder, and the attention score ("luong" is
    # Luong's "general" score). d_model is the RNN's hidden size (d_model // 2 per
    # encoder direction) and its embedding size; n_heads, d_ff and pre_norm are unused.
    rnn_cell: str = "lstm"
    attention: str = "luong"
    # Transformer settings that imported models (Marian/OPUS-MT) need; the defaults are
    # what mtkit always did, so older checkpoints rebuild unchanged.
    activation: str = "relu"  # of the feed-forward blocks; Marian uses swish
    positions: str = "interleaved"  # sinusoid layout, see POSITION_LAYOUTS
    scale_embeddings: bool = True  # multiply embeddings by sqrt(d_model) (Vaswani et al.)
    # A fixed bias added to the output logits (a buffer, as in Hugging Face's Marian).
    final_logits_bias: bool = False


# New Transformers lay out positions as fairseq does (from pad_id + 1), which is what
# transformers' pre-norm M2M100 class computes, so `mtkit export --format transformers`
# has a class for them; ModelConfig's own default stays "interleaved", so checkpoints
# saved before keep rebuilding as they trained.
_TRANSFORMER = dict(positions="fairseq")

PRESETS: dict[str, dict[str, object]] = {
    "transformer-small": dict(
        _TRANSFORMER, d_model=256, n_heads=4, d_ff=1024, enc_layers=3, dec_layers=3
    ),
    # Vaswani et al. (2017), "base" and "big".
    "transformer-base": dict(
        _TRANSFORMER, d_model=512, n_heads=8, d_ff=2048, enc_layers=6, dec_layers=6
    ),
    "transformer-big": dict(
        _TRANSFORMER, d_model=1024, n_heads=16, d_ff=4096, enc_layers=6, dec_layers=6, dropout=0.3
    ),
    # Students for sequence-level distillation (Kim & Rush, 2016): deep encoder, shallow
    # decoder, small width, as Marian's WMT efficiency-task students (Kim et al., 2019,
    # "From Research to Production and Back: Ludicrously Fast Neural Machine Translation":
    # 6 encoder and 2 decoder layers, 256 wide) and Kasai et al. (2021, "Deep Encoder,
    # Shallow Decoder": 12-1 decodes about as well as 6-6). The decoder runs once per
    # output token and the encoder once per sentence, so decoder layers cost the time.
    "transformer-student": dict(
        _TRANSFORMER, d_model=256, n_heads=4, d_ff=1024, enc_layers=6, dec_layers=2
    ),
    "transformer-student-12-1": dict(
        _TRANSFORMER, d_model=256, n_heads=4, d_ff=1024, enc_layers=12, dec_layers=1
    ),
    # Half as wide, one decoder layer: on Multi30k, taught by transformer-small, as good
    # as its teacher and 2.7x as fast at beam 5 (docs/pipelines.md). Narrower still was
    # no faster: the output layer over the vocabulary and the search then take the time.
    "transformer-student-narrow": dict(
        _TRANSFORMER, d_model=128, n_heads=4, d_ff=512, enc_layers=6, dec_layers=1
    ),
    # Luong et al. (2015)-style: bi-LSTM encoder, LSTM decoder with input feeding.
    "rnn": dict(arch="rnn", d_model=512, enc_layers=2, dec_layers=2, dropout=0.3),
}


def preset_config(name: str) -> ModelConfig:
    """The config of a named preset; an unknown name lists the valid ones."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return validate(dataclasses.replace(ModelConfig(), **PRESETS[name]))


def override(config: ModelConfig, values: dict[str, object]) -> ModelConfig:
    """A copy of `config` with `values` applied; values may be strings from the CLI."""
    known = {f.name: f for f in fields(ModelConfig)}
    changes = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(
                f"unknown model setting {key!r}; valid settings: {', '.join(sorted(known))}"
            )
        changes[key] = _coerce(key, value, type(getattr(config, key)))
    return validate(dataclasses.replace(config, **changes))


def config_from_dict(values: dict[str, object]) -> ModelConfig:
    """The ModelConfig saved as a dict (a checkpoint's "model_config"), validated."""
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown model settings {', '.join(map(repr, unknown))}; this mtkit knows: "
            f"{', '.join(sorted(known))} (was the checkpoint made by a newer mtkit?)"
        )
    return validate(ModelConfig(**values))


def validate(config: ModelConfig) -> ModelConfig:
    """Check the values together; raise ConfigError naming the bad one."""
    if config.arch not in ARCHS:
        raise ConfigError(f"unknown arch {config.arch!r}; choose one of: {', '.join(ARCHS)}")
    if config.rnn_cell not in RNN_CELLS:
        raise ConfigError(f"unknown rnn_cell {config.rnn_cell!r}; choose one of: lstm, gru")
    if config.attention not in ATTENTIONS:
        raise ConfigError(f"unknown attention {config.attention!r}; choose one of: luong, bahdanau")
    for name, value, valid in (
        ("activation", config.activation, ACTIVATIONS),
        ("positions", config.positions, POSITION_LAYOUTS),
    ):
        if value not in valid:
            raise ConfigError(f"unknown {name} {value!r}; choose one of: {', '.join(valid)}")
    if config.arch == "transformer" and config.d_model % 2:
        raise ConfigError(f"d_model must be even for sinusoidal positions, got {config.d_model}")
    for name in ("d_model", "n_heads", "d_ff", "enc_layers", "dec_layers", "max_positions"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(config, name)}")
    if config.arch == "transformer" and config.d_model % config.n_heads:
        raise ConfigError(
            f"d_model ({config.d_model}) must be divisible by n_heads ({config.n_heads})"
        )
    if not 0.0 <= config.dropout < 1.0 or not 0.0 <= config.attn_dropout < 1.0:
        raise ConfigError("dropout and attn_dropout must be in [0, 1)")
    for name in ("pad_id", "bos_id", "eos_id"):
        if not 0 <= getattr(config, name) < config.tgt_vocab_size:
            raise ConfigError(
                f"{name} {getattr(config, name)} is outside the target vocabulary "
                f"(0..{config.tgt_vocab_size - 1})"
            )
    if config.share_embeddings and config.src_vocab_size != config.tgt_vocab_size:
        raise ConfigError(
            "share_embeddings needs one joint vocabulary, but the source has "
            f"{config.src_vocab_size} pieces and the target {config.tgt_vocab_size}; "
            "train a joint SentencePiece model or set share_embeddings=false"
        )
    return config


def _coerce(key: str, value: object, kind: type) -> object:
    if not isinstance(value, str):
        return value
    try:
        if kind is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        return kind(value)
    except ValueError:
        raise ConfigError(f"{key} expects a {kind.__name__}, got {value!r}") from None
