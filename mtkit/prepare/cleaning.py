"""Cleaning a parallel corpus: text normalisation and the training-set filters.

Owns what happens to a batch of (src, tgt) pairs between reading and writing:
`normalize` (every split: whitespace and control characters, so one sentence
stays one line) and `Cleaner` (the training split only: empty sides, over-long
lines, bad length ratios, exact duplicates), which counts what each filter
dropped. Reading sources is `mtkit.prepare.sources`; writing files is `mtkit.prepare.pipeline`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from mtkit.errors import ConfigError

KeptPairs = list[tuple[str, str]]
Rows = list[tuple[str, str, int, int]]

LEN_UNITS = ("words", "chars")

# Control characters (Unicode category Cc) that are not whitespace are deleted,
# and so is a byte-order mark; whitespace ones (tab, CR, LF, VT, FF,
# U+001C-U+001F, U+0085, U+2028 ...) are left for str.split() to turn into single
# spaces. A stray newline inside a hub string would otherwise break the
# one-sentence-a-line alignment of the files. (A regex is ~10x faster than
# str.translate with a table.)
_DELETE = re.compile(
    "["
    + "".join(
        re.escape(chr(code))
        for code in [*range(0x00, 0x20), *range(0x7F, 0xA0)]
        if unicodedata.category(chr(code)) == "Cc" and not chr(code).isspace()
    )
    + "\ufeff]"
)


def normalize(text: str | None) -> str:
    """One line of clean text: control characters out, whitespace runs to one space, trimmed."""
    if not text:
        return ""
    return " ".join(_DELETE.sub("", text).split())


def normalize_lines(lines: list[str | None]) -> list[str]:
    """`normalize` over a batch (inlined: a function call a line costs ~10% of the run)."""
    delete = _DELETE.sub
    return [" ".join(delete("", text).split()) if text else "" for text in lines]


@dataclass(frozen=True)
class CleanOptions:
    """The training-set filters; a zero turns a limit off."""

    max_len: int = 250
    len_unit: str = "words"
    max_ratio: float = 3.0
    dedup: bool = True
    # Language ID (mtkit.prepare.langid): drop pairs not in --src/--tgt, in worker processes.
    langid: bool = False
    langid_workers: int = 0  # 0: one a core
    langid_min_prob: float = 0.2  # keep a side the model gives its language this probability

    def validate(self) -> None:
        if self.len_unit not in LEN_UNITS:
            raise ConfigError(
                f"--len-unit {self.len_unit!r} is not known; use one of {', '.join(LEN_UNITS)}"
            )
        if self.max_len < 0:
            raise ConfigError(f"--max-len {self.max_len} is negative; use 0 to keep any length")
        if self.max_ratio != 0 and self.max_ratio < 1:
            raise ConfigError(
                f"--max-ratio {self.max_ratio} is below 1 and would drop every pair; "
                "use a value >= 1 (e.g. 3), or 0 to keep any ratio"
            )
        if not 0.0 < self.langid_min_prob <= 1.0:
            raise ConfigError(
                f"--langid-min-prob {self.langid_min_prob} is out of range; use a value in "
                "(0, 1], e.g. 0.2"
            )
        if self.langid_workers < 0:
            raise ConfigError(
                f"--langid-workers {self.langid_workers} is negative; use 0 for one a core, "
                "or a number of processes"
            )


def _length(unit: str) -> Callable[[str], int]:
    if unit == "chars":
        return len
    # Text is normalised first, so words are exactly the single spaces plus one.
    return lambda text: text.count(" ") + 1


class Cleaner:
    """Applies the filters to batches of the training split and counts each one's drops."""

    def __init__(self, options: CleanOptions) -> None:
        options.validate()
        self.options = options
        # A row is (src, tgt, src_len, tgt_len): lengths are counted once, used by two filters.
        self.steps: list[tuple[str, Callable[[Rows], Rows]]] = []
        if options.max_len:
            self.steps.append(("max_len", _max_len_filter(options.max_len)))
        if options.max_ratio:
            self.steps.append(("max_ratio", _ratio_filter(options.max_ratio)))
        if options.dedup:
            self.steps.append(("duplicates", Deduplicator()))
        self.length = _length(options.len_unit)
        self.read = 0
        self.dropped = {name: 0 for name in ["empty", *(name for name, _ in self.steps)]}

    def __call__(self, src: list[str], tgt: list[str]) -> KeptPairs:
        """The pairs of one batch that pass every filter, in their order."""
        self.read += len(src)
        length = self.length
        rows = [(s, t, length(s), length(t)) for s, t in zip(src, tgt, strict=True) if s and t]
        self.dropped["empty"] += len(src) - len(rows)
        for name, step in self.steps:
            before = len(rows)
            rows = step(rows)
            self.dropped[name] += before - len(rows)
        return [(row[0], row[1]) for row in rows]

    def counts(self) -> list[dict]:
        """Pairs before and after each filter, in the order they ran."""
        rows, left = [], self.read
        for name, dropped in self.dropped.items():
            rows.append(
                {"filter": name, "before": left, "after": left - dropped, "dropped": dropped}
            )
            left -= dropped
        return rows


