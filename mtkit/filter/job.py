"""Scoring a prepared corpus's training pairs as a job: resumable, in shards, merged.

Owns DATA's train pairs through mtkit.filter.dual into OUT/train.scores, one line a
pair in corpus order: `score<TAB>H_f<TAB>H_b` (`nan` three times for a pair with a
blank side), and the job around it, a translate job's (docs/translate-jobs.md) with
mtkit.translate.shards' files and helpers: OUT/train.scores.partial and
OUT/train.scores.progress.json while it runs; pairs are read and scored in chunks of
`--chunk-lines`; after each chunk the partial file is fsync'd, then the progress file
(lines done, the byte offsets in both text files after them, the partial file's bytes)
is replaced atomically. A killed job loses at most a chunk: the next run cuts the
partial file back and seeks on, and makes the same chunks, so the same batches and the
same bytes. When the last pair is in, the partial file becomes OUT/train.scores and the
progress file stays, marked complete, so a later run (another --keep) scores nothing.

Identity: the corpus (the manifest's SHA-256 of both training files), the two models
(SHA-256 of each file) and every option that changes a figure (chunks, batches,
device, precision); a run that differs is refused with one line, unless --restart.

Shards (--workers N) are line ranges, [lines (K-1)/N, lines K/N) from the manifest's
count; each runs as a job in its own process (OUT/train.scores.shard-K-of-N), with one
progress bar over all (mtkit.translate.workers.watch_shards), and are merged in order.
The selection of pairs is mtkit.filter.select's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mtkit.errors import ConfigError, DataError, one_line
from mtkit.filter.dual import PairScore, check_coverage, load_models, score_chunk
from mtkit.io import atomic_write, open_binary
from mtkit.translate.batching import BatchOptions
from mtkit.translate.shards import (
    KILL_AFTER_ENV,
    JobFiles,
    _finish,
    _first_difference,
    _open_partial,
    file_sha256,
    load_state,
    rate_column,
    write_state,
)
from mtkit.translate.stream import RuntimeOptions

log = logging.getLogger(__name__)

SCORES = "train.scores"
# Decimals of the figures in OUT/train.scores: float32 tells every two such scores in
# (0, 1] apart, so mtkit.filter.select may hold them as float32.
SCORE_DECIMALS = 6
KIND = "filter job"
PROGRESS_FORMAT = 1
_RESTART_HINT = "run the command as before to continue, or add --restart to start over"


@dataclass(frozen=True)
class Corpus:
    """A prepared corpus's training split, as its manifest records it."""

    data: Path
    langs: dict  # {"src": "de", "tgt": "en"}
    src: dict  # the manifest's entry of DATA/train.SRC: name, lines, bytes, sha256
    tgt: dict
    manifest: dict

    @property
    def lines(self) -> int:
        return self.src["lines"]

    def path(self, side: str) -> Path:
        return self.data / getattr(self, side)["name"]


def open_corpus(data: Path) -> Corpus:
    """DATA's manifest and training files, checked: both there, as long as it says."""
    import json

    from mtkit.manifest import MANIFEST, manifest_langs

    data = Path(data)
    path = data / MANIFEST
    if not path.is_file():
        raise DataError(
            f"{data} has no {MANIFEST}; filter reads a corpus written by `mtkit prepare`"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        langs = manifest_langs(manifest)
        files = manifest["splits"]["train"]["files"]
        src, tgt = files[langs[0]], files[langs[1]]
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path} names no training split and languages ({error})") from None
    corpus = Corpus(data, {"src": langs[0], "tgt": langs[1]}, src, tgt, manifest)
    for side in ("src", "tgt"):
        file, entry = corpus.path(side), getattr(corpus, side)
        if not file.is_file() or file.stat().st_size != entry["bytes"]:
            raise DataError(
                f"{file} is missing or not the {entry['bytes']} bytes {MANIFEST} records; "
                "prepare the corpus again"
            )
    if src["lines"] != tgt["lines"]:
        raise DataError(f"{path} records {src['lines']} and {tgt['lines']} training lines")
    return corpus


