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


@app.command("train-bpe")
def train_bpe(
    inputs: Annotated[
        list[Path],
        typer.Option(
            "--input",
            "-i",
            metavar="FILE",
            help="A text file to learn from (plain or .gz); repeat for each.",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Directory for spm.model and spm.vocab (spm.LANG.* with --separate).",
        ),
    ],
    vocab_size: Annotated[
        int, typer.Option(help="Pieces in the vocabulary, specials included.")
    ] = 8000,
    model_type: Annotated[
        str,
        typer.Option(help="SentencePiece algorithm: bpe or unigram."),
    ] = "bpe",
    separate: Annotated[
        bool,
        typer.Option(
            "--separate",
            help="One model per input, named by its language suffix (train.de -> spm.de.model).",
        ),
    ] = False,
    character_coverage: Annotated[
        float,
        typer.Option(help="Share of characters the vocabulary covers; 0.9995 for CJK."),
    ] = 1.0,
    input_sentence_size: Annotated[
        int,
        typer.Option(help="Lines sampled at random from the input for training; 0 uses all."),
    ] = 2_000_000,
    user_defined_symbols: Annotated[
        list[str],
        typer.Option(
            metavar="PIECE", help="Pieces never split, e.g. '<sep>' (repeat, or comma-separated)."
        ),
    ] = [],  # noqa: B006 (typer needs a literal default)
    threads: Annotated[
        int, typer.Option(help="Training threads; 0 uses every core, up to 16.")
    ] = 0,
) -> None:
    """Train a SentencePiece BPE or unigram model: joint by default, or one per language."""
    from mtkit.tokenizer import SpmOptions, train_spm

    symbols = tuple(s for value in user_defined_symbols for s in value.split(",") if s)
    options = SpmOptions(
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        input_sentence_size=input_sentence_size,
        user_defined_symbols=symbols,
        threads=threads,
    )
    train_spm(inputs, out, options, separate=separate)


@app.command("score")
def score_command(
    refs: Annotated[
        list[Path],
        typer.Option(
            "--ref",
            "-r",
            metavar="FILE",
            help="A reference file (plain or .gz); repeat for several.",
        ),
    ],
    input: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            metavar="FILE",
            help="Hypotheses, one a line; standard input when absent.",
        ),
    ] = None,
    metrics: Annotated[
        str, typer.Option("--metrics", "-m", help="Comma-separated: bleu, chrf, ter.")
    ] = "bleu",
    tokenize: Annotated[
        str,
        typer.Option(
            "--tokenize",
            "-tok",
            help="BLEU's tokenizer: 13a (the WMT standard), intl, zh, char or none.",
        ),
    ] = "13a",
    lowercase: Annotated[
        bool, typer.Option("--lowercase", "-lc", help="Case-insensitive BLEU and chrF.")
    ] = False,
    chrf_word_order: Annotated[
        int, typer.Option(help="Word n-gram order of chrF; 2 gives chrF++.")
    ] = 0,
    ter_case_sensitive: Annotated[
        bool,
        typer.Option(
            "--ter-case-sensitive", help="Case-sensitive TER (sacreBLEU's TER ignores case)."
        ),
    ] = False,
    width: Annotated[int, typer.Option("--width", "-w", help="Decimals in the scores.")] = 1,
    score_only: Annotated[
        bool, typer.Option("--score-only", "-b", help="Print only the numbers.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="sacreBLEU's JSON: an object, or a list for several.")
    ] = False,
) -> None:
    """Score hypotheses against references with sacreBLEU (BLEU, chrF, TER) and signatures."""
    from mtkit.score import (
        check_options,
        format_json,
        format_text,
        parse_metrics,
        read_lines,
        score,
    )

    names = parse_metrics(metrics)
    check_options(names, tokenize=tokenize, chrf_word_order=chrf_word_order)
    references = [read_lines(path) for path in refs]
    if input is None and sys.stdin.isatty():
        print(
            "reading hypotheses from standard input (pass -i FILE to read a file)", file=sys.stderr
        )
    hyps = read_lines(input, stdin=sys.stdin.buffer)
    results = score(
        hyps,
        references,
        metrics=names,
        tokenize=tokenize,
        lowercase=lowercase,
        chrf_word_order=chrf_word_order,
        ter_case_sensitive=ter_case_sensitive,
        hyp_name=str(input or "standard input"),
        ref_names=[str(path) for path in refs],
    )
    if as_json:
        typer.echo(format_json(results, width=width))
    else:
        typer.echo(format_text(results, width=width, score_only=score_only))


