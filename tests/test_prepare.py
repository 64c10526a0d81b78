"""`mtkit prepare`: every source gives the same clean files; filters counted; errors one line."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest
from hubcopy import build_hub_copy

from mtkit.errors import ConfigError, DataError
from mtkit.prepare import sources
from mtkit.prepare.cleaning import Cleaner, CleanOptions, Deduplicator, normalize
from mtkit.prepare.pipeline import prepare

M30K_SPLITS = {"train": "train", "valid": "val", "test": "test_2016_flickr"}


def m30k_lines(multi30k: Path, split: str, lang: str, limit: int | None = None) -> list[str]:
    """Multi30k's lines as prepare writes them (normalised), for comparison."""
    with gzip.open(multi30k / f"{M30K_SPLITS[split]}.{lang}.gz", "rt", encoding="utf-8") as f:
        lines = [normalize(line) for line in f]
    return lines[:limit]


def read(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def text_args(multi30k: Path, src: str, tgt: str) -> list[str]:
    args = []
    for split, stem in M30K_SPLITS.items():
        flag = "" if split == "train" else f"{split}-"
        args += [f"--{flag}src-file", multi30k / f"{stem}.{src}.gz"]
        args += [f"--{flag}tgt-file", multi30k / f"{stem}.{tgt}.gz"]
    return args


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith(("error:", "Error"))]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.fixture
def own_cache(monkeypatch, tmp_path):
    """A datasets cache of this test's own, so runs beside other test runs never share locks."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture(scope="session")
def hub(multi30k, tmp_path_factory) -> Path:
    """A local hub: wmt/wmt14 (parquet, translation column, de-en and fr-en) and
    bentrevett/multi30k (jsonl, one column per language), 2000 training pairs each."""
    root = tmp_path_factory.mktemp("hub")
    build_hub_copy(multi30k, root / "wmt/wmt14", layout="wmt", pairs=("de-en", "fr-en"))
    build_hub_copy(multi30k, root / "bentrevett/multi30k", layout="columns", pairs=("de-en",))
    return root


# ---------------------------------------------------------------- text files


def test_text_files_write_clean_splits_and_manifest(cli, multi30k, tmp_path):
    out = tmp_path / "m30k"
    result = cli(
        "prepare", "--src", "de", "--tgt", "en", "--out", out, *text_args(multi30k, "de", "en")
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # stdout is for data only
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["langs"] == {"src": "de", "tgt": "en"}
    assert manifest["options"]["max_len"] == 250
    train = manifest["splits"]["train"]
    assert train["read"] == 29000
    assert [row["filter"] for row in train["filters"]] == [
        "empty",
        "max_len",
        "max_ratio",
        "duplicates",
    ]
    for before, after in zip(train["filters"], train["filters"][1:], strict=False):
        assert before["after"] == after["before"]
    assert train["filters"][-1]["after"] == train["pairs"] == len(read(out / "train.de"))
    assert train["filters"][-1]["dropped"] > 0  # Multi30k's train set has a few repeated pairs
    # valid and test: line for line what the source has
    for split in ("valid", "test"):
        for lang in ("de", "en"):
            assert read(out / f"{split}.{lang}") == m30k_lines(multi30k, split, lang)
        assert "filters" not in manifest["splits"][split]
    # one checksum per file, of the bytes on disk
    for report in manifest["splits"].values():
        for info in report["files"].values():
            assert hashlib.sha256((out / info["name"]).read_bytes()).hexdigest() == info["sha256"]
    assert not list(out.glob(".*"))  # no temporary files left behind


def test_direction_switch_swaps_the_files(multi30k, tmp_path):
    runs = {}
    for src, tgt in (("de", "en"), ("en", "de")):
        files = {
            s: (multi30k / f"{M30K_SPLITS[s]}.{src}.gz", multi30k / f"{M30K_SPLITS[s]}.{tgt}.gz")
            for s in ("train", "test")
        }
        source = sources.from_text_files(src=src, tgt=tgt, files=files, tsv={})
        out = tmp_path / f"{src}-{tgt}"
        manifest = prepare(source, out, limit=3000)
        assert manifest["langs"] == {"src": src, "tgt": tgt}
        runs[src] = out
    for name in ("train.de", "train.en", "test.de", "test.en"):
        assert read(runs["de"] / name) == read(runs["en"] / name)
    assert read(runs["de"] / "test.de") == m30k_lines(multi30k, "test", "de", 3000)


def test_direction_from_pair_and_one_side():
    assert sources.resolve_langs(None, None, "de-en") == ("de", "en")
    assert sources.resolve_langs("en", None, "de-en") == ("en", "de")
    assert sources.resolve_langs(None, "de", "de-en") == ("en", "de")
    with pytest.raises(ConfigError, match="do not match --pair"):
        sources.resolve_langs("fr", "en", "de-en")


def test_limit_reads_the_first_pairs_of_each_split(cli, multi30k, tmp_path):
    out = tmp_path / "small"
    args = text_args(multi30k, "en", "de")
    result = cli("prepare", "--pair", "en-de", "--limit", "500", "--out", out, *args)
    assert result.returncode == 0, result.stderr
    assert read(out / "valid.en") == m30k_lines(multi30k, "valid", "en", 500)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["train"]["read"] == 500
    assert manifest["cleaning"]["limit"] == 500


def test_tsv_in_pair_order_and_reversed(multi30k, tmp_path):
    de, en = m30k_lines(multi30k, "test", "de"), m30k_lines(multi30k, "test", "en")
    tsv = tmp_path / "test.tsv.gz"
    with gzip.open(tsv, "wt", encoding="utf-8") as f:
        f.writelines(f"{d}\t{e}\n" for d, e in zip(de, en, strict=True))
    source = sources.from_text_files(
        src="en", tgt="de", files={}, tsv={"test": tsv}, tsv_order=("de", "en")
    )
    prepare(source, tmp_path / "out")
    assert read(tmp_path / "out/test.en") == en
    assert read(tmp_path / "out/test.de") == de


# ---------------------------------------------------------------- hub-shaped datasets


def test_hub_short_name_reads_a_local_wmt_copy(multi30k, hub, tmp_path):
    """wmt14 + --pair en-de finds wmt/wmt14 config de-en; the files equal the text-file path's."""
    source = sources.from_dataset("wmt14", src="en", tgt="de", pair="en-de", local_hub=hub)
    manifest = prepare(source, tmp_path / "wmt")
    assert manifest["source"]["hub_id"] == "wmt/wmt14"
    assert manifest["source"]["config"] == "de-en"
    assert manifest["source"]["splits"] == {"train": "train", "valid": "validation", "test": "test"}
    assert manifest["langs"] == {"src": "en", "tgt": "de"}
    assert manifest["splits"]["train"]["read"] == 2000
    out = tmp_path / "wmt"
    assert read(out / "valid.en") == m30k_lines(multi30k, "valid", "en")
    assert read(out / "test.de") == m30k_lines(multi30k, "test", "de")
    assert read(out / "train.de") == m30k_lines(multi30k, "train", "de", 2000)


