"""Lexically constrained beam search: target phrases that every output must hold.

Owns, for one batch, what each sentence must produce (phrases of target ids; a phrase
given twice must appear twice), the automaton that follows which of them each
hypothesis has produced, and the step that fills a constrained sentence's beam. The
beam loop stays mtkit.search's, which calls a `Tracker` at three points of a step
(eos, candidates, moves); what the phrases are as text (a constraints file, a
glossary) is mtkit.translate.terms'.

The algorithm is dynamic beam allocation (Post and Vilar, 2018), vectorized over the
batch (Hu et al., 2019; fairseq's LexicallyConstrainedBeamSearch runs it sentence by
sentence in Python):
  - a hypothesis may end (eos) only once it holds every phrase;
  - a constrained sentence's candidates at a step are the usual best 2K of its K x V
    continuations, each beam's best token, and each beam's continuation by every
    constraint id that brings it closer to the phrases;
  - a candidate's bank is the number of constraint tokens it has met; the 2K kept go
    round-robin over the banks, most met first (the best of every bank, then the
    second best of every bank ...), so hypotheses that have placed more of the
    phrases are not crowded out by likelier ones that have placed fewer.
Unconstrained sentences of the same batch keep the usual candidates untouched, so
their output is what it is without constraints.

Which phrases a hypothesis holds: an Aho-Corasick automaton (Aho and Corasick, 1975)
over the sentence's phrases. A state is a node of the phrases' trie (the longest
suffix of the output that begins a phrase) and how often each phrase has been seen.
A phrase counts when its ids are consecutive in the output; occurrences may overlap
("a b" and "b c" are both in "a b c"). Unlike fairseq's trie, a mismatch inside a
phrase keeps a phrase that starts in the part already matched ("a a b" in "a a a b").
The tables (next node for each constraint id, phrases ending at each node, progress
each node makes into each phrase) are built per batch in Python, then read by gathers.
Given the ids that go on with the word before them (`joins`: SentencePiece pieces
without the word mark), a phrase must also end a word: an occurrence pends until the
next id, which counts it unless it goes on with the word, and after a needed phrase
such ids are masked (but for one going on into a longer phrase of the sentence), so
"Hund" is held as a word and not as the start of "Hunde".

Bank = tokens of the phrases seen (up to the times needed) + the progress into a
phrase still needed. One of its tokens always advances a needed phrase, raising the
bank by at least one, so a hypothesis with R tokens left and R steps to its length
limit is held to tokens that advance, and the beam's best bank is always kept: every
sentence whose phrases fit its length limit ends with a hypothesis holding them all.
A sentence whose phrases are longer in all than its limit is searched without them
(`Constraints.dropped`: the caller warns). Hypotheses that had to end at the limit
without all their phrases rank below every complete one (`Tracker.penalty`).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass

# A finished hypothesis that misses constraint tokens (ended at the length limit)
# ranks by score - MISSING_RANK x tokens missing: below any complete one, whose
# scores (log-probabilities over a length penalty) are far above -MISSING_RANK.
MISSING_RANK = 1e4


@dataclass
class Automaton:
    """One sentence's phrases as Aho-Corasick tables (lists, padded into tensors later)."""

    tokens: list[int]  # distinct constraint ids: the columns of `goto`
    goto: list[list[int]]  # [nodes][tokens + 1] the next node; last column: any other id
    extends: list[list[int]]  # [nodes][tokens] 1 where the id goes on to a child node
    emits: list[list[int]]  # [nodes][phrases] 1 where a phrase ends on reaching the node
    progress: list[list[int]]  # [nodes][phrases] tokens of the phrase begun at the node
    need: list[int]  # [phrases] times each distinct phrase must appear
    length: list[int]  # [phrases] ids in each phrase


