"""Export an mtkit Transformer checkpoint to a CTranslate2 model directory.

Owns filling CTranslate2's own model specification (`ctranslate2.specs.TransformerSpec`)
from a checkpoint's config and weights, and writing the directory CTranslate2 loads:
model.bin, config.json, the vocabularies, plus the checkpoint's SentencePiece model(s)
so the directory is enough to translate. Leaves the checkpoint format to
mtkit.checkpoint and the layers to mtkit.models.transformer.

What maps to what (as ctranslate2/converters/fairseq.py and opennmt_py.py fill a spec):
  - pre- or post-norm: `pre_norm`; pre-norm's final LayerNorms are encoder/decoder
    `layer_norm`; the LayerNorm epsilon is torch's 1e-5 (CTranslate2 assumes 1e-6);
  - the fused q/k/v projection is CTranslate2's self-attention `linear[0]` as it is;
    cross-attention is `linear[0]` (q) and `linear[1]` (k and v fused, k first);
  - the position table is written as `position_encodings`, mtkit's own sinusoids
    from position 0 (CTranslate2's built-in table puts sines and cosines in halves,
    which is not mtkit's default layout);
  - embeddings scaled by sqrt(d_model) unless the config says not to; the output
    projection is the target embedding (and `final_logits_bias` when the model has one);
  - vocabularies in id order, so ids match: pad 0, unk 1, bos 2 (<s>, the decoder
    start), eos 3 (</s>, added to every source as mtkit's search expects).
Shared embeddings are written once: CTranslate2 keeps one copy of equal arrays.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mtkit.errors import CheckpointError, ConfigError, WriteError
from mtkit.io import atomic_directory

log = logging.getLogger(__name__)

# CTranslate2's weight types that make sense for export; "none" keeps float32.
QUANTIZATIONS = ("none", "int8", "int8_float16", "int8_bfloat16", "float16", "bfloat16")
# What `mtkit export --format` writes: this module's, and mtkit.interop.hf_export's.
EXPORT_FORMATS = ("ctranslate2", "transformers")
# torch.nn.LayerNorm's default epsilon, which every mtkit LayerNorm uses.
LAYER_NORM_EPSILON = 1e-5


@dataclass(frozen=True)
class ExportOptions:
    """How to export; `mtkit export` maps its flags onto these fields."""

    # The format written (`--format`, alias `--to`): ctranslate2, or transformers
    # (mtkit.interop.hf_export, which takes these options too).
    to: str = "ctranslate2"
    quantize: str = "none"  # weight type of the exported model, see QUANTIZATIONS
    force: bool = False  # replace an existing output directory
    # A lexical shortlist (mtkit shortlist) written as CTranslate2's vocabulary map,
    # vmap.txt, which `translate_batch(..., use_vmap=True)` reads.
    shortlist: Path | None = None


def export_ctranslate2(model_path: Path, out_dir: Path, options: ExportOptions = ExportOptions()):
    """Write the Transformer checkpoint `model_path` as a CTranslate2 model in `out_dir`.

    Returns `out_dir`. The directory appears whole or not at all: it is written next
    to `out_dir` and renamed at the end.
    """
    from mtkit.checkpoint import load_checkpoint, model_from_checkpoint

    if options.to != "ctranslate2":
        raise ConfigError(
            f"unknown --format {options.to!r}; choose one of: {', '.join(EXPORT_FORMATS)}"
        )
    if options.quantize not in QUANTIZATIONS:
        raise ConfigError(
            f"unknown --quantize {options.quantize!r}; choose one of: {', '.join(QUANTIZATIONS)}"
        )
    out_dir = Path(out_dir)
    if out_dir.exists() and not options.force:
        raise WriteError(f"{out_dir} already exists; pass --force to replace it")
    ct2 = _import_ctranslate2()
    ckpt = load_checkpoint(model_path)
    arch = ckpt["model_config"].get("arch", "transformer")
    if arch != "transformer":
        raise CheckpointError(
            f"{model_path} is an {arch.upper()} model; CTranslate2 runs Transformers only "
            "(translate it with `mtkit translate`)"
        )
    model = model_from_checkpoint(ckpt, device="cpu")
    spec = transformer_spec(ct2, model)
    # An imported model's own id tables (Marian's vocab.json), else SentencePiece's ids.
    tables = ckpt.get("vocab") or {}
    src_pieces, tgt_pieces = (
        tables.get(side) or _pieces(ckpt["spm"][side]) for side in ("src", "tgt")
    )
    spec.register_source_vocabulary(src_pieces)
    spec.register_target_vocabulary(tgt_pieces)
    # Marian starts decoding from <pad>; mtkit's bos_id is the decoder-start id.
    spec.config.decoder_start_token = tgt_pieces[model.config.bos_id]
    spec.validate()
    spec.optimize(quantization=None if options.quantize == "none" else options.quantize)
    with tempfile.TemporaryDirectory() as scratch:
        if options.shortlist is not None:
            vmap = Path(scratch) / "vmap.txt"
            vmap.write_text(_vmap_text(options.shortlist, ckpt, src_pieces, tgt_pieces, model_path))
            spec.register_vocabulary_mapping(str(vmap))
        _save(spec, out_dir, ckpt, options.force)
    log.info("wrote %s (CTranslate2, weights %s)", out_dir, options.quantize)
    return out_dir


def _vmap_text(path: Path, ckpt: dict, src_pieces, tgt_pieces, model_path: Path) -> str:
    """The shortlist `path` as vmap.txt lines, once it is known to fit the checkpoint."""
    from mtkit.checkpoint import checkpoint_tokenizers
    from mtkit.shortlist import load_shortlist, vmap_lines

    shortlist = load_shortlist(path)
    shortlist.check_tokenizers(*checkpoint_tokenizers(ckpt), str(model_path), Path(path))
    return "".join(line + "\n" for line in vmap_lines(shortlist, src_pieces, tgt_pieces))


def _import_ctranslate2():
    try:
        import ctranslate2
    except ImportError:
        raise ConfigError(
            "export needs the ctranslate2 package; install it with pip install 'mtkit[ctranslate2]'"
        ) from None
    return ctranslate2


def _pieces(spm_bytes: bytes) -> list[str]:
    """A SentencePiece model's pieces in id order (pad, unk, <s>, </s> first)."""
    from mtkit.tokenizer import Tokenizer

    sp = Tokenizer.from_bytes(spm_bytes).sp
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]