# -- one job: the whole split or one shard -------------------------------------------


def run_scoring(
    corpus: Corpus,
    out: Path,
    models: tuple[Path, Path],
    batching: BatchOptions = BatchOptions(),
    runtime: RuntimeOptions = RuntimeOptions(),
    shard: tuple[int, int] | None = None,
    restart: bool = False,
    show_progress: bool = True,
) -> int:
    """Score the training pairs (or shard `shard` = (K, N) of them) into OUT/train.scores
    (or its shard file), continuing an earlier run; returns the pairs this run scored."""
    files = JobFiles.of(Path(out) / SCORES, shard)
    identity = scoring_identity(corpus, models, batching, runtime, shard)
    state = None if restart else read_state(files, identity)
    if state is not None and state["complete"]:
        return _done_already(files, state)
    if state is None:
        state = {**identity, "lines_done": 0, "src_offset": None, "tgt_offset": None,
                 "output_bytes": 0, "complete": False}  # fmt: skip
    elif state["lines_done"]:
        log.info("%s: continuing after pair %d", files.output, state["lines_done"])
    dual = load_models(*models, corpus.langs, runtime)
    check_coverage(dual, _head(corpus), (str(corpus.path("src")), str(corpus.path("tgt"))))
    first, end = state["range"]
    done_before = state["lines_done"]
    fresh = restart or not done_before
    with (
        _open_partial(files, files.output, state, fresh) as sink,
        _progress(show_progress, end - first, done_before) as advance,
    ):
        for chunk, offsets in _chunks(corpus, state, batching.chunk_lines):
            lines = "".join(format_score(s) for s in score_chunk(dual, chunk, batching))
            sink.write(lines.encode("utf-8"))
            state["lines_done"] += len(chunk)
            state["src_offset"], state["tgt_offset"] = offsets
            _kill_for_tests(state["lines_done"], sink)
            _commit(files, state, sink, complete=state["lines_done"] == end - first)
            advance(len(chunk))
        if not state["complete"]:  # an empty range
            _commit(files, state, sink, complete=True)
    _finish(files, keep_progress=True)
    return state["lines_done"] - done_before


def format_score(score: PairScore | None) -> str:
    """One line of OUT/train.scores."""
    if score is None:
        return "nan\tnan\tnan\n"
    digits = SCORE_DECIMALS
    return f"{score.score:.{digits}f}\t{score.forward:.{digits}f}\t{score.backward:.{digits}f}\n"


def _commit(files: JobFiles, state: dict, sink, complete: bool) -> None:
    """Make the lines written so far durable, then say so in the progress file."""
    sink.flush()  # and fsync
    state["output_bytes"] = sink.tell()
    state["complete"] = complete
    write_state(files, state)


def _kill_for_tests(lines_done: int, sink) -> None:
    """Tests: SIGKILL this process once `MTKIT_TEST_KILL_AFTER_LINES` pairs are written,
    before they are committed, as kill -9 would (mtkit.translate.shards' hook)."""
    kill = os.environ.get(KILL_AFTER_ENV)
    if kill and lines_done >= int(kill):
        sink.file.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def _done_already(files: JobFiles, state: dict) -> int:
    if files.partial.exists():  # ended between its last commit and the rename
        _finish(files, keep_progress=True)
    elif not files.output.exists():
        raise DataError(
            f"{files.progress} says the scoring is complete but {files.output} is missing; "
            "add --restart to score again"
        )
    return 0


def _head(corpus: Corpus) -> list[tuple[str, str]]:
    from mtkit.filter.dual import UNK_SAMPLE_LINES
    from mtkit.manifest import head_lines

    src = head_lines(corpus.path("src"), UNK_SAMPLE_LINES)
    tgt = head_lines(corpus.path("tgt"), UNK_SAMPLE_LINES)
    return list(zip(src, tgt, strict=False))


