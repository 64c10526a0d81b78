"""Import Hugging Face MarianMT models (OPUS-MT) as mtkit checkpoints.

Owns reading a directory in Hugging Face's Marian layout (or fetching one from
the hub) and turning it into an ordinary checkpoint dict: the model settings,
the weights under mtkit's names, both SentencePiece models and the model's own
vocabulary tables. The model itself is mtkit's one Transformer with Marian's
settings: post-norm, swish feed-forward, sinusoids in halves from position 0,
scaled embeddings, a fixed final_logits_bias, eos 0, and the decoder starting
from <pad> (config.bos_id = pad_id), which search never generates.

    config.json                     MarianConfig (d_model, layers, heads, vocab sizes ...)
    model.safetensors | pytorch_model.bin
    source.spm, target.spm          SentencePiece models; their own ids are not used
    vocab.json                      piece -> model id (</s> 0, <unk> 1, <pad> last)
    target_vocab.json               the target's, when the vocabularies are separate
    tokenizer_config.json           source_lang/target_lang, where present
    generation_config.json          recorded, not applied (mtkit's search options rule)

Leaves the checkpoint file format to mtkit.checkpoint, the tokenizer to
mtkit.tokenizer, and what the settings mean to mtkit.models.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from pathlib import Path

from mtkit.errors import CheckpointError, ConfigError, DataError
from mtkit.models.config import ModelConfig, validate

log = logging.getLogger(__name__)

# What an import reads; the weights are one of WEIGHT_FILES, safetensors preferred.
MARIAN_FILES = (
    "config.json",
    "source.spm",
    "target.spm",
    "vocab.json",
    "target_vocab.json",
    "tokenizer_config.json",
    "generation_config.json",
)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Hugging Face's activation names -> mtkit's (swish and silu are one function).
ACTIVATIONS = {"swish": "swish", "silu": "swish", "relu": "relu", "gelu": "gelu"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_marian_dir(path: Path | str) -> bool:
    """Whether `path` is a directory holding a Marian config.json (for `translate -m DIR`)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") == "marian"
    except (OSError, ValueError):
        return False


def import_marian(source: str | Path, out: Path | str) -> Path:
    """`mtkit import`: a local Marian directory or a hub id -> the checkpoint file `out`."""
    from mtkit.checkpoint import save_checkpoint

    directory = resolve_source(str(source))
    payload = marian_checkpoint(directory, origin=str(source))
    return save_checkpoint(out, payload)


def marian_checkpoint(directory: Path | str, origin: str | None = None) -> dict:
    """The checkpoint dict (in memory) of a directory in Hugging Face's Marian layout."""
    directory = Path(directory)
    hf = _read_json(directory / "config.json", required=True)
    if hf.get("model_type") != "marian":
        raise ConfigError(
            f"{directory}/config.json has model_type {hf.get('model_type')!r}, not 'marian'; "
            "mtkit imports MarianMT (OPUS-MT) models only"
        )
    src_table, tgt_table = _read_vocabs(directory, hf)
    weights = _read_weights(directory)
    src_embed, tgt_embed = _embeddings(weights, hf)
    src_table = _fit_table(src_table, src_embed.size(0), "source")
    tgt_table = _fit_table(tgt_table, tgt_embed.size(0), "target")
    config = _model_config(hf, len(tgt_table))
    _check_specials(tgt_table, config, "target")
    if not config.share_embeddings:
        # Training and search pad and end the source with the target's ids: move the
        # source's </s> and <pad> rows there (its other ids are only a lookup).
        src_table, src_embed = _align_source(src_table, src_embed, config)
    config = validate(dataclasses.replace(config, src_vocab_size=len(src_table)))
    _check_specials(src_table, config, "source")
    model = _convert_weights(weights, config, src_embed, tgt_embed)
    langs = _languages(directory, origin)
    return {
        "model_config": dataclasses.asdict(config),
        "model": model,
        "spm": {
            "src": _read_bytes(directory / "source.spm"),
            "tgt": _read_bytes(directory / "target.spm"),
        },
        "vocab": {"src": src_table, "tgt": tgt_table},
        "langs": langs,
        "step": 0,
        "epoch": 0,
        "metrics": {},
        "train_config": {
            "imported_from": origin or str(directory),
            "hf_model_type": "marian",
            "hf_generation_config": _read_json(directory / "generation_config.json"),
        },
    }


# -- finding the files ---------------------------------------------------------


