"""`mtkit logprob`: the log-probability of given target sentences under a model or an ensemble.

Owns force-decoding (teacher forcing) of source/target pairs: reading pairs from
two files, a TSV or an n-best list, encoding both sides with the checkpoint's
own SentencePiece models, one `model.forward` per batch and model, and writing one
line out per line in, in input order. Chunks, token-budget batches and input order
are mtkit.translate.batching's, as for `translate`; checkpoints load as for
`translate` too (`stream.load_translator`).

The figure. A target's log-probability is the sum over its pieces, eos included,
of log p(piece | source, previous pieces): the same sum `translate` ranks by, so
for a hypothesis `translate --nbest K --len-penalty 0` printed, logprob prints the
score it printed (`--normalize`: the mean per piece, eos counted, which is the
`translate --len-norm` score). An ensemble's token probability is the mean of its
members' probabilities (log of the mean, as `search.Ensemble.step` combines
them, fairseq's EnsembleModel); only the target token's value of each member is
needed, so the full distributions are never averaged.

Line rules, as `translate`'s: a source longer than the models' max_positions is
cut to fit (with a warning), and a target longer than the search could produce
(max_positions - 2 pieces before eos) is cut the same way; a blank source gives
0.0 (and an empty list of pieces), as `translate` gives an empty line score 0
without decoding it; an empty target under a real source is scored as eos alone.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

from mtkit.errors import ConfigError, DataError
from mtkit.io import atomic_write, check_readable, input_stream, text_lines
from mtkit.tokenizer import clip_source
from mtkit.translate.batching import BatchOptions, Cuts, run_batched
from mtkit.translate.stream import RuntimeOptions, Translator, load_translator

log = logging.getLogger(__name__)

# Padded target (or source) tokens of a batch: logits are [tokens, V] floats per
# model, 4000 x 8000 x 4 bytes = 128 MB on the CPU.
DEFAULT_MAX_TOKENS = {"cpu": 4_000, "cuda": 32_000}


@dataclass(frozen=True)
class LogprobOptions:
    """What each output line holds."""

    per_token: bool = False  # every piece's log-probability (eos last), space-separated
    normalize: bool = False  # the mean per piece (eos counted) instead of the sum


# -- the library -------------------------------------------------------------------


def score_pairs(
    translator: Translator,
    pairs: Iterable[tuple[str, str]],
    batching: BatchOptions = BatchOptions(),
) -> Iterator[list[float]]:
    """For every (source, target) pair, in order, the log-probability of each target
    piece and of eos (eos last); [] for a blank source. Reads `batching.chunk_lines`
    pairs at a time, so memory does not grow with the input."""
    batching.check()
    scored = run_batched(
        pairs,
        batching,
        lambda chunk, number, cuts: _encode(translator, chunk, number, cuts),
        cost=_cost,
        run=lambda batch: force_decode(translator, [s for s, _ in batch], [t for _, t in batch]),
        empty=[],
        max_tokens=batching.max_tokens or DEFAULT_MAX_TOKENS[translator.device],
    )
    return (values for _, values in scored)


def _encode(translator: Translator, chunk, first: int, cuts: Cuts) -> list:
    """(source ids + eos, target pieces without eos) per pair, with the direction's
    language tokens on the source; ([], []) for a blank source."""
    config, direction = translator.models[0].config, translator.direction
    src = translator.src_tokenizer.encode([s for s, _ in chunk])
    tgt = translator.tgt_tokenizer.encode([t for _, t in chunk])
    src_room = translator.max_src_len - 1 - direction.extra_source  # pieces before eos
    # As search.Ensemble.max_lens: bos, the forced prefix and eos.
    tgt_room = translator.max_src_len - 2 - len(direction.target_prefix)
    pairs = []
    for number, (s, t) in enumerate(zip(src, tgt, strict=True), first + 1):
        if not s:  # a blank source is not scored, as translate does not decode it
            pairs.append(([], []))
            continue
        if len(s) > src_room or len(t) > tgt_room:
            side = "source" if len(s) > src_room else "target"
            cuts.warn("line %d: the %s is cut to the model's max_positions", number, side)
        s = clip_source(s, translator.max_src_len - direction.extra_source)
        pairs.append((direction.source(s, config.eos_id), t[:tgt_room]))
    return pairs


def _cost(pair: tuple[list[int], list[int]]) -> int:
    """The longer side's padded length (the target with its eos); 0 for a blank source."""
    src, tgt = pair
    return max(len(src), len(tgt) + 1) if src else 0


