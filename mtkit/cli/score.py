"""`mtkit score`: its options, over `mtkit.score.score_files`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mtkit.cli.options import command, input_option, options_from
from mtkit.comet import CometOptions
from mtkit.score import ReportOptions, ScoreOptions, SignificanceOptions

_SIGNIFICANCE = "Significance"

_Refs = Annotated[
    list[Path],
    typer.Option(
        "--ref", "-r", metavar="FILE", help="A reference file (plain or .gz); repeat for several."
    ),
]
_Inputs = Annotated[
    list[Path],
    input_option(
        "Hypotheses, one a line (stdin when absent); repeat to compare systems, the baseline first."
    ),
]
_Metrics = Annotated[
    str, typer.Option("--metrics", "-m", help="Comma-separated: bleu, chrf, ter, comet.")
]
_COMET = "COMET"
_Source = Annotated[
    Path | None,
    typer.Option(
        "--source", "-s", metavar="FILE", help="The sources (COMET reads them).",
        rich_help_panel=_COMET,
    ),
]  # fmt: skip
_CometModel = Annotated[
    str | None,
    typer.Option(
        metavar="NAME|DIR",
        help="A COMET model: a hub name (Unbabel/wmt22-comet-da; the hub or its local cache) "
        "or a directory with hparams.yaml and checkpoints/model.ckpt.",
        rich_help_panel=_COMET,
    ),
]
_CometBatchSize = Annotated[
    int, typer.Option(help="Segments a COMET batch.", rich_help_panel=_COMET)
]
_CometDevice = Annotated[
    str,
    typer.Option(
        "--device", help="COMET's device: auto (a CUDA GPU if there is one), cpu or cuda.",
        rich_help_panel=_COMET,
    ),
]  # fmt: skip
_CometPrecision = Annotated[
    str,
    typer.Option(
        "--precision",
        help="COMET's precision: fp32 (SacreCOMET's default), bf16 or fp16 (comet-score "
        "2.2's model.half()); the signature names it.",
        rich_help_panel=_COMET,
    ),
]
_Tokenize = Annotated[
    str,
    typer.Option(
        "--tokenize",
        "-tok",
        help="BLEU's tokenizer: 13a (the WMT standard), intl, zh, char or none.",
    ),
]
_Lowercase = Annotated[
    bool, typer.Option("--lowercase", "-lc", help="Case-insensitive BLEU and chrF.")
]
_ChrfWordOrder = Annotated[int, typer.Option(help="Word n-gram order of chrF; 2 gives chrF++.")]
_TerCaseSensitive = Annotated[
    bool,
    typer.Option("--ter-case-sensitive", help="Case-sensitive TER (sacreBLEU's TER ignores case)."),
]
_PairedBs = Annotated[
    bool,
    typer.Option(
        "--paired-bs",
        help="Paired bootstrap resampling: each -i system against the first (sacreBLEU's).",
        rich_help_panel=_SIGNIFICANCE,
    ),
]
_PairedAr = Annotated[
    bool,
    typer.Option(
        "--paired-ar",
        help="Paired approximate randomization against the first -i system.",
        rich_help_panel=_SIGNIFICANCE,
    ),
]
_PairedBsN = Annotated[
    int, typer.Option(help="Bootstrap resamples.", rich_help_panel=_SIGNIFICANCE)
]
_PairedArN = Annotated[
    int, typer.Option(help="Randomization trials.", rich_help_panel=_SIGNIFICANCE)
]
_Confidence = Annotated[
    bool,
    typer.Option(
        "--confidence",
        help="95% bootstrap confidence interval of one system.",
        rich_help_panel=_SIGNIFICANCE,
    ),
]
_ConfidenceN = Annotated[
    int, typer.Option(help="Resamples for --confidence.", rich_help_panel=_SIGNIFICANCE)
]
_Seed = Annotated[
    int,
    typer.Option(
        help="Resampling seed (sacreBLEU's SACREBLEU_SEED).", rich_help_panel=_SIGNIFICANCE
    ),
]
_Width = Annotated[int, typer.Option("--width", "-w", help="Decimals in the scores.")]
_ScoreOnly = Annotated[bool, typer.Option("--score-only", "-b", help="Print only the numbers.")]
_AsJson = Annotated[
    bool, typer.Option("--json", help="sacreBLEU's JSON: an object, or a list for several.")
]


@command(
    "score",
    short_help="Score translations: sacreBLEU's BLEU, chrF, TER; COMET.",
    example="mtkit score -r ref.en -i hyp.en --metrics bleu,chrf",
)
def score_command(
    refs: _Refs,
    inputs: _Inputs = [],  # noqa: B006 (typer needs a literal default)
    metrics: _Metrics = ",".join(ScoreOptions.metrics),
    tokenize: _Tokenize = ScoreOptions.tokenize,
    lowercase: _Lowercase = ScoreOptions.lowercase,
    chrf_word_order: _ChrfWordOrder = ScoreOptions.chrf_word_order,
    ter_case_sensitive: _TerCaseSensitive = ScoreOptions.ter_case_sensitive,
    paired_bs: _PairedBs = SignificanceOptions.paired_bs,
    paired_ar: _PairedAr = SignificanceOptions.paired_ar,
    paired_bs_n: _PairedBsN = SignificanceOptions.paired_bs_n,
    paired_ar_n: _PairedArN = SignificanceOptions.paired_ar_n,
    confidence: _Confidence = SignificanceOptions.confidence,
    confidence_n: _ConfidenceN = SignificanceOptions.confidence_n,
    seed: _Seed = SignificanceOptions.seed,
    width: _Width = ReportOptions.width,
    score_only: _ScoreOnly = ReportOptions.score_only,
    as_json: _AsJson = ReportOptions.as_json,
    source: _Source = None,
    comet_model: _CometModel = CometOptions.comet_model,
    comet_batch_size: _CometBatchSize = CometOptions.comet_batch_size,
    device: _CometDevice = CometOptions.device,
    precision: _CometPrecision = CometOptions.precision,
) -> None:
    """Score hypotheses with sacreBLEU (BLEU, chrF, TER, signatures); compare systems with
    sacreBLEU's paired significance tests. COMET (--metrics comet) through unbabel-comet,
    with the sources (-s) and a model (--comet-model)."""
    from mtkit.score import parse_metrics, score_files

    params = locals()
    if not inputs and sys.stdin.isatty():
        print(
            "reading hypotheses from standard input (pass -i FILE to read a file)", file=sys.stderr
        )
    scoring = options_from(ScoreOptions, params, metrics=tuple(parse_metrics(metrics)))
    significance = options_from(SignificanceOptions, params)
    report = options_from(ReportOptions, params)
    comet = options_from(CometOptions, params)
    typer.echo(score_files(refs, inputs or [None], scoring, significance, report, source, comet))
