"""`mtkit prepare`: its options, over `mtkit.prepare.pipeline.prepare_corpus`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mtkit.cli.options import command, options_from, out_option
from mtkit.prepare.cleaning import CleanOptions
from mtkit.prepare.sources import SourceOptions

_SRC = "Source (one of: --dataset, text files, TSV)"
_CLEAN = "Cleaning (train split only)"


def _source(help_text: str):
    return typer.Option(help=help_text, rich_help_panel=_SRC)


def _file(help_text: str):
    return typer.Option(metavar="FILE", help=help_text, rich_help_panel=_SRC)


def _clean(help_text: str):
    return typer.Option(help=help_text, rich_help_panel=_CLEAN)


_Out = Annotated[
    Path, out_option("Directory for {train,valid,test}.{src,tgt language} and manifest.json.")
]
_Src = Annotated[
    str | None, typer.Option(help="Source language code (default: the first of --pair).")
]
_Tgt = Annotated[
    str | None, typer.Option(help="Target language code (default: the second of --pair).")
]
_Pair = Annotated[
    str | None,
    typer.Option(
        help="Language pair like de-en: picks the hub config in either order (en-de finds "
        "de-en) and, without --src/--tgt, the direction as written.",
    ),
]
_Dataset = Annotated[
    str | None,
    _source(
        "A short name (wmt14..wmt19, multi30k), a hub id (owner/name), or a local "
        "directory laid out like a hub dataset (parquet/arrow/json) or from save_to_disk."
    ),
]
_Config = Annotated[
    str | None, _source("The dataset's config (subset), when --pair does not pick it.")
]
_Revision = Annotated[str | None, _source("Hub revision (branch, tag or commit).")]
_LocalHub = Annotated[
    Path | None,
    typer.Option(
        envvar="MTKIT_LOCAL_HUB",
        help="A directory of local hub copies, DIR/OWNER/NAME, looked in before the hub.",
        rich_help_panel=_SRC,
    ),
]
_Streaming = Annotated[
    bool, _source("Stream hub data (bounded memory, no cache); --no-streaming downloads it.")
]
_TrainSplit = Annotated[str | None, _source("Dataset split for train (default: train; '-' skips).")]
_ValidSplit = Annotated[
    str | None,
    _source("Dataset split for valid (default: validation, valid, dev or val; '-' skips)."),
]
_TestSplit = Annotated[str | None, _source("Dataset split for test (default: test; '-' skips).")]
_SrcFile = Annotated[Path | None, _file("Training text in --src (plain or .gz).")]
_TgtFile = Annotated[Path | None, _file("Training text in --tgt, line for line.")]
_ValidSrcFile = Annotated[Path | None, _file("Validation text in --src.")]
_ValidTgtFile = Annotated[Path | None, _file("Validation text in --tgt.")]
_TestSrcFile = Annotated[Path | None, _file("Test text in --src.")]
_TestTgtFile = Annotated[Path | None, _file("Test text in --tgt.")]
_Tsv = Annotated[
    Path | None, _file("Training pairs as TSV, src<TAB>tgt (columns in --pair order if given).")
]
_ValidTsv = Annotated[Path | None, _file("Validation pairs as TSV.")]
_TestTsv = Annotated[Path | None, _file("Test pairs as TSV.")]
_MaxLen = Annotated[
    int, _clean("Drop pairs with a side longer than this (in --len-unit); 0: no limit.")
]
_LenUnit = Annotated[
    str, _clean("Unit of --max-len and --max-ratio: words (split on spaces) or chars.")
]
_MaxRatio = Annotated[
    float, _clean("Drop pairs whose longer side is more than this many times the shorter; 0: off.")
]
_Dedup = Annotated[bool, _clean("Drop exact duplicate pairs, keeping the first.")]
_Langid = Annotated[
    bool,
    typer.Option(
        "--langid",
        help="Drop pairs whose source is not --src or target not --tgt by language ID "
        "(fastText lid.176; pip install 'mtkit[langid]').",
        rich_help_panel=_CLEAN,
    ),
]
_LangidWorkers = Annotated[int, _clean("Processes for --langid; 0: one a core.")]
_LangidMinProb = Annotated[
    float, _clean("--langid keeps a side the model gives its language at least this probability.")
]
_Subset = Annotated[
    str | None,
    _source(
        "Only this subset of the dataset's training data (e.g. europarl_v7, commoncrawl, "
        "newscommentary_v9 for wmt14 de-en): each one its own corpus for `train --data`."
    ),
]
_Limit = Annotated[
    int, typer.Option(help="Read only the first N pairs of each split (quick subsets); 0: all.")
]


@command(
    "prepare",
    short_help="Get a parallel corpus and write it as clean text files.",
    example="mtkit prepare --dataset multi30k --src de --tgt en --out data/m30k",
)
def prepare_command(
    out: _Out,
    src: _Src = SourceOptions.src,
    tgt: _Tgt = SourceOptions.tgt,
    pair: _Pair = SourceOptions.pair,
    dataset: _Dataset = SourceOptions.dataset,
    config: _Config = SourceOptions.config,
    revision: _Revision = SourceOptions.revision,
    local_hub: _LocalHub = SourceOptions.local_hub,
    streaming: _Streaming = SourceOptions.streaming,
    train_split: _TrainSplit = SourceOptions.train_split,
    valid_split: _ValidSplit = SourceOptions.valid_split,
    test_split: _TestSplit = SourceOptions.test_split,
    src_file: _SrcFile = SourceOptions.src_file,
    tgt_file: _TgtFile = SourceOptions.tgt_file,
    valid_src_file: _ValidSrcFile = SourceOptions.valid_src_file,
    valid_tgt_file: _ValidTgtFile = SourceOptions.valid_tgt_file,
    test_src_file: _TestSrcFile = SourceOptions.test_src_file,
    test_tgt_file: _TestTgtFile = SourceOptions.test_tgt_file,
    tsv: _Tsv = SourceOptions.tsv,
    valid_tsv: _ValidTsv = SourceOptions.valid_tsv,
    test_tsv: _TestTsv = SourceOptions.test_tsv,
    max_len: _MaxLen = CleanOptions.max_len,
    len_unit: _LenUnit = CleanOptions.len_unit,
    max_ratio: _MaxRatio = CleanOptions.max_ratio,
    dedup: _Dedup = CleanOptions.dedup,
    langid: _Langid = CleanOptions.langid,
    langid_workers: _LangidWorkers = CleanOptions.langid_workers,
    langid_min_prob: _LangidMinProb = CleanOptions.langid_min_prob,
    subset: _Subset = SourceOptions.subset,
    limit: _Limit = 0,
) -> None:
    """Get a parallel corpus and write it as clean text, one file per split and language.

    Every split is normalised (whitespace, control characters); only train is
    filtered (empty sides, --max-len, --max-ratio, duplicates), so valid and
    test stay line for line. Files are named by language code (train.de, train.en).
    """
    from mtkit.prepare.pipeline import prepare_corpus

    params = locals()
    source = options_from(SourceOptions, params)
    prepare_corpus(source, out, options_from(CleanOptions, params), limit)