def build_automaton(phrases: Sequence[Sequence[int]]) -> Automaton:
    """The tables of one sentence's phrases (lists of ids; empty ones are ignored)."""
    counts = Counter(tuple(int(i) for i in p) for p in phrases if len(p))
    distinct = list(counts)
    children: list[dict[int, int]] = [{}]
    depth = [0]
    begins = [set(range(len(distinct)))]  # phrases the node is a proper prefix of
    ends: list[set[int]] = [set()]
    for j, phrase in enumerate(distinct):
        node = 0
        for i, token in enumerate(phrase):
            if token not in children[node]:
                children[node][token] = len(children)
                children.append({})
                depth.append(depth[node] + 1)
                begins.append(set())
                ends.append(set())
            node = children[node][token]
            if i + 1 < len(phrase):
                begins[node].add(j)
        ends[node].add(j)
    tokens = sorted({t for p in distinct for t in p})
    goto, emits, progress = _links(children, depth, begins, ends, tokens)
    extends = [[int(t in children[node]) for t in tokens] for node in range(len(children))]
    lengths = list(map(len, distinct))
    return Automaton(tokens, goto, extends, emits, progress, list(counts.values()), lengths)


def _links(children, depth, begins, ends, tokens):
    """Aho-Corasick's goto over `tokens` (failure links folded in), the phrases each node
    ends (its own and its suffixes'), and the longest progress into each phrase along
    the node's suffixes. Breadth-first, so a node's failure is done before the node."""
    n, P = len(children), len(begins[0])
    fail = [0] * n
    goto = [[0] * (len(tokens) + 1) for _ in range(n)]
    emits = [[0] * P for _ in range(n)]
    progress = [[0] * P for _ in range(n)]
    queue = deque([0])
    while queue:
        node = queue.popleft()
        back = fail[node]
        for j in range(P):
            emits[node][j] = int(j in ends[node]) or (emits[back][j] if node else 0)
            own = j in begins[node]
            progress[node][j] = depth[node] if own else (progress[back][j] if node else 0)
        for c, token in enumerate(tokens):
            child = children[node].get(token)
            if child is None:
                goto[node][c] = goto[back][c] if node else 0
            else:
                goto[node][c] = child
                fail[child] = goto[back][c] if node else 0
                queue.append(child)
    return goto, emits, progress


class Constraints:
    """The phrases (lists of target ids) each sentence of a batch must produce.

    `joins` [V] bool (optional) marks the target ids that continue the word before them
    (SentencePiece pieces without the word mark that begin with a letter or digit): a
    phrase counts only when the id after it is none of them, and after a phrase still
    needed they are masked (but for one going on into a longer phrase of the sentence),
    so a phrase ends a word ("Hund" is not met by "Hunde"). Without it, ids are ids."""

    def __init__(self, phrases: Sequence[Sequence[Sequence[int]]], joins=None) -> None:
        self.phrases = [[tuple(int(i) for i in p) for p in per if len(p)] for per in phrases]
        self.joins = joins
        self.dropped: list[int] = []  # sentences searched without theirs (they did not fit)

    @staticmethod
    def check(options) -> None:
        """ConfigError unless `options` (mtkit.search.SearchOptions) run a beam search."""
        from mtkit.errors import ConfigError

        if options.sampling or options.beam_size < 2:
            raise ConfigError(
                "constraints need beam search with a beam of 2 or more (5 is usual), "
                f"not {'--sampling' if options.sampling else '--beam 1'}"
            )

    def ids(self) -> list[int]:
        """Every id of every phrase, sorted (a shortlist must allow them)."""
        return sorted({i for per in self.phrases for p in per for i in p})

    def tracker(self, max_lens, vocab, eos_id: int, device) -> Tracker | None:
        """The search's tracker for sentences whose phrases fit their length limits
        max_lens [B] (the others join `dropped`); None when no sentence keeps any.
        `vocab`: the shortlist's ids, whose positions the search runs over, or None."""
        kept = []
        for i, per in enumerate(self.phrases):
            fits = sum(map(len, per)) <= int(max_lens[i])
            if per and not fits:
                self.dropped.append(i)
            kept.append(per if fits else [])
        if not any(kept):
            return None
        joins = self.joins
        if vocab is not None:
            position = {int(v): p for p, v in enumerate(vocab.tolist())}
            kept = [[tuple(position[i] for i in p) for p in per] for per in kept]
            joins = None if joins is None else joins.to(vocab.device)[vocab]
        return Tracker([build_automaton(per) for per in kept], eos_id, device, joins)


