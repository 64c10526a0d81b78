"""What constrained beam search costs: sentences/s with 0, 1, 2 and 4 constraints a line
against the same model and beam without any (issue 38's goal: at most 1.5x slower with 2).

The model of bench/decode.py (MTKIT_BENCH_MODEL for another, e.g. the `make demo`
model), the first N sentences of test_2016_flickr, beam 5, translated with
`mtkit.translate.stream.translate_lines` and its default batching. A line's
constraints are distinct words of its reference of 4 letters or more, drawn with a
fixed seed: words the model may well not produce where they are asked for, so the
search does the work a glossary gives it. "0" passes the option with no phrase on any
line (the cost of the machinery alone). Each round times the unconstrained run and
every case in turn; each one's best round counts. Printed per case: sentences/s and
how much slower than unconstrained, the process's CPU seconds and how many more (on a
shared machine the steadier figure: other processes' load does not count in it), the
share of the constraints found in the output as whole words, BLEU against the
references. Two modes:
  - fixed: every output forced to exactly 25 pieces (min_len = max_len = 25), so every
    case runs the same steps and the difference is the constraint machinery alone;
  - natural: default search settings, outputs ending where the search ends them (a
    constrained hypothesis may not end before it holds its phrases, so it may run longer).

Environment: MTKIT_BENCH_MODEL, MTKIT_BENCH_SENTENCES (1000), MTKIT_BENCH_THREADS (2),
MTKIT_BENCH_ROUNDS (1), MTKIT_BENCH_MODES (fixed,natural).

`python -m bench constraints`
"""

from __future__ import annotations

import os
import random
import time

from bench.common import FIXED_LEN, WARMUP, bleu, decoding_settings, load_line, print_machine

COUNTS = (0, 1, 2, 4)
MODES = tuple(os.environ.get("MTKIT_BENCH_MODES", "fixed,natural").split(","))
BEAM = 5
SEED = 1
MIN_LETTERS = 4


def main() -> None:
    import torch

    from mtkit.translate.stream import RuntimeOptions, load_translator

    threads, rounds, source, refs, model = decoding_settings()
    torch.set_num_threads(threads)
    translator = load_translator([model], RuntimeOptions(threads=threads))
    print_machine(f"{threads} threads", load_line("at start"))
    print(f"model: {model}; {len(source)} sentences of test2016, beam {BEAM}, best of {rounds}")
    for mode in MODES:
        _compare(mode, translator, source, refs, rounds)
    print(load_line("at the end"))


def _compare(mode: str, translator, source, refs, rounds: int) -> None:
    from mtkit.search import SearchOptions
    from mtkit.translate.stream import translate_lines

    options = SearchOptions(beam_size=BEAM)
    if mode == "fixed":
        options = SearchOptions(beam_size=BEAM, min_len=FIXED_LEN, max_len_a=0.0,
                                max_len_b=FIXED_LEN)  # fmt: skip

    def run(per_line):
        began, cpu = time.perf_counter(), time.process_time()
        results = translate_lines(translator, source, options, constraints=per_line)
        texts = [hyps[0][0] for hyps in results]
        return time.perf_counter() - began, time.process_time() - cpu, texts

    list(translate_lines(translator, source[:WARMUP], options))  # warm-up, untimed
    cases = [("none", None), *((str(n), reference_words(refs, n)) for n in COUNTS)]
    best: dict = {}
    for _ in range(rounds):
        for name, per_line in cases:
            timed = run(per_line)
            if name not in best or timed[0] < best[name][0]:
                best[name] = timed
    header = f"{mode + ': constraints':<22} {'sent/s':>8} {'slower':>7} {'CPU s':>7} {'slower':>7}"
    print(f"{header} {'in output':>10} {'BLEU':>6}")
    base, base_cpu = best["none"][:2]
    for name, per_line in cases:
        seconds, cpu, texts = best[name]
        found = term_use(texts, per_line) if per_line is not None else None
        used = "" if found is None else f"{found:.1%}"
        print(
            f"{name:<22} {len(source) / seconds:8.1f} {seconds / base:6.2f}x {cpu:7.1f} "
            f"{cpu / base_cpu:6.2f}x {used:>10} {bleu(texts, refs):6.1f}"
        )


def reference_words(refs: list[str], n: int, seed: int = SEED) -> list[list[str]]:
    """Per reference, n distinct words of MIN_LETTERS letters or more (fewer where it has
    fewer), drawn with `seed`."""
    from mtkit.translate.terms import words

    rng = random.Random(seed)
    per_line = []
    for ref in refs:
        pool = sorted({w for w in words(ref) if w.isalpha() and len(w) >= MIN_LETTERS})
        per_line.append(rng.sample(pool, min(n, len(pool))))
    return per_line


def term_use(texts: list[str], per_line: list[list[str]]) -> float | None:
    """The share of the phrases found in their line's output as whole words."""
    from mtkit.translate.terms import words

    found = total = 0
    for text, phrases in zip(texts, per_line, strict=True):
        out = words(text)
        for phrase in phrases:
            wanted = words(phrase)
            total += 1
            found += any(out[i : i + len(wanted)] == wanted for i in range(len(out)))
    return found / total if total else None


if __name__ == "__main__":
    main()
