"""The tokenizer files of a transformers export: a tokenizer that gives mtkit's ids.

Owns writing, from a checkpoint's SentencePiece model(s), id tables and languages, the
files `AutoTokenizer.from_pretrained(DIR)` reads, in the tokenizer class users of that
kind of model expect:

    MarianTokenizer    mtkit's own models and OPUS-MT imports: source.spm, target.spm,
                       vocab.json (target_vocab.json); SentencePiece's pieces looked up
                       in the table, </s> appended, no <s>: any id table is kept
    NllbTokenizer      NLLB-200 imports: tokenizer.json as transformers' converter
                       writes it (BPE over the pieces with merges from their scores,
                       SentencePiece's precompiled normalization, Metaspace, the language
                       token before the source or after it with legacy_behaviour), with
                       the checkpoint's ids; sentencepiece.bpe.model for the slow class
    M2M100Tokenizer    M2M-100 imports: vocab.json (fairseq's dictionary), the model,
                       the language codes' list; `__xx__` and made-up words follow

Leaves the model's files to mtkit.interop.hf_export, the languages to mtkit.languages.
"""

from __future__ import annotations

import base64
import json

from mtkit.errors import ConfigError, DataError

# fairseq's dictionary starts with these four (NLLB and M2M-100 ids 0-3).
FAIRSEQ_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
_FAIRSEQ_TOKENS = {
    "bos_token": "<s>",
    "pad_token": "<pad>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
}


def tokenizer_files(ckpt: dict) -> dict[str, bytes]:
    """The tokenizer's files for the checkpoint's kind (its languages' scheme)."""
    scheme = (ckpt.get("languages") or {}).get("scheme")
    if scheme == "nllb":
        return nllb_files(ckpt)
    if scheme == "m2m100":
        return m2m100_files(ckpt)
    return marian_files(ckpt)


def _json(value) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _common(config: dict) -> dict:
    """tokenizer_config.json's entries every class here shares."""
    return {
        # The sources mtkit takes: max_positions ids, the language token and eos included.
        "model_max_length": config["max_positions"],
        # Decoded text as mtkit's: no " ." -> "." rewriting.
        "clean_up_tokenization_spaces": False,
    }


# -- MarianTokenizer ------------------------------------------------------------------


def marian_files(ckpt: dict) -> dict[str, bytes]:
    """MarianTokenizer's files: both SentencePiece models, the id tables, its config.

    The tables are the checkpoint's own (an imported model's) or SentencePiece's ids,
    so `tokenizer(text)` gives the ids mtkit's encoder gives. One table serves both
    sides when the embedding and the table are shared.
    """
    from mtkit.checkpoint import checkpoint_tokenizers

    src, tgt = checkpoint_tokenizers(ckpt)
    src_table, tgt_table = table_of(src), table_of(tgt)
    config = ckpt["model_config"]
    # Separate embeddings read target_vocab.json too (MarianConfig's
    # share_encoder_decoder_embeddings=false, and mtkit's Marian import). OPUS-MT's
    # shared tables keep their two SentencePiece models and one table, as they came.
    separate = src_table != tgt_table or not config["share_embeddings"]
    langs = ckpt.get("langs") or {}
    tokenizer_config = {
        "tokenizer_class": "MarianTokenizer",
        "source_lang": langs.get("src"),
        "target_lang": langs.get("tgt"),
        "separate_vocabs": separate,
        "eos_token": tgt_table[config["eos_id"]],
        "unk_token": tgt_table[tgt.unk_id],
        "pad_token": tgt_table[config["pad_id"]],
        "sp_model_kwargs": {},
        **_common(config),
    }
    if config["bos_id"] != config["pad_id"]:  # the decoder start: special, so decode skips it
        tokenizer_config["bos_token"] = tgt_table[config["bos_id"]]
    files = {
        "source.spm": ckpt["spm"]["src"],
        "target.spm": ckpt["spm"]["tgt"],
        "vocab.json": _json({piece: i for i, piece in enumerate(src_table)}),
        "tokenizer_config.json": _json(tokenizer_config),
    }
    if separate:
        files["target_vocab.json"] = _json({piece: i for i, piece in enumerate(tgt_table)})
    return files


