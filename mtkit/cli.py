"""The `mtkit` command line: options, help texts and exit codes, nothing more.

Each command parses its options, calls one library function and formats the
result. Library errors (`MtkitError`) and a few well-known OS errors become one
line on stderr and exit code 1; a traceback means a bug in mtkit.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from mtkit import __version__
from mtkit.errors import MtkitError, one_line
from mtkit.interop.ctranslate2 import ExportOptions
from mtkit.prepare.cleaning import CleanOptions
from mtkit.prepare.sources import SourceOptions
from mtkit.score import ReportOptions, ScoreOptions, SignificanceOptions
from mtkit.search import SearchOptions
from mtkit.shortlist import ShortlistOptions
from mtkit.tokenizer import SpmOptions
from mtkit.train.config import TrainConfig
from mtkit.translate.command import JobOptions
from mtkit.translate.logprob import LogprobOptions
from mtkit.translate.noise import NoiseOptions
from mtkit.translate.stream import BatchOptions, Decoding, RuntimeOptions


class _PipelineOrder(typer.core.TyperGroup):
    """`mtkit --help` lists the five stages in the order a pipeline runs them, then the
    other commands, then any command not named here in the order it was added."""

    ORDER = ("prepare", "train-bpe", "train", "translate", "score",
             "average", "inspect", "logprob", "plot", "import", "export", "shortlist")  # fmt: skip

    def list_commands(self, ctx) -> list[str]:
        names = super().list_commands(ctx)
        return [n for n in self.ORDER if n in names] + [n for n in names if n not in self.ORDER]


app = typer.Typer(
    cls=_PipelineOrder,
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
InputFile = Annotated[
    Path | None,
    typer.Option(
        "--input", "-i", metavar="FILE", help="Text to read (plain or .gz); stdin if absent."
    ),
]
OutputFile = Annotated[
    Path | None,
    typer.Option("--out", "-o", metavar="FILE", help="Where to write; stdout if absent."),
]
Models = Annotated[
    list[Path],
    typer.Option("--model", "-m", metavar="CKPT", help="A checkpoint; repeat for an ensemble."),
]
Device = Annotated[str, typer.Option(help="auto (a CUDA GPU if there is one), cpu or cuda.")]
Precision = Annotated[
    str,
    typer.Option(
        help="auto (bf16 on a GPU; on the CPU fp32, but bf16 for train on a CPU with AMX), "
        "fp32, bf16 or fp16."
    ),
]
Threads = Annotated[int, typer.Option(help="CPU threads for torch; 0: torch's choice.")]


_TrainbpeInputs = Annotated[
    list[Path],
    typer.Option(
        "--input",
        "-i",
        metavar="FILE",
        help="A text file to learn from (plain or .gz); repeat for each.",
    ),
]
_TrainbpeOut = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="Directory for spm.model and spm.vocab (spm.LANG.* with --separate).",
    ),
]
_TrainbpeVocabSize = Annotated[
    int, typer.Option(help="Pieces in the vocabulary, specials included.")
]
_TrainbpeModelType = Annotated[str, typer.Option(help="SentencePiece algorithm: bpe or unigram.")]
_TrainbpeSeparate = Annotated[
    bool,
    typer.Option(
        "--separate",
        help="One model per input, named by its language suffix (train.de -> spm.de.model).",
    ),
]
_TrainbpeCharacterCoverage = Annotated[
    float, typer.Option(help="Share of characters the vocabulary covers; 0.9995 for CJK.")
]
_TrainbpeInputSentenceSize = Annotated[
    int, typer.Option(help="Lines sampled at random from the input for training; 0 uses all.")
]
_TrainbpeUserDefinedSymbols = Annotated[
    list[str],
    typer.Option(
        metavar="PIECE", help="Pieces never split, e.g. '<sep>' (repeat, or comma-separated)."
    ),
]
_TrainbpeThreads = Annotated[
    int, typer.Option(help="Training threads; 0 uses every core, up to 16.")
]


@app.command(
    "train-bpe",
    short_help="Train a SentencePiece BPE or unigram vocabulary.",
    epilog="Example: mtkit train-bpe -i train.de -i train.en --vocab-size 8000 -o spm",
)
def train_bpe(
    inputs: _TrainbpeInputs,
    out: _TrainbpeOut,
    vocab_size: _TrainbpeVocabSize = SpmOptions.vocab_size,
    model_type: _TrainbpeModelType = SpmOptions.model_type,
    separate: _TrainbpeSeparate = False,
    character_coverage: _TrainbpeCharacterCoverage = SpmOptions.character_coverage,
    input_sentence_size: _TrainbpeInputSentenceSize = SpmOptions.input_sentence_size,
    user_defined_symbols: _TrainbpeUserDefinedSymbols = [],  # noqa: B006 (typer needs a literal default; SpmOptions' is the empty tuple)
    threads: _TrainbpeThreads = SpmOptions.threads,
) -> None:
    """Train a SentencePiece BPE or unigram model: joint by default, or one per language."""
    from mtkit.tokenizer import train_spm

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


_ScoreRefs = Annotated[
    list[Path],
    typer.Option(
        "--ref",
        "-r",
        metavar="FILE",
        help="A reference file (plain or .gz); repeat for several.",
    ),
]
_ScoreInputs = Annotated[
    list[Path],
    typer.Option(
        "--input",
        "-i",
        metavar="FILE",
        help="Hypotheses, one a line (stdin when absent); repeat to compare systems, "
        "the baseline first.",
    ),
]
_ScoreMetrics = Annotated[
    str, typer.Option("--metrics", "-m", help="Comma-separated: bleu, chrf, ter.")
]
_ScoreTokenize = Annotated[
    str,
    typer.Option(
        "--tokenize",
        "-tok",
        help="BLEU's tokenizer: 13a (the WMT standard), intl, zh, char or none.",
    ),
]
_ScoreLowercase = Annotated[
    bool, typer.Option("--lowercase", "-lc", help="Case-insensitive BLEU and chrF.")
]
_ScoreChrfWordOrder = Annotated[
    int, typer.Option(help="Word n-gram order of chrF; 2 gives chrF++.")
]
_ScoreTerCaseSensitive = Annotated[
    bool,
    typer.Option("--ter-case-sensitive", help="Case-sensitive TER (sacreBLEU's TER ignores case)."),
]
_ScorePairedBs = Annotated[
    bool,
    typer.Option(
        "--paired-bs",
        help="Paired bootstrap resampling: each -i system against the first (sacreBLEU's).",
        rich_help_panel="Significance",
    ),
]
_ScorePairedAr = Annotated[
    bool,
    typer.Option(
        "--paired-ar",
        help="Paired approximate randomization against the first -i system.",
        rich_help_panel="Significance",
    ),
]
_ScorePairedBsN = Annotated[
    int, typer.Option(help="Bootstrap resamples.", rich_help_panel="Significance")
]
_ScorePairedArN = Annotated[
    int, typer.Option(help="Randomization trials.", rich_help_panel="Significance")
]
_ScoreConfidence = Annotated[
    bool,
    typer.Option(
        "--confidence",
        help="95% bootstrap confidence interval of one system.",
        rich_help_panel="Significance",
    ),
]
_ScoreConfidenceN = Annotated[
    int, typer.Option(help="Resamples for --confidence.", rich_help_panel="Significance")
]
_ScoreSeed = Annotated[
    int,
    typer.Option(
        help="Resampling seed (sacreBLEU's SACREBLEU_SEED).", rich_help_panel="Significance"
    ),
]
_ScoreWidth = Annotated[int, typer.Option("--width", "-w", help="Decimals in the scores.")]
_ScoreScoreOnly = Annotated[
    bool, typer.Option("--score-only", "-b", help="Print only the numbers.")
]
_ScoreAsJson = Annotated[
    bool, typer.Option("--json", help="sacreBLEU's JSON: an object, or a list for several.")
]


@app.command(
    "score",
    short_help="Score translations with sacreBLEU: BLEU, chrF, TER.",
    epilog="Example: mtkit score -r ref.en -i hyp.en --metrics bleu,chrf",
)
def score_command(
    refs: _ScoreRefs,
    inputs: _ScoreInputs = [],  # noqa: B006 (typer needs a literal default)
    metrics: _ScoreMetrics = ",".join(ScoreOptions.metrics),
    tokenize: _ScoreTokenize = ScoreOptions.tokenize,
    lowercase: _ScoreLowercase = ScoreOptions.lowercase,
    chrf_word_order: _ScoreChrfWordOrder = ScoreOptions.chrf_word_order,
    ter_case_sensitive: _ScoreTerCaseSensitive = ScoreOptions.ter_case_sensitive,
    paired_bs: _ScorePairedBs = False,
    paired_ar: _ScorePairedAr = False,
    paired_bs_n: _ScorePairedBsN = SignificanceOptions.paired_bs_n,
    paired_ar_n: _ScorePairedArN = SignificanceOptions.paired_ar_n,
    confidence: _ScoreConfidence = False,
    confidence_n: _ScoreConfidenceN = SignificanceOptions.confidence_n,
    seed: _ScoreSeed = SignificanceOptions.seed,
    width: _ScoreWidth = ReportOptions.width,
    score_only: _ScoreScoreOnly = False,
    as_json: _ScoreAsJson = False,
) -> None:
    """Score hypotheses with sacreBLEU (BLEU, chrF, TER, signatures); compare systems with
    sacreBLEU's paired significance tests."""
    from mtkit.score import parse_metrics, score_files

    if not inputs and sys.stdin.isatty():
        print(
            "reading hypotheses from standard input (pass -i FILE to read a file)", file=sys.stderr
        )
    typer.echo(
        score_files(
            refs,
            inputs or [None],
            ScoreOptions(
                metrics=tuple(parse_metrics(metrics)),
                tokenize=tokenize,
                lowercase=lowercase,
                chrf_word_order=chrf_word_order,
                ter_case_sensitive=ter_case_sensitive,
            ),
            SignificanceOptions(
                paired_bs=paired_bs,
                paired_ar=paired_ar,
                paired_bs_n=paired_bs_n,
                paired_ar_n=paired_ar_n,
                confidence=confidence,
                confidence_n=confidence_n,
                seed=seed,
            ),
            ReportOptions(width=width, score_only=score_only, as_json=as_json),
        )
    )


