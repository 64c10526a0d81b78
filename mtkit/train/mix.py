"""Several prepared corpora in one run: their weights, tags, each epoch's sample, and the mix.

`mtkit train --data DIR[:WEIGHT[:TAG]]` (repeatable) names the corpora; each
is encoded and memory-mapped on its own (`mtkit.train.corpus`, one cache per
DIR), so adding a corpus re-encodes nothing else. An epoch holds WEIGHT x the
trainable pairs of each corpus: whole copies for the integer part, and a fresh
random subset for the fraction (WEIGHT 0.3: 30% of the pairs, others next
epoch; 2.5: every pair twice plus half of them once more). The sample and the
batches cut from it depend on nothing but (--seed, epoch, corpus), so `--resume`
lands in the same epoch with the same batches as a run that never stopped.

In a multilingual run (corpora of several language pairs, mtkit.train.multilingual)
`--sample-temperature T` balances the pairs (Arivazhagan et al., 2019): the epoch keeps
its size, and each pair's share of it becomes proportional to size^(1/T), size being
WEIGHT x trainable pairs summed over the pair's corpora (mtkit.sampling). T = 1, the
default, leaves the weights as they are. The sampler has no state of its own: the
sample of an epoch follows from the seed, the epoch and the corpus.

The corpora are joined without a copy: `JoinedPairs` looks like one
`batching.Pairs` to the batching and collating code, and sends each read to
the corpus the pair belongs to. A tagged corpus (Caswell et al., 2019, "Tagged
Back-Translation") has its tag piece in front of every source sentence, put
there when its cache is encoded (the tag is part of the cache's key).
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtkit.errors import ConfigError
from mtkit.sampling import balanced_sizes, draw, drawn_count
from mtkit.tokenizer import RESERVED_TAGS
from mtkit.train.batching import Batches, Pairs, keep_index, make_batches

log = logging.getLogger(__name__)

DEFAULT_TAG = RESERVED_TAGS[0]  # what `DIR:WEIGHT:tag` means; train-bpe reserves it
_TAG_PIECE = re.compile(r"<[A-Za-z0-9_]{1,16}>")


@dataclass(frozen=True)
class CorpusSpec:
    """One `--data DIR[:WEIGHT[:TAG]]`."""

    path: str
    weight: float = 1.0
    tag: str | None = None  # the source-side piece, e.g. "<BT>"

    @property
    def plain(self) -> bool:
        """A corpus as a single `--data DIR` always was: weight 1, no tag."""
        return self.weight == 1.0 and self.tag is None


def parse_spec(text: str) -> CorpusSpec:
    """`DIR`, `DIR:WEIGHT` or `DIR:WEIGHT:TAG` (TAG: `tag` for <BT>, or a piece like <FT>)."""
    parts = str(text).split(":")
    if len(parts) > 3 or not parts[0]:
        raise ConfigError(
            f"--data {text!r} is not DIR[:WEIGHT[:TAG]]; write e.g. data/europarl, "
            "data/commoncrawl:0.5 or data/bt:1:tag"
        )
    weight = 1.0
    if len(parts) > 1 and parts[1] != "":
        try:
            weight = float(parts[1])
        except ValueError:
            weight = math.nan
        if not math.isfinite(weight) or weight <= 0:
            raise ConfigError(
                f"--data {text!r}: the weight {parts[1]!r} is not a positive number; "
                "write DIR:WEIGHT with WEIGHT > 0, e.g. data/commoncrawl:0.5"
            )
    tag = None
    if len(parts) > 2 and parts[2] != "":
        tag = DEFAULT_TAG if parts[2] == "tag" else parts[2]
        if not _TAG_PIECE.fullmatch(tag):
            raise ConfigError(
                f"--data {text!r}: the tag {parts[2]!r} is not `tag` or a piece like <BT>; "
                "write DIR:WEIGHT:tag"
            )
    return CorpusSpec(path=parts[0], weight=weight, tag=tag)


def parse_specs(data) -> list[CorpusSpec]:
    """TrainConfig.data (one string, or a list of them) as specs."""
    items = [data] if isinstance(data, (str, Path)) else list(data)
    if not items or not all(str(item) for item in items):
        raise ConfigError("no training data; pass --data DIR (a directory `mtkit prepare` wrote)")
    specs = [parse_spec(str(item)) for item in items]
    seen: dict[str, str] = {}
    for spec in specs:  # the same corpus twice is a slip: its weight says how much of it
        where = os.path.realpath(spec.path)
        if where in seen:
            raise ConfigError(
                f"--data {spec.path} is given twice (also as {seen[where]}); give it once, "
                f"with a weight for more of it, e.g. {spec.path}:2"
            )
        seen[where] = spec.path
    return specs


def tag_id(tok, tag: str) -> int:
    """The id of `tag` in the source model; ConfigError when it is no piece of its own."""
    found = tok.tag_ids((tag,))
    if not found:
        raise ConfigError(
            f"SentencePiece model {tok.name} has no piece {tag} for the tagged corpus; "
            f"train it again with `mtkit train-bpe` (which reserves {DEFAULT_TAG}) or with "
            f"--user-defined-symbols '{tag}'"
        )
    return found[0]


# -- joined corpora: one Pairs view over several mapped ones ---------------------------


class _JoinedArray:
    """Reads of a virtual concatenation of arrays (`ids` or `offsets` of several sides):
    each position goes to the array that holds it; nothing is copied."""

    def __init__(self, parts: list, starts: np.ndarray, shift: np.ndarray, length: int) -> None:
        self.parts, self.starts, self.shift, self.length = parts, starts, shift, length
        self.dtype = np.result_type(*[p.dtype for p in parts])

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, where):
        where = np.asarray(where, dtype=np.int64)
        flat = where.reshape(-1)
        which = (np.searchsorted(self.starts, flat, side="right") - 1).clip(0, len(self.parts) - 1)
        out = np.empty(len(flat), dtype=self.dtype)
        for c, part in enumerate(self.parts):
            mask = which == c
            if mask.any():
                out[mask] = part[flat[mask] - self.starts[c]] + self.shift[c]
        return out.reshape(where.shape)


class JoinedSide:
    """One language side of several corpora as if concatenated (a `batching.Side`)."""

    def __init__(self, sides: list) -> None:
        counts = np.array([len(s) for s in sides], dtype=np.int64)
        n_ids = np.array([len(s.ids) for s in sides], dtype=np.int64)
        pair_starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        id_starts = np.concatenate([[0], np.cumsum(n_ids)[:-1]])
        self.n = int(counts.sum())
        self.ids = _JoinedArray(
            [s.ids for s in sides], id_starts, np.zeros(len(sides), np.int64), int(n_ids.sum())
        )
        # Pair boundary i of corpus c is id_starts[c] + its own offsets[i - pair_starts[c]].
        self.offsets = _JoinedArray([s.offsets for s in sides], pair_starts, id_starts, self.n + 1)
        self._lengths = np.concatenate([s.lengths() for s in sides])

    def __len__(self) -> int:
        return self.n

    def lengths(self) -> np.ndarray:
        return self._lengths

    def sentence(self, index: int) -> list[int]:
        start, end = self.offsets[[index, index + 1]]
        return self.ids[np.arange(start, end)].tolist()


def join_pairs(corpora: list[Pairs]) -> Pairs:
    """Several corpora as one Pairs: pair i of corpus c is pair starts[c] + i."""
    return Pairs(src=JoinedSide([c.src for c in corpora]), tgt=JoinedSide([c.tgt for c in corpora]))


# -- the mix ------------------------------------------------------------------------


@dataclass
class EpochBatches:
    """One epoch's batches and the target tokens each corpus has in each batch."""

    batches: Batches
    corpus_tokens: np.ndarray  # int64 [n_batches, n_corpora]


