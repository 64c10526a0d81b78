"""What the benchmarks share: where Multi30k is, the machine line printed beside every
figure, mtkit run as a child process (with its time, CPU time and peak memory), a
process's peak memory, test2016 and BLEU, and the models the decoding benchmarks run.

Every `mtkit` a benchmark starts runs as `python -m bench.common ARGS`: that is
`python -m mtkit ARGS`, which then appends its own peak RSS (VmHWM) to the file
MTKIT_BENCH_PEAK_FILE names, so a torchrun launch reports each rank's. Heavy imports
(torch, mtkit's models) stay inside the functions, as in mtkit.
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MULTI30K = Path(os.environ.get("MTKIT_MULTI30K", REPO.parent / "shared" / "data" / "multi30k"))
OUT = REPO / "bench" / "out"  # what a benchmark trains once and reuses
PEAK_FILE_ENV = "MTKIT_BENCH_PEAK_FILE"
# The smallest model that still runs every layer: start-up, memory and crash runs.
TINY = {"d_model": 32, "n_heads": 2, "d_ff": 64, "enc_layers": 1, "dec_layers": 1}
# Decoding benchmarks: outputs forced to FIXED_LEN pieces do the same work on both sides;
# WARMUP sentences are decoded untimed first.
FIXED_LEN = 25
WARMUP = 50


# -- the machine -------------------------------------------------------------------


def print_machine(*details: str) -> None:
    """The line beside every benchmark's figures: "CPU: " and the CPU's model, cores and
    vector units (mtkit.device.describe_cpu), then `details`, comma-separated."""
    from mtkit.device import describe_cpu

    print(", ".join([f"CPU: {describe_cpu()}", *details]), flush=True)


def load_line(when: str) -> str:
    """The load average (other jobs on a shared machine) at `when`, with the core count."""
    return f"load average {when}: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def sync(device: str) -> None:
    """Wait for the GPU's queued work, so a timer around it times the work."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


# -- peak memory and child processes ------------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak resident memory (MiB): Linux's VmHWM, which belongs to the
    process image and starts afresh at exec, while ru_maxrss carries the forking parent's
    peak across exec (a benchmark that imported torch adds its ~600 MiB)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@dataclasses.dataclass
class Run:
    """A finished child: exit code, wall seconds, CPU seconds (user+sys of it and of the
    processes it waited for), each mtkit process's peak RSS in MiB (largest first; none
    when it was killed) and its stderr (when captured)."""

    code: int
    seconds: float
    cpu: float
    peaks_mb: list[float]
    stderr: str

    @property
    def peak_mb(self) -> float:
        return max(self.peaks_mb, default=0.0)


class Child:
    """`mtkit ARGS` running in a child process.

    threads: its OMP_NUM_THREADS; env: variables to set (None: to remove); log: a file
    for its stderr (default: a temporary one, returned by wait()); echo: print the
    command and let its output through instead; pin: a command before Python (taskset);
    launcher: Python options before `-m` (torchrun: `-m torch.distributed.run ...`).
    """

    def __init__(
        self,
        args: list,
        *,
        threads: int | None = None,
        env: dict[str, str | None] | None = None,
        log: Path | None = None,
        echo: bool = False,
        pin: list[str] | tuple = (),
        launcher: list[str] | tuple = (),
    ) -> None:
        self.args = [str(a) for a in args]
        self.tmp = Path(tempfile.mkdtemp(prefix="mtkit-bench-child-"))
        self.peak_file = self.tmp / "peak"
        self.peak_file.touch()
        self.log = None if echo else (log or self.tmp / "stderr")
        command = [*pin, sys.executable, *launcher, "-m", "bench.common", *self.args]
        environment = self._env(threads, env or {})
        if echo:
            print("mtkit", *self.args, file=sys.stderr, flush=True)
        self.began = time.perf_counter()
        if self.log is None:
            self.process = subprocess.Popen(command, env=environment)
            return
        with open(self.log, "w") as stderr:
            self.process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=stderr, env=environment
            )

    def _env(self, threads: int | None, changes: dict[str, str | None]) -> dict[str, str]:
        path = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]  # bench importable
        env = {
            **os.environ,
            PEAK_FILE_ENV: str(self.peak_file),
            "PYTHONPATH": os.pathsep.join(path),
        }
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        for key, value in changes.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def running(self) -> bool:
        """Whether it still runs, without reaping it (wait() reads its resource usage)."""
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        return os.waitid(os.P_PID, self.process.pid, flags) is None

    def send_signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)  # not Popen's, which reaps it first

    def wait(self) -> Run:
        _, status, usage = os.wait4(self.process.pid, 0)
        seconds = time.perf_counter() - self.began
        self.process.returncode = code = os.waitstatus_to_exitcode(status)
        lines = self.peak_file.read_text().splitlines()
        peaks = sorted((float(line.split()[1]) for line in lines), reverse=True)
        stderr = "" if self.log is None else self.log.read_text(errors="replace")
        shutil.rmtree(self.tmp, ignore_errors=True)
        return Run(code, seconds, usage.ru_utime + usage.ru_stime, peaks, stderr)