def test_subsets_are_prepared_apart(multi30k, hub, tmp_path, cli, own_cache):
    """--subset reads one subset's files of the training split; the union of the subsets
    is the whole split; a name the builder lacks, or a merged copy, is one line."""
    names = ("europarl_v7", "commoncrawl", "newscommentary_v9")
    split = build_hub_copy(
        multi30k, tmp_path / "hub" / "wmt/wmt14", train_lines=300, eval_lines=20, subsets=names
    )
    assert sorted(p.name for p in (split / "de-en").glob("train-*")) == sorted(
        f"train-{name}-00000-of-00001.parquet" for name in names
    )
    parts = []
    for name in names:
        source = sources.from_dataset(
            "wmt14", src="de", tgt="en", pair="de-en", local_hub=tmp_path / "hub", subset=name
        )
        manifest = prepare(source, tmp_path / name)
        assert manifest["source"]["subset"] == name
        parts += read(tmp_path / name / "train.de")
    assert parts == m30k_lines(multi30k, "train", "de", 300)  # in order, each pair once
    args = ["prepare", "--dataset", "wmt14", "--pair", "de-en", "--out", tmp_path / "x"]
    result = cli(*args, "--local-hub", tmp_path / "hub", "--subset", "europarl")
    assert_one_line_error(result, "no training subset 'europarl'", "europarl_v7, commoncrawl")
    result = cli(*args, "--local-hub", hub, "--subset", "europarl_v7")  # merged files
    assert_one_line_error(result, "has no files de-en/train-europarl_v7-*", "CORPORA=")
    assert not (tmp_path / "x").exists()


def test_several_configs_need_a_pair(hub):
    with pytest.raises(DataError, match=r"several configs \(de-en, fr-en\).*--pair"):
        sources.from_dataset(str(hub / "wmt/wmt14"), src="de", tgt="en")
    source = sources.from_dataset(str(hub / "wmt/wmt14"), src="fr", tgt="en", pair="fr-en")
    assert source.description["config"] == "fr-en"