_TranslateBeamSize = Annotated[int, typer.Option("--beam", help="Beam size; 1 is greedy search.")]
_TranslateNbest = Annotated[
    int,
    typer.Option(help="Write the K best as 'LINE ||| text ||| score' lines (LINE from 0)."),
]
_TranslateLenPenalty = Annotated[
    float, typer.Option(help="GNMT length penalty alpha: score / ((5+|Y|)/6)^alpha.")
]
_TranslateLenNorm = Annotated[
    bool, typer.Option("--len-norm", help="Rank by mean log-probability instead.")
]
_TranslateEarlyStop = Annotated[
    bool,
    typer.Option("--early-stop", help="End a sentence when the best candidate ends (faster)."),
]
_TranslateStop = Annotated[
    str,
    typer.Option(
        help="When a sentence's beam is done: bound (no unfinished hypothesis can still win "
        "under the length penalty) or count (beam-size hypotheses ended: fairseq's rule, "
        "shorter output)."
    ),
]
_TranslateMaxLenA = Annotated[
    float, typer.Option(help="Max target tokens = a * source tokens + b.")
]
_TranslateMinLen = Annotated[
    int, typer.Option(help="Target tokens before the end may come (0: no minimum).")
]
_TranslateSampling = Annotated[
    bool, typer.Option("--sampling", help="Sample instead of beam search (--nbest samples).")
]
_TranslateTopK = Annotated[int, typer.Option(help="Sample among the k likeliest tokens; 0: all.")]
_TranslateTopP = Annotated[float, typer.Option(help="Sample from the top-p probability mass.")]
_TranslateTemperature = Annotated[float, typer.Option(help="Sampling temperature.")]
_TranslateSeed = Annotated[
    int | None,
    typer.Option(help="Seed of --sampling and --noised, per line (resumes and shards agree)."),
]
_TranslateMaxTokens = Annotated[
    int | None,
    typer.Option(
        help="Batch budget: sentences x beam x longest source; default 6000 CPU, 60000 GPU."
    ),
]
_TranslateBatchSize = Annotated[
    int | None, typer.Option(help="At most this many sentences a batch.")
]
_TranslateChunkLines = Annotated[
    int,
    typer.Option(
        help="Lines read, sorted and translated together (bounds memory); -o FILE "
        "jobs commit their progress after each."
    ),
]
_TranslateQuantize = Annotated[
    str, typer.Option(help="int8: dynamic int8 linear layers on the CPU; none.")
]
_TranslateNoised = Annotated[
    bool,
    typer.Option(
        "--noised",
        help="Back-translation noise (Edunov et al. 2018): delete and blank words, "
        "shuffle locally; seeded per line.",
    ),
]
_TranslateNoiseFiller = Annotated[str, typer.Option(help="The word --noised puts for blanks.")]
_TranslateOutputFormat = Annotated[
    str, typer.Option(help="text, or tsv: source<TAB>translation (for prepare --tsv).")
]
_TranslateShard = Annotated[
    str | None,
    typer.Option(
        metavar="K/N",
        help="Translate the K-th of N line ranges into OUT.shard-K-of-N (join: translate-merge).",
    ),
]
_TranslateWorkers = Annotated[
    int, typer.Option(help="Run N CPU processes, a shard each (cores // N threads), then merge.")
]
_TranslateRestart = Annotated[
    bool,
    typer.Option("--restart", help="Drop the progress kept beside -o FILE; start from line 1."),
]
_TranslateShortlist = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        help="A lexical shortlist from `mtkit shortlist`: each batch may produce only its "
        "sentences' listed target pieces (faster).",
    ),
]


