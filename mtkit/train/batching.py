"""Batches for training: encoded pairs in flat arrays, length buckets, token budgets, padding.

Owns how a parallel corpus becomes padded tensors: encoding with SentencePiece
(`encode_side`, `encode_pairs`), choosing the pairs the model can take
(`keep_index`, `filter_pairs`), cutting token-budget batches from length-sorted
pairs (`make_batches`), the per-epoch batch order (`epoch_order`), each rank's
share (`rank_share`) and padding a batch (`collate`). The training loop decides which batch to
take when; the on-disk encoded corpus is `mtkit.train.corpus`'s.

Every step is vectorised numpy over flat arrays (no Python loop over pairs and
no copy of the corpus), so a memory-mapped WMT-size corpus costs a process only
the pages it reads plus a few small integers a pair.

Conventions (shared with the models and search): source = ids + eos,
target in = bos + ids, target out = ids + eos, padding with pad_id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

ENCODE_CHUNK = 100_000  # lines per SentencePiece call: bounded memory for WMT-size corpora


def id_dtype(vocab_size: int):
    """The smallest unsigned integer type that holds every id of the vocabulary."""
    return np.min_scalar_type(max(vocab_size - 1, 0))


@dataclass
class Side:
    """One language side of a corpus: sentence i is ids[offsets[i]:offsets[i+1]] (no bos/eos).

    `ids` and `offsets` are numpy arrays, in memory or memory-mapped from disk.
    """

    ids: np.ndarray  # [total pieces], the vocabulary's smallest integer type
    offsets: np.ndarray  # int64 [N + 1]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        """Pieces per sentence, int32 [N]: 4 bytes a sentence, so the arrays that cutting
        batches makes from it stay small next to a mapped WMT-size corpus."""
        out = np.empty(len(self), dtype=np.int32)
        np.subtract(self.offsets[1:], self.offsets[:-1], out=out, casting="unsafe")
        return out

    def sentence(self, index: int) -> list[int]:
        return self.ids[self.offsets[index] : self.offsets[index + 1]].tolist()


@dataclass
class Pairs:
    """An encoded parallel corpus: pair i is (src.sentence(i), tgt.sentence(i))."""

    src: Side
    tgt: Side
    directory: object = None  # the encoded corpus's directory when mapped from disk

    def __len__(self) -> int:
        return len(self.src)


def encode_chunks(
    lines: Iterable[str], encode: Callable[[list[str]], list[list[int]]], dtype
) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """(ids, lengths) of every ENCODE_CHUNK lines: one SentencePiece call each."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == ENCODE_CHUNK:
            yield _encoded(encode(chunk), dtype)
            chunk = []
    if chunk:
        yield _encoded(encode(chunk), dtype)


def _encoded(pieces: list[list[int]], dtype) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    ids = np.fromiter((i for p in pieces for i in p), dtype=dtype, count=int(lengths.sum()))
    return ids, lengths


def offsets_of(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def encode_side(lines: Sequence[str], encode, dtype=np.int32) -> Side:
    """Encode lines in chunks into one flat array plus offsets, in memory."""
    parts = list(encode_chunks(lines, encode, dtype))
    ids = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=dtype)
    lengths = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    return Side(ids=ids, offsets=offsets_of(lengths))


def encode_pairs(src_lines, tgt_lines, src_encode, tgt_encode, dtype=np.int32) -> Pairs:
    """Encode both sides of a parallel corpus in memory (the validation set, tests)."""
    return Pairs(
        src=encode_side(src_lines, src_encode, dtype), tgt=encode_side(tgt_lines, tgt_encode, dtype)
    )


def subset(side: Side, index) -> Side:
    """The sentences of `side` at positions `index`, in that order (a copy: small sets only)."""
    index = np.asarray(index, dtype=np.int64)
    lengths = side.lengths()[index]
    offsets = offsets_of(lengths)
    starts = side.offsets[:-1][index]
    # Gather every kept piece at once: position p of sentence k is starts[k] + p.
    rows = np.repeat(np.arange(len(index)), lengths)
    within = np.arange(int(offsets[-1])) - offsets[:-1][rows]
    return Side(ids=side.ids[starts[rows] + within], offsets=offsets)


