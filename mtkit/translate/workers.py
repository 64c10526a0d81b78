"""The processes that run a job's shards: `--workers N` on this machine, or torchrun's ranks.

Owns starting N CPU processes (spawned, each with cores // N torch threads), joining
torchrun's process group (mtkit.distributed) and meeting the other ranks when the
shards are done, one progress bar for all shards (read from their progress files),
and calling the merge once every shard has ended. What a shard is, how it runs and
resumes in one process (`run_job`) and how finished shards merge (`merge_shards`) is
mtkit.translate.shards', below this module; choosing workers or ranks at all is
mtkit.translate.command's, above it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import sys
import time
from pathlib import Path

from mtkit.errors import ConfigError, MtkitError, one_line
from mtkit.translate.shards import JobFiles, load_state, merge_shards, rate_column, run_job
from mtkit.translate.stream import Decoding, count_lines, not_job_wide

log = logging.getLogger(__name__)

# How long torchrun ranks wait for each other after their shards: shards of one job
# can finish hours apart, and torch's default (10-30 minutes) would end the job.
BARRIER_TIMEOUT_S = 7 * 24 * 3600


@contextlib.contextmanager
def watch_shards(
    out: Path, n: int, total: int | None, show: bool = True, description: str = "translating"
):
    """One bar for N shards run by other processes, read from their progress files."""
    if not show:
        yield lambda: None
        return
    from mtkit.console import progress

    def done() -> int:
        lines = 0
        for k in range(1, n + 1):
            with contextlib.suppress(OSError, ValueError, KeyError):
                path = JobFiles.of(out, (k, n)).progress
                lines += json.loads(path.read_text("utf-8"))["lines_done"]
        return lines

    with progress(rate_column()) as bar:
        task = bar.add_task(description, total=total, completed=done())
        yield lambda: bar.update(task, completed=done())
        bar.update(task, completed=done())


# -- workers on this machine ---------------------------------------------------------


def run_workers(
    n: int,
    model_paths: list[Path],
    input_path: Path,
    output_path: Path,
    decoding: Decoding,
    restart: bool,
) -> int:
    """N processes, shard K of N each, with cores // N torch threads unless --threads, then
    the merge. A second run continues every shard where it stopped."""
    runtime = decoding.runtime
    if runtime.device == "cuda":
        raise ConfigError(
            "--workers starts CPU processes; on GPUs run one rank per GPU with "
            "torchrun --nproc_per_node N -m mtkit translate ..."
        )
    runtime = dataclasses.replace(
        runtime, device="cpu", threads=runtime.threads or max(1, cores() // n)
    )
    decoding = _workers_seed(
        dataclasses.replace(decoding, runtime=runtime), output_path, n, restart
    )
    log.info("%d workers, %d torch threads each", n, runtime.threads)
    args = (model_paths, input_path, output_path, decoding)
    run_shard_processes(_worker, args, n, restart, output_path, count_lines(input_path))
    return merge_shards(output_path, n).lines


def run_shard_processes(
    target,
    args: tuple,
    n: int,
    restart: bool,
    watched: Path,
    total: int | None,
    description: str = "translating",
) -> None:
    """N spawned processes `target(*args, (k, n), restart)`, one bar over their progress
    files (`watched`'s shards), and one line naming the shards that failed, if any."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no fork of a process that holds threads
    processes = [
        context.Process(target=target, args=(*args, (k, n), restart)) for k in range(1, n + 1)
    ]
    try:
        for process in processes:
            process.start()
        with watch_shards(watched, n, total, description=description) as refresh:
            while any(p.is_alive() for p in processes):
                time.sleep(0.5)
                refresh()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()
    failed = [f"{k}/{n}" for k, p in enumerate(processes, 1) if p.exitcode != 0]
    if failed:
        raise MtkitError(
            f"shard {', '.join(failed)} failed (its message is above); the other shards' work "
            "is kept: fix the cause and run the same command again to continue"
        )


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _workers_seed(decoding: Decoding, out: Path, n: int, restart: bool) -> Decoding:
    """Workers share one seed: the one in shard 1's progress file, else a new one."""
    if decoding.search.seed is not None or not decoding.draws:
        return decoding
    seed = None
    progress = JobFiles.of(out, (1, n)).progress
    if progress.exists() and not restart:
        seed = load_state(progress).get("options", {}).get("search", {}).get("seed")
    return decoding.seeded(random.getrandbits(63) if seed is None else seed)


def _worker(model_paths, input_path, output_path, decoding: Decoding, shard, restart) -> None:
    """One worker process: its shard as a job, errors as one line."""
    die_with_parent()
    os.environ["OMP_NUM_THREADS"] = str(decoding.runtime.threads)  # before torch loads
    from mtkit.console import setup_logging

    setup_logging()
    logger = logging.getLogger("mtkit")
    logger.setLevel(logging.WARNING)  # N copies of the start-up lines
    if shard[0] > 1:  # and of warnings about the job as a whole
        logger.handlers[0].addFilter(not_job_wide)
    try:
        run_job(model_paths, input_path, output_path, decoding, shard, restart, show_progress=False)
    except Exception as error:
        message = one_line(error)
        if message is None:
            raise  # not one a user causes: a bug, with its traceback
        print(f"error: shard {shard[0]}/{shard[1]}: {message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


def die_with_parent() -> None:
    """Linux: SIGKILL this process when the parent dies, so kill -9 of `mtkit translate
    --workers N` stops its workers too (their shards resume with the next run)."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


# -- torchrun ranks ---------------------------------------------------------------


def run_ranks(
    model_paths: list[Path],
    input_path: Path,
    output_path: Path,
    decoding: Decoding,
    restart: bool,
) -> int:
    """Under torchrun: rank r translates shard r+1 of WORLD_SIZE on its own device; all
    meet when done (gloo on the CPU, nccl on GPUs), and rank 0 merges."""
    from mtkit import distributed

    if decoding.search.seed is None and decoding.draws:
        raise ConfigError("under torchrun, --sampling and --noised need --seed (one for all ranks)")
    dist = distributed.setup(decoding.runtime.device, timeout_s=BARRIER_TIMEOUT_S)
    shard = (dist.rank + 1, dist.world_size)
    error, count = None, 0
    try:
        total = count_lines(input_path) if dist.is_main else None
        bar = watch_shards(output_path, dist.world_size, total, show=dist.is_main)
        with bar as refresh, _refreshing(refresh):
            count = run_job(
                model_paths, input_path, output_path, decoding, shard, restart, show_progress=False
            )
    except MtkitError as failure:
        error = str(failure)
    except BaseException:
        distributed.teardown(dist, clean=False)
        raise
    errors = distributed.gather_all(dist, error)  # also the barrier: every shard has ended
    distributed.teardown(dist)
    if error is not None:
        raise MtkitError(f"shard {shard[0]}/{shard[1]}: {error}")
    failed = [r + 1 for r, e in enumerate(errors) if e is not None]
    if dist.is_main:
        if failed:
            raise MtkitError(
                f"shard {', '.join(map(str, failed))} of {dist.world_size} failed (see their "
                "messages); fix the cause and run the same command again to continue"
            )
        merge_shards(output_path, dist.world_size)
    return count


@contextlib.contextmanager
def _refreshing(refresh, every_s: float = 1.0):
    """Call refresh() from a thread every `every_s` seconds while the block runs."""
    import threading

    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            refresh()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
