"""The training loop: updates, logging, validation, checkpoints, stopping and resuming.

`Trainer` is built once by `mtkit.train.setup.build_trainer` (data, model,
optimiser, resume) and runs until a limit, early stopping or a signal. What it
reports (metrics.jsonl records, the bar, log lines) is shaped by mtkit.train.report;
validation's numbers come from mtkit.train.validate.
Everything it needs to continue exactly (step, epoch, position in the epoch's
batch order, optimiser, RNG states) goes into checkpoint_last.pt at every save;
the files themselves are `mtkit.train.state.RunFiles`'.

Time counts training only: `Progress.train_time` is the wall time of the run less
its validations, summed over resumes. --max-time stops on it, and the decaying
schedules decay over it (optim.lr_at), so a slower machine makes fewer updates
along the same curve instead of stopping half-way down it.

Under torchrun the ranks must agree on when to stop and save, and on the
learning rate; they compare their signal, clock and save flags only every
STOP_CHECK_EVERY updates, so an update does not wait for the host to hear from
the other processes, and the schedule reads the training time agreed there.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mtkit import distributed
from mtkit.crashpoint import crash_point
from mtkit.errors import MtkitError
from mtkit.train.batching import collate, epoch_order, rank_share
from mtkit.train.mix import shares_text
from mtkit.train.optim import (
    budget_fraction,
    label_smoothed_loss,
    lr_at,
    set_lr,
    warmup_fraction,
)
from mtkit.train.report import (
    Interval,
    log_valid,
    progress_bar,
    show_train,
    train_record,
    valid_record,
)
from mtkit.train.state import rng_state
from mtkit.train.threads import ThreadTuner
from mtkit.train.validate import evaluate

log = logging.getLogger(__name__)

# Updates between the ranks' checks of signals, --max-time and --save-every-minutes
# under torchrun (one process checks at every update: it has no one to ask).
STOP_CHECK_EVERY = 10

# The loop's clock; tests put a fake one here to play a slower or faster machine.
clock = time.monotonic


@dataclass
class TrainResult:
    """How a run ended."""

    out: Path
    step: int
    epoch: int
    stopped_by: str  # max_updates, max_epochs, max_time, patience, signal
    signal: int | None = None
    best: dict = field(default_factory=dict)
    last_valid: dict = field(default_factory=dict)


@dataclass
class Progress:
    """The counters saved in train_state."""

    step: int = 0
    epoch: int = 0  # the epoch in progress (1-based); 0 before the first
    pos: int = 0  # this rank's next batch in the epoch's order
    elapsed: float = 0.0  # seconds of running over all resumes, validation included
    valid_time: float = 0.0  # seconds of those spent validating
    warmup_time: float = 0.0  # train_time when warm-up ended (the decay starts there)
    warmup_step: int = 0  # the update that ended warm-up; 0 while warming up
    next_save_at: int = 0  # index of the next --save-at share not yet reached
    best_value: float | None = None
    best_step: int = 0
    bad_validations: int = 0
    last_valid_step: int = -1
    mix_tokens: list = field(default_factory=list)  # target tokens each corpus of a mix gave

    @property
    def train_time(self) -> float:
        """Seconds of training: what --max-time counts and the schedule decays over."""
        return self.elapsed - self.valid_time


class Trainer:
    """One run: the model and optimiser, its data and batches, and where it stands."""

    def __init__(
        self,
        config,
        model_config,
        dist,
        data,
        batches,
        raw,
        optimizer,
        *,
        files,
        precision: str,
        model=None,
        ddp=None,
        scaler=None,
        progress: Progress | None = None,
        last_valid: dict | None = None,
    ) -> None:
        """`raw` is the plain module (saved, evaluated); `model` what forward goes through
        (DDP and/or compiled; default `raw`), `ddp` the DDP wrapper for no_sync; `batches`
        (batching.Batches) index data.train; `files` is the run's state.RunFiles."""
        from mtkit.device import autocast_for

        self.config, self.model_config, self.dist, self.data = config, model_config, dist, data
        self.batches, self.raw, self.optimizer, self.files = batches, raw, optimizer, files
        # Not `model or raw`: a torch.compile'd module's truth value calls len(), which
        # raises for a module without one (every --compile run failed here).
        self.model = model if model is not None else raw
        self.ddp, self.scaler = ddp, scaler
        self.tuner = _thread_tuner(config, dist)
        self.precision, self.autocast = precision, autocast_for(precision, dist.device)
        self.batch_tokens = batches.target_tokens(data.train)  # per batch, for the loss scale
        self.mix = getattr(data, "mix", None)  # mix.Mix: each epoch cuts its own batches
        self.corpus_tokens = None  # a mix's [batch, corpus] target tokens, this epoch
        self.progress = progress or Progress()
        if not self.progress.warmup_step and self.progress.warmup_time:
            self.progress.warmup_step = config.warmup  # saved before warmup_step was kept
        self.last_valid = last_valid or {}
        self.resumed = progress is not None
        self.rank_batches: list = []  # this rank's batches of the epoch in progress
        self.epoch_batches = np.zeros(0, dtype=np.int64)  # every rank's, in turn
        self.signal: int | None = None
        self.interval = Interval(clock())
        self.bar = None  # (rich Progress, task) on rank 0 while running
        self.last_save = clock()
        # The training time the schedule and the budget read: agreed by all ranks.
        self.budget_time = self.progress.train_time
        self.budget_updates = self._update_budget()

    # -- the loop -----------------------------------------------------------------

    def run(self) -> TrainResult:
        """Train until a stop condition; always leaves checkpoint_last.pt behind."""
        self.started = clock() - self.progress.elapsed
        self.interval.reset(clock())
        self.last_save = clock()
        if self.progress.epoch:
            self.rank_batches = self._epoch_share(self.progress.epoch)
        resume_step = self.progress.step if self.resumed else None
        files = self.files.open(self._run_description(), resume_step)
        with files, _signals(self._on_signal), self._progress_bar():
            if resume_step is None and self.mix is not None and self.dist.is_main:
                files.log({"kind": "mix", "step": 0, "corpora": self._mix_rows()})
            if resume_step is None and self.last_valid and self.dist.is_main:
                # --init-from measured the starting point: the curves start from it too
                files.log({"kind": "valid", "step": 0, "epoch": 0, **self.last_valid})
            reason = self._already_done()
            try:
                while not reason:
                    reason = self._one_update()
            finally:
                if self.tuner is not None:  # the process's own count, as it was before
                    import torch

                    torch.set_num_threads(self.tuner.choices[0])
        return TrainResult(
            out=self.files.out,
            step=self.progress.step,
            epoch=self.progress.epoch,
            stopped_by=reason,
            signal=self.signal,
            best={
                "metric": self.config.best_metric,
                "value": self.progress.best_value,
                "step": self.progress.best_step,
            },
            last_valid=self.last_valid,
        )

    def _run_description(self) -> dict:
        """RUN/config.json: everything that made the run."""
        from mtkit import __version__

        return {
            "mtkit_version": __version__,
            "langs": self.data.langs,
            "train": self.config.to_dict(),
            "model": asdict(self.model_config),
        }

    def _one_update(self) -> str | None:
        """Take the next update; validate and save when due; return why to stop, if so."""
        p, cfg = self.progress, self.config
        if p.pos >= len(self.rank_batches):
            p.epoch, p.pos = p.epoch + 1, 0
            self.rank_batches = self._epoch_share(p.epoch)
        micro = self.rank_batches[p.pos : p.pos + cfg.update_freq]
        tokens = self._global_tokens(p.pos, len(micro))
        threads = self._threads_for(p.step + 1)
        began = time.perf_counter()
        self._update(micro, tokens)
        self._tuned(threads, time.perf_counter() - began, tokens)
        self._count_mix(p.pos, len(micro))
        self.files.check()
        p.pos, p.step = p.pos + len(micro), p.step + 1
        crash_point("update")  # the crash tests' hook (mtkit.crashpoint); a no-op otherwise
        p.elapsed = clock() - self.started
        epoch_done = p.pos >= len(self.rank_batches)
        reason, save_due = self._stop_reason(epoch_done)
        if not p.warmup_step and self._warmup_done() >= 1.0:
            p.warmup_step, p.warmup_time = p.step, self.budget_time
        if p.step % cfg.log_every == 0 or reason:
            self._log_train()
        if reason == "signal":
            self._save(numbered=False)
            return reason
        every = cfg.valid_every
        share_reached = self._share_reached()  # first: it moves on to the next share
        if reason or (p.step % every == 0 if every else epoch_done) or share_reached:
            return self._validate_and_save() or reason
        if save_due:
            self._save(numbered=True)
        return None

    @contextlib.contextmanager
    def _progress_bar(self):
        """A rich bar on stderr (rank 0) with loss, learning rate and tokens/s."""
        if not self.dist.is_main:
            yield
            return
        cfg = self.config
        per_epoch = math.ceil(len(self.batches) / self.dist.world_size / cfg.update_freq)
        total = cfg.max_updates or (cfg.max_epochs * per_epoch) or None
        with progress_bar(total, self.progress.step) as self.bar:
            try:
                yield
            finally:
                self.bar = None

    def _update_budget(self) -> int:
        """The updates the run may make: --max-updates or --max-epochs' worth, the fewer
        (0: no limit); the decaying schedules end there unless --max-time binds first."""
        cfg = self.config
        per_rank = len(self.batches) // self.dist.world_size
        epochs = cfg.max_epochs * math.ceil(per_rank / cfg.update_freq)
        return min((n for n in (cfg.max_updates, epochs) if n), default=0)

    def _warmup_done(self) -> float:
        cfg = self.config
        return warmup_fraction(
            step=self.progress.step, warmup=cfg.warmup, seconds=self.budget_time,
            max_time=cfg.max_time, warmup_share=cfg.warmup_share,
        )  # fmt: skip

    def budget_spent(self) -> float:
        """The share of the budget spent, 0..1 (0 without --max-updates, --max-epochs or
        --max-time)."""
        cfg = self.config
        return budget_fraction(
            step=self.progress.step,
            max_updates=self.budget_updates,
            seconds=self.budget_time,
            max_time=cfg.max_time,
        )

    def _share_reached(self) -> bool:
        """Whether the budget has reached the next --save-at share (then skip past it,
        and past any others this update crossed too)."""
        p, shares = self.progress, self.config.save_at
        spent = self.budget_spent()
        reached = p.next_save_at
        while reached < len(shares) and spent >= shares[reached]:
            reached += 1
        if reached == p.next_save_at:
            return False
        p.next_save_at = reached
        return True

    def _epoch_share(self, epoch: int) -> list:
        """This rank's batches of `epoch`; keeps every rank's, to count an update's tokens.
        A mix first cuts the epoch's own batches from its weighted sample."""
        if self.mix is not None:
            cut = self.mix.epoch(epoch)
            self.batches, self.corpus_tokens = cut.batches, cut.corpus_tokens
            self.batch_tokens = cut.batches.tokens
        order = epoch_order(len(self.batches), seed=self.config.seed, epoch=epoch)
        world = self.dist.world_size
        self.epoch_batches = np.asarray(order[: len(order) - len(order) % world], dtype=np.int64)
        return rank_share(order, rank=self.dist.rank, world_size=world)

    def _global_tokens(self, pos: int, n: int) -> int:
        """Target tokens of this update over all ranks: the loss is normalised by it.
        Rank r's k-th batch is epoch_batches[k * world + r], so the update's batches of
        all ranks are one slice."""
        world = self.dist.world_size
        return int(self.batch_tokens[self.epoch_batches[pos * world : (pos + n) * world]].sum())

    def _count_mix(self, pos: int, n: int) -> None:
        """Add the update's target tokens (all ranks') to each corpus's count."""
        if self.mix is None:
            return
        world = self.dist.world_size
        done = self.corpus_tokens[self.epoch_batches[pos * world : (pos + n) * world]].sum(0)
        counts = self.progress.mix_tokens or [0] * len(done)
        self.progress.mix_tokens = [int(a + b) for a, b in zip(counts, done, strict=True)]

    def _mix_rows(self) -> list:
        return self.mix.describe(self.progress.mix_tokens, valid=self.data.valid_dirs)

    # -- one update ---------------------------------------------------------------

    def train_step(self, micro: list[int]) -> None:
        """One update on the batches `micro` (indices into self.batches), one process:
        what benchmarks time. The loop itself goes through _one_update."""
        self._update(micro, int(self.batch_tokens[list(micro)].sum()))
        self.progress.step += 1

    def _threads_for(self, step: int) -> int:
        """The torch threads of update `step`: the tuner's choice (or probe) under
        --threads 0 on the CPU, else whatever was set at the start."""
        import torch

        if self.tuner is None:
            return 0
        threads = self.tuner.threads_for(step)
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        return threads

    def _tuned(self, threads: int, seconds: float, tokens: int) -> None:
        if self.tuner is None:
            return
        changed = self.tuner.record(threads, seconds, tokens)
        if changed is not None:
            rates = ", ".join(f"{n} threads {r:,.0f}" for n, r in self.tuner.rates.items())
            log.info("training on %d threads from update %d (target tokens/s: %s)",
                     changed, self.progress.step + 2, rates)  # fmt: skip

    def _update(self, micro: list[int], global_tokens: int) -> None:
        """Forward and backward over the micro-batches, then one optimiser step."""
        try:
            for i, b in enumerate(micro):
                sync = i == len(micro) - 1
                no_sync = self.ddp.no_sync() if self.ddp and not sync else contextlib.nullcontext()
                with no_sync:
                    self._forward_backward(self.batches[b], global_tokens)
            self._step()
        except Exception as error:
            if _is_oom(error):
                raise MtkitError(_oom_message(self.config.max_tokens)) from None
            raise

    def _forward_backward(self, index: list[int], global_tokens: int) -> None:
        cfg = self.model_config
        pairs = self.data.train
        batch = collate(pairs, index, pad_id=cfg.pad_id, bos_id=cfg.bos_id, eos_id=cfg.eos_id)
        batch = batch.to(self.dist.device)
        with self.autocast():
            logits = self.model(batch.src, batch.tgt_in)  # [B,T,V]
        loss, nll = label_smoothed_loss(
            logits, batch.tgt_out, pad_id=cfg.pad_id, smoothing=self.config.label_smoothing
        )
        # DDP averages gradients over ranks, so scale by world_size to get sum / tokens.
        scaled = loss * (self.dist.world_size / global_tokens)
        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        self.interval.add(loss.detach(), nll.detach(), batch.n_tgt_tokens)

    def _step(self) -> None:
        import torch

        cfg = self.config
        lr = lr_at(
            self.progress.step + 1,
            schedule=cfg.schedule,
            lr=cfg.lr,
            warmup=cfg.warmup,
            max_updates=self.budget_updates,
            min_lr=cfg.min_lr,
            seconds=self.budget_time,
            max_time=cfg.max_time,
            warmup_seconds=self.progress.warmup_time,
            warmup_share=cfg.warmup_share,
            warmup_ended=self.progress.warmup_step,
        )
        set_lr(self.optimizer, lr)
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        limit = cfg.clip_norm if cfg.clip_norm > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.raw.parameters(), limit)
        skipped = (~torch.isfinite(norm)).float()  # 1.0 when a gradient is inf/nan
        if self.scaler:
            self.scaler.step(self.optimizer)  # skips the step itself on inf/nan
            self.scaler.update()
        else:
            # The fused optimiser skips the step on the device when found_inf is 1,
            # so no update waits for the GPU to say whether the gradients were finite.
            self.optimizer.grad_scale, self.optimizer.found_inf = None, skipped
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.interval.lr, self.interval.grad_norm = lr, norm
        self.interval.skipped += skipped

    # -- stopping -----------------------------------------------------------------

    def _on_signal(self, signum: int) -> None:
        self.signal = signum

    def _already_done(self) -> str | None:
        """A resumed run whose limits were reached before: nothing to do (no extra update)."""
        cfg, p = self.config, self.progress
        epoch_done = bool(self.rank_batches) and p.pos >= len(self.rank_batches)
        if cfg.max_updates and p.step >= cfg.max_updates:
            reason = "max_updates"
        elif cfg.max_epochs and (
            p.epoch > cfg.max_epochs or (epoch_done and p.epoch == cfg.max_epochs)
        ):
            reason = "max_epochs"
        elif cfg.max_time and p.train_time >= cfg.max_time:
            reason = "max_time"
        else:
            return None
        log.info(
            "the run already reached its limit (%s) at step %d; raise it to go on",
            reason.replace("_", " "),
            p.step,
        )
        return reason

    def _stop_reason(self, epoch_done: bool) -> tuple[str | None, bool]:
        """Why to stop after this update, if so; and whether a timed save is due."""
        cfg, p = self.config, self.progress
        signalled, out_of_time, save_due = self._agreed_flags()
        if signalled:
            self.signal = self.signal or signal.SIGTERM
            return "signal", False
        if cfg.max_updates and p.step >= cfg.max_updates:
            return "max_updates", False
        if cfg.max_epochs and epoch_done and p.epoch >= cfg.max_epochs:
            return "max_epochs", False
        if out_of_time:
            return "max_time", False
        return None, save_due

    def _agreed_flags(self) -> tuple[bool, bool, bool]:
        """(signalled, out of time, timed save due), the same on every rank; and
        self.budget_time, the training time the schedule reads, set the same on all.

        Ranks must agree, or one would wait forever for the others' gradients (or step
        with another learning rate); under torchrun they compare flags and clocks every
        STOP_CHECK_EVERY updates only (a host sync), the slowest clock counting."""
        cfg = self.config
        now = clock()
        flags = [
            float(self.signal is not None),
            float(
                bool(cfg.save_every_minutes) and now - self.last_save >= 60 * cfg.save_every_minutes
            ),
            self.progress.train_time,
        ]
        if self.dist.enabled:
            if self.progress.step % STOP_CHECK_EVERY:
                return False, False, False
            flags = distributed.max_all(self.dist, flags)
        self.budget_time = flags[2]
        out_of_time = bool(cfg.max_time) and self.budget_time >= cfg.max_time
        return bool(flags[0]), out_of_time, bool(flags[1])

    # -- validation and checkpoints ---------------------------------------------------

    def evaluate(self, bleu_sentences: int | None = None) -> dict:
        """Validation metrics of the weights as they are; greedy BLEU and chrF on the first
        `bleu_sentences` (default --valid-bleu-sentences)."""
        if bleu_sentences is None:
            bleu_sentences = self.config.valid_bleu_sentences
        return evaluate(
            self.raw,
            self.model_config,
            self.data,
            dist=self.dist,
            max_tokens=self.config.max_tokens,
            bleu_sentences=bleu_sentences,
            autocast=self.autocast,
        )

    def _validate_and_save(self) -> str | None:
        """Validate, save last/numbered/best; return "patience" when it runs out.
        Without a validation split: save only (no best checkpoint, no early stopping)."""
        cfg, p = self.config, self.progress
        if p.last_valid_step == p.step:
            return None
        if self.data.valid is None:
            p.last_valid_step = p.step
            self._save(numbered=True)
            return None
        began = clock()
        metrics = self.evaluate()
        p.last_valid_step = p.step
        p.elapsed = clock() - self.started
        p.valid_time += clock() - began  # not training: --max-time and the decay skip it
        self.interval.since += clock() - began  # tokens/s counts training time only
        improved = self._track_best(metrics)
        self.last_valid = metrics
        self._log_valid(metrics, improved)
        self._save(numbered=True, best=improved)
        if cfg.patience and p.bad_validations >= cfg.patience:
            log.info(
                "no improvement of valid %s in %d validations: stopping early",
                cfg.best_metric,
                cfg.patience,
            )
            return "patience"
        return None

    def _track_best(self, metrics: dict) -> bool:
        """Follow --best-metric: BLEU and chrF higher is better, loss (NLL) lower."""
        p = self.progress
        metric = self.config.best_metric
        value = metrics["valid_nll_loss" if metric == "loss" else f"valid_{metric}"]
        better = (lambda a, b: a < b) if metric == "loss" else (lambda a, b: a > b)
        if p.best_value is None or better(value, p.best_value):
            p.best_value, p.best_step, p.bad_validations = value, p.step, 0
            return True
        p.bad_validations += 1
        return False

    def _save(self, numbered: bool, best: bool = False) -> None:
        """checkpoint_last.pt (and checkpoint_{step}.pt, checkpoint_best.pt), written by rank 0
        in the background: the loop waits only for the copy to host memory."""
        # Every rank's RNG state, so a multi-process resume is exact too (a collective call).
        rngs = distributed.gather_all(self.dist, rng_state(self.dist.device))
        self.last_save = clock()
        if not self.dist.is_main:
            return
        train_state = {
            "progress": asdict(self.progress),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": rngs,
        }
        self.files.save(
            self.progress.step, self._weights(), train_state, numbered=numbered, best=best
        )

    def _toks(self) -> dict:
        return {"src": self.data.src_tok, "tgt": self.data.tgt_tok}

    def _weights(self) -> dict:
        """A checkpoint without train_state: what numbered and best checkpoints hold."""
        p = self.progress
        metrics = dict(self.last_valid)
        if self.data.valid is not None:
            metrics["best_" + self.config.best_metric] = p.best_value
        return {
            "model_config": asdict(self.model_config),
            "model": self.raw.state_dict(),
            "spm": self.data.spm_bytes,
            # An imported model's id tables (--init-from); none: SentencePiece's own ids.
            "vocab": {side: t.vocab for side, t in self._toks().items() if t.vocab is not None},
            "langs": self.data.langs,
            **({"languages": self.data.languages.to_dict()} if self.data.languages else {}),
            "train_config": self.config.to_dict(),
            "step": p.step,
            "epoch": p.epoch,
            "metrics": metrics,
            **({"mix": self._mix_rows()} if self.mix is not None else {}),
        }

    # -- reporting ----------------------------------------------------------------

    def _log_train(self) -> None:
        stats = self.interval.take(self.dist, clock())
        if not self.dist.is_main or stats is None:
            return
        mix_rows = self._mix_rows() if self.mix is not None else None
        threads = self.tuner.threads if self.tuner is not None else None
        self.files.log(train_record(self.progress, stats, mix_rows, threads))
        if self.bar:
            show_train(self.bar, self.progress, stats, self.budget_spent())

    def _log_valid(self, metrics: dict, improved: bool) -> None:
        if not self.dist.is_main:
            return
        self.files.log(valid_record(self.progress, metrics, self.config.best_metric))
        log_valid(self.progress, metrics, improved)
        if self.mix is not None:
            log.info("target tokens so far by corpus: %s", shares_text(self._mix_rows()))


@contextlib.contextmanager
def _signals(handler):
    """Route SIGINT and SIGTERM to `handler` (finish the update, then save); a second
    Ctrl-C aborts at once."""
    if not _in_main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(signum, frame):
        handler(signum)
        log.warning(
            "%s: saving checkpoint_last.pt after this update (Ctrl-C again to abort)",
            signal.Signals(signum).name,
        )
        signal.signal(signal.SIGINT, signal.default_int_handler)

    for s in previous:
        signal.signal(s, on_signal)
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _is_oom(error: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(error, oom) or "can't allocate memory" in str(error)


def _oom_message(max_tokens: int) -> str:
    return (
        f"out of memory with --max-tokens {max_tokens}; lower --max-tokens "
        f"(e.g. {max_tokens // 2}) or raise --update-freq to keep the batch size"
    )


def _thread_tuner(config, dist) -> ThreadTuner | None:
    """A ThreadTuner for --threads 0 on a CPU with more than one thread, one process (under
    torchrun the cores are divided among the ranks, mtkit.train.setup.set_threads)."""
    import torch

    if config.threads or dist.enabled or dist.device.type != "cpu":
        return None
    most = torch.get_num_threads()
    return ThreadTuner(most) if most > 1 else None
