"""`mtkit translate`'s one entry point: which way a translation runs, chosen once.

Owns `translate()`, the dispatcher above the ways a translation runs: a pipe (stdin or
stdout) goes straight to mtkit.translate.stream and keeps no progress; `-i FILE -o FILE`
is a resumable job (mtkit.translate.shards.run_job), one shard of it with `--shard K/N`;
`--workers N` and torchrun ranks run the shards as processes (mtkit.translate.workers)
and merge them. It checks what no way can run with before any model loads.

Imports flow downward: command -> workers -> shards -> stream. Neither the workers nor
the shards know this module.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mtkit.errors import ConfigError, DataError, write_error
from mtkit.io import check_readable
from mtkit.translate.shards import is_gzip, parse_shard, run_job
from mtkit.translate.stream import Decoding, translate_file
from mtkit.translate.terms import check_files
from mtkit.translate.workers import run_ranks, run_workers


@dataclass(frozen=True)
class JobOptions:
    """What `mtkit translate` does with a file: one job, one shard of it, or workers."""

    shard: str | None = None  # "K/N": the K-th of N byte ranges (K from 1)
    workers: int = 0  # N > 1: start N processes on this machine, one shard each, then merge
    restart: bool = False  # drop the progress of an earlier run instead of continuing it


def translate(
    model_paths: list[Path],
    input_path: Path | None = None,
    output_path: Path | None = None,
    decoding: Decoding = Decoding(),
    job: JobOptions = JobOptions(),
) -> int:
    """`mtkit translate`: a pipe as before, or a resumable job for -i FILE -o FILE (a shard
    with `--shard`, N processes with `--workers`, one shard per rank under torchrun).
    Returns the number of input lines translated by this process."""
    decoding.check()  # now, before the model loads and the bar shows
    check_files(decoding.constraints, input_path)  # once, not in every worker
    world = int(os.environ.get("WORLD_SIZE", 1))
    split = job.shard is not None or job.workers > 1 or world > 1
    if job.workers < 0:
        raise ConfigError(f"--workers must be 0 or more, got {job.workers}")
    if input_path is None or output_path is None:
        if split or job.restart:
            what = "--restart needs" if not split else "--shard, --workers and torchrun need"
            raise ConfigError(
                f"{what} files: pass -i FILE and -o FILE "
                "(a pipe has no line ranges to split and no place to keep progress)"
            )
        return translate_file(model_paths, input_path, output_path, decoding)
    shard = parse_shard(job.shard) if job.shard is not None else None
    if shard and decoding.search.seed is None and decoding.draws:
        raise ConfigError("--shard with --sampling or --noised needs --seed (one for all shards)")
    if sum([shard is not None, job.workers > 1, world > 1]) > 1:
        raise ConfigError("use one of --shard, --workers and torchrun, not several together")
    _check_input(Path(input_path), split)
    _check_directory(Path(output_path))
    args = (model_paths, Path(input_path), Path(output_path), decoding)
    if job.workers > 1:
        return run_workers(job.workers, *args, job.restart)
    if world > 1:
        return run_ranks(*args, job.restart)
    return run_job(*args, shard, job.restart)


def _check_input(path: Path, split: bool) -> None:
    check_readable(path, "input file")
    if split and is_gzip(path):
        raise ConfigError(
            f"{path} is gzip-compressed, and shards are byte ranges of a plain file; "
            f"decompress it first (gunzip -k {path})"
        )


def _check_directory(out: Path) -> None:
    """Fail now, before any work, when OUT's directory is missing or not writable."""
    if out.is_dir():
        raise DataError(f"-o {out} is a directory; give the output file's name")
    directory = out.parent if str(out.parent) else Path(".")
    if not directory.is_dir():
        raise DataError(f"directory {directory} does not exist; create it first")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=directory)
    except OSError as error:
        raise write_error(out, error) from None
    os.close(fd)
    os.unlink(probe)
