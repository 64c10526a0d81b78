"""Import Hugging Face M2M100ForConditionalGeneration models (NLLB-200 dense, M2M-100).

Owns reading a directory in Hugging Face's M2M-100 layout (or fetching one from the
hub, as the Marian import does) and turning it into an ordinary checkpoint dict: the
model settings, the weights under mtkit's names, the model's own SentencePiece model,
its id table and its languages (mtkit.languages). The model is mtkit's one Transformer
with fairseq's settings: pre-norm with final LayerNorms, ReLU, embeddings scaled by
sqrt(d_model) (config.scale_embedding), the output tied to the embedding with no bias,
and fairseq's sinusoid counted from position pad_id + 1 (positions="fairseq"; CTranslate2's
M2M100Loader likewise drops the table's first pad_id + 1 rows). Read from transformers'
modeling_m2m_100.py, tokenization_nllb.py and tokenization_m2m_100.py, and CTranslate2's
M2M100Loader:

    ids           fairseq's: <s> 0, <pad> 1, </s> 2, <unk> 3, then the pieces
    NLLB-200      SentencePiece id i + 1 (the fairseq offset), the language codes
                  (`deu_Latn`) and <mask> after the pieces; tokenizer.json's ids rule
                  where it is present (transformers 5 puts <mask> before the codes)
    M2M-100       vocab.json (fairseq's dictionary), then `__de__` tokens in
                  tokenization_m2m_100's order, then madeupword0..7
    source        NLLB: [src] pieces </s>, or pieces </s> [src] when tokenizer_config.json
                  says legacy_behaviour; M2M-100: [src] pieces </s>
    decoder       starts from </s> (decoder_start_token_id), then the target-language
                  token is forced (generate's forced_bos_token_id), then free

    config.json                     M2M100Config (d_model, layers, heads, vocab_size ...)
    model.safetensors | pytorch_model.bin
    sentencepiece.bpe.model         the SentencePiece model; its own ids are not used
    tokenizer.json                  NLLB: piece -> id and the added tokens' ids
    tokenizer_config.json           the tokenizer class, languages, legacy_behaviour
    vocab.json                      M2M-100: piece -> id
    generation_config.json          recorded, not applied (mtkit's search options rule)
    README.md                       the licence named in its front matter, recorded

Leaves the file format to mtkit.checkpoint, where the language tokens go to
mtkit.languages, the tokenizer to mtkit.tokenizer, and the hub fetch and the weight
names shared with Marian to mtkit.interop.marian.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

from mtkit.errors import ConfigError, DataError
from mtkit.interop.marian import (
    ACTIVATIONS,
    _check_specials,
    _convert_weights,
    _embeddings,
    _fit_table,
    _linear,
    _read_json,
    _read_weights,
    hf_shape,
    resolve_source,
)
from mtkit.models.config import ModelConfig, validate

log = logging.getLogger(__name__)

M2M100_FILES = (
    "config.json",
    "generation_config.json",
    "sentencepiece.bpe.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "README.md",
)
SPM_FILE = "sentencepiece.bpe.model"
# MarianTokenizer's SentencePiece files, in an mtkit export (mtkit.interop.hf_export).
SPM_SIDES = (("src", "source"), ("tgt", "target"))
# fairseq's dictionary starts with these four (fairseq/data/dictionary.py).
FAIRSEQ_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
# SentencePiece's own <unk>, <s>, </s> (ids 0-2) are fairseq's specials, not pieces: the
# other SentencePiece ids are shifted by this (NllbTokenizer.fairseq_offset).
FAIRSEQ_OFFSET = 1
# M2M100Tokenizer's language codes (tokenization_m2m_100.FAIRSEQ_LANGUAGE_CODES): their
# `__xx__` tokens take the ids after vocab.json's, in this order.
M2M100_CODES = {  # space-separated
    "m2m100": (
        "af am ar ast az ba be bg bn br bs ca ceb cs cy da de el en es et fa ff fi fr fy ga "
        "gd gl gu ha he hi hr ht hu hy id ig ilo is it ja jv ka kk km kn ko lb lg ln lo lt "
        "lv mg mk ml mn mr ms my ne nl no ns oc or pa pl ps pt ro ru sd si sk sl so sq sr ss "
        "su sv sw ta th tl tn tr uk ur uz vi wo xh yi yo zh zu"
    ),
    "wmt21": "en ha is ja cs ru zh de",
}
# An NLLB code: ISO 639-3 and ISO 15924 script (deu_Latn), as the added tokens are named.
NLLB_CODE = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")


def is_m2m100_dir(path: Path | str) -> bool:
    """Whether `path` is a directory holding an M2M-100 config.json (`translate -m DIR`)."""
    return hf_model_type(path) == "m2m_100"


def hf_model_type(path: Path | str) -> str | None:
    """config.json's model_type of a Hugging Face model directory; None when not one."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return None


