"""The `mtkit` command line: options, help texts and exit codes, nothing more.

Each command parses its options, calls one library function and formats the
result. Library errors (`MtkitError`) and a few well-known OS errors become one
line on stderr and exit code 1; a traceback means a bug in mtkit.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mtkit import __version__
from mtkit.errors import MtkitError

app = typer.Typer(
    name="mtkit",
    help="Machine translation from the command line: prepare, train-bpe, train, translate, score.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mtkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Machine translation from the command line."""


# Shared option types, declared once so every command spells them alike.
OutPath = Annotated[Path, typer.Option("--out", "-o", help="Where to write the result.")]


def _one_line(error: BaseException) -> str | None:
    """The one-line message for an error a user can cause, or None for a bug."""
    if isinstance(error, MtkitError):
        return str(error)
    if isinstance(error, FileNotFoundError):
        return f"no such file: {error.filename} (check the path)"
    if isinstance(error, IsADirectoryError):
        return f"expected a file but found a directory: {error.filename}"
    if isinstance(error, PermissionError):
        return f"permission denied: {error.filename}"
    return None


def main() -> None:
    """Entry point of the `mtkit` console script and `python -m mtkit`."""
    from mtkit.console import setup_logging

    setup_logging()
    try:
        app()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        message = _one_line(error)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
