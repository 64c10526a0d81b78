"""A checkpoint's languages: the codes it knows, and where their tokens go (no torch).

Owns the checkpoint's "languages" entry and turning `--src-lang/--tgt-lang` into the
token ids to add (`Direction`), for every scheme a model may have been trained with
(notes/LANGUAGES.md):

    nllb     source = [src] pieces </s>, or pieces </s> [src] when `legacy`
             (NllbTokenizer's legacy_behaviour); decoder = </s> [tgt] forced, then free
    m2m100   source = [src] pieces </s>; decoder = </s> [tgt] forced (M2M100Tokenizer)
    tag      source = [tgt] pieces </s> (Johnson et al., 2017); decoder from bos as a
             bilingual model's; no source-language token

    "languages": {"scheme": str, "legacy": bool, "tokens": {code: piece},
                  "directions": [[src, tgt], ...] (trained pairs; empty: any),
                  "default": {"src": code | None, "tgt": code | None}}

Bilingual checkpoints have no "languages" and keep "langs": {"src", "tgt"}. Codes on
the command line are the model's own (deu_Latn, de, ...). Below checkpoint, search,
train and translate: it reads dicts and id tables, never models or files.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mtkit.errors import ConfigError

SCHEMES = ("nllb", "m2m100", "tag")
# How many near codes an unknown one is answered with.
CLOSE_CODES = 5


@dataclass(frozen=True)
class Direction:
    """The token ids one translation direction adds: source ids are
    source_prefix + pieces + [eos] + source_suffix; the decoder reads its start id,
    then target_prefix (forced), then generates. Empty for a bilingual model."""

    src: str | None = None
    tgt: str | None = None
    source_prefix: tuple[int, ...] = ()
    source_suffix: tuple[int, ...] = ()
    target_prefix: tuple[int, ...] = ()

    @property
    def extra_source(self) -> int:
        """Ids this direction adds to a source beside its pieces and eos."""
        return len(self.source_prefix) + len(self.source_suffix)

    def source(self, pieces: Sequence[int], eos_id: int, max_len: int | None = None) -> list[int]:
        """The source ids of `pieces`, cut so that at most `max_len` ids result (the
        model's max_positions): the pieces give way, never the language tokens."""
        if max_len is not None:
            pieces = pieces[: max(0, max_len - 1 - self.extra_source)]
        return [*self.source_prefix, *pieces, eos_id, *self.source_suffix]

    def target(self, pieces: Sequence[int]) -> list[int]:
        """A teacher-forced target's pieces with the forced prefix before them (the decoder
        reads bos + this, and predicts this + eos)."""
        return [*self.target_prefix, *pieces]


@dataclass
class Languages:
    """A multilingual checkpoint's languages (the "languages" entry) and their ids."""

    scheme: str
    tokens: dict[str, str]  # code -> its piece
    legacy: bool = False
    directions: list[tuple[str, str]] = field(default_factory=list)
    default: dict[str, str | None] = field(default_factory=lambda: {"src": None, "tgt": None})
    # piece -> id of each side's vocabulary (not saved: the checkpoint's tables give them)
    ids: dict[str, Mapping[str, int]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, values: Mapping, ids: Mapping[str, Mapping[str, int]] | None = None):
        """From a checkpoint's "languages" entry (checked), with each side's piece -> id."""
        scheme = values.get("scheme")
        if scheme not in SCHEMES:
            raise ConfigError(
                f"unknown language scheme {scheme!r} in the checkpoint; this mtkit knows "
                f"{', '.join(SCHEMES)} (was it made by a newer mtkit?)"
            )
        default = {"src": None, "tgt": None} | dict(values.get("default") or {})
        return cls(
            scheme=scheme,
            tokens=dict(values.get("tokens") or {}),
            legacy=bool(values.get("legacy", False)),
            directions=[tuple(pair) for pair in values.get("directions") or []],
            default=default,
            ids=dict(ids or {}),
        )

    def to_dict(self) -> dict:
        """The checkpoint's "languages" entry (plain types only, for torch.save)."""
        return {
            "scheme": self.scheme,
            "legacy": self.legacy,
            "tokens": dict(self.tokens),
            "directions": [list(pair) for pair in self.directions],
            "default": dict(self.default),
        }

    @property
    def codes(self) -> list[str]:
        """The language codes, in the model's order."""
        return list(self.tokens)

    def direction(self, src_lang: str | None, tgt_lang: str | None) -> Direction:
        """The ids to add for `src_lang` -> `tgt_lang` (None: the checkpoint's default);
        ConfigError for a missing or unknown code, or a pair the model was not trained on."""
        tgt = self._code(tgt_lang, "tgt")
        src = self._code(src_lang, "src") if self.scheme != "tag" or src_lang else None
        trained = self.directions and (
            (src, tgt) not in self.directions
            if src is not None
            else tgt not in {t for _, t in self.directions}
        )
        if trained:
            pairs = ", ".join(f"{s}->{t}" for s, t in self.directions)
            raise ConfigError(
                f"this model was trained on {pairs}, not {src or '*'}->{tgt}; pick one of those"
            )
        if self.scheme == "tag":
            return Direction(src, tgt, source_prefix=(self._id(tgt, "src"),))
        src_id, tgt_id = self._id(src, "src"), self._id(tgt, "tgt")
        if self.scheme == "nllb" and self.legacy:
            return Direction(src, tgt, source_suffix=(src_id,), target_prefix=(tgt_id,))
        return Direction(src, tgt, source_prefix=(src_id,), target_prefix=(tgt_id,))

    def _code(self, code: str | None, side: str) -> str:
        if code is None:
            code = self.default.get(side)
        if code is None:
            flag = "--tgt-lang" if side == "tgt" else "--src-lang"
            verb = "translates into" if side == "tgt" else "reads"
            raise ConfigError(
                f"this model {verb} {len(self.tokens)} languages: give {flag} "
                "(list them: mtkit inspect MODEL)"
            )
        if code not in self.tokens:
            raise ConfigError(unknown_code(code, self.codes))
        return code

    def _id(self, code: str, side: str) -> int:
        piece = self.tokens[code]
        found = self.ids.get(side, {}).get(piece)
        if found is None:
            raise ConfigError(
                f"the language token {piece!r} of {code} is not in the model's vocabulary; "
                "the checkpoint is inconsistent"
            )
        return found


def unknown_code(code: str, codes: Sequence[str]) -> str:
    """The one line for a code the model does not know: the closest codes, and how to list."""
    close = difflib.get_close_matches(code, codes, n=CLOSE_CODES, cutoff=0.0)
    return (
        f"unknown language code {code!r}; closest: {', '.join(close)} "
        "(list them: mtkit inspect MODEL --langs)"
    )


def languages_of(checkpoint: Mapping) -> Languages | None:
    """The checkpoint's Languages with its token ids, or None for a bilingual model."""
    values = checkpoint.get("languages")
    if not values:
        return None
    return Languages.from_dict(values, ids=_piece_ids(checkpoint))


def direction_of(checkpoint: Mapping, src_lang: str | None, tgt_lang: str | None) -> Direction:
    """The Direction of any checkpoint: a multilingual one's (Languages.direction), or
    for a bilingual one the empty Direction, once the codes given match its pair."""
    languages = languages_of(checkpoint)
    if languages is not None:
        return languages.direction(src_lang, tgt_lang)
    pair = checkpoint.get("langs") or {}
    for side, code, flag in (("src", src_lang, "--src-lang"), ("tgt", tgt_lang, "--tgt-lang")):
        if code is not None and pair.get(side) not in (None, code):
            raise ConfigError(
                f"this model translates {pair.get('src')} -> {pair.get('tgt')} only; "
                f"{flag} {code} does not fit it (leave the flag out)"
            )
    return Direction(pair.get("src"), pair.get("tgt"))


def _piece_ids(checkpoint: Mapping) -> dict[str, dict[str, int]]:
    """piece -> id of the source and target vocabularies, for the language pieces only:
    the checkpoint's id tables (imported models), else its SentencePiece models."""
    pieces = set((checkpoint.get("languages") or {}).get("tokens", {}).values())
    tables = checkpoint.get("vocab") or {}
    ids = {}
    for side in ("src", "tgt"):
        table = tables.get(side)
        if table is not None:
            ids[side] = {p: i for i, p in enumerate(table) if p in pieces}
            continue
        import sentencepiece

        sp = sentencepiece.SentencePieceProcessor(model_proto=checkpoint["spm"][side])
        found = {p: sp.piece_to_id(p) for p in pieces}
        ids[side] = {p: i for p, i in found.items() if sp.id_to_piece(i) == p}
    return ids


def describe_languages(checkpoint: Mapping) -> dict | None:
    """What `inspect` shows of the languages: scheme, how many codes, defaults, pairs."""
    languages = languages_of(checkpoint)
    if languages is None:
        return None
    return {
        "scheme": languages.scheme + (" (legacy)" if languages.legacy else ""),
        "codes": len(languages.codes),
        "default": f"{languages.default.get('src')}->{languages.default.get('tgt')}",
        "directions": ",".join(f"{s}->{t}" for s, t in languages.directions) or "any",
    }
