"""Start-up at WMT size: prepare, train-bpe, and the first and second `train` start.

Builds a synthetic corpus of --pairs pairs (default 4.5 M, WMT14 en-de's size)
by joining two random Multi30k sentences per side (about 26 words a side), then
runs, each as a real command in its own process(es):

- `mtkit prepare` (wall time, peak RSS) and `mtkit train-bpe --vocab-size 32000`;
- `mtkit train` (transformer-small) in 1 process, then 2 processes (torchrun,
  gloo): the first start (cold: no DATA/.encoded, which it then builds) and a
  second start (`--resume`, as the recipes run it, mapping DATA/.encoded):
  seconds from launch to the first update's metrics line, and each training
  process's peak RSS (its VmHWM at its end, bench.common; the update included);
- the time one transformer-big checkpoint save blocks the training loop on the
  CPU (model, Adam state, one update done first).

    python -m bench scale --pairs 500000 [--keep DIR] [--skip-stall] [--processes 1,2]
    MTKIT_BENCH_PAIRS=500000 make bench

The machine may be shared: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    MULTI30K,
    Child,
    in_fresh_process,
    load_line,
    print_machine,
    read_lines,
    run_mtkit,
)

VOCAB = 32000
VALID_LINES = 200
POLL = 0.1  # seconds between reads of the run's metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__)
    pairs = int(os.environ.get("MTKIT_BENCH_PAIRS", 4_500_000))  # `make bench` passes no options
    parser.add_argument(
        "--pairs", type=int, default=pairs, help="corpus size (default %(default)s)"
    )
    parser.add_argument("--keep", type=Path, help="work in DIR and keep it (default: a temp dir)")
    parser.add_argument("--skip-stall", action="store_true", help="no transformer-big save")
    parser.add_argument("--processes", default="1,2", help="process counts to start, e.g. 1,2")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="mtkit-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    print_machine()
    try:
        print(load_line("before"), flush=True)
        data, spm = build_inputs(root, args.pairs)
        for n in (int(x) for x in args.processes.split(",") if x):
            for start in ("first", "second"):
                figures = start_train(root, data, spm, n, resume=start == "second")
                print(_start_line(n, start, figures), flush=True)
        if not args.skip_stall:
            print(checkpoint_stall(root, data, spm), flush=True)
        print(load_line("after"), flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


def build_inputs(root: Path, pairs: int) -> tuple[Path, Path]:
    """Raw text, `mtkit prepare` into root/data, `mtkit train-bpe` into root/data/spm."""
    raw = root / "raw"
    data = root / "data"
    if not (raw / "train.en").exists():
        began = time.perf_counter()
        synthesize(raw, pairs)
        print(f"synthetic corpus: {pairs:,} pairs in {time.perf_counter() - began:.1f} s")
    if not (data / "manifest.json").exists():
        shutil.rmtree(data, ignore_errors=True)
        prepare = ["prepare", "-o", data, "--src", "de", "--tgt", "en"]
        prepare += ["--src-file", raw / "train.de", "--tgt-file", raw / "train.en"]
        prepare += ["--valid-src-file", raw / "valid.de", "--valid-tgt-file", raw / "valid.en"]
        prepare += ["--no-dedup", "--max-ratio", "0", "--max-len", "0"]
        run = run_mtkit(prepare)
        print(f"prepare: {run.seconds:.1f} s, peak RSS {run.peak_mb:,.0f} MB")
    spm = data / "spm" / "spm.model"
    if not spm.exists():
        bpe = ["train-bpe", "-i", data / "train.de", "-i", data / "train.en"]
        bpe += ["--vocab-size", str(VOCAB), "-o", data / "spm"]
        run = run_mtkit(bpe)
        print(f"train-bpe ({VOCAB} pieces): {run.seconds:.1f} s, peak RSS {run.peak_mb:,.0f} MB")
    return data, spm


def synthesize(raw: Path, pairs: int, seed: int = 0) -> None:
    """train.{de,en}: each line two random Multi30k pairs joined; valid: Multi30k's val."""
    raw.mkdir(parents=True, exist_ok=True)
    sides = {}
    for lang in ("de", "en"):
        sides[lang] = read_lines(MULTI30K / f"train.{lang}.gz")
        valid = read_lines(MULTI30K / f"val.{lang}.gz", VALID_LINES)
        (raw / f"valid.{lang}").write_text("\n".join(valid) + "\n", encoding="utf-8")
    rng = random.Random(seed)
    n = len(sides["de"])
    with open(raw / "train.de", "w") as de, open(raw / "train.en", "w") as en:
        for start in range(0, pairs, 10_000):
            picks = [
                (rng.randrange(n), rng.randrange(n)) for _ in range(min(10_000, pairs - start))
            ]
            de.write("".join(f"{sides['de'][a]} {sides['de'][b]}\n" for a, b in picks))
            en.write("".join(f"{sides['en'][a]} {sides['en'][b]}\n" for a, b in picks))