def _chunks(corpus: Corpus, state: dict, size: int):
    """(pairs, byte offsets after them) of up to `size` pairs, from the committed place."""
    chunk: list[tuple[str, str]] = []
    offsets = (0, 0)
    for pair, offsets in _pairs(corpus, state):  # noqa: B007 - the last offsets are used
        chunk.append(pair)
        if len(chunk) == size:
            yield chunk, offsets
            chunk = []
    if chunk:
        yield chunk, offsets


def _pairs(corpus: Corpus, state: dict) -> Iterator[tuple[tuple[str, str], tuple[int, int]]]:
    """The job's pairs after the committed ones, each with the offsets after it."""
    first, end = state["range"]
    number = first + state["lines_done"]
    with open_binary(corpus.path("src")) as src, open_binary(corpus.path("tgt")) as tgt:
        if state["src_offset"] is not None:
            src.seek(state["src_offset"])
            tgt.seek(state["tgt_offset"])
        else:
            for _ in range(number):
                src.readline()
                tgt.readline()
        offsets = [src.tell(), tgt.tell()]
        while number < end:
            a, b = src.readline(), tgt.readline()
            if not a or not b:
                raise DataError(
                    f"{corpus.path('src' if not a else 'tgt')} ends at line {number}, but the "
                    f"manifest records {corpus.lines}; prepare the corpus again"
                )
            number += 1
            offsets[0] += len(a)
            offsets[1] += len(b)
            yield (_text(a, corpus, "src", number), _text(b, corpus, "tgt", number)), tuple(offsets)


def _text(raw: bytes, corpus: Corpus, side: str, number: int) -> str:
    try:
        return raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{corpus.path(side)} line {number} is not valid UTF-8 ({error.reason}); "
            "prepare the corpus again"
        ) from None


@contextlib.contextmanager
def _progress(show: bool, total: int, done: int):
    if not show:
        yield lambda n: None
        return
    from mtkit.console import progress

    with progress(rate_column()) as bar:
        task = bar.add_task("scoring pairs", total=total, completed=done)
        yield lambda n: bar.advance(task, n)


# -- identity ---------------------------------------------------------------------------


def scoring_identity(corpus, models, batching: BatchOptions, runtime, shard) -> dict:
    """What a scoring job is: the corpus, both models and every option that changes a figure."""
    import torch

    from mtkit.device import pick_device, pick_precision
    from mtkit.translate.logprob import DEFAULT_MAX_TOKENS

    device = pick_device(runtime.device)
    first, end = (0, corpus.lines)
    if shard is not None:
        k, n = shard
        first, end = corpus.lines * (k - 1) // n, corpus.lines * k // n
    return {
        "mtkit": KIND,
        "format": PROGRESS_FORMAT,
        "corpus": {side: dict(getattr(corpus, side)) for side in ("src", "tgt")},
        "models": {
            name: {"path": str(path), "sha256": file_sha256(Path(path))}
            for name, path in zip(("forward", "backward"), models, strict=True)
        },
        "options": {
            "chunk_lines": batching.chunk_lines,
            "max_tokens": batching.max_tokens or DEFAULT_MAX_TOKENS[device.type],
            "batch_size": batching.batch_size,
            "device": device.type,
            "precision": pick_precision(
                runtime.precision, torch.device(device.type), command="logprob"
            ),
            "quantize": runtime.quantize,
        },
        "shard": list(shard) if shard else None,
        "range": [first, end],
    }


def read_state(files: JobFiles, identity: dict) -> dict | None:
    """The earlier run's state when it is the same job; None when there is none."""
    if not files.progress.exists():
        return None
    state = load_state(files.progress, kind=KIND)
    difference = job_difference(state, identity)
    if difference:
        raise ConfigError(f"{files.progress} belongs to another job: {difference}; {_RESTART_HINT}")
    return state


