"""Training to a time budget: the decaying schedules end with --max-time whatever the
machine's speed, resume continues the same curve, and --save-at saves at shares of the
budget. A fake clock (mtkit.train.loop.clock) plays a slow or a fast machine: each
update takes `seconds_per_update` of it, validation none, so the runs are deterministic."""

from __future__ import annotations

import signal

import pytest
from conftest import call_main
from test_train import m30k, mtkit_args, records, tiny_config  # noqa: F401 (m30k: a fixture)

from mtkit.errors import ConfigError
from mtkit.train import loop, train
from mtkit.train.config import TrainConfig, check, parse_fractions
from mtkit.train.optim import budget_fraction, decay_progress, lr_at

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PEAK = 3e-3


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def machine(monkeypatch):
    """Set `machine.seconds_per_update` (fake seconds each update takes) and, to stop a
    run as SIGTERM would, `machine.signal_at` (the update after which it stops)."""
    fake = FakeClock()
    fake.seconds_per_update, fake.signal_at = 1.0, None
    update = loop.Trainer._update

    def timed_update(self, micro, global_tokens):
        update(self, micro, global_tokens)
        fake.now += fake.seconds_per_update
        if fake.signal_at == self.progress.step + 1:
            self._on_signal(signal.SIGTERM)

    monkeypatch.setattr(loop, "clock", fake)
    monkeypatch.setattr(loop.Trainer, "_update", timed_update)
    return fake


def budget_config(m30k, out, **changes) -> TrainConfig:  # noqa: F811
    """Cosine over 20 (fake) seconds; an update budget far away, so the clock binds."""
    values = dict(lr=PEAK, warmup=2, schedule="cosine", max_time=20.0, max_updates=100_000)
    return tiny_config(m30k, out, **(values | changes))


# -- the schedule as a function ------------------------------------------------------------


def test_decay_follows_whichever_budget_binds_first():
    kw = dict(schedule="cosine", lr=1.0, warmup=10)
    # The updates bind: half-way from warm-up to update 110 is update 60.
    assert lr_at(60, max_updates=110, seconds=1.0, max_time=100.0, **kw) == pytest.approx(0.5)
    # The clock binds: half-way from warm-up (ended at 10 s) to 110 s is 60 s.
    half = dict(seconds=60.0, max_time=110.0, warmup_seconds=10.0)
    assert lr_at(20, max_updates=100_000, **half, **kw) == pytest.approx(0.5)
    assert lr_at(20, max_updates=0, **half, **kw) == pytest.approx(0.5)
    assert lr_at(20, max_updates=0, seconds=110.0, max_time=110.0, **kw) == 0.0
    assert lr_at(5, max_updates=0, seconds=200.0, max_time=110.0, **kw) == 0.5  # warm-up: updates
    linear = dict(kw, schedule="linear", max_updates=110, min_lr=0.1)
    assert lr_at(35, **linear) == pytest.approx(0.1 + 0.9 * 0.75)
    assert lr_at(110, **linear) == pytest.approx(0.1)
    spent = dict(seconds=85, max_time=110, warmup_seconds=10)
    assert decay_progress(step=60, warmup=10, max_updates=110, **spent) == 0.75
    assert budget_fraction(step=50, max_updates=100, seconds=30, max_time=40) == 0.75
    assert budget_fraction(step=50, max_updates=0, seconds=0, max_time=0) == 0.0


# -- runs on a fake clock --------------------------------------------------------------------


@pytest.mark.parametrize("seconds_per_update", [1.0, 0.25])
def test_time_budget_ends_the_decay_whatever_the_step_rate(
    m30k,  # noqa: F811
    tmp_path,
    machine,
    seconds_per_update,
):
    """A machine four times slower makes a quarter of the updates, along the same curve:
    the lr is at the bottom of the cosine when --max-time stops the run."""
    machine.seconds_per_update = seconds_per_update
    result = train(budget_config(m30k, tmp_path / "run"))
    assert result.stopped_by == "max_time"
    assert result.step == round(20.0 / seconds_per_update)
    lrs = [r["lr"] for r in records(tmp_path / "run", "train")]
    assert max(lrs) == pytest.approx(PEAK)
    assert lrs[-1] < 0.01 * PEAK  # the last update's lr: one update from the end
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:], strict=False))  # decays throughout
    # Half-way through the time is half-way down the cosine, at any step rate.
    train_times = [r["train_time"] for r in records(tmp_path / "run", "train")]
    warm = 2 * seconds_per_update  # warm-up: 2 updates
    middle = train_times.index(10.0 + warm / 2)  # (10 + warm / 2 - warm) / (20 - warm) = 0.5
    assert lrs[middle + 1] == pytest.approx(PEAK / 2)