class Tracker:
    """The constraint state of every row of a beam search, and the steps that use it.

    Tables are [B,...] over the batch's sentences (their original order); rows carry
    their sentence, trie node, phrase counts [N,P], bank and tokens missing."""

    def __init__(self, automata: list[Automaton], eos_id: int, device, joins=None) -> None:
        import torch

        B, self.eos_id = len(automata), eos_id
        self.joins = None if joins is None else joins.to(device=device, dtype=torch.bool)
        self.T = max(len(a.tokens) for a in automata)
        padded = _padded(automata, self.T)
        self.tokens, self.goto, extends, self.emits, self.progress, self.need, self.length = (
            torch.tensor(x, dtype=torch.long, device=device) for x in padded
        )  # [B,T], [B,nodes,T+1], [B,nodes,T], [B,nodes,P] twice, [B,P] twice
        self.extends = extends.bool()
        self.total = (self.need * self.length).sum(1)  # [B] tokens each sentence must place
        self.top = int(self.total.max()) + 2  # above every bank
        self.sentence = torch.arange(B, device=device)  # per row, from here on
        self.node = torch.zeros(B, dtype=torch.long, device=device)
        # Phrase occurrences per row: counted, and pending (ended by the last id: they
        # count once the next id does not go on with the word, `joins`).
        self.counts = torch.zeros((B, self.need.size(1)), dtype=torch.long, device=device)
        self.pending = torch.zeros_like(self.counts)
        self.bank, self.missing = self._measure(self.sentence, self.node, self.counts)
        self.fresh = torch.zeros(B, dtype=torch.bool, device=device)  # a needed one pends

    # -- the automaton, over tensors of any shape ---------------------------------------

    def _next(self, rows, token):
        """Read `token` after `rows` (any shape): the node reached, the phrase counts
        [...,P] and the pending occurrences [...,P] (those it ends)."""
        import torch

        sentence, counts, pending = self.sentence[rows], self.counts[rows], self.pending[rows]
        hit = self.tokens[sentence] == token[..., None]  # [...,T]
        column = torch.where(hit.any(-1), hit.long().argmax(-1), self.T)
        reached = self.goto[sentence, self.node[rows], column]
        if self.joins is None:  # ids are ids: an occurrence counts at once
            return reached, counts + pending + self.emits[sentence, reached], counts * 0
        kept = pending * (~self.joins[token])[..., None]  # a word that goes on drops them
        return reached, counts + kept, self.emits[sentence, reached]

    def _measure(self, sentence, node, counts, pending=0):
        """Bank (constraint tokens met) and tokens still missing, per row; pending
        occurrences count (an end of the sentence, eos, keeps them)."""
        need, counts = self.need[sentence], counts + pending
        met = (counts.minimum(need) * self.length[sentence]).sum(-1)
        begun = (self.progress[sentence, node] * (counts < need)).amax(-1)
        return met + begun, self.total[sentence] - met

    # -- the three points of a search step ----------------------------------------------

    def mask(self, lprobs, limits, t: int) -> None:
        """In place: rows missing phrases may not end before their length limit, and
        rows whose last id met a phrase may not go on with its word (`joins`)."""
        import torch

        rows_per = self.node.numel() // limits.numel()
        blocked = (self.missing > 0) & (limits.repeat_interleave(rows_per) > t)
        lprobs[:, self.eos_id].masked_fill_(blocked, -math.inf)
        if self.joins is None or not bool(self.fresh.any()):
            return
        rows = self.fresh.nonzero().squeeze(1)
        sentence = self.sentence[rows]
        ids = self.tokens[sentence].clamp(min=0)  # [r,T]
        goes_on = self.extends[sentence, self.node[rows]]  # [r,T]: into a longer phrase
        few = lprobs.index_select(0, rows)  # [r,V]
        kept = few.gather(1, ids)
        few.masked_fill_(self.joins, -math.inf)
        few.scatter_(1, ids, torch.where(goes_on, kept, few.gather(1, ids)))
        lprobs.index_copy_(0, rows, few)

    def allocate(self, lprobs, top, limits, t: int, K: int):
        """The 2K candidates [n,2K] (scores, beam, token) of each sentence: unconstrained
        sentences keep theirs (`top`, the usual best 2K from mtkit.search), constrained
        ones get dynamic beam allocation's. lprobs [n*k,V]: the step's cumulative scores."""
        import torch

        top_scores, beam, token = top
        k = self.node.numel() // limits.numel()
        constrained = (self.total[self.sentence[::k]] > 0).nonzero().squeeze(1)  # [m]
        if constrained.numel() == 0:
            return top
        rows = (constrained[:, None] * k + torch.arange(k, device=lprobs.device)).view(-1)
        pool = self._pool(lprobs, rows, top_scores, beam, token, constrained, k)
        scores, beams, tokens, extra = pool  # [m,M]
        parent = rows.view(-1, k).gather(1, beams)  # [m,M] rows of the batch
        reached, counts, pending = self._next(parent, tokens)
        bank, _ = self._measure(self.sentence[parent], reached, counts, pending)
        advances = bank > self.bank[parent]
        left, limit = self.missing[parent], limits[constrained][:, None]
        tight = (left > 0) & (left >= limit - t) & (limit > t)  # no step to spare
        valid = (scores > -math.inf) & (advances | ~(extra | tight))
        pick = _round_robin(scores, bank, valid, 2 * K, self.top)
        top_scores, beam, token = top_scores.clone(), beam.clone(), token.clone()
        top_scores[constrained] = scores.masked_fill(~valid, -math.inf).gather(1, pick)
        beam[constrained], token[constrained] = beams.gather(1, pick), tokens.gather(1, pick)
        return top_scores, beam, token

    def _pool(self, cum, rows, top_scores, beam, token, constrained, k: int):
        """Candidates [m,M] of the constrained sentences (rows [m*k] of cum [n*k,V]): the
        usual 2K, each beam's best token, each beam with each constraint id; duplicates
        get -inf. `extra` [M] marks those by constraint ids, kept only when they advance."""
        import torch

        m, V, device = constrained.numel(), cum.size(1), cum.device
        best, best_token = (x[rows] for x in _row_max(cum))  # [m*k]
        ids = self.tokens[self.sentence[constrained * k]]  # [m,T]
        by_id = cum[rows[:, None], ids.clamp(min=0).repeat_interleave(k, 0)].view(m, k, -1)
        by_id = by_id.masked_fill((ids < 0)[:, None, :], -math.inf)  # [m,k,T]
        beams_k = torch.arange(k, device=device)
        scores = torch.cat([top_scores[constrained], best.view(m, k), by_id.view(m, -1)], 1)
        by_id_beams = beams_k.repeat_interleave(self.T).expand(m, -1)
        beams = torch.cat([beam[constrained], beams_k.expand(m, k), by_id_beams], 1)
        tokens = torch.cat(
            [token[constrained], best_token.view(m, k), ids.clamp(min=0).repeat(1, k)], 1
        )
        key = beams * V + tokens
        seen = (key[:, :, None] == key[:, None, :]).tril(-1).any(2)  # an earlier twin
        extra = torch.zeros(key.size(1), dtype=torch.bool, device=device)
        extra[-k * self.T :] = True
        return scores.masked_fill(seen, -math.inf), beams, tokens, extra

    def penalty(self, rows):
        """What to take off the ranking key of hypotheses ending on `rows` (any shape)."""
        return self.missing[rows].float() * MISSING_RANK

    def advance(self, rows, token) -> None:
        """The beam moved: row i now continues the old row rows[i] with token[i] ([N'])."""
        self.node, self.counts, self.pending = self._next(rows, token)
        self.sentence = sentence = self.sentence[rows]
        self.fresh = ((self.pending > 0) & (self.counts < self.need[sentence])).any(-1)
        self.bank, self.missing = self._measure(sentence, self.node, self.counts, self.pending)