@app.command("translate")
def translate_command(
    models: Annotated[
        list[Path],
        typer.Option("--model", "-m", metavar="CKPT", help="A checkpoint; repeat for an ensemble."),
    ] = [],  # noqa: B006 (typer needs a literal default; no model is our own clear error)
    input: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            metavar="FILE",
            help="Text to translate (plain or .gz); stdin if absent.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", metavar="FILE", help="Where to write; stdout if absent."),
    ] = None,
    beam: Annotated[int, typer.Option("--beam", help="Beam size; 1 is greedy search.")] = 5,
    nbest: Annotated[
        int,
        typer.Option(help="Write the K best as 'LINE ||| text ||| score' lines (LINE from 0)."),
    ] = 1,
    len_penalty: Annotated[
        float, typer.Option(help="GNMT length penalty alpha: score / ((5+|Y|)/6)^alpha.")
    ] = 0.6,
    len_norm: Annotated[
        bool, typer.Option("--len-norm", help="Rank by mean log-probability instead.")
    ] = False,
    early_stop: Annotated[
        bool,
        typer.Option("--early-stop", help="End a sentence when the best candidate ends (faster)."),
    ] = False,
    max_len_a: Annotated[
        float, typer.Option(help="Max target tokens = a * source tokens + b.")
    ] = 1.2,
    max_len_b: Annotated[int, typer.Option(help="See --max-len-a.")] = 10,
    min_len: Annotated[
        int, typer.Option(help="Target tokens before the end may come (0: no minimum).")
    ] = 0,
    sampling: Annotated[
        bool, typer.Option("--sampling", help="Sample instead of beam search (--nbest samples).")
    ] = False,
    top_k: Annotated[int, typer.Option(help="Sample among the k likeliest tokens; 0: all.")] = 0,
    top_p: Annotated[float, typer.Option(help="Sample from the top-p probability mass.")] = 1.0,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
    seed: Annotated[
        int | None, typer.Option(help="Random seed, for reproducible sampling.")
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option(
            help="Batch budget: sentences x beam x longest source; default 6000 CPU, 60000 GPU."
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="At most this many sentences a batch.")
    ] = None,
    chunk_lines: Annotated[
        int, typer.Option(help="Lines read, sorted and translated together (bounds memory).")
    ] = 10_000,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[
        str, typer.Option(help="auto (bf16 on a GPU, fp32 on the CPU), fp32, bf16 or fp16.")
    ] = "auto",
    quantize: Annotated[
        str, typer.Option(help="int8: dynamic int8 linear layers on the CPU; none.")
    ] = "none",
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for torch; default: torch's choice.")
    ] = None,
) -> None:
    """Translate text with one checkpoint or an ensemble: one line out for every line in."""
    from mtkit.translate.search import SearchOptions
    from mtkit.translate.stream import BatchOptions, RuntimeOptions, translate_file

    search = SearchOptions(
        beam_size=beam,
        nbest=nbest,
        max_len_a=max_len_a,
        max_len_b=max_len_b,
        min_len=min_len,
        len_penalty=len_penalty,
        len_norm=len_norm,
        early_stop=early_stop,
        sampling=sampling,
        top_k=top_k,
        top_p=top_p,
        temperature=temperature,
        seed=seed,
    )
    batching = BatchOptions(max_tokens=max_tokens, batch_size=batch_size, chunk_lines=chunk_lines)
    runtime = RuntimeOptions(device=device, precision=precision, quantize=quantize, threads=threads)
    translate_file(models, input, out, search, batching, runtime)