def test_separate_language_columns(multi30k, hub, tmp_path):
    source = sources.from_dataset("multi30k", src="de", tgt="en", local_hub=hub)
    prepare(source, tmp_path / "out")
    assert read(tmp_path / "out/test.de") == m30k_lines(multi30k, "test", "de")
    assert read(tmp_path / "out/valid.en") == m30k_lines(multi30k, "valid", "en")


def test_save_to_disk_copy(multi30k, tmp_path):
    saved = build_hub_copy(
        multi30k, tmp_path / "saved", layout="saved", pairs=("fr-en",), train_lines=300
    )
    source = sources.from_dataset(str(saved), src="fr", tgt="en")
    manifest = prepare(source, tmp_path / "out")
    assert manifest["splits"]["train"]["read"] == 300
    assert read(tmp_path / "out/test.fr") == m30k_lines(multi30k, "test", "fr")


def test_pair_directories_without_a_dataset_card(multi30k, tmp_path):
    copy = build_hub_copy(
        multi30k, tmp_path / "nocard", pairs=("de-en", "fr-en"), train_lines=100, card=False
    )
    source = sources.from_dataset(str(copy), src="en", tgt="fr", pair="en-fr")
    assert source.description["config"] == "fr-en"
    prepare(source, tmp_path / "out")
    assert read(tmp_path / "out/test.fr") == m30k_lines(multi30k, "test", "fr")


# ---------------------------------------------------------------- cleaning