@app.command(
    "translate",
    short_help="Translate text: beam search, sampling, n-best, ensembles.",
    epilog="Example: mtkit translate -m runs/m30k/checkpoint_best.pt -i test.de -o test.en",
)
def translate_command(
    models: Models = [],  # noqa: B006 (typer needs a literal default; no model is our own clear error)
    input: InputFile = None,
    out: OutputFile = None,
    beam_size: _TranslateBeamSize = SearchOptions.beam_size,
    nbest: _TranslateNbest = SearchOptions.nbest,
    len_penalty: _TranslateLenPenalty = SearchOptions.len_penalty,
    len_norm: _TranslateLenNorm = SearchOptions.len_norm,
    early_stop: _TranslateEarlyStop = SearchOptions.early_stop,
    stop: _TranslateStop = SearchOptions.stop,
    max_len_a: _TranslateMaxLenA = SearchOptions.max_len_a,
    max_len_b: Annotated[int, typer.Option(help="See --max-len-a.")] = SearchOptions.max_len_b,
    min_len: _TranslateMinLen = SearchOptions.min_len,
    sampling: _TranslateSampling = SearchOptions.sampling,
    top_k: _TranslateTopK = SearchOptions.top_k,
    top_p: _TranslateTopP = SearchOptions.top_p,
    temperature: _TranslateTemperature = SearchOptions.temperature,
    seed: _TranslateSeed = SearchOptions.seed,
    max_tokens: _TranslateMaxTokens = BatchOptions.max_tokens,
    batch_size: _TranslateBatchSize = BatchOptions.batch_size,
    chunk_lines: _TranslateChunkLines = BatchOptions.chunk_lines,
    device: Device = RuntimeOptions.device,
    precision: Precision = RuntimeOptions.precision,
    quantize: _TranslateQuantize = RuntimeOptions.quantize,
    threads: Threads = RuntimeOptions.threads,
    noised: _TranslateNoised = NoiseOptions.noised,
    noise_filler: _TranslateNoiseFiller = NoiseOptions.noise_filler,
    output_format: _TranslateOutputFormat = Decoding.output_format,
    shard: _TranslateShard = JobOptions.shard,
    workers: _TranslateWorkers = JobOptions.workers,
    restart: _TranslateRestart = JobOptions.restart,
    shortlist: _TranslateShortlist = None,
) -> None:
    """Translate text with one checkpoint or an ensemble: one line out for every line in.

    With -i FILE -o FILE it is a job that a second run continues after a crash
    (progress in FILE.progress.json), and that --shard, --workers or torchrun split.
    """
    from mtkit.translate.command import translate

    search = SearchOptions(
        beam_size=beam_size,
        nbest=nbest,
        max_len_a=max_len_a,
        max_len_b=max_len_b,
        min_len=min_len,
        len_penalty=len_penalty,
        len_norm=len_norm,
        early_stop=early_stop,
        stop=stop,
        sampling=sampling,
        top_k=top_k,
        top_p=top_p,
        temperature=temperature,
        seed=seed,
    )
    batching = BatchOptions(max_tokens=max_tokens, batch_size=batch_size, chunk_lines=chunk_lines)
    runtime = RuntimeOptions(
        device=device, precision=precision, quantize=quantize, threads=threads,
        shortlist=None if shortlist is None else str(shortlist),
    )  # fmt: skip
    noise = NoiseOptions(noised=noised, noise_filler=noise_filler)
    decoding = Decoding(search, batching, runtime, noise, output_format)
    translate(
        models, input, out, decoding, JobOptions(shard=shard, workers=workers, restart=restart)
    )


