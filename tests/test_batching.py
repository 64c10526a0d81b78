"""Batching: token budgets, every pair once per epoch, seeded orders, small padding, collation."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from mtkit.train.batching import (
    collate,
    encode_pairs,
    epoch_order,
    filter_pairs,
    id_dtype,
    make_batches,
    rank_share,
    subset,
)

PAD, BOS, EOS = 0, 2, 3


def fake_encode(lines: list[str]) -> list[list[int]]:
    """One id per word, from the word's length (enough to test lengths and contents)."""
    return [[4 + len(word) for word in line.split()] for line in lines]


def batch_cost(pairs, index) -> int:
    """Padded tokens of a batch: pairs x the longest side (with bos/eos)."""
    longest = max(max(len(pairs.src.sentence(i)), len(pairs.tgt.sentence(i))) + 1 for i in index)
    return longest * len(index)


def random_corpus(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Sentence pairs with Multi30k-like lengths: targets about as long as sources."""
    rng = random.Random(seed)
    src, tgt = [], []
    for _ in range(n):
        length = rng.randint(3, 40)
        src.append(" ".join("w" * rng.randint(1, 9) for _ in range(length)))
        tgt.append(
            " ".join("v" * rng.randint(1, 9) for _ in range(max(1, length + rng.randint(-4, 4))))
        )
    return src, tgt


@pytest.fixture(scope="module")
def pairs():
    src, tgt = random_corpus(3000)
    return encode_pairs(src, tgt, fake_encode, fake_encode)


def test_encoding_keeps_every_sentence(pairs):
    src, tgt = random_corpus(3000)
    assert len(pairs) == 3000
    assert pairs.src.sentence(17) == fake_encode([src[17]])[0]
    assert pairs.tgt.sentence(2999) == fake_encode([tgt[2999]])[0]


def test_batches_respect_the_token_budget(pairs):
    for max_tokens in (64, 500, 4096):
        for batch in make_batches(pairs, max_tokens=max_tokens, seed=1):
            assert batch_cost(pairs, batch) <= max_tokens


def test_every_pair_is_in_exactly_one_batch(pairs):
    batches = make_batches(pairs, max_tokens=1000, seed=1)
    seen = sorted(i for batch in batches for i in batch)
    assert seen == list(range(len(pairs)))


def test_batches_are_deterministic_from_the_seed(pairs):
    a = make_batches(pairs, max_tokens=1000, seed=7)
    assert a == make_batches(pairs, max_tokens=1000, seed=7)
    assert a != make_batches(pairs, max_tokens=1000, seed=8)


def test_padding_is_small(pairs):
    """Length buckets: padded tokens exceed the longer side's real tokens by a few percent."""
    batches = make_batches(pairs, max_tokens=4000, seed=1)
    padded = sum(batch_cost(pairs, b) for b in batches)
    real = sum(
        max(len(pairs.src.sentence(i)), len(pairs.tgt.sentence(i))) + 1 for b in batches for i in b
    )
    assert padded / real < 1.15
    # Batches are full: few tokens of the budget go unused.
    assert padded / (4000 * len(batches)) > 0.9


def test_epoch_order_is_a_seeded_permutation():
    order = epoch_order(100, seed=1, epoch=1)
    assert sorted(order) == list(range(100))
    assert order == epoch_order(100, seed=1, epoch=1)
    assert order != epoch_order(100, seed=1, epoch=2)
    assert order != epoch_order(100, seed=2, epoch=1)


def test_rank_shares_are_disjoint_and_even():
    order = epoch_order(103, seed=1, epoch=1)
    shares = [rank_share(order, rank=r, world_size=4) for r in range(4)]
    assert {len(s) for s in shares} == {25}
    flat = [b for s in shares for b in s]
    assert len(set(flat)) == 100 and set(flat) <= set(order)


def test_collate_adds_specials_and_pads():
    pairs = encode_pairs(["a bb", "ccc"], ["x", "yy zzz q"], fake_encode, fake_encode)
    batch = collate(pairs, [0, 1], pad_id=PAD, bos_id=BOS, eos_id=EOS)
    assert batch.src.tolist() == [[5, 6, EOS], [7, EOS, PAD]]
    assert batch.tgt_in.tolist() == [[BOS, 5, PAD, PAD], [BOS, 6, 7, 5]]
    assert batch.tgt_out.tolist() == [[5, EOS, PAD, PAD], [6, 7, 5, EOS]]
    assert batch.n_tgt_tokens == 2 + 4
    assert batch.src.dtype == torch.long
    empty = encode_pairs(["", "a"], ["", ""], fake_encode, fake_encode)
    batch = collate(empty, [0, 1], pad_id=PAD, bos_id=BOS, eos_id=EOS)
    assert batch.src.tolist() == [[EOS, PAD], [5, EOS]]
    assert batch.tgt_in.tolist() == [[BOS], [BOS]] and batch.tgt_out.tolist() == [[EOS], [EOS]]


def test_filter_drops_empty_and_overlong_pairs():
    src = ["a", "", "a b c d e f g h", "a b", "a b c"]
    tgt = ["x", "x", "x", "", "x y z w v u t s r q p"]
    pairs = encode_pairs(src, tgt, fake_encode, fake_encode)
    kept, dropped = filter_pairs(pairs, max_len=6, max_tokens=100)
    assert len(kept) == 1 and kept.src.sentence(0) == [5]
    assert dropped == {"empty": 2, "longer_than_max_positions": 2, "longer_than_max_tokens": 0}
    kept, dropped = filter_pairs(pairs, max_len=100, max_tokens=9)
    assert dropped["longer_than_max_tokens"] == 1 and len(kept) == 2


def test_subset_picks_sentences_in_order(pairs):
    index = torch.tensor([5, 0, 2999, 5])
    part = subset(pairs.src, index)
    assert [part.sentence(k) for k in range(4)] == [pairs.src.sentence(int(i)) for i in index]


def test_batches_of_an_index_hold_only_those_pairs(pairs):
    index = np.arange(0, len(pairs), 3)
    batches = make_batches(pairs, max_tokens=1000, seed=1, index=index)
    assert sorted(int(i) for batch in batches for i in batch) == index.tolist()
    tokens = batches.target_tokens(pairs)
    assert tokens.tolist() == [sum(len(pairs.tgt.sentence(i)) + 1 for i in b) for b in batches]


def test_one_pair_over_the_budget_is_a_batch_of_its_own(pairs):
    batches = make_batches(pairs, max_tokens=8, seed=1)
    assert all(len(b) == 1 or batch_cost(pairs, b) <= 8 for b in batches)
    assert sum(len(b) for b in batches) == len(pairs)


def test_clip_source_leaves_room_for_eos():
    from mtkit.tokenizer import clip_source

    assert clip_source(list(range(10)), 4) == [0, 1, 2]
    assert clip_source([5, 6], 4) == [5, 6]


def test_ids_take_the_smallest_type():
    assert id_dtype(256) == np.uint8 and id_dtype(32000) == np.uint16
    assert id_dtype(70000) == np.uint32
