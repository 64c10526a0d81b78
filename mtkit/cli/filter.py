"""`mtkit filter`: its options, over `mtkit.filter.command.filter_corpus`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mtkit.cli.options import Device, Precision, Threads, command, options_from, out_option
from mtkit.filter.select import Selection
from mtkit.translate.batching import BatchOptions
from mtkit.translate.stream import RuntimeOptions

_Data = Annotated[
    Path,
    typer.Option(metavar="DIR", help="A prepared corpus: DIR/manifest.json and its text files."),
]
_Forward = Annotated[
    Path,
    typer.Option(
        "--forward", "-f", metavar="CKPT", help="A model translating the corpus's source side."
    ),
]
_Backward = Annotated[
    Path,
    typer.Option(
        "--backward", "-b", metavar="CKPT", help="A model translating its target side back."
    ),
]
_Out = Annotated[
    Path,
    out_option("Where the kept pairs go, as a prepared corpus (+ train.scores).", "DIR"),
]
_Keep = Annotated[
    float | None, typer.Option(help="Keep this share of the pairs, the best-scored (e.g. 0.8).")
]
_Threshold = Annotated[
    float | None,
    typer.Option(help="Or keep the pairs scoring at least this, in (0, 1] (e.g. 0.25)."),
]
_MaxTokens = Annotated[
    int | None,
    typer.Option(help="Batch budget: pairs x longest side; default 4000 CPU, 32000 GPU."),
]
_BatchSize = Annotated[int | None, typer.Option(help="At most this many pairs a batch.")]
_ChunkLines = Annotated[
    int,
    typer.Option(help="Pairs read, scored and committed together (bounds memory and lost work)."),
]
_Workers = Annotated[
    int, typer.Option(help="Run N CPU processes, a share of the pairs each, then merge.")
]
_Restart = Annotated[
    bool, typer.Option("--restart", help="Drop the scores kept in OUT and score again.")
]


@command(
    "filter",
    short_help="Keep a corpus's cleanest pairs (dual cross-entropy).",
    example="mtkit filter --data data/noisy -f de-en.pt -b en-de.pt --keep 0.8 -o data/clean",
)
def filter_command(
    data: _Data,
    forward: _Forward,
    backward: _Backward,
    out: _Out,
    keep: _Keep = Selection.keep,
    threshold: _Threshold = Selection.threshold,
    max_tokens: _MaxTokens = BatchOptions.max_tokens,
    batch_size: _BatchSize = BatchOptions.batch_size,
    chunk_lines: _ChunkLines = BatchOptions.chunk_lines,
    device: Device = RuntimeOptions.device,
    precision: Precision = RuntimeOptions.precision,
    threads: Threads = RuntimeOptions.threads,
    workers: _Workers = 0,
    restart: _Restart = False,
) -> None:
    """Score every training pair of a prepared corpus with a forward and a backward model
    (Junczys-Dowmunt 2018's dual conditional cross-entropy) and write the best as a
    prepared corpus, its manifest counting what was dropped. The scoring is a job: run
    the same command again after a crash and it continues."""
    from mtkit.filter.command import filter_corpus

    params = locals()
    filter_corpus(
        data,
        out,
        forward,
        backward,
        options_from(Selection, params),
        options_from(BatchOptions, params),
        options_from(RuntimeOptions, params),
        workers=workers,
        restart=restart,
    )