_TrainData = Annotated[
    list[str],
    typer.Option(
        metavar="DIR[:WEIGHT[:tag]]",
        help="Prepared data: DIR/{train,valid}.{src,tgt} (+ manifest.json). Repeat for a mix: "
        "WEIGHT x its pairs an epoch (default 1), `tag` puts <BT> before its sources.",
    ),
]
_TrainOut = Annotated[
    Path, typer.Option("--out", "-o", help="Run directory: checkpoints, config, metrics.")
]
_TrainSpm = Annotated[
    Path | None, typer.Option(help="Joint SentencePiece model (train-bpe's spm.model).")
]
_TrainSrcSpm = Annotated[Path | None, typer.Option(help="Source model, with --tgt-spm.")]
_TrainTgtSpm = Annotated[Path | None, typer.Option(help="Target model, with --src-spm.")]
_TrainArch = Annotated[
    str,
    typer.Option(
        help="Preset: transformer-small, transformer-base, transformer-big, "
        "transformer-student (6-2), transformer-student-12-1, transformer-student-narrow "
        "(6-1, 128 wide), rnn."
    ),
]
_TrainSrc = Annotated[str | None, typer.Option(help="Source language; default from manifest.json.")]
_TrainTgt = Annotated[str | None, typer.Option(help="Target language; default from manifest.json.")]
_TrainSet = Annotated[
    list[str],
    typer.Option("--set", metavar="KEY=VALUE", help="Override a model setting (repeat)."),
]
_TrainConfig = Annotated[
    Path | None,
    typer.Option(help="JSON file of model settings (or a run's config.json)."),
]
_TrainMaxTokens = Annotated[
    int, typer.Option(help="Batch budget: padded source or target tokens, the larger.")
]
_TrainUpdateFreq = Annotated[int, typer.Option(help="Batches per update (gradient accumulation).")]
_TrainMaxUpdates = Annotated[int, typer.Option(help="Stop after N updates; 0: no limit.")]
_TrainMaxEpochs = Annotated[int, typer.Option(help="Stop after N epochs; 0: no limit.")]
_TrainMaxTime = Annotated[
    str,
    typer.Option(
        help="Stop after this much training (validation not counted): 90s, 20m, 1h30m; "
        "0: no limit. cosine and linear decay over it."
    ),
]
_TrainPatience = Annotated[
    int, typer.Option(help="Stop after N validations without improvement; 0: never.")
]
_TrainResume = Annotated[
    bool, typer.Option("--resume", help="Continue the run in --out from checkpoint_last.pt.")
]
_TrainInitFrom = Annotated[
    Path | None,
    typer.Option(
        metavar="CKPT",
        help="Fine-tune: start from this checkpoint's weights, settings, SentencePiece "
        "models and vocabulary (fresh optimiser and schedule; no --spm).",
    ),
]
_TrainWarmupShare = Annotated[
    float,
    typer.Option(
        help="cosine/linear with --max-time: warm-up also ends after this share of the "
        "time budget (a slow machine's few updates are not all warm-up); 0: updates only."
    ),
]
_TrainThreads = Annotated[
    int,
    typer.Option(
        help="CPU threads for torch; 0: every core, or one fewer while that trains faster "
        "(a busy core; timed every 200 updates)."
    ),
]
_TrainSchedule = Annotated[
    str,
    typer.Option(
        help="After warm-up: inverse_sqrt, cosine, linear (both decay to 0 when --max-updates "
        "or --max-time runs out, whichever first) or constant."
    ),
]
_TrainLabelSmoothing = Annotated[float, typer.Option(help="Label smoothing epsilon.")]
_TrainClipNorm = Annotated[float, typer.Option(help="Gradient norm clip; 0: off.")]
_TrainWeightDecay = Annotated[float, typer.Option(help="AdamW weight decay; 0: Adam.")]
_TrainValidEvery = Annotated[
    int, typer.Option(help="Validate (and save) every N updates; 0: at each epoch end.")
]
_TrainValidBleuSentences = Annotated[
    int, typer.Option(help="Validation lines translated for BLEU; 0: all.")
]
_TrainBestMetric = Annotated[
    str,
    typer.Option(help="What checkpoint_best.pt and --patience track: bleu, chrf or loss."),
]
_TrainKeepLast = Annotated[int, typer.Option(help="Numbered checkpoints to keep; 0: all.")]
_TrainSaveEveryMinutes = Annotated[
    float,
    typer.Option(help="Also save checkpoints every M minutes of training; 0: at validation."),
]
_TrainSaveAt = Annotated[
    str,
    typer.Option(
        metavar="SHARES",
        help="Also validate and save when these shares of the budget are spent, e.g. "
        "0.8,0.9: checkpoints from the end of the decay for `average --last`.",
    ),
]
_TrainCompile = Annotated[bool, typer.Option("--compile", help="Use torch.compile.")]
_TrainSeed = Annotated[int, typer.Option(help="Random seed: weights, batches, dropout.")]
_TrainLogEvery = Annotated[int, typer.Option(help="Log (metrics.jsonl) every N updates.")]


