"""Keeping the best-scored pairs: a share or a threshold, written as a prepared corpus.

Owns turning OUT/train.scores (mtkit.filter.job) into OUT/train.{src,tgt}, the valid and
test splits copied as they are, and OUT/manifest.json: the input's manifest with the
new files, the filter's rows added to the training split's counts ("unscorable": a
blank side; "dual_xent": scored below the cut) in prepare's form (before, after,
dropped), and a "filtering" section that says how (models, score, share, threshold).

A share (`keep`) needs the k-th best score: the scores are held as float32, 4 bytes a
pair (100 MB for WMT17 zh-en's 25 M), everything else streams. Ties at the cut are
kept in corpus order until the share is full, so exactly round(keep x scored) pairs
stay. A threshold keeps every pair scoring at least it, with no such array.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from mtkit import __version__
from mtkit.errors import ConfigError, DataError
from mtkit.filter.job import SCORE_DECIMALS, SCORES, Corpus
from mtkit.io import open_binary, write_text

log = logging.getLogger(__name__)

SCORE_FORMULA = "exp(-(|H_f - H_b| + (H_f + H_b) / 2)); H in nats per piece, eos counted"


@dataclass(frozen=True)
class Selection:
    """How many pairs to keep: a share of the scored ones, or those at or above a score."""

    keep: float | None = None  # e.g. 0.8
    threshold: float | None = None  # e.g. 0.25, on the exp(-...) scale (0, 1]

    def check(self) -> None:
        if (self.keep is None) == (self.threshold is None):
            raise ConfigError(
                "say how much to keep: --keep SHARE (e.g. 0.8) or --threshold SCORE "
                "(e.g. 0.25), one of them"
            )
        if self.keep is not None and not 0 < self.keep <= 1:
            raise ConfigError(f"--keep {self.keep} is not a share; give one in (0, 1], e.g. 0.8")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ConfigError(
                f"--threshold {self.threshold} is out of range; scores are in (0, 1], e.g. 0.25"
            )


def select(corpus: Corpus, out: Path, selection: Selection, filtering: dict) -> dict:
    """Write the kept pairs and the other splits to OUT, then OUT/manifest.json; returns
    the manifest. `filtering` describes the scoring (models, options) for the manifest."""
    from mtkit.prepare.pipeline import MANIFEST, CountingWriter

    selection.check()
    out = Path(out)
    cut = Cut.of(out / SCORES, corpus.lines, selection)
    reports = {}
    with ExitStack() as stack:
        writers = {}
        for split in corpus.manifest["splits"]:
            pair = tuple(CountingWriter(out / f"{split}.{corpus.langs[s]}") for s in ("src", "tgt"))
            for writer in pair:
                stack.callback(writer.discard)
            writers[split] = pair
        counts = _write_train(corpus, out / SCORES, writers["train"], cut)
        for split, pair in writers.items():
            if split != "train":
                _copy_split(corpus, split, pair)
        for split, (src_writer, tgt_writer) in writers.items():
            report = dict(corpus.manifest["splits"][split])
            report["files"] = {
                corpus.langs["src"]: src_writer.commit(),
                corpus.langs["tgt"]: tgt_writer.commit(),
            }
            report["pairs"] = src_writer.lines
            reports[split] = report
    reports["train"]["filters"] = list(reports["train"].get("filters", [])) + counts["rows"]
    manifest = _manifest(corpus, selection, cut.score, filtering, counts, reports)
    write_text(out / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    log.info(
        "kept %d of %d pairs (score >= %.4f); dropped %d", counts["kept"], corpus.lines,
        cut.score, corpus.lines - counts["kept"],
    )  # fmt: skip
    return manifest


def read_scores(path: Path, lines: int):
    """The score column of a scores file as float32 (nan: not scored)."""
    import numpy as np

    with open_binary(path) as stream:
        values = np.fromiter((float(row.split(b"\t", 1)[0]) for row in stream), np.float32)
    if len(values) != lines:
        raise DataError(
            f"{path} has {len(values)} lines for {lines} pairs; run again with --restart"
        )
    return values


class Cut:
    """Which scores a selection keeps, asked in corpus order: those above `score`, and
    those equal to it while `ties` last (a share's k-th best may be shared)."""

    def __init__(self, score: float, ties: float) -> None:
        self.score, self.ties = score, ties

    @classmethod
    def of(cls, path: Path, lines: int, selection: Selection) -> Cut:
        """For a share, the k-th best score of the scores file at `path` and the ties that
        fill the share; for a threshold, itself and all ties."""
        if selection.threshold is not None:
            return cls(selection.threshold, math.inf)
        import numpy as np

        values = read_scores(path, lines)
        scored = values[~np.isnan(values)]
        k = round(selection.keep * len(scored))
        if k == 0:
            return cls(math.inf, 0)
        score = np.partition(scored, len(scored) - k)[len(scored) - k]
        ties = k - int((scored > score).sum())
        # The float32 value back to the file's text value, which keeps() compares with.
        return cls(round(float(score), SCORE_DECIMALS), ties)

    def keeps(self, score: float) -> bool:
        """Whether the next pair, scoring `score` (nan: unscorable), stays."""
        if score > self.score:
            return True
        if score == self.score and self.ties > 0:
            self.ties -= 1
            return True
        return False


def kept_lines(path: Path, lines: int, selection: Selection) -> Iterator[bool]:
    """For each line of a scores file, whether `selection` keeps its pair (bench/noise.py
    compares them with the noise it injected)."""
    cut = Cut.of(path, lines, selection)
    with open_binary(path) as stream:
        for row in stream:
            yield cut.keeps(float(row.split(b"\t", 1)[0]))


def _write_train(corpus: Corpus, scores: Path, writers, cut: Cut) -> dict:
    """Stream the pairs and their scores, write the kept ones; the counts and figures."""
    src_writer, tgt_writer = writers
    kept, blank, disagree, batch = 0, 0, 0, []
    sums = {"kept": [0.0, 0.0], "dropped": [0.0, 0.0]}
    with ExitStack() as stack:
        rows = [
            stack.enter_context(open_binary(p))
            for p in (corpus.path("src"), corpus.path("tgt"), scores)
        ]
        for src, tgt, line in zip(*rows, strict=True):
            score, forward, backward = (float(x) for x in line.split(b"\t"))
            if math.isnan(score):
                blank += 1
                continue
            keep = cut.keeps(score)
            sums["kept" if keep else "dropped"][0] += forward
            sums["kept" if keep else "dropped"][1] += backward
            if not keep:
                disagree += abs(forward - backward) > 0.5 * (forward + backward)
                continue
            kept += 1
            batch.append((src.decode("utf-8").rstrip("\n"), tgt.decode("utf-8").rstrip("\n")))
            if len(batch) == 10_000:
                _flush(batch, src_writer, tgt_writer)
        _flush(batch, src_writer, tgt_writer)
    return _counts(corpus.lines, blank, kept, disagree, sums)


def _flush(batch: list, src_writer, tgt_writer) -> None:
    src_writer.write_lines([s for s, _ in batch])
    tgt_writer.write_lines([t for _, t in batch])
    batch.clear()


def _counts(read: int, blank: int, kept: int, disagree: int, sums: dict) -> dict:
    scored = read - blank
    dropped = scored - kept
    means = {
        name: {"H_f": f / n, "H_b": b / n} if (n := kept if name == "kept" else dropped) else None
        for name, (f, b) in sums.items()
    }
    rows = [
        {"filter": "unscorable", "before": read, "after": scored, "dropped": blank},
        {"filter": "dual_xent", "before": scored, "after": kept, "dropped": dropped},
    ]
    return {"rows": rows, "kept": kept, "disagree": disagree, "means": means}


def _copy_split(corpus: Corpus, split: str, writers) -> None:
    """A split other than train, line for line (as prepare keeps valid and test unfiltered)."""
    files = corpus.manifest["splits"][split]["files"]
    for side, writer in zip(("src", "tgt"), writers, strict=True):
        path = corpus.data / files[corpus.langs[side]]["name"]
        with open_binary(path) as stream:
            lines = []
            for raw in stream:
                lines.append(raw.decode("utf-8").rstrip("\n"))
                if len(lines) == 10_000:
                    writer.write_lines(lines)
                    lines = []
            writer.write_lines(lines)


def _manifest(corpus: Corpus, selection: Selection, cut, filtering, counts, reports) -> dict:
    manifest = dict(corpus.manifest)
    manifest.update(
        mtkit_version=__version__,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        splits=reports,
    )
    manifest["filtering"] = {
        "from": str(corpus.data),
        "method": "dual conditional cross-entropy (Junczys-Dowmunt 2018)",
        "score": SCORE_FORMULA,
        "splits": ["train"],
        **filtering,
        "keep": selection.keep,
        "threshold": selection.threshold,
        "cut": None if math.isinf(cut) else cut,
        "scores_file": f"{SCORES}: score, H_f, H_b for each pair of the input's train split",
        "dropped_where_models_disagree": counts["disagree"],
        "mean_cross_entropy": counts["means"],
    }
    return manifest
