"""Training options: one dataclass with the defaults, checks, and what a resume may change.

The model's own settings live in `mtkit.models.config`; this is everything
else `mtkit train` takes. Both are saved in every checkpoint and in RUN/config.json.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mtkit.device import DEVICES, PRECISIONS
from mtkit.errors import ConfigError
from mtkit.sampling import check_temperature
from mtkit.train.optim import DECAYING

SCHEDULES = ("inverse_sqrt", "cosine", "linear", "constant")
BEST_METRICS = ("bleu", "chrf", "loss")
# Options that shape the loss curve: a resumed run must use the same values.
MUST_MATCH_ON_RESUME = (
    "arch",
    "src",
    "tgt",
    "max_tokens",
    "update_freq",
    "seed",
    "lr",
    "warmup",
    "warmup_share",
    "schedule",
    "label_smoothing",
    "weight_decay",
    "clip_norm",
    "world_size",
    "sample_temperature",
)


@dataclass
class TrainConfig:
    """Every option of `mtkit train` except the model's settings."""

    data: str | list = ""  # DIR, or several DIR[:WEIGHT[:TAG]] (mtkit.train.mix)
    # Corpora of several language pairs (mtkit.train.multilingual): each pair's share of
    # an epoch proportional to its size^(1/T); 1: as the weights say (mtkit.train.mix).
    sample_temperature: float = 1.0
    out: str = ""
    spm: str | None = None  # joint model; or src_spm and tgt_spm
    src_spm: str | None = None
    tgt_spm: str | None = None
    src: str | None = None  # default: DATA/manifest.json
    tgt: str | None = None
    arch: str = "transformer-small"
    model_overrides: dict = field(default_factory=dict)
    # Batches and updates (fairseq's defaults for Transformers on one GPU).
    max_tokens: int = 4096
    update_freq: int = 1
    # When to stop: 0 means no limit; whichever limit comes first wins.
    max_updates: int = 0
    max_epochs: int = 0
    # Seconds of training, summed over resumes: time in updates (data, forward, backward,
    # optimiser, checkpoint copies), not validation, so the budget and the schedule's
    # decay over it do not depend on how often or how much one validates.
    max_time: float = 0.0
    patience: int = 0  # validations without improvement; 0: no early stopping
    # Optimiser: Adam with betas (0.9, 0.98) and eps 1e-9 (Vaswani et al., 2017, sec. 5.3).
    lr: float = 5e-4  # the peak, reached at the end of warm-up
    warmup: int = 4000
    # cosine and linear with --max-time: warm-up also ends after this share of the time
    # budget, so a slow machine's few updates are not mostly warm-up; 0: updates only.
    warmup_share: float = 0.25
    schedule: str = "inverse_sqrt"
    min_lr: float = 0.0  # cosine and linear decay to this
    label_smoothing: float = 0.1  # Szegedy et al. (2016); Vaswani et al. use 0.1
    weight_decay: float = 0.0
    clip_norm: float = 1.0  # 0: no clipping
    # Validation and checkpoints.
    valid_every: int = 1000  # updates; 0: at the end of every epoch (and always at the end)
    valid_bleu_sentences: int = 1000  # 0: the whole validation set
    best_metric: str = "bleu"  # bleu, chrf or loss: checkpoint_best.pt and --patience follow it
    save_every_minutes: float = 0.0  # also save (last + numbered) this often; 0: at validation only
    keep_last: int = 5  # numbered checkpoints kept; 0 keeps all
    # Also validate and save a numbered checkpoint when this share of the budget
    # (max_updates or max_time, whichever binds) is spent: checkpoints to average from
    # the end of the decay, whatever the machine's speed.
    save_at: tuple[float, ...] = ()
    # Hardware.
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    threads: int = 0  # 0: torch's default
    seed: int = 1
    log_every: int = 50
    resume: bool = False
    # Fine-tuning: start from this checkpoint's weights, model settings, SentencePiece
    # models and vocabulary (an imported OPUS-MT model or an mtkit run), with a fresh
    # optimiser, schedule and step count; --spm and --arch are not used.
    init_from: str | None = None
    # A multilingual --init-from (NLLB-200, M2M-100): the direction to fine-tune, in the
    # model's codes (default: the data's own codes where the model has them), and
    # languages to add, CODE or CODE:LIKE (mtkit.train.finetune).
    src_lang: str | None = None
    tgt_lang: str | None = None
    add_lang: tuple[str, ...] = ()
    world_size: int = 1  # set from the environment under torchrun

    def to_dict(self) -> dict:
        return asdict(self)


