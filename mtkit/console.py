"""Where mtkit talks to people: rich progress bars and messages, always on stderr.

stdout carries only data (translations, scores), so every stage can sit in a pipe.
"""

from __future__ import annotations

import logging
from typing import TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

stderr = Console(stderr=True, highlight=False)


def setup_logging(verbose: bool = False) -> None:
    """Send mtkit's log records to stderr through rich, once per process."""
    root = logging.getLogger("mtkit")
    if root.handlers:
        return
    handler = RichHandler(console=stderr, show_path=False, show_time=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def progress(*extra_columns, transient: bool = False) -> Progress:
    """A progress display on stderr (rich draws only the final state when it is not a terminal)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *extra_columns,
        console=stderr,
        transient=transient,
    )
