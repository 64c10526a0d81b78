"""`mtkit prepare` with and without --langid on 1 M pairs of repeated Multi30k de-en lines.

Language ID is the slow part of a filtered prepare (fastText lid.176 takes about
15 µs a line a core, a batch a call), so it runs in worker processes while the main
process reads, cleans and writes. This times both runs (each `python -m mtkit
prepare` in a subprocess, --no-dedup so every pair is classified) and prints the
ratio, the cores, the CPU and the load average (other jobs) beside them, and the
CPU seconds language ID adds, the figure least moved by other jobs: the ratio
falls as cores are added.

    python -m bench prepare_langid                        # 1 M pairs
    python -m bench.prepare_langid --pairs 100000 --workers 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench.common import MULTI30K, print_machine, read_lines, repeat_lines, run_mtkit


def write_corpus(directory: Path, pairs: int) -> tuple[Path, Path]:
    """train.de / train.en: Multi30k's 29,000 training pairs repeated up to `pairs`."""
    lines = {lang: read_lines(MULTI30K / f"train.{lang}.gz") for lang in ("de", "en")}
    return tuple(repeat_lines(directory / f"train.{k}", v, pairs) for k, v in lines.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=0, help="--langid-workers (0: one a core)")
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    cores = len(os.sched_getaffinity(0))
    print_machine(f"{cores} usable", f"{args.pairs:,} pairs (Multi30k de-en repeated)")
    base = Path(tempfile.mkdtemp(prefix="mtkit-bench-langid-"))
    try:
        src, tgt = write_corpus(base, args.pairs)
        runs = {
            "without --langid": ["--no-dedup"],
            "with --langid": ["--no-dedup", "--langid", "--langid-workers", str(args.workers)],
        }
        times, cpu = {}, {}
        head = f"{'run':>18} {'wall s':>8} {'cpu s':>8} {'pairs/s':>9} {'kept':>10}"
        print(f"{head} {'load before, after':>19}")
        for name, extra in runs.items():
            out = base / name.replace(" ", "_")
            load = os.getloadavg()[0]  # other jobs' share of the cores, beside the figure
            files = ["--src-file", src, "--tgt-file", tgt, "--out", out]
            figures = run_mtkit(["prepare", "--src", "de", "--tgt", "en", *files, *extra])
            kept = json.loads((out / "manifest.json").read_text())["splits"]["train"]["pairs"]
            times[name], cpu[name] = figures.seconds, figures.cpu
            print(
                f"{name:>18} {figures.seconds:>8.1f} {figures.cpu:>8.1f} "
                f"{args.pairs / figures.seconds:>9,.0f} {kept:>10,} "
                f"{load:>14.1f}, {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        ratio = times["with --langid"] / times["without --langid"]
        print(f"--langid takes {ratio:.1f}x the time of prepare without it on {cores} cores")
        lid_cpu = (cpu["with --langid"] - cpu["without --langid"]) / args.pairs * 1e6
        print(f"language ID: {lid_cpu:.1f} CPU seconds a million pairs (all processes' user+sys)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
