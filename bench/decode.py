"""Decoding speed at equal work: mtkit against its own CTranslate2 export, side by side.

One checkpoint (a transformer-small: 3+3 layers, d 256, 4 heads, FFN 1024, 8k joint
SentencePiece on Multi30k de-en, trained briefly so its outputs have natural
lengths), decoded by mtkit (`mtkit.translate.stream.translate_lines`, its default
batching) and by CTranslate2 from `mtkit export` (intra_threads=THREADS,
inter_threads=1, batches of 64 sentences), over the first N sentences of
test_2016_flickr, in the same process:
  - fixed: every output forced to exactly 25 pieces (mtkit min_len = max_len = 25,
    CTranslate2 min/max_decoding_length = 25), so both do the same work;
  - natural: outputs end where the model ends them, with matching search settings
    (ranking by log-probability / length, CTranslate2's length_penalty=1 and mtkit's
    --len-norm; a sentence stops when its best candidate ends, mtkit's --early-stop)
    and the same cap of NATURAL_CAP pieces on both sides (CTranslate2 has no per-source
    limit such as mtkit's --max-len-a, and a briefly trained model loops on a few
    sentences); the pieces per sentence of each side are printed, as is BLEU;
for beam 5 and greedy, float32, int8 (mtkit --quantize int8 against CTranslate2's
compute_type int8) and bf16 (mtkit --precision bf16, the CPU's bf16 units; CTranslate2
has no bf16 on the CPU, so its side of these rows is its fastest, int8). Times cover
tokenizing, decoding and detokenizing 1,000 lines; model load and a 50-sentence
warm-up are excluded on both sides. The runs alternate
A/B/A (mtkit, CTranslate2, mtkit; ROUNDS=2 gives A/B/A/B/A) and each side's best
counts, because the machine is shared; the load average is printed with each row.

Environment: MTKIT_BENCH_MODEL (a checkpoint; default: train one into
bench/out/decode/, about 20 minutes on 2 cores, then reuse it), MTKIT_BENCH_SENTENCES
(1000), MTKIT_BENCH_THREADS (2), MTKIT_BENCH_ROUNDS (1), MTKIT_BENCH_CASES (e.g.
"fixed-beam5-fp32,natural-greedy-bf16"; default all twelve), MTKIT_BENCH_CT2_PASSIVE=1
(CTranslate2 also with mtkit's OpenMP waiting, see mtkit.device.set_native_defaults).

`python -m bench decode`
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.common import (
    FIXED_LEN,
    OUT,
    WARMUP,
    Counting,
    bleu,
    decoding_settings,
    print_machine,
)

NATURAL_CAP = 64
CT2_BATCH = 64
# The variables by which mtkit.device.set_native_defaults sets how OpenMP threads wait.
OPENMP_WAITING = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def main() -> None:
    _wait_policies()
    threads, rounds, source, refs, model = decoding_settings()
    export = _export(model)
    print_machine()
    print(f"model: {model}; CTranslate2 export: {export}")
    print(f"{len(source)} sentences, {threads} threads, best of alternating runs (A/B/A)")
    print(f"{'case':<24} {'mtkit':>9} {'CT2':>9} {'ratio':>6}  pieces/sent mtkit CT2, BLEU, load")
    for case in _cases():
        _compare(case, model, export, source, refs, threads, rounds)


def _wait_policies() -> None:
    """Each side with its own default OpenMP waiting: mtkit's (set when mtkit is
    imported, before torch) for torch's libgomp, and CTranslate2's own for the OpenMP
    it bundles, which reads the environment when ctranslate2 is imported."""
    user_set = any(key in os.environ for key in OPENMP_WAITING)
    import importlib

    importlib.import_module("mtkit.device").set_native_defaults()  # mtkit's default, then
    importlib.import_module("torch")  # torch's libgomp reads it as it loads
    mtkit_policy = _policy()
    if not user_set and not os.environ.get("MTKIT_BENCH_CT2_PASSIVE"):
        for key in OPENMP_WAITING:
            os.environ.pop(key, None)
    import ctranslate2  # noqa: F401

    print(f"OpenMP waiting: mtkit {mtkit_policy}, CTranslate2 {_policy()}")


def _policy() -> str:
    return " ".join(f"{k}={os.environ.get(k, 'unset')}" for k in OPENMP_WAITING)


def _cases() -> list[tuple[str, int, str]]:
    """(length mode, beam, precision) for the cases asked for, in table order."""
    every = [
        (mode, beam, precision)
        for mode in ("fixed", "natural")
        for precision in ("fp32", "int8", "bf16")
        for beam in (5, 1)
    ]
    asked = os.environ.get("MTKIT_BENCH_CASES")
    if not asked:
        return every
    names = {_name(c): c for c in every}
    return [names[name] for name in asked.split(",")]


def _name(case) -> str:
    mode, beam, precision = case
    return f"{mode}-{'greedy' if beam == 1 else f'beam{beam}'}-{precision}"


# -- the export --------------------------------------------------------------------


def _export(model: Path) -> Path:
    from mtkit.interop.ctranslate2 import ExportOptions, export_ctranslate2

    out = OUT / "decode" / "ct2"
    out.parent.mkdir(parents=True, exist_ok=True)  # a given MTKIT_BENCH_MODEL: nothing made it
    export_ctranslate2(model, out, ExportOptions(force=True))
    return out


# -- one case ----------------------------------------------------------------------


def _compare(case, model, export, source, refs, threads, rounds) -> None:
    mode, beam, precision = case
    ours = _mtkit_runner(model, beam, mode, precision, threads)
    theirs = _ct2_runner(export, beam, mode, precision, threads)
    best = {"mtkit": None, "ct2": None}
    # A/B/A: mtkit, CTranslate2, mtkit (ROUNDS=2: A/B/A/B/A), the best of each side.
    for side, run in [("mtkit", ours), ("ct2", theirs)] * rounds + [("mtkit", ours)]:
        seconds, out = run(source)
        if best[side] is None or seconds < best[side][0]:
            best[side] = (seconds, out)
    (t_ours, out_ours), (t_theirs, out_theirs) = best["mtkit"], best["ct2"]
    speed_ours, speed_theirs = len(source) / t_ours, len(source) / t_theirs
    pieces = [out[1] / len(source) for out in (out_ours, out_theirs)]
    scores = f"BLEU {bleu(out_ours[0], refs):.1f} {bleu(out_theirs[0], refs):.1f}"
    print(
        f"{_name(case):<24} {speed_ours:9.1f} {speed_theirs:9.1f} {speed_ours / speed_theirs:5.2f}x"
        f"  {pieces[0]:.1f} {pieces[1]:.1f} {scores} load {os.getloadavg()[0]:.1f}",
        flush=True,
    )


def _mtkit_runner(model: Path, beam: int, mode: str, precision: str, threads: int):
    """A function timing mtkit over lines: (seconds, (texts, target pieces))."""
    from mtkit.search import SearchOptions
    from mtkit.translate.stream import RuntimeOptions, load_translator, translate_lines

    quantize = "int8" if precision == "int8" else "none"
    runtime = RuntimeOptions(
        device="cpu",
        precision="bf16" if precision == "bf16" else "fp32",
        quantize=quantize,
        threads=threads,
    )
    translator = load_translator([model], runtime)
    if mode == "fixed":
        options = SearchOptions(beam_size=beam, max_len_a=0, max_len_b=FIXED_LEN, min_len=FIXED_LEN)
    else:
        options = SearchOptions(
            beam_size=beam, max_len_a=0, max_len_b=NATURAL_CAP, len_norm=True, early_stop=True
        )
    translator.tgt_tokenizer = counter = Counting(translator.tgt_tokenizer)

    def run(lines):
        list(translate_lines(translator, lines[:WARMUP], options))
        counter.pieces = 0
        start = time.perf_counter()
        texts = [hyps[0][0] for hyps in translate_lines(translator, lines, options)]
        return time.perf_counter() - start, (texts, counter.pieces)

    return run


def _ct2_runner(export: Path, beam: int, mode: str, precision: str, threads: int):
    """A function timing CTranslate2 over lines: (seconds, (texts, target pieces))."""
    import ctranslate2
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(export / "spm.model"))
    translator = ctranslate2.Translator(
        str(export),
        device="cpu",
        # No CPU bf16 in CTranslate2 (its CPU types: float32, int8, int8_float32, int16):
        # mtkit's bf16 rows meet its fastest, int8.
        compute_type="float32" if precision == "fp32" else "int8",
        intra_threads=threads,
        inter_threads=1,
    )
    if mode == "fixed":
        lengths = dict(min_decoding_length=FIXED_LEN, max_decoding_length=FIXED_LEN)
    else:
        lengths = dict(max_decoding_length=NATURAL_CAP, length_penalty=1.0)

    def translate(lines):
        results = translator.translate_batch(
            sp.encode(lines, out_type=str),
            max_batch_size=CT2_BATCH,
            beam_size=beam,
            suppress_sequences=[["<pad>"], ["<s>"]],  # mtkit never produces them
            **lengths,
        )
        hyps = [r.hypotheses[0] for r in results]
        return [sp.decode(h) for h in hyps], sum(len(h) for h in hyps)

    def run(lines):
        translate(lines[:WARMUP])
        start = time.perf_counter()
        out = translate(lines)
        return time.perf_counter() - start, out

    return run


if __name__ == "__main__":
    main()
