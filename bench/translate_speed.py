"""Translation speed and memory: sentences/s and target tokens/s, and peak RSS on 1 M lines.

Speed: test_2016_flickr (1,000 German sentences) through `mtkit.translate`'s own
path (encode, sort, batch, search, decode, reorder), at beam 5 and greedy, on the
CPU with MTKIT_BENCH_THREADS threads (default 2; "2,1" for both) in fp32 and
with --quantize int8 (and in bf16 with --bf16), and on CUDA in bf16 when there is
one. Target tokens are the pieces the search produced (eos not counted), at a
256-token cap (max_len_a=0, max_len_b=256) as in the OpenNMT-py and CTranslate2 figures of issue 4.

The model: MTKIT_BENCH_MODEL=path/to/checkpoint.pt (a trained de-en
transformer-small; BLEU is then printed too); MTKIT_BENCH_SENTENCES takes the
first N test sentences only. Without one, a transformer-small
with random weights and a SentencePiece model trained here on Multi30k, every
output forced to the mean reference length (min_len = max_len), which the output
says: the decoder work per sentence is then that of a trained model, the words
are noise.

Memory: `mtkit translate` in a subprocess over MTKIT_BENCH_LINES (default
1,000,000) lines (the test set repeated), greedy with at most 1 target token and
a tiny model (d_model 32, one layer each side, 500 pieces): the work per
line is cut so the run takes minutes, while everything that could grow with the
input (reading, chunks, sorting, batches, output) is exercised. Peak RSS is
compared with the same run over 10,000 lines.

`python -m bench translate_speed [--device cuda] [--model CKPT] [--no-memory] ...`
(`--help`); MTKIT_BENCH_* give the defaults.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from pathlib import Path

from bench.common import (
    Counting,
    bleu,
    print_machine,
    speed_model,
    test2016,
    translate_memory,
)

CAP = 256


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench translate_speed")
    env = os.environ.get
    parser.add_argument(
        "--device", action="append", choices=("cpu", "cuda"),
        help="repeat for several; default: cpu, and cuda when there is one",
    )  # fmt: skip
    # Several counts, e.g. "2,1": on a machine shared with other jobs two threads
    # that spin-wait for each other can be slower than one.
    parser.add_argument("--threads", default=env("MTKIT_BENCH_THREADS", "2"), help="e.g. 2,1")
    parser.add_argument("--sentences", type=int, default=int(env("MTKIT_BENCH_SENTENCES", "1000")))
    parser.add_argument("--model", default=env("MTKIT_BENCH_MODEL"), help="a trained checkpoint")
    parser.add_argument("--cap", type=int, default=CAP, help="target pieces at most")
    parser.add_argument("--bf16", action="store_true", help="also the CPU's bf16 rows")
    parser.add_argument("--no-int8", action="store_true", help="leave out the CPU's int8 rows")
    parser.add_argument("--no-memory", action="store_true", help="leave out the 1 M-line run")
    parser.add_argument("--summary", action="store_true", help="also one 'RESULT:' line a row")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import torch

    args = parse_args(argv)
    thread_counts = [int(n) for n in args.threads.split(",")]
    devices = args.device or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    source, refs = test2016(args.sentences)
    with tempfile.TemporaryDirectory(prefix="mtkit-bench-") as tmp:
        model_path, forced = speed_model(Path(tmp), refs, args.model)
        print_machine(f"load average {os.getloadavg()[0]:.1f} (shared)")
        print(f"model: {model_path if not forced else 'transformer-small, random weights'}")
        if forced:
            print(f"  every output forced to {forced} pieces (the mean reference length)")
        speed = functools.partial(
            _speed, model_path, source, refs, forced=forced, cap=args.cap, summary=args.summary
        )
        for device in devices:
            if device == "cuda":
                speed("cuda", 1)
                continue
            for threads in thread_counts:
                speed("cpu", threads, precision="fp32")
                if not args.no_int8:
                    speed("cpu", threads, precision="fp32", quantize="int8")
                if args.bf16:
                    speed("cpu", threads, precision="bf16")
        if not args.no_memory:
            lines = int(os.environ.get("MTKIT_BENCH_LINES", "1000000"))
            translate_memory(Path(tmp), source, [10_000, lines])


# -- speed -----------------------------------------------------------------------


def _speed(
    model_path,
    source,
    refs,
    device,
    threads,
    *,
    forced,
    cap=CAP,
    precision="auto",
    quantize="none",
    summary=False,
) -> None:
    from mtkit.search import SearchOptions
    from mtkit.translate.stream import RuntimeOptions, load_translator, translate_lines

    runtime = RuntimeOptions(device=device, precision=precision, quantize=quantize, threads=threads)
    translator = load_translator([model_path], runtime)
    counter = Counting(translator.tgt_tokenizer)
    translator.tgt_tokenizer = counter
    where = f"{device}" + (f" {threads} threads" if device == "cpu" else "")
    where += f", {str(translator.dtype).removeprefix('torch.')}"
    where += ", int8 linears" if quantize == "int8" else ""
    for beam in (5, 1):
        options = SearchOptions(
            beam_size=beam, max_len_a=0, max_len_b=forced or cap, min_len=forced
        )
        list(translate_lines(translator, source[:50], options))  # warm-up
        counter.pieces = 0
        start = time.perf_counter()
        out = [hyps[0][0] for hyps in translate_lines(translator, source, options)]
        seconds = time.perf_counter() - start
        score = "" if forced else f", BLEU {bleu(out, refs):.1f}"
        print(
            f"{where}, {'beam 5' if beam == 5 else 'greedy'}: "
            f"{len(source) / seconds:.1f} sentences/s, {counter.pieces / seconds:,.0f} target "
            f"tokens/s ({counter.pieces / len(source):.1f} a sentence, {seconds:.1f} s{score}; "
            f"load {os.getloadavg()[0]:.1f})",
            flush=True,
        )
        if summary:
            name = "beam 5" if beam == 5 else "greedy"
            print(f"RESULT: {name}: {len(source) / seconds:,.1f} sentences/s ({where}{score})")


if __name__ == "__main__":
    main()