def import_m2m100(source: str | Path, out: Path | str) -> Path:
    """`mtkit import`: a local NLLB-200 / M2M-100 directory or a hub id -> checkpoint `out`."""
    from mtkit.checkpoint import save_checkpoint

    directory = resolve_source(str(source), files=M2M100_FILES)
    return save_checkpoint(out, m2m100_checkpoint(directory, origin=str(source)))


def m2m100_checkpoint(directory: Path | str, origin: str | None = None) -> dict:
    """The checkpoint dict (in memory) of a directory in Hugging Face's M2M-100 layout."""
    directory = Path(directory)
    hf = _read_json(directory / "config.json", required=True)
    if hf.get("model_type") != "m2m_100":
        raise ConfigError(
            f"{directory}/config.json has model_type {hf.get('model_type')!r}, not 'm2m_100'; "
            "mtkit imports NLLB-200 (dense) and M2M-100 this way"
        )
    if _tokenizer_config(directory).get("tokenizer_class") == "MarianTokenizer":
        return _exported_checkpoint(directory, hf, origin)  # mtkit export's own layout
    spm = directory / SPM_FILE
    if not spm.is_file():
        raise DataError(f"{spm} not found; an NLLB-200 or M2M-100 directory has {SPM_FILE}")
    tok = _tokenizer_config(directory)
    weights = _read_weights(directory)
    embed, _ = _embeddings(weights, {"share_encoder_decoder_embeddings": True})
    scheme = _scheme(directory, tok)
    if scheme == "m2m100":
        table, tokens = _m2m100_table(directory, tok)
    else:
        table, tokens = _nllb_table(directory, tok, spm.read_bytes())
    table = _fit_table(table, embed.size(0), "model's")
    config = _model_config(hf, len(table))
    _check_specials(table, config, "model's")
    model = _convert_weights(weights, config, embed, embed)
    del model["final_logits_bias"]  # M2M100 has none (CTranslate2 sets no projection bias)
    _linear(model, weights, "enc_norm", "model.encoder.layer_norm")
    _linear(model, weights, "dec_norm", "model.decoder.layer_norm")
    return {
        "model_config": dataclasses.asdict(config),
        "model": model,
        "spm": {"src": spm.read_bytes(), "tgt": spm.read_bytes()},
        "vocab": {"src": table, "tgt": table},
        # "mul" (ISO 639-2: multiple languages): the pair is chosen per run (languages).
        "langs": {"src": "mul", "tgt": "mul"},
        "languages": {
            "scheme": scheme,
            "legacy": bool(tok.get("legacy_behaviour", False)) and scheme == "nllb",
            "tokens": tokens,
            "directions": [],
            "default": {"src": None, "tgt": None},
        },
        "step": 0,
        "epoch": 0,
        "metrics": {},
        "train_config": {
            "imported_from": origin or str(directory),
            "hf_model_type": "m2m_100",
            "hf_tokenizer_class": tok.get("tokenizer_class"),
            "hf_generation_config": _read_json(directory / "generation_config.json"),
            **({"license": lic} if (lic := _license(directory)) else {}),
        },
    }


# -- the vocabulary and the languages --------------------------------------------


def _tokenizer_config(directory: Path) -> dict:
    """tokenizer_config.json, with special_tokens_map.json's entries where it lacks them."""
    tok = _read_json(directory / "tokenizer_config.json")
    return _read_json(directory / "special_tokens_map.json") | tok


