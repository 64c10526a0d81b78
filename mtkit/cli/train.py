"""`mtkit train`: its options, over `mtkit.train.train`, and the exit code of a run that a
signal stopped."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mtkit.cli.options import (
    Device,
    Precision,
    SampleTemperature,
    SrcLang,
    TgtLang,
    command,
    options_from,
    out_option,
)
from mtkit.train.config import TrainConfig

_Data = Annotated[
    list[str],
    typer.Option(
        metavar="DIR[:WEIGHT[:tag]]",
        help="Prepared data: DIR/{train,valid}.{src,tgt} (+ manifest.json). Repeat for a mix: "
        "WEIGHT x its pairs an epoch (default 1), `tag` puts <BT> before its sources. "
        "Corpora of several pairs make one multilingual model (<2xx> tags).",
    ),
]
_Out = Annotated[Path, out_option("Run directory: checkpoints, config, metrics.")]
_Spm = Annotated[
    Path | None, typer.Option(help="Joint SentencePiece model (train-bpe's spm.model).")
]
_SrcSpm = Annotated[Path | None, typer.Option(help="Source model, with --tgt-spm.")]
_TgtSpm = Annotated[Path | None, typer.Option(help="Target model, with --src-spm.")]
_Arch = Annotated[
    str,
    typer.Option(
        help="Preset: transformer-small, transformer-base, transformer-big, "
        "transformer-student (6-2), transformer-student-12-1, transformer-student-narrow "
        "(6-1, 128 wide), rnn."
    ),
]
_Src = Annotated[str | None, typer.Option(help="Source language; default from manifest.json.")]
_Tgt = Annotated[str | None, typer.Option(help="Target language; default from manifest.json.")]
_Set = Annotated[
    list[str], typer.Option("--set", metavar="KEY=VALUE", help="Override a model setting (repeat).")
]
_Config = Annotated[
    Path | None, typer.Option(help="JSON file of model settings (or a run's config.json).")
]
_MaxTokens = Annotated[
    int, typer.Option(help="Batch budget: padded source or target tokens, the larger.")
]
_UpdateFreq = Annotated[int, typer.Option(help="Batches per update (gradient accumulation).")]
_MaxUpdates = Annotated[int, typer.Option(help="Stop after N updates; 0: no limit.")]
_MaxEpochs = Annotated[int, typer.Option(help="Stop after N epochs; 0: no limit.")]
_MaxTime = Annotated[
    str,
    typer.Option(
        help="Stop after this much training (validation not counted): 90s, 20m, 1h30m; "
        "0: no limit. cosine and linear decay over it."
    ),
]
_Patience = Annotated[
    int, typer.Option(help="Stop after N validations without improvement; 0: never.")
]
_Resume = Annotated[
    bool, typer.Option("--resume", help="Continue the run in --out from checkpoint_last.pt.")
]
_InitFrom = Annotated[
    Path | None,
    typer.Option(
        metavar="CKPT",
        help="Fine-tune: start from this checkpoint's weights, settings, SentencePiece "
        "models and vocabulary (fresh optimiser and schedule; no --spm).",
    ),
]
_Lr = Annotated[float, typer.Option(help="Peak learning rate (after warm-up).")]
_Warmup = Annotated[int, typer.Option(help="Warm-up updates (linear).")]
_WarmupShare = Annotated[
    float,
    typer.Option(
        help="cosine/linear with --max-time: warm-up also ends after this share of the "
        "time budget (a slow machine's few updates are not all warm-up); 0: updates only."
    ),
]
_Schedule = Annotated[
    str,
    typer.Option(
        help="After warm-up: inverse_sqrt, cosine, linear (both decay to 0 when --max-updates "
        "or --max-time runs out, whichever first) or constant."
    ),
]
_LabelSmoothing = Annotated[float, typer.Option(help="Label smoothing epsilon.")]
_ClipNorm = Annotated[float, typer.Option(help="Gradient norm clip; 0: off.")]
_WeightDecay = Annotated[float, typer.Option(help="AdamW weight decay; 0: Adam.")]
_ValidEvery = Annotated[
    int, typer.Option(help="Validate (and save) every N updates; 0: at each epoch end.")
]
_ValidBleuSentences = Annotated[
    int, typer.Option(help="Validation lines translated for BLEU; 0: all.")
]
_BestMetric = Annotated[
    str, typer.Option(help="What checkpoint_best.pt and --patience track: bleu, chrf or loss.")
]
_KeepLast = Annotated[int, typer.Option(help="Numbered checkpoints to keep; 0: all.")]
_SaveEveryMinutes = Annotated[
    float, typer.Option(help="Also save checkpoints every M minutes of training; 0: at validation.")
]
_SaveAt = Annotated[
    str,
    typer.Option(
        metavar="SHARES",
        help="Also validate and save when these shares of the budget are spent, e.g. "
        "0.8,0.9: checkpoints from the end of the decay for `average --last`.",
    ),
]
_AddLang = Annotated[
    list[str],
    typer.Option(
        metavar="CODE[:LIKE]",
        help="With a multilingual --init-from: add a language token, its embedding copied "
        "from LIKE's (default: the mean of the language tokens'). Repeatable.",
    ),
]
_Compile = Annotated[bool, typer.Option("--compile", help="Use torch.compile.")]
_Threads = Annotated[
    int,
    typer.Option(
        help="CPU threads for torch; 0: every core, or one fewer while that trains faster "
        "(a busy core; timed every 200 updates)."
    ),
]
_Seed = Annotated[int, typer.Option(help="Random seed: weights, batches, dropout.")]
_LogEvery = Annotated[int, typer.Option(help="Log (metrics.jsonl) every N updates.")]


@command(
    "train",
    short_help="Train a Transformer or RNN on prepared data.",
    example="mtkit train --data data/m30k --spm spm/spm.model --out runs/m30k",
)
def train_command(
    data: _Data,
    out: _Out,
    sample_temperature: SampleTemperature = TrainConfig.sample_temperature,
    spm: _Spm = TrainConfig.spm,
    src_spm: _SrcSpm = TrainConfig.src_spm,
    tgt_spm: _TgtSpm = TrainConfig.tgt_spm,
    arch: _Arch = TrainConfig.arch,
    src: _Src = TrainConfig.src,
    tgt: _Tgt = TrainConfig.tgt,
    set_: _Set = [],  # noqa: B006 (typer needs a literal default)
    config: _Config = None,
    max_tokens: _MaxTokens = TrainConfig.max_tokens,
    update_freq: _UpdateFreq = TrainConfig.update_freq,
    max_updates: _MaxUpdates = TrainConfig.max_updates,
    max_epochs: _MaxEpochs = TrainConfig.max_epochs,
    max_time: _MaxTime = str(TrainConfig.max_time),
    patience: _Patience = TrainConfig.patience,
    resume: _Resume = TrainConfig.resume,
    init_from: _InitFrom = TrainConfig.init_from,
    src_lang: SrcLang = TrainConfig.src_lang,
    tgt_lang: TgtLang = TrainConfig.tgt_lang,
    add_lang: _AddLang = [],  # noqa: B006 (typer needs a literal default)
    lr: _Lr = TrainConfig.lr,
    warmup: _Warmup = TrainConfig.warmup,
    warmup_share: _WarmupShare = TrainConfig.warmup_share,
    schedule: _Schedule = TrainConfig.schedule,
    label_smoothing: _LabelSmoothing = TrainConfig.label_smoothing,
    clip_norm: _ClipNorm = TrainConfig.clip_norm,
    weight_decay: _WeightDecay = TrainConfig.weight_decay,
    valid_every: _ValidEvery = TrainConfig.valid_every,
    valid_bleu_sentences: _ValidBleuSentences = TrainConfig.valid_bleu_sentences,
    best_metric: _BestMetric = TrainConfig.best_metric,
    keep_last: _KeepLast = TrainConfig.keep_last,
    save_every_minutes: _SaveEveryMinutes = TrainConfig.save_every_minutes,
    save_at: _SaveAt = "",
    device: Device = TrainConfig.device,
    precision: Precision = TrainConfig.precision,
    compile: _Compile = TrainConfig.compile,
    threads: _Threads = TrainConfig.threads,
    seed: _Seed = TrainConfig.seed,
    log_every: _LogEvery = TrainConfig.log_every,
) -> None:
    """Train a Transformer or RNN; exits 128+signal after Ctrl-C/SIGTERM (checkpoint saved)."""
    from mtkit.train import train

    _exit_if_signalled(train(_settings(locals())), out)


def _settings(params: dict) -> TrainConfig:
    """The command's parameters as a TrainConfig: paths as text (it is saved as JSON), one
    --data as itself and several as a list, and the options parsed from their text."""
    from mtkit.train import parse_duration
    from mtkit.train.config import model_overrides, parse_fractions

    data = params["data"]
    paths = {name: _str(params[name]) for name in ("out", "spm", "src_spm", "tgt_spm", "init_from")}
    return options_from(
        TrainConfig,
        params,
        **paths,
        data=data[0] if len(data) == 1 else list(data),
        model_overrides=model_overrides(_str(params["config"]), params["set_"]),
        max_time=parse_duration(params["max_time"]),
        save_at=parse_fractions(params["save_at"]),
        add_lang=tuple(params["add_lang"]),
    )


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _exit_if_signalled(result, out: Path) -> None:
    """A run stopped by Ctrl-C/SIGTERM saved its checkpoint; exit 128+signal, as shells do."""
    if result.signal:
        print(
            f"stopped by signal {result.signal} at update {result.step}; "
            f"{out}/checkpoint_last.pt saved, --resume continues",
            file=sys.stderr,
        )
        raise typer.Exit(128 + result.signal)
