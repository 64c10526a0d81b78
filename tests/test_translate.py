"""`mtkit translate`: one line out for every line in, in order, through the library and the CLI.

Uses the tiny trained checkpoints of test_search.py (trained once per test session).
One test pipes text through `python -m mtkit` in a subprocess as a user would; the
others call the same entry point (`mtkit.cli.main`) in this process, with its
stdin/stdout/stderr captured, to save a torch import per test.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import call_main
from test_search import tiny_checkpoint

from mtkit.errors import DataError
from mtkit.search import SearchOptions
from mtkit.translate.stream import (
    BatchOptions,
    RuntimeOptions,
    format_nbest,
    load_translator,
    translate_lines,
)

FAST = ("--threads", "1", "--beam", "3")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def transformer_ckpt(multi30k) -> Path:
    return tiny_checkpoint("transformer", multi30k)


@pytest.fixture(scope="module")
def lines(multi30k) -> list[str]:
    """Real sentences with empty, blank and over-long lines mixed in."""
    with gzip.open(multi30k / "val.de.gz", "rt", encoding="utf-8") as file:
        real = [next(file).strip() for _ in range(12)]
    very_long = " ".join(real * 4)  # well past the tiny model's 64 positions
    return [real[0], "", real[1], very_long, "   ", *real[2:8], "", very_long, *real[8:], ""]


@pytest.mark.parametrize("arch", ["transformer", "rnn"])
def test_lines_keep_count_and_order_in_any_batching(arch, multi30k, lines):
    translator = load_translator([tiny_checkpoint(arch, multi30k)], RuntimeOptions(threads=1))
    options = SearchOptions(beam_size=3)
    big = [h[0][0] for h in translate_lines(translator, lines, options)]
    small = BatchOptions(chunk_lines=4, batch_size=2)
    chunked = [h[0][0] for h in translate_lines(translator, lines, options, small)]
    one_by_one = [h[0][0] for line in lines for h in translate_lines(translator, [line], options)]
    assert big == chunked == one_by_one
    assert len(big) == len(lines)
    for line, out in zip(lines, big, strict=True):
        assert (out == "") == (line.strip() == "")
    assert big[3] and big[3] == big[12]  # the long line is truncated, not dropped


def test_token_budget_smaller_than_a_sentence_still_translates(transformer_ckpt, lines):
    translator = load_translator([transformer_ckpt], RuntimeOptions(threads=1))
    options = SearchOptions(beam_size=2)
    tiny_budget = [h[0][0] for h in translate_lines(translator, lines, options, BatchOptions(1))]
    assert tiny_budget == [h[0][0] for h in translate_lines(translator, lines, options)]


@pytest.fixture
def mtkit_main(monkeypatch, capsysbinary):
    """Run `mtkit ARGS` in this process: returns (exit code, stdout, stderr) as text."""

    def run(*args, input: bytes = b""):
        code = call_main(monkeypatch, *args, stdin=input)
        out, err = capsysbinary.readouterr()
        return Run(code, out.decode("utf-8"), err.decode("utf-8"))

    return run


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def test_cli_stdin_to_stdout_and_file_to_file_agree(
    cli, mtkit_main, transformer_ckpt, lines, tmp_path
):
    text = "\n".join(lines) + "\n"
    piped = cli("translate", "-m", transformer_ckpt, *FAST, input=text)
    assert piped.returncode == 0, piped.stderr
    out_lines = piped.stdout.split("\n")[:-1]
    assert len(out_lines) == len(lines)
    assert [o == "" for o in out_lines] == [line.strip() == "" for line in lines]
    assert "only the first" in piped.stderr  # the warning about the over-long lines

    source, target = tmp_path / "in.de", tmp_path / "out.en"
    source.write_text(text, encoding="utf-8")
    written = mtkit_main("translate", "-m", transformer_ckpt, *FAST, "-i", source, "-o", target)
    assert written.returncode == 0, written.stderr
    assert written.stdout == ""  # stdout carries translations only, and here there are none
    assert target.read_text(encoding="utf-8") == piped.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.de", "out.en"]  # no temp left


def test_cli_nbest_format(mtkit_main, transformer_ckpt, tmp_path):
    source = tmp_path / "in.de.gz"
    with gzip.open(source, "wt", encoding="utf-8") as file:
        file.write("Ein Mann schläft.\n\nZwei Hunde laufen.\n")
    run = mtkit_main(
        "translate", "-m", transformer_ckpt, "-i", source, "--beam", "3", "--nbest", "3"
    )
    assert run.returncode == 0, run.stderr
    rows = [line.split(" ||| ") for line in run.stdout.splitlines()]
    assert [int(r[0]) for r in rows] == [0, 0, 0, 1, 2, 2, 2]
    assert rows[3][1:] == ["", "0.0000"]
    for line_no in (0, 2):
        scores = [float(r[2]) for r in rows if int(r[0]) == line_no]
        assert scores == sorted(scores, reverse=True)


def test_format_nbest():
    assert format_nbest(7, [("a b", -1.0), ("a", -1.25)]) == (
        "7 ||| a b ||| -1.0000\n7 ||| a ||| -1.2500\n"
    )


def test_read_lines_names_the_bad_line():
    import io

    from mtkit.io import text_lines

    stream = io.BytesIO(b"gut\r\nauch gut\n\xff kaputt\n")
    with pytest.raises(DataError, match=r"line 3 is not valid UTF-8"):
        list(text_lines(stream, "in.de"))


# -- errors a user can cause, through the CLI --------------------------------------


def _fails(run, *fragments: str) -> None:
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    for fragment in fragments:
        assert fragment in run.stderr, run.stderr


def test_cli_error_no_model(cli):
    _fails(cli("translate", input="Hallo\n"), "no model given", "-m")


def test_cli_error_missing_input(mtkit_main, transformer_ckpt, tmp_path):
    missing = tmp_path / "nope.de"
    _fails(
        mtkit_main("translate", "-m", transformer_ckpt, "-i", missing), "not found", str(missing)
    )


def test_cli_error_not_a_checkpoint(mtkit_main, tmp_path):
    fake = tmp_path / "model.pt"
    fake.write_text("not a model\n")
    _fails(mtkit_main("translate", "-m", fake, input=b"Hallo\n"), str(fake), "checkpoint")


def test_cli_error_newer_format(mtkit_main, transformer_ckpt, tmp_path):
    ckpt = torch.load(transformer_ckpt, weights_only=True)
    ckpt["format_version"] = 99
    newer = tmp_path / "newer.pt"
    torch.save(ckpt, newer)
    _fails(mtkit_main("translate", "-m", newer, input=b"Hallo\n"), "format_version", "upgrade")


def test_cli_error_invalid_utf8_leaves_no_output(mtkit_main, transformer_ckpt, tmp_path):
    source, target = tmp_path / "in.de", tmp_path / "out.en"
    source.write_bytes(b"Ein Hund.\nEine Katze.\n\xe4rger\n")
    run = mtkit_main("translate", "-m", transformer_ckpt, *FAST, "-i", source, "-o", target)
    _fails(run, "line 3 is not valid UTF-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.de"]


def test_cli_error_ensemble_of_different_vocabularies(mtkit_main, transformer_ckpt, tmp_path):
    from test_search import _spm_bytes

    from mtkit.checkpoint import save_checkpoint

    ckpt = torch.load(transformer_ckpt, weights_only=True)
    other_spm = _spm_bytes([f"wort{i} zahl{i * 7} ding{i % 13}" for i in range(300)])
    ckpt["spm"] = {"src": other_spm, "tgt": other_spm}
    other = tmp_path / "other.pt"
    save_checkpoint(other, ckpt)  # as mtkit writes it: with the checksum of what it holds
    run = mtkit_main("translate", "-m", transformer_ckpt, "-m", other, input=b"Hallo\n")
    _fails(run, str(other), "same vocabulary")