def run_mtkit(args: list, **options) -> Run:
    """`mtkit ARGS` in a child process, to its end (options: Child's); a RuntimeError with
    its last lines when it fails."""
    run = Child(args, **options).wait()
    if run.code != 0:
        raise RuntimeError(f"mtkit {args[0]} failed (exit {run.code}):\n{run.stderr[-3000:]}")
    return run


def in_fresh_process(function, *args):
    """function(*args) in a fresh Python process (spawned: its peak memory is its own and
    nothing of this one's state is in it); what it returns."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


# -- data ---------------------------------------------------------------------------


def read_lines(path: Path, n: int | None = None) -> list[str]:
    """The first n lines (all: None) of a gzip-compressed text file, without newlines."""
    with gzip.open(path, "rt", encoding="utf-8") as file:
        return [line.rstrip("\n") for line in itertools.islice(file, n)]


def test2016(n: int | None = None) -> tuple[list[str], list[str]]:
    """test_2016_flickr's German sources and English references, the first n."""
    source = read_lines(MULTI30K / "test_2016_flickr.de.gz", n)
    return source, read_lines(MULTI30K / "test_2016_flickr.en.gz", n)


def bleu(hyps: list[str], refs: list[str]) -> float:
    import sacrebleu

    return sacrebleu.corpus_bleu(hyps, [refs]).score


def prepare_multi30k(data: Path, spm: Path, *, test: bool = False, **options) -> None:
    """`mtkit prepare` of Multi30k de-en into `data` (train, valid, and test2016 with
    `test`) and `mtkit train-bpe` of its 8,000-piece joint BPE into `spm`, as the recipe
    makes them (options: Child's)."""
    splits = [("", "train"), ("valid-", "val")] + [("test-", "test_2016_flickr")] * test
    files = []
    for split, name in splits:
        for side, lang in (("src", "de"), ("tgt", "en")):
            files += [f"--{split}{side}-file", MULTI30K / f"{name}.{lang}.gz"]
    run_mtkit(["prepare", "--src", "de", "--tgt", "en", "--out", data, *files], **options)
    run_mtkit(["train-bpe", "--input", data / "train.de", "--input", data / "train.en",
               "--vocab-size", "8000", "--out", spm], **options)  # fmt: skip


# -- models to decode with ----------------------------------------------------------


def decoding_settings() -> tuple[int, int, list[str], list[str], Path]:
    """threads, rounds, test2016's sources and references, and the model, from the
    environment (MTKIT_BENCH_THREADS, _ROUNDS, _SENTENCES, _MODEL; the model by default
    trained_model's)."""
    n = int(os.environ.get("MTKIT_BENCH_SENTENCES", "1000"))
    threads = int(os.environ.get("MTKIT_BENCH_THREADS", "2"))
    rounds = int(os.environ.get("MTKIT_BENCH_ROUNDS", "1"))
    source, refs = test2016(n)
    model = Path(os.environ.get("MTKIT_BENCH_MODEL") or trained_model())
    return threads, rounds, source, refs, model


def trained_model() -> Path:
    """bench/out/decode/run/checkpoint_last.pt, trained once (400 updates, about 20
    minutes on 2 cores) if missing; its data and BPE beside it."""
    out = OUT / "decode"
    path = out / "run" / "checkpoint_last.pt"
    if path.exists():
        return path
    data, spm = out / "data", out / "spm"
    options = {"echo": True, "env": {"HF_HUB_OFFLINE": "1"}}
    prepare_multi30k(data, spm, test=True, **options)
    run_mtkit(["train", "--data", data, "--spm", spm / "spm.model", "--out", out / "run",
               "--max-updates", "400", "--max-tokens", "2048", "--lr", "1e-3", "--warmup", "300",
               "--valid-every", "400", "--valid-bleu-sentences", "100", "--keep-last", "1",
               "--threads", "2"], **options)  # fmt: skip
    return path


