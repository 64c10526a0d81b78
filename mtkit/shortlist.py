"""Lexical shortlists: the target pieces a sentence may produce, from word-translation
statistics of the training data (as Marian's `--shortlist`).

Owns building a shortlist from tokenized training pairs, writing and reading its file,
and the set of target ids allowed for a batch of source sentences. Leaves reading the
prepared data to mtkit.manifest, the search over the allowed ids to mtkit.search, and
CTranslate2's `vmap.txt` to mtkit.interop.ctranslate2 (which calls `vmap_lines`).

Why it stands outside mtkit/translate/: two stages read the file, `mtkit translate`
(mtkit.translate.stream) and the CTranslate2 export (mtkit.interop), and translate
itself loads Hugging Face Marian directories through mtkit.interop.marian. With the
shortlist below both, imports flow one way: translate -> interop -> shortlist.

How it is built: IBM model 1 (Brown et al., 1993) over SentencePiece pieces, a few EM
iterations from uniform, with a NULL source piece so that target pieces with no source
counterpart (articles, punctuation) need not be explained by real pieces; for every
source piece the `best` target pieces of highest p(t|s) are kept. A sentence's shortlist
is the union of its source pieces' lists, plus the `first` most frequent target pieces
(Marian's "first" parameter) and pad/unk/bos/eos. `--method dice` ranks by the Dice
coefficient of sentence co-occurrence instead (no EM). On Multi30k de-en (8k joint
pieces) IBM-1 covered more of the validation references at the same size (docs/students.md).
No aligner package: eflomal is only a source distribution on PyPI (C compiler and Cython
at install) and fast_align is not on PyPI; IBM-1's lexical table is what Marian's
shortlist generator reads from fast_align's alignments anyway, and it takes seconds here.

The file is an .npz: `targets` [Vs,best] int32 (-1 where a source piece has fewer), `first`
[F] int32, `specials` int32, and `meta` (JSON: how it was made, the tokenizers'
fingerprints, a checksum of the arrays). Written atomically.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from mtkit.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FORMAT = 1
METHODS = ("ibm1", "dice")
# Sentences whose piece pairs are built at once: bounds the transient memory (about 250
# pairs a sentence on Multi30k; EM then keeps 8 bytes a pair).
_CHUNK = 20_000


@dataclass(frozen=True)
class ShortlistOptions:
    """How to build a shortlist; `mtkit shortlist` maps its flags onto these fields."""

    best: int = 100  # target pieces kept per source piece (Marian's "best")
    first: int = 100  # most frequent target pieces, always allowed (Marian's "first")
    method: str = "ibm1"  # ibm1 or dice
    iterations: int = 5  # IBM-1 EM iterations
    # Training pairs read, from the start; 0: all. IBM-1 holds 8 bytes per co-occurring
    # piece pair: 200k pairs of WMT length (about 30 pieces a side) are about 1.5 GB.
    max_pairs: int = 200_000

    def check(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown --method {self.method!r}; choose one of: ibm1, dice")
        for name in ("best", "iterations"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.first < 0 or self.max_pairs < 0:
            raise ConfigError("--first and --max-pairs must not be negative")


def tokenizer_fingerprint(tok) -> str:
    """What ids mean for a tokenizer: its model's bytes and (imported models) its id table."""
    digest = hashlib.sha256(tok.model_bytes)
    if tok.vocab is not None:
        digest.update("\n".join(tok.vocab).encode())
    return digest.hexdigest()[:24]


class Shortlist:
    """A loaded shortlist: which target ids a batch of source sentences may produce."""

    def __init__(self, targets, first, specials, meta: dict) -> None:
        self.targets, self.first, self.specials, self.meta = targets, first, specials, meta

    @property
    def src_vocab_size(self) -> int:
        return self.targets.shape[0]

    @property
    def tgt_vocab_size(self) -> int:
        return int(self.meta["tgt_vocab_size"])

    def allowed(self, sources, min_size: int = 0):
        """Sorted unique target ids [V'] (int64 numpy) for the source id lists `sources`;
        at least `min_size` of them (the lowest ids missing are added: beam search needs
        2K candidates)."""
        import numpy as np

        ids = np.fromiter(itertools.chain.from_iterable(sources), dtype=np.int64)
        rows = self.targets[ids[(ids >= 0) & (ids < self.src_vocab_size)]].ravel()
        keep = np.zeros(self.tgt_vocab_size, dtype=bool)
        keep[rows[rows >= 0]] = keep[self.first] = keep[self.specials] = True
        missing = min_size - int(keep.sum())
        if missing > 0:
            keep[np.flatnonzero(~keep)[:missing]] = True
        return np.flatnonzero(keep)

    def check_tokenizers(self, src_tok, tgt_tok, model_name: str, path: Path) -> None:
        """Fail in one line when the shortlist was made for other vocabularies."""
        made = (self.meta["src_tokenizer"], self.meta["tgt_tokenizer"])
        if made != (tokenizer_fingerprint(src_tok), tokenizer_fingerprint(tgt_tok)):
            raise ConfigError(
                f"shortlist {path} was built with other SentencePiece models than {model_name}; "
                f"build one for this model with `mtkit shortlist -m {model_name}`"
            )


