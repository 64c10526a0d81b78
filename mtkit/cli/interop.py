"""`mtkit import` and `mtkit export`: models in and out of other toolkits' formats, over
`mtkit.interop.hf` (Marian, NLLB-200, M2M-100 in) and `mtkit.interop.ctranslate2`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mtkit.cli.options import command, model_option, options_from, out_option
from mtkit.interop.ctranslate2 import ExportOptions


@command(
    "import",
    short_help="Import a MarianMT, NLLB-200 or M2M-100 model.",
    example="mtkit import Helsinki-NLP/opus-mt-de-en -o opus-de-en.pt",
)
def import_command(
    source: Annotated[
        str,
        typer.Argument(
            metavar="SOURCE",
            help="A Hugging Face model directory (MarianMT, NLLB-200, M2M-100), or a hub id "
            "(Helsinki-NLP/opus-mt-de-en, facebook/nllb-200-distilled-600M).",
        ),
    ],
    out: Annotated[Path, out_option("The checkpoint to write.")],
) -> None:
    """Import a MarianMT (OPUS-MT), NLLB-200 (dense) or M2M-100 model as an mtkit
    checkpoint: translate, average, ensembles, export and `train --init-from` take it
    (hub ids need mtkit[hub])."""
    from mtkit.interop.hf import import_hf

    print(f"wrote {import_hf(source, out)}", file=sys.stderr)


# `mtkit export`'s options; --quantize and --shortlist are CTranslate2's, --license and
# --scores the transformers card's.
_ModelFile = Annotated[
    Path | None, typer.Argument(metavar="MODEL", help="Transformer checkpoint (.pt).")
]
_Format = Annotated[
    str,
    typer.Option(
        "--format",
        "--to",
        help="ctranslate2 (CTranslate2's model directory) or transformers (a Hugging Face "
        "model directory for AutoModelForSeq2SeqLM, with tokenizer and model card).",
    ),
]
_Quantize = Annotated[
    str,
    typer.Option(
        help="ctranslate2: weights none (float32), int8, int8_float16, float16, bfloat16."
    ),
]
_Force = Annotated[bool, typer.Option("--force", help="Replace the directory if it exists.")]
_Shortlist = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        help="ctranslate2: a shortlist from `mtkit shortlist`, written as vmap.txt "
        "(translate_batch's use_vmap=True).",
    ),
]
_License = Annotated[
    str | None,
    typer.Option(
        metavar="ID",
        help="transformers: the model card's licence (the hub's id, e.g. cc-by-4.0); "
        "default: an imported model's, else unknown.",
    ),
]
_Scores = Annotated[
    list[Path],
    typer.Option(
        "--scores",
        metavar="FILE",
        help="transformers: a sacreBLEU report of the test set for the card (`mtkit score`, "
        "text or --json; repeat); default RUN/bleu.txt for RUN/checkpoint_avg.pt.",
    ),
]


@command(
    "export",
    short_help="Export a model to CTranslate2 or transformers.",
    example="mtkit export model.pt --format transformers -o hub-dir",
)
def export_command(
    out: Annotated[Path, out_option("Model directory to write.")],
    model_file: _ModelFile = None,
    model: Annotated[Path | None, model_option("The checkpoint, as MODEL.")] = None,
    to: _Format = ExportOptions.to,
    quantize: _Quantize = ExportOptions.quantize,
    force: _Force = ExportOptions.force,
    shortlist: _Shortlist = ExportOptions.shortlist,
    license: _License = None,
    scores: _Scores = [],  # noqa: B006 (typer's list default)
) -> None:
    """Export a Transformer checkpoint: CTranslate2 (model, vocabularies, SentencePiece) or
    transformers (config, weights, tokenizer, generation config, model card)."""
    from mtkit.errors import ConfigError

    if (model_file is None) == (model is None):
        raise ConfigError("give the checkpoint once: mtkit export MODEL (or -m MODEL) -o DIR")
    options = options_from(ExportOptions, locals())
    if options.to == "transformers":
        from mtkit.interop.hf_export import export_transformers

        path = model_file or model
        export_transformers(path, out, options, license=license, scores=scores or None)
        return
    from mtkit.interop.ctranslate2 import export_ctranslate2

    export_ctranslate2(model_file or model, out, options)
