"""Export an mtkit Transformer checkpoint as a Hugging Face transformers model directory.

Owns choosing the transformers class whose computation is the checkpoint's, renaming
and splitting its weights for that class, and writing the directory that
`AutoModelForSeq2SeqLM.from_pretrained(DIR)` and `AutoTokenizer.from_pretrained(DIR)`
read (transformers itself is not needed to write it: JSON, SentencePiece, safetensors):

    config.json             M2M100Config or MarianConfig
    generation_config.json  the search, as far as transformers' generate can do mtkit's
    model.safetensors       the weights in float32, under transformers' names
    the tokenizer's files   MarianTokenizer's, or an imported NLLB-200's or M2M-100's own
                            class (mtkit.interop.hf_tokenizer)
    README.md               the model card (mtkit.interop.hf_card)

The class follows from the settings; anything else is refused by name, never
approximated:
  - pre-norm with positions "fairseq" (the presets' layout): M2M100ForConditionalGeneration
    (modeling_m2m_100.py) is pre-norm with final LayerNorms and counts fairseq's sinusoid
    from position pad_id + 1 (of the real tokens: right padding changes nothing); it has
    one embedding for source, target and output, and no output bias;
  - post-norm with positions "halves" (OPUS-MT models imported by mtkit, and post-norm
    models trained with them): MarianMTModel (modeling_marian.py), sinusoid in halves
    from position 0, shared or separate embeddings, the output tied to the target
    embedding plus final_logits_bias.
In both, every projection has a bias (mtkit's fused q/k/v and k/v rows are split in
that order), LayerNorm epsilon is torch's 1e-5, the activation is relu, swish or gelu
(exact erf) by name, embeddings are scaled by sqrt(d_model) as the config says, dropout
and attention dropout are as trained (no activation dropout, no layer drop), decoding
starts from bos_id (decoder_start_token_id), and the source's pads are masked (by the
tokenizer's attention_mask, or by generate from pad_token_id; mtkit masks pad ids).

Leaves the checkpoint format to mtkit.checkpoint, the layers to mtkit.models.transformer,
the tokenizer's files to mtkit.interop.hf_tokenizer, the card to mtkit.interop.hf_card.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from mtkit.errors import CheckpointError, ConfigError, WriteError
from mtkit.interop.ctranslate2 import ExportOptions
from mtkit.io import atomic_directory

log = logging.getLogger(__name__)

M2M100, MARIAN = "m2m_100", "marian"  # transformers' model_type of each class
ARCHITECTURES = {M2M100: "M2M100ForConditionalGeneration", MARIAN: "MarianMTModel"}
# mtkit's search defaults that generate can do as mtkit does (mtkit.search): beam 5;
# GNMT's length penalty has no transformers equal, so the card and generation_config
# take mtkit's --len-norm (divide by |Y| counting eos: length_penalty=1.0) and its
# --stop count (done when K hypotheses ended: early_stopping=True).
GENERATION = {"num_beams": 5, "length_penalty": 1.0, "early_stopping": True}


def export_transformers(
    model_path: Path,
    out_dir: Path,
    options: ExportOptions = ExportOptions(to="transformers"),
    *,
    license: str | None = None,
    scores: Sequence[Path] | None = None,
) -> Path:
    """Write the Transformer checkpoint `model_path` as a transformers model in `out_dir`.

    `options` are `mtkit export`'s (of which --force applies here). The card's `license`
    is an id of the hub's list (None: an imported model's recorded one, else "unknown");
    `scores` are sacreBLEU reports of the test set (None: the recipes' RUN/bleu.txt, see
    mtkit.interop.hf_card). Returns `out_dir`, which appears whole or not at all: it is
    written beside itself and renamed at the end.
    """
    from mtkit.checkpoint import load_checkpoint, model_from_checkpoint
    from mtkit.interop.hf_tokenizer import tokenizer_files

    _check_options(options)
    out_dir = Path(out_dir)
    if out_dir.exists() and not options.force:
        raise WriteError(f"{out_dir} already exists; pass --force to replace it")
    ckpt = load_checkpoint(model_path)
    kind = hf_class(ckpt, str(model_path))
    model = model_from_checkpoint(ckpt, device="cpu")
    files = {
        "config.json": _json(hf_config(model.config, kind)),
        "generation_config.json": _json(generation_config(ckpt, model.config)),
        **tokenizer_files(ckpt),
        "README.md": _card(ckpt, model_path, kind, out_dir.name, license, scores),
    }
    _write_directory(out_dir, files, hf_weights(model, kind), options.force)
    log.info("wrote %s (transformers %s)", out_dir, ARCHITECTURES[kind])
    return out_dir


def _check_options(options: ExportOptions) -> None:
    """The export options that are CTranslate2's alone are refused here, by name."""
    if options.to != "transformers":
        raise ConfigError(f"export_transformers writes --format transformers, not {options.to!r}")
    if options.quantize != "none":
        raise ConfigError(
            f"--quantize {options.quantize} is CTranslate2's; --format transformers writes "
            "float32 weights (pick a dtype when loading them: from_pretrained(dtype=...))"
        )
    if options.shortlist is not None:
        raise ConfigError(
            "--shortlist is written as CTranslate2's vmap.txt; --format transformers has no "
            "shortlist (drop --shortlist)"
        )