def train_args(data: Path, spm: Path, out: Path, resume: bool) -> list[str]:
    args = ["train", "--data", str(data), "--spm", str(spm), "--out", str(out)]
    args += ["--arch", "transformer-small", "--device", "cpu", "--threads", "1"]
    args += ["--log-every", "1", "--valid-bleu-sentences", "4", "--warmup", "10"]
    args += ["--max-updates", "2" if resume else "1"]
    return args + (["--resume"] if resume else [])


def start_train(root: Path, data: Path, spm: Path, processes: int, resume: bool) -> dict:
    """Launch `mtkit train`; seconds until its first new update is logged, peak RSS per rank."""
    out = root / f"run-{processes}"
    if not resume:  # a cold start: no run and no encoded corpus
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(data / ".encoded", ignore_errors=True)
    launcher = []
    if processes > 1:
        launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
        launcher += ["--master_port", str(_free_port())]
    child = Child(train_args(data, spm, out, resume), threads=1, launcher=launcher)
    want = 2 if resume else 1
    first_update = None
    while child.running():
        if first_update is None and _logged_step(out / "metrics.jsonl") >= want:
            first_update = time.perf_counter() - child.began
        time.sleep(POLL)
    run = child.wait()
    if run.code != 0:
        raise RuntimeError(f"train ({processes} processes) failed:\n{run.stderr[-3000:]}")
    if first_update is None:  # finished between two polls
        first_update = run.seconds
    return {"first_update_s": first_update, "peak_rss_mb": run.peaks_mb}


def _logged_step(metrics: Path) -> int:
    try:
        lines = metrics.read_text().splitlines()
    except OSError:
        return 0
    steps = [json.loads(line).get("step", 0) for line in lines if line.strip().endswith("}")]
    return max(steps, default=0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_line(processes: int, start: str, figures: dict) -> str:
    rss = ", ".join(f"{mb:,.0f}" for mb in figures["peak_rss_mb"])
    return (
        f"train, {processes} process{'es' if processes > 1 else ''}, {start} start: "
        f"first update after {figures['first_update_s']:.1f} s, peak RSS per process {rss} MB"
    )


def checkpoint_stall(root: Path, data: Path, spm: Path) -> str:
    """How long one transformer-big save blocks the loop, measured in a fresh process."""
    small = root / "stall-data"
    small.mkdir(exist_ok=True)
    for name in ("train.de", "train.en", "valid.de", "valid.en", "manifest.json"):
        with open(data / name, "rb") as file:
            head = b"".join(line for _, line in zip(range(200), file, strict=False))
        (small / name).write_bytes(head if name != "manifest.json" else (data / name).read_bytes())
    shutil.rmtree(root / "stall-run", ignore_errors=True)
    return in_fresh_process(stall, str(small), str(spm), str(root))


def stall(data: str, spm: str, root: str) -> str:
    """In its own process: one transformer-big update, then time Trainer._save; the line
    that says so."""
    import logging

    # The truncated copy's files differ from the checksums its manifest keeps: expected.
    logging.getLogger("mtkit").setLevel(logging.ERROR)
    from mtkit import distributed
    from mtkit.train import TrainConfig
    from mtkit.train.setup import build_trainer

    config = TrainConfig(
        data=data, spm=spm, out=f"{root}/stall-run", arch="transformer-big", device="cpu"
    )
    config.max_tokens, config.warmup = 256, 10
    trainer = build_trainer(config, distributed.setup("cpu"))
    trainer.train_step([0])
    figures = []
    for _ in range(2):  # the first save allocates host memory; later ones reuse it (new code)
        trainer.train_step([0])
        began = time.perf_counter()
        trainer._save(numbered=True)
        blocked = time.perf_counter() - began
        wait = getattr(getattr(trainer, "files", None), "wait", None)
        if wait:  # a background writer: how long until the files are complete
            wait()
        figures.append((blocked, time.perf_counter() - began))
    sizes = sum(p.stat().st_size for p in Path(config.out).glob("checkpoint_*.pt"))
    return (
        "transformer-big checkpoint save on the CPU, loop blocked (files complete after): "
        + ", then ".join(f"{b:.2f} s ({w:.2f} s)" for b, w in figures)
        + f"; {sizes / 2**30:.2f} GiB on disk"
    )


if __name__ == "__main__":
    main()