# -- building ------------------------------------------------------------------------


def build_shortlist(src_ids, tgt_ids, src_vocab: int, tgt_vocab: int, specials, options):
    """(targets [Vs,best], first [F]) from parallel id lists (no eos)."""
    import numpy as np

    options.check()
    counts = np.bincount(
        np.fromiter((i for ids in tgt_ids for i in ids), dtype=np.int64), minlength=tgt_vocab
    )
    counts[list(specials)] = 0
    first = np.argsort(-counts, kind="stable")[: options.first]
    first = first[counts[first] > 0].astype(np.int32)
    if options.method == "dice":
        keys, scores = _dice(src_ids, tgt_ids, tgt_vocab)
    else:
        keys, scores = _ibm1(src_ids, tgt_ids, src_vocab, tgt_vocab, options.iterations)
    return _best_per_source(keys, scores, src_vocab, tgt_vocab, options.best), first


def _pairs(src_ids, tgt_ids, null: int | None):
    """Every (source piece, target piece) pair within each sentence, for a chunk:
    src [P], tgt [P] and the target token each pair belongs to [P] (0.. over the chunk)."""
    import numpy as np

    src = [ids + [null] if null is not None else ids for ids in src_ids]
    ls = np.array([len(x) for x in src], dtype=np.int64)
    lt = np.array([len(x) for x in tgt_ids], dtype=np.int64)
    keep = (ls > 0) & (lt > 0)
    chain = itertools.chain.from_iterable
    src_flat = np.fromiter(chain(x for x, k in zip(src, keep, strict=True) if k), np.int64)
    tgt_flat = np.fromiter(chain(x for x, k in zip(tgt_ids, keep, strict=True) if k), np.int64)
    ls, lt = ls[keep], lt[keep]
    per = ls * lt
    start = np.repeat(np.cumsum(per) - per, per)
    q = np.arange(per.sum()) - start
    lt_rep = np.repeat(lt, per)
    j, k = q // lt_rep, q % lt_rep
    s_off = np.repeat(np.cumsum(ls) - ls, per)
    t_off = np.repeat(np.cumsum(lt) - lt, per)
    return src_flat[s_off + j], tgt_flat[t_off + k], t_off + k


def _chunks(src_ids, tgt_ids):
    for i in range(0, len(src_ids), _CHUNK):
        yield src_ids[i : i + _CHUNK], tgt_ids[i : i + _CHUNK]


def _ibm1(src_ids, tgt_ids, src_vocab: int, tgt_vocab: int, iterations: int):
    """IBM model 1's p(t|s) on the co-occurring pairs: (keys s*Vt+t, probabilities)."""
    import numpy as np

    null = src_vocab  # one more source piece, present in every sentence
    chunks = [
        (s * tgt_vocab + t, token)
        for s, t, token in (_pairs(src, tgt, null) for src, tgt in _chunks(src_ids, tgt_ids))
    ]
    keys = _unique(np.concatenate([pair_keys for pair_keys, _ in chunks]))
    # Each pair as its index into keys, once: the EM iterations then only count.
    chunks = [(np.searchsorted(keys, k).astype(np.int32), t.astype(np.int32)) for k, t in chunks]
    prob = np.ones(len(keys))  # uniform start: the first E-step only normalises it
    source = keys // tgt_vocab
    for _ in range(iterations):
        expected = np.zeros(len(keys))
        for where, token in chunks:
            weight = prob[where]
            # E: each target token's alignment posterior over its sentence's source pieces.
            total = np.bincount(token, weight)
            expected += np.bincount(where, weight / total[token], minlength=len(keys))
        # M: p(t|s) = expected count(s, t) / expected count(s).
        per_source = np.bincount(source, expected, minlength=src_vocab + 1)
        prob = expected / np.maximum(per_source[source], 1e-30)
    real = source < src_vocab  # NULL's list is not a source piece's
    return keys[real], prob[real]


