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
import dataclasses
import functools
import gzip
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MULTI30K = Path(os.environ.get("MTKIT_MULTI30K", REPO.parent / "shared" / "data" / "multi30k"))
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
    source = _read(MULTI30K / "test_2016_flickr.de.gz")[: args.sentences]
    refs = _read(MULTI30K / "test_2016_flickr.en.gz")[: args.sentences]
    with tempfile.TemporaryDirectory(prefix="mtkit-bench-") as tmp:
        model_path, forced = _model(Path(tmp), refs, args.model)
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (shared)")
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
            _memory(Path(tmp), source)


def _read(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as file:
        return [line.rstrip("\n") for line in file]


# -- the model -------------------------------------------------------------------


def _model(tmp: Path, refs: list[str], given: str | None) -> tuple[Path, int]:
    """(checkpoint path, forced output length or 0 for a trained model)."""
    if given:
        return Path(given), 0
    spm = _train_spm(tmp / "spm")
    from mtkit.tokenizer import Tokenizer

    pieces = Tokenizer.from_bytes(spm).encode(refs)
    forced = round(statistics.mean(len(p) for p in pieces))
    return _random_checkpoint(tmp / "random.pt", spm, "transformer-small"), forced


def _train_spm(out_dir: Path, vocab_size: int = 8000) -> bytes:
    """A joint BPE model on Multi30k's training text, as train-bpe makes it."""
    from mtkit.tokenizer import SpmOptions, train_spm

    inputs = [MULTI30K / "train.de.gz", MULTI30K / "train.en.gz"]
    (path,) = train_spm(inputs, out_dir, SpmOptions(vocab_size=vocab_size))
    return path.read_bytes()


def _random_checkpoint(path: Path, spm: bytes, preset: str, **overrides) -> Path:
    import torch

    from mtkit.checkpoint import save_checkpoint
    from mtkit.models import build_model
    from mtkit.models.config import preset_config

    torch.manual_seed(0)
    config = dataclasses.replace(preset_config(preset), dropout=0.0, **overrides)
    model = build_model(config)
    payload = {
        "model_config": dataclasses.asdict(config),
        "model": model.state_dict(),
        "spm": {"src": spm, "tgt": spm},
        "langs": {"src": "de", "tgt": "en"},
        "train_config": {"note": "random weights for benchmarks"},
        "step": 0,
        "epoch": 0,
        "metrics": {},
    }
    return save_checkpoint(path, payload)


# -- speed -----------------------------------------------------------------------


class _Counting:
    """A tokenizer proxy that counts the target pieces it is asked to decode."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.pieces = tokenizer, 0

    def decode(self, ids):
        ids = list(ids)
        self.pieces += sum(len(x) for x in ids)
        return self.tokenizer.decode(ids)


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
    counter = _Counting(translator.tgt_tokenizer)
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
        bleu = "" if forced else f", BLEU {_bleu(out, refs):.1f}"
        print(
            f"{where}, {'beam 5' if beam == 5 else 'greedy'}: "
            f"{len(source) / seconds:.1f} sentences/s, {counter.pieces / seconds:,.0f} target "
            f"tokens/s ({counter.pieces / len(source):.1f} a sentence, {seconds:.1f} s{bleu}; "
            f"load {os.getloadavg()[0]:.1f})",
            flush=True,
        )
        if summary:
            name = "beam 5" if beam == 5 else "greedy"
            print(f"RESULT: {name}: {len(source) / seconds:,.1f} sentences/s ({where}{bleu})")


def _bleu(hyps: list[str], refs: list[str]) -> float:
    import sacrebleu

    return sacrebleu.corpus_bleu(hyps, [refs]).score


# -- memory ----------------------------------------------------------------------


def _memory(tmp: Path, source: list[str]) -> None:
    tiny = _random_checkpoint(
        tmp / "tiny.pt", _train_spm(tmp / "tiny-spm", vocab_size=500), "transformer-small",
        d_model=32, n_heads=2, d_ff=64, enc_layers=1, dec_layers=1, src_vocab_size=500,
        tgt_vocab_size=500,
    )  # fmt: skip
    lines = int(os.environ.get("MTKIT_BENCH_LINES", "1000000"))
    for n in (10_000, lines):
        path = tmp / f"in.{n}.de"
        with open(path, "w", encoding="utf-8") as file:
            for i in range(n):
                file.write(source[i % len(source)] + "\n")
        # One thread: on a shared machine two spinning threads were 17x slower here,
        # and the thread count does not change what is held in memory.
        rss, seconds, out_lines = _run_translate(tiny, path, tmp / "out.en", threads=1)
        print(
            f"memory: {n:,} lines -> {out_lines:,} lines, peak RSS {rss / 2**20:.0f} MiB, "
            f"{seconds:.0f} s ({n / seconds:,.0f} lines/s; tiny model, vocab 500, greedy, "
            f"<= 1 target token)",
            flush=True,
        )
        path.unlink()


# The child's own peak: Linux's VmHWM belongs to the process image, while ru_maxrss
# carries over the forking parent's peak across exec (the bench's own ~600 MiB).
_PEAK_RSS = (
    "next((l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')), None) "
    "or __import__('resource').getrusage(__import__('resource').RUSAGE_SELF).ru_maxrss"
)


def run_translate(args: list[str]) -> tuple[int, float]:
    """(peak RSS in bytes, seconds) of `mtkit translate ARGS` in a child process."""
    command = [
        sys.executable, "-c",
        "import sys; from mtkit.cli import main; sys.argv[0] = 'mtkit'\n"
        f"try:\n    main()\nfinally:\n    print({_PEAK_RSS}, file=sys.stderr)",
        "translate", *args,
    ]  # fmt: skip
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise RuntimeError(f"mtkit translate failed: {run.stderr[-2000:]}")
    return int(run.stderr.strip().splitlines()[-1].split()[-1]) * 1024, seconds


def _run_translate(model: Path, source: Path, target: Path, threads: int):
    """Peak RSS (bytes), seconds and output lines of `mtkit translate` in a child process."""
    rss, seconds = run_translate(
        ["-m", str(model), "-i", str(source), "-o", str(target), "--beam", "1",
         "--max-len-a", "0", "--max-len-b", "1", "--threads", str(threads)]
    )  # fmt: skip
    with open(target, "rb") as file:
        out_lines = sum(1 for _ in file)
    return rss, seconds, out_lines


if __name__ == "__main__":
    main()