def resolve_source(source: str, files: tuple[str, ...] = MARIAN_FILES) -> Path:
    """A local directory as is; a hub id (owner/name) downloaded (or found in the cache):
    `files` and the weights (mtkit.interop.m2m100 passes its own)."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists():
        raise ConfigError(
            f"{source} is a file; pass a Hugging Face model directory (config.json, "
            "model.safetensors, the tokenizer's files) or a hub id"
        )
    if not _HUB_ID.match(source):
        raise ConfigError(
            f"no directory {source}, and it is not a hub id (owner/name, e.g. "
            "Helsinki-NLP/opus-mt-de-en); check the path"
        )
    return _download(source, files)


def _download(repo: str, files: tuple[str, ...]) -> Path:
    """snapshot_download of the files an import reads; the cached copy when offline."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    except ImportError:
        raise ConfigError(
            f"reading {repo} from the hub needs huggingface_hub: pip install 'mtkit[hub]', "
            "or pass a local directory"
        ) from None
    try:
        patterns = [*files, _hub_weights(repo)]
        return Path(snapshot_download(repo, allow_patterns=patterns))
    except (RepositoryNotFoundError, GatedRepoError):
        raise ConfigError(
            f"the hub has no model {repo} (or it is private); check the id, "
            "e.g. Helsinki-NLP/opus-mt-de-en"
        ) from None
    except Exception as error:  # offline mode, no network, DNS, timeouts: all one answer
        cached = _cached(repo)
        if cached is not None:
            log.warning("the hub did not answer (%s); using the cached copy", type(error).__name__)
            return cached
        raise ConfigError(_offline_message(repo)) from None


def _hub_weights(repo: str) -> str:
    """The weight file to fetch: model.safetensors where the repo has one."""
    from huggingface_hub import HfApi

    files = {sibling.rfilename for sibling in HfApi().model_info(repo).siblings or []}
    return next((name for name in WEIGHT_FILES if name in files), WEIGHT_FILES[-1])


def _cached(repo: str) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # not in the cache: huggingface_hub says so with several types
        return None
    return path if (path / "config.json").is_file() else None


def _offline_message(repo: str) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    why = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
    local = repo.rsplit("/", 1)[-1]
    return (
        f"cannot download {repo}: {why} and it is not in the cache; on a machine with "
        f"network run `hf download {repo} --local-dir {local}` (or git clone "
        f"https://huggingface.co/{repo}), copy the directory here and run "
        f"`mtkit import {local} -o {local}.pt`"
    )


def _read_json(path: Path, required: bool = False) -> dict:
    if not path.is_file():
        if required:
            raise DataError(
                f"{path} not found; a Marian model directory has config.json, "
                "model.safetensors (or pytorch_model.bin), source.spm, target.spm and vocab.json"
            )
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise DataError(f"{path} is not valid JSON ({error}); is the download complete?") from None


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"{path} not found; a Marian model directory has source.spm and target.spm")
    return path.read_bytes()


def _read_weights(directory: Path) -> dict:
    """The state dict of model.safetensors or pytorch_model.bin, float32 on the CPU."""
    import torch

    for name in WEIGHT_FILES:
        path = directory / name
        if not path.is_file():
            continue
        try:
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except ImportError:
            raise ConfigError(
                f"reading {path} needs the safetensors package; pip install 'mtkit[hub]'"
            ) from None
        except Exception as error:  # torn or foreign files raise many types
            raise CheckpointError(f"cannot read the weights in {path}: {error}") from None
        return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    raise DataError(f"{directory} has neither {' nor '.join(WEIGHT_FILES)}; copy the weights too")


def _read_vocabs(directory: Path, hf: dict) -> tuple[list[str], list[str]]:
    """The source and target id -> piece tables (one table twice when shared)."""
    source = _table(directory / "vocab.json")
    target_file = directory / "target_vocab.json"
    separate = not hf.get("share_encoder_decoder_embeddings", True)
    if separate and not target_file.is_file():
        raise DataError(
            f"{directory} has separate vocabularies (share_encoder_decoder_embeddings false) "
            "but no target_vocab.json"
        )
    return source, _table(target_file) if separate else source


def _table(path: Path) -> list[str]:
    """vocab.json ({piece: id}) as a list indexed by id; ids must be 0..n-1."""
    mapping = _read_json(path, required=True)
    table = [""] * len(mapping)
    for piece, index in mapping.items():
        if not isinstance(index, int) or not 0 <= index < len(table) or table[index]:
            raise DataError(f"{path} maps {piece!r} to {index!r}; ids must be 0..{len(table) - 1}")
        table[index] = piece
    return table