@app.command(
    "train",
    short_help="Train a Transformer or RNN on prepared data.",
    epilog="Example: mtkit train --data data/m30k --spm spm/spm.model --out runs/m30k",
)
def train_command(
    data: _TrainData,
    out: _TrainOut,
    spm: _TrainSpm = TrainConfig.spm,
    src_spm: _TrainSrcSpm = TrainConfig.src_spm,
    tgt_spm: _TrainTgtSpm = TrainConfig.tgt_spm,
    arch: _TrainArch = TrainConfig.arch,
    src: _TrainSrc = TrainConfig.src,
    tgt: _TrainTgt = TrainConfig.tgt,
    set_: _TrainSet = [],  # noqa: B006 (typer needs a literal default)
    config: _TrainConfig = None,
    max_tokens: _TrainMaxTokens = TrainConfig.max_tokens,
    update_freq: _TrainUpdateFreq = TrainConfig.update_freq,
    max_updates: _TrainMaxUpdates = TrainConfig.max_updates,
    max_epochs: _TrainMaxEpochs = TrainConfig.max_epochs,
    max_time: _TrainMaxTime = str(TrainConfig.max_time),
    patience: _TrainPatience = TrainConfig.patience,
    resume: _TrainResume = TrainConfig.resume,
    init_from: _TrainInitFrom = TrainConfig.init_from,
    lr: Annotated[float, typer.Option(help="Peak learning rate (after warm-up).")] = TrainConfig.lr,
    warmup: Annotated[int, typer.Option(help="Warm-up updates (linear).")] = TrainConfig.warmup,
    warmup_share: _TrainWarmupShare = TrainConfig.warmup_share,
    schedule: _TrainSchedule = TrainConfig.schedule,
    label_smoothing: _TrainLabelSmoothing = TrainConfig.label_smoothing,
    clip_norm: _TrainClipNorm = TrainConfig.clip_norm,
    weight_decay: _TrainWeightDecay = TrainConfig.weight_decay,
    valid_every: _TrainValidEvery = TrainConfig.valid_every,
    valid_bleu_sentences: _TrainValidBleuSentences = TrainConfig.valid_bleu_sentences,
    best_metric: _TrainBestMetric = TrainConfig.best_metric,
    keep_last: _TrainKeepLast = TrainConfig.keep_last,
    save_every_minutes: _TrainSaveEveryMinutes = TrainConfig.save_every_minutes,
    save_at: _TrainSaveAt = "",
    device: Device = TrainConfig.device,
    precision: Precision = TrainConfig.precision,
    compile: _TrainCompile = TrainConfig.compile,
    threads: _TrainThreads = TrainConfig.threads,
    seed: _TrainSeed = TrainConfig.seed,
    log_every: _TrainLogEvery = TrainConfig.log_every,
) -> None:
    """Train a Transformer or RNN; exits 128+signal after Ctrl-C/SIGTERM (checkpoint saved)."""
    from mtkit.train import parse_duration, train
    from mtkit.train.config import model_overrides, parse_fractions

    settings = TrainConfig(
        data=data[0] if len(data) == 1 else list(data), out=str(out), spm=_str(spm),
        src_spm=_str(src_spm), tgt_spm=_str(tgt_spm),
        src=src, tgt=tgt, arch=arch, model_overrides=model_overrides(_str(config), set_),
        max_tokens=max_tokens, update_freq=update_freq, max_updates=max_updates,
        max_epochs=max_epochs, max_time=parse_duration(max_time), patience=patience,
        resume=resume, init_from=_str(init_from), lr=lr, warmup=warmup,
        warmup_share=warmup_share, schedule=schedule,
        label_smoothing=label_smoothing, clip_norm=clip_norm, weight_decay=weight_decay,
        valid_every=valid_every, valid_bleu_sentences=valid_bleu_sentences,
        best_metric=best_metric, keep_last=keep_last, save_every_minutes=save_every_minutes,
        save_at=parse_fractions(save_at), device=device, precision=precision, compile=compile,
        threads=threads, seed=seed, log_every=log_every,
    )  # fmt: skip
    _exit_if_signalled(train(settings), out)


def _exit_if_signalled(result, out: Path) -> None:
    """A run stopped by Ctrl-C/SIGTERM saved its checkpoint; exit 128+signal, as shells do."""
    if result.signal:
        print(
            f"stopped by signal {result.signal} at update {result.step}; "
            f"{out}/checkpoint_last.pt saved, --resume continues",
            file=sys.stderr,
        )
        raise typer.Exit(128 + result.signal)


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


@app.command(
    "average",
    short_help="Average the weights of a run's last checkpoints.",
    epilog="Example: mtkit average runs/m30k --last 5 -o runs/m30k/checkpoint_avg.pt",
)
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
    from mtkit.checkpoint import average_into

    paths = average_into(inputs, out, last=last)
    print(f"averaged {len(paths)} checkpoints into {out}", file=sys.stderr)