def _max_len_filter(limit: int) -> Callable[[Rows], Rows]:
    def keep_short(rows: Rows) -> Rows:
        return [row for row in rows if row[2] <= limit and row[3] <= limit]

    return keep_short


def _ratio_filter(ratio: float) -> Callable[[Rows], Rows]:
    # The Moses clean-corpus-n.perl rule: longer side / shorter side <= ratio.
    def keep_balanced(rows: Rows) -> Rows:
        return [row for row in rows if row[2] <= ratio * row[3] and row[3] <= ratio * row[2]]

    return keep_balanced


class Deduplicator:
    """Drops exact duplicate pairs, keeping the first, in about 8 bytes per unique pair.

    Each pair is reduced to Python's 64-bit hash of the (src, tgt) tuple. Recent
    hashes sit in a small set; every `recent_cap` of them are merged into one
    sorted int64 table that is searched a batch at a time (np.searchsorted). The
    table grows in place (realloc) and merges by sorting in place, so memory is
    8 MB per million unique pairs (up to 12 with the room to grow) plus a fixed
    ~20 MB for the set, instead of ~100 bytes a pair for a set of all hashes.
    Two different pairs share a hash with probability about n^2 / 2^65 (1e-6 for
    4.5 M pairs); such a pair would be dropped as a duplicate.
    """

    def __init__(self, recent_cap: int = 1 << 18) -> None:
        import numpy as np

        self._np = np
        self.recent_cap = recent_cap
        self.recent: set[int] = set()
        self.table = np.empty(0, dtype=np.int64)  # sorted in [:size]; the rest is room to grow
        self.size = 0

    @property
    def seen(self):
        """The merged hashes, sorted (a view: do not keep it across calls)."""
        return self.table[: self.size]

    def __call__(self, rows: Rows) -> Rows:
        """The rows whose (src, tgt) was not seen before (rows may carry more fields)."""
        fresh, hashes, in_batch = [], [], set()
        for row in rows:
            digest = hash((row[0], row[1]))
            if digest in self.recent or digest in in_batch:
                continue
            in_batch.add(digest)
            fresh.append(row)
            hashes.append(digest)
        if self.size and hashes:
            old = self._in_table(hashes)
            fresh = [row for row, dup in zip(fresh, old, strict=True) if not dup]
            hashes = [h for h, dup in zip(hashes, old, strict=True) if not dup]
        self.recent.update(hashes)
        if len(self.recent) >= self.recent_cap:
            self._merge()
        return fresh

    def _in_table(self, hashes: list[int]) -> list[bool]:
        np = self._np
        keys = np.array(hashes, dtype=np.int64)
        seen = self.table[: self.size]
        where = np.searchsorted(seen, keys).clip(max=self.size - 1)
        return (seen[where] == keys).tolist()

    def _merge(self) -> None:
        np = self._np
        new = np.fromiter(self.recent, dtype=np.int64, count=len(self.recent))
        new.sort()
        end = self.size + len(new)
        if end > len(self.table):
            # realloc (mremap for big blocks): no second copy of the table; no views are alive
            self.table.resize(max(end, len(self.table) * 3 // 2), refcheck=False)
        self.table[self.size : end] = new
        # Two sorted runs: timsort merges them with a buffer the size of the smaller one.
        self.table[:end].sort(kind="stable")
        self.size = end
        self.recent.clear()