class Mix:
    """The run's corpora, their trainable pairs, and each epoch's weighted sample."""

    def __init__(
        self, specs: list[CorpusSpec], corpora: list[Pairs], *, max_len: int, max_tokens: int,
        seed: int, temperature: float = 1.0, directions: list[str] | None = None,
    ) -> None:  # fmt: skip
        self.specs, self.seed, self.max_tokens = specs, seed, max_tokens
        self.temperature = temperature
        # Each corpus's language pair ("de-en") in a multilingual run; None: one pair.
        self.directions = list(directions) if directions else [None] * len(specs)
        self.pairs = join_pairs(corpora)
        self.counts = [len(c) for c in corpora]
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.keep, self.dropped = [], []
        for corpus in corpora:
            index, dropped = keep_index(corpus, max_len=max_len, max_tokens=max_tokens)
            self.keep.append(index)
            self.dropped.append(dropped)
        self.rates = self._rates()
        self._cached: tuple[int, EpochBatches] | None = None

    def _rates(self) -> list[float]:
        """Each corpus's pairs an epoch per trainable pair: its WEIGHT; under temperature
        sampling, its language pair's balanced size (mtkit.sampling) shared among the
        pair's corpora by WEIGHT x trainable pairs. The epoch keeps its size."""
        weights = [spec.weight for spec in self.specs]
        if self.temperature == 1.0:
            return weights  # exactly as without temperature sampling
        sizes = [w * len(k) for w, k in zip(weights, self.keep, strict=True)]
        names = list(dict.fromkeys(self.directions))
        totals = {g: sum(n for n, d in zip(sizes, self.directions, strict=True) if d == g)
                  for g in names}  # fmt: skip
        balanced = dict(zip(names, balanced_sizes(list(totals.values()), self.temperature),
                            strict=True))  # fmt: skip
        return [
            w * balanced[d] / totals[d] if totals[d] else w
            for w, d in zip(weights, self.directions, strict=True)
        ]

    def epoch_pairs(self) -> list[int]:
        """Pairs each corpus puts into an epoch (its rate x its trainable pairs, rounded)."""
        return [drawn_count(len(k), rate) for rate, k in zip(self.rates, self.keep, strict=True)]

    def epoch(self, epoch: int) -> EpochBatches:
        """The batches of `epoch` (1-based), cut from its sample (kept for the epoch)."""
        if self._cached and self._cached[0] == epoch:
            return self._cached[1]
        index = self.sample(epoch)
        batches = make_batches(
            self.pairs, max_tokens=self.max_tokens, seed=self.seed * 1_000_003 + epoch, index=index
        )
        corpus_of = np.searchsorted(self.starts, batches.order, side="right") - 1
        tokens = self.pairs.tgt.lengths()[batches.order].astype(np.int64) + 1
        per = np.zeros((len(batches), len(self.specs)), dtype=np.int64)
        if len(batches):
            for c in range(len(self.specs)):
                mine = np.where(corpus_of == c, tokens, 0)
                per[:, c] = np.add.reduceat(mine, batches.bounds[:-1])
        batches.tokens = per.sum(1)
        result = EpochBatches(batches, per)
        self._cached = (epoch, result)
        return result

    def sample(self, epoch: int) -> np.ndarray:
        """The joined pair positions of `epoch`: whole copies, then a seeded subset (sorted,
        so the sample depends on the seed, epoch and corpus only)."""
        parts = [
            index[draw(len(index), rate, [self.seed, epoch, c])] + self.starts[c]
            for c, (rate, index) in enumerate(zip(self.rates, self.keep, strict=True))
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def describe(self, tokens: list[int] | None = None, valid=None) -> list[dict]:
        """Per corpus: directory, pairs, trainable pairs, weight, tag, pairs an epoch, and
        (given the target tokens each supplied so far) its share of them."""
        total = sum(tokens or []) or 0
        rows = []
        for c, spec in enumerate(self.specs):
            row = {
                "data": spec.path,
                "pairs": self.counts[c],
                "trainable": len(self.keep[c]),
                "weight": spec.weight,
                "tag": spec.tag,
                "epoch_pairs": self.epoch_pairs()[c],
            }
            if self.directions[c] is not None:
                row["direction"] = self.directions[c]
            if self.temperature != 1.0:  # what the temperature made of the weight
                row["temperature"], row["rate"] = self.temperature, round(self.rates[c], 4)
            if tokens:
                row["target_tokens"] = int(tokens[c])
                row["share"] = round(tokens[c] / total, 4) if total else 0.0
            if valid is not None:  # the directory, or directories, validation reads
                row["valid"] = spec.path in ([valid] if isinstance(valid, str) else valid)
            rows.append(row)
        return rows


def shares_text(rows: list[dict]) -> str:
    """`data/a 74.9%, data/bt 25.1%` of target tokens so far."""
    return ", ".join(f"{row['data']} {100 * row.get('share', 0):.1f}%" for row in rows)
