"""Translating a file as a job: resumable, split into shards by byte ranges, merged.

Owns what turns `mtkit translate -i BIG -o OUT` into a job that survives kill -9:
its files beside OUT, the identity that says whether they belong to this
command, the byte ranges of shards, running one job or one shard in this process
(`run_job`), and the merge of finished shards (`merge_shards`). Leaves to others:
choosing pipe, job, shard, workers or torchrun (mtkit.translate.command, above);
the processes that run shards, workers or torchrun ranks (mtkit.translate.workers,
which calls `run_job` in each and `merge_shards` at the end); the translation itself,
reading, batching, search, formatting (mtkit.translate.stream, below), where pipes
(stdin or stdout) go straight, keeping no progress. This module imports neither
command nor workers.

Files. A job writing OUT keeps `OUT.partial` (the output so far) and
`OUT.progress.json` (`JobState`: what the job is, how far it got); when the last
line is in, OUT.partial is renamed to OUT and the progress file removed, so OUT
only ever appears complete. Shard K of N of the same command writes
`OUT.shard-K-of-N` the same way and keeps its progress file (marked complete) for
the merge, which checks every shard and writes OUT atomically.

Commits. Lines are translated in chunks of `--chunk-lines`; after each chunk the
partial file is flushed and fsync'd, then the progress file is replaced
atomically with the lines done, the input offset after them and the bytes of
the partial file they fill (and a "checksum" of the rest, mtkit.io's
`with_json_checksum`, checked at every read: a damaged file is refused, one of an
mtkit before checksums loads with a note). A killed job loses at most one chunk: the next run
cuts OUT.partial back to the committed bytes and reads on from the committed
input offset. Chunks start at the same lines as in an uninterrupted run (a
commit is always at a chunk's end), so every batch is the same and the output
is byte for byte the same; sampling and noise draw per line from the seed and
the line's byte offset (mtkit.translate.stream), so they do not depend on where
a run restarted either. An unseeded sampling job draws its seed once and keeps
it in the progress file.

Identity. The progress file records the input (size, and SHA-256 of its first and
last MiB: a full hash of a 10 GB file would cost every start and every shard a
minute of reading, while an edit that keeps the size and both ends is rare; the
modification time is recorded and only warned about, since copying a file to a
node's scratch disk changes it), the SHA-256 of each model file, and every option
that changes the output. A run whose input, models or options differ is refused
with one line naming the difference, unless `--restart`. The torch thread count
is left out: a job may resume with another share of the cores.

Shards are byte ranges: shard K of N holds the lines that start in
[size*(K-1)/N, size*K/N), found by reading forward to the next line start, so no
process counts the lines of a 100 M-line file before it starts, and each reads
only its own range. Gzip input cannot be split this way (it cannot be
entered in the middle); it is refused for shards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import random
import signal
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mtkit.crashpoint import crash_point
from mtkit.errors import ConfigError, DataError, MtkitError
from mtkit.io import (
    atomic_write,
    check_json_checksum,
    check_readable,
    open_binary,
    with_json_checksum,
    write_error,
)
from mtkit.translate.stream import (
    Decoding,
    count_lines,
    log_start,
    write_results,
)
from mtkit.translate.terms import open_phrases

log = logging.getLogger(__name__)

PROGRESS_FORMAT = 1
# The input's first and last this many bytes are hashed (see the module docstring).
HEAD_TAIL_BYTES = 1 << 20
# Tests only: the process SIGKILLs itself after writing this many lines of a job
# (before committing them), as kill -9 would.
KILL_AFTER_ENV = "MTKIT_TEST_KILL_AFTER_LINES"
_RESTART_HINT = "run the command as before to continue, or add --restart to start over"


@dataclass(frozen=True)
class JobFiles:
    """Where one job (or one shard) writes: the final name, the partial output, the progress."""

    output: Path
    partial: Path
    progress: Path

    @classmethod
    def of(cls, out: Path, shard: tuple[int, int] | None = None) -> JobFiles:
        final = out if shard is None else out.with_name(shard_name(out, *shard))
        return cls(
            final,
            final.with_name(final.name + ".partial"),
            final.with_name(final.name + ".progress.json"),
        )


def is_gzip(path: Path) -> bool:
    """Whether a file is gzip-compressed (its magic bytes): such a file has no byte ranges."""
    with open(path, "rb") as file:
        return file.read(2) == b"\x1f\x8b"


def shard_name(out: Path, k: int, n: int) -> str:
    return f"{out.name}.shard-{k}-of-{n}"


def parse_shard(text: str) -> tuple[int, int]:
    """`K/N` as (K, N), 1 <= K <= N; ConfigError otherwise."""
    k, slash, n = text.partition("/")
    if not (slash and k.strip().isdigit() and n.strip().isdigit()):
        raise ConfigError(f"--shard takes K/N (e.g. 3/8, K from 1 to N), got {text!r}")
    k_, n_ = int(k), int(n)
    if n_ < 1 or not 1 <= k_ <= n_:
        raise ConfigError(f"--shard {text}: K must be from 1 to N (N at least 1)")
    return k_, n_


# -- one job: the whole file or one shard ------------------------------------------


def run_job(
    model_paths: list[Path],
    input_path: Path,
    output_path: Path,
    decoding: Decoding = Decoding(),
    shard: tuple[int, int] | None = None,
    restart: bool = False,
    show_progress: bool = True,
) -> int:
    """Translate `input_path` (or its shard `shard` = (K, N)) into `output_path` (or its
    shard file), continuing an earlier run's progress; returns the lines of the job."""
    files = JobFiles.of(output_path, shard)
    start, end = shard_range(input_path, *shard) if shard else (0, None)
    identity = job_identity(model_paths, input_path, decoding, shard)
    identity["range"] = [start, end]
    state = None if restart else read_state(files, identity)
    if state is not None and state["complete"]:
        return _finished_already(files, state, shard)
    if state is None:
        seed = decoding.search.seed
        if seed is None and decoding.draws:
            seed = random.getrandbits(63)  # kept in the progress file for the resumes
        state = {**identity, "seed": seed, "lines_done": 0, "input_offset": start,
                 "output_bytes": 0, "complete": False}  # fmt: skip
    elif state["lines_done"]:
        log.info("%s: continuing after line %d", files.output, state["lines_done"])
    decoding = decoding.seeded(state["seed"])

    from mtkit.translate.stream import load_translator

    translator = load_translator(model_paths, decoding.runtime)
    with _open_partial(files, output_path, state, fresh=restart or not state["lines_done"]) as sink:
        if show_progress:
            log_start(translator, decoding)
        total = count_range_lines(input_path, start, end)
        with _progress(show_progress, total, state["lines_done"]) as advance:
            job = _Run(files, state, sink, decoding.batching.chunk_lines, advance)
            keyed = job.reader(input_path, end, shard)
            where = f" of shard {shard[0]}/{shard[1]}" if shard else ""
            done = state["lines_done"]
            phrases = open_phrases(decoding.constraints, input_path, start, done, not shard)
            with phrases as targets:
                write_results(translator, keyed, sink, decoding, done, job.on_line, where, targets)
            job.commit(complete=True)
    crash_point("job-before-finish")  # complete in the progress file, not yet renamed
    _finish(files, keep_progress=shard is not None)
    return state["lines_done"]


