"""One model, several language pairs: the run's languages, the target-language tags on
its sources, and its validation sets, one per direction.

`mtkit train --data DIR --data DIR ...` whose prepared directories hold different pairs
(each DIR's manifest.json names its src and tgt: de-en, en-de, fr-en ...) trains one
multilingual model, as Johnson et al. (2017) do: every source sentence gets the piece
of its target language in front (`<2en>`, scheme "tag" of mtkit.languages, which
`mtkit train-bpe --langs` reserves), and the model learns to write the language its
tag asks for, also in directions it never saw (zero-shot). The checkpoint's
"languages" entry holds the codes, their pieces and the trained directions, which
`translate --tgt-lang` reads. With --src/--tgt every corpus is read as that one pair:
a bilingual run, as before.

Owns telling the two apart (`corpus_pairs`, `run_languages`), the tag ids (a model
without them is one line naming the train-bpe command), and joining the directions'
validation sets into one set with each direction's range (`ValidSet`). The sampling
over the pairs is mtkit.train.mix's; scoring per direction, mtkit.train.validate's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mtkit.errors import ConfigError
from mtkit.languages import Languages
from mtkit.manifest import MANIFEST, pair_langs
from mtkit.tokenizer import lang_tag

log = logging.getLogger(__name__)

# The `langs` of a multilingual checkpoint (ISO 639-2 "mul", as imported NLLB models
# have): the pair is chosen per run (mtkit.languages).
MULTILINGUAL_LANGS = {"src": "mul", "tgt": "mul"}


def corpus_pairs(dirs: list[Path], src: str | None, tgt: str | None) -> list[dict]:
    """Each corpus's {"src", "tgt"}: --src/--tgt for all when given, else its manifest's
    (a corpus after the first without a manifest is taken for the first's pair)."""
    first = pair_langs(dirs[0], src, tgt)
    return [first] + [
        pair_langs(d, src, tgt) if (d / MANIFEST).is_file() else dict(first) for d in dirs[1:]
    ]


def direction_name(pair: dict) -> str:
    """ "de-en" for {"src": "de", "tgt": "en"}."""
    return f"{pair['src']}-{pair['tgt']}"


def run_languages(pairs: list[dict]) -> Languages | None:
    """The run's Languages (scheme "tag", the trained directions, a piece per code), or
    None when every corpus holds the same pair (a bilingual run)."""
    directions = list(dict.fromkeys((p["src"], p["tgt"]) for p in pairs))
    if len(directions) < 2:
        return None
    for src, tgt in directions:
        if src == tgt:
            raise ConfigError(
                f"a corpus holds {src}-{tgt}: source and target are the same language; "
                "check its manifest.json"
            )
    codes = dict.fromkeys(code for pair in directions for code in pair)
    return Languages(
        scheme="tag", tokens={code: lang_tag(code) for code in codes}, directions=directions
    )


def check_spm_options(languages: Languages | None, src_spm, tgt_spm) -> None:
    """A multilingual model reads and writes every language: one joint vocabulary."""
    if languages is not None and (src_spm or tgt_spm):
        raise ConfigError(
            f"a multilingual run ({_pairs_text(languages)}) reads and writes every language; "
            "give one joint --spm (mtkit train-bpe --langs "
            f"{','.join(languages.codes)}), not --src-spm/--tgt-spm"
        )


def tag_ids(tok, languages: Languages) -> dict[str, int]:
    """code -> the id of its tag piece in the source model; ConfigError (one line, with the
    command that makes a model holding them) when any is missing."""
    found = {code: tok.piece_id(piece) for code, piece in languages.tokens.items()}
    missing = [languages.tokens[code] for code, i in found.items() if i is None]
    if missing:
        raise ConfigError(
            f"SentencePiece model {tok.name} has no piece {', '.join(missing)} for the "
            f"multilingual run ({_pairs_text(languages)}); train it with `mtkit train-bpe "
            f"--langs {','.join(languages.codes)} ...` (it reserves the language tags)"
        )
    return found


def _pairs_text(languages: Languages) -> str:
    return ", ".join(f"{s}-{t}" for s, t in languages.directions)


@dataclass(frozen=True)
class ValidSet:
    """One direction's validation lines: lines start .. start + size of the run's joined
    validation set, read from DIR/valid.*."""

    name: str  # "de-en"
    start: int
    size: int
    data_dir: str


def valid_dirs(dirs: list[Path], pairs: list[dict], has_valid) -> list[tuple[Path, dict]]:
    """Per direction, in the order first met, the first DIR of it with a valid split
    (`has_valid(dir, pair)`); a direction without one is logged and not validated."""
    chosen: dict[str, tuple[Path, dict]] = {}
    for data_dir, pair in zip(dirs, pairs, strict=True):
        name = direction_name(pair)
        if name not in chosen and has_valid(data_dir, pair):
            chosen[name] = (data_dir, pair)
    for name in dict.fromkeys(direction_name(p) for p in pairs):
        if name in chosen:
            log.info("validating %s on %s/valid.*", name, chosen[name][0])
        else:
            log.warning("no corpus of %s has a valid split: %s is not validated", name, name)
    return list(chosen.values())


def join_valid(sets: list[tuple[Path, dict, list, list]], src_tok, tgt_tok, ids: dict):
    """(Pairs, target lines, ValidSets) of the directions' validation lines joined in
    order, each source with its target's tag in front. `sets`: (DIR, pair, source
    lines, target lines) a direction."""
    from mtkit.train.batching import Pairs, encode_side

    sources, targets, lines, found = [], [], [], []
    for data_dir, pair, src_lines, tgt_lines in sets:
        tag = ids[pair["tgt"]]
        sources += [[tag, *pieces] for pieces in src_tok.encode(src_lines)]
        targets += tgt_tok.encode(tgt_lines)
        found.append(ValidSet(direction_name(pair), len(lines), len(tgt_lines), str(data_dir)))
        lines += tgt_lines
    pairs = Pairs(src=encode_side(sources, list), tgt=encode_side(targets, list))
    return pairs, lines, found