# -- the model -----------------------------------------------------------------


def _model_config(hf: dict, tgt_size: int) -> ModelConfig:
    """mtkit's settings for a MarianConfig; what mtkit cannot express is refused by name."""
    pairs = (
        ("encoder_attention_heads", "decoder_attention_heads"),
        ("encoder_ffn_dim", "decoder_ffn_dim"),
    )
    for enc, dec in pairs:
        if hf.get(enc, 16) != hf.get(dec, 16):
            raise ConfigError(
                f"this model has {enc}={hf.get(enc)} but {dec}={hf.get(dec)}; mtkit's "
                "Transformer uses one value for both, so it cannot import it"
            )
    activation = hf.get("activation_function", "gelu")
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"activation {activation!r} is not one mtkit has ({', '.join(ACTIVATIONS)})"
        )
    share = hf.get("share_encoder_decoder_embeddings", True)
    pad = hf.get("pad_token_id", tgt_size - 1)
    eos = hf.get("eos_token_id", 0)
    return ModelConfig(
        arch="transformer",
        src_vocab_size=tgt_size,  # the caller sets the source's
        tgt_vocab_size=tgt_size,
        pad_id=pad,
        # Marian's decoder starts from <pad>: mtkit's bos_id is the decoder-start id.
        bos_id=hf.get("decoder_start_token_id", pad),
        eos_id=eos[0] if isinstance(eos, list) else eos,
        **hf_shape(hf),
        pre_norm=False,
        share_embeddings=share,
        max_positions=hf.get("max_position_embeddings", 1024),
        activation=ACTIVATIONS[activation],
        positions="halves",
        scale_embeddings=bool(hf.get("scale_embedding", False)),
        final_logits_bias=True,
    )


def _fit_table(table: list[str], rows: int, side: str) -> list[str]:
    """The table as long as the embedding: rows past its end get placeholder pieces,
    which no SentencePiece output matches."""
    if len(table) > rows:
        raise DataError(
            f"the {side} vocabulary has {len(table)} pieces but the model's embedding only "
            f"{rows} rows; the files do not belong together"
        )
    return table + [f"<unused{i}>" for i in range(len(table), rows)]


def _check_specials(table: list[str], config: ModelConfig, side: str) -> None:
    """The config's eos and pad ids must be the table's </s> and <pad>."""
    for piece, index in (("</s>", config.eos_id), ("<pad>", config.pad_id)):
        if index >= len(table) or table[index] != piece:
            found = table.index(piece) if piece in table else None
            raise DataError(
                f"the model's config says {piece} is id {index}, but the {side} vocabulary "
                f"has it at {found}; the files do not belong together"
            )


def _align_source(table: list[str], embed, config: ModelConfig):
    """Move the source's </s> and <pad> to the config's ids (swapping rows and pieces,
    growing the table with zero rows if an id lies past its end)."""
    import torch

    table = list(table)
    for piece, index in (("</s>", config.eos_id), ("<pad>", config.pad_id)):
        if piece not in table:
            raise DataError(f"the source vocabulary has no {piece}")
        if index >= len(table):
            extra = index + 1 - len(table)
            embed = torch.cat([embed, embed.new_zeros(extra, embed.size(1))])
            table += [f"<unused{i}>" for i in range(len(table), index + 1)]
        here = table.index(piece)
        if here != index:
            table[here], table[index] = table[index], table[here]
            embed = embed.clone()
            embed[[here, index]] = embed[[index, here]]
    return table, embed


def _embeddings(weights: dict, hf: dict):
    """The source and target embedding matrices; the output must be the target's."""
    share = hf.get("share_encoder_decoder_embeddings", True)
    names = ["model.shared.weight", "model.encoder.embed_tokens.weight"]
    src = _first(weights, names if share else names[1:], "the source embedding")
    tgt_names = ["model.decoder.embed_tokens.weight", "lm_head.weight"]
    tgt = src if share else _first(weights, tgt_names, "the target embedding")
    head = weights.get("lm_head.weight")
    if head is not None and (head.shape != tgt.shape or not bool((head == tgt).all())):
        raise ConfigError(
            "this model's output projection (lm_head) is not its target embedding "
            "(tie_word_embeddings false); mtkit's Transformer ties them, so it cannot import it"
        )
    return src, tgt


def _first(weights: dict, names: list[str], what: str):
    for name in names:
        if name in weights:
            return weights[name]
    raise CheckpointError(f"the weights have no {what} (looked for {', '.join(names)})")


