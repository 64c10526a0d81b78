"""Beam-5 decoding with and without a lexical shortlist, on the same model, side by side.

The checkpoint of bench/decode.py (a transformer-small on Multi30k de-en, 8k joint
pieces; MTKIT_BENCH_MODEL for another) and its shortlist, built by `mtkit shortlist`
(IBM-1, best 100, first 100) from the training data it came with (MTKIT_BENCH_DATA, a
prepared directory; default bench/decode's), decode the first N sentences of
test_2016_flickr with `mtkit.translate.stream.translate_lines` (default batching):
  - fixed: every output forced to exactly 25 pieces (min_len = max_len = 25), so both
    runs do the same number of steps and the difference is the smaller output matmul
    (and its softmax and top-k) alone;
  - natural: default search settings, outputs ending where the model ends them; BLEU
    of both is printed (the shortlist's cost in quality).
fp32 and int8 (`--quantize int8`). Each case runs A/B/A (without, with, without;
ROUNDS=2: A/B/A/B/A), each side's best counts; the mean shortlist size of a batch and
the load average are printed with each row.

Environment: MTKIT_BENCH_MODEL, MTKIT_BENCH_DATA, MTKIT_BENCH_SENTENCES (1000),
MTKIT_BENCH_THREADS (2), MTKIT_BENCH_ROUNDS (1).

`python -m bench shortlist`
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.common import FIXED_LEN, OUT, WARMUP, bleu, decoding_settings, print_machine

SHORTLIST_OUT = OUT / "shortlist"
CASES = (("fixed", "fp32"), ("fixed", "int8"), ("natural", "fp32"))


def main() -> None:
    threads, rounds, source, refs, model = decoding_settings()
    data = Path(os.environ.get("MTKIT_BENCH_DATA") or OUT / "decode" / "data")
    shortlist = _shortlist(model, data)
    print_machine()
    print(f"model: {model}; shortlist: {shortlist}")
    print(f"{len(source)} sentences, beam 5, {threads} threads, best of alternating runs")
    print(f"{'case':<14} {'without':>9} {'with':>9} {'ratio':>6}  pieces a batch, BLEU, load")
    for mode, precision in CASES:
        _compare(mode, precision, model, shortlist, source, refs, threads, rounds)


def _shortlist(model: Path, data: Path) -> Path:
    """The model's shortlist, built once (about a minute on Multi30k, 2 cores)."""
    from mtkit.shortlist import build_shortlist_file

    out = SHORTLIST_OUT / f"{model.stem}-shortlist.npz"
    if not out.exists():
        SHORTLIST_OUT.mkdir(parents=True, exist_ok=True)
        found = build_shortlist_file(data, out, model=model)
        print(
            f"built {out}: valid coverage {found.get('coverage', 0):.2%}, "
            f"{found.get('mean_size', 0):.0f} pieces a sentence"
        )
    return out


def _compare(mode, precision, model, shortlist, source, refs, threads, rounds) -> None:
    without = _runner(model, None, mode, precision, threads)
    with_ = _runner(model, shortlist, mode, precision, threads)
    best = {}
    for side, run in [("without", without), ("with", with_)] * rounds + [("without", without)]:
        seconds, texts, size = run(source)
        if side not in best or seconds < best[side][0]:
            best[side] = (seconds, texts, size)
    speed = {side: len(source) / best[side][0] for side in best}
    scores = f"BLEU {bleu(best['without'][1], refs):.1f} {bleu(best['with'][1], refs):.1f}"
    print(
        f"{mode}-{precision:<8} {speed['without']:9.1f} {speed['with']:9.1f} "
        f"{speed['with'] / speed['without']:5.2f}x  {best['with'][2]:.0f} of "
        f"{best['without'][2]:.0f}, {scores}, load {os.getloadavg()[0]:.1f}",
        flush=True,
    )


def _runner(model: Path, shortlist: Path | None, mode: str, precision: str, threads: int):
    """A function timing translate_lines over lines: (seconds, texts, mean vocabulary)."""
    from mtkit.search import SearchOptions
    from mtkit.translate import stream

    quantize = "int8" if precision == "int8" else "none"
    runtime = stream.RuntimeOptions(
        quantize=quantize, threads=threads, shortlist=None if shortlist is None else str(shortlist)
    )
    translator = stream.load_translator([model], runtime)
    if mode == "fixed":
        options = SearchOptions(beam_size=5, max_len_a=0, max_len_b=FIXED_LEN, min_len=FIXED_LEN)
    else:
        options = SearchOptions(beam_size=5)
    sizes = []
    real = stream._shortlist

    def counted(translator, sources, options):  # the size of each batch's vocabulary
        vocab = real(translator, sources, options)
        sizes.append(translator.vocab_size if vocab is None else len(vocab))
        return vocab

    def run(lines):
        stream._shortlist = counted
        try:
            list(stream.translate_lines(translator, lines[:WARMUP], options))
            sizes.clear()
            start = time.perf_counter()
            texts = [hyps[0][0] for hyps in stream.translate_lines(translator, lines, options)]
            seconds = time.perf_counter() - start
        finally:
            stream._shortlist = real
        return seconds, texts, sum(sizes) / max(1, len(sizes))

    return run


if __name__ == "__main__":
    main()
