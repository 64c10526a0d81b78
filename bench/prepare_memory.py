"""Peak memory and throughput of `mtkit prepare` on generated corpora of 1 M and 4 M pairs.

Shows that prepare streams: its peak RSS must not grow with the corpus, apart
from the duplicate filter's 8 bytes a unique pair (so one run per size also goes
with --no-dedup). Each run is `mtkit prepare` in a subprocess (bench.common.run_mtkit):
its peak RSS is its own VmHWM, its CPU time from os.wait4.

    python -m bench prepare_memory                      # 1 M and 4 M pairs, plain text
    python -m bench.prepare_memory --sizes 200000 --gzip
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

from bench.common import print_machine, run_mtkit

WORDS = 50_000  # vocabulary of made-up words, drawn Zipf-like
POOL = 100_000  # distinct sentence bodies per side; a serial number makes each line unique
DUPLICATES = 0.02  # share of pairs that repeat an earlier pair exactly
WIDTHS = (10, 6, 9, 7, 7, 11)  # the table's columns


def _vocabulary(rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyzäöüß"
    return ["".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(WORDS)]


def _pool(rng: random.Random) -> tuple[list[str], list[str]]:
    """Sentence bodies: lognormal lengths around 22 words (WMT news is 20-25), the target
    side 0.8-1.25 times the source, and a long tail past 250 words for the filter."""
    vocab = _vocabulary(rng)
    cumulative = list(itertools.accumulate(1 / (rank + 1) for rank in range(WORDS)))
    src, tgt = [], []
    for _ in range(POOL):
        n = max(1, min(400, int(rng.lognormvariate(3.0, 0.6))))
        m = max(1, int(n * rng.uniform(0.8, 1.25)))
        words = rng.choices(vocab, cum_weights=cumulative, k=n + m)
        src.append(" ".join(words[:n]))
        tgt.append(" ".join(words[n:]).capitalize())
    return src, tgt


def generate(
    directory: Path, pairs: int, pool: tuple[list[str], list[str]], *, compress: bool, seed: int = 0
) -> tuple[Path, Path]:
    """Write `pairs` parallel lines to train.src / train.tgt (.gz when compress) in `directory`."""
    rng = random.Random(seed)
    pool_src, pool_tgt = pool
    suffix = ".gz" if compress else ""
    paths = directory / f"train.src{suffix}", directory / f"train.tgt{suffix}"

    def opener(path):
        if compress:
            return gzip.open(path, "wt", encoding="utf-8", compresslevel=1)
        return open(path, "w", encoding="utf-8")

    with opener(paths[0]) as src_file, opener(paths[1]) as tgt_file:
        for start in range(0, pairs, 10_000):
            src_lines, tgt_lines = [], []
            for i in range(start, min(pairs, start + 10_000)):
                j = rng.randrange(i) if i and rng.random() < DUPLICATES else i
                k = (j * 2_654_435_761) % POOL  # the same body for a repeated pair
                src_lines.append(f"{pool_src[k]} {j}\n")
                tgt_lines.append(f"{pool_tgt[k]} {j}.\n")
            src_file.writelines(src_lines)
            tgt_file.writelines(tgt_lines)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="1000000,4000000", help="pairs per corpus, comma-separated"
    )
    parser.add_argument("--gzip", action="store_true", help="write the corpora gzip-compressed")
    parser.add_argument("--dedup", default="on,off", help="runs with the duplicate filter on, off")
    parser.add_argument("--keep", type=Path, help="generate under this directory and keep it")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    base = args.keep or Path(tempfile.mkdtemp(prefix="mtkit-bench-"))
    pool = _pool(random.Random(0))
    print_machine()
    header = ("pairs", "dedup", "peak RSS", "wall s", "cpu s", "pairs/cpu-s")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, WIDTHS, strict=True)), " kept")
    try:
        for size in sizes:
            corpus = base / f"corpus-{size}"
            corpus.mkdir(parents=True, exist_ok=True)
            src, tgt = generate(corpus, size, pool, compress=args.gzip)
            for state in args.dedup.split(","):
                dedup = "--dedup" if state == "on" else "--no-dedup"
                out = corpus / f"out{dedup}"
                files = ["--src-file", src, "--tgt-file", tgt, "--out", out]
                figures = run_mtkit(["prepare", "--src", "xx", "--tgt", "yy", *files, dedup])
                manifest = json.loads((out / "manifest.json").read_text())
                kept = manifest["splits"]["train"]["pairs"]
                cells = (
                    f"{size:,}",
                    state,
                    f"{figures.peak_mb:.0f}MB",
                    f"{figures.seconds:.1f}",
                    f"{figures.cpu:.1f}",  # wall time is at the mercy of other jobs; CPU less so
                    f"{size / figures.cpu:,.0f}",
                )
                row = " ".join(f"{c:>{w}}" for c, w in zip(cells, WIDTHS, strict=True))
                print(row, f" {kept:,}", flush=True)
            if not args.keep:
                shutil.rmtree(corpus)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