def table_of(tokenizer) -> list[str]:
    """The id -> piece table of an mtkit Tokenizer (its own, or SentencePiece's ids)."""
    if tokenizer.vocab is not None:
        return list(tokenizer.vocab)
    sp = tokenizer.sp
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]


# -- NllbTokenizer --------------------------------------------------------------------


def nllb_files(ckpt: dict) -> dict[str, bytes]:
    """NllbTokenizer's tokenizer.json and config over the checkpoint's table and codes."""
    import sentencepiece

    languages, table = ckpt["languages"], ckpt["vocab"]["tgt"]
    index = {piece: i for i, piece in enumerate(table)}
    sp = sentencepiece.SentencePieceProcessor(model_proto=ckpt["spm"]["tgt"])
    # SentencePiece's ids 0-2 (<unk>, <s>, </s>) are fairseq's specials, not pieces.
    pieces = [sp.id_to_piece(i) for i in range(3, sp.get_piece_size())]
    vocab = {p: index[p] for p in (*FAIRSEQ_SPECIALS, *pieces) if p in index}
    codes = list(languages["tokens"].values())
    default = languages.get("default") or {}
    src = default.get("src") or ("eng_Latn" if "eng_Latn" in codes else codes[0])
    added = [*FAIRSEQ_SPECIALS, *(["<mask>"] if "<mask>" in index else []), *codes]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [_added(p, index[p]) for p in added],
        "normalizer": _normalizer(ckpt["spm"]["tgt"]),
        "pre_tokenizer": _METASPACE,
        "post_processor": _template(src, index, languages.get("legacy", False)),
        "decoder": _METASPACE,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": "<unk>",
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges(sp, vocab),
        },
    }
    tokenizer_config = {
        "tokenizer_class": "NllbTokenizer",
        **_FAIRSEQ_TOKENS,
        "cls_token": "<s>",
        "sep_token": "</s>",
        **({"mask_token": "<mask>"} if "<mask>" in index else {}),
        "src_lang": src,
        "tgt_lang": default.get("tgt"),
        "legacy_behaviour": bool(languages.get("legacy", False)),
        "additional_special_tokens": codes,
        **_common(ckpt["model_config"]),
    }
    return {
        "tokenizer.json": _json(tokenizer),
        "tokenizer_config.json": _json(tokenizer_config),
        "sentencepiece.bpe.model": ckpt["spm"]["tgt"],
    }


# SentencePiece's word boundary, as transformers' NLLB converter sets it.
_METASPACE = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}


def _added(piece: str, i: int) -> dict:
    """An added (special) token of tokenizer.json; <mask> as NllbTokenizer adds it."""
    mask = piece == "<mask>"
    return {
        "id": i,
        "content": piece,
        "single_word": False,
        "lstrip": mask,
        "rstrip": False,
        "normalized": mask,
        "special": True,
    }


def _template(src: str, index: dict, legacy: bool) -> dict:
    """The language token before the source ([src] $A </s>), or after it when legacy."""
    single = ["$A", "</s>", src] if legacy else [src, "$A", "</s>"]
    pair = ["$A", "$B", "</s>", src] if legacy else [src, "$A", "$B", "</s>"]

    def items(sequence: list[str]) -> list[dict]:
        return [
            {"Sequence": {"id": s[1:], "type_id": 0}}
            if s.startswith("$")
            else {"SpecialToken": {"id": s, "type_id": 0}}
            for s in sequence
        ]

    return {
        "type": "TemplateProcessing",
        "single": items(single),
        "pair": items(pair),
        "special_tokens": {p: {"id": p, "ids": [index[p]], "tokens": [p]} for p in ("</s>", src)},
    }