@app.command(
    "inspect",
    short_help="Print a checkpoint's languages, step, metrics, settings.",
    epilog="Example: mtkit inspect runs/m30k/checkpoint_best.pt",
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
    typer.echo(describe(files[0], as_json=json_))


_SRC = "Source (one of: --dataset, text files, TSV)"
_CLEAN = "Cleaning (train split only)"


def _source(help_text: str):
    return typer.Option(help=help_text, rich_help_panel=_SRC)


def _file(help_text: str):
    return typer.Option(metavar="FILE", help=help_text, rich_help_panel=_SRC)


_PrepareOut = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="Directory for {train,valid,test}.{src,tgt language} and manifest.json.",
    ),
]
_PrepareSrc = Annotated[
    str | None, typer.Option(help="Source language code (default: the first of --pair).")
]
_PrepareTgt = Annotated[
    str | None, typer.Option(help="Target language code (default: the second of --pair).")
]
_PreparePair = Annotated[
    str | None,
    typer.Option(
        help="Language pair like de-en: picks the hub config in either order (en-de finds "
        "de-en) and, without --src/--tgt, the direction as written.",
    ),
]
_PrepareDataset = Annotated[
    str | None,
    _source(
        "A short name (wmt14..wmt19, multi30k), a hub id (owner/name), or a local "
        "directory laid out like a hub dataset (parquet/arrow/json) or from save_to_disk."
    ),
]
_PrepareConfig = Annotated[
    str | None, _source("The dataset's config (subset), when --pair does not pick it.")
]
_PrepareRevision = Annotated[str | None, _source("Hub revision (branch, tag or commit).")]
_PrepareLocalHub = Annotated[
    Path | None,
    typer.Option(
        envvar="MTKIT_LOCAL_HUB",
        help="A directory of local hub copies, DIR/OWNER/NAME, looked in before the hub.",
        rich_help_panel=_SRC,
    ),
]
_PrepareStreaming = Annotated[
    bool, _source("Stream hub data (bounded memory, no cache); --no-streaming downloads it.")
]
_PrepareTrainSplit = Annotated[
    str | None, _source("Dataset split for train (default: train; '-' skips).")
]
_PrepareValidSplit = Annotated[
    str | None,
    _source("Dataset split for valid (default: validation, valid, dev or val; '-' skips)."),
]
_PrepareTestSplit = Annotated[
    str | None, _source("Dataset split for test (default: test; '-' skips).")
]
_PrepareSrcFile = Annotated[Path | None, _file("Training text in --src (plain or .gz).")]
_PrepareTgtFile = Annotated[Path | None, _file("Training text in --tgt, line for line.")]
_PrepareValidSrcFile = Annotated[Path | None, _file("Validation text in --src.")]
_PrepareValidTgtFile = Annotated[Path | None, _file("Validation text in --tgt.")]
_PrepareTestSrcFile = Annotated[Path | None, _file("Test text in --src.")]
_PrepareTestTgtFile = Annotated[Path | None, _file("Test text in --tgt.")]
_PrepareTsv = Annotated[
    Path | None, _file("Training pairs as TSV, src<TAB>tgt (columns in --pair order if given).")
]
_PrepareMaxLen = Annotated[
    int,
    typer.Option(
        help="Drop pairs with a side longer than this (in --len-unit); 0: no limit.",
        rich_help_panel=_CLEAN,
    ),
]
_PrepareLenUnit = Annotated[
    str,
    typer.Option(
        help="Unit of --max-len and --max-ratio: words (split on spaces) or chars.",
        rich_help_panel=_CLEAN,
    ),
]
_PrepareMaxRatio = Annotated[
    float,
    typer.Option(
        help="Drop pairs whose longer side is more than this many times the shorter; 0: off.",
        rich_help_panel=_CLEAN,
    ),
]
_PrepareDedup = Annotated[
    bool,
    typer.Option(help="Drop exact duplicate pairs, keeping the first.", rich_help_panel=_CLEAN),
]
_PrepareLangid = Annotated[
    bool,
    typer.Option(
        "--langid",
        help="Drop pairs whose source is not --src or target not --tgt by language ID "
        "(fastText lid.176; pip install 'mtkit[langid]').",
        rich_help_panel=_CLEAN,
    ),
]
_PrepareLangidWorkers = Annotated[
    int,
    typer.Option(help="Processes for --langid; 0: one a core.", rich_help_panel=_CLEAN),
]
_PrepareLangidMinProb = Annotated[
    float,
    typer.Option(
        help="--langid keeps a side the model gives its language at least this probability.",
        rich_help_panel=_CLEAN,
    ),
]
_PrepareSubset = Annotated[
    str | None,
    _source(
        "Only this subset of the dataset's training data (e.g. europarl_v7, commoncrawl, "
        "newscommentary_v9 for wmt14 de-en): each one its own corpus for `train --data`."
    ),
]
_PrepareLimit = Annotated[
    int,
    typer.Option(help="Read only the first N pairs of each split (quick subsets); 0: all."),
]