def multi30k_spm(out_dir: Path, vocab_size: int = 8000) -> bytes:
    """A joint BPE model on Multi30k's training text, as train-bpe makes it."""
    from mtkit.tokenizer import SpmOptions, train_spm

    inputs = [MULTI30K / "train.de.gz", MULTI30K / "train.en.gz"]
    (path,) = train_spm(inputs, out_dir, SpmOptions(vocab_size=vocab_size))
    return path.read_bytes()


def random_checkpoint(path: Path, spm: bytes, preset: str, **overrides) -> Path:
    """A checkpoint of `preset` (with `overrides`) with seeded random weights."""
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


def speed_model(tmp: Path, refs: list[str], given: str | None) -> tuple[Path, int]:
    """(checkpoint, forced output length or 0): `given`, a trained one, or else a
    transformer-small with random weights whose outputs are to be forced to the mean
    reference length (the decoder work of a trained model; the words are noise)."""
    if given:
        return Path(given), 0
    spm = multi30k_spm(tmp / "spm")
    from mtkit.tokenizer import Tokenizer

    pieces = Tokenizer.from_bytes(spm).encode(refs)
    forced = round(sum(len(p) for p in pieces) / len(pieces))
    return random_checkpoint(tmp / "random.pt", spm, "transformer-small"), forced


def tiny_checkpoint(tmp: Path) -> Path:
    """The memory runs' model: TINY with 500 pieces, so the work per line is small while
    everything that could grow with the input runs."""
    spm = multi30k_spm(tmp / "tiny-spm", vocab_size=500)
    sizes = {**TINY, "src_vocab_size": 500, "tgt_vocab_size": 500}
    return random_checkpoint(tmp / "tiny.pt", spm, "transformer-small", **sizes)


def repeat_lines(path: Path, lines: list[str], n: int) -> Path:
    """n lines at `path`: `lines` repeated."""
    with open(path, "w", encoding="utf-8") as file:
        for line in itertools.islice(itertools.cycle(lines), n):
            file.write(line + "\n")
    return path


def translate_memory(tmp: Path, source: list[str], sizes: list[int], label: str = "") -> None:
    """For each size n, `mtkit translate -o FILE` (a resumable job) of `source` repeated to
    n lines with tiny_checkpoint's model, greedy with at most 1 target token on one thread
    (on a shared machine two spinning threads were 17x slower here, and the thread count
    does not change what is held in memory); prints its peak RSS and time."""
    tiny = tiny_checkpoint(tmp)
    search = ["--beam", "1", "--max-len-a", "0", "--max-len-b", "1", "--threads", "1"]
    for n in sizes:
        path, out = repeat_lines(tmp / f"in.{n}.de", source, n), tmp / "out.en"
        run = run_mtkit(["translate", "-m", tiny, "-i", path, "-o", out, *search])
        with open(out, "rb") as file:
            lines = sum(1 for _ in file)
        print(
            f"memory: {label}{n:,} lines -> {lines:,} lines, peak RSS {run.peak_mb:.0f} MiB, "
            f"{run.seconds:.0f} s ({n / run.seconds:,.0f} lines/s; tiny model, vocab 500, "
            "greedy, <= 1 target token)",
            flush=True,
        )
        path.unlink()
        out.unlink()


class Counting:
    """A tokenizer proxy that counts the target pieces it is asked to decode."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.pieces = tokenizer, 0

    def decode(self, ids):
        ids = list(ids)
        self.pieces += sum(len(x) for x in ids)
        return self.tokenizer.decode(ids)


if __name__ == "__main__":
    # `python -m bench.common ARGS`: `python -m mtkit ARGS`, then this process's peak RSS.
    import runpy

    try:
        runpy.run_module("mtkit", run_name="__main__", alter_sys=True)
    finally:
        if os.environ.get(PEAK_FILE_ENV):
            with open(os.environ[PEAK_FILE_ENV], "a") as peaks:
                peaks.write(f"{os.getpid()} {peak_rss_mb():.3f}\n")