def _scheme(directory: Path, tok: dict) -> str:
    """ "m2m100" or "nllb": by the tokenizer class, else by M2M-100's vocab.json."""
    name = str(tok.get("tokenizer_class") or "")
    if name.startswith("M2M100"):
        return "m2m100"
    if name.startswith("Nllb"):
        return "nllb"
    if name:
        raise ConfigError(
            f"{directory} has tokenizer_class {name!r}; mtkit reads NllbTokenizer and "
            "M2M100Tokenizer models"
        )
    return "m2m100" if (directory / "vocab.json").is_file() else "nllb"


def _special_list(tok: dict) -> list[str]:
    """The tokenizer's extra special tokens (transformers 5 names them extra_special_tokens)."""
    for key in ("extra_special_tokens", "additional_special_tokens"):
        value = tok.get(key)
        if isinstance(value, dict):
            value = list(value)
        if value:
            return [v["content"] if isinstance(v, dict) else str(v) for v in value]
    return []


def _nllb_table(directory: Path, tok: dict, spm_bytes: bytes) -> tuple[list[str], dict]:
    """NLLB's id -> piece table and its {code: token}: tokenizer.json's ids where present,
    else fairseq's layout (pieces shifted by one, then the codes, then <mask>)."""
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_proto=spm_bytes)
    pieces = [sp.id_to_piece(i) for i in range(3, sp.get_piece_size())]
    listed = _special_list(tok)
    path = directory / "tokenizer.json"
    if path.is_file():
        table = _tokenizer_json_table(path)
    else:
        codes = [c for c in listed if NLLB_CODE.match(c)]
        if not codes:
            raise DataError(
                f"{directory} has neither tokenizer.json nor the language codes in "
                "tokenizer_config.json (additional_special_tokens); copy them from the model"
            )
        table = [*FAIRSEQ_SPECIALS, *pieces, *codes, "<mask>"]
    index = set(table)
    missing = [p for p in pieces if p not in index]
    if len(missing) > len(pieces) // 100:
        raise DataError(
            f"{len(missing)} of the {len(pieces)} pieces of {SPM_FILE} are not in the "
            f"model's vocabulary (e.g. {missing[0]!r}); the files do not belong together"
        )
    codes = [c for c in (listed or table) if NLLB_CODE.match(c) and c in index]
    if not codes:
        raise DataError(f"{directory}'s vocabulary has no NLLB language codes (deu_Latn ...)")
    return table, {code: code for code in codes}


def _tokenizer_json_table(path: Path) -> list[str]:
    """id -> piece from tokenizer.json: the model's vocabulary and the added tokens."""
    data = _read_json(path)
    vocab = data.get("model", {}).get("vocab", {})
    pairs = (
        [(piece, i) for i, (piece, _) in enumerate(vocab)]  # Unigram: [[piece, score], ...]
        if isinstance(vocab, list)
        else list(vocab.items())  # BPE, WordLevel: {piece: id}
    )
    pairs += [(t["content"], t["id"]) for t in data.get("added_tokens", [])]
    if not pairs:
        raise DataError(f"{path} holds no vocabulary (model.vocab); is the download complete?")
    table: list[str | None] = [None] * (max(i for _, i in pairs) + 1)
    for piece, i in pairs:
        if table[i] not in (None, piece):
            raise DataError(f"{path} gives id {i} to both {table[i]!r} and {piece!r}")
        table[i] = piece
    return [p if p is not None else f"<unused{i}>" for i, p in enumerate(table)]


def _m2m100_table(directory: Path, tok: dict) -> tuple[list[str], dict]:
    """M2M-100's table: vocab.json, the `__xx__` tokens, madeupword0..N-1 (as
    M2M100Tokenizer and CTranslate2's M2M100Loader lay them out)."""
    path = directory / "vocab.json"
    mapping = _read_json(path, required=True)
    table = [""] * len(mapping)
    for piece, i in mapping.items():
        if not isinstance(i, int) or not 0 <= i < len(table) or table[i]:
            raise DataError(f"{path} maps {piece!r} to {i!r}; ids must be 0..{len(table) - 1}")
        table[i] = piece
    which = tok.get("language_codes", "m2m100")
    if which not in M2M100_CODES:
        raise ConfigError(
            f"{directory}/tokenizer_config.json has language_codes {which!r}; "
            f"mtkit knows {', '.join(M2M100_CODES)}"
        )
    codes = M2M100_CODES[which].split()
    tokens = {code: f"__{code}__" for code in codes}
    madeup = [f"madeupword{i}" for i in range(int(tok.get("num_madeup_words", 8)))]
    return [*table, *tokens.values(), *madeup], tokens


