"""`mtkit score` gives the sacrebleu command's figures and signatures, on Multi30k text."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mtkit.errors import ConfigError, DataError
from mtkit.score import as_dicts, read_lines, score

SACREBLEU = Path(sys.executable).parent / "sacrebleu"
LINES = 100


def _perturb(line: str, seed: int) -> str:
    """A deterministic, imperfect 'translation': drop, swap and recase some words."""
    words = line.split()
    for i in range(seed % 3, len(words) - 1, 4):
        words[i], words[i + 1] = words[i + 1], words[i]
    if len(words) > 5:
        del words[(seed % 5) + 1]
    if seed % 7 == 0:
        words = [w.upper() if i == 0 else w for i, w in enumerate(words)]
    return " ".join(words)


@pytest.fixture(scope="module")
def files(multi30k, tmp_path_factory) -> dict[str, Path]:
    """ref: the first 300 lines of test_2016_flickr.en; ref2 and hyp perturbed from it."""
    out = tmp_path_factory.mktemp("score")
    with gzip.open(multi30k / "test_2016_flickr.en.gz", "rt", encoding="utf-8") as f:
        ref = [next(f).rstrip("\n") for _ in range(LINES)]
    texts = {
        "ref": ref,
        "ref2": [_perturb(line, i + 1) for i, line in enumerate(ref)],
        "hyp": [_perturb(line, i) for i, line in enumerate(ref)],
    }
    paths = {}
    for name, lines in texts.items():
        paths[name] = out / f"{name}.en"
        paths[name].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


def sacrebleu(*args) -> str:
    result = subprocess.run(
        [str(SACREBLEU), *map(str, args)], capture_output=True, text=True, check=True
    )
    return result.stdout


@pytest.mark.parametrize(
    ("metrics", "ours", "theirs"),
    [
        ("bleu,chrf,ter", [], []),
        ("bleu,chrf", ["-tok", "intl", "--lowercase"], ["-tok", "intl", "-lc", "--chrf-lowercase"]),
        (
            "chrf,ter",
            ["--chrf-word-order", "2", "--ter-case-sensitive", "-w", "3"],
            ["--chrf-word-order", "2", "--ter-case-sensitive", "-w", "3"],
        ),
    ],  # fmt: skip
)
def test_json_equals_sacrebleu_command(files, cli, metrics, ours, theirs):
    refs = [files["ref"], files["ref2"]]
    result = cli("score", "-r", refs[0], "-r", refs[1], "-i", files["hyp"],
                 "-m", metrics, "--json", *ours)  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = sacrebleu(*refs, "-i", files["hyp"], "-m", *metrics.split(","), "-f", "json",
                         *theirs)  # fmt: skip
    assert json.loads(result.stdout) == json.loads(expected)
    assert json.loads(result.stdout)[0]["signature"].startswith("nrefs:2|")


def test_text_equals_sacrebleu_command_and_stdin_equals_file(files, cli):
    expected = sacrebleu(files["ref"], "-i", files["hyp"], "-m", "bleu", "chrf", "-f", "text")
    from_file = cli("score", "-r", files["ref"], "-i", files["hyp"], "-m", "chrf,bleu")
    hyps = files["hyp"].read_text(encoding="utf-8")
    from_stdin = cli("score", "-r", files["ref"], "-m", "bleu,chrf", input=hyps)
    assert from_file.stdout == from_stdin.stdout == expected
    assert from_file.stdout.split("|")[0].strip() == "BLEU"
    assert "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:" in from_file.stdout


def test_json_shape_and_gzip_reference(files, multi30k, cli):
    # One metric: a JSON object, as `sacrebleu -f json` prints it.
    one = json.loads(cli("score", "-r", files["ref"], "-i", files["hyp"], "--json").stdout)
    assert one["name"] == "BLEU" and 0 < one["score"] < 100
    assert one["signature"].startswith("nrefs:1|") and "hyp_len" in one["verbose_score"]
    # A gzipped reference reads like the plain one (here: the reference scores itself).
    ref = multi30k / "test_2016_flickr.en.gz"
    result = cli("score", "-r", ref, "-m", "bleu,ter", "--json", "-b",
                 input=gzip.decompress(ref.read_bytes()).decode("utf-8"))  # fmt: skip
    both = json.loads(result.stdout)
    assert [(r["name"], r["score"]) for r in both] == [("BLEU", 100.0), ("TER", 0.0)]


def test_score_only(files, cli):
    result = cli("score", "-r", files["ref"], "-i", files["hyp"], "-b", "-m", "bleu,chrf")
    expected = sacrebleu(files["ref"], "-i", files["hyp"], "-b", "-m", "bleu", "chrf", "-f", "text")
    assert result.stdout == expected
    assert len(result.stdout.split()) == 2


def test_library_matches_sacrebleu_api(files):
    import sacrebleu as sb

    hyps = read_lines(files["hyp"])
    refs = [read_lines(files["ref"])]
    [bleu, ter] = score(hyps, refs, metrics=["ter", "bleu"])
    assert bleu.score == sb.corpus_bleu(hyps, refs).score
    assert ter.score == sb.corpus_ter(hyps, refs).score
    assert as_dicts([bleu])[0]["name"] == "BLEU"


def test_count_mismatch_names_both_counts(files, cli, tmp_path):
    short = tmp_path / "short.en"
    short.write_text("a man\na dog\n", encoding="utf-8")
    result = cli("score", "-r", files["ref"], "-i", short)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"error: {short} has 2 lines but {files['ref']} has {LINES}; "
        "hypotheses and references must match line for line"
    )
    result = cli("score", "-r", files["ref"], "-r", short, input="x\n" * LINES)
    assert result.returncode == 1
    assert f"standard input has {LINES} lines but {short} has 2" in result.stderr


def test_user_errors_are_one_line(files, cli, tmp_path):
    bad = tmp_path / "bad.en"
    bad.write_bytes(b"a man\n\xff\xfe\n")
    cases = {
        ("-m", "bleu,meteor"): "error: unknown metric 'meteor'; choose from bleu, chrf, ter",
        ("-i", tmp_path / "nope.en"): "error: file not found:",
        ("--tokenize", "moses"): "error: unknown tokenizer 'moses'; choose from 13a",
        ("-i", bad): "is not valid UTF-8",
    }
    for args, message in cases.items():
        result = cli("score", "-r", files["ref"], *args)
        assert result.returncode == 1, args
        assert message in result.stderr and "Traceback" not in result.stderr
        assert result.stdout == ""


def test_library_errors():
    with pytest.raises(ConfigError, match="no references"):
        score(["a"], [])
    with pytest.raises(DataError, match="nothing to score"):
        score([], [[]])
    with pytest.raises(ConfigError, match="choose from bleu, chrf, ter"):
        score(["a"], [["a"]], metrics=["bleurt"])
