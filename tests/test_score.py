"""`mtkit score` gives the sacrebleu command's figures and signatures, on Multi30k text,
significance tests included."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import call_main

from mtkit.errors import ConfigError, DataError
from mtkit.io import read_text_lines
from mtkit.score import ScoreOptions, SignificanceOptions, as_dicts, score, score_files

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
        # A second system, close to the first: the paired tests have something to find.
        "hyp2": [_perturb(line, i + 2) if i % 3 else line for i, line in enumerate(ref)],
    }
    paths = {}
    for name, lines in texts.items():
        paths[name] = out / f"{name}.en"
        paths[name].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


def sacrebleu(*args, seed: int | None = None) -> str:
    env = {**os.environ, "NO_COLOR": "1"}
    if seed is not None:
        env["SACREBLEU_SEED"] = str(seed)
    result = subprocess.run(
        [str(SACREBLEU), *map(str, args)], capture_output=True, text=True, check=True, env=env
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

    hyps = read_text_lines(files["hyp"])
    refs = [read_text_lines(files["ref"])]
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
        ("-i", tmp_path / "nope.en"): "error: no such file:",
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


# -- significance: the same figures as the sacrebleu command ------------------------


@pytest.mark.parametrize(
    ("test", "metrics", "seed"),
    [
        (["--paired-bs", "--paired-bs-n", "300"], "bleu,chrf,ter", 12345),
        (["--paired-ar", "--paired-ar-n", "300"], "bleu,chrf,ter", 7),
    ],
)
def test_paired_tests_equal_sacrebleu_command(files, monkeypatch, capsys, test, metrics, seed):
    systems = [files["hyp"], files["hyp2"], files["ref2"]]
    args = ["score", "-r", files["ref"], "-m", metrics, *test, "--seed", seed]
    args += [arg for path in systems for arg in ("-i", path)]
    assert call_main(monkeypatch, *args) == 0
    ours = capsys.readouterr().out
    theirs = sacrebleu(files["ref"], "-i", *systems, "-m", *metrics.split(","), *test,
                       "-f", "text", seed=seed)  # fmt: skip
    assert ours == theirs
    assert f"Baseline: {files['hyp']}" in ours and "(p = " in ours
    assert f"seed:{seed}" in ours


def test_paired_json(files, monkeypatch, capsys):
    args = ["score", "-r", files["ref"], "-i", files["hyp"], "-i", files["hyp2"], "--json"]
    # sacreBLEU's JSON for approximate randomization: the same text.
    test = ["--paired-ar", "--paired-ar-n", "200"]
    assert call_main(monkeypatch, *args, "-m", "chrf", *test) == 0
    theirs = sacrebleu(files["ref"], "-i", files["hyp"], files["hyp2"], "-m", "chrf", *test,
                       "-f", "json", seed=12345)  # fmt: skip
    assert capsys.readouterr().out == theirs
    # Bootstrap: sacreBLEU's own JSON printer fails on numpy float32 p-values; ours
    # has its layout and the library's figures (the text test shows they are sacreBLEU's).
    test = ["--paired-bs", "--paired-bs-n", "200"]
    assert call_main(monkeypatch, *args, "-m", "bleu,ter", *test) == 0
    [baseline, system] = json.loads(capsys.readouterr().out)
    assert baseline["system"] == f"Baseline: {files['hyp']}"
    assert baseline["BLEU"]["p_value"] is None and 0 < baseline["BLEU"]["ci"] < 20
    assert 0 < system["TER"]["p_value"] <= 1 and set(system) == {"system", "BLEU", "TER"}
    text = score_files([files["ref"]], [files["hyp"], files["hyp2"]],
                       ScoreOptions(metrics=("bleu", "ter")),
                       SignificanceOptions(paired_bs=True, paired_bs_n=200), )  # fmt: skip
    assert f"{system['BLEU']['score']:.1f} ({system['BLEU']['mean']:.1f} ± " in text
    assert f"(p = {system['TER']['p_value']:.4f})" in text


def test_confidence_and_plain_table_equal_sacrebleu(files, monkeypatch, capsys):
    ci = ["--confidence", "--confidence-n", "200"]
    assert call_main(monkeypatch, "score", "-r", files["ref"], "-i", files["hyp"], "-m",
                     "bleu,chrf", *ci, "--seed", "3") == 0  # fmt: skip
    ours = capsys.readouterr().out
    theirs = sacrebleu(files["ref"], "-i", files["hyp"], "-m", "bleu", "chrf", *ci, "-f", "text",
                       seed=3)  # fmt: skip
    assert ours == theirs and "(μ = " in ours and "bs:200|seed:3|" in ours
    assert call_main(monkeypatch, "score", "-r", files["ref"], "-i", files["hyp"], "-m",
                     "bleu,chrf", *ci, "--seed", "3", "--json") == 0  # fmt: skip
    theirs = sacrebleu(files["ref"], "-i", files["hyp"], "-m", "bleu", "chrf", *ci, "-f", "json",
                       seed=3)  # fmt: skip
    assert capsys.readouterr().out == theirs
    # Several systems without a test: sacreBLEU's table of scores.
    two = ["-i", files["hyp"], "-i", files["hyp2"]]
    assert call_main(monkeypatch, "score", "-r", files["ref"], *two, "-m", "bleu,ter") == 0
    ours = capsys.readouterr().out
    theirs = sacrebleu(files["ref"], "-i", files["hyp"], files["hyp2"], "-m", "bleu", "ter",
                       "-f", "text")  # fmt: skip
    assert ours == theirs


def test_significance_option_errors(files, monkeypatch, capsys):
    one, two = ["-i", files["hyp"]], ["-i", files["hyp"], "-i", files["hyp2"]]
    cases = [
        ([*one, "--paired-bs"], "a paired test compares systems with a baseline"),
        ([*two, "--confidence"], "--confidence is for one system"),
        ([*two, "--paired-bs", "--paired-ar"], "exclude each other"),
        ([*two, "--paired-bs", "--paired-bs-n", "0"], "--paired-bs-n must be at least 1"),
        ([*one, "-i", files["hyp"], "--paired-ar"], "is given twice with -i"),
    ]
    for args, message in cases:
        assert call_main(monkeypatch, "score", "-r", files["ref"], *args) == 1, args
        captured = capsys.readouterr()
        assert captured.err.startswith("error: ") and message in captured.err, captured.err
        assert captured.err.count("\n") == 1 and captured.out == ""