def keep_index(pairs: Pairs, *, max_len: int, max_tokens: int) -> tuple[np.ndarray, dict]:
    """The positions of the pairs the model can take (no empty side, none longer than
    `max_len` or the budget, bos/eos counted), and how many were dropped for each reason."""
    src_len = pairs.src.lengths() + 1
    tgt_len = pairs.tgt.lengths() + 1
    empty = (src_len == 1) | (tgt_len == 1)
    too_long = (src_len > max_len) | (tgt_len > max_len)
    over_budget = np.maximum(src_len, tgt_len) > max_tokens
    index = np.flatnonzero(~(empty | too_long | over_budget))
    dropped = {
        "empty": int(empty.sum()),
        "longer_than_max_positions": int((too_long & ~empty).sum()),
        "longer_than_max_tokens": int((over_budget & ~too_long & ~empty).sum()),
    }
    return index, dropped


def filter_pairs(pairs: Pairs, *, max_len: int, max_tokens: int) -> tuple[Pairs, dict]:
    """`keep_index`'s pairs as a new (copied) Pairs: for small sets such as validation."""
    index, dropped = keep_index(pairs, max_len=max_len, max_tokens=max_tokens)
    return Pairs(src=subset(pairs.src, index), tgt=subset(pairs.tgt, index)), dropped


class Batches(Sequence):
    """Token-budget batches as two flat arrays: batch b is pairs order[bounds[b]:bounds[b+1]]."""

    def __init__(self, order: np.ndarray, bounds: np.ndarray, tokens=None) -> None:
        self.order, self.bounds, self.tokens = order, bounds, tokens

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __getitem__(self, b):
        if isinstance(b, slice):
            return [self[i] for i in range(len(self))[b]]
        if b < 0:
            b += len(self)
        if not 0 <= b < len(self):
            raise IndexError(b)
        return self.order[self.bounds[b] : self.bounds[b + 1]]

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, Batches)
            and np.array_equal(self.order, other.order)
            and np.array_equal(self.bounds, other.bounds)
        )

    def target_tokens(self, pairs: Pairs) -> np.ndarray:
        """Non-padding target tokens (ids + eos) of every batch, int64 [n_batches]."""
        if self.tokens is not None:
            return self.tokens
        per_pair = pairs.tgt.lengths()[self.order].astype(np.int64) + 1
        return np.add.reduceat(per_pair, self.bounds[:-1]) if len(self) else per_pair[:0]


def make_batches(pairs: Pairs, *, max_tokens: int, seed: int, index=None) -> Batches:
    """Cut the pairs at `index` (default: all) into batches of similar lengths within a
    token budget (fairseq-like).

    A batch of n pairs costs n x the longest side of any of its pairs (with bos/eos),
    i.e. the padded source or target tokens, whichever is larger; it never exceeds
    `max_tokens`. Pairs are sorted by that width, then target and source length, after
    a seeded shuffle, so ties are broken at random but reproducibly and padding stays
    small; batches are cut greedily along that order.
    """
    index = np.arange(len(pairs)) if index is None else np.asarray(index, dtype=np.int64)
    src_len = pairs.src.lengths()[index] + 1
    tgt_len = pairs.tgt.lengths()[index] + 1
    shuffled = np.random.default_rng(seed).permutation(len(index))
    width = np.maximum(src_len, tgt_len)[shuffled]
    # lexsort is stable and sorts by the last key first: shuffled ties stay shuffled.
    ranked = np.lexsort((src_len[shuffled], tgt_len[shuffled], width))
    order = index[shuffled[ranked]]
    bounds = _greedy_bounds(width[ranked], max_tokens)
    return Batches(order=order, bounds=bounds)