def _unique(values):
    """np.unique by sorting (numpy's hash-based unique was 10x slower on 7M int64 keys)."""
    import numpy as np

    values = np.sort(values)
    return values[np.concatenate([[True], values[1:] != values[:-1]])]


def _dice(src_ids, tgt_ids, tgt_vocab: int):
    """Dice coefficient 2 c(s,t) / (c(s) + c(t)) over sentences: (keys s*Vt+t, scores)."""
    import numpy as np

    found = []
    for src, tgt in _chunks(src_ids, tgt_ids):
        s, t, token = _pairs([sorted(set(x)) for x in src], [sorted(set(x)) for x in tgt], None)
        found.append(s * tgt_vocab + t)  # each pair once per sentence: the sets are unique
    keys, together = np.unique(np.concatenate(found), return_counts=True)
    c_src = np.bincount(np.fromiter((i for x in src_ids for i in set(x)), np.int64))
    c_tgt = np.bincount(np.fromiter((i for x in tgt_ids for i in set(x)), np.int64))
    s, t = keys // tgt_vocab, keys % tgt_vocab
    return keys, 2.0 * together / (c_src[s] + c_tgt[t])


def _best_per_source(keys, scores, src_vocab: int, tgt_vocab: int, best: int):
    """targets [Vs,best] int32: each source piece's best-scored target pieces, -1 padded."""
    import numpy as np

    s, t = keys // tgt_vocab, keys % tgt_vocab
    order = np.lexsort((-scores, s))  # by source, best first
    s, t = s[order], t[order]
    group_start = np.searchsorted(s, s, side="left")
    rank = np.arange(len(s)) - group_start
    keep = rank < best
    targets = np.full((src_vocab, best), -1, dtype=np.int32)
    targets[s[keep], rank[keep]] = t[keep]
    return targets


def coverage(shortlist: Shortlist, src_ids, tgt_ids) -> dict:
    """How well the shortlist fits held-out pairs: the share of reference target pieces
    (eos included) in their sentence's shortlist, and the mean shortlist size."""
    import numpy as np

    eos = int(shortlist.meta["eos_id"])
    hit = total = size = 0
    for src, tgt in zip(src_ids, tgt_ids, strict=True):
        allowed = shortlist.allowed([src])
        ref = np.array([*tgt, eos])
        hit += int(np.isin(ref, allowed).sum())
        total += len(ref)
        size += len(allowed)
    n = max(1, len(src_ids))
    return {"coverage": hit / max(1, total), "mean_size": size / n, "sentences": len(src_ids)}


# -- the file ------------------------------------------------------------------------


def write_shortlist(path: Path, targets, first, specials, meta: dict) -> Path:
    """Write the .npz atomically, with a checksum of its arrays in `meta`."""
    import numpy as np

    from mtkit.io import atomic_write

    specials = np.asarray(specials, dtype=np.int32)
    meta = dict(meta, format=FORMAT, checksum=_checksum(targets, first, specials))
    buffer = io.BytesIO()
    np.savez(
        buffer,
        targets=targets,
        first=first,
        specials=specials,
        meta=np.array(json.dumps(meta, sort_keys=True)),
    )
    with atomic_write(path) as stream:
        stream.write(buffer.getvalue())
    return Path(path)


def load_shortlist(path: Path) -> Shortlist:
    """Read and check a shortlist file; anything else is one clear DataError."""
    import zipfile

    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise DataError(f"shortlist not found: {path} (make one with `mtkit shortlist`)")
    try:
        with np.load(path, allow_pickle=False) as data:
            targets, first, specials = data["targets"], data["first"], data["specials"]
            meta = json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
        raise DataError(
            f"{path} is not a shortlist file; make one with `mtkit shortlist`"
        ) from None
    if meta.get("format") != FORMAT or meta.get("checksum") != _checksum(targets, first, specials):
        raise DataError(f"{path} is damaged or from another mtkit; build it again")
    return Shortlist(targets, first, specials, meta)


def _checksum(*arrays) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str(array.dtype).encode() + str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:24]