def _finished_already(files: JobFiles, state: dict, shard) -> int:
    """A run that ended between its last commit and its rename, or a finished shard."""
    if files.partial.exists():
        _finish(files, keep_progress=shard is not None)
    elif not files.output.exists():
        raise DataError(
            f"{files.progress} says the job is complete but {files.output} is missing; "
            "add --restart to translate it again"
        )
    elif shard is None:
        files.progress.unlink(missing_ok=True)
    log.info("%s is already complete (%d lines)", files.output, state["lines_done"])
    return 0


class _Run:
    """The running job's bookkeeping: which input offset each written line ends at,
    commits at chunk ends, the progress bar, and the test hook that kills the process."""

    def __init__(self, files: JobFiles, state: dict, sink, chunk_lines: int, advance) -> None:
        self.files, self.state, self.sink = files, state, sink
        self.chunk_lines, self.advance = chunk_lines, advance
        self.ends: deque[int] = deque()  # input offset after each line read, not yet written
        self.base = state["lines_done"]
        self.uncommitted = 0
        kill = os.environ.get(KILL_AFTER_ENV)
        self.kill_after = int(kill) if kill else None

    def reader(self, path: Path, end: int | None, shard) -> Iterator[tuple[int, str]]:
        """(byte offset, line) from the committed input offset to `end` (EOF when None)."""
        offset, number = self.state["input_offset"], self.base
        with open_binary(path) as stream:
            if offset:
                stream.seek(offset)  # gzip: decompresses up to there
            for raw in stream:
                if end is not None and offset >= end:
                    break
                number += 1
                self.ends.append(offset + len(raw))
                yield offset, _decode(raw, path, number, offset, shard)
                offset += len(raw)

    def on_line(self, count: int, key: int) -> None:
        self.state["input_offset"] = self.ends.popleft()
        self.state["lines_done"] = self.base + count
        self.uncommitted += 1
        if self.kill_after is not None and self.state["lines_done"] == self.kill_after:
            self.sink.file.flush()  # what a killed process leaves: lines past the last commit
            os.kill(os.getpid(), signal.SIGKILL)
        if count % self.chunk_lines == 0:
            self.commit()

    def commit(self, complete: bool = False) -> None:
        """Make the lines written so far durable, then say so in the progress file."""
        self.sink.flush()  # and fsync
        crash_point("job-after-fsync")  # the lines are durable, the progress not yet
        self.state["output_bytes"] = self.sink.tell()
        self.state["complete"] = complete
        write_state(self.files, self.state)
        self.advance(self.uncommitted)
        self.uncommitted = 0


