"""`mtkit filter`'s one entry point: score the training pairs (a job), then keep the best.

Owns the checks before any model loads (the selection, the options, OUT beside DATA),
then runs the scoring in one process or in `--workers` processes (mtkit.filter.job)
and the selection (mtkit.filter.select). Imports flow downward: command -> select, job
-> dual -> mtkit.translate.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mtkit.errors import ConfigError, DataError
from mtkit.filter.job import KIND, SCORES, open_corpus, run_scoring, run_workers
from mtkit.filter.select import Selection, select
from mtkit.io import make_directory
from mtkit.translate.batching import BatchOptions
from mtkit.translate.shards import JobFiles, load_state
from mtkit.translate.stream import RuntimeOptions

log = logging.getLogger(__name__)


def filter_corpus(
    data: Path,
    out: Path,
    forward: Path,
    backward: Path,
    selection: Selection = Selection(),
    batching: BatchOptions = BatchOptions(),
    runtime: RuntimeOptions = RuntimeOptions(),
    workers: int = 0,
    restart: bool = False,
) -> dict:
    """`mtkit filter`: score DATA's training pairs with the forward (src -> tgt) and
    backward (tgt -> src) models, keep `selection`'s share or threshold, and write them
    with the valid and test splits to OUT as a prepared corpus; returns its manifest."""
    selection.check()
    batching.check()
    if workers < 0:
        raise ConfigError(f"--workers must be 0 or more, got {workers}")
    data, out = Path(data), Path(out)
    corpus = open_corpus(data)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a directory")
    if out.resolve() == data.resolve():
        raise ConfigError(f"--out {out} is --data itself; write the filtered corpus elsewhere")
    make_directory(out)
    models = (Path(forward), Path(backward))
    if workers > 1:
        run_workers(workers, corpus, out, models, batching, runtime, restart)
    else:
        run_scoring(corpus, out, models, batching, runtime, restart=restart)
    state = load_state(JobFiles.of(out / SCORES).progress, kind=KIND)
    return select(corpus, out, selection, {"models": state["models"], "options": state["options"]})
