"""Translation jobs: one process with 2 threads vs `--workers 2 --threads 1`, and peak RSS
of a resumable job at 1 M and 10 M input lines.

Speed: `mtkit translate -i FILE -o FILE` in a subprocess, as a user runs it, over
test_2016_flickr (1,000 German sentences; MTKIT_BENCH_SENTENCES takes the first N),
at beam 5 and greedy: one process with --threads 2, then --workers 2 --threads 1.
Start-up (processes, torch, model loading, the merge) is measured on a 1-line input
and taken off, so lines/s is the rate a long job runs at; both times are printed.
The model is bench.translate_speed's (bench.common.speed_model): a trained
checkpoint from MTKIT_BENCH_MODEL, or a random-weight transformer-small whose every
output is forced to the mean reference length (the decoder work of a trained model;
the words are noise).

Memory: a resumable job (`-o FILE`, commits every 10,000 lines) over
MTKIT_BENCH_JOB_LINES lines (default "1000000,10000000"; the test set repeated),
greedy with at most 1 target token and a tiny model (bench.common.translate_memory,
as bench.translate_speed's memory run): the work per line is cut, while everything
that could grow with the input (reading, chunks, batches, output, progress) runs.
Peak RSS is the child's VmHWM.

`python -m bench translate_jobs`
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench.common import (
    print_machine,
    run_mtkit,
    speed_model,
    test2016,
    translate_memory,
)


def main() -> None:
    n = int(os.environ.get("MTKIT_BENCH_SENTENCES", "1000"))
    source, refs = test2016(n)
    sizes = os.environ.get("MTKIT_BENCH_JOB_LINES", "1000000,10000000").split(",")
    sizes = [int(x) for x in sizes if x]  # "": no memory runs
    print_machine(f"load average {os.getloadavg()[0]:.1f} (shared)")
    with tempfile.TemporaryDirectory(prefix="mtkit-bench-") as tmp:
        tmp = Path(tmp)
        if n:  # MTKIT_BENCH_SENTENCES=0: no speed runs
            _speed(tmp, source, refs)
        # The memory runs repeat the whole test set, whatever MTKIT_BENCH_SENTENCES says.
        translate_memory(tmp, test2016()[0], sizes, label="resumable job, ")


def _speed(tmp: Path, source: list[str], refs: list[str]) -> None:
    """lines/s of one process with 2 threads and of --workers 2 --threads 1, beam 5 and greedy."""
    model, forced = speed_model(tmp, refs, os.environ.get("MTKIT_BENCH_MODEL"))
    text, one = tmp / "test.de", tmp / "one.de"
    text.write_text("".join(line + "\n" for line in source), encoding="utf-8")
    one.write_text(source[0] + "\n", encoding="utf-8")
    length = ["--max-len-a", "0", "--max-len-b", str(forced), "--min-len", str(forced)]
    for beam in (5, 1):
        for label, flags in (
            ("1 process, 2 threads", ["--threads", "2"]),
            ("--workers 2 --threads 1", ["--workers", "2", "--threads", "1"]),
        ):
            args = ["translate", "-m", model, "-o", tmp / "out.en", "--beam", beam]
            args += [*(length if forced else []), *flags]
            start_up = run_mtkit([*args, "-i", one]).seconds  # processes, torch, model, merge
            seconds = run_mtkit([*args, "-i", text]).seconds
            print(
                f"{'beam 5' if beam == 5 else 'greedy'}, {label}: "
                f"{len(source) / (seconds - start_up):.1f} lines/s after start-up "
                f"({len(source)} lines in {seconds:.1f} s, of which {start_up:.1f} s "
                f"start-up as measured on 1 line; load {os.getloadavg()[0]:.1f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