@app.command(
    "prepare",
    short_help="Get a parallel corpus and write it as clean text files.",
    epilog="Example: mtkit prepare --dataset multi30k --src de --tgt en --out data/m30k",
)
def prepare_command(
    out: _PrepareOut,
    src: _PrepareSrc = SourceOptions.src,
    tgt: _PrepareTgt = SourceOptions.tgt,
    pair: _PreparePair = SourceOptions.pair,
    dataset: _PrepareDataset = SourceOptions.dataset,
    config: _PrepareConfig = SourceOptions.config,
    revision: _PrepareRevision = SourceOptions.revision,
    local_hub: _PrepareLocalHub = SourceOptions.local_hub,
    streaming: _PrepareStreaming = SourceOptions.streaming,
    train_split: _PrepareTrainSplit = SourceOptions.train_split,
    valid_split: _PrepareValidSplit = SourceOptions.valid_split,
    test_split: _PrepareTestSplit = SourceOptions.test_split,
    src_file: _PrepareSrcFile = SourceOptions.src_file,
    tgt_file: _PrepareTgtFile = SourceOptions.tgt_file,
    valid_src_file: _PrepareValidSrcFile = SourceOptions.valid_src_file,
    valid_tgt_file: _PrepareValidTgtFile = SourceOptions.valid_tgt_file,
    test_src_file: _PrepareTestSrcFile = SourceOptions.test_src_file,
    test_tgt_file: _PrepareTestTgtFile = SourceOptions.test_tgt_file,
    tsv: _PrepareTsv = SourceOptions.tsv,
    valid_tsv: Annotated[Path | None, _file("Validation pairs as TSV.")] = SourceOptions.valid_tsv,
    test_tsv: Annotated[Path | None, _file("Test pairs as TSV.")] = SourceOptions.test_tsv,
    max_len: _PrepareMaxLen = CleanOptions.max_len,
    len_unit: _PrepareLenUnit = CleanOptions.len_unit,
    max_ratio: _PrepareMaxRatio = CleanOptions.max_ratio,
    dedup: _PrepareDedup = CleanOptions.dedup,
    langid: _PrepareLangid = CleanOptions.langid,
    langid_workers: _PrepareLangidWorkers = CleanOptions.langid_workers,
    langid_min_prob: _PrepareLangidMinProb = CleanOptions.langid_min_prob,
    subset: _PrepareSubset = SourceOptions.subset,
    limit: _PrepareLimit = 0,
) -> None:
    """Get a parallel corpus and write it as clean text, one file per split and language.

    Every split is normalised (whitespace, control characters); only train is
    filtered (empty sides, --max-len, --max-ratio, duplicates), so valid and
    test stay line for line. Files are named by language code (train.de, train.en).
    """
    from mtkit.prepare.pipeline import prepare_corpus

    source = SourceOptions(
        src=src,
        tgt=tgt,
        pair=pair,
        dataset=dataset,
        config=config,
        revision=revision,
        local_hub=local_hub,
        streaming=streaming,
        train_split=train_split,
        valid_split=valid_split,
        test_split=test_split,
        src_file=src_file,
        tgt_file=tgt_file,
        valid_src_file=valid_src_file,
        valid_tgt_file=valid_tgt_file,
        test_src_file=test_src_file,
        test_tgt_file=test_tgt_file,
        tsv=tsv,
        valid_tsv=valid_tsv,
        test_tsv=test_tsv,
        subset=subset,
    )
    clean = CleanOptions(
        max_len=max_len, len_unit=len_unit, max_ratio=max_ratio, dedup=dedup, langid=langid,
        langid_workers=langid_workers, langid_min_prob=langid_min_prob,
    )  # fmt: skip
    prepare_corpus(source, out, clean, limit)


@app.command(
    "export",
    short_help="Export a Transformer checkpoint to CTranslate2.",
    epilog="Example: mtkit export -m model.pt --to ctranslate2 -o model-ct2",
)
def export_command(
    model: Annotated[Path, typer.Option("--model", "-m", help="Transformer checkpoint (.pt).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model directory to write.")],
    to: Annotated[str, typer.Option(help="Target format: ctranslate2.")] = ExportOptions.to,
    quantize: Annotated[
        str,
        typer.Option(help="Weights: none (float32), int8, int8_float16, float16, bfloat16."),
    ] = ExportOptions.quantize,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the directory if it exists.")
    ] = ExportOptions.force,
    shortlist: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="A shortlist from `mtkit shortlist`, written as vmap.txt (translate_batch's "
            "use_vmap=True).",
        ),
    ] = ExportOptions.shortlist,
) -> None:
    """Export a Transformer checkpoint to CTranslate2 (model, vocabularies, SentencePiece)."""
    from mtkit.interop.ctranslate2 import export_ctranslate2

    options = ExportOptions(to=to, quantize=quantize, force=force, shortlist=shortlist)
    export_ctranslate2(model, out, options)


_LogprobInput = Annotated[
    Path | None,
    typer.Option(
        "--input",
        "-i",
        metavar="FILE",
        help="Sources (plain or .gz); without -r/--nbest-input, source<TAB>target lines. "
        "stdin if absent.",
    ),
]
_LogprobRef = Annotated[
    Path | None,
    typer.Option("--ref", "-r", metavar="FILE", help="Targets to score, line for line."),
]
_LogprobNbestInput = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        help="An n-best list 'N ||| hyp ||| score' (N from 0 into -i; '-': stdin): each "
        "line comes back with ' ||| logprob' appended.",
    ),
]
_LogprobPerToken = Annotated[
    bool,
    typer.Option("--per-token", help="Every piece's log-probability, eos last."),
]
_LogprobNormalize = Annotated[
    bool,
    typer.Option("--normalize", help="The mean per piece (eos counted), not the sum."),
]
_LogprobMaxTokens = Annotated[
    int | None,
    typer.Option(help="Batch budget: sentences x longest side; default 4000 CPU, 32000 GPU."),
]
_LogprobBatchSize = Annotated[int | None, typer.Option(help="At most this many pairs a batch.")]
_LogprobChunkLines = Annotated[
    int, typer.Option(help="Pairs read, sorted and scored together (bounds memory).")
]