# -- the specification ---------------------------------------------------------------


def transformer_spec(ct2, model):
    """A `ctranslate2.specs.TransformerSpec` holding `model`'s config and weights."""
    from ctranslate2.specs import common_spec, transformer_spec

    config = model.config
    activation = {
        "relu": common_spec.Activation.RELU,
        "swish": common_spec.Activation.SWISH,
        "gelu": common_spec.Activation.GELU,  # torch's nn.GELU is the exact (erf) form
    }[getattr(config, "activation", "relu")]
    spec = transformer_spec.TransformerSpec.from_config(
        (config.enc_layers, config.dec_layers),
        config.n_heads,
        pre_norm=config.pre_norm,
        activation=activation,
    )
    spec.config.layer_norm_epsilon = LAYER_NORM_EPSILON
    spec.config.add_source_eos = True  # mtkit's sources end in eos, and have no bos
    spec.config.decoder_start_token = "<s>"
    _fill_encoder(spec.encoder, model)
    _fill_decoder(spec.decoder, model)
    return spec


def _fill_encoder(spec, model) -> None:
    embed = model.tgt_embed if model.share else model.src_embed
    _fill_inputs(spec, model, embed)
    if model.config.pre_norm:
        _norm(spec.layer_norm, model.enc_norm)
    for layer_spec, layer in zip(spec.layer, model.encoder, strict=True):
        _linear(layer_spec.self_attention.linear[0], layer.attn.qkv)
        _linear(layer_spec.self_attention.linear[1], layer.attn.out)
        _norm(layer_spec.self_attention.layer_norm, layer.norm1)
        _ffn(layer_spec.ffn, layer.ffn, layer.norm2)


def _fill_decoder(spec, model) -> None:
    _fill_inputs(spec, model, model.tgt_embed)
    if model.config.pre_norm:
        _norm(spec.layer_norm, model.dec_norm)
    spec.projection.weight = _array(model.tgt_embed.weight)
    if model.final_logits_bias is not None:
        spec.projection.bias = _array(model.final_logits_bias)
    for layer_spec, layer in zip(spec.layer, model.decoder, strict=True):
        _linear(layer_spec.self_attention.linear[0], layer.self_attn.qkv)
        _linear(layer_spec.self_attention.linear[1], layer.self_attn.out)
        _norm(layer_spec.self_attention.layer_norm, layer.norm1)
        _linear(layer_spec.attention.linear[0], layer.cross_attn.q)
        _linear(layer_spec.attention.linear[1], layer.cross_attn.kv)
        _linear(layer_spec.attention.linear[2], layer.cross_attn.out)
        _norm(layer_spec.attention.layer_norm, layer.norm2)
        _ffn(layer_spec.ffn, layer.ffn, layer.norm3)


def _fill_inputs(spec, model, embed) -> None:
    """Embedding, its sqrt(D) scale, and the position table (rows from position 0)."""
    table = spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings
    table.weight = _array(embed.weight)
    spec.scale_embeddings = model.scale != 1.0
    spec.position_encodings.encodings = _array(model.positions)


def _ffn(spec, ffn, norm) -> None:
    # FeedForward is Sequential(Linear, activation, Linear); its LayerNorm is the
    # layer's third (decoder) or second (encoder) one, before (pre-norm) or after.
    _norm(spec.layer_norm, norm)
    _linear(spec.linear_0, ffn[0])
    _linear(spec.linear_1, ffn[2])


def _linear(spec, linear) -> None:
    spec.weight = _array(linear.weight)
    spec.bias = _array(linear.bias)


def _norm(spec, norm) -> None:
    spec.gamma = _array(norm.weight)
    spec.beta = _array(norm.bias)


def _array(tensor):
    return tensor.detach().float().contiguous().numpy()


# -- the directory -------------------------------------------------------------------


def spm_file_names(ckpt: dict) -> dict[str, str]:
    """{side: file name} of the SentencePiece model(s) written next to the model."""
    spm, langs = ckpt["spm"], ckpt.get("langs") or {}
    if spm["src"] == spm["tgt"]:
        return {"src": "spm.model"}
    return {side: f"spm.{langs.get(side, side)}.model" for side in ("src", "tgt")}


def _save(spec, out_dir: Path, ckpt: dict, force: bool) -> None:
    """spec.save into a temporary sibling directory with the SentencePiece model(s), then rename."""
    with atomic_directory(out_dir, replace=force, crash="export-before-rename") as tmp:
        spec.save(str(tmp))
        for side, name in spm_file_names(ckpt).items():
            (tmp / name).write_bytes(ckpt["spm"][side])
