"""The decoding core: greedy, beam and sampling over the models' incremental decoder.

Owns turning a padded batch of source ids into target ids with one model or an
ensemble. It stands below both of its callers, training's validation
(mtkit.train.validate, greedy) and `mtkit translate` (mtkit.translate.stream), and
imports neither: what a caller knows of its data comes in as arguments (the target
ids never to produce, a shortlist's ids, the sentences' keys for sampling).

Every search encodes the source once, then calls `decode_step` once per
target position with the cached keys/values, and tells the models of beam moves
and of finished sentences leaving (`Ensemble.reorder`), so the batch shrinks as
sentences end; the Transformer then moves only a small bias per row, not its caches
(mtkit.models.transformer). Nothing in the loop runs Python per hypothesis: beams
live as [B*K] rows and are chosen by one top-2K over the K*V continuations of each
sentence (`_topk`).

Leaves to others: tokenization, batching, files and order (mtkit.translate.stream), the
cache layout (mtkit.models), which ids are banned (the callers: source-side tags).

Scores. A hypothesis is ranked by its log-probability (the sum over its tokens,
eos included) divided by a length penalty lp(|Y|), |Y| counting eos:
  - GNMT (Wu et al., 2016, eq. 14): lp = ((5 + |Y|) / 6) ** alpha. alpha = 0.6 is
    the value of Vaswani et al. (2017, sec. 6.1) for the Transformer; 0 ranks by
    raw log-probability (which favours short output).
  - plain length normalisation (`len_norm=True`): lp = |Y|, the average token
    log-probability (fairseq's default, lenpen=1).
Beams compete on raw log-probability while they grow (as in fairseq); the
penalty ranks finished hypotheses. When a sentence is done (`stop`):
  - "bound" (the default): when no unfinished hypothesis can still beat the
    nbest-th finished one under the length penalty. Log-probabilities only fall as
    a hypothesis grows and lp only rises, so the best an unfinished one can reach
    is its log-probability now divided by lp at the length limit (the bound of
    Huang et al., 2017, "When to finish?"). fairseq's rule below stops while a
    longer hypothesis could still win, so a larger alpha only picks among the
    short hypotheses that ended first: the demo model stayed at BP 0.90 at alpha 2
    (issue 20; the figures are in docs/training-budget.md).
  - "count": when K hypotheses have finished among the top K candidates of a step
    (fairseq's stopping rule): fewer steps, shorter output.
With `early_stop`, a sentence is also done as soon as the best candidate of a step
ends (OpenNMT-py, CTranslate2). Whatever the rule, a sentence ends at its length
limit, max_len = floor(max_len_a * src_len + max_len_b) target tokens before eos
(fairseq's --max-len-a/--max-len-b; src_len counts the source eos), capped by the
model's max_positions.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

# Defaults shared with `mtkit translate`: room for a target 20% longer than the
# source plus 10 tokens (Multi30k and WMT targets are within 1.5x of the source).
DEFAULT_MAX_LEN_A = 1.2
DEFAULT_MAX_LEN_B = 10
# GNMT's length penalty (Wu et al., 2016). Vaswani et al. (2017) used alpha = 0.6; on
# Multi30k valid, over six transformer-small models of 600-1400 updates and two
# Multi30k valid, over six transformer-small models of 600-1400 updates and two
# averages, alpha = 1.0 scored 0.3-0.5 BLEU more than 0.6 every time with fairseq's stop
# rule. With the bound stop rule, alpha = 1.5: Multi30k valid BLEU 18.7, BP 1.00 against
# 18.4, BP 0.86 at alpha 1.0 with fairseq's rule, on a 364-update transformer-small
# (docs/training-budget.md); output stays short at 1.0.
DEFAULT_LEN_PENALTY = 1.5
# When a sentence's beam search is done: see the module docstring.
STOP_RULES = ("bound", "count")
# splitmix64's constants (Steele, Lea and Flood, 2014): a 64-bit mix whose outputs for
# nearby inputs are unrelated, so line keys 0, 1, 2 ... seed unrelated streams.
_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1
_STEP = _GOLDEN  # a step's offset in a row's stream (splitmix64's increment)


@dataclass
class Hypothesis:
    """One output of the search for one sentence."""

    tokens: list[int]  # target ids without bos/eos
    score: float  # log_prob / lp(len(tokens) + 1): what the n-best list is sorted by
    log_prob: float  # sum of the token log-probabilities, eos included


@dataclass(frozen=True)
class SearchOptions:
    """How to search; `mtkit translate` maps its flags onto these fields one to one."""

    beam_size: int = 5  # 1: greedy
    nbest: int = 1  # hypotheses returned per sentence (<= beam_size, or samples)
    max_len_a: float = DEFAULT_MAX_LEN_A
    max_len_b: int = DEFAULT_MAX_LEN_B
    min_len: int = 0  # target tokens before eos is allowed (the length limit wins)
    len_penalty: float = DEFAULT_LEN_PENALTY  # GNMT alpha
    len_norm: bool = False  # divide by |Y| instead of the GNMT penalty
    # A sentence is done when beam_size hypotheses have ended (fairseq); early_stop
    # also stops it once the best candidate of a step ends and nbest have ended
    # (OpenNMT-py, CTranslate2): on Multi30k 13-29% faster, 0.2 BLEU lower.
    early_stop: bool = False
    stop: str = "bound"  # bound or count: when a sentence is done (module docstring)
    sampling: bool = False  # sample instead of searching (beam_size is ignored)
    top_k: int = 0  # sample from the k most likely tokens (0: all)
    top_p: float = 1.0  # sample from the smallest set with this much probability
    temperature: float = 1.0
    seed: int | None = None  # for reproducible sampling


# -- public entry points -------------------------------------------------------


def search(
    models,
    src,
    options: SearchOptions,
    keys=None,
    vocab=None,
    banned: Sequence[int] = (),
    prefix: Sequence[int] = (),
    constraints=None,
) -> list[list[Hypothesis]]:
    """Translate src [B,S] (ids + eos, right-padded) with one model or a list (an ensemble).

    Returns, for each sentence, `options.nbest` hypotheses sorted best first.
    `keys` (B ints, default 0..B-1) name the sentences for sampling: a sentence's
    samples depend only on the seed, its key and its source, not on the batch. With
    `vocab` [V'] (sorted target ids holding pad, bos and eos: a lexical shortlist of the
    batch, mtkit.shortlist), only those ids are produced, their probabilities
    renormalised over the V' (as Marian's shortlists do). `banned` target ids are never
    produced (source-side tags such as <BT>, which a target never holds). `prefix` target
    ids are forced after the decoder's start id (a target-language token,
    mtkit.languages.Direction.target_prefix): they score log 1 = 0, count in |Y| (as in
    transformers' generate and CTranslate2's target prefix) and are not in the hypotheses.
    `constraints` (mtkit.constraints.Constraints) name target phrases each sentence's
    output must hold (beam search only; a shortlist then allows their ids too).
    """
    import torch

    members = models if isinstance(models, (list, tuple)) else [models]
    if constraints is not None:
        constraints.check(options)
        if vocab is not None:
            vocab = torch.unique(torch.cat([vocab, vocab.new_tensor(constraints.ids())]))
    if vocab is not None and prefix:  # a shortlist holds the forced ids too
        vocab = torch.unique(torch.cat([vocab, vocab.new_tensor(list(prefix))]))
    ensemble = Ensemble(members, vocab, banned, prefix)
    with torch.inference_mode():
        max_lens = ensemble.max_lens(src, options.max_len_a, options.max_len_b)
        if options.sampling:
            keys = list(range(src.size(0))) if keys is None else list(keys)
            hyps = _sample(ensemble, src, max_lens, options, keys)
        elif constraints is not None:
            hyps = _constrained(ensemble, src, max_lens, options, constraints)
        elif options.beam_size == 1:
            hyps = _greedy(ensemble, src, max_lens, options)
        else:
            hyps = _beam(ensemble, src, max_lens, options)
    return ensemble.model_ids(hyps)


def _constrained(ensemble, src, max_lens, options: SearchOptions, constraints):
    """Beam search holding `constraints` (mtkit.constraints): sentences whose phrases do
    not fit, or end with no hypothesis holding them, are searched again without."""
    import torch

    tracker = constraints.tracker(max_lens, ensemble.vocab, ensemble.eos_id, src.device)
    hyps = _beam(ensemble, src, max_lens, options, tracker)
    lost = [i for i, per in enumerate(hyps) if tracker and per[0].score == -math.inf]
    if lost:  # a phrase of ids the search never produces (a banned tag)
        index = torch.tensor(lost, device=src.device)
        again = _beam(ensemble, src.index_select(0, index), max_lens[lost], options)
        for i, per in zip(lost, again, strict=True):
            hyps[i] = per
        constraints.dropped += lost
    return hyps


def greedy_search(
    model,
    src,
    max_len_a: float = DEFAULT_MAX_LEN_A,
    max_len_b: int = DEFAULT_MAX_LEN_B,
    banned: Sequence[int] = (),
    prefix: Sequence[int] = (),
) -> list[list[int]]:
    """Greedy decoding of src [B,S]: the target ids of each sentence (no bos/eos, no
    forced `prefix`)."""
    options = SearchOptions(beam_size=1, max_len_a=max_len_a, max_len_b=max_len_b)
    hyps = search(model, src, options, banned=banned, prefix=prefix)
    return [per[0].tokens for per in hyps]


def beam_search(
    model,
    src,
    beam_size: int = 5,
    max_len_a: float = DEFAULT_MAX_LEN_A,
    max_len_b: int = DEFAULT_MAX_LEN_B,
    len_penalty: float = DEFAULT_LEN_PENALTY,
    len_norm: bool = False,
    banned: Sequence[int] = (),
    prefix: Sequence[int] = (),
) -> list[list[int]]:
    """Beam search over src [B,S]: the best target ids of each sentence (no bos/eos)."""
    options = SearchOptions(
        beam_size=beam_size,
        max_len_a=max_len_a,
        max_len_b=max_len_b,
        len_penalty=len_penalty,
        len_norm=len_norm,
    )
    hyps = search(model, src, options, banned=banned, prefix=prefix)
    return [per[0].tokens for per in hyps]


def length_penalty(length, options: SearchOptions):
    """lp(|Y|) for a length (int or tensor) that counts eos; see the module docstring."""
    if options.len_norm:
        return length
    return ((5 + length) / 6) ** options.len_penalty


def check_options(options: SearchOptions, vocab_size: int) -> None:
    """Raise ConfigError for options the search cannot honour."""
    from mtkit.errors import ConfigError

    if options.beam_size < 1:
        raise ConfigError(f"--beam must be at least 1, got {options.beam_size}")
    if options.stop not in STOP_RULES:
        raise ConfigError(
            f"unknown --stop {options.stop!r}; choose one of: {', '.join(STOP_RULES)}"
        )
    if options.nbest < 1:
        raise ConfigError(f"--nbest must be at least 1, got {options.nbest}")
    if not options.sampling and options.nbest > options.beam_size:
        raise ConfigError(
            f"--nbest {options.nbest} is more than --beam {options.beam_size}; "
            f"raise --beam to at least {options.nbest}"
        )
    if not options.sampling and 2 * options.beam_size > vocab_size - 3:
        raise ConfigError(
            f"--beam {options.beam_size} is too large for a vocabulary of {vocab_size}"
        )
    if options.max_len_a < 0 or options.max_len_b < 0 or options.min_len < 0:
        raise ConfigError("--max-len-a, --max-len-b and --min-len must not be negative")
    if options.len_penalty < 0:
        raise ConfigError(f"--len-penalty must not be negative, got {options.len_penalty}")
    if options.temperature <= 0:
        raise ConfigError(f"--temperature must be positive, got {options.temperature}")
    if not 0.0 < options.top_p <= 1.0:
        raise ConfigError(f"--top-p must be in (0, 1], got {options.top_p}")
    if options.top_k < 0:
        raise ConfigError(f"--top-k must not be negative, got {options.top_k}")


def mix64(value: int) -> int:
    """splitmix64's finalizer: a well-spread 64-bit integer for any integer. Sampling's
    streams and translate's noise (mtkit.translate.noise) draw from it per line."""
    z = (value + _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


# -- the models behind one step function ------------------------------------------


class Ensemble:
    """One model, or an ensemble averaging probabilities, behind encode/step/reorder.

    An ensemble's next-token distribution is the mean of its members' softmaxes
    (log of mean of probabilities, as fairseq's EnsembleModel); each member keeps
    its own state. Log-probabilities come out in float32 whatever the weights.
    """

    def __init__(
        self, models: Sequence, vocab=None, banned: Sequence[int] = (), prefix: Sequence[int] = ()
    ) -> None:
        assert models, "an ensemble needs at least one model"
        self.models = list(models)
        config = self.models[0].config
        self.src_pad_id = config.pad_id
        self.pad_id, self.bos_id, self.eos_id = config.pad_id, config.bos_id, config.eos_id
        self.vocab_size = config.tgt_vocab_size
        self.max_positions = min(m.config.max_positions for m in self.models)
        # Source-side tag pieces (<BT>) a target never holds: the caller knows them from
        # its tokenizers (translate, training's validation).
        self.banned = sorted({int(i) for i in banned})
        # Forced after the start id (a target-language token): fed, never scored.
        self.prefix = [int(i) for i in prefix]
        # A shortlist: the search runs over positions in `vocab` (its own pad/bos/eos),
        # `step` maps tokens back to model ids, `model_ids` the hypotheses.
        self.vocab, self.outputs = vocab, [None] * len(self.models)
        if vocab is not None:
            position = {int(i): p for p, i in enumerate(vocab.tolist())}
            self.pad_id, self.bos_id, self.eos_id = (
                position[i] for i in (self.pad_id, self.bos_id, self.eos_id)
            )
            self.vocab_size = len(position)
            self.banned = [position[i] for i in self.banned if i in position]
            self.prefix = [position[i] for i in self.prefix]
            self.outputs = [model.output_projection(vocab) for model in self.models]

    def model_ids(self, hyps: list[list[Hypothesis]]) -> list[list[Hypothesis]]:
        """Hypotheses with the model's target ids (positions in the shortlist until now)."""
        if self.vocab is None:
            return hyps
        table = self.vocab.tolist()
        for per in hyps:
            for hyp in per:
                hyp.tokens = [table[i] for i in hyp.tokens]
        return hyps

    def max_lens(self, src, max_len_a: float, max_len_b: int):
        """Per sentence, the most target tokens before eos: [B] long, on the CPU."""
        src_lens = (src != self.src_pad_id).sum(1).cpu()
        lens = (src_lens.double() * max_len_a + max_len_b).floor().long()
        # bos and the forced prefix come first: max_positions - 1 - |prefix| tokens fit
        # after them, eos included.
        return lens.clamp(max=self.max_positions - 2 - len(self.prefix))

    def encode(self, src) -> list:
        return [model.encode(src) for model in self.models]

    def start(self, src):
        """Encode src [B,S] and feed the decoder its start id and the forced prefix but its
        last token: the states, and the tokens [B] the first scored step reads."""
        import torch

        states = self.encode(src)
        tokens = torch.full((src.size(0),), self.bos_id, dtype=torch.long, device=src.device)
        for token in self.prefix:
            _, states = self.step(tokens, states)
            tokens = torch.full_like(tokens, token)
        return states, tokens

    def step(self, tokens, states: list):
        """tokens [N] -> log-probabilities [N,V] (float32) and the new states."""
        import torch

        if self.vocab is None:
            outputs = [
                model.decode_step(tokens, state)
                for model, state in zip(self.models, states, strict=True)
            ]
        else:
            tokens = self.vocab[tokens]  # [N] model ids
            outputs = [
                model.decode_step(tokens, state, output)
                for model, state, output in zip(self.models, states, self.outputs, strict=True)
            ]
        states = [state for _, state in outputs]
        lprobs = [logits.float().log_softmax(-1) for logits, _ in outputs]
        if len(lprobs) == 1:
            return lprobs[0], states
        mean = torch.stack(lprobs).logsumexp(0) - math.log(len(lprobs))
        return mean, states

    def reorder(self, states: list, rows, sentences=None) -> list:
        """Keep/reorder the rows [N'] of each state; `sentences` [n'] when sentences leave
        (each keeps its rows adjacent). A model with `reorder_beams` (the Transformer)
        then leaves the per-sentence memory alone on beam moves."""
        return [
            model.reorder_beams(state, rows, sentences)
            if hasattr(model, "reorder_beams")
            else model.reorder_state(state, rows)
            for model, state in zip(self.models, states, strict=True)
        ]

    def mask_specials(self, lprobs, t: int, min_len: int) -> None:
        """pad, bos and tag pieces are never produced, nor eos before min_len tokens (in place)."""
        lprobs[:, self.pad_id] = -math.inf
        if self.bos_id != self.eos_id:  # M2M-100 and NLLB start from eos, which must end
            lprobs[:, self.bos_id] = -math.inf
        if self.banned:
            lprobs[:, self.banned] = -math.inf
        if t < min_len:
            lprobs[:, self.eos_id] = -math.inf

    def force_eos(self, lprobs, at_limit):
        """Rows `at_limit` [N] bool can only end: every token but eos gets -inf."""
        not_eos = lprobs.new_ones(lprobs.size(1), dtype=bool)
        not_eos[self.eos_id] = False
        return lprobs.masked_fill(at_limit[:, None] & not_eos, -math.inf)


# -- greedy and sampling -----------------------------------------------------------


def _greedy(ensemble: Ensemble, src, max_lens, options: SearchOptions) -> list[list[Hypothesis]]:
    hyps = _one_path(ensemble, src, max_lens, options, pick=_argmax)
    return [[h] for h in hyps]


def _sample(ensemble: Ensemble, src, max_lens, options: SearchOptions, keys: list[int]):
    """`nbest` independent samples per sentence, as rows of one batch, best first."""
    import torch

    n = options.nbest
    seed = options.seed if options.seed is not None else random.getrandbits(63)
    # One stream per (sentence key, sample): the draws of a row never depend on its
    # neighbours, so a line samples alike in any batch, chunk, shard or resumed job.
    streams = [mix64(mix64(mix64(seed) ^ (key & _MASK64)) + j) for key in keys for j in range(n)]
    rows = torch.arange(src.size(0), device=src.device).repeat_interleave(n)
    pick = _sampler(options, streams)
    hyps = _one_path(
        ensemble, src.index_select(0, rows), max_lens.repeat_interleave(n), options, pick
    )
    per_sentence = [hyps[i * n : (i + 1) * n] for i in range(src.size(0))]
    return [sorted(group, key=lambda h: -h.score) for group in per_sentence]


def _argmax(lprobs, t: int, alive):
    return lprobs.argmax(-1)


def _sampler(options: SearchOptions, streams: list[int]):
    """A pick function drawing from the (tempered, truncated) distribution by inverse
    transform: row r at step t draws the uniform u(streams[r], t) and takes the first
    token whose cumulative probability exceeds u times the total."""
    import torch

    def pick(lprobs, t: int, alive):  # [N,V], step, [N] original rows -> [N]
        logits = lprobs / options.temperature
        if options.top_k:
            kth = logits.topk(min(options.top_k, logits.size(1)), dim=1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, -math.inf)
        if options.top_p < 1.0:
            logits = _top_p(logits, options.top_p)
        cdf = logits.softmax(-1).double().cumsum(-1)  # [N,V]
        # 32 random bits of a 64-bit mix: u in [0, 1 - 2^-32], so in float64 u times
        # the total stays below the total and some token always passes it.
        u = [(mix64(streams[r] + t * _STEP) >> 32) * 2.0**-32 for r in alive.tolist()]
        target = torch.tensor(u, dtype=cdf.dtype, device=cdf.device)[:, None] * cdf[:, -1:]
        # A token of probability 0 adds nothing to the cdf, so it is never the first to pass u.
        return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp_(max=cdf.size(1) - 1)

    return pick


def _top_p(logits, top_p: float):
    """Nucleus (Holtzman et al., 2020): keep the most likely tokens until their mass >= top_p."""
    sorted_logits, order = logits.sort(dim=1, descending=True)
    mass_before = sorted_logits.softmax(-1).cumsum(-1) - sorted_logits.softmax(-1)
    drop_sorted = mass_before >= top_p  # the first token always stays (mass before it is 0)
    drop = drop_sorted.scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, -math.inf)


