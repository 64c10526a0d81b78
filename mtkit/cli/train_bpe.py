"""`mtkit train-bpe`: its options, over `mtkit.tokenizer.train_spm`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mtkit.cli.options import SampleTemperature, command, input_option, options_from, out_option
from mtkit.tokenizer import SpmOptions

_Inputs = Annotated[
    list[Path], input_option("A text file to learn from (plain or .gz); repeat for each.")
]
_Out = Annotated[
    Path, out_option("Directory for spm.model and spm.vocab (spm.LANG.* with --separate).")
]
_VocabSize = Annotated[int, typer.Option(help="Pieces in the vocabulary, specials included.")]
_ModelType = Annotated[str, typer.Option(help="SentencePiece algorithm: bpe or unigram.")]
_Separate = Annotated[
    bool,
    typer.Option(
        "--separate",
        help="One model per input, named by its language suffix (train.de -> spm.de.model).",
    ),
]
_CharacterCoverage = Annotated[
    float, typer.Option(help="Share of characters the vocabulary covers; 0.9995 for CJK.")
]
_InputSentenceSize = Annotated[
    int, typer.Option(help="Lines sampled at random from the input for training; 0 uses all.")
]
_UserDefinedSymbols = Annotated[
    list[str],
    typer.Option(
        metavar="PIECE", help="Pieces never split, e.g. '<sep>' (repeat, or comma-separated)."
    ),
]
_Threads = Annotated[int, typer.Option(help="Training threads; 0 uses every core, up to 16.")]
_Langs = Annotated[
    list[str],
    typer.Option(
        metavar="CODES",
        help="Language codes of a multilingual model, e.g. de,en,fr (repeat, or "
        "comma-separated): reserves their tags <2de>, <2en>, <2fr> as pieces.",
    ),
]


@command(
    "train-bpe",
    short_help="Train a SentencePiece BPE or unigram vocabulary.",
    example="mtkit train-bpe -i train.de -i train.en --vocab-size 8000 -o spm",
)
def train_bpe_command(
    inputs: _Inputs,
    out: _Out,
    vocab_size: _VocabSize = SpmOptions.vocab_size,
    model_type: _ModelType = SpmOptions.model_type,
    separate: _Separate = False,
    character_coverage: _CharacterCoverage = SpmOptions.character_coverage,
    input_sentence_size: _InputSentenceSize = SpmOptions.input_sentence_size,
    user_defined_symbols: _UserDefinedSymbols = [],  # noqa: B006 (typer needs a literal default; SpmOptions' is the empty tuple)
    threads: _Threads = SpmOptions.threads,
    langs: _Langs = [],  # noqa: B006 (typer needs a literal default; SpmOptions' is ())
    sample_temperature: SampleTemperature = SpmOptions.sample_temperature,
) -> None:
    """Train a SentencePiece BPE or unigram model: joint by default, or one per language."""
    from mtkit.tokenizer import train_spm

    symbols = tuple(s for value in user_defined_symbols for s in value.split(",") if s)
    codes = tuple(
        dict.fromkeys(c.strip() for value in langs for c in value.split(",") if c.strip())
    )
    options = options_from(SpmOptions, locals(), user_defined_symbols=symbols, langs=codes)
    train_spm(inputs, out, options, separate=separate)
