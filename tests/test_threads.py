"""The thread tuner of CPU training (mtkit.train.threads): it probes both thread counts
alternately, trains on the faster, and probes again later; a run under --threads 0 logs
the count it trains on."""

from __future__ import annotations

import json

import pytest
from test_train import m30k, tiny_config  # noqa: F401 (m30k: a fixture)

from mtkit.train import train
from mtkit.train.threads import ThreadTuner


def drive(tuner: ThreadTuner, steps: int, rate: dict[int, float]) -> list[int]:
    """The thread count of each update when `rate[n]` tokens/s is what n threads give."""
    used = []
    for step in range(1, steps + 1):
        n = tuner.threads_for(step)
        used.append(n)
        tuner.record(n, 1000 / rate[n], 1000)
    return used


def test_a_busy_core_moves_training_to_one_thread_fewer():
    tuner = ThreadTuner(2, first=5, every=10, rounds=2)
    used = drive(tuner, 30, {2: 800.0, 1: 1300.0})
    assert used[:4] == [2, 2, 2, 2]  # before the first probe: every core
    assert used[4:8] == [2, 1, 2, 1]  # the probe alternates
    assert used[8:18] == [1] * 10  # the faster count until the next probe
    assert used[18:22] == [2, 1, 2, 1] and used[22:] == [1] * 8
    assert tuner.rates == pytest.approx({2: 800.0, 1: 1300.0})


def test_a_quiet_machine_keeps_every_core_and_a_freed_core_is_taken_back():
    tuner = ThreadTuner(4, first=3, every=5, rounds=1)
    quiet = {4: 2400.0, 3: 1900.0}
    assert drive(tuner, 12, quiet) == [4, 4, 4, 3, 4, 4, 4, 4, 4, 4, 3, 4]
    tuner = ThreadTuner(2, first=1, every=4, rounds=1)
    busy_then_quiet = [2, 1]  # the first probe: busy, 1 thread wins
    for step, n in enumerate(busy_then_quiet, start=1):
        assert tuner.threads_for(step) == n
        assert tuner.record(n, 1.0, {2: 800, 1: 1300}[n]) == (1 if n == 1 else None)
    assert [tuner.threads_for(s) for s in (3, 4, 5, 6)] == [1, 1, 1, 1]
    for n in (1, 1, 1, 1):
        tuner.record(n, 1.0, 1300)
    assert tuner.threads_for(7) == 2  # the next probe, now quiet: 2 threads win back
    tuner.record(2, 1.0, 2400)
    assert tuner.threads_for(8) == 1
    assert tuner.record(1, 1.0, 1500) == 2 and tuner.threads_for(9) == 2


def test_threads_0_on_the_cpu_logs_the_count_and_threads_1_does_not(m30k, tmp_path):  # noqa: F811
    import torch

    most = torch.get_num_threads()
    if most < 2:
        pytest.skip("one CPU thread: nothing to choose")
    train(tiny_config(m30k, tmp_path / "auto", threads=0, max_updates=25))
    assert torch.get_num_threads() == most  # given back as it was
    rows = [json.loads(line) for line in (tmp_path / "auto" / "metrics.jsonl").open()]
    counts = {r["threads"] for r in rows if r["kind"] == "train"}
    assert counts and counts <= {most, most - 1}
    train(tiny_config(m30k, tmp_path / "one", threads=1, max_updates=3))
    rows = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").open()]
    assert all("threads" not in r for r in rows)