# Columns per block of _row_max (as mtkit.search's top-k): max(dim=1) on the CPU took
# 6-10x longer than amax over blocks, the argmax of their maxima, and one block's max.
_BLOCK = 64


def _row_max(x):
    """x.max(1) for x [N,V]: (values, indices) [N], by way of block maxima."""
    import torch

    n, V = x.shape
    whole = V - V % _BLOCK
    if whole < 4 * _BLOCK:
        return x.max(1)
    maxima = x[:, :whole].view(n, -1, _BLOCK).amax(2)
    if whole < V:  # the last, partial block: one more "block" of its own
        maxima = torch.cat([maxima, x[:, whole:].amax(1, keepdim=True)], 1)
    first = maxima.argmax(1) * _BLOCK  # [N]: the first block holding the maximum
    cols = (first[:, None] + torch.arange(_BLOCK, device=x.device)).clamp(max=V - 1)
    values, where = x.gather(1, cols).max(1)
    return values, cols.gather(1, where[:, None]).squeeze(1)


def _round_robin(scores, bank, valid, width: int, top: int):
    """Indices [m,width] into the candidates [m,M]: the best of each bank, most tokens met
    first, then the second best of each ... (Post and Vilar, 2018); invalid ones last."""
    import torch

    m, M = scores.shape
    by_score = scores.masked_fill(~valid, -math.inf).argsort(dim=1, descending=True, stable=True)
    banks = bank.masked_fill(~valid, -1).gather(1, by_score)
    by_bank = banks.argsort(dim=1, descending=True, stable=True)  # score order within a bank
    order, banks = by_score.gather(1, by_bank), banks.gather(1, by_bank)
    place = torch.arange(M, device=scores.device).expand(m, M)
    starts = torch.ones_like(banks, dtype=torch.bool)
    starts[:, 1:] = banks[:, 1:] != banks[:, :-1]
    rank = place - torch.where(starts, place, 0).cummax(1).values  # rank within its bank
    # banks are below top - 1: rank r of every bank comes before rank r + 1 of any
    stripe = (rank * top + (top - 1 - banks)).masked_fill(banks < 0, top * (M + 1))
    return order.gather(1, stripe.argsort(dim=1, stable=True)[:, :width])


def _padded(automata: list[Automaton], T: int):
    """The automata's tables as nested lists of one shape: columns, nodes and phrases
    padded (a padded column is an id of no phrase, a padded node is never reached)."""
    nodes = max(len(a.goto) for a in automata)
    P = max(len(a.need) for a in automata)

    def rows(table, width: int, fill: int = 0) -> list[list[int]]:
        return [list(r) + [fill] * (width - len(r)) for r in table]

    def node_rows(table, width: int) -> list[list[int]]:
        return table + [[0] * width] * (nodes - len(table))

    goto = [
        node_rows([r[:-1] + [0] * (T - len(a.tokens)) + r[-1:] for r in a.goto], T + 1)
        for a in automata
    ]
    return (
        rows([a.tokens for a in automata], T, -1),
        goto,
        [node_rows(rows(a.extends, T), T) for a in automata],
        [node_rows(rows(a.emits, P), P) for a in automata],
        [node_rows(rows(a.progress, P), P) for a in automata],
        rows([a.need for a in automata], P),
        rows([a.length for a in automata], P),
    )
