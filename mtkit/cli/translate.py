"""`mtkit translate` and `mtkit translate-merge`: their options, over
`mtkit.translate.command.translate` (which picks pipe, job, shard, workers or torchrun)
and `mtkit.translate.shards.merge_shards`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mtkit.cli.options import (
    Device,
    InputFile,
    Models,
    OutputFile,
    Precision,
    SrcLang,
    TgtLang,
    Threads,
    command,
    options_from,
    out_option,
)
from mtkit.search import SearchOptions
from mtkit.translate.batching import BatchOptions
from mtkit.translate.command import JobOptions
from mtkit.translate.noise import NoiseOptions
from mtkit.translate.stream import Decoding, RuntimeOptions
from mtkit.translate.terms import ConstraintOptions

_BeamSize = Annotated[int, typer.Option("--beam", help="Beam size; 1 is greedy search.")]
_Nbest = Annotated[
    int, typer.Option(help="Write the K best as 'LINE ||| text ||| score' lines (LINE from 0).")
]
_LenPenalty = Annotated[
    float, typer.Option(help="GNMT length penalty alpha: score / ((5+|Y|)/6)^alpha.")
]
_LenNorm = Annotated[bool, typer.Option("--len-norm", help="Rank by mean log-probability instead.")]
_EarlyStop = Annotated[
    bool,
    typer.Option("--early-stop", help="End a sentence when the best candidate ends (faster)."),
]
_Stop = Annotated[
    str,
    typer.Option(
        help="When a sentence's beam is done: bound (no unfinished hypothesis can still win "
        "under the length penalty) or count (beam-size hypotheses ended: fairseq's rule, "
        "shorter output)."
    ),
]
_MaxLenA = Annotated[float, typer.Option(help="Max target tokens = a * source tokens + b.")]
_MaxLenB = Annotated[int, typer.Option(help="See --max-len-a.")]
_MinLen = Annotated[
    int, typer.Option(help="Target tokens before the end may come (0: no minimum).")
]
_Sampling = Annotated[
    bool, typer.Option("--sampling", help="Sample instead of beam search (--nbest samples).")
]
_TopK = Annotated[int, typer.Option(help="Sample among the k likeliest tokens; 0: all.")]
_TopP = Annotated[float, typer.Option(help="Sample from the top-p probability mass.")]
_Temperature = Annotated[float, typer.Option(help="Sampling temperature.")]
_Seed = Annotated[
    int | None,
    typer.Option(help="Seed of --sampling and --noised, per line (resumes and shards agree)."),
]
_MaxTokens = Annotated[
    int | None,
    typer.Option(
        help="Batch budget: sentences x beam x longest source; default 6000 CPU, 60000 GPU."
    ),
]
_BatchSize = Annotated[int | None, typer.Option(help="At most this many sentences a batch.")]
_ChunkLines = Annotated[
    int,
    typer.Option(
        help="Lines read, sorted and translated together (bounds memory); -o FILE "
        "jobs commit their progress after each."
    ),
]
_Quantize = Annotated[str, typer.Option(help="int8: dynamic int8 linear layers on the CPU; none.")]
_Noised = Annotated[
    bool,
    typer.Option(
        "--noised",
        help="Back-translation noise (Edunov et al. 2018): delete and blank words, "
        "shuffle locally; seeded per line.",
    ),
]
_NoiseFiller = Annotated[str, typer.Option(help="The word --noised puts for blanks.")]
_OutputFormat = Annotated[
    str, typer.Option(help="text, or tsv: source<TAB>translation (for prepare --tsv).")
]
_Shard = Annotated[
    str | None,
    typer.Option(
        metavar="K/N",
        help="Translate the K-th of N line ranges into OUT.shard-K-of-N (join: translate-merge).",
    ),
]
_Workers = Annotated[
    int, typer.Option(help="Run N CPU processes, a shard each (cores // N threads), then merge.")
]
_Restart = Annotated[
    bool,
    typer.Option("--restart", help="Drop the progress kept beside -o FILE; start from line 1."),
]
_Shortlist = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        help="A lexical shortlist from `mtkit shortlist`: each batch may produce only its "
        "sentences' listed target pieces (faster).",
    ),
]

_Constraints = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        help="Per input line, TAB-separated target phrases its translation must hold (an "
        "empty line: none); needs --beam 2 or more.",
    ),
]
_Terms = Annotated[
    Path | None,
    typer.Option(
        metavar="GLOSSARY",
        help="A glossary, 'source term<TAB>target term' lines: a line's translation must hold "
        "the target terms of the source terms it holds (whole words).",
    ),
]
_TermsIgnoreCase = Annotated[
    bool,
    typer.Option("--terms-ignore-case", help="Match --terms' source terms whatever their case."),
]


@command(
    "translate",
    short_help="Translate text: beam search, sampling, n-best, ensembles.",
    example="mtkit translate -m runs/m30k/checkpoint_best.pt -i test.de -o test.en",
)
def translate_command(
    models: Models = [],  # noqa: B006 (typer needs a literal default; no model is our own clear error)
    input: InputFile = None,
    out: OutputFile = None,
    beam_size: _BeamSize = SearchOptions.beam_size,
    nbest: _Nbest = SearchOptions.nbest,
    len_penalty: _LenPenalty = SearchOptions.len_penalty,
    len_norm: _LenNorm = SearchOptions.len_norm,
    early_stop: _EarlyStop = SearchOptions.early_stop,
    stop: _Stop = SearchOptions.stop,
    max_len_a: _MaxLenA = SearchOptions.max_len_a,
    max_len_b: _MaxLenB = SearchOptions.max_len_b,
    min_len: _MinLen = SearchOptions.min_len,
    sampling: _Sampling = SearchOptions.sampling,
    top_k: _TopK = SearchOptions.top_k,
    top_p: _TopP = SearchOptions.top_p,
    temperature: _Temperature = SearchOptions.temperature,
    seed: _Seed = SearchOptions.seed,
    max_tokens: _MaxTokens = BatchOptions.max_tokens,
    batch_size: _BatchSize = BatchOptions.batch_size,
    chunk_lines: _ChunkLines = BatchOptions.chunk_lines,
    device: Device = RuntimeOptions.device,
    precision: Precision = RuntimeOptions.precision,
    quantize: _Quantize = RuntimeOptions.quantize,
    threads: Threads = RuntimeOptions.threads,
    src_lang: SrcLang = RuntimeOptions.src_lang,
    tgt_lang: TgtLang = RuntimeOptions.tgt_lang,
    noised: _Noised = NoiseOptions.noised,
    noise_filler: _NoiseFiller = NoiseOptions.noise_filler,
    output_format: _OutputFormat = Decoding.output_format,
    shard: _Shard = JobOptions.shard,
    workers: _Workers = JobOptions.workers,
    restart: _Restart = JobOptions.restart,
    shortlist: _Shortlist = None,
    constraints: _Constraints = None,
    terms: _Terms = None,
    terms_ignore_case: _TermsIgnoreCase = ConstraintOptions.terms_ignore_case,
) -> None:
    """Translate text with one checkpoint or an ensemble: one line out for every line in.

    With -i FILE -o FILE it is a job that a second run continues after a crash
    (progress in FILE.progress.json), and that --shard, --workers or torchrun split.
    """
    from mtkit.translate.command import translate

    params = locals()
    decoding = Decoding(
        options_from(SearchOptions, params),
        options_from(BatchOptions, params),
        options_from(
            RuntimeOptions, params, shortlist=None if shortlist is None else str(shortlist)
        ),
        options_from(NoiseOptions, params),
        output_format,
        _constraint_options(params),
    )
    translate(models, input, out, decoding, options_from(JobOptions, params))


def _constraint_options(params: dict) -> ConstraintOptions:
    """--constraints, --terms (paths, as the strings the options hold), --terms-ignore-case."""
    paths = {name: params[name] and str(params[name]) for name in ("constraints", "terms")}
    return options_from(ConstraintOptions, params, **paths)


@command(
    "translate-merge",
    short_help="Join translate --shard outputs in input order.",
    example="mtkit translate-merge -o news.en --shards 4",
)
def translate_merge_command(
    out: Annotated[Path, out_option("The -o FILE the shards were translated for.")],
    shards: Annotated[
        int | None, typer.Option(help="N of the shards; default: the N of the shards found.")
    ] = None,
    keep_shards: Annotated[
        bool, typer.Option("--keep-shards", help="Keep the shard files after the merge.")
    ] = False,
) -> None:
    """Join the shards of `translate --shard K/N -o FILE` into FILE, in input order, after
    checking that every shard is there, finished and from the same run."""
    from mtkit.translate.shards import merge_shards

    merged = merge_shards(out, shards, keep_shards)
    lines, count = merged.lines, merged.shards
    print(f"wrote {merged.output} ({lines} lines from {count} shards)", file=sys.stderr)