# -- the class -----------------------------------------------------------------------


def hf_class(ckpt: dict, name: str) -> str:
    """M2M100 or MARIAN for the checkpoint's settings; ConfigError naming the setting that
    no transformers class computes."""
    from mtkit.models.config import config_from_dict

    config = config_from_dict(ckpt["model_config"])
    if config.arch != "transformer":
        raise CheckpointError(
            f"{name} is an {config.arch.upper()} model (arch={config.arch}); transformers has "
            "no class that computes mtkit's RNN: export a Transformer"
        )
    if config.pre_norm and config.positions == "fairseq":
        _check_m2m100(config, ckpt)
        return M2M100
    if not config.pre_norm and config.positions == "halves":
        return MARIAN
    norm = "pre-norm" if config.pre_norm else "post-norm"
    if config.positions == "interleaved":
        why = "mtkit's sinusoid before the presets took fairseq's layout"
    else:
        why = "the layout of the other norm's class"
    fix = "positions=fairseq" if config.pre_norm else "positions=halves (Marian's layout)"
    raise ConfigError(
        f"{name} is {norm} with positions={config.positions} ({why}), which no transformers "
        f"class computes; export it with --format ctranslate2, or train {norm} models with "
        f"{fix} to export them"
    )


def _check_m2m100(config, ckpt: dict) -> None:
    """What M2M100ForConditionalGeneration cannot hold beyond its layout."""
    if not config.share_embeddings:
        raise ConfigError(
            "this pre-norm model has share_embeddings=false, but transformers' pre-norm class "
            "(M2M100) has one embedding for source, target and output; export it with "
            "--format ctranslate2, or train with a joint SentencePiece model (shared embeddings)"
        )
    bias = ckpt["model"].get("final_logits_bias")
    if config.final_logits_bias and bias is not None and bool(bias.abs().max() > 0):
        raise ConfigError(
            "this pre-norm model has a non-zero final_logits_bias, which transformers' "
            "pre-norm class (M2M100) does not have; export it with --format ctranslate2"
        )
    if config.bos_id == config.pad_id:
        raise ConfigError(
            f"this pre-norm model starts decoding from its pad id ({config.pad_id}), which "
            "M2M100 would place at position pad_id (its positions skip pads); export it with "
            "--format ctranslate2"
        )


# -- config.json and generation_config.json -----------------------------------------