def _license(directory: Path) -> str | None:
    """The `license:` of README.md's front matter (the hub's model card), if any."""
    path = directory / "README.md"
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    found = re.search(r"\A---\n.*?^license:\s*(\S+)", text, flags=re.S | re.M)
    return found.group(1) if found else None


def _exported_checkpoint(directory: Path, hf: dict, origin: str | None) -> dict:
    """What `mtkit export --format transformers` wrote for a pre-norm mtkit model: M2M100's
    weights with MarianTokenizer's files (its SentencePiece models and id tables, one
    language pair), as mtkit.interop.hf_export lays them out."""
    from mtkit.interop.marian import _languages, _read_bytes, _read_vocabs

    tok = _read_json(directory / "tokenizer_config.json")
    shared = {"share_encoder_decoder_embeddings": not tok.get("separate_vocabs", False)}
    src_table, tgt_table = _read_vocabs(directory, shared)
    weights = _read_weights(directory)
    embed, _ = _embeddings(weights, {"share_encoder_decoder_embeddings": True})
    table = _fit_table(tgt_table, embed.size(0), "model's")
    config = _model_config(hf, len(table))
    _check_specials(table, config, "model's")
    model = _convert_weights(weights, config, embed, embed)
    del model["final_logits_bias"]
    _linear(model, weights, "enc_norm", "model.encoder.layer_norm")
    _linear(model, weights, "dec_norm", "model.decoder.layer_norm")
    return {
        "model_config": dataclasses.asdict(config),
        "model": model,
        "spm": {side: _read_bytes(directory / f"{name}.spm") for side, name in SPM_SIDES},
        "vocab": {"src": _fit_table(src_table, embed.size(0), "source"), "tgt": table},
        "langs": _languages(directory, origin),
        "step": 0,
        "epoch": 0,
        "metrics": {},
        "train_config": {
            "imported_from": origin or str(directory),
            "hf_model_type": "m2m_100",
            "hf_tokenizer_class": "MarianTokenizer",
            "hf_generation_config": _read_json(directory / "generation_config.json"),
        },
    }


# -- the model -----------------------------------------------------------------


def _model_config(hf: dict, vocab_size: int) -> ModelConfig:
    """mtkit's settings for an M2M100Config; what mtkit cannot express is refused by name."""
    for enc, dec in (
        ("encoder_attention_heads", "decoder_attention_heads"),
        ("encoder_ffn_dim", "decoder_ffn_dim"),
    ):
        if hf.get(enc, 16) != hf.get(dec, 16):
            raise ConfigError(
                f"this model has {enc}={hf.get(enc)} but {dec}={hf.get(dec)}; mtkit's "
                "Transformer uses one value for both, so it cannot import it"
            )
    activation = hf.get("activation_function", "relu")
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"activation {activation!r} is not one mtkit has ({', '.join(ACTIVATIONS)})"
        )
    if hf.get("tie_word_embeddings", True) is False:
        raise ConfigError(
            "this model's output projection is not tied to its embedding "
            "(tie_word_embeddings false); mtkit's Transformer ties them"
        )
    eos = hf.get("eos_token_id", 2)
    eos = eos[0] if isinstance(eos, list) else eos
    return validate(
        ModelConfig(
            arch="transformer",
            src_vocab_size=vocab_size,
            tgt_vocab_size=vocab_size,
            pad_id=hf.get("pad_token_id", 1),
            # The decoder starts from </s>: mtkit's bos_id is the decoder-start id.
            bos_id=hf.get("decoder_start_token_id", eos),
            eos_id=eos,
            **hf_shape(hf),
            pre_norm=True,
            share_embeddings=True,
            max_positions=hf.get("max_position_embeddings", 1024),
            activation=ACTIVATIONS[activation],
            positions="fairseq",
            scale_embeddings=bool(hf.get("scale_embedding", True)),
            final_logits_bias=False,
        )
    )
