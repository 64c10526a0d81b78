"""Fine-tuning a multilingual checkpoint (NLLB-200, M2M-100, an mtkit multilingual run) on
one language pair: the direction it trains, and languages it did not know.

`train --init-from nllb.pt --src-lang deu_Latn --tgt-lang hsb_Latn --add-lang hsb_Latn:ces_Latn`
adds the token of `hsb_Latn` (a spare row of the embedding where the model has one, such
as NLLB's two placeholder rows or M2M-100's made-up words, else a new row), starts its
embedding from `ces_Latn`'s (without `:like`, from the mean of the language tokens'), and
trains deu_Latn -> hsb_Latn: the language tokens go where mtkit.languages puts them, on
the training pairs (baked into the encoded corpus: the source's token, and the target's
token before the target, which the decoder reads after its start id and learns to
predict, as transformers' fine-tuning does) and in validation, which decodes into the
target language. The checkpoint then remembers the pair (languages.default and langs),
so `translate -m ft.pt` needs no flags. NLLB's legacy layout (the source token last) is
trained in the current one, the layout NLLB itself was trained with: the fine-tuned
checkpoint says legacy false.

Owns the checkpoint surgery (`add_languages`) and choosing the direction
(`finetune_direction`); the corpus, batches and validation stay mtkit.train's.
"""

from __future__ import annotations

import dataclasses
import logging
import re

from mtkit.errors import ConfigError
from mtkit.languages import Direction, Languages, unknown_code

log = logging.getLogger(__name__)

# Rows of an imported table that no text produces, which a new language may take.
SPARE_PIECE = re.compile(r"^(<unused\d+>|madeupword\d+)$")


def parse_add_lang(spec: str) -> tuple[str, str | None]:
    """ "hsb_Latn:ces_Latn" -> ("hsb_Latn", "ces_Latn"); "hsb_Latn" -> ("hsb_Latn", None)."""
    code, _, like = spec.partition(":")
    if not code or ":" in like:
        raise ConfigError(
            f"--add-lang {spec!r}: give CODE or CODE:LIKE, e.g. hsb_Latn:ces_Latn (LIKE: a "
            "language the model knows, whose token's embedding the new one starts from)"
        )
    return code, like or None


def language_piece(scheme: str, code: str) -> str:
    """The token of `code` as the model's scheme names it."""
    from mtkit.tokenizer import lang_tag

    return {"nllb": code, "m2m100": f"__{code}__"}.get(scheme) or lang_tag(code)


def add_languages(ckpt: dict, specs: tuple[str, ...]) -> dict:
    """The checkpoint dict (in place) with a token for each `--add-lang CODE[:LIKE]`: its
    id table, embedding rows, model sizes and languages entry grown or a spare row taken."""
    if not specs:
        return ckpt
    if not ckpt.get("languages"):
        raise ConfigError(
            "--add-lang adds a language to a multilingual model (NLLB-200, M2M-100, an mtkit "
            "multilingual run); this checkpoint translates one pair"
        )
    tables = ckpt.get("vocab") or {}
    if not tables.get("tgt"):
        raise ConfigError(
            "--add-lang needs a model with its own id table (an imported NLLB-200 or "
            "M2M-100); an mtkit multilingual model reserves its languages with train-bpe "
            "--langs"
        )
    languages = Languages.from_dict(ckpt["languages"])
    for spec in specs:
        code, like = parse_add_lang(spec)
        if code in languages.tokens:
            raise ConfigError(f"--add-lang {code}: the model knows {code} already; drop it")
        if like is not None and like not in languages.tokens:
            raise ConfigError(unknown_code(like, languages.codes))
        piece = language_piece(languages.scheme, code)
        row = _take_row(ckpt, piece)
        _init_row(ckpt, row, [languages.tokens[like]] if like else list(languages.tokens.values()))
        languages.tokens[code] = piece
        log.info(
            "--add-lang %s: token %r at id %d, its embedding from %s",
            code,
            piece,
            row,
            like or "the mean of the language tokens'",
        )
    ckpt["languages"] = languages.to_dict()
    return ckpt


def _take_row(ckpt: dict, piece: str) -> int:
    """The id for `piece`: the first spare row of the table, else a new last row (the
    embedding, its output and the model's vocabulary sizes grow by one)."""
    import torch

    tables, model, config = ckpt["vocab"], ckpt["model"], ckpt["model_config"]
    table = tables["tgt"]
    row = next((i for i, p in enumerate(table) if SPARE_PIECE.match(p)), None)
    if row is None:
        row = len(table)
        for key in ("tgt_embed.weight", "src_embed.weight"):
            if key in model:
                model[key] = torch.cat([model[key], model[key].new_zeros(1, model[key].size(1))])
        if model.get("final_logits_bias") is not None:
            bias = model["final_logits_bias"]
            model["final_logits_bias"] = torch.cat([bias, bias.new_zeros(1)])
        config["src_vocab_size"] += 1
        config["tgt_vocab_size"] += 1
        table = [*table, piece]
    else:
        table = [*table[:row], piece, *table[row + 1 :]]
    src = tables.get("src")
    if src is not None and src is not tables["tgt"] and src != tables["tgt"]:
        raise ConfigError("--add-lang needs one joint vocabulary; this model has two")
    ckpt["vocab"] = {"src": table, "tgt": table}
    return row


def _init_row(ckpt: dict, row: int, from_pieces: list[str]) -> None:
    """The new row of each embedding: the mean of the rows of `from_pieces`."""
    index = {p: i for i, p in enumerate(ckpt["vocab"]["tgt"])}
    rows = [index[p] for p in from_pieces if p in index]
    for key in ("tgt_embed.weight", "src_embed.weight"):
        weight = ckpt["model"].get(key)
        if weight is not None and rows:
            weight = weight.clone()
            weight[row] = weight[rows].mean(0)
            ckpt["model"][key] = weight


def finetune_direction(
    languages: Languages, src_lang: str | None, tgt_lang: str | None, pair: dict
) -> tuple[Languages, Direction]:
    """The direction a fine-tuning run trains, and the Languages its checkpoints hold
    (the pair as default, NLLB's current layout). --src-lang/--tgt-lang, else the data's
    own codes (de, en) where the model has them (M2M-100, an mtkit run)."""
    src = src_lang or (pair["src"] if pair["src"] in languages.tokens else None)
    tgt = tgt_lang or (pair["tgt"] if pair["tgt"] in languages.tokens else None)
    languages = dataclasses.replace(languages, legacy=False, default={"src": None, "tgt": None})
    direction = languages.direction(src, tgt)
    languages.default = {"src": direction.src, "tgt": direction.tgt}
    return languages, direction
