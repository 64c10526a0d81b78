"""How many threads a CPU training run steps on, found by timing while it trains.

torch's default, a thread per core, is the fastest on a quiet machine. With another
busy process on one of the cores, every parallel region of a step waits for the thread
that shares its core, and the step gets slower than on one core fewer: on 2 vCPUs of
an AMD EPYC with `yes` pinned to one core, transformer-small trained at 830 target
tokens/s on 2 threads and 1,280 on 1 (`python -m bench train_speed --threads N`,
A/B/A/B). Under a time budget that is a third fewer updates. So `train --threads 0` on
the CPU lets a ThreadTuner time a few updates at each of the two counts, alternately,
every PROBE_EVERY updates, and train on the faster until the next probe: a quiet
machine loses the few updates of a probe (under 1%), a busy one gains the difference.
"""

from __future__ import annotations

PROBE_FIRST = 20  # the first probe: after start-up (allocations, caches) has settled
PROBE_EVERY = 200  # updates between probes: a competing process may come or go
PROBE_ROUNDS = 3  # updates timed at each count in a probe, alternating


class ThreadTuner:
    """Picks between `most` threads and one fewer. Ask `threads_for(step)` before an
    update, and tell `record(threads, seconds, tokens)` after it; `record` returns the
    new count when a probe has just changed it."""

    def __init__(self, most: int, first: int = PROBE_FIRST, every: int = PROBE_EVERY,
                 rounds: int = PROBE_ROUNDS) -> None:  # fmt: skip
        self.choices = (most, most - 1)
        self.threads = most
        self.next_probe, self.every, self.rounds = first, every, rounds
        self.plan: list[int] = []  # the thread counts of the probe's remaining updates
        self.spent: dict[int, list[float]] = {}  # threads -> [seconds, tokens] in a probe
        self.rates: dict[int, float] = {}  # the last probe's tokens/s at each count

    def threads_for(self, step: int) -> int:
        if not self.plan and step >= self.next_probe:
            self.plan = [n for _ in range(self.rounds) for n in self.choices]
            self.spent = {n: [0.0, 0.0] for n in self.choices}
            self.next_probe = step + len(self.plan) + self.every
        return self.plan[0] if self.plan else self.threads

    def record(self, threads: int, seconds: float, tokens: int) -> int | None:
        if not self.plan or threads != self.plan[0]:
            return None
        self.plan.pop(0)
        self.spent[threads][0] += seconds
        self.spent[threads][1] += tokens
        if self.plan:
            return None
        self.rates = {n: tok / max(sec, 1e-9) for n, (sec, tok) in self.spent.items()}
        best = max(self.choices, key=lambda n: self.rates[n])
        changed, self.threads = best != self.threads, best
        return best if changed else None