def _one_path(ensemble: Ensemble, src, max_lens, options: SearchOptions, pick) -> list[Hypothesis]:
    """One hypothesis per row, token by token; rows leave the batch when they end."""
    import torch

    B, device = src.size(0), src.device
    T = int(max_lens.max()) + 1  # tokens including eos
    out = torch.full((B, T), ensemble.pad_id, dtype=torch.long, device=device)
    lengths = torch.full((B,), T, dtype=torch.long)  # on the CPU: tokens including eos
    log_prob = torch.zeros(B, device=device)
    alive = torch.arange(B, device=device)  # original row of each active row
    limits, first_limit = max_lens.to(device), int(max_lens.min())
    states, tokens = ensemble.start(src)
    for t in range(T):
        lprobs, states = ensemble.step(tokens, states)  # [N,V]
        ensemble.mask_specials(lprobs, t, options.min_len)
        if t >= first_limit:
            lprobs = ensemble.force_eos(lprobs, limits <= t)
        tokens = pick(lprobs, t, alive)  # [N]
        out[alive, t] = tokens
        log_prob.index_add_(0, alive, lprobs.gather(1, tokens[:, None]).squeeze(1))
        ended = tokens == ensemble.eos_id
        if not bool(ended.any()):
            continue
        lengths[alive[ended].cpu()] = t + 1
        keep = (~ended).nonzero().squeeze(1)
        if keep.numel() == 0:
            break
        states = ensemble.reorder(states, keep, keep)
        alive, tokens, limits = alive[keep], tokens[keep], limits[keep]
        first_limit = int(limits.min())
    return _hypotheses(out.cpu(), lengths, log_prob.cpu(), options, len(ensemble.prefix))


