"""Temperature sampling over groups of data (language pairs for train, languages for
train-bpe), and the seeded draw of a sample of a given size (numpy, no torch).

Arivazhagan et al. (2019), XLM and mBART balance languages by sampling each group g with
probability p_g proportional to n_g^(1/T), n_g its size: T = 1 keeps the sizes'
proportions, larger T flattens them (T -> inf: uniform), so small groups are seen more
often and large ones less. Here a sample keeps its total size (one epoch, or the lines
SentencePiece reads) and only its shares change; a group's count is drawn as whole
copies plus a seeded subset without repeats (`draw`), which varies less than drawing
with replacement and depends on the seed and its key alone. Callers: mtkit.train.mix
(the pairs of an epoch) and mtkit.tokenizer (train-bpe's balanced input).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from mtkit.errors import ConfigError


def check_temperature(value: float, flag: str = "--sample-temperature") -> float:
    """`value` when it is a positive finite number; ConfigError naming `flag` otherwise."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(
            f"{flag} must be a positive number, got {value}; 1 keeps the sizes' "
            "proportions, 5 is a common choice for balancing languages"
        )
    return float(value)


def temperature_shares(sizes: Sequence[float], temperature: float) -> list[float]:
    """p_g = n_g^(1/T) / sum_h n_h^(1/T); an empty group gets 0."""
    weights = [n ** (1.0 / temperature) if n > 0 else 0.0 for n in sizes]
    total = sum(weights)
    return [w / total if total else 0.0 for w in weights]


def balanced_sizes(sizes: Sequence[float], temperature: float) -> list[float]:
    """Each group's size in a sample as large as all of them together whose shares are
    `temperature_shares`: sum(sizes) * p_g (T = 1: the sizes themselves)."""
    if temperature == 1.0:
        return [float(n) for n in sizes]
    total = float(sum(sizes))
    return [total * p for p in temperature_shares(sizes, temperature)]


def draw(n: int, rate: float, key: Sequence[int]):
    """Positions 0..n-1 taken `rate` times over: every position floor(rate) times (in
    order, copy after copy), then a sorted subset of round(frac(rate) * n) positions
    without repeats, seeded by `key` (e.g. [seed, epoch, corpus]) alone: int64 numpy."""
    import numpy as np

    whole = int(math.floor(rate))
    parts = [np.arange(n, dtype=np.int64)] * whole
    take = round((rate % 1) * n)
    if take:
        rng = np.random.default_rng(list(key))
        parts.append(np.sort(rng.choice(n, size=take, replace=False)))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def drawn_count(n: int, rate: float) -> int:
    """How many positions `draw(n, rate, ...)` returns."""
    return int(math.floor(rate)) * n + round((rate % 1) * n)
