"""Putting a run together: device, data, model, optimiser, precision, and what resume restores.

`build_trainer` turns a TrainConfig into a ready `Trainer`; the loop itself is
`mtkit.train.loop`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from pathlib import Path

from mtkit.errors import ConfigError, DataError
from mtkit.train.config import TrainConfig, resume_mismatches

log = logging.getLogger(__name__)


def model_config_for(config: TrainConfig, src_vocab: int, tgt_vocab: int, joint: bool):
    """The preset, the user's overrides, then the SentencePiece models' vocabulary sizes."""
    from mtkit.models.config import override, preset_config

    values = {"share_embeddings": joint, **config.model_overrides}
    values |= {"src_vocab_size": src_vocab, "tgt_vocab_size": tgt_vocab}
    return override(preset_config(config.arch), values)


def resolve_precision(precision: str, device) -> str:
    """fp32 on the CPU, bf16 on a GPU that has it (fp16 otherwise), unless asked."""
    import torch

    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA GPU; use fp32 or bf16 on the CPU")
    return precision


def autocast_for(precision: str, device):
    """A zero-argument callable giving the autocast context of `precision`."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def set_threads(config: TrainConfig, dist) -> None:
    """--threads, or under torchrun on the CPU the cores divided among the local processes."""
    import torch

    threads = config.threads
    if not threads and dist.enabled and dist.device.type == "cpu":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size))
        threads = max(1, (os.cpu_count() or 1) // local)
    if threads:
        torch.set_num_threads(threads)


def load_resume(config: TrainConfig, out: Path) -> dict | None:
    """checkpoint_last.pt when resuming; refuse to overwrite a run that was not asked to resume."""
    from mtkit.checkpoint import load_checkpoint

    last = out / "checkpoint_last.pt"
    if not config.resume:
        if last.exists():
            raise ConfigError(
                f"{out} already holds a run ({last.name}); pass --resume to continue it "
                "or choose another --out"
            )
        return None
    if not last.exists():
        log.info("no %s yet: starting a new run", last)
        return None
    ckpt = load_checkpoint(last)
    if "train_state" not in ckpt:
        raise ConfigError(f"{last} has no training state (an averaged checkpoint?); cannot resume")
    return ckpt


def check_resume(ckpt: dict, config: TrainConfig, model_config, data) -> None:
    """The resumed run must be the same run: options, model, languages, vocabulary."""
    problems = resume_mismatches(ckpt["train_config"], config)
    saved_model = ckpt["model_config"]
    now_model = dataclasses.asdict(model_config)
    problems += [
        f"model {k}: {saved_model.get(k)!r} -> {now_model[k]!r}"
        for k in now_model
        if saved_model.get(k) != now_model[k] and not k.endswith("vocab_size")
    ]
    if ckpt["langs"] != data.langs:
        problems.append(f"languages: {ckpt['langs']} -> {data.langs}")
    if ckpt["spm"] != data.spm_bytes:
        problems.append("SentencePiece model: differs from the one the run was trained with")
    if problems:
        raise ConfigError(
            "cannot resume: the options differ from the saved run ("
            + "; ".join(problems)
            + "); use the run's options (see RUN/config.json) or start a new --out"
        )


def build_trainer(config: TrainConfig, dist):
    """A Trainer ready to run: fresh, or restored from RUN/checkpoint_last.pt."""
    import torch

    from mtkit.models import build_model
    from mtkit.train.data import load_run_data
    from mtkit.train.loop import Trainer

    config.world_size = dist.world_size
    set_threads(config, dist)
    out = Path(config.out)
    ckpt = load_resume(config, out)
    data = load_run_data(config)
    joint = data.src_tok is data.tgt_tok or data.spm_bytes["src"] == data.spm_bytes["tgt"]
    model_config = model_config_for(config, data.src_tok.vocab_size, data.tgt_tok.vocab_size, joint)
    if ckpt:
        check_resume(ckpt, config, model_config, data)
    t = Trainer()
    t.config, t.model_config, t.dist, t.data, t.out = config, model_config, dist, data, out
    _batches(t)
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    t.raw = build_model(model_config).to(dist.device)
    precision = resolve_precision(config.precision, dist.device)
    t.autocast = autocast_for(precision, dist.device)
    t.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    t.optimizer = _optimizer(t.raw, config, dist)
    torch.manual_seed(config.seed + dist.rank)  # different dropout on each rank
    if ckpt:
        _restore(t, ckpt)
    _wrap(t, config, dist)
    if dist.is_main:
        _start_files(t, resumed=ckpt is not None)
        n_params = sum(p.numel() for p in t.raw.parameters())
        log.info(
            f"{config.arch}: {len(t.pairs):,} pairs in {len(t.batches):,} batches of <= "
            f"{config.max_tokens} tokens, {n_params:,} parameters, {precision} on {dist.device}"
        )
    return t


def _batches(t) -> None:
    """The trainable pairs and their token-budget batches, fixed for the whole run."""
    from mtkit.train.batching import filter_pairs, make_batches

    config, dist = t.config, t.dist
    t.pairs, dropped = filter_pairs(
        t.data.train, max_len=t.model_config.max_positions, max_tokens=config.max_tokens
    )
    _log_dropped(dropped, len(t.data.train))
    t.batches = make_batches(t.pairs, max_tokens=config.max_tokens, seed=config.seed)
    if not t.batches:
        raise DataError(
            f"no training pairs left after skipping {dropped}; raise --max-tokens or "
            "--set max_positions=N, or check the data"
        )
    if len(t.batches) < dist.world_size:
        raise DataError(
            f"{len(t.batches)} training batches for {dist.world_size} processes; use more data, "
            "a smaller --max-tokens or fewer processes"
        )
    t.tgt_lengths = t.pairs.tgt.lengths().tolist()


def _optimizer(model, config: TrainConfig, dist):
    from mtkit.train.optim import build_optimizer

    return build_optimizer(model, lr=config.lr, weight_decay=config.weight_decay)


def _restore(t, ckpt: dict) -> None:
    """Weights, optimiser, counters and this rank's RNG state from the checkpoint."""
    from mtkit.train.loop import Progress
    from mtkit.train.state import set_rng_state

    state = ckpt["train_state"]
    t.raw.load_state_dict(ckpt["model"])
    t.optimizer.load_state_dict(state["optimizer"])
    if t.scaler and state.get("scaler"):
        t.scaler.load_state_dict(state["scaler"])
    t.progress = Progress(**state["progress"])
    t.last_valid = {k: v for k, v in ckpt.get("metrics", {}).items() if k.startswith("valid_")}
    set_rng_state(state["rng"][t.dist.rank], t.dist.device)
    log.info(
        "resuming at step %d (epoch %d) from checkpoint_last.pt", t.progress.step, t.progress.epoch
    )


def _wrap(t, config: TrainConfig, dist) -> None:
    """DistributedDataParallel under torchrun, then torch.compile when asked."""
    import torch

    t.model = t.raw
    if dist.enabled:
        ids = [dist.device.index] if dist.device.type == "cuda" else None
        t.ddp = torch.nn.parallel.DistributedDataParallel(t.raw, device_ids=ids)
        t.model = t.ddp
    if config.compile:
        t.model = torch.compile(t.model)


def _start_files(t, resumed: bool) -> None:
    """RUN/config.json (everything that made the run) and RUN/metrics.jsonl."""
    from mtkit import __version__
    from mtkit.train.state import MetricsLog, write_json

    t.out.mkdir(parents=True, exist_ok=True)
    write_json(
        t.out / "config.json",
        {
            "mtkit_version": __version__,
            "langs": t.data.langs,
            "train": t.config.to_dict(),
            "model": dataclasses.asdict(t.model_config),
        },
    )
    t.metrics = MetricsLog(t.out / "metrics.jsonl", t.progress.step if resumed else None)


def _log_dropped(dropped: dict, total: int) -> None:
    for reason, count in dropped.items():
        if count:
            log.info(
                "skipped %s of %s training pairs: %s",
                f"{count:,}",
                f"{total:,}",
                reason.replace("_", " "),
            )
