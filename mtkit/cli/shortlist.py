"""`mtkit shortlist`: its options, over `mtkit.shortlist.build_shortlist_file`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mtkit.cli.options import command, model_option, options_from, out_option
from mtkit.shortlist import ShortlistOptions


@command(
    "shortlist",
    short_help="Build a lexical shortlist for faster decoding.",
    example="mtkit shortlist --data data/m30k -m runs/m30k/checkpoint_best.pt "
    "-o runs/m30k/shortlist.npz",
)
def shortlist_command(
    data: Annotated[Path, typer.Option(help="Prepared data: DATA/train.{src,tgt} are read.")],
    out: Annotated[Path, out_option("The shortlist file (.npz).")],
    model: Annotated[Path | None, model_option("The checkpoint it is for.", "CKPT")] = None,
    spm: Annotated[
        Path | None, typer.Option(help="Or the joint SentencePiece model the model uses.")
    ] = None,
    best: Annotated[
        int, typer.Option(help="Target pieces kept per source piece.")
    ] = ShortlistOptions.best,
    first: Annotated[
        int, typer.Option(help="The most frequent target pieces, always allowed.")
    ] = ShortlistOptions.first,
    method: Annotated[
        str, typer.Option(help="ibm1 (IBM model 1's p(t|s)) or dice (co-occurrence).")
    ] = ShortlistOptions.method,
    iterations: Annotated[int, typer.Option(help="IBM-1 EM iterations.")] = (
        ShortlistOptions.iterations
    ),
    max_pairs: Annotated[
        int, typer.Option(help="Training pairs read, from the start; 0: all.")
    ] = ShortlistOptions.max_pairs,
    src: Annotated[
        str | None, typer.Option(help="Source language; default: manifest.json.")
    ] = None,
    tgt: Annotated[
        str | None, typer.Option(help="Target language; default: manifest.json.")
    ] = None,
) -> None:
    """Build a lexical shortlist (as Marian's): per source piece, the target pieces it
    translates to most often in the training data, for `translate --shortlist` and
    `export --shortlist`. Prints its coverage of DATA/valid."""
    from mtkit.shortlist import build_shortlist_file

    options = options_from(ShortlistOptions, locals())
    found = build_shortlist_file(data, out, options, model, spm, src, tgt)
    print(f"wrote {out}", file=sys.stderr)
    if found:
        print(
            f"valid: {found['coverage']:.2%} of reference pieces covered, "
            f"{found['mean_size']:.0f} pieces a sentence ({found['sentences']} sentences)",
            file=sys.stderr,
        )