def make_meta(options: ShortlistOptions, src_tok, tgt_tok, made_from: dict, pairs: int) -> dict:
    """What a shortlist records of how it was made."""
    from mtkit import __version__

    return {
        "options": asdict(options),
        "made_from": made_from,
        "pairs": pairs,
        "src_tokenizer": tokenizer_fingerprint(src_tok),
        "tgt_tokenizer": tokenizer_fingerprint(tgt_tok),
        "src_vocab_size": src_tok.vocab_size,
        "tgt_vocab_size": tgt_tok.vocab_size,
        "eos_id": tgt_tok.eos_id,
        "mtkit": __version__,
    }


# -- the command and the export --------------------------------------------------------


def build_shortlist_file(
    data_dir: Path,
    out: Path,
    options: ShortlistOptions = ShortlistOptions(),
    model: Path | None = None,
    spm: Path | None = None,
    src: str | None = None,
    tgt: str | None = None,
) -> dict:
    """`mtkit shortlist`: build from DATA/train.{src,tgt} tokenized with the checkpoint's
    (or `spm`'s joint) SentencePiece model, write `out`; returns what it measured on
    DATA/valid when there is one (coverage, mean size), else {}."""
    from mtkit.manifest import head_lines, pair_langs, read_lines

    options.check()
    src_tok, tgt_tok = _tokenizers(model, spm)
    data_dir = Path(data_dir)
    langs = pair_langs(data_dir, src, tgt)
    paths = {side: data_dir / f"train.{langs[side]}" for side in ("src", "tgt")}
    if options.max_pairs:
        lines = {side: head_lines(path, options.max_pairs) for side, path in paths.items()}
    else:
        lines = {side: read_lines(path) for side, path in paths.items()}
    if len(lines["src"]) != len(lines["tgt"]):
        raise DataError(
            f"{paths['src']} and {paths['tgt']} differ in length; prepare the data again"
        )
    if not lines["src"]:
        raise DataError(f"{paths['src']} is empty; a shortlist needs training pairs")
    src_ids, tgt_ids = src_tok.encode(lines["src"]), tgt_tok.encode(lines["tgt"])
    specials = sorted({tgt_tok.pad_id, tgt_tok.unk_id, tgt_tok.bos_id, tgt_tok.eos_id})
    log.info("building a %s shortlist from %d pairs", options.method, len(src_ids))
    targets, first = build_shortlist(
        src_ids, tgt_ids, src_tok.vocab_size, tgt_tok.vocab_size, specials, options
    )
    made_from = {side: str(path) for side, path in paths.items()}
    made_from["tokenizer"] = str(model or spm)
    meta = make_meta(options, src_tok, tgt_tok, made_from, len(src_ids))
    write_shortlist(out, targets, first, specials, meta)
    valid = {side: data_dir / f"valid.{langs[side]}" for side in ("src", "tgt")}
    if not all(path.is_file() for path in valid.values()):
        return {}
    shortlist = load_shortlist(out)
    return coverage(
        shortlist,
        src_tok.encode(read_lines(valid["src"])),
        tgt_tok.encode(read_lines(valid["tgt"])),
    )


def _tokenizers(model: Path | None, spm: Path | None):
    if (model is None) == (spm is None):
        raise ConfigError(
            "pass the model's tokenizers: -m CHECKPOINT, or --spm SPM.model (joint), not both"
        )
    if spm is not None:
        from mtkit.tokenizer import Tokenizer

        tok = Tokenizer.from_file(Path(spm))
        return tok, tok
    from mtkit.checkpoint import checkpoint_tokenizers, load_checkpoint

    return checkpoint_tokenizers(load_checkpoint(model), name=str(model))


def vmap_lines(shortlist: Shortlist, src_pieces: list[str], tgt_pieces: list[str]) -> list[str]:
    """CTranslate2's vocabulary map (`vmap.txt`): `<TAB>always allowed`, then
    `source piece<TAB>its target pieces` for every source piece with a list."""
    if len(src_pieces) != shortlist.src_vocab_size or len(tgt_pieces) != shortlist.tgt_vocab_size:
        raise ConfigError(
            "the shortlist was built for other vocabularies than this model's; build one for "
            "it with `mtkit shortlist -m CHECKPOINT`"
        )
    always = [*shortlist.specials.tolist(), *shortlist.first.tolist()]
    lines = ["\t" + " ".join(tgt_pieces[i] for i in always)]
    for source, row in enumerate(shortlist.targets.tolist()):
        found = [tgt_pieces[i] for i in row if i >= 0]
        if found:
            lines.append(src_pieces[source] + "\t" + " ".join(found))
    return lines
