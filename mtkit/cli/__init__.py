"""The `mtkit` command line: the Typer app, its list of commands and `main()`.

One module per command or close family (prepare, train_bpe, train, translate, score,
checkpoints, logprob, interop, filter, shortlist) holds its options, help texts and the one
library call; options.py holds the options several commands share. A new command is
a function in its own module, marked with `options.command`, and one line in COMMANDS.
Library errors (`MtkitError`) and a few well-known OS errors become one line on stderr
and exit code 1 (the table is `mtkit.errors.one_line`); a traceback means a bug.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Annotated

import typer

from mtkit import __version__
from mtkit.cli import (
    checkpoints,
    filter,
    interop,
    logprob,
    prepare,
    score,
    shortlist,
    train,
    train_bpe,
    translate,
)
from mtkit.errors import one_line

# `mtkit --help` lists the commands in this order: the five stages as a pipeline runs them,
# then the others.
COMMANDS = (
    prepare.prepare_command,
    train_bpe.train_bpe_command,
    train.train_command,
    translate.translate_command,
    score.score_command,
    checkpoints.average_command,
    checkpoints.inspect_command,
    logprob.logprob_command,
    checkpoints.plot_command,
    interop.import_command,
    interop.export_command,
    filter.filter_command,
    shortlist.shortlist_command,
    translate.translate_merge_command,
)


class _PipelineOrder(typer.core.TyperGroup):
    """Commands in the order COMMANDS registers them, not sorted by name (as click would)."""

    def list_commands(self, ctx) -> list[str]:
        return list(self.commands)


app = typer.Typer(
    cls=_PipelineOrder,
    name="mtkit",
    help="Machine translation from the command line: prepare, train-bpe, train, translate, score.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode=None,
)
for _function in COMMANDS:
    app.command(**_function.typer_command)(_function)


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


def main() -> None:
    """Entry point of the `mtkit` console script and `python -m mtkit`."""
    from mtkit.console import setup_logging
    from mtkit.device import set_native_defaults

    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    set_native_defaults(command)  # before any command imports torch
    setup_logging()
    # Only the main thread may set handlers (main() called from a thread keeps the default).
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if in_main else None
    try:
        app()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Terminated:
        print("error: stopped by SIGTERM", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    except Exception as error:
        message = one_line(error)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


class Terminated(BaseException):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that files being written are
    discarded on the way out (train replaces it with its own: save, then stop)."""


def _terminated(signum, frame) -> None:
    raise Terminated