@app.command(
    "logprob",
    short_help="Log-probability of given translations, for rescoring.",
    epilog="Example: mtkit logprob -m model.pt -i src.de -r hyp.en",
)
def logprob_command(
    models: Models = [],  # noqa: B006 (typer needs a literal default; no model is our own clear error)
    input: _LogprobInput = None,
    ref: _LogprobRef = None,
    nbest_input: _LogprobNbestInput = None,
    out: OutputFile = None,
    per_token: _LogprobPerToken = LogprobOptions.per_token,
    normalize: _LogprobNormalize = LogprobOptions.normalize,
    max_tokens: _LogprobMaxTokens = BatchOptions.max_tokens,
    batch_size: _LogprobBatchSize = BatchOptions.batch_size,
    chunk_lines: _LogprobChunkLines = BatchOptions.chunk_lines,
    device: Device = RuntimeOptions.device,
    precision: Precision = RuntimeOptions.precision,
    threads: Threads = RuntimeOptions.threads,
) -> None:
    """Log-probability of each target given its source under a model or an ensemble:
    one line out per line in (a blank source gives 0.0)."""
    from mtkit.translate.logprob import logprob_file

    logprob_file(
        models,
        input,
        ref,
        nbest_input,
        out,
        LogprobOptions(per_token=per_token, normalize=normalize),
        BatchOptions(max_tokens=max_tokens, batch_size=batch_size, chunk_lines=chunk_lines),
        RuntimeOptions(device=device, precision=precision, threads=threads),
    )


@app.command(
    "plot",
    short_help="Draw the training curves of one or more runs.",
    epilog="Example: mtkit plot runs/a runs/b -o curves.png",
)
def plot_command(
    runs: Annotated[
        list[Path],
        typer.Argument(metavar="RUN", help="Run directories (RUN/metrics.jsonl); overlaid."),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="The figure to write: .png, .pdf or .svg.")
    ] = Path("curves.png"),
    title: Annotated[str | None, typer.Option(help="A title above the figure.")] = None,
) -> None:
    """Training curves: loss, validation BLEU/chrF and learning rate against updates and
    minutes, several runs overlaid (needs matplotlib: pip install 'mtkit[plot]')."""
    from mtkit.plot import plot_runs

    print(f"wrote {plot_runs(runs, out, title)}", file=sys.stderr)


@app.command(
    "import",
    short_help="Import a MarianMT (OPUS-MT) model as a checkpoint.",
    epilog="Example: mtkit import Helsinki-NLP/opus-mt-de-en -o opus-de-en.pt",
)
def import_command(
    source: Annotated[
        str,
        typer.Argument(
            metavar="SOURCE",
            help="A directory in Hugging Face's Marian layout, or a hub id "
            "(Helsinki-NLP/opus-mt-de-en).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The checkpoint to write.")],
) -> None:
    """Import a MarianMT (OPUS-MT) model as an mtkit checkpoint: translate, average,
    ensembles, export and `train --init-from` take it (hub ids need mtkit[hub])."""
    from mtkit.interop.marian import import_marian

    print(f"wrote {import_marian(source, out)}", file=sys.stderr)


@app.command(
    "translate-merge",
    short_help="Join translate --shard outputs in input order.",
    epilog="Example: mtkit translate-merge -o news.en --shards 4",
)
def translate_merge_command(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="The -o FILE the shards were translated for.")
    ],
    shards: Annotated[
        int | None, typer.Option(help="N of the shards; default: the N of the shards found.")
    ] = None,
    keep_shards: Annotated[
        bool, typer.Option("--keep-shards", help="Keep the shard files after the merge.")
    ] = False,
) -> None:
    """Join the shards of `translate --shard K/N -o FILE` into FILE, in input order, after
    checking that every shard is there, finished and from the same run."""
    from mtkit.translate.shards import merge_shards

    merged = merge_shards(out, shards, keep_shards)
    lines, count = merged.lines, merged.shards
    print(f"wrote {merged.output} ({lines} lines from {count} shards)", file=sys.stderr)


@app.command(
    "shortlist",
    short_help="Build a lexical shortlist for faster decoding.",
    epilog="Example: mtkit shortlist --data data/m30k -m runs/m30k/checkpoint_best.pt "
    "-o runs/m30k/shortlist.npz",
)
def shortlist_command(
    data: Annotated[Path, typer.Option(help="Prepared data: DATA/train.{src,tgt} are read.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The shortlist file (.npz).")],
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", metavar="CKPT", help="The checkpoint it is for."),
    ] = None,
    spm: Annotated[
        Path | None, typer.Option(help="Or the joint SentencePiece model the model uses.")
    ] = None,
    best: Annotated[
        int, typer.Option(help="Target pieces kept per source piece.")
    ] = ShortlistOptions.best,
    first: Annotated[
        int, typer.Option(help="The most frequent target pieces, always allowed.")
    ] = ShortlistOptions.first,
    method: Annotated[
        str, typer.Option(help="ibm1 (IBM model 1's p(t|s)) or dice (co-occurrence).")
    ] = ShortlistOptions.method,
    iterations: Annotated[int, typer.Option(help="IBM-1 EM iterations.")] = (
        ShortlistOptions.iterations
    ),
    max_pairs: Annotated[
        int, typer.Option(help="Training pairs read, from the start; 0: all.")
    ] = ShortlistOptions.max_pairs,
    src: Annotated[
        str | None, typer.Option(help="Source language; default: manifest.json.")
    ] = None,
    tgt: Annotated[
        str | None, typer.Option(help="Target language; default: manifest.json.")
    ] = None,
) -> None:
    """Build a lexical shortlist (as Marian's): per source piece, the target pieces it
    translates to most often in the training data, for `translate --shortlist` and
    `export --shortlist`. Prints its coverage of DATA/valid."""
    from mtkit.shortlist import build_shortlist_file

    options = ShortlistOptions(
        best=best, first=first, method=method, iterations=iterations, max_pairs=max_pairs
    )
    found = build_shortlist_file(data, out, options, model, spm, src, tgt)
    print(f"wrote {out}", file=sys.stderr)
    if found:
        print(
            f"valid: {found['coverage']:.2%} of reference pieces covered, "
            f"{found['mean_size']:.0f} pieces a sentence ({found['sentences']} sentences)",
            file=sys.stderr,
        )


# -- commands added by later issues go above this line -----------------------


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