def _greedy_bounds(width: np.ndarray, max_tokens: int) -> np.ndarray:
    """Batch starts along non-decreasing `width`: each batch as long as n x its last
    width fits the budget. One numpy step per batch, none per pair."""
    bounds, start, n = [0], 0, len(width)
    while start < n:
        # A batch starting here holds at most max_tokens // width[start] pairs; of those,
        # the first k fit while width[start + k - 1] * k <= max_tokens (k grows, so a prefix).
        most = max(1, max_tokens // int(width[start]))
        block = width[start : start + most]
        fits = block * np.arange(1, len(block) + 1) <= max_tokens
        start += max(1, int(np.count_nonzero(fits)))
        bounds.append(start)
    return np.asarray(bounds, dtype=np.int64)


def epoch_order(n_batches: int, *, seed: int, epoch: int) -> list[int]:
    """The order of the batches in `epoch` (1-based): a shuffle fixed by seed and epoch."""
    return np.random.default_rng(seed * 1_000_003 + epoch).permutation(n_batches).tolist()


def rank_share(order: list[int], *, rank: int, world_size: int) -> list[int]:
    """This rank's batches of an epoch: every world_size-th, all ranks the same count.

    The few batches past the last full round are left out of this epoch (another
    shuffle takes them next epoch), so no rank waits for a batch that never comes.
    """
    usable = len(order) - len(order) % world_size
    return order[rank:usable:world_size]


@dataclass
class Batch:
    """Padded tensors of one batch; shapes B pairs, S source, T target positions."""

    src: object  # [B, S] long, ids + eos
    tgt_in: object  # [B, T] long, bos + ids
    tgt_out: object  # [B, T] long, ids + eos
    n_tgt_tokens: int  # non-padding target tokens (the loss normaliser)

    def to(self, device) -> Batch:
        return Batch(
            src=self.src.to(device, non_blocking=True),
            tgt_in=self.tgt_in.to(device, non_blocking=True),
            tgt_out=self.tgt_out.to(device, non_blocking=True),
            n_tgt_tokens=self.n_tgt_tokens,
        )


def collate(pairs: Pairs, index: Sequence[int], *, pad_id: int, bos_id: int, eos_id: int) -> Batch:
    """Pad the pairs at `index` into one batch (vectorised: no Python loop over sentences)."""
    rows = np.asarray(index, dtype=np.int64)
    src, _ = _padded(pairs.src, rows, pad_id, eos_id, before=None)
    tgt_in, _ = _padded(pairs.tgt, rows, pad_id, eos_id=None, before=bos_id)
    tgt_out, n_tgt = _padded(pairs.tgt, rows, pad_id, eos_id, before=None)
    return Batch(src=src, tgt_in=tgt_in, tgt_out=tgt_out, n_tgt_tokens=n_tgt)


def _padded(side: Side, rows: np.ndarray, pad_id: int, eos_id: int | None, before: int | None):
    """[B, longest + 1] long: each sentence with `before` prepended or `eos_id` appended,
    right-padded; and the number of non-padding tokens."""
    import torch

    starts = side.offsets[rows]
    lengths = side.offsets[rows + 1] - starts  # [B]
    width = int(lengths.max()) + 1
    within = np.arange(width)[None, :] - (1 if before is not None else 0)  # [1, W]
    inside = (within >= 0) & (within < lengths[:, None])  # [B, W]
    ids = side.ids if len(side.ids) else np.zeros(1, dtype=np.int64)
    flat = (starts[:, None] + within).clip(0, len(ids) - 1)
    out = np.where(inside, ids[flat], pad_id).astype(np.int64)
    if before is not None:
        out[:, 0] = before
    else:
        out[np.arange(len(rows)), lengths] = eos_id
    return torch.from_numpy(out), int(lengths.sum()) + len(rows)


def pad_rows(rows: list[list[int]], pad_id: int):
    """A [len(rows), longest] long tensor of the rows, right-padded with pad_id."""
    import torch

    out = torch.full((len(rows), max(map(len, rows))), pad_id, dtype=torch.long)
    for r, row in enumerate(rows):
        out[r, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out