def check(config: TrainConfig) -> TrainConfig:
    """Check option values; the error names the option and the valid range or choices."""
    from mtkit.train.mix import parse_specs

    parse_specs(config.data)  # a bad weight or tag fails before anything is read
    check_temperature(config.sample_temperature)
    _choice("schedule", config.schedule, SCHEDULES)
    _choice("precision", config.precision, PRECISIONS)
    _choice("device", config.device, DEVICES)
    _choice("best_metric", config.best_metric, BEST_METRICS)
    for name in ("max_tokens", "update_freq", "log_every"):
        if getattr(config, name) < 1:
            raise ConfigError(
                f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}"
            )
    for name in (
        "max_updates",
        "max_epochs",
        "max_time",
        "patience",
        "warmup",
        "valid_every",
        "valid_bleu_sentences",
        "keep_last",
        "save_every_minutes",
        "threads",
        "clip_norm",
        "weight_decay",
    ):
        if getattr(config, name) < 0:
            raise ConfigError(
                f"--{name.replace('_', '-')} must not be negative, got {getattr(config, name)}"
            )
    if config.lr <= 0:
        raise ConfigError(f"--lr must be positive, got {config.lr}")
    if not 0.0 <= config.warmup_share <= 1.0:
        raise ConfigError(f"--warmup-share must be in [0, 1], got {config.warmup_share}")
    if not 0.0 <= config.label_smoothing < 1.0:
        raise ConfigError(f"--label-smoothing must be in [0, 1), got {config.label_smoothing}")
    if config.schedule in DECAYING and not _has_budget(config):
        raise ConfigError(
            f"--schedule {config.schedule} decays over the budget; pass --max-time (e.g. 20m), "
            "--max-updates N or --max-epochs N"
        )
    _check_save_at(config)
    config.save_at = tuple(sorted(config.save_at))
    _check_start(config)
    return config


def _check_start(config: TrainConfig) -> None:
    """What the model starts from: --init-from's checkpoint (and its languages), or
    SentencePiece models for a model from scratch."""
    if config.init_from and (config.spm or config.src_spm or config.tgt_spm):
        raise ConfigError(
            "--init-from brings the checkpoint's own SentencePiece models and vocabulary; "
            "drop --spm/--src-spm/--tgt-spm"
        )
    if (config.src_lang or config.tgt_lang or config.add_lang) and not config.init_from:
        raise ConfigError(
            "--src-lang, --tgt-lang and --add-lang choose the direction of a multilingual "
            "--init-from model (NLLB-200, M2M-100); a run from scratch takes --src/--tgt"
        )
    if config.init_from:
        return
    if config.spm and (config.src_spm or config.tgt_spm):
        raise ConfigError("pass either --spm (joint) or --src-spm and --tgt-spm, not both")
    if not config.spm and not (config.src_spm and config.tgt_spm):
        raise ConfigError(
            "no SentencePiece model: pass --spm SPM/spm.model, or --src-spm and --tgt-spm"
        )


def _check_save_at(config: TrainConfig) -> None:
    for fraction in config.save_at:
        if not 0.0 < fraction <= 1.0:
            raise ConfigError(
                f"--save-at takes shares of the budget in (0, 1], got {fraction}; "
                "e.g. --save-at 0.8,0.9"
            )
    if config.save_at and not _has_budget(config):
        raise ConfigError(
            "--save-at saves at shares of the budget; pass --max-time (e.g. 20m), "
            "--max-updates N or --max-epochs N"
        )


def _has_budget(config: TrainConfig) -> bool:
    return bool(config.max_updates or config.max_time or config.max_epochs)


def parse_fractions(text: str) -> tuple[float, ...]:
    """(0.8, 0.9) from "0.8,0.9" (--save-at); empty text: none. ConfigError otherwise."""
    try:
        return tuple(sorted(float(part) for part in text.split(",") if part.strip()))
    except ValueError:
        raise ConfigError(
            f"cannot read --save-at {text!r}; write shares of the budget, e.g. 0.8,0.9"
        ) from None


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")


def parse_duration(text: str | float | int) -> float:
    """Seconds in "90", "90s", "20m", "1h30m", "2h", "1.5h"; ConfigError otherwise."""
    if isinstance(text, (int, float)):
        return float(text)
    value = text.strip().lower()
    try:
        return float(value)
    except ValueError:
        pass
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", value)
    if not value or parts is None:
        raise ConfigError(
            f"cannot read the duration {text!r}; write e.g. 90s, 20m, 1h30m or a number of seconds"
        )
    hours, minutes, seconds = (float(p) if p else 0.0 for p in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


def resume_mismatches(saved: dict, config: TrainConfig) -> list[str]:
    """The options that differ from the run being resumed, as "name: saved -> now"."""
    now = config.to_dict()
    # A decaying schedule's curve is drawn over the budget: both its ends must stay put.
    decaying = ("max_updates", "max_epochs", "max_time") if config.schedule in DECAYING else ()
    names = MUST_MATCH_ON_RESUME + decaying
    return [
        f"{name}: {saved.get(name)!r} -> {now[name]!r}"
        for name in names
        if name in saved and saved[name] != now[name]
    ]


def model_overrides(config_file: str | None, assignments: list[str]) -> dict:
    """Model settings from a JSON file (flat, or RUN/config.json's "model"), then --set."""
    values: dict = {}
    if config_file:
        loaded = load_config_file(config_file)
        model = loaded.get("model")
        values = dict(model) if isinstance(model, dict) else loaded
        # A run's config.json carries its vocabulary; this run takes its own SentencePiece sizes.
        for key in ("src_vocab_size", "tgt_vocab_size"):
            values.pop(key, None)
    return values | parse_assignments(assignments)


def parse_assignments(items: list[str]) -> dict[str, str]:
    """Turn `["d_model=512", "dropout=0.2"]` into a dict, as given to `--set`."""
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected KEY=VALUE, got {item!r} (for example d_model=512)")
        values[key.strip()] = value.strip()
    return values


def load_config_file(path: Path) -> dict[str, object]:
    """The settings in a JSON config file (an object of model settings)."""
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConfigError(f"config file {path} is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a JSON object of settings")
    return values