def hf_config(config, kind: str) -> dict:
    """config.json: the model's settings under transformers' names for class `kind`."""
    shared = {
        "architectures": [ARCHITECTURES[kind]],
        "model_type": kind,
        "d_model": config.d_model,
        "encoder_layers": config.enc_layers,
        "decoder_layers": config.dec_layers,
        "encoder_attention_heads": config.n_heads,
        "decoder_attention_heads": config.n_heads,
        "encoder_ffn_dim": config.d_ff,
        "decoder_ffn_dim": config.d_ff,
        "activation_function": config.activation,
        "dropout": config.dropout,
        "attention_dropout": config.attn_dropout,
        "activation_dropout": 0.0,
        "encoder_layerdrop": 0.0,
        "decoder_layerdrop": 0.0,
        "init_std": 0.02,
        "max_position_embeddings": config.max_positions,
        "scale_embedding": config.scale_embeddings,
        "pad_token_id": config.pad_id,
        "bos_token_id": _bos(config),
        "eos_token_id": config.eos_id,
        "decoder_start_token_id": config.bos_id,
        "forced_eos_token_id": config.eos_id,
        "is_encoder_decoder": True,
        "tie_word_embeddings": True,
        "use_cache": True,
        "torch_dtype": "float32",
    }
    if kind == M2M100:
        return shared | {"vocab_size": config.tgt_vocab_size}
    return shared | {
        "vocab_size": config.src_vocab_size,
        "decoder_vocab_size": config.tgt_vocab_size,
        "share_encoder_decoder_embeddings": config.share_embeddings,
    }


def _bos(config) -> int | None:
    """bos_token_id: mtkit's decoder start, when it is a token of its own (Marian starts
    from <pad>, NLLB and M2M-100 from </s>)."""
    return None if config.bos_id in (config.pad_id, config.eos_id) else config.bos_id


def generation_config(ckpt: dict, config) -> dict:
    """generation_config.json: mtkit's decoding where generate can do the same.

    mtkit never produces pad, bos (unless it is eos, NLLB's and M2M-100's start) or the
    source-side tags: suppress_tokens. Its length limit is per sentence (1.2 |source| +
    10); generate's is one number, so this holds the model's (max_positions, counting
    the decoder start), mtkit's cap, and forces eos there as mtkit does. A model that
    translates into one language by default (fine-tuned on one pair) forces its token.
    """
    values = {
        **GENERATION,
        "max_length": config.max_positions,
        "decoder_start_token_id": config.bos_id,
        "bos_token_id": _bos(config),
        "eos_token_id": config.eos_id,
        "forced_eos_token_id": config.eos_id,
        "pad_token_id": config.pad_id,
        "suppress_tokens": never_produced(ckpt, config),
    }
    languages = ckpt.get("languages") or {}
    tgt = (languages.get("default") or {}).get("tgt")
    if tgt and languages.get("scheme") in ("nllb", "m2m100"):
        values["forced_bos_token_id"] = ckpt["vocab"]["tgt"].index(languages["tokens"][tgt])
    return values


def never_produced(ckpt: dict, config) -> list[int]:
    """The target ids mtkit's search masks (mtkit.search.Ensemble.mask_specials with the
    tags of mtkit.translate.stream.training_tags): pad, bos unless it is eos, train-bpe's
    tags, the tags of the corpora the model trained on, a tag-scheme model's language
    tokens (they go before sources only)."""
    from mtkit.checkpoint import checkpoint_tokenizers
    from mtkit.tokenizer import RESERVED_TAGS

    used = [row["tag"] for row in ckpt.get("mix") or [] if row.get("tag")]
    languages = ckpt.get("languages") or {}
    if languages.get("scheme") == "tag":
        used += list(languages["tokens"].values())
    _, tgt = checkpoint_tokenizers(ckpt)
    tags = tgt.tag_ids(tuple(dict.fromkeys((*RESERVED_TAGS, *used))))
    bos = [config.bos_id] if config.bos_id != config.eos_id else []
    return sorted({config.pad_id, *bos, *tags})


# -- the weights ---------------------------------------------------------------------