def test_filters_and_their_counts(cli, tmp_path):
    pairs = [
        ("ein  Haus\x00 ", "a\thouse"),  # normalised, kept
        ("", "empty source"),  # empty
        ("leer", "   "),  # empty after normalising
        ("eins zwei drei vier fünf sechs", "one two three four five six"),  # kept (6 words)
        ("a b c d e f g h", "one two three four five six seven eight"),  # too long (8 > 7)
        ("kurz", "a much longer target here"),  # ratio 5 > 2
        ("ein  Haus", "a house"),  # duplicate of the first once normalised
        ("Katze", "cat"),  # kept
    ]
    src, tgt = tmp_path / "train.de", tmp_path / "train.en"
    src.write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
    tgt.write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    # valid holds an empty line, a duplicate and a long line: all kept, in place
    valid = ["", "Katze", "Katze", "a b c d e f g h i j"]
    (tmp_path / "valid.de").write_text("\n".join(valid) + "\n")
    (tmp_path / "valid.en").write_text("\n".join(valid) + "\n")
    out = tmp_path / "out"
    result = cli(
        "prepare", "--src", "de", "--tgt", "en", "--src-file", src, "--tgt-file", tgt,
        "--valid-src-file", tmp_path / "valid.de", "--valid-tgt-file", tmp_path / "valid.en",
        "--max-len", "7", "--len-unit", "words", "--max-ratio", "2", "--out", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert read(out / "train.de") == ["ein Haus", "eins zwei drei vier fünf sechs", "Katze"]
    assert read(out / "train.en") == ["a house", "one two three four five six", "cat"]
    assert read(out / "valid.de") == valid
    rows = json.loads((out / "manifest.json").read_text())["splits"]["train"]["filters"]
    assert [(r["filter"], r["before"], r["after"]) for r in rows] == [
        ("empty", 8, 6),
        ("max_len", 6, 5),
        ("max_ratio", 5, 4),
        ("duplicates", 4, 3),
    ]


def test_filters_can_be_turned_off_and_count_chars():
    cleaner = Cleaner(CleanOptions(max_len=5, len_unit="chars", max_ratio=0, dedup=False))
    kept = cleaner(["abcde", "abcdef", "a", "a"], ["x", "y", "abcde", "abcde"])
    assert kept == [("abcde", "x"), ("a", "abcde"), ("a", "abcde")]
    assert [row["filter"] for row in cleaner.counts()] == ["empty", "max_len"]


def test_normalize_keeps_one_sentence_on_one_line():
    assert normalize(" a\u00a0 b\r\nc\u2028d\x85e\x1bf\ufeff ") == "a b c d ef"
    assert normalize(None) == ""
    assert normalize("schön — 漢字") == "schön — 漢字"


def test_deduplicator_across_merges():
    dedup = Deduplicator(recent_cap=4)  # tiny, so hashes move to the sorted array often
    kept = []
    data = [(f"s{i % 13}", f"t{i % 13}") for i in range(100)] + [("new", "pair")]
    for start in range(0, len(data), 7):
        kept += dedup([(s, t, 1, 1) for s, t in data[start : start + 7]])
    assert [(s, t) for s, t, _, _ in kept] == list(dict.fromkeys(data))
    assert len(dedup.seen) > 0


# ---------------------------------------------------------------- errors


def test_counts_that_differ_fail_and_leave_no_files(cli, multi30k, tmp_path):
    short = tmp_path / "short.en"
    short.write_text("".join(line + "\n" for line in m30k_lines(multi30k, "test", "en")[:-1]))
    out = tmp_path / "out"
    test_de = multi30k / "test_2016_flickr.de.gz"
    result = cli("prepare", "--src", "de", "--tgt", "en", "--out", out,
                 "--src-file", test_de, "--tgt-file", short)  # fmt: skip
    assert_one_line_error(result, "has 1000 lines but", "has 999")
    assert list(out.iterdir()) == []  # neither finished-looking files nor temporary ones


def test_unreadable_gzip(cli, multi30k, tmp_path):
    broken = tmp_path / "broken.de.gz"
    broken.write_bytes(b"\x1f\x8bthis is not gzip data")
    args = ["prepare", "--src", "de", "--tgt", "en", "--out", tmp_path / "out"]
    result = cli(*args, "--src-file", broken, "--tgt-file", multi30k / "val.en.gz")
    assert_one_line_error(result, "cannot read", "broken.de.gz")
    # cut short: the stream fails part-way, and nothing is left behind
    truncated = tmp_path / "truncated.de.gz"
    truncated.write_bytes((multi30k / "train.de.gz").read_bytes()[:200_000])
    result = cli(*args, "--src-file", truncated, "--tgt-file", multi30k / "train.en.gz")
    assert_one_line_error(result, "truncated.de.gz", "is it complete")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--src-file", "missing.de", "--tgt-file", "missing.en"], "no such file: missing.de"),
        (["--src-file", "x.de"], "give both --src-file and --tgt-file"),
        (["--dataset", "wmt14", "--src-file", "x.de", "--tgt-file", "x.en"], "not both"),
        (["--max-len", "-1", "--dataset", "wmt14"], "--max-len -1"),
        (["--max-ratio", "0.5", "--dataset", "wmt14"], "--max-ratio 0.5"),
        (["--len-unit", "lines", "--dataset", "wmt14"], "--len-unit 'lines'"),
        (["--limit", "-5", "--dataset", "wmt14"], "--limit -5"),
        (["--dataset", "wmt99"], "unknown dataset 'wmt99'"),
        ([], "no input"),
    ],
)
def test_bad_input_is_one_line(cli, tmp_path, args, message):
    result = cli(
        "prepare", "--src", "de", "--tgt", "en", "--out", tmp_path / "out", *args, cwd=tmp_path
    )
    assert_one_line_error(result, message)


def test_bad_language_options(cli, tmp_path):
    result = cli("prepare", "--src", "en", "--tgt", "en", "--dataset", "wmt14", "--out", tmp_path)
    assert_one_line_error(result, "both 'en'")
    result = cli("prepare", "--pair", "deen", "--dataset", "wmt14", "--out", tmp_path)
    assert_one_line_error(result, "not a language pair")


def test_unknown_pair_lists_the_pairs(cli, own_cache, tmp_path):
    result = cli("prepare", "--dataset", "wmt14", "--pair", "xx-en", "--out", tmp_path / "o")
    assert_one_line_error(result, "wmt/wmt14 has no pair xx-en", "de-en", "fr-en")


def test_unreachable_hub_says_what_to_do(cli, own_cache, tmp_path):
    # conftest sets HF_HUB_OFFLINE=1, which datasets reports like an unreachable hub
    result = cli("prepare", "--dataset", "wmt14", "--pair", "de-en", "--out", tmp_path / "o")
    assert_one_line_error(
        result, "could not reach the Hugging Face hub", "--dataset PATH", "--src-file"
    )


def test_languages_the_dataset_lacks_are_listed(cli, own_cache, hub, tmp_path):
    result = cli("prepare", "--dataset", "wmt14", "--config", "de-en", "--local-hub", hub,
                 "--src", "fr", "--tgt", "en", "--out", tmp_path / "o")  # fmt: skip
    assert_one_line_error(result, "has languages de, en", "--src fr")
    assert not (tmp_path / "o").exists()