def job_difference(old: dict, new: dict) -> str | None:
    """What differs between two scoring jobs, in words; None when they are the same."""
    for side in ("src", "tgt"):
        if old["corpus"][side]["sha256"] != new["corpus"][side]["sha256"]:
            return f"the corpus changed ({new['corpus'][side]['name']} is another file)"
    for name in ("forward", "backward"):
        if old["models"][name]["sha256"] != new["models"][name]["sha256"]:
            return f"the --{name} model changed ({new['models'][name]['path']})"
    option = _first_difference(old["options"], new["options"])
    if option:
        return option
    if old["shard"] != new["shard"]:
        return f"the shard changed ({old['shard']} -> {new['shard']})"
    return None


# -- workers --------------------------------------------------------------------------


def run_workers(
    n: int,
    corpus: Corpus,
    out: Path,
    models: tuple[Path, Path],
    batching: BatchOptions,
    runtime: RuntimeOptions,
    restart: bool,
) -> int:
    """N processes, shard K of N each, with cores // N torch threads unless --threads, then
    the merge into OUT/train.scores. A second run continues every shard where it stopped."""
    from mtkit.translate.workers import cores, run_shard_processes

    if runtime.device == "cuda":
        raise ConfigError("--workers starts CPU processes; on a GPU, run one process")
    runtime = dataclasses.replace(
        runtime, device="cpu", threads=runtime.threads or max(1, cores() // n)
    )
    whole = JobFiles.of(Path(out) / SCORES)
    identity = scoring_identity(corpus, models, batching, runtime, None)
    state = None if restart else read_state(whole, identity)
    if state is not None and state["complete"]:
        return _done_already(whole, state)
    log.info("%d workers, %d torch threads each", n, runtime.threads)
    args = (corpus, out, models, batching, runtime)
    run_shard_processes(
        _worker, args, n, restart, whole.output, corpus.lines, description="scoring pairs"
    )
    return merge_scores(corpus, out, n, identity)


def _worker(corpus, out, models, batching, runtime, shard, restart) -> None:
    """One worker process: its shard as a job, errors as one line."""
    from mtkit.translate.workers import die_with_parent

    die_with_parent()
    os.environ["OMP_NUM_THREADS"] = str(runtime.threads)  # before torch loads
    from mtkit.console import setup_logging

    setup_logging()
    logging.getLogger("mtkit").setLevel(logging.WARNING)  # N copies of the start-up lines
    try:
        run_scoring(corpus, out, models, batching, runtime, shard, restart, show_progress=False)
    except Exception as error:
        message = one_line(error)
        if message is None:
            raise  # a bug, with its traceback
        print(f"error: shard {shard[0]}/{shard[1]}: {message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


def merge_scores(corpus: Corpus, out: Path, n: int, identity: dict) -> int:
    """The shards' score files, each complete, intact and of this job, joined in order into
    OUT/train.scores with a progress file marked complete; then the shards go."""
    whole = JobFiles.of(Path(out) / SCORES)
    shards = [JobFiles.of(whole.output, (k, n)) for k in range(1, n + 1)]
    end = 0
    for k, files in enumerate(shards, 1):
        state = load_state(files.progress, "score it again with --restart", kind=KIND)
        same = {**identity, "shard": [k, n]}
        difference = job_difference(state, same)
        if difference or not state["complete"] or state["range"][0] != end:
            raise DataError(f"shard {k}/{n} of {whole.output} is not a finished shard of this job")
        if files.output.stat().st_size != state["output_bytes"]:
            raise DataError(f"{files.output} is not the size its progress file says")
        end = state["range"][1]
    if end != corpus.lines:
        raise DataError(f"the shards of {whole.output} do not cover the corpus")
    with atomic_write(whole.output) as sink:
        for files in shards:
            with open(files.output, "rb") as shard:
                while block := shard.read(1 << 20):
                    sink.write(block)
        size = sink.tell()
    write_state(whole, {**identity, "lines_done": corpus.lines, "src_offset": None,
                        "tgt_offset": None, "output_bytes": size, "complete": True})  # fmt: skip
    for files in [*shards, whole]:  # and a one-process run's partial file, superseded
        files.partial.unlink(missing_ok=True)
    for files in shards:
        files.output.unlink(missing_ok=True)
        files.progress.unlink(missing_ok=True)
    return corpus.lines