def _decode(raw: bytes, path: Path, number: int, offset: int, shard) -> str:
    try:
        return raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
    except UnicodeDecodeError as error:
        where = f"line {number}" if shard is None else f"the line at byte {offset}"
        raise DataError(
            f"{path} {where} is not valid UTF-8 ({error.reason} at byte {error.start}); "
            "convert it to UTF-8, e.g. with iconv"
        ) from None


@contextlib.contextmanager
def _open_partial(files: JobFiles, out: Path, state: dict, fresh: bool):
    """OUT.partial, locked and cut back to the committed bytes. When the job fails before
    its first commit, its files are removed (nothing worth resuming; no trace left)."""
    import fcntl

    try:
        fd = os.open(files.partial, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as error:
        raise write_error(out, error) from None
    sink = os.fdopen(fd, "r+b")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sink.close()
        raise MtkitError(
            f"{files.output} is being translated by another process right now; wait for it "
            "to end or stop it"
        ) from None
    try:
        size = os.fstat(fd).st_size
        if size < state["output_bytes"]:
            raise DataError(
                f"{files.partial} has {size} bytes but {files.progress} says "
                f"{state['output_bytes']} are done; add --restart to start over"
            )
        sink.truncate(state["output_bytes"])
        sink.seek(state["output_bytes"])
        if fresh:
            write_state(files, state)
        yield _Sink(sink, out)
    except BaseException:
        with contextlib.suppress(OSError):  # a full disk fails the flush again: no matter
            sink.close()
        if _nothing_committed(files):
            files.partial.unlink(missing_ok=True)
            files.progress.unlink(missing_ok=True)
        raise
    sink.close()


class _Sink:
    """The partial file, whose failed writes (no space, a size limit) name OUT in one line."""

    def __init__(self, file, out: Path) -> None:
        self.file, self.out = file, out

    def write(self, data: bytes) -> None:
        try:
            self.file.write(data)
        except OSError as error:
            raise write_error(self.out, error) from None

    def flush(self) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError as error:
            raise write_error(self.out, error) from None

    def tell(self) -> int:
        return self.file.tell()


def _nothing_committed(files: JobFiles) -> bool:
    try:
        return json.loads(files.progress.read_text("utf-8"))["lines_done"] == 0
    except (OSError, ValueError, KeyError):
        return True


def _finish(files: JobFiles, keep_progress: bool) -> None:
    """OUT.partial becomes OUT (with the mode a new file gets); the progress goes, or stays
    beside a shard for the merge."""
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(files.partial, 0o666 & ~mask)
        os.replace(files.partial, files.output)
    except OSError as error:
        raise write_error(files.output, error) from None
    if not keep_progress:
        files.progress.unlink(missing_ok=True)


# -- identity and progress files ---------------------------------------------------


def job_identity(model_paths, input_path, decoding: Decoding, shard) -> dict:
    """What a job is: its input, models and every option that changes its output."""
    import torch

    from mtkit.device import pick_device, pick_precision
    from mtkit.translate.stream import DEFAULT_MAX_TOKENS

    runtime, batching, noise = decoding.runtime, decoding.batching, decoding.noise
    device = pick_device(runtime.device)
    options = {
        "search": dataclasses.asdict(decoding.search),
        "noise": dataclasses.asdict(noise) if noise.noised else None,
        "output_format": decoding.output_format,
        "chunk_lines": batching.chunk_lines,
        "max_tokens": batching.max_tokens or DEFAULT_MAX_TOKENS[device.type],
        "batch_size": batching.batch_size,
        "device": device.type,
        "precision": pick_precision(runtime.precision, torch.device(device.type)),
        "quantize": runtime.quantize,
        "shortlist": runtime.shortlist and file_sha256(Path(runtime.shortlist)),
    }
    if runtime.src_lang or runtime.tgt_lang:  # absent otherwise: older jobs resume as they were
        options["langs"] = [runtime.src_lang, runtime.tgt_lang]
    if decoding.constraints.active:  # absent otherwise: older jobs resume as they were
        options["constraints"] = decoding.constraints.identity()
    return {
        "mtkit": "translate job",
        "format": PROGRESS_FORMAT,
        "input": input_identity(input_path),
        "models": [{"path": str(p), "sha256": file_sha256(Path(p))} for p in model_paths],
        "options": options,
        "shard": list(shard) if shard else None,
    }


def input_identity(path: Path) -> dict:
    """Size, SHA-256 of the first and last HEAD_TAIL_BYTES, modification time."""
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        digest.update(file.read(HEAD_TAIL_BYTES))
        if stat.st_size > HEAD_TAIL_BYTES:
            file.seek(max(HEAD_TAIL_BYTES, stat.st_size - HEAD_TAIL_BYTES))
            digest.update(file.read(HEAD_TAIL_BYTES))
    return {
        "path": str(path),
        "size": stat.st_size,
        "head_tail_sha256": digest.hexdigest(),
        "mtime_ns": stat.st_mtime_ns,
    }


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, or of every file of a directory (an imported Marian model) by name."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(check_readable(file), "rb") as stream:
            while block := stream.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def write_state(files: JobFiles, state: dict) -> None:
    """The progress file, replaced atomically and fsync'd (plain JSON, one key a line),
    with a "checksum" of the rest (mtkit.io.with_json_checksum)."""
    text = json.dumps(with_json_checksum(state), indent=1, sort_keys=True) + "\n"
    with atomic_write(files.progress, "w", fsync=True) as file:
        file.write(text)


def load_state(
    path: Path, advice: str = "add --restart to start over", kind: str = "translate job"
) -> dict:
    """A progress file, checked: its checksum (a file without one, from an mtkit before
    checksums, loads with a note), its kind (`kind`: mtkit.filter.job's are "filter job")
    and its format. `advice` ends each error."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {path} ({error}); {advice}") from None
    if not isinstance(state, dict) or state.get("mtkit") != kind:
        raise DataError(f"{path} is not an mtkit progress file; move it away or {advice}")
    if not check_json_checksum(path, state, advice):
        log.warning("%s has no checksum (written by an older mtkit): loaded unverified", path)
    state.pop("checksum", None)
    if state.get("format") != PROGRESS_FORMAT:
        raise DataError(
            f"{path} has format {state.get('format')}, this mtkit writes {PROGRESS_FORMAT}; "
            f"finish the job with the mtkit that started it, or {advice}"
        )
    return state


def read_state(files: JobFiles, identity: dict) -> dict | None:
    """The earlier run's state when it is the same job; None when there is none."""
    if not files.progress.exists():
        return None
    state = load_state(files.progress)
    difference = job_difference(state, identity)
    if difference:
        raise ConfigError(f"{files.progress} belongs to another job: {difference}; {_RESTART_HINT}")
    if state["input"]["mtime_ns"] != identity["input"]["mtime_ns"]:
        log.warning(
            "%s was modified since the job started, but its size and first and last MiB "
            "are the same: continuing",
            identity["input"]["path"],
        )
    return state


def job_difference(old: dict, new: dict) -> str | None:
    """What differs between two jobs' identities, in words; None when they are the same job."""
    if old["input"]["size"] != new["input"]["size"]:
        return f"the input changed ({old['input']['size']} -> {new['input']['size']} bytes)"
    if old["input"]["head_tail_sha256"] != new["input"]["head_tail_sha256"]:
        return "the input changed (its first or last MiB differ)"
    old_models, new_models = old["models"], new["models"]
    if len(old_models) != len(new_models):
        return f"the models changed ({len(old_models)} -> {len(new_models)} checkpoints)"
    for before, now in zip(old_models, new_models, strict=True):
        if before["sha256"] != now["sha256"]:
            return f"the model changed ({now['path']} is not the checkpoint {before['path']} was)"
    option = _first_difference(old["options"], new["options"])
    if option:
        return option
    if old.get("shard") != new.get("shard"):
        before, now = _shard_text(old.get("shard")), _shard_text(new.get("shard"))
        return f"the shard changed ({before} -> {now})"
    return None


def _shard_text(shard) -> str:
    return "the whole file" if not shard else f"{shard[0]}/{shard[1]}"


def _first_difference(old, new, name: str = "") -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = _first_difference(old.get(key), new.get(key), key)
            if found:
                return found
        return None
    if old != new:
        flag = {"beam_size": "beam", "search": "search", "noise": "noised"}.get(name, name)
        return f"the option --{flag.replace('_', '-')} changed ({old} -> {new})"
    return None


# -- byte ranges -----------------------------------------------------------------


def shard_range(path: Path, k: int, n: int) -> tuple[int, int]:
    """Byte offsets [start, end) of shard k of n: the lines that start in the k-th n-th."""
    size = path.stat().st_size
    return _line_start(path, size * (k - 1) // n, size), _line_start(path, size * k // n, size)


def _line_start(path: Path, position: int, size: int) -> int:
    """The first line start at or after `position`."""
    if position <= 0 or position >= size:
        return min(max(position, 0), size)
    with open(path, "rb") as file:
        file.seek(position - 1)
        file.readline()  # to just past the newline at or after position - 1
        return file.tell()


def count_range_lines(path: Path, start: int, end: int | None) -> int | None:
    """Lines starting in [start, end) of a plain file (the bar's total); None for gzip."""
    if end is None:
        return count_lines(path) if not is_gzip(path) else None
    count, last = 0, b"\n"
    with open(path, "rb") as file:
        file.seek(start)
        left = end - start
        while left > 0 and (block := file.read(min(1 << 20, left))):
            count += block.count(b"\n")
            left -= len(block)
            last = block[-1:]
    return count + (end > start and last != b"\n")


# -- progress bars ------------------------------------------------------------------


@contextlib.contextmanager
def _progress(show: bool, total: int | None, done: int):
    """One bar for the job, starting at the lines already done; yields advance(n)."""
    if not show:
        yield lambda n: None
        return
    from mtkit.console import progress

    with progress(rate_column()) as bar:
        task = bar.add_task("translating", total=total, completed=done)
        yield lambda n: bar.advance(task, n)


def rate_column():
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        """Lines per second of this run (lines done by earlier runs do not count)."""

        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("" if speed is None else f"{speed:,.0f} lines/s")

    return Rate()


# -- merge --------------------------------------------------------------------------


@dataclass
class Merged:
    output: Path
    shards: int
    lines: int


def merge_shards(out: Path, shards: int | None = None, keep_shards: bool = False) -> Merged:
    """Join OUT.shard-K-of-N (K = 1..N) into OUT, in input order, atomically, after checking
    that every shard is there, finished, intact and of the same job; then remove them."""
    out = Path(out)
    if shards is not None and shards < 1:
        raise ConfigError(
            f"--shards {shards}: give the N of --shard K/N (at least 1), or leave it out"
        )
    if out.is_dir():
        raise DataError(f"-o {out} is a directory; give the -o FILE the shards were translated for")
    n = shards or _shard_count(out)
    states = [_finished_shard(out, k, n) for k in range(1, n + 1)]
    _check_same_run(out, states)
    offsets, lines = [], 0
    for state in states:
        offsets.append(lines)
        lines += state["lines_done"]
    renumber = states[0]["options"]["search"]["nbest"] > 1
    renumber &= states[0]["options"]["output_format"] == "text"
    with atomic_write(out) as sink:
        for k, offset in enumerate(offsets, 1):
            with open(JobFiles.of(out, (k, n)).output, "rb") as shard:
                if renumber:
                    _copy_renumbered(shard, sink, offset)
                else:
                    while block := shard.read(1 << 20):
                        sink.write(block)
    if not keep_shards:
        for k in range(1, n + 1):
            files = JobFiles.of(out, (k, n))
            files.output.unlink(missing_ok=True)
            files.progress.unlink(missing_ok=True)
    log.info("merged %d shards, %d lines, into %s", n, lines, out)
    return Merged(out, n, lines)


def _shard_count(out: Path) -> int:
    """N of the OUT.shard-K-of-N files beside OUT; DataError when none, or several N."""
    directory = out.parent if str(out.parent) else Path(".")
    prefix, counts = f"{out.name}.shard-", set()
    for path in directory.glob(f"{out.name}.shard-*-of-*.progress.json"):
        middle = path.name[len(prefix) : -len(".progress.json")]
        k, _, n = middle.partition("-of-")
        if k.isdigit() and n.isdigit():
            counts.add(int(n))
    if not counts:
        raise DataError(
            f"no shards of {out} found (files {out.name}.shard-K-of-N.progress.json in "
            f"{directory}); translate them with --shard K/N -o {out} first"
        )
    if len(counts) > 1:
        split = ", ".join(f"of {n}" for n in sorted(counts))
        raise DataError(
            f"shards of {out} from different splits are there ({split}); remove the "
            "ones you do not want"
        )
    return counts.pop()


def _finished_shard(out: Path, k: int, n: int) -> dict:
    files = JobFiles.of(out, (k, n))
    if not files.progress.exists():
        raise DataError(
            f"shard {k} of {n} is missing (no {files.progress.name}); translate it with "
            f"--shard {k}/{n} -o {out}"
        )
    state = load_state(files.progress, f"translate the shard again with --shard {k}/{n} --restart")
    if not state["complete"] or not files.output.exists():
        raise DataError(
            f"shard {k} of {n} is not finished ({state['lines_done']} lines done); run its "
            f"command (--shard {k}/{n}) again to complete it"
        )
    size = files.output.stat().st_size
    if size != state["output_bytes"]:
        raise DataError(
            f"{files.output} has {size} bytes but its progress file says "
            f"{state['output_bytes']}; translate it again with --shard {k}/{n} --restart"
        )
    if state.get("shard") != [k, n]:
        raise DataError(f"{files.progress} is not the progress of shard {k}/{n}")
    return state


def _check_same_run(out: Path, states: list[dict]) -> None:
    """Every shard of one input, models and options (and the same seed), tiling the input."""
    first = states[0]
    for k, state in enumerate(states[1:], 2):
        difference = job_difference(first, {**state, "shard": first["shard"]})
        if difference is None and state.get("seed") != first.get("seed"):
            difference = f"the seed differs ({first.get('seed')} -> {state.get('seed')})"
        if difference:
            raise DataError(
                f"shard {k} of {len(states)} comes from another run than shard 1 "
                f"({difference}); translate it again with the same command and --restart"
            )
    ends = [first["range"][0]] + [s["range"][1] for s in states]
    starts = [s["range"][0] for s in states]
    if ends[0] != 0 or ends[-1] != first["input"]["size"] or starts != ends[:-1]:
        raise DataError(f"the shards of {out} do not cover the input from start to end")


def _copy_renumbered(shard, sink, offset: int) -> None:
    """n-best lines `LINE ||| ...` of a shard, LINE moved by the lines of earlier shards."""
    for raw in shard:
        number, sep, rest = raw.partition(b" ||| ")
        sink.write(b"%d" % (int(number) + offset) + sep + rest)
