"""The line pipeline that `translate` and `logprob` share: chunk, encode, sort, batch.

Owns reading items (source lines, source/target pairs) `--chunk-lines` at a time,
sorting a chunk's encoded items longest first into token-budget batches, running
one batch at a time and handing the results back in input order, so memory is
bounded by a chunk whatever the input's length; and the warnings for lines cut
to fit the model (the first few, then a count). What an item is, how a chunk is
encoded, what an item costs and what a batch runs belong to the callers:
mtkit.translate.stream (sources through the search) and mtkit.translate.logprob
(pairs through force-decoding).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from mtkit.errors import ConfigError

log = logging.getLogger(__name__)

# Lines read, sorted and run together: big enough to sort into well-filled
# batches, small enough that memory does not grow with the input.
DEFAULT_CHUNK_LINES = 10_000
# Warnings about lines cut to fit the model printed per run before they are only counted.
WARN_LIMIT = 5

Item = TypeVar("Item")
Encoded = TypeVar("Encoded")
Result = TypeVar("Result")


@dataclass(frozen=True)
class BatchOptions:
    """How lines are grouped for the model."""

    max_tokens: int | None = None  # None: the command's default for the device
    batch_size: int | None = None  # at most this many sentences a batch
    chunk_lines: int = DEFAULT_CHUNK_LINES

    def check(self) -> None:
        if self.chunk_lines < 1:
            raise ConfigError(f"--chunk-lines must be at least 1, got {self.chunk_lines}")


class Cuts:
    """Lines cut to fit the model: a warning for each of the first WARN_LIMIT, then,
    at the end of the run, how many there were in all."""

    def __init__(self) -> None:
        self.count = 0

    def warn(self, message: str, *args: object) -> None:
        self.count += 1
        if self.count <= WARN_LIMIT:
            log.warning(message, *args)

    def summary(self) -> None:
        if self.count > WARN_LIMIT:
            log.warning("%d lines in all were cut to fit the model", self.count)


def run_batched(
    items: Iterable[Item],
    batching: BatchOptions,
    encode: Callable[[list[Item], int, Cuts], list[Encoded]],
    cost: Callable[[Encoded], int],
    run: Callable[[list[Encoded]], list[Result]],
    empty: Result,
    *,
    max_tokens: int,
    rows_per_item: int = 1,
    first: int = 0,
) -> Iterator[tuple[Item, Result]]:
    """(item, result) for every item, in input order.

    `encode(chunk, number, cuts)` encodes a chunk whose first item is line `number`
    (counting from 0, from `first`), telling `cuts` of lines it cuts. An encoded item
    of `cost` 0 is not run and gets `empty`; the others go to `run` in batches of
    rows_per_item x batch size x the batch's largest cost <= max_tokens (one item a
    batch at least), at most `batching.batch_size` items each.
    """
    cuts = Cuts()
    for number, chunk in chunks(items, batching.chunk_lines, first):
        encoded = encode(chunk, number, cuts)
        costs = [cost(item) for item in encoded]
        results = [empty] * len(chunk)
        for batch in batches(costs, rows_per_item, max_tokens, batching.batch_size):
            done = run([encoded[i] for i in batch])
            for i, result in zip(batch, done, strict=True):
                results[i] = result
        yield from zip(chunk, results, strict=True)
    cuts.summary()


def chunks(items: Iterable[Item], size: int, first: int = 0) -> Iterator[tuple[int, list[Item]]]:
    """(number of the first item, up to `size` items) over `items`, numbers from `first`."""
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield first, chunk
            first, chunk = first + size, []
    if chunk:
        yield first, chunk


def batches(
    costs: list[int], rows_per_item: int, max_tokens: int, batch_size: int | None
) -> Iterator[list[int]]:
    """Indices of the items of nonzero cost, longest first (ties in input order), cut into
    batches of items x rows_per_item x the batch's first (largest) cost <= max_tokens."""
    order = sorted((i for i, c in enumerate(costs) if c), key=lambda i: -costs[i])
    batch: list[int] = []
    for i in order:
        longest = costs[batch[0]] if batch else costs[i]
        full = batch_size is not None and len(batch) >= batch_size
        if batch and (full or (len(batch) + 1) * rows_per_item * longest > max_tokens):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch
