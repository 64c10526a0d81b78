"""What every command module is written with: the options several commands share, and the
helpers that keep each option spelled once.

An option a single command uses lives in that command's module. Here: the flags several
commands spell alike (`--out/-o`, `--input/-i`, `--model/-m`, `--device`, ...), `command`
(a function's name, one-line help and example in `mtkit --help`, registered by the list
in `mtkit.cli`) and `options_from`, which fills a library dataclass from a command's
parameters by field name, so no command copies `x=x` field by field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

Options = TypeVar("Options")
Function = TypeVar("Function", bound=Callable[..., Any])


def command(name: str, short_help: str, example: str) -> Callable[[Function], Function]:
    """Mark a function as `mtkit NAME`: `short_help` is its line in `mtkit --help`, and
    `example` the command line its `--help` ends with. The function is left as it is;
    mtkit.cli's COMMANDS registers it."""

    def mark(function: Function) -> Function:
        function.typer_command = {  # type: ignore[attr-defined]
            "name": name,
            "short_help": short_help,
            "epilog": f"Example: {example}",
        }
        return function

    return mark


def options_from(cls: type[Options], params: Mapping[str, Any], **changed: Any) -> Options:
    """The dataclass `cls` from a command's parameters (its `locals()`), each field taken
    from the parameter of the same name (sacreBLEU's args_to_dict); `changed` gives the
    fields whose value the command parses or converts first. A field with no parameter
    keeps its default."""
    fields = {field.name for field in dataclasses.fields(cls) if field.init}  # type: ignore[arg-type]
    unknown = set(changed) - fields
    assert not unknown, f"{cls.__name__} has no field {sorted(unknown)}"
    values = {name: params[name] for name in fields if name in params}
    return cls(**{**values, **changed})


def out_option(help: str, metavar: str | None = None) -> Any:
    """`--out/-o`, where a command writes; each command says what it writes there."""
    return typer.Option("--out", "-o", metavar=metavar, help=help)


def input_option(help: str) -> Any:
    """`--input/-i FILE`, what a command reads; each command says what the file holds."""
    return typer.Option("--input", "-i", metavar="FILE", help=help)


def model_option(help: str, metavar: str | None = None) -> Any:
    """`--model/-m`, the checkpoint a command uses."""
    return typer.Option("--model", "-m", metavar=metavar, help=help)


InputFile = Annotated[Path | None, input_option("Text to read (plain or .gz); stdin if absent.")]
OutputFile = Annotated[Path | None, out_option("Where to write; stdout if absent.", metavar="FILE")]
Models = Annotated[list[Path], model_option("A checkpoint; repeat for an ensemble.", "CKPT")]
Device = Annotated[str, typer.Option(help="auto (a CUDA GPU if there is one), cpu or cuda.")]
Precision = Annotated[
    str,
    typer.Option(
        help="auto (bf16 on a GPU; on the CPU fp32, but bf16 for train on a CPU with AMX), "
        "fp32, bf16 or fp16."
    ),
]
Threads = Annotated[int, typer.Option(help="CPU threads for torch; 0: torch's choice.")]
# Balancing languages (mtkit.sampling), for train (the pairs of a multilingual run) and
# train-bpe (the languages of its input).
SampleTemperature = Annotated[
    float,
    typer.Option(
        metavar="T",
        help="Balance languages: each language pair (train) or language (train-bpe, by file "
        "suffix) is sampled in proportion to its size^(1/T); 1: as it is, 5: flatter.",
    ),
]
# A multilingual model's language codes, its own (mtkit.languages): one pair of flags for
# translate, logprob and train.
SrcLang = Annotated[
    str | None,
    typer.Option(
        metavar="CODE",
        help="The source language in the model's codes (NLLB-200 deu_Latn, M2M-100 de); "
        "a multilingual model needs it unless it has a default.",
    ),
]
TgtLang = Annotated[
    str | None,
    typer.Option(
        metavar="CODE",
        help="The language to translate into, in the model's codes; a multilingual model "
        "needs it unless it has a default (list them: mtkit inspect MODEL --langs).",
    ),
]
