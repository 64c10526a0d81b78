"""What a training run reports as it goes: the sums behind each train record, the records
of RUN/metrics.jsonl, the progress bar on stderr and the validation line of the log.

Owns `Interval` (loss, NLL, target tokens, skipped updates and time since the last
train record, shared over ranks through mtkit.distributed) and the shape of the
"train" and "valid" records and lines. The loop (mtkit.train.loop) decides when to
report and reads its own clock (tests replace it), and only rank 0 writes; the files
are mtkit.train.state.RunFiles'.
"""

from __future__ import annotations

import contextlib
import logging
import math

from mtkit import distributed

log = logging.getLogger(__name__)


class Interval:
    """Sums since the last log line: loss, NLL, target tokens, time."""

    def __init__(self, now: float) -> None:
        self.lr, self.grad_norm = 0.0, 0.0
        self.reset(now)

    def reset(self, now: float) -> None:
        self.loss, self.nll, self.tokens, self.since = 0.0, 0.0, 0, now
        self.skipped = 0.0

    def add(self, loss, nll, tokens: int) -> None:
        self.loss += loss  # tensors: summed on the device, read once per log line
        self.nll += nll
        self.tokens += tokens

    def take(self, dist, now: float) -> dict | None:
        """The interval's numbers over all ranks (None when no tokens), and a new interval."""
        loss, nll, tokens = distributed.sum_all(
            dist, [float(self.loss), float(self.nll), float(self.tokens)]
        )
        skipped = int(float(self.skipped))
        seconds = max(now - self.since, 1e-9)
        self.reset(now)
        if not tokens:
            return None
        return {
            "loss": loss / tokens,
            "nll_loss": nll / tokens,
            "ppl": math.exp(min(nll / tokens, 100.0)),
            "lr": self.lr,
            "grad_norm": float(self.grad_norm),
            "tokens_per_s": tokens / seconds,
            "tokens": int(tokens),
            **({"skipped_updates": skipped} if skipped else {}),
        }


@contextlib.contextmanager
def progress_bar(total: int | None, completed: int):
    """A rich bar on stderr with a status field; yields (bar, task) for `show_train`."""
    from rich.progress import TextColumn

    from mtkit.console import progress

    with progress(TextColumn("{task.fields[status]}")) as bar:
        yield bar, bar.add_task("training", total=total, completed=completed, status="")


def train_record(progress, stats: dict, mix_rows: list | None, threads: int | None) -> dict:
    """The "train" record of metrics.jsonl: the interval's numbers where the run stands
    (`progress`, a loop.Progress); a mix's share of each corpus, the tuner's threads."""
    record = {
        "kind": "train",
        "step": progress.step,
        "epoch": progress.epoch,
        **stats,
        "elapsed": round(progress.elapsed, 2),
        "train_time": round(progress.train_time, 2),
    }
    if mix_rows is not None:
        record["mix_share"] = [row.get("share", 0.0) for row in mix_rows]
    if threads is not None:
        record["threads"] = threads
    return record


def show_train(bar_task, progress, stats: dict, spent: float) -> None:
    """The bar after a train record; `spent` is the share of the budget used (0..1)."""
    bar, task = bar_task
    p = progress
    # The run's length in updates as the budget that binds first makes it: under
    # --max-time the updates so far over the share of the time spent.
    bar.update(
        task,
        total=round(p.step / spent) if spent > 0 else None,
        completed=p.step,
        status=(
            f"epoch {p.epoch} loss {stats['loss']:.3f} lr {stats['lr']:.2e} "
            f"{stats['tokens_per_s']:,.0f} tok/s"
        ),
    )


def valid_record(progress, metrics: dict, best_metric: str) -> dict:
    """The "valid" record of metrics.jsonl, with the best value of --best-metric so far."""
    return {
        "kind": "valid",
        "step": progress.step,
        "epoch": progress.epoch,
        **metrics,
        "best_" + best_metric: progress.best_value,
        "elapsed": round(progress.elapsed, 2),
    }


def log_valid(progress, metrics: dict, improved: bool) -> None:
    """The validation's line in the log."""
    log.info(
        "step %d epoch %d: valid loss %.3f ppl %.2f bleu %.2f chrf %.2f%s",
        progress.step,
        progress.epoch,
        metrics["valid_loss"],
        metrics["valid_ppl"],
        metrics["valid_bleu"],
        metrics["valid_chrf"],
        " (best)" if improved else "",
    )
    directions = metrics.get("valid_directions")  # a multilingual run's, mean above
    if directions:
        log.info("by direction: %s", ", ".join(
            f"{name} bleu {d['valid_bleu']:.2f} chrf {d['valid_chrf']:.2f}"
            for name, d in directions.items()
        ))  # fmt: skip