def _convert_weights(weights: dict, config: ModelConfig, src_embed, tgt_embed) -> dict:
    """Hugging Face's parameter names and split projections -> mtkit's state dict."""
    import torch

    out = {"tgt_embed.weight": tgt_embed.contiguous()}
    if not config.share_embeddings:
        out["src_embed.weight"] = src_embed.contiguous()
    bias = weights.get("final_logits_bias")
    out["final_logits_bias"] = (
        bias.reshape(-1).clone() if bias is not None else torch.zeros(config.tgt_vocab_size)
    )
    for i in range(config.enc_layers):
        hf, mt = f"model.encoder.layers.{i}.", f"encoder.{i}."
        _fused(out, weights, f"{mt}attn.qkv", [f"{hf}self_attn.{p}_proj" for p in "qkv"])
        _linear(out, weights, f"{mt}attn.out", f"{hf}self_attn.out_proj")
        _block(out, weights, mt, hf, ("self_attn_layer_norm", "final_layer_norm"))
    for i in range(config.dec_layers):
        hf, mt = f"model.decoder.layers.{i}.", f"decoder.{i}."
        _fused(out, weights, f"{mt}self_attn.qkv", [f"{hf}self_attn.{p}_proj" for p in "qkv"])
        _linear(out, weights, f"{mt}self_attn.out", f"{hf}self_attn.out_proj")
        _linear(out, weights, f"{mt}cross_attn.q", f"{hf}encoder_attn.q_proj")
        _fused(out, weights, f"{mt}cross_attn.kv", [f"{hf}encoder_attn.{p}_proj" for p in "kv"])
        _linear(out, weights, f"{mt}cross_attn.out", f"{hf}encoder_attn.out_proj")
        norms = ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm")
        _block(out, weights, mt, hf, norms)
    return out


def _block(out: dict, weights: dict, mt: str, hf: str, norms: tuple[str, ...]) -> None:
    """A layer's feed-forward (fc1, fc2 -> ffn.0, ffn.2) and its LayerNorms, in order."""
    _linear(out, weights, f"{mt}ffn.0", f"{hf}fc1")
    _linear(out, weights, f"{mt}ffn.2", f"{hf}fc2")
    for n, name in enumerate(norms, 1):
        _linear(out, weights, f"{mt}norm{n}", f"{hf}{name}")


def _linear(out: dict, weights: dict, mt: str, hf: str) -> None:
    """Copy weight and bias (Linear or LayerNorm) of `hf` to `mt`."""
    for part in ("weight", "bias"):
        out[f"{mt}.{part}"] = _first(weights, [f"{hf}.{part}"], f"{hf}.{part}")


def _fused(out: dict, weights: dict, mt: str, hf: list[str]) -> None:
    """Stack separate q/k/v projections into mtkit's fused one ([q; k; v] rows)."""
    import torch

    for part in ("weight", "bias"):
        blocks = [_first(weights, [f"{name}.{part}"], f"{name}.{part}") for name in hf]
        out[f"{mt}.{part}"] = torch.cat(blocks)


def _languages(directory: Path, origin: str | None) -> dict:
    """The language pair: tokenizer_config.json's, else the opus-mt-SRC-TGT name."""
    tok = _read_json(directory / "tokenizer_config.json")
    if tok.get("source_lang") and tok.get("target_lang"):
        return {"src": str(tok["source_lang"]), "tgt": str(tok["target_lang"])}
    for name in (origin or "", directory.resolve().name):
        found = re.search(r"opus-mt-(?:tc-\w+-)?([A-Za-z_]+)-([A-Za-z_]+)$", name.rstrip("/"))
        if found:
            return {"src": found.group(1), "tgt": found.group(2)}
    return {"src": "src", "tgt": "tgt"}


def hf_shape(hf: dict) -> dict:
    """The ModelConfig fields a transformers encoder-decoder config.json gives alike for
    Marian and M2M-100 (fairseq's names; defaults are transformers' own)."""
    return dict(
        d_model=hf.get("d_model", 1024),
        n_heads=hf.get("encoder_attention_heads", 16),
        d_ff=hf.get("encoder_ffn_dim", 4096),
        enc_layers=hf.get("encoder_layers", 12),
        dec_layers=hf.get("decoder_layers", 12),
        dropout=float(hf.get("dropout", 0.1)),
        attn_dropout=float(hf.get("attention_dropout", 0.0)),
    )
