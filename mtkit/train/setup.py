"""Putting a run together: data, batches, model, optimiser, precision, and what resume restores.

`build_trainer` turns a TrainConfig into the pieces and calls `Trainer`'s
constructor once; the loop itself is `mtkit.train.loop`'s, the run's files
`mtkit.train.state.RunFiles`', the device and precision `mtkit.device`'s.
"""

from __future__ import annotations

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


def set_threads(config: TrainConfig, dist) -> None:
    """--threads, or under torchrun on the CPU the cores divided among the local processes."""
    import torch

    threads = config.threads
    if not threads and dist.enabled and dist.device.type == "cpu":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size))
        threads = max(1, (os.cpu_count() or 1) // local)
    if threads:
        torch.set_num_threads(threads)


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

    from mtkit.device import pick_precision
    from mtkit.models import build_model
    from mtkit.train.data import load_run_data
    from mtkit.train.loop import Trainer
    from mtkit.train.state import RunFiles

    config.world_size = dist.world_size
    set_threads(config, dist)
    files = RunFiles(Path(config.out), writer=dist.is_main, keep_last=config.keep_last)
    ckpt = files.load_resume(config.resume)
    init = load_init(config)
    data = load_run_data(config, init and init["tokenizers"], init and init["languages"])
    joint = data.src_tok is data.tgt_tok or data.spm_bytes["src"] == data.spm_bytes["tgt"]
    sizes = (data.src_tok.vocab_size, data.tgt_tok.vocab_size)
    model_config = init["model_config"] if init else model_config_for(config, *sizes, joint)
    if ckpt:
        check_resume(ckpt, config, model_config, data)
    batches = make_run_batches(config, model_config, data.train, dist.world_size, data)
    if ckpt:
        check_resume_mix(ckpt, data)
    precision = pick_precision(config.precision, dist.device, command="train")
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    raw = build_model(model_config).to(dist.device)
    if init and not ckpt:
        load_init_weights(raw, init, config)
    optimizer = _optimizer(raw, config)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    torch.manual_seed(config.seed + dist.rank)  # different dropout on each rank
    progress, last_valid = _restore(ckpt, raw, optimizer, scaler, dist) if ckpt else (None, None)
    model, ddp = wrap_model(raw, config, dist)
    if dist.is_main:
        _log_start(config, batches, raw, precision, dist.device)
    trainer = Trainer(
        config,
        model_config,
        dist,
        data,
        batches,
        raw,
        optimizer,
        files=files,
        precision=precision,
        model=model,
        ddp=ddp,
        scaler=scaler,
        progress=progress,
        last_valid=last_valid,
    )
    if init and not ckpt:
        trainer.last_valid = first_validation(trainer)
    return trainer


def _log_start(config: TrainConfig, batches, raw, precision: str, device) -> None:
    n_params = sum(p.numel() for p in raw.parameters())
    log.info(
        f"{config.arch}: {len(batches.order):,} pairs in {len(batches):,} batches of <= "
        f"{config.max_tokens} tokens, {n_params:,} parameters, {precision} on {device}"
    )


def load_init(config: TrainConfig) -> dict | None:
    """--init-from's checkpoint as {"model_config", "model", "tokenizers", "languages"}
    (None without it): the checkpoint's settings with --set applied (dropout, say), its
    weights, its SentencePiece models with its vocabulary tables, and a multilingual
    model's Languages (None for a bilingual one), --add-lang's languages added."""
    if not config.init_from:
        return None
    from mtkit.checkpoint import checkpoint_tokenizers, load_checkpoint, plain_state_dict
    from mtkit.languages import languages_of
    from mtkit.models.config import config_from_dict, override
    from mtkit.train.finetune import add_languages

    ckpt = add_languages(load_checkpoint(config.init_from), config.add_lang)
    model_config = override(config_from_dict(ckpt["model_config"]), config.model_overrides)
    log.info(
        "starting from %s (step %d): fresh optimiser and schedule", config.init_from, ckpt["step"]
    )
    return {
        "model_config": model_config,
        "model": plain_state_dict(ckpt["model"]),
        "tokenizers": checkpoint_tokenizers(ckpt, name=str(config.init_from)),
        "languages": languages_of(ckpt),
    }


def load_init_weights(raw, init: dict, config: TrainConfig) -> None:
    """The --init-from weights into the fresh model; --set values that change their
    shapes (d_model, layers ...) are a clear error."""
    try:
        raw.load_state_dict(init["model"])
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise ConfigError(
            f"the weights of {config.init_from} do not fit the model its settings and --set "
            f"give ({first}); with --init-from, --set only what keeps the shapes (dropout)"
        ) from None


def first_validation(trainer) -> dict:
    """Validate the starting weights before the first update, so a fine-tuning run's
    gain shows; the numbers go to the log and the first checkpoint's metrics."""
    if trainer.data.valid is None:
        return {}
    metrics = trainer.evaluate()
    if trainer.dist.is_main:
        log.info(
            "step 0 (--init-from, before any update): valid loss %.3f ppl %.2f bleu %.2f chrf %.2f",
            *(metrics[k] for k in ("valid_loss", "valid_ppl", "valid_bleu", "valid_chrf")),
        )
    return metrics


def make_run_batches(config: TrainConfig, model_config, pairs, world_size: int, data=None):
    """The trainable pairs' token-budget batches, fixed for the whole run (indices into
    the mapped corpus, themselves kept beside it: nothing is copied). A mix (`data.is_mix`)
    gets its `mix.Mix` here, and its first epoch's batches: each epoch cuts its own."""
    from mtkit.train.corpus import run_batches

    if data is not None and data.is_mix:
        batches, dropped = _mix_batches(config, model_config, data)
        pairs = data.train
    else:
        batches, dropped = run_batches(
            pairs,
            max_len=model_config.max_positions,
            max_tokens=config.max_tokens,
            seed=config.seed,
        )
        _log_dropped(dropped, len(pairs))
    if not len(batches):
        raise DataError(
            f"no training pairs left after skipping {dropped}; raise --max-tokens or "
            "--set max_positions=N, or check the data"
        )
    if len(batches) < world_size:
        raise DataError(
            f"{len(batches)} training batches for {world_size} processes; use more data, "
            "a smaller --max-tokens or fewer processes"
        )
    return batches


def _mix_batches(config: TrainConfig, model_config, data):
    """A mix's first epoch's batches and what was dropped; sets data.mix and data.train
    (the corpora joined), and logs each corpus's share of an epoch."""
    from mtkit.train.mix import Mix

    data.mix = Mix(
        data.specs,
        data.corpora,
        max_len=model_config.max_positions,
        max_tokens=config.max_tokens,
        seed=config.seed,
        temperature=config.sample_temperature,
        directions=data.directions,
    )
    data.train = data.mix.pairs
    for spec, dropped, n in zip(data.specs, data.mix.dropped, data.mix.counts, strict=True):
        _log_dropped(dropped, n, f" of {spec.path}")
    for row in data.mix.describe(valid=data.valid_dirs):
        log.info(
            "corpus %s: %s%s pairs (%s trainable), weight %g%s%s: %s pairs an epoch",
            row["data"],
            f"{row['direction']}, " if row.get("direction") else "",
            f"{row['pairs']:,}",
            f"{row['trainable']:,}",
            row["weight"],
            f", tag {row['tag']}" if row["tag"] else "",
            f", x{row['rate']:g} at temperature {row['temperature']:g}" if "rate" in row else "",
            f"{row['epoch_pairs']:,}",
        )
    dropped = {k: sum(d[k] for d in data.mix.dropped) for k in data.mix.dropped[0]}
    return data.mix.epoch(1).batches, dropped


def _optimizer(model, config: TrainConfig):
    from mtkit.train.optim import build_optimizer

    return build_optimizer(model, lr=config.lr, weight_decay=config.weight_decay)


def _restore(ckpt: dict, raw, optimizer, scaler, dist):
    """Weights, optimiser and this rank's RNG state from the checkpoint; its counters and
    last validation."""
    from mtkit.train.loop import Progress
    from mtkit.train.state import set_rng_state

    state = ckpt["train_state"]
    raw.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scaler and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    progress = Progress(**state["progress"])
    last_valid = {k: v for k, v in ckpt.get("metrics", {}).items() if k.startswith("valid_")}
    set_rng_state(state["rng"][dist.rank], dist.device)
    log.info(
        "resuming at step %d (epoch %d) from checkpoint_last.pt", progress.step, progress.epoch
    )
    return progress, last_valid


def wrap_model(raw, config: TrainConfig, dist):
    """(what forward goes through, the DDP wrapper or None): DistributedDataParallel under
    torchrun, then torch.compile when asked."""
    import torch

    model, ddp = raw, None
    if dist.enabled:
        ids = [dist.device.index] if dist.device.type == "cuda" else None
        # The models' buffers (sinusoid tables) never change: broadcasting them from rank 0
        # before every forward would be a collective per micro-batch for nothing.
        ddp = torch.nn.parallel.DistributedDataParallel(
            raw, device_ids=ids, broadcast_buffers=False
        )
        model = ddp
    if config.compile:
        model = torch.compile(model)
    return model, ddp


def _log_dropped(dropped: dict, total: int, where: str = "") -> None:
    for reason, count in dropped.items():
        if count:
            log.info(
                "skipped %s of %s training pairs%s: %s",
                f"{count:,}",
                f"{total:,}",
                where,
                reason.replace("_", " "),
            )


def check_resume_mix(ckpt: dict, data) -> None:
    """A resumed mix must be the same mix: corpora (by pairs), weights, tags and language
    pairs, in order."""

    def key(row: dict) -> tuple:
        return row["pairs"], row["weight"], row["tag"], row.get("direction")

    saved = [key(row) for row in ckpt.get("mix") or []]
    now = [key(row) for row in data.mix.describe()] if data.mix else []
    if saved != now:
        raise ConfigError(
            f"cannot resume: the data mix differs from the saved run ({saved or 'one corpus'} "
            f"-> {now or 'one corpus'} as (pairs, weight, tag, direction)); use the run's "
            "--data options (see RUN/config.json) or start a new --out"
        )
