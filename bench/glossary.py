"""Terminology: how often `translate --terms` puts a glossary's terms in the output, and
what it does to BLEU and chrF, on Multi30k test2016 de-en.

The glossary is built as Dinu et al. (2019) built their terminology test sets, from
word pairs that co-occur in the test set's sources and references, with the word
translation tables of IBM model 1 (the estimator of `mtkit shortlist`,
mtkit.shortlist._ibm1) in place of their dictionaries:
  - IBM-1 (5 EM iterations) on Multi30k's 29,000 training pairs, over words (runs of
    letters and digits, mtkit.translate.terms.words, as --terms matches them), both ways;
  - a pair (s, t) is kept when t is s's likeliest translation and s is t's (the two
    directions agree), p(t|s) >= MIN_PROB, both words are alphabetic, MIN_LETTERS long,
    seen MIN_COUNT times in training and not among the TOP_WORDS most frequent words
    of their language (function words are no terms), and s != t;
  - the glossary is the pairs with s in a test2016 source line and t in its reference.
It is written to bench/out/glossary/test2016.de-en.tsv (once) and read by the same
code as `mtkit translate --terms` (mtkit.translate.terms.Glossary), which applies it to
every line whose source holds a source term.

Then the model (bench/decode.py's, MTKIT_BENCH_MODEL for another, e.g. the `make
demo` model) translates the first N lines of test2016 with beam 5, without and with
the glossary's terms as constraints. Printed: lines with terms, the share of their
terms in the output as whole words (term use rate) for both, BLEU and chrF of both
with sacreBLEU's paired bootstrap (mtkit.score.compare: p-value of the difference),
and sentences/s (and the process's CPU seconds) of both.

Environment: MTKIT_BENCH_MODEL, MTKIT_BENCH_SENTENCES (1000), MTKIT_BENCH_THREADS (2).

`python -m bench glossary`
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from bench.common import MULTI30K, OUT, decoding_settings, load_line, print_machine, read_lines

GLOSSARY = OUT / "glossary" / "test2016.de-en.tsv"
MIN_PROB = 0.3
MIN_LETTERS = 3
MIN_COUNT = 5
TOP_WORDS = 150
ITERATIONS = 5
BEAM = 5


def main() -> None:
    import torch

    from mtkit.search import SearchOptions
    from mtkit.translate.stream import RuntimeOptions, load_translator, translate_lines
    from mtkit.translate.terms import Glossary

    path = build_glossary()
    threads, _, source, refs, model = decoding_settings()
    torch.set_num_threads(threads)
    glossary = Glossary.load(path)
    per_line = [glossary.targets(line) for line in source]
    translator = load_translator([model], RuntimeOptions(threads=threads))
    options = SearchOptions(beam_size=BEAM)
    list(translate_lines(translator, source[:50], options))  # warm-up, untimed
    runs = {}
    for name, constraints in (("without", None), ("with --terms", per_line)):
        began, cpu = time.perf_counter(), time.process_time()
        results = translate_lines(translator, source, options, constraints=constraints)
        texts = [hyps[0][0] for hyps in results]
        runs[name] = (texts, time.perf_counter() - began, time.process_time() - cpu)
    print_machine(f"{threads} threads", load_line("at the end"))
    with_terms = sum(bool(p) for p in per_line)
    terms = sum(map(len, per_line))
    print(f"model: {model}; glossary {path}: {len(glossary.entries)} terms")
    print(f"test2016, first {len(source)} lines, beam {BEAM}: {with_terms} lines hold "
          f"{terms} terms")  # fmt: skip
    for name, (texts, seconds, cpu) in runs.items():
        rate = term_use(texts, per_line)
        speed = f"{len(source) / seconds:6.1f} sentences/s, {cpu:.1f} CPU s"
        print(f"{name:<14} term use {rate:6.1%}   {speed}")
    print(_scores(runs, refs))


def term_use(texts: list[str], per_line: list[list[str]]) -> float:
    from bench.constraints import term_use as share

    return share(texts, per_line) or 0.0


def _scores(runs: dict, refs: list[str]) -> str:
    """sacreBLEU's paired bootstrap table of BLEU and chrF, and the metrics' signatures."""
    from mtkit.score import ScoreOptions, SignificanceOptions, compare

    names = list(runs)
    systems = [runs[name][0] for name in names]
    tests = SignificanceOptions(paired_bs=True)
    text = compare(names, systems, [refs], ScoreOptions(metrics=("bleu", "chrf")), tests)
    signatures = [line for line in text.splitlines() if line.startswith((" - BLEU", " - chrF"))]
    return "\n".join([text.split("\n\n")[0], *signatures])


# -- the glossary ---------------------------------------------------------------------


def build_glossary(path: Path = GLOSSARY) -> Path:
    """Write the glossary (see the module docstring) unless it is there; its path."""
    if path.exists():
        return path
    de, en = read_lines(MULTI30K / "train.de.gz"), read_lines(MULTI30K / "train.en.gz")
    pairs = term_pairs(de, en)
    test_de = read_lines(MULTI30K / "test_2016_flickr.de.gz")
    test_en = read_lines(MULTI30K / "test_2016_flickr.en.gz")
    found = co_occurring(pairs, test_de, test_en)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{s}\t{t}\n" for s, t in sorted(found)), encoding="utf-8")
    print(f"wrote {path}: {len(found)} of {len(pairs)} word pairs co-occur in test2016")
    return path


def term_pairs(src_lines: list[str], tgt_lines: list[str]) -> dict[str, str]:
    """Source word -> target word where IBM-1's best translations agree both ways."""
    src, src_vocab, src_counts = _encode(src_lines)
    tgt, tgt_vocab, tgt_counts = _encode(tgt_lines)
    forward = _best(src, tgt, len(src_vocab), len(tgt_vocab))  # s -> (t, p(t|s))
    backward = _best(tgt, src, len(tgt_vocab), len(src_vocab))  # t -> (s, p(s|t))
    src_words, tgt_words = list(src_vocab), list(tgt_vocab)
    src_ok = _content_words(src_counts, src_vocab)
    tgt_ok = _content_words(tgt_counts, tgt_vocab)
    pairs = {}
    for s, (t, prob) in forward.items():
        if backward.get(t, (None,))[0] != s or prob < MIN_PROB:
            continue
        if s in src_ok and t in tgt_ok and src_words[s] != tgt_words[t]:
            pairs[src_words[s]] = tgt_words[t]
    return pairs