def _normalizer(spm: bytes) -> dict:
    """SentencePiece's own normalization (its precompiled character map) and runs of
    spaces as one, as transformers' converter writes it."""
    collapse = {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}
    charsmap = _field(_field(spm, 3) or b"", 2)  # ModelProto.normalizer_spec, its map
    if not charsmap:
        return collapse
    precompiled = {"type": "Precompiled", "precompiled_charsmap": base64.b64encode(charsmap)}
    precompiled["precompiled_charsmap"] = precompiled["precompiled_charsmap"].decode("ascii")
    return {"type": "Sequence", "normalizers": [precompiled, collapse]}


def _field(message: bytes, number: int) -> bytes | None:
    """The first length-delimited field `number` of a protobuf message (wire format:
    the SentencePiece model is one; reading it needs no protobuf package)."""
    i = 0
    while i < len(message):
        key, i = _varint(message, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _varint(message, i)
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        elif wire == 2:
            size, i = _varint(message, i)
            if field == number:
                return message[i : i + size]
            i += size
        else:
            raise DataError("the SentencePiece model is not a valid protobuf message")
    return None


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not byte & 0x80:
            return value, i


def merges(sp, vocab: dict[str, int]) -> list[list[str]]:
    """BPE merges from a SentencePiece BPE model's pieces, as transformers' converter
    derives them (SentencePieceExtractor): each piece's splits into two pieces, by the
    piece's score, best first; those with a piece the vocabulary lacks left out."""
    own = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    found = []
    for i in range(3, sp.get_piece_size()):
        piece, score = sp.id_to_piece(i), sp.get_score(i)
        if piece not in vocab:
            continue
        splits = [(piece[:k], piece[k:]) for k in range(1, len(piece))]
        local = [(a, b, score) for a, b in splits if a in vocab and b in vocab]
        found += sorted(local, key=lambda m: (own.get(m[0], 0), own.get(m[1], 0)))
    found.sort(key=lambda m: m[2], reverse=True)  # stable: ties keep their order
    return [[a, b] for a, b, _ in found]


# -- M2M100Tokenizer ------------------------------------------------------------------


def m2m100_files(ckpt: dict) -> dict[str, bytes]:
    """M2M100Tokenizer's files: fairseq's dictionary, the SentencePiece model, the list of
    language codes (the tokenizer numbers `__xx__` and the made-up words after it)."""
    from mtkit.interop.m2m100 import M2M100_CODES

    languages, table = ckpt["languages"], ckpt["vocab"]["tgt"]
    tokens = languages["tokens"]
    codes = list(tokens)
    which = next((name for name, text in M2M100_CODES.items() if text.split() == codes), None)
    first = table.index(tokens[codes[0]]) if codes and tokens[codes[0]] in table else -1
    madeup = [p for p in table[first + len(codes) :] if p.startswith("madeupword")]
    layout = [*table[:first], *tokens.values(), *madeup]
    if which is None or first < 0 or table[: len(layout)] != layout:
        raise ConfigError(
            "this M2M-100 model's languages are not M2M100Tokenizer's list (were languages "
            "added with --add-lang?); M2M100Tokenizer numbers its codes itself, so it cannot "
            "give this model's ids"
        )
    default = languages.get("default") or {}
    tokenizer_config = {
        "tokenizer_class": "M2M100Tokenizer",
        **_FAIRSEQ_TOKENS,
        "sep_token": "</s>",
        "language_codes": which,
        "num_madeup_words": len(madeup),
        # As facebook/m2m100_418M lists them: special, so decoding drops them.
        "additional_special_tokens": list(tokens.values()),
        "src_lang": default.get("src") or ("en" if "en" in codes else codes[0]),
        "tgt_lang": default.get("tgt"),
        "sp_model_kwargs": {},
        **_common(ckpt["model_config"]),
    }
    return {
        "vocab.json": _json({piece: i for i, piece in enumerate(table[:first])}),
        "sentencepiece.bpe.model": ckpt["spm"]["tgt"],
        "tokenizer_config.json": _json(tokenizer_config),
    }