def force_decode(translator: Translator, src: list[list[int]], tgt: list[list[int]]):
    """Per-piece log-probs (eos last) of target pieces `tgt` (no bos/eos) given source
    ids `src` (eos included, not empty): one forward pass per model over the batch. The
    direction's forced target prefix (a language token) is read, not scored (as search
    scores it 0)."""
    import torch

    config = translator.models[0].config
    pad, bos, eos = config.pad_id, config.bos_id, config.eos_id
    forced = list(translator.direction.target_prefix)
    tgt = [[*forced, *t] for t in tgt]
    S = max(map(len, src))
    T = max(map(len, tgt)) + 1  # bos + prefix + pieces in, prefix + pieces + eos out
    src_t = torch.tensor([s + [pad] * (S - len(s)) for s in src])  # [B,S]
    tgt_in = torch.tensor([[bos, *t] + [pad] * (T - 1 - len(t)) for t in tgt])  # [B,T]
    gold = torch.tensor([[*t, eos] + [pad] * (T - 1 - len(t)) for t in tgt])  # [B,T]
    src_t, tgt_in, gold = (x.to(translator.device) for x in (src_t, tgt_in, gold))
    with torch.inference_mode():
        per_model = [_gold_log_probs(model, src_t, tgt_in, gold) for model in translator.models]
        if len(per_model) == 1:
            values = per_model[0]
        else:  # log of the mean probability, as search.Ensemble.step
            values = torch.stack(per_model).logsumexp(0) - math.log(len(per_model))
    rows = values.cpu().tolist()
    return [row[len(forced) : len(t) + 1] for row, t in zip(rows, tgt, strict=True)]


def _gold_log_probs(model, src, tgt_in, gold):
    """log p(gold token) at every position: [B,T] float32 (the logits' softmax in fp32)."""
    logits = model(src, tgt_in).float()  # [B,T,V]
    return logits.gather(-1, gold[..., None]).squeeze(-1) - logits.logsumexp(-1)


# -- reading pairs ----------------------------------------------------------------


def parallel_pairs(sources: Iterable[str], targets: Iterable[str], names: tuple[str, str]):
    """(source, target) pairs of two line streams that must have the same length."""
    done = object()
    for number, (s, t) in enumerate(zip_longest(sources, targets, fillvalue=done), 1):
        if s is done or t is done:
            short, other = names if s is done else names[::-1]
            raise DataError(
                f"{short} has {number - 1} lines but {other} has more; "
                "sources and targets must match line for line"
            )
        yield s, t


def tsv_pairs(lines: Iterable[str], name: str) -> Iterator[tuple[str, str]]:
    """(source, target) from `source<TAB>target` lines; an empty line is an empty pair."""
    for number, line in enumerate(lines, 1):
        if not line:
            yield "", ""
            continue
        source, tab, target = line.partition("\t")
        if not tab or "\t" in target:
            found = "no tab" if not tab else "more than one tab"
            raise DataError(
                f"{name} line {number} has {found}; expected source<TAB>target "
                "(or pass -i SOURCE -r TARGET)"
            )
        yield source, target


def nbest_pairs(sources: Iterator[str], nbest: Iterable[str], name: str):
    """(source, hypothesis, line) for every line `N ||| hypothesis ||| ...` of an n-best
    list (Moses, Marian, `translate --nbest`), N counting source lines from 0."""
    current, source = -1, ""
    for number, line in enumerate(nbest, 1):
        fields = line.split("|||")
        if len(fields) < 3 or not fields[0].strip().isdigit():
            raise DataError(
                f"{name} line {number} is not an n-best line 'N ||| hypothesis ||| score': "
                f"{line[:60]!r}"
            )
        n = int(fields[0])
        if n < current:
            raise DataError(
                f"{name} line {number} goes back from sentence {current} to {n}; "
                "an n-best list must be in source order"
            )
        while current < n:
            source = next(sources, None)
            if source is None:
                raise DataError(
                    f"{name} line {number} is for sentence {n}, but the source has "
                    f"{current + 1} lines (sentences count from 0)"
                )
            current += 1
        yield source, fields[1].strip(), line


# -- the command ---------------------------------------------------------------------


