"""`mtkit average`, `mtkit inspect` and `mtkit plot`: what one does with a run's checkpoints
and metrics after training, over `mtkit.checkpoint`, `mtkit.verify` and `mtkit.plot`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mtkit.cli.options import command, out_option
from mtkit.errors import MtkitError


@command(
    "average",
    short_help="Average the weights of a run's last checkpoints.",
    example="mtkit average runs/m30k --last 5 -o runs/m30k/checkpoint_avg.pt",
)
def average_command(
    inputs: Annotated[
        list[Path],
        typer.Argument(metavar="RUN_OR_CKPTS", help="A run directory, or checkpoint files."),
    ],
    out: Annotated[Path, out_option("The averaged checkpoint to write.")],
    last: Annotated[
        int, typer.Option(help="With a run directory: average its last N numbered checkpoints.")
    ] = 5,
) -> None:
    """Average checkpoints' weights (for translating; the result cannot be resumed)."""
    from mtkit.checkpoint import average_into

    paths = average_into(inputs, out, last=last)
    print(f"averaged {len(paths)} checkpoints into {out}", file=sys.stderr)


@command(
    "inspect",
    short_help="Print a checkpoint's languages, step, metrics, settings.",
    example="mtkit inspect runs/m30k/checkpoint_best.pt",
)
def inspect_command(
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE",
            help="A checkpoint; with --verify, any checkpoints, run directories, prepared "
            "data (DATA/ or its manifest.json) and encoded corpora (DATA/.encoded/KEY).",
        ),
    ],
    json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Check the files against their checksums, one line each; exit 1 if any fails.",
        ),
    ] = False,
    langs: Annotated[
        bool,
        typer.Option("--langs", help="Print the model's language codes, one a line."),
    ] = False,
) -> None:
    """Print a checkpoint's languages, step, metrics and configuration, or (--verify) check
    files against their checksums without using them."""
    from mtkit.checkpoint import describe
    from mtkit.verify import verify_paths

    if verify:
        checks = verify_paths(files)
        for check in checks:
            typer.echo(check.line())
        if not all(check.ok for check in checks):
            raise typer.Exit(1)
        return
    if len(files) != 1:
        raise MtkitError(
            f"inspect shows one checkpoint, got {len(files)} files; pass --verify to check several"
        )
    typer.echo(describe(files[0], as_json=json_, langs=langs))


@command(
    "plot",
    short_help="Draw the training curves of one or more runs.",
    example="mtkit plot runs/a runs/b -o curves.png",
)
def plot_command(
    runs: Annotated[
        list[Path],
        typer.Argument(metavar="RUN", help="Run directories (RUN/metrics.jsonl); overlaid."),
    ],
    out: Annotated[Path, out_option("The figure to write: .png, .pdf or .svg.")] = Path(
        "curves.png"
    ),
    title: Annotated[str | None, typer.Option(help="A title above the figure.")] = None,
) -> None:
    """Training curves: loss, validation BLEU/chrF and learning rate against updates and
    minutes, several runs overlaid (needs matplotlib: pip install 'mtkit[plot]')."""
    from mtkit.plot import plot_runs

    print(f"wrote {plot_runs(runs, out, title)}", file=sys.stderr)