@app.command("train")
def train_command(
    data: Annotated[
        Path, typer.Option(help="Prepared data: DATA/{train,valid}.{src,tgt} (+ manifest.json).")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Run directory: checkpoints, config, metrics.")
    ],
    spm: Annotated[
        Path | None, typer.Option(help="Joint SentencePiece model (train-bpe's spm.model).")
    ] = None,
    src_spm: Annotated[Path | None, typer.Option(help="Source model, with --tgt-spm.")] = None,
    tgt_spm: Annotated[Path | None, typer.Option(help="Target model, with --src-spm.")] = None,
    arch: Annotated[
        str,
        typer.Option(help="Preset: transformer-small, transformer-base, transformer-big, rnn."),
    ] = "transformer-small",
    src: Annotated[
        str | None, typer.Option(help="Source language; default from manifest.json.")
    ] = None,
    tgt: Annotated[
        str | None, typer.Option(help="Target language; default from manifest.json.")
    ] = None,
    set_: Annotated[
        list[str],
        typer.Option("--set", metavar="KEY=VALUE", help="Override a model setting (repeat)."),
    ] = [],  # noqa: B006 (typer needs a literal default)
    config: Annotated[
        Path | None,
        typer.Option(help="JSON file of model settings (or a run's config.json)."),
    ] = None,
    max_tokens: Annotated[
        int, typer.Option(help="Batch budget: padded source or target tokens, the larger.")
    ] = 4096,
    update_freq: Annotated[
        int, typer.Option(help="Batches per update (gradient accumulation).")
    ] = 1,
    max_updates: Annotated[int, typer.Option(help="Stop after N updates; 0: no limit.")] = 0,
    max_epochs: Annotated[int, typer.Option(help="Stop after N epochs; 0: no limit.")] = 0,
    max_time: Annotated[
        str, typer.Option(help="Stop after this much training: 90s, 20m, 1h30m; 0: no limit.")
    ] = "0",
    patience: Annotated[
        int, typer.Option(help="Stop after N validations without improvement; 0: never.")
    ] = 0,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from checkpoint_last.pt.")
    ] = False,
    lr: Annotated[float, typer.Option(help="Peak learning rate (after warm-up).")] = 5e-4,
    warmup: Annotated[int, typer.Option(help="Warm-up updates (linear).")] = 4000,
    schedule: Annotated[
        str, typer.Option(help="After warm-up: inverse_sqrt, cosine or constant.")
    ] = "inverse_sqrt",
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing epsilon.")] = 0.1,
    clip_norm: Annotated[float, typer.Option(help="Gradient norm clip; 0: off.")] = 1.0,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay; 0: Adam.")] = 0.0,
    valid_every: Annotated[
        int, typer.Option(help="Validate (and save) every N updates; 0: at each epoch end.")
    ] = 1000,
    valid_bleu_sentences: Annotated[
        int, typer.Option(help="Validation lines translated for BLEU; 0: all.")
    ] = 1000,
    best_metric: Annotated[
        str, typer.Option(help="What checkpoint_best.pt and --patience track: bleu or loss.")
    ] = "bleu",
    keep_last: Annotated[int, typer.Option(help="Numbered checkpoints to keep; 0: all.")] = 5,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[
        str, typer.Option(help="auto (bf16 on a GPU, fp32 on the CPU), fp32, bf16 or fp16.")
    ] = "auto",
    compile: Annotated[bool, typer.Option("--compile", help="Use torch.compile.")] = False,
    threads: Annotated[int, typer.Option(help="CPU threads for torch; 0: torch's choice.")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed: weights, batches, dropout.")] = 1,
    log_every: Annotated[int, typer.Option(help="Log (metrics.jsonl) every N updates.")] = 50,
) -> None:
    """Train a Transformer or RNN; exits 128+signal after Ctrl-C/SIGTERM (checkpoint saved)."""
    from mtkit.train import TrainConfig, parse_duration, train
    from mtkit.train.config import model_overrides

    settings = TrainConfig(
        data=str(data),
        out=str(out),
        spm=_str(spm),
        src_spm=_str(src_spm),
        tgt_spm=_str(tgt_spm),
        src=src,
        tgt=tgt,
        arch=arch,
        model_overrides=model_overrides(_str(config), set_),
        max_tokens=max_tokens,
        update_freq=update_freq,
        max_updates=max_updates,
        max_epochs=max_epochs,
        max_time=parse_duration(max_time),
        patience=patience,
        resume=resume,
        lr=lr,
        warmup=warmup,
        schedule=schedule,
        label_smoothing=label_smoothing,
        clip_norm=clip_norm,
        weight_decay=weight_decay,
        valid_every=valid_every,
        valid_bleu_sentences=valid_bleu_sentences,
        best_metric=best_metric,
        keep_last=keep_last,
        device=device,
        precision=precision,
        compile=compile,
        threads=threads,
        seed=seed,
        log_every=log_every,
    )
    result = train(settings)
    if result.signal:
        print(
            f"stopped by signal {result.signal} at update {result.step}; "
            f"{out}/checkpoint_last.pt saved, --resume continues",
            file=sys.stderr,
        )
        raise typer.Exit(128 + result.signal)


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


