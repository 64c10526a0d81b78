"""When beam search stops: under the default rule ("bound") it does not stop while an
unfinished hypothesis can still beat the best finished one under the length penalty,
so it finds what running every beam to the length limit finds; fairseq's rule
("count") stops earlier and finds shorter, worse-scoring output.

The "models" are hand-built scoring functions: a random table of next-token
log-probabilities by position and previous token, so every number is exact."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
import torch

from mtkit import search as search_module
from mtkit.errors import ConfigError
from mtkit.search import SearchOptions, check_options, search

V, EOS = 12, 3


@dataclass
class _Config:
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = EOS
    tgt_vocab_size: int = V
    max_positions: int = 64


class TableModel:
    """Next-token log-probabilities from table[t, previous token]: [T,V,V]."""

    def __init__(self, table) -> None:
        self.config, self.table = _Config(), table

    def encode(self, src):
        return {"t": 0}

    def decode_step(self, tokens, state):
        return self.table[state["t"], tokens], {"t": state["t"] + 1}

    def reorder_state(self, state, rows):
        return state


def random_model(seed: int, length: int) -> TableModel:
    generator = torch.Generator().manual_seed(seed)
    logits = 4.0 * torch.randn(length + 1, V, V, generator=generator)
    logits[:, :, EOS] += 2.0  # ending is likely: where a search that stops early goes wrong
    return TableModel(logits.log_softmax(-1))


def best(model, options: SearchOptions):
    src = torch.tensor([[5, 6, EOS]])
    (hyps,) = search(model, src, options)
    return hyps[0]


OPTIONS = SearchOptions(beam_size=3, max_len_a=0.0, max_len_b=8, len_penalty=1.0)


def test_bound_finds_what_running_to_the_limit_finds(monkeypatch):
    """Stopping by the bound loses nothing: the best hypothesis and its score are those of
    a search whose beams all run to the length limit; fairseq's rule does worse on some."""
    seeds = range(40)
    bound = [best(random_model(s, 8), OPTIONS) for s in seeds]
    count = [best(random_model(s, 8), replace(OPTIONS, stop="count")) for s in seeds]
    with monkeypatch.context() as patch:  # never done before the limit
        patch.setattr(search_module._Finished, "done", lambda self, sentences, *a: sentences < 0)
        limit = [best(random_model(s, 8), OPTIONS) for s in seeds]
    for b, c, full in zip(bound, count, limit, strict=True):
        assert b.tokens == full.tokens and b.score == pytest.approx(full.score)
        assert c.score <= b.score + 1e-6  # stopping earlier never finds better
    worse = [(b, c) for b, c in zip(bound, count, strict=True) if c.score < b.score - 1e-6]
    assert worse, "fairseq's rule found the best hypothesis for every table"
    assert all(len(c.tokens) < len(b.tokens) for b, c in worse)  # what it missed was longer


def test_bound_stops_before_the_limit():
    """A model that always ends at once: the search stops at step 0, not at the limit."""
    table = torch.full((9, V, V), -30.0)
    table[:, :, EOS] = 0.0
    model = TableModel(table)
    steps = []
    step = model.decode_step
    model.decode_step = lambda tokens, state: steps.append(state["t"]) or step(tokens, state)
    assert best(model, OPTIONS).tokens == []
    assert steps == [0]  # the rest are -30 behind: not even at the limit can they win


def test_unknown_stop_rule_is_refused():
    with pytest.raises(ConfigError, match="unknown --stop 'never'; choose one of: bound, count"):
        check_options(replace(OPTIONS, stop="never"), vocab_size=V)