def hf_weights(model, kind: str) -> dict:
    """The model's weights under transformers' names (the inverse of mtkit.interop.marian's
    import): fused projections split, one tensor per name, float32 and contiguous."""
    import torch

    config = model.config
    out = {}
    if config.share_embeddings:
        out["model.shared.weight"] = model.tgt_embed.weight
    else:
        out["model.encoder.embed_tokens.weight"] = model.src_embed.weight
        out["model.decoder.embed_tokens.weight"] = model.tgt_embed.weight
    if kind == MARIAN:
        bias = model.final_logits_bias
        bias = torch.zeros(config.tgt_vocab_size) if bias is None else bias
        out["final_logits_bias"] = bias[None, :]  # [1,V]
    for i, layer in enumerate(model.encoder):
        hf = f"model.encoder.layers.{i}."
        _split(out, layer.attn.qkv, [f"{hf}self_attn.{p}_proj" for p in "qkv"])
        _copy(out, layer.attn.out, f"{hf}self_attn.out_proj")
        _block(out, layer, hf, ("self_attn_layer_norm", "final_layer_norm"))
    for i, layer in enumerate(model.decoder):
        hf = f"model.decoder.layers.{i}."
        _split(out, layer.self_attn.qkv, [f"{hf}self_attn.{p}_proj" for p in "qkv"])
        _copy(out, layer.self_attn.out, f"{hf}self_attn.out_proj")
        _copy(out, layer.cross_attn.q, f"{hf}encoder_attn.q_proj")
        _split(out, layer.cross_attn.kv, [f"{hf}encoder_attn.{p}_proj" for p in "kv"])
        _copy(out, layer.cross_attn.out, f"{hf}encoder_attn.out_proj")
        norms = ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm")
        _block(out, layer, hf, norms)
    if config.pre_norm:  # the final LayerNorms of the residual streams
        _copy(out, model.enc_norm, "model.encoder.layer_norm")
        _copy(out, model.dec_norm, "model.decoder.layer_norm")
    # safetensors stores no views of one storage: each name gets its own copy.
    return {name: t.detach().float().contiguous().clone() for name, t in out.items()}


def _block(out: dict, layer, hf: str, norms: tuple[str, ...]) -> None:
    """A layer's feed-forward (ffn.0, ffn.2 -> fc1, fc2) and its LayerNorms in order."""
    _copy(out, layer.ffn[0], f"{hf}fc1")
    _copy(out, layer.ffn[2], f"{hf}fc2")
    for n, name in enumerate(norms, 1):
        _copy(out, getattr(layer, f"norm{n}"), f"{hf}{name}")


def _copy(out: dict, module, hf: str) -> None:
    """weight and bias of a Linear or LayerNorm."""
    out[f"{hf}.weight"] = module.weight
    out[f"{hf}.bias"] = module.bias


def _split(out: dict, linear, names: list[str]) -> None:
    """A fused projection's row blocks ([q; k; v] or [k; v]) as separate projections."""
    for name, weight, bias in zip(
        names, linear.weight.chunk(len(names)), linear.bias.chunk(len(names)), strict=True
    ):
        out[f"{name}.weight"], out[f"{name}.bias"] = weight, bias


# -- the directory -------------------------------------------------------------------


def _card(ckpt: dict, model_path: Path, kind: str, name: str, license, scores) -> bytes:
    from mtkit.interop.hf_card import model_card

    return model_card(ckpt, Path(model_path), kind, name, license, scores).encode("utf-8")


def _json(value) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _write_directory(out_dir: Path, files: dict, weights: dict, force: bool) -> None:
    """The files and model.safetensors in a temporary sibling directory, then renamed."""
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise ConfigError(
            "--format transformers writes safetensors: pip install 'mtkit[hub]'"
        ) from None
    with atomic_directory(out_dir, replace=force, crash="export-before-rename") as tmp:
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        for name, data in files.items():
            (tmp / name).write_bytes(data)
