"""Batches for training: encoded pairs in flat arrays, length buckets, token budgets, padding.

Owns how a parallel corpus becomes padded tensors: encoding once with
SentencePiece (`encode_pairs`), dropping pairs the model cannot take
(`filter_pairs`), cutting token-budget batches from length-sorted pairs
(`make_batches`), the per-epoch batch order (`epoch_order`) and padding a batch
(`collate`). The training loop decides which batch to take when.

Conventions (shared with the models and search): source = ids + eos,
target in = bos + ids, target out = ids + eos, padding with pad_id.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

ENCODE_CHUNK = 100_000  # lines per SentencePiece call: bounded memory for WMT-size corpora


@dataclass
class Side:
    """One language side of a corpus: sentence i is ids[offsets[i]:offsets[i+1]] (no bos/eos)."""

    ids: object  # torch.int32 [total pieces]
    offsets: object  # torch.int64 [N + 1]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self):
        """Pieces per sentence, torch.int64 [N]."""
        return self.offsets[1:] - self.offsets[:-1]

    def sentence(self, index: int) -> list[int]:
        return self.ids[self.offsets[index] : self.offsets[index + 1]].tolist()


@dataclass
class Pairs:
    """An encoded parallel corpus: pair i is (src.sentence(i), tgt.sentence(i))."""

    src: Side
    tgt: Side

    def __len__(self) -> int:
        return len(self.src)


def encode_side(lines: Sequence[str], encode: Callable[[list[str]], list[list[int]]]) -> Side:
    """Encode lines in chunks into one flat int32 array plus offsets."""
    import torch

    chunks, lengths = [], []
    for start in range(0, len(lines), ENCODE_CHUNK):
        pieces = encode(list(lines[start : start + ENCODE_CHUNK]))
        lengths.extend(len(p) for p in pieces)
        chunks.append(torch.tensor([i for p in pieces for i in p], dtype=torch.int32))
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int64), dim=0)
    ids = torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.int32)
    return Side(ids=ids, offsets=offsets)


def encode_pairs(src_lines, tgt_lines, src_encode, tgt_encode) -> Pairs:
    """Encode both sides of a parallel corpus (one SentencePiece batch call per chunk)."""
    return Pairs(src=encode_side(src_lines, src_encode), tgt=encode_side(tgt_lines, tgt_encode))


def subset(side: Side, index) -> Side:
    """The sentences of `side` at positions `index` (a torch.int64 tensor), in that order."""
    import torch

    lengths = side.lengths()[index]
    offsets = torch.zeros(len(index) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(lengths, dim=0)
    if len(index) == 0:
        return Side(ids=side.ids[:0], offsets=offsets)
    starts = side.offsets[index]
    # Gather every kept piece at once: position p of sentence k is starts[k] + p.
    rows = torch.repeat_interleave(torch.arange(len(index)), lengths)
    within = torch.arange(int(offsets[-1])) - offsets[:-1][rows]
    return Side(ids=side.ids[starts[rows] + within], offsets=offsets)


def filter_pairs(pairs: Pairs, *, max_len: int, max_tokens: int) -> tuple[Pairs, dict]:
    """Drop pairs the model cannot take: an empty side, longer than `max_len` or the budget.

    Lengths count the added bos/eos. Returns the kept pairs and the counts dropped
    for each reason, for the log.
    """
    import torch

    src_len = pairs.src.lengths() + 1
    tgt_len = pairs.tgt.lengths() + 1
    empty = (src_len == 1) | (tgt_len == 1)
    too_long = (src_len > max_len) | (tgt_len > max_len)
    over_budget = torch.maximum(src_len, tgt_len) > max_tokens
    keep = ~(empty | too_long | over_budget)
    index = torch.nonzero(keep).flatten()
    dropped = {
        "empty": int(empty.sum()),
        "longer_than_max_positions": int((too_long & ~empty).sum()),
        "longer_than_max_tokens": int((over_budget & ~too_long & ~empty).sum()),
    }
    return Pairs(src=subset(pairs.src, index), tgt=subset(pairs.tgt, index)), dropped


def make_batches(pairs: Pairs, *, max_tokens: int, seed: int) -> list[list[int]]:
    """Cut the corpus into batches of similar lengths within a token budget (fairseq-like).

    A batch of n pairs costs n x the longest side of any of its pairs (with bos/eos),
    i.e. the padded source or target tokens, whichever is larger; it never exceeds
    `max_tokens`. Pairs are sorted by target then source length after a seeded
    shuffle, so ties are broken at random but reproducibly and padding stays small.
    """
    src_len = (pairs.src.lengths() + 1).tolist()
    tgt_len = (pairs.tgt.lengths() + 1).tolist()
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    order.sort(key=lambda i: (tgt_len[i], src_len[i]))  # stable: shuffled ties stay shuffled
    batches, batch, longest = [], [], 0
    for i in order:
        width = max(longest, src_len[i], tgt_len[i])
        if batch and width * (len(batch) + 1) > max_tokens:
            batches.append(batch)
            batch, width = [], max(src_len[i], tgt_len[i])
        batch.append(i)
        longest = width
    if batch:
        batches.append(batch)
    return batches


def epoch_order(n_batches: int, *, seed: int, epoch: int) -> list[int]:
    """The order of the batches in `epoch` (1-based): a shuffle fixed by seed and epoch."""
    order = list(range(n_batches))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


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
    import torch

    rows = torch.as_tensor(index, dtype=torch.long)
    src, _ = _padded(pairs.src, rows, pad_id, eos_id, before=None)
    tgt_in, _ = _padded(pairs.tgt, rows, pad_id, eos_id=None, before=bos_id)
    tgt_out, n_tgt = _padded(pairs.tgt, rows, pad_id, eos_id, before=None)
    return Batch(src=src, tgt_in=tgt_in, tgt_out=tgt_out, n_tgt_tokens=n_tgt)


def _padded(side: Side, rows, pad_id: int, eos_id: int | None, before: int | None):
    """[B, longest + 1] long: each sentence with `before` prepended or `eos_id` appended,
    right-padded; and the number of non-padding tokens."""
    import torch

    lengths = side.lengths()[rows]  # [B]
    width = int(lengths.max()) + 1
    pos = torch.arange(width)[None, :]  # [1, W]
    shift = 1 if before is not None else 0
    within = pos - shift  # index into the sentence
    inside = (within >= 0) & (within < lengths[:, None])  # [B, W]
    ids = side.ids if len(side.ids) else torch.zeros(1, dtype=side.ids.dtype)
    flat = (side.offsets[rows][:, None] + within).clamp(0, len(ids) - 1)
    out = torch.where(inside, ids[flat].long(), pad_id)
    if before is not None:
        out[:, 0] = before
    else:
        out[torch.arange(len(rows)), lengths] = eos_id
    return out, int(lengths.sum()) + len(rows)


def pad_rows(rows: list[list[int]], pad_id: int):
    """A [len(rows), longest] long tensor of the rows, right-padded with pad_id."""
    import torch

    out = torch.full((len(rows), max(map(len, rows))), pad_id, dtype=torch.long)
    for r, row in enumerate(rows):
        out[r, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def batch_cost(pairs: Pairs, index: Sequence[int]) -> int:
    """Padded tokens of a batch: pairs x the longest side (with bos/eos)."""
    longest = max(max(len(pairs.src.sentence(i)), len(pairs.tgt.sentence(i))) + 1 for i in index)
    return longest * len(index)


def target_tokens(tgt_lengths: Sequence[int], index: Sequence[int]) -> int:
    """Non-padding target tokens of a batch (ids + eos), known before collating."""
    return sum(tgt_lengths[i] + 1 for i in index)
