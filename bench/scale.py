"""Start-up at WMT size: prepare, train-bpe, and the first and second `train` start.

Builds a synthetic corpus of --pairs pairs (default 4.5 M, WMT14 en-de's size)
by joining two random Multi30k sentences per side (about 26 words a side), then
runs, each as a real command in its own process(es):

- `mtkit prepare` (wall time, peak RSS) and `mtkit train-bpe --vocab-size 32000`;
- `mtkit train` (transformer-small) in 1 process, then 2 processes (torchrun,
  gloo): the first start (cold: no DATA/.encoded, which it then builds) and a
  second start (`--resume`, as the recipes run it, mapping DATA/.encoded):
  seconds from launch to the first update's metrics line, and each training
  process's peak RSS (VmHWM, polled from /proc; it includes the update itself);
- the time one transformer-big checkpoint save blocks the training loop on the
  CPU (model, Adam state, one update done first).

    python -m bench scale --pairs 500000 [--keep DIR] [--skip-stall] [--processes 1,2]
    MTKIT_BENCH_PAIRS=500000 make bench

The machine may be shared: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MULTI30K = Path(os.environ.get("MTKIT_MULTI30K", REPO.parent / "shared" / "data" / "multi30k"))
VOCAB = 32000
VALID_LINES = 200
POLL = 0.1  # seconds between /proc reads


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
    try:
        _load("before")
        data, spm = build_inputs(root, args.pairs)
        for n in (int(x) for x in args.processes.split(",") if x):
            for start in ("first", "second"):
                figures = start_train(root, data, spm, n, resume=start == "second")
                print(_start_line(n, start, figures), flush=True)
        if not args.skip_stall:
            print(checkpoint_stall(root, data, spm), flush=True)
        _load("after")
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
        seconds, rss = run_measured(prepare)
        print(f"prepare: {seconds:.1f} s, peak RSS {rss:,.0f} MB")
    spm = data / "spm" / "spm.model"
    if not spm.exists():
        bpe = ["train-bpe", "-i", data / "train.de", "-i", data / "train.en"]
        bpe += ["--vocab-size", str(VOCAB), "-o", data / "spm"]
        seconds, rss = run_measured(bpe)
        print(f"train-bpe ({VOCAB} pieces): {seconds:.1f} s, peak RSS {rss:,.0f} MB")
    return data, spm


def synthesize(raw: Path, pairs: int, seed: int = 0) -> None:
    """train.{de,en}: each line two random Multi30k pairs joined; valid: Multi30k's val."""
    raw.mkdir(parents=True, exist_ok=True)
    sides = {}
    for lang in ("de", "en"):
        with gzip.open(MULTI30K / f"train.{lang}.gz", "rt", encoding="utf-8") as file:
            sides[lang] = file.read().splitlines()
        with gzip.open(MULTI30K / f"val.{lang}.gz", "rt", encoding="utf-8") as file:
            valid = file.read().splitlines()[:VALID_LINES]
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


def run_measured(args: list) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of `mtkit ARGS` in a child process."""
    began = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "mtkit", *map(str, args)], stderr=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(process.pid, 0)
    stderr = process.stderr.read()
    process.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"mtkit {args[0]} failed:\n{stderr[-3000:]}")
    return time.perf_counter() - began, usage.ru_maxrss / 1024


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
    mtkit = ["-m", "mtkit", *train_args(data, spm, out, resume)]
    if processes > 1:
        launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
        launcher += ["--master_port", str(_free_port())]
        mtkit = [*launcher, *mtkit]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    began = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, *mtkit], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    want = 2 if resume else 1
    first_update, peaks = None, {}
    while process.poll() is None:
        _poll_peaks(process.pid, peaks)
        if first_update is None and _logged_step(out / "metrics.jsonl") >= want:
            first_update = time.perf_counter() - began
        time.sleep(POLL)
    stderr = process.stderr.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"train ({processes} processes) failed:\n{stderr[-3000:]}")
    if first_update is None:  # finished between two polls
        first_update = time.perf_counter() - began
    return {"first_update_s": first_update, "peak_rss_mb": sorted(peaks.values(), reverse=True)}


def _logged_step(metrics: Path) -> int:
    try:
        lines = metrics.read_text().splitlines()
    except OSError:
        return 0
    steps = [json.loads(line).get("step", 0) for line in lines if line.strip().endswith("}")]
    return max(steps, default=0)


def _poll_peaks(root_pid: int, peaks: dict) -> None:
    """VmHWM (MB) of every `mtkit train` process below `root_pid` (not torchrun's launcher)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    todo, tree = [root_pid], []
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    for pid in tree:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if b"mtkit" not in cmdline or b"torch.distributed.run" in cmdline:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks[pid] = max(peaks.get(pid, 0.0), int(line.split()[1]) / 1024)


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
    code = f"from bench.scale import _stall; _stall({str(small)!r}, {str(spm)!r}, {str(root)!r})"
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO))}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO
    )
    if done.returncode != 0:
        raise RuntimeError(f"checkpoint stall failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip()


def _stall(data: str, spm: str, root: str) -> None:
    """In its own process: one transformer-big update, then time Trainer._save."""
    from mtkit.train import TrainConfig, distributed
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
    print(
        "transformer-big checkpoint save on the CPU, loop blocked (files complete after): "
        + ", then ".join(f"{b:.2f} s ({w:.2f} s)" for b, w in figures)
        + f"; {sizes / 2**30:.2f} GiB on disk"
    )


def _load(when: str) -> None:
    print(f"load average {when}: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)


if __name__ == "__main__":
    main()
