"""The training data of a run: languages, SentencePiece models, text files, encoded pairs.

Owns finding DATA/{train,valid}.{src,tgt} (valid may be absent), checking that
the SentencePiece model(s) fit the pair (unknown-piece rate), and handing the
training text to `mtkit.train.corpus` (encoded once, memory-mapped) and the
small validation set to `mtkit.train.batching.encode_pairs`. Cutting batches is
`mtkit.train.batching`'s job; reading raw corpora is `mtkit.prepare.pipeline`'s; reading
the manifest and prepared text files is `mtkit.manifest`'s (shared with the shortlist).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from mtkit.errors import DataError
from mtkit.manifest import head_lines, manifest_langs, read_lines, recorded_files
from mtkit.train.batching import encode_pairs

log = logging.getLogger(__name__)

# More unknown pieces than this in a sample means the vocabulary was trained on
# other languages or other text: training would learn to produce <unk>.
MAX_UNK_RATE = 0.05
UNK_SAMPLE_LINES = 2000


@dataclass
class RunData:
    """Everything the trainer needs from DATA and SPM."""

    langs: dict  # {"src": "de", "tgt": "en"}
    src_tok: object  # mtkit.tokenizer.Tokenizer
    tgt_tok: object
    train: object  # mtkit.train.batching.Pairs, memory-mapped (mtkit.train.corpus)
    valid: object  # Pairs in memory, or None when DATA has no valid split
    valid_src_lines: list  # the raw text, for BLEU references
    valid_tgt_lines: list
    specs: list = field(default_factory=list)  # mix.CorpusSpec of each --data
    corpora: list = field(default_factory=list)  # each corpus's mapped Pairs, in order
    valid_dir: str | None = None  # the --data whose valid split validates
    mix: object = None  # mix.Mix when the run has several corpora, a weight or a tag
    pairs: list = field(default_factory=list)  # each corpus's {"src", "tgt"}
    languages: object = None  # mtkit.languages.Languages of a multilingual run, else None
    valid_sets: list = field(default_factory=list)  # multilingual.ValidSet a direction
    # Fine-tuning a multilingual model on one pair (mtkit.train.finetune): the target
    # language's token, forced after the decoder's start in validation's search.
    target_prefix: tuple = ()

    def __post_init__(self) -> None:
        if self.train is None and self.corpora:
            self.train = self.corpora[0]

    @property
    def is_mix(self) -> bool:
        """Anything but one plain --data DIR (which trains exactly as it always did)."""
        return len(self.specs) > 1 or any(not spec.plain for spec in self.specs)

    @property
    def spm_bytes(self) -> dict:
        return {"src": self.src_tok.model_bytes, "tgt": self.tgt_tok.model_bytes}

    @property
    def banned_ids(self) -> list[int]:
        """Target ids validation never outputs: the source-side tag pieces (train-bpe's
        reserved tags and the mix's tags), passed to the search explicitly."""
        from mtkit.tokenizer import RESERVED_TAGS

        tags = (*RESERVED_TAGS, *(spec.tag for spec in self.specs if spec.tag))
        if self.languages is not None and self.languages.scheme == "tag":
            tags += tuple(self.languages.tokens.values())  # they go before sources only
        return self.tgt_tok.tag_ids(tuple(dict.fromkeys(tags)))

    @property
    def valid_dirs(self) -> list[str]:
        """The --data directories whose valid splits validate."""
        if self.valid_sets:
            return [one.data_dir for one in self.valid_sets]
        return [self.valid_dir] if self.valid_dir else []

    @property
    def directions(self) -> list[str] | None:
        """Each corpus's direction ("de-en") in a multilingual run; None in a bilingual one."""
        if self.languages is None:
            return None
        return [f"{pair['src']}-{pair['tgt']}" for pair in self.pairs]


def load_tokenizers(spm: str | None, src_spm: str | None, tgt_spm: str | None, langs: dict):
    """The source and target Tokenizers (the same one twice for a joint model)."""
    from mtkit.tokenizer import Tokenizer

    if spm:
        tok = Tokenizer.from_file(Path(spm))
        return tok, tok
    for side, path in (("src", src_spm), ("tgt", tgt_spm)):
        named = re.fullmatch(r"spm\.(.+)\.model", Path(path).name)
        if named and named.group(1) != langs[side]:
            raise DataError(
                f"--{side}-spm {path} is train-bpe's model for {named.group(1)!r}, but the "
                f"{'source' if side == 'src' else 'target'} language is {langs[side]!r}; "
                "are --src-spm and --tgt-spm swapped?"
            )
    return Tokenizer.from_file(Path(src_spm)), Tokenizer.from_file(Path(tgt_spm))


def check_unk_rate(tok, lines: list[str], lang: str, path: Path) -> float:
    """Fail when the model leaves too many pieces of `lines` unknown; return the rate."""
    sample = [line for line in lines[:UNK_SAMPLE_LINES] if line]
    pieces = [i for ids in tok.encode(sample) for i in ids]
    rate = sum(i == tok.unk_id for i in pieces) / max(1, len(pieces))
    if rate > MAX_UNK_RATE:
        raise DataError(
            f"SentencePiece model {tok.name} leaves {rate:.1%} of the pieces of {path} unknown "
            f"(limit {MAX_UNK_RATE:.0%}): it was not trained on {lang!r} text; train one on "
            "this data with `mtkit train-bpe` or pass the matching --spm/--src-spm/--tgt-spm"
        )
    return rate


def load_run_data(config, tokenizers: tuple | None = None, init_languages=None) -> RunData:
    """The run's languages, tokenizers, mapped training pairs and validation pairs
    for `config` (a TrainConfig); `tokenizers` (source, target) instead of --spm's
    (those of the checkpoint --init-from names). Several `--data DIR[:WEIGHT[:TAG]]`
    make a mix (`mtkit.train.mix`): each corpus mapped on its own, validation from
    the first that has a valid split; corpora of several pairs make a multilingual run
    (`mtkit.train.multilingual`), validated on each direction. `init_languages`, the
    Languages of a multilingual --init-from, fine-tunes one pair (mtkit.train.finetune)."""
    from mtkit.train import multilingual
    from mtkit.train.mix import parse_specs

    specs = parse_specs(config.data)
    dirs = _data_dirs(specs)
    pairs = multilingual.corpus_pairs(dirs, config.src, config.tgt)
    languages = multilingual.run_languages(pairs)
    direction = _finetune_direction(config, init_languages, languages, pairs)
    if direction is not None:
        languages = init_languages
    if languages is None and pairs[0]["src"] == pairs[0]["tgt"]:
        raise DataError(f"source and target are both {pairs[0]['src']!r}; pass --src and --tgt")
    if languages is None and getattr(config, "sample_temperature", 1.0) != 1.0:
        log.warning("--sample-temperature balances language pairs; every corpus here holds "
                    "%s-%s, so it changes nothing", pairs[0]["src"], pairs[0]["tgt"])  # fmt: skip
    for data_dir, pair in zip(dirs, pairs, strict=True):
        _check_prepared(data_dir, pair, dirs[0])
    multilingual.check_spm_options(languages, config.src_spm, config.tgt_spm)
    src_tok, tgt_tok = tokenizers or load_tokenizers(
        config.spm, config.src_spm, config.tgt_spm, pairs[0]
    )
    toks = {"src": src_tok, "tgt": tgt_tok}
    tags = multilingual.tag_ids(src_tok, languages) if languages and not direction else {}
    prefixes = _source_prefixes(specs, pairs, src_tok, tags, direction)
    tgt_prefix = direction.target_prefix if direction else ()
    all_paths = [
        {side: d / f"train.{p[side]}" for side in ("src", "tgt")}
        for d, p in zip(dirs, pairs, strict=True)
    ]
    for paths, pair in zip(all_paths, pairs, strict=True):
        for side, tok in toks.items():
            check_unk_rate(tok, head_lines(paths[side], UNK_SAMPLE_LINES), pair[side], paths[side])
    valid = _load_valid(dirs, pairs, toks, tags, direction)  # its errors before a long encoding
    return RunData(
        langs=(
            {"src": direction.src, "tgt": direction.tgt}
            if direction is not None
            else (multilingual.MULTILINGUAL_LANGS if languages else pairs[0])
        ),
        src_tok=src_tok,
        tgt_tok=tgt_tok,
        train=None,
        specs=specs,
        corpora=_open_corpora(config, dirs, all_paths, toks, prefixes, tgt_prefix),
        pairs=pairs,
        languages=languages,
        target_prefix=tgt_prefix,
        **valid,
    )


def _data_dirs(specs: list) -> list[Path]:
    """Each --data's directory, which must exist."""
    dirs = [Path(spec.path) for spec in specs]
    for data_dir in dirs:
        if not data_dir.is_dir():
            raise DataError(
                f"data directory not found: {data_dir}; run `mtkit prepare` or check --data"
            )
    return dirs


def _source_prefixes(specs: list, pairs: list[dict], src_tok, tags: dict, direction) -> list:
    """The ids before each corpus's sources: a multilingual run's target tag (`tags`:
    code -> id), a fine-tuning `direction`'s language tokens, the corpus's own tag."""
    from mtkit.train.mix import tag_id

    return [
        ((tags[pair["tgt"]],) if tags else ())
        + (direction.source_prefix if direction else ())
        + ((tag_id(src_tok, spec.tag),) if spec.tag else ())
        for spec, pair in zip(specs, pairs, strict=True)
    ]


def _finetune_direction(config, init_languages, languages, pairs: list[dict]):
    """The Direction a fine-tuning run of a multilingual --init-from trains (sets the
    Languages' default), or None: no such --init-from, or a multilingual run of a tag
    model (mtkit.train.multilingual's own)."""
    from mtkit.errors import ConfigError
    from mtkit.train.finetune import finetune_direction

    if init_languages is None or (languages is not None and init_languages.scheme == "tag"):
        return None
    if languages is not None:
        raise ConfigError(
            f"fine-tuning a {init_languages.scheme} model trains one language pair a run; "
            f"these corpora hold {', '.join(f'{s}-{t}' for s, t in languages.directions)}"
        )
    fine, direction = finetune_direction(init_languages, config.src_lang, config.tgt_lang, pairs[0])
    init_languages.legacy, init_languages.default = fine.legacy, fine.default
    log.info(
        "fine-tuning %s -> %s (the data's %s-%s)",
        direction.src,
        direction.tgt,
        pairs[0]["src"],
        pairs[0]["tgt"],
    )
    return direction


def _open_corpora(
    config, dirs: list[Path], all_paths: list, toks: dict, prefixes: list, tgt_prefix=()
) -> list:
    """Each corpus encoded (once) and mapped, `prefixes` before its sources and
    `tgt_prefix` before its targets; a warning for a text file changed since prepare."""
    from mtkit.train.corpus import cache_root, open_corpus

    roots = [cache_root(d, Path(config.out) / ".encoded") for d in dirs]
    corpora = [
        open_corpus(paths, toks, root, prefix, tgt_prefix)
        for paths, root, prefix in zip(all_paths, roots, prefixes, strict=True)
    ]
    for d, paths, root in zip(dirs, all_paths, roots, strict=True):
        warn_if_changed_since_prepare(d, paths, root)
    return corpora


def _load_valid(dirs: list[Path], pairs: list[dict], toks: dict, tags: dict, direction) -> dict:
    """RunData's validation fields: the first corpus's valid split that exists, or in a
    multilingual run (`tags`: code -> tag id) each direction's, joined; a fine-tuning
    `direction`'s language tokens on both sides."""
    from mtkit.train import multilingual

    none = {"valid": None, "valid_src_lines": None, "valid_tgt_lines": None}
    if tags:
        chosen = multilingual.valid_dirs(dirs, pairs, _has_valid)
        if not chosen:
            log.warning("no corpus has a valid split: training without validation")
            return none
        sets = [(d, pair, *_valid_lines(d, pair)) for d, pair in chosen]
        valid, lines, found = multilingual.join_valid(sets, toks["src"], toks["tgt"], tags)
        sources = [line for one in sets for line in one[2]]
        return {"valid": valid, "valid_src_lines": sources, "valid_tgt_lines": lines,
                "valid_dir": str(chosen[0][0]), "valid_sets": found}  # fmt: skip
    langs = pairs[0]
    valid_dir = next((d for d in dirs if _has_valid(d, langs)), dirs[0])
    if len(dirs) > 1 and _has_valid(valid_dir, langs):
        log.info("validating on %s/valid.{%s,%s}", valid_dir, langs["src"], langs["tgt"])
    src, tgt = _valid_lines(valid_dir, langs)
    if src is None:
        return none
    encode_src, encode_tgt = toks["src"].encode, toks["tgt"].encode
    if direction is not None:  # the language tokens, as the training corpus has them
        head, tail = direction.source_prefix, direction.target_prefix
        encode_src = lambda lines: [[*head, *x] for x in toks["src"].encode(lines)]  # noqa: E731
        encode_tgt = lambda lines: [[*tail, *x] for x in toks["tgt"].encode(lines)]  # noqa: E731
    valid = encode_pairs(src, tgt, encode_src, encode_tgt)
    return {"valid": valid, "valid_src_lines": src, "valid_tgt_lines": tgt,
            "valid_dir": str(valid_dir)}  # fmt: skip


def warn_if_changed_since_prepare(data_dir: Path, paths: dict, root: Path) -> None:
    """Warn when a training file's sha256 is not the one `mtkit prepare` recorded in
    manifest.json: a bad copy shows here. Only a warning: people edit prepared text on
    purpose (the encoded corpus follows the text as it is, whatever the manifest says)."""
    from mtkit.train.corpus import file_checksum  # remembered by stat: no second read

    try:
        recorded = {f["name"]: f["sha256"] for f in recorded_files(data_dir)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return  # no manifest of prepare's: nothing to compare with
    for path in paths.values():
        if recorded.get(path.name) not in (None, file_checksum(path, root)):
            log.warning(
                "%s is not the file `mtkit prepare` wrote (its sha256 differs from "
                "manifest.json's): training on it as it is; prepare again if it changed by "
                "accident (`mtkit inspect --verify %s` checks every file)",
                path,
                data_dir,
            )


def _check_prepared(data_dir: Path, langs: dict, first: Path) -> None:
    """DIR holds train.SRC and train.TGT, and its manifest (if any) names the same pair."""
    manifest = data_dir / "manifest.json"
    if manifest.is_file():
        try:
            found = manifest_langs(json.loads(manifest.read_text(encoding="utf-8")))
        except json.JSONDecodeError:
            found = None
        if found is not None and set(found) != {langs["src"], langs["tgt"]}:
            raise DataError(
                f"--data {data_dir} holds {found[0]}-{found[1]} but {first} holds "
                f"{langs['src']}-{langs['tgt']}; every corpus of a run must have the same "
                "language pair"
            )
    missing = [f"train.{langs[s]}" for s in ("src", "tgt")]
    missing = [name for name in missing if not (data_dir / name).is_file()]
    if missing:
        raise DataError(
            f"--data {data_dir} is no prepared corpus (no {' or '.join(missing)}); "
            f"write it with `mtkit prepare --out {data_dir}` or check the path"
        )


def _has_valid(data_dir: Path, langs: dict) -> bool:
    return any((data_dir / f"valid.{langs[side]}").exists() for side in ("src", "tgt"))


def _valid_lines(data_dir: Path, langs: dict) -> tuple[list | None, list | None]:
    """Both sides of DATA/valid, or (None, None) when the split is absent altogether
    (one side alone is an error: a half-prepared directory)."""
    paths = [data_dir / f"valid.{langs[side]}" for side in ("src", "tgt")]
    if not any(p.exists() for p in paths):
        log.warning(
            "%s has no valid split: training without validation (no checkpoint_best.pt, "
            "no early stopping)",
            data_dir,
        )
        return None, None
    src, tgt = (read_lines(p) for p in paths)
    _check_parallel(data_dir, "valid", langs, src, tgt)
    return src, tgt


def _check_parallel(data_dir: Path, split: str, langs: dict, src: list, tgt: list) -> None:
    if len(src) != len(tgt):
        raise DataError(
            f"{data_dir}/{split}.{langs['src']} has {len(src)} lines but "
            f"{split}.{langs['tgt']} has {len(tgt)}; the sides of a split must be parallel"
        )
    if not src:
        raise DataError(
            f"{data_dir}/{split}.{langs['src']} is empty; {split} needs at least one pair"
        )