@app.command("average")
def average_command(
    inputs: Annotated[
        list[Path],
        typer.Argument(metavar="RUN_OR_CKPTS", help="A run directory, or checkpoint files."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The averaged checkpoint to write.")],
    last: Annotated[
        int, typer.Option(help="With a run directory: average its last N numbered checkpoints.")
    ] = 5,
) -> None:
    """Average checkpoints' weights (for translating; the result cannot be resumed)."""
    from mtkit.checkpoint import average_checkpoints, average_inputs, save_checkpoint

    paths = average_inputs(inputs, last)
    save_checkpoint(out, average_checkpoints(paths))
    print(f"averaged {len(paths)} checkpoints into {out}", file=sys.stderr)


@app.command("inspect")
def inspect_command(
    checkpoint: Annotated[Path, typer.Argument(metavar="CKPT", help="A checkpoint file.")],
    json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Print a checkpoint's languages, step, metrics and configuration."""
    import json

    from mtkit.checkpoint import load_checkpoint, summary

    info = summary(load_checkpoint(checkpoint))
    if json_:
        typer.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    for key, value in info.items():
        if isinstance(value, dict):
            value = " ".join(f"{k}={v}" for k, v in value.items())
        typer.echo(f"{key}: {value}")


_SRC = "Source (one of: --dataset, text files, TSV)"
_CLEAN = "Cleaning (train split only)"


def _opt_path(help_text: str, panel: str = _SRC):
    return typer.Option(metavar="FILE", help=help_text, rich_help_panel=panel)


@app.command("prepare")
def prepare_command(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Directory for {train,valid,test}.{src,tgt language} and manifest.json.",
        ),
    ],
    src: Annotated[
        str | None,
        typer.Option(help="Source language code (default: the first of --pair)."),
    ] = None,
    tgt: Annotated[
        str | None,
        typer.Option(help="Target language code (default: the second of --pair)."),
    ] = None,
    pair: Annotated[
        str | None,
        typer.Option(
            help="Language pair like de-en: picks the hub config in either order (en-de finds "
            "de-en) and, without --src/--tgt, the direction as written.",
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="A short name (wmt14..wmt19, multi30k), a hub id (owner/name), or a local "
            "directory laid out like a hub dataset (parquet/arrow/json) or from save_to_disk.",
            rich_help_panel=_SRC,
        ),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(
            help="The dataset's config (subset), when --pair does not pick it.",
            rich_help_panel=_SRC,
        ),
    ] = None,
    revision: Annotated[
        str | None, typer.Option(help="Hub revision (branch, tag or commit).", rich_help_panel=_SRC)
    ] = None,
    local_hub: Annotated[
        Path | None,
        typer.Option(
            envvar="MTKIT_LOCAL_HUB",
            help="A directory of local hub copies, DIR/OWNER/NAME, looked in before the hub.",
            rich_help_panel=_SRC,
        ),
    ] = None,
    streaming: Annotated[
        bool,
        typer.Option(
            help="Stream hub data (bounded memory, no cache); --no-streaming downloads it.",
            rich_help_panel=_SRC,
        ),
    ] = True,
    train_split: Annotated[
        str | None,
        typer.Option(
            help="Dataset split for train (default: train; '-' skips).", rich_help_panel=_SRC
        ),
    ] = None,
    valid_split: Annotated[
        str | None,
        typer.Option(
            help="Dataset split for valid (default: validation, valid, dev or val; '-' skips).",
            rich_help_panel=_SRC,
        ),
    ] = None,
    test_split: Annotated[
        str | None,
        typer.Option(
            help="Dataset split for test (default: test; '-' skips).", rich_help_panel=_SRC
        ),
    ] = None,
    src_file: Annotated[Path | None, _opt_path("Training text in --src (plain or .gz).")] = None,
    tgt_file: Annotated[Path | None, _opt_path("Training text in --tgt, line for line.")] = None,
    valid_src_file: Annotated[Path | None, _opt_path("Validation text in --src.")] = None,
    valid_tgt_file: Annotated[Path | None, _opt_path("Validation text in --tgt.")] = None,
    test_src_file: Annotated[Path | None, _opt_path("Test text in --src.")] = None,
    test_tgt_file: Annotated[Path | None, _opt_path("Test text in --tgt.")] = None,
    tsv: Annotated[
        Path | None,
        _opt_path("Training pairs as TSV, src<TAB>tgt (columns in --pair order if given)."),
    ] = None,
    valid_tsv: Annotated[Path | None, _opt_path("Validation pairs as TSV.")] = None,
    test_tsv: Annotated[Path | None, _opt_path("Test pairs as TSV.")] = None,
    max_len: Annotated[
        int,
        typer.Option(
            help="Drop pairs with a side longer than this (in --len-unit); 0: no limit.",
            rich_help_panel=_CLEAN,
        ),
    ] = 250,
    len_unit: Annotated[
        str,
        typer.Option(
            help="Unit of --max-len and --max-ratio: words (split on spaces) or chars.",
            rich_help_panel=_CLEAN,
        ),
    ] = "words",
    max_ratio: Annotated[
        float,
        typer.Option(
            help="Drop pairs whose longer side is more than this many times the shorter; 0: off.",
            rich_help_panel=_CLEAN,
        ),
    ] = 3.0,
    dedup: Annotated[
        bool,
        typer.Option(help="Drop exact duplicate pairs, keeping the first.", rich_help_panel=_CLEAN),
    ] = True,
    limit: Annotated[
        int,
        typer.Option(help="Read only the first N pairs of each split (quick subsets); 0: all."),
    ] = 0,
) -> None:
    """Get a parallel corpus and write it as clean text, one file per split and language.

    Every split is normalised (whitespace, control characters); only train is
    filtered (empty sides, --max-len, --max-ratio, duplicates), so valid and
    test stay line for line. Files are named by language code (train.de, train.en).
    """
    given = {k: (str(v) if isinstance(v, Path) else v) for k, v in locals().items()}
    from mtkit.errors import ConfigError
    from mtkit.prepare import sources
    from mtkit.prepare.cleaning import CleanOptions
    from mtkit.prepare.pipeline import prepare

    clean = CleanOptions(max_len=max_len, len_unit=len_unit, max_ratio=max_ratio, dedup=dedup)
    clean.validate()
    if limit < 0:
        raise ConfigError(f"--limit {limit} is negative; give a number of pairs, or 0 for all")
    src, tgt = sources.resolve_langs(src, tgt, pair)
    files = _split_files(
        train=(src_file, tgt_file),
        valid=(valid_src_file, valid_tgt_file),
        test=(test_src_file, test_tgt_file),
    )
    tsvs = {k: v for k, v in {"train": tsv, "valid": valid_tsv, "test": test_tsv}.items() if v}
    if dataset is not None:
        if files or tsvs:
            raise ConfigError(
                "give either --dataset or text files (--src-file/--tsv ...), not both"
            )
        splits = {"train": train_split, "valid": valid_split, "test": test_split}
        source = sources.from_dataset(
            dataset,
            src=src,
            tgt=tgt,
            pair=pair,
            config=config,
            revision=revision,
            local_hub=local_hub,
            streaming=streaming,
            split_names={k: v for k, v in splits.items() if v is not None},
        )
    else:
        order = sources.parse_pair(pair)
        source = sources.from_text_files(src=src, tgt=tgt, files=files, tsv=tsvs, tsv_order=order)
    prepare(source, out, clean=clean, limit=limit or None, options=given)


def _split_files(**splits: tuple[Path | None, Path | None]) -> dict[str, tuple[Path, Path]]:
    """The text-file pairs given per split; one side without the other is an error."""
    from mtkit.errors import ConfigError

    chosen = {}
    for split, (src_path, tgt_path) in splits.items():
        if (src_path is None) != (tgt_path is None):
            flag = "" if split == "train" else f"{split}-"
            raise ConfigError(
                f"give both --{flag}src-file and --{flag}tgt-file for the {split} split"
            )
        if src_path is not None:
            chosen[split] = (src_path, tgt_path)
    return chosen


# -- commands added by later issues go above this line -----------------------


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