def _hypotheses(out, lengths, log_prob, options: SearchOptions, forced: int) -> list[Hypothesis]:
    """Rows of ids (eos at lengths - 1) to Hypothesis objects, once, on the CPU; |Y|
    counts the `forced` prefix too."""
    scores = log_prob / length_penalty(lengths.double() + forced, options)
    rows = out.tolist()
    return [
        Hypothesis(tokens=row[: n - 1], score=float(s), log_prob=float(lp))
        for row, n, s, lp in zip(
            rows, lengths.tolist(), scores.tolist(), log_prob.tolist(), strict=True
        )
    ]


# -- beam search -------------------------------------------------------------------


class _Finished:
    """The best K finished hypotheses of every sentence of the batch, as tensors."""

    def __init__(self, B: int, K: int, T: int, pad_id: int, device, forced: int = 0) -> None:
        import torch

        self.K, self.pad_id = K, pad_id
        self.forced = forced  # forced prefix tokens before the hypotheses: they count in |Y|
        self.scores = torch.full((B, K), -math.inf, device=device)  # penalised
        # What ranks them: the scores, less mtkit.constraints' penalty for missing phrases.
        self.keys = torch.full((B, K), -math.inf, device=device)  # sorted
        self.log_probs = torch.full((B, K), -math.inf, device=device)
        self.tokens = torch.full((B, K, T), pad_id, dtype=torch.long, device=device)
        self.lengths = torch.ones((B, K), dtype=torch.long, device=device)  # with eos
        self.count = torch.zeros(B, dtype=torch.long, device=device)  # ever finished
        # Whether the best candidate of some step was an end (OpenNMT-py's top_beam_finished).
        self.best_ended = torch.zeros(B, dtype=torch.bool, device=device)

    def done(self, sentences, alive_best, limits, options: SearchOptions):
        """[n] bool: which of `sentences` need no more steps (SearchOptions.stop and
        early_stop); alive_best [n] is the best unfinished log-probability of each,
        limits [n] their length limits (tokens before eos)."""
        if options.stop == "count":
            done = self.count[sentences] >= self.K
        else:  # no unfinished hypothesis can beat the nbest-th finished one
            longest = (limits + 1 + self.forced).to(alive_best.dtype)
            reachable = alive_best / length_penalty(longest, options)
            done = reachable <= self.keys[sentences, options.nbest - 1]
        if options.early_stop:
            done |= self.best_ended[sentences] & (self.count[sentences] >= options.nbest)
        return done

    def add(self, sentences, log_probs, prefixes, t: int, options, penalty=None) -> None:
        """Merge new hypotheses ending at step t into the best K of `sentences` [n].

        log_probs [n,K] (-inf where nothing ended), prefixes [n,K,t] (ids before eos),
        penalty [n,K] (or None) taken off their scores to rank them.
        """
        import torch

        n, K = log_probs.shape
        new_scores = log_probs / length_penalty(t + 1 + self.forced, options)
        new_tokens = self.tokens.new_full((n, K, self.tokens.size(2)), self.pad_id)
        new_tokens[:, :, :t] = prefixes
        new_keys = new_scores if penalty is None else new_scores - penalty
        best, pick = torch.cat([self.keys[sentences], new_keys], 1).topk(K, dim=1)  # [n,K]
        scores = torch.cat([self.scores[sentences], new_scores], 1)  # [n,2K]
        lengths = torch.cat([self.lengths[sentences], torch.full_like(pick, t + 1)], 1)
        log_probs = torch.cat([self.log_probs[sentences], log_probs], 1)
        tokens = torch.cat([self.tokens[sentences], new_tokens], 1)  # [n,2K,T]
        self.keys[sentences], self.scores[sentences] = best, scores.gather(1, pick)
        self.lengths[sentences] = lengths.gather(1, pick)
        self.log_probs[sentences] = log_probs.gather(1, pick)
        self.tokens[sentences] = tokens.gather(1, pick[:, :, None].expand(-1, -1, tokens.size(2)))
        self.count[sentences] += (new_scores > -math.inf).sum(1)

    def hypotheses(self, nbest: int) -> list[list[Hypothesis]]:
        rows = self.tokens[:, :nbest].tolist()
        lengths = self.lengths[:, :nbest].tolist()
        scores = self.scores[:, :nbest].tolist()
        log_probs = self.log_probs[:, :nbest].tolist()
        return [
            [Hypothesis(tok[: n - 1], s, lp) for tok, n, s, lp in zip(*per, strict=True)]
            for per in zip(rows, lengths, scores, log_probs, strict=True)
        ]


