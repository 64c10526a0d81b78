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
    max_len_a: Annotated[
        float, typer.Option(help="Max target tokens = a * source tokens + b.")
    ] = 1.2,
    max_len_b: Annotated[int, typer.Option(help="See --max-len-a.")] = 10,
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
    from mtkit.search import SearchOptions
    from mtkit.translate import BatchOptions, RuntimeOptions, translate_file

    search = SearchOptions(
        beam_size=beam,
        nbest=nbest,
        max_len_a=max_len_a,
        max_len_b=max_len_b,
        len_penalty=len_penalty,
        len_norm=len_norm,
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
        int, typer.Option(help="Validate every N updates (and at each epoch end); 0: epochs only.")
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