def format_value(values: list[float], options: LogprobOptions) -> str:
    """The figure of one pair: the sum, the mean, or every piece's value (.4f, as translate)."""
    if options.per_token:
        return " ".join(f"{v:.4f}" for v in values)
    total = sum(values)
    if options.normalize and values:
        total /= len(values)
    return f"{total:.4f}"


def logprob_file(
    model_paths: list[Path],
    src_path: Path | None = None,
    tgt_path: Path | None = None,
    nbest_path: Path | None = None,
    out_path: Path | None = None,
    options: LogprobOptions = LogprobOptions(),
    batching: BatchOptions = BatchOptions(),
    runtime: RuntimeOptions = RuntimeOptions(),
) -> int:
    """Score pairs from files and write one line per line in; returns the lines written.

    Pairs come from `src_path` and `tgt_path` line by line, from an n-best list
    (`nbest_path`, "-" for standard input, with the sources in `src_path`; each
    line comes back with ` ||| figure` appended), or, with neither `tgt_path` nor
    `nbest_path`, from a TSV `source<TAB>target` in `src_path` (stdin when None).
    """
    _check(options, tgt_path, nbest_path, src_path)
    translator = load_translator(model_paths, runtime, command="logprob")
    log.info("scoring with %d model(s) on %s", len(translator.models), translator.device)
    with _pair_source(src_path, tgt_path, nbest_path) as (pairs, lines), _open_out(out_path) as out:
        count = 0
        values = score_pairs(translator, pairs, batching)
        for row, line in zip(values, lines):  # noqa: B905 - values first: lines follow it
            figure = format_value(row, options)
            out.write((figure if line is None else f"{line} ||| {figure}") + "\n")
            count += 1
            if count % 1000 == 0:
                out.flush()  # a pipe sees results as chunks finish
        return count


def _check(options: LogprobOptions, tgt_path, nbest_path, src_path) -> None:
    if options.per_token and options.normalize:
        raise ConfigError("--per-token and --normalize exclude each other; choose one")
    if tgt_path is not None and nbest_path is not None:
        raise ConfigError("give the hypotheses either as -r TARGET or as --nbest-input, not both")
    if nbest_path is not None and src_path is None and not _is_stdin(nbest_path):
        raise ConfigError("--nbest-input needs the sources it translates: add -i SOURCE")
    if _is_stdin(nbest_path) and src_path is None:
        raise ConfigError("--nbest-input - reads standard input; give the sources as -i SOURCE")
    for path in (src_path, tgt_path, None if _is_stdin(nbest_path) else nbest_path):
        if path is not None:
            check_readable(path, "input file")


@contextmanager
def _pair_source(src_path, tgt_path, nbest_path):
    """(pairs, original lines or None each) over the inputs, closed at the end."""
    src_name = str(src_path) if src_path else "standard input"
    with input_stream(src_path) as src_stream:
        sources = _lines(src_stream, src_name)
        if nbest_path is not None:
            stdin = _is_stdin(nbest_path)
            name = "standard input" if stdin else str(nbest_path)
            with input_stream(None if stdin else nbest_path) as nbest_stream:
                triples = nbest_pairs(sources, _lines(nbest_stream, name), name)
                pairs, lines = _split(triples)
                yield pairs, lines
        elif tgt_path is not None:
            with input_stream(tgt_path) as tgt_stream:
                targets = _lines(tgt_stream, str(tgt_path))
                yield parallel_pairs(sources, targets, (src_name, str(tgt_path))), _nones()
        else:
            yield tsv_pairs(sources, src_name), _nones()


def _is_stdin(path) -> bool:
    return path is not None and str(path) == "-"


def _lines(stream, name: str) -> Iterator[str]:
    return (line.removesuffix("\r") for line in text_lines(stream, name))


def _nones() -> Iterator[None]:
    while True:
        yield None


def _split(triples: Iterator[tuple[str, str, str]]):
    """Pairs for the scorer and their n-best lines for the writer, from one stream.

    The scorer reads ahead by at most a chunk, so the lines wait in a queue that
    holds at most a chunk too.
    """
    from collections import deque

    waiting: deque[str] = deque()

    def pairs():
        for source, hyp, line in triples:
            waiting.append(line)
            yield source, hyp

    def lines():
        while True:
            yield waiting.popleft()

    return pairs(), lines()


@contextmanager
def _open_out(path: Path | None):
    """Text to stdout, or to `path` atomically (nothing under its name unless complete)."""
    if path is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    with atomic_write(path, "w") as file:
        yield file