def test_warmup_ends_at_its_share_of_the_time_budget(m30k, tmp_path, machine):  # noqa: F811
    """A machine so slow that --warmup 16 would take 16 of its 20 updates: with
    --warmup-share 0.25 warm-up ends 5 s into the 20 s budget and the cosine has the other
    15 s; with --warmup-share 0 the peak comes only at update 16."""
    import math

    train(budget_config(m30k, tmp_path / "share", warmup=16, warmup_share=0.25))
    lrs = [r["lr"] for r in records(tmp_path / "share", "train")]
    # Update s starts s - 1 s into the budget: warm-up at max(s / 16, (s - 1) / 5) of the peak.
    assert lrs[:5] == pytest.approx([PEAK * max(s / 16, (s - 1) / 5) for s in range(1, 6)])
    assert lrs[5] == pytest.approx(PEAK)  # warm-up ended with update 5, at 5 s
    assert lrs[12] == pytest.approx(PEAK * 0.5 * (1 + math.cos(math.pi * 7 / 15)))
    assert len(lrs) == 20 and lrs[-1] < 0.02 * PEAK
    train(budget_config(m30k, tmp_path / "updates", warmup=16, warmup_share=0.0))
    lrs = [r["lr"] for r in records(tmp_path / "updates", "train")]
    assert lrs.index(max(lrs)) == 15 and max(lrs) == pytest.approx(PEAK)


def test_resume_continues_the_same_time_curve(m30k, tmp_path, machine):  # noqa: F811
    """Stopped after 7 of 20 fake seconds and resumed: the same learning rates, update for
    update, as the run that went straight through; the time spent is in the checkpoint."""
    straight = train(budget_config(m30k, tmp_path / "a"))
    machine.signal_at = 7
    stopped = train(budget_config(m30k, tmp_path / "b"))
    assert stopped.stopped_by == "signal" and stopped.step == 7
    machine.signal_at = None
    machine.now += 500.0  # time between the runs does not count
    resumed = train(budget_config(m30k, tmp_path / "b", resume=True))
    assert resumed.stopped_by == straight.stopped_by == "max_time"
    assert resumed.step == straight.step == 20
    a, b = records(tmp_path / "a", "train"), records(tmp_path / "b", "train")
    assert [r["step"] for r in b] == [r["step"] for r in a] == list(range(1, 21))
    assert [r["lr"] for r in b] == pytest.approx([r["lr"] for r in a], rel=1e-12)
    assert [r["train_time"] for r in b] == [r["train_time"] for r in a]


def test_epoch_budget_ends_the_decay_too(m30k, tmp_path, machine):  # noqa: F811
    """--max-epochs 1 binds before a far-away --max-time: the cosine ends with the epoch."""
    result = train(budget_config(m30k, tmp_path / "run", max_epochs=1, max_time=1e6))
    assert result.stopped_by == "max_epochs" and result.step > 5
    lrs = [r["lr"] for r in records(tmp_path / "run", "train")]
    assert lrs[-1] < 0.05 * PEAK


def test_validation_time_is_not_training_time(m30k, tmp_path, machine, monkeypatch):  # noqa: F811
    """Validation that takes (fake) minutes moves neither the stop nor the curve."""
    evaluate = loop.evaluate

    def slow_evaluate(*args, **kwargs):
        machine.now += 300.0
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", slow_evaluate)
    result = train(budget_config(m30k, tmp_path / "run", valid_every=5))
    assert result.stopped_by == "max_time" and result.step == 20
    last = records(tmp_path / "run", "train")[-1]
    assert last["train_time"] == 20.0 and last["elapsed"] == 20.0 + 3 * 300.0


def test_save_at_shares_of_the_budget(m30k, tmp_path, machine):  # noqa: F811
    """--save-at 0.5,0.9 on a 20 s budget at 1 s an update: numbered checkpoints (and
    validations) at updates 10, 18 and the last, 20; `average --last 2` takes 18 and 20.
    The validation every 10 updates falls on the share 0.5: one validation there."""
    config = budget_config(m30k, tmp_path / "run", save_at=(0.9, 0.5), keep_last=0, valid_every=10)
    train(config)
    numbered = (tmp_path / "run").glob("checkpoint_*[0-9].pt")
    saved = sorted(int(path.stem.split("_")[1]) for path in numbered)
    assert saved == [10, 18, 20]
    assert [r["step"] for r in records(tmp_path / "run", "valid")] == [10, 18, 20]


# -- what a user can get wrong ---------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(schedule="linear"), "--schedule linear decays over the budget"),
        (dict(save_at=(0.5, 1.5), max_updates=10), "--save-at takes shares of the budget"),
        (dict(save_at=(0.5,)), "--save-at saves at shares of the budget; pass --max-time"),
    ],
)
def test_budget_options_are_checked(changes, message):
    config = TrainConfig(data="data/m30k", spm="spm.model", **changes)
    with pytest.raises(ConfigError, match=message):
        check(config)


def test_save_at_reads_shares():
    assert parse_fractions("0.9, 0.8") == (0.8, 0.9) and parse_fractions("") == ()
    with pytest.raises(ConfigError, match="e.g. 0.8,0.9"):
        parse_fractions("80%")


def test_cli_save_at_error_is_one_line(m30k, tmp_path, capsys, monkeypatch):  # noqa: F811
    args = mtkit_args(m30k, tmp_path / "run", "--max-time", "1m", "--save-at", "0.8,2")
    assert call_main(monkeypatch, *args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --save-at takes shares") and len(err.splitlines()) == 1