def _beam(ensemble: Ensemble, src, max_lens, options: SearchOptions, tracker=None):
    """Beam search with K rows per sentence; finished sentences leave the batch. A
    `tracker` (mtkit.constraints.Tracker) holds sentences to their phrases."""
    import torch

    B, K, device = src.size(0), options.beam_size, src.device
    T = int(max_lens.max()) + 1
    finished = _Finished(B, K, T, ensemble.pad_id, device, forced=len(ensemble.prefix))
    alive = torch.arange(B, device=device)  # original sentence of each active sentence
    limits = max_lens.to(device)
    first_limit = int(max_lens.min())
    states, first = ensemble.start(src)
    # Step 0 runs one row per sentence (K beams would all repeat it, as CTranslate2
    # also does); its best candidates then fill the K beams.
    prefix = first[:, None]  # [n*k,t+1]: the hypotheses, after the token step 0 reads
    scores = torch.zeros((B, 1), device=device)  # [n,k]: k beams a sentence, 1 then K
    beam_rank = torch.arange(2 * K, device=device)
    finished_any = False
    for t in range(T):
        lprobs, states = ensemble.step(prefix[:, -1], states)  # [n*k,V]
        ensemble.mask_specials(lprobs, t, options.min_len)
        if tracker is not None:
            tracker.mask(lprobs, limits, t)
        if t >= first_limit:
            lprobs = ensemble.force_eos(lprobs, (limits <= t).repeat_interleave(scores.size(1)))
        top = _top_candidates(lprobs, scores, K)  # [n,2K] each: scores, beam, token
        if tracker is not None:  # lprobs now holds the cumulative scores
            top = tracker.allocate(lprobs, top, limits, t, K)
        top_scores, beam, token = top
        is_eos = token == ensemble.eos_id
        # eos among the best K candidates finishes a hypothesis (fairseq's rule).
        ends = is_eos[:, :K] & (top_scores[:, :K] > -math.inf)
        ended = bool(ends.any())
        # Under "bound" a sentence can be done at any step once something has finished
        # (its unfinished hypotheses fall behind); under "count" only when one ends.
        finished_any = finished_any or (ended and options.stop == "bound")
        if ended:
            k = scores.size(1)
            _finish(finished, alive, ends, top_scores, beam, prefix, t, k, options, tracker)
            finished.best_ended[alive] |= ends[:, 0]
        scores, rows, token = _carry_on(top_scores, beam, token, is_eos, beam_rank, scores.size(1))
        sentences = None  # the same sentences go on: their memory stays as it is
        if finished_any or ended or t >= first_limit:  # only then can a sentence be done
            done = finished.done(alive, scores.amax(1), limits, options)
            keep = (~done & (limits > t)).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            if keep.numel() < alive.numel():
                alive, limits, scores = alive[keep], limits[keep], scores[keep]
                rows, token, sentences = rows[keep], token[keep], keep
                first_limit = int(limits.min())
        rows = rows.view(-1)
        if tracker is not None:
            tracker.advance(rows, token.view(-1))
        states = ensemble.reorder(states, rows, sentences)
        prefix = torch.cat([prefix.index_select(0, rows), token.view(-1, 1)], 1)
    return finished.hypotheses(options.nbest)


