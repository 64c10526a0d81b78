"""`mtkit logprob`: its options, over `mtkit.translate.logprob.logprob_file`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mtkit.cli.options import (
    Device,
    Models,
    OutputFile,
    Precision,
    SrcLang,
    TgtLang,
    Threads,
    command,
    input_option,
    options_from,
)
from mtkit.translate.batching import BatchOptions
from mtkit.translate.logprob import LogprobOptions
from mtkit.translate.stream import RuntimeOptions

_Input = Annotated[
    Path | None,
    input_option(
        "Sources (plain or .gz); without -r/--nbest-input, source<TAB>target lines. "
        "stdin if absent."
    ),
]
_Ref = Annotated[
    Path | None,
    typer.Option("--ref", "-r", metavar="FILE", help="Targets to score, line for line."),
]
_NbestInput = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        help="An n-best list 'N ||| hyp ||| score' (N from 0 into -i; '-': stdin): each "
        "line comes back with ' ||| logprob' appended.",
    ),
]
_PerToken = Annotated[
    bool, typer.Option("--per-token", help="Every piece's log-probability, eos last.")
]
_Normalize = Annotated[
    bool, typer.Option("--normalize", help="The mean per piece (eos counted), not the sum.")
]
_MaxTokens = Annotated[
    int | None,
    typer.Option(help="Batch budget: sentences x longest side; default 4000 CPU, 32000 GPU."),
]
_BatchSize = Annotated[int | None, typer.Option(help="At most this many pairs a batch.")]
_ChunkLines = Annotated[
    int, typer.Option(help="Pairs read, sorted and scored together (bounds memory).")
]


@command(
    "logprob",
    short_help="Log-probability of given translations, for rescoring.",
    example="mtkit logprob -m model.pt -i src.de -r hyp.en",
)
def logprob_command(
    models: Models = [],  # noqa: B006 (typer needs a literal default; no model is our own clear error)
    input: _Input = None,
    ref: _Ref = None,
    nbest_input: _NbestInput = None,
    out: OutputFile = None,
    per_token: _PerToken = LogprobOptions.per_token,
    normalize: _Normalize = LogprobOptions.normalize,
    max_tokens: _MaxTokens = BatchOptions.max_tokens,
    batch_size: _BatchSize = BatchOptions.batch_size,
    chunk_lines: _ChunkLines = BatchOptions.chunk_lines,
    device: Device = RuntimeOptions.device,
    precision: Precision = RuntimeOptions.precision,
    threads: Threads = RuntimeOptions.threads,
    src_lang: SrcLang = RuntimeOptions.src_lang,
    tgt_lang: TgtLang = RuntimeOptions.tgt_lang,
) -> None:
    """Log-probability of each target given its source under a model or an ensemble:
    one line out per line in (a blank source gives 0.0)."""
    from mtkit.translate.logprob import logprob_file

    params = locals()
    logprob_file(
        models,
        input,
        ref,
        nbest_input,
        out,
        options_from(LogprobOptions, params),
        options_from(BatchOptions, params),
        options_from(RuntimeOptions, params),
    )
