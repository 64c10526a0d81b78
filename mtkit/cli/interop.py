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


@command(
    "export",
    short_help="Export a Transformer checkpoint to CTranslate2.",
    example="mtkit export -m model.pt --to ctranslate2 -o model-ct2",
)
def export_command(
    model: Annotated[Path, model_option("Transformer checkpoint (.pt).")],
    out: Annotated[Path, out_option("Model directory to write.")],
    to: Annotated[str, typer.Option(help="Target format: ctranslate2.")] = ExportOptions.to,
    quantize: Annotated[
        str,
        typer.Option(help="Weights: none (float32), int8, int8_float16, float16, bfloat16."),
    ] = ExportOptions.quantize,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the directory if it exists.")
    ] = ExportOptions.force,
    shortlist: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="A shortlist from `mtkit shortlist`, written as vmap.txt (translate_batch's "
            "use_vmap=True).",
        ),
    ] = ExportOptions.shortlist,
) -> None:
    """Export a Transformer checkpoint to CTranslate2 (model, vocabularies, SentencePiece)."""
    from mtkit.interop.ctranslate2 import export_ctranslate2

    export_ctranslate2(model, out, options_from(ExportOptions, locals()))