def _top_candidates(lprobs, scores, K: int):
    """The best 2K of each sentence's k*V continuations: scores, source beam, token [n,2K]."""
    Nk, V = lprobs.shape
    n, k = scores.shape
    # In place: lprobs is this step's own tensor, and [N,V] is the biggest one of the step.
    cand = lprobs.add_(scores.view(Nk, 1)).view(n, k * V)
    top_scores, top_index = _topk(cand, 2 * K)  # best first
    return top_scores, top_index // V, top_index % V


# Columns per block of _topk: on the 2-core CPU, 64 made it fastest (16: 4x slower).
TOPK_BLOCK = 64


def _topk(x, k: int):
    """torch.topk(x [n,M], k, dim=1), best first, by way of block maxima: the k best of a
    row lie in the k blocks of TOPK_BLOCK columns with the best maxima (a block holding
    one of them has a maximum at least as good, and fewer than k blocks can beat that).
    On the CPU topk over beam 5's 40,000 columns costs 4x this amax, small topk and gather."""
    import torch

    n, M = x.shape
    whole = M - M % TOPK_BLOCK
    if whole < 4 * k * TOPK_BLOCK:
        return x.topk(k, dim=1)
    maxima = x[:, :whole].view(n, whole // TOPK_BLOCK, TOPK_BLOCK).amax(2)
    best = maxima.topk(k, dim=1).indices  # [n,k] blocks
    offsets = torch.arange(TOPK_BLOCK, device=x.device)
    cols = (best[:, :, None] * TOPK_BLOCK + offsets).view(n, k * TOPK_BLOCK)
    if whole < M:  # the last, partial block is always searched
        cols = torch.cat([cols, torch.arange(whole, M, device=x.device).expand(n, -1)], 1)
    top, where = x.gather(1, cols).topk(k, dim=1)
    return top, cols.gather(1, where)


def _carry_on(top_scores, beam, token, is_eos, beam_rank, k: int):
    """The best K candidates that do not end: scores, rows of the batch, tokens [n,K].

    k is the number of beams the candidates came from (rows per sentence of the batch).
    At most k <= K of the 2K candidates end in eos (one per beam), so K always remain.
    """
    import torch

    n, K = top_scores.size(0), top_scores.size(1) // 2
    _, carry = (is_eos.long() * 2 * K + beam_rank).topk(K, dim=1, largest=False)  # eos last
    first_row = (torch.arange(n, device=beam.device) * k)[:, None]
    return top_scores.gather(1, carry), beam.gather(1, carry) + first_row, token.gather(1, carry)


def _finish(finished, alive, ends, top_scores, beam, prefix, t, k, options, tracker) -> None:
    """Hand the candidates that end at step t to `finished`, sentence by sentence (batched);
    k is the number of rows per sentence of the current batch."""
    K = finished.K
    hit = ends.any(1).nonzero().squeeze(1)  # active sentences with something ending
    log_probs = top_scores[hit, :K].masked_fill(~ends[hit], -math.inf)  # [h,K]
    rows = beam[hit, :K] + (hit * k)[:, None]  # [h,K] rows of the current batch
    prefixes = prefix.index_select(0, rows.view(-1))[:, 1:]  # drop the step-0 token: [h*K,t]
    penalty = None if tracker is None else tracker.penalty(rows)
    finished.add(alive[hit], log_probs, prefixes.view(hit.numel(), K, t), t, options, penalty)