def co_occurring(pairs: dict[str, str], src_lines, tgt_lines) -> set[tuple[str, str]]:
    """The pairs whose source word is in a source line and target word in its reference."""
    from mtkit.translate.terms import words

    found = set()
    for src, tgt in zip(src_lines, tgt_lines, strict=True):
        tgt_words = set(words(tgt))
        for word in set(words(src)):
            if word in pairs and pairs[word] in tgt_words:
                found.add((word, pairs[word]))
    return found


def _encode(lines: list[str]):
    """Word ids of each line, the vocabulary (word -> id) and each id's count."""
    from mtkit.translate.terms import words

    vocab: dict[str, int] = {}
    ids = [[vocab.setdefault(w, len(vocab)) for w in words(line)] for line in lines]
    counts = Counter(i for line in ids for i in line)
    return ids, vocab, counts


def _content_words(counts: Counter, vocab: dict[str, int]) -> set[int]:
    frequent = {i for i, _ in counts.most_common(TOP_WORDS)}
    return {
        i
        for word, i in vocab.items()
        if word.isalpha() and len(word) >= MIN_LETTERS and counts[i] >= MIN_COUNT
        and i not in frequent
    }  # fmt: skip


def _best(src_ids, tgt_ids, src_vocab: int, tgt_vocab: int) -> dict[int, tuple[int, float]]:
    """Each source word's likeliest target word under IBM-1, with its probability."""
    import numpy as np

    from mtkit.shortlist import _ibm1

    keys, probs = _ibm1(src_ids, tgt_ids, src_vocab, tgt_vocab, ITERATIONS)
    s, t = keys // tgt_vocab, keys % tgt_vocab
    order = np.lexsort((-probs, s))  # by source word, likeliest first
    first = np.concatenate([[True], s[order][1:] != s[order][:-1]])
    best = order[first]
    found = zip(s[best].tolist(), t[best].tolist(), probs[best].tolist(), strict=True)
    return {a: (b, p) for a, b, p in found}


if __name__ == "__main__":
    main()
