"""mtkit: machine translation from the command line.

Each stage (prepare, train-bpe, train, translate, score) is a library module with
a thin Typer command in `mtkit.cli` over it.
"""

__version__ = "0.1.0"
