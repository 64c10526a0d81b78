"""`mtkit logprob`: force-decoded scores equal translate's n-best scores, one line per line.

Uses the tiny trained checkpoints of test_search.py; an ensemble pairs the
transformer with a perturbed copy of itself.
"""

from __future__ import annotations

import gzip
import itertools
import math
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from conftest import call_main
from test_search import tiny_checkpoint

from mtkit.search import SearchOptions, search
from mtkit.translate.logprob import force_decode, score_pairs
from mtkit.translate.stream import (
    BatchOptions,
    RuntimeOptions,
    format_nbest,
    load_translator,
    translate_lines,
)

NBEST = SearchOptions(beam_size=3, nbest=3, len_penalty=0.0)  # the score is the log-probability


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ckpt(multi30k) -> Path:
    return tiny_checkpoint("transformer", multi30k)


@pytest.fixture(scope="module")
def ensemble(ckpt, tmp_path_factory) -> list[Path]:
    """The transformer and a copy with noise on its weights: same vocabulary, other figures."""
    from mtkit.checkpoint import load_checkpoint, save_checkpoint

    payload = load_checkpoint(ckpt)
    generator = torch.Generator().manual_seed(1)
    payload["model"] = {
        name: value + 0.05 * torch.randn(value.shape, generator=generator)
        if value.is_floating_point() else value
        for name, value in payload["model"].items()
    }  # fmt: skip
    return [ckpt, save_checkpoint(tmp_path_factory.mktemp("ens") / "noisy.pt", payload)]


@pytest.fixture(scope="module")
def lines(multi30k) -> list[str]:
    """Real sentences with empty, blank and over-long lines (past 64 positions) mixed in."""
    with gzip.open(multi30k / "val.de.gz", "rt", encoding="utf-8") as file:
        real = [next(file).strip() for _ in range(8)]
    very_long = " ".join(real * 4)
    return [real[0], "", real[1], very_long, "   ", *real[2:5], "", very_long, *real[5:]]


def _exact_tokens(translator, lines):
    """The search's own n-best token ids per non-blank line, with the line's source ids
    (cut and ended as translate does)."""
    eos, pad = translator.models[0].config.eos_id, translator.models[0].config.pad_id
    room = translator.max_src_len - 1
    ids = [x[:room] + [eos] if x else [] for x in translator.src_tokenizer.encode(lines)]
    todo = [i for i, x in enumerate(ids) if x]
    width = max(len(ids[i]) for i in todo)
    src = torch.tensor([ids[i] + [pad] * (width - len(ids[i])) for i in todo])
    hyps = [h for per in search(translator.models, src, NBEST) for h in per]
    return [ids[i] for i in todo for _ in range(NBEST.nbest)], hyps


@pytest.mark.parametrize("which", ["transformer", "rnn", "ensemble"])
def test_equals_search_scores_on_its_own_tokens(which, multi30k, ensemble, lines):
    paths = ensemble if which == "ensemble" else [tiny_checkpoint(which, multi30k)]
    translator = load_translator(paths, RuntimeOptions(threads=1))
    src, hyps = _exact_tokens(translator, lines)
    values = force_decode(translator, src, [h.tokens for h in hyps])
    for row, hyp in zip(values, hyps, strict=True):
        assert len(row) == len(hyp.tokens) + 1  # every piece and eos
        assert sum(row) == pytest.approx(hyp.score, abs=1e-4)
        assert hyp.score == pytest.approx(hyp.log_prob)  # len-penalty 0: score = log-prob


@pytest.mark.parametrize("which", ["single", "ensemble"])
def test_cli_nbest_input_equals_translate_nbest(which, ckpt, ensemble, lines, tmp_path,
                                                monkeypatch, capsys):  # fmt: skip
    """translate --nbest text in, logprob figure out: equal wherever the text encodes back
    to the pieces the search chose (SentencePiece's own segmentation), aligned always."""
    paths = ensemble if which == "ensemble" else [ckpt]
    translator = load_translator(paths, RuntimeOptions(threads=1))
    results = list(translate_lines(translator, lines, NBEST))
    nbest = tmp_path / "nbest.txt"
    nbest.write_text("".join(format_nbest(i, hyps) for i, hyps in enumerate(results)))
    src = tmp_path / "src.de"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    models = [arg for path in paths for arg in ("-m", path)]
    code = call_main(monkeypatch, "logprob", *models, "-i", src, "--nbest-input", nbest,
                     "--threads", "1", "--max-tokens", "300", "--chunk-lines", "5")  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    given = nbest.read_text().splitlines()
    assert len(out) == len(given) == sum(len(hyps) for hyps in results)
    searched = _searched_hypotheses(translator, lines)
    same = 0
    for line, back in zip(given, out, strict=True):
        assert back.startswith(line + " ||| ")
        number, text, score = line.split(" ||| ")  # the text as written, trailing space too
        figure = float(back.rsplit("|||", 1)[1])
        if not lines[int(number)].strip():
            assert figure == 0.0 == float(score)  # a blank source: 0, as translate gives
        elif _round_trips(searched[int(number)], text, float(score)):
            assert figure == pytest.approx(float(score), abs=2e-4), line
            same += 1
    assert same >= 5  # a tiny model writes odd pieces, but many hypotheses round-trip
    # The n-best list from standard input (translate ... | logprob --nbest-input -).
    stdin = nbest.read_bytes()
    code = call_main(monkeypatch, "logprob", *models, "-i", src, "--nbest-input", "-",
                     "--threads", "1", "--max-tokens", "300", "--chunk-lines", "5",
                     stdin=stdin)  # fmt: skip
    assert code == 0 and capsys.readouterr().out.splitlines() == out


class _Searched(NamedTuple):
    text: str  # as translate writes it
    score: float
    round_trips: bool  # the text encodes back to exactly the pieces the search scored


def _searched_hypotheses(translator, lines) -> dict[int, list[_Searched]]:
    """The search's own hypotheses per non-blank line number. Only those whose text encodes
    back to their pieces can be compared with logprob, which scores the text's own
    segmentation: two hypotheses can differ in pieces and not in text (a trailing "▁"
    piece decodes to a trailing space, which SentencePiece's normalization drops again)."""
    tok = translator.tgt_tokenizer
    _, hyps = _exact_tokens(translator, lines)
    texts = tok.decode([h.tokens for h in hyps])
    numbers = [i for i, line in enumerate(lines) if line.strip() for _ in range(NBEST.nbest)]
    searched: dict[int, list[_Searched]] = {}
    for number, text, pieces, hyp in zip(numbers, texts, tok.encode(texts), hyps, strict=True):
        searched.setdefault(number, []).append(_Searched(text, hyp.score, pieces == hyp.tokens))
    return searched


def _round_trips(searched: list[_Searched], text: str, score: float) -> bool:
    """Whether translate's hypothesis (`text`, `score`) is a round-tripping one of the
    search's: matched by text and score, not by rank, so near ties that come out in
    another order under another batching still match."""
    matches = [s for s in searched if s.text == text and abs(s.score - score) < 1e-3]
    assert matches, f"translate wrote {text!r} ({score}), which the search did not find"
    return matches[0].round_trips


def test_files_tsv_and_options_agree(ckpt, lines, tmp_path, monkeypatch, capsys):
    """-i/-r files, a TSV on stdin and -o give the same figures, one line per line in;
    --per-token lists every piece and eos; --normalize is their mean."""
    targets = [line.lower() for line in lines]
    targets[2] = ""  # an empty target under a real source: eos alone
    src, tgt = tmp_path / "src.de", tmp_path / "tgt.de"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tgt.write_text("\n".join(targets) + "\n", encoding="utf-8")
    fast = ("-m", ckpt, "--threads", "1")

    def run(*args, stdin=None):
        assert call_main(monkeypatch, "logprob", *fast, *args, stdin=stdin) == 0
        return capsys.readouterr().out.splitlines()

    totals = run("-i", src, "-r", tgt)
    tsv = "".join(f"{s}\t{t}\n" for s, t in zip(lines, targets, strict=True))
    assert run(stdin=tsv.encode()) == totals
    assert run("-i", src, "-r", tgt, "-o", tmp_path / "out.txt") == []
    assert (tmp_path / "out.txt").read_text().splitlines() == totals
    per_token = run("-i", src, "-r", tgt, "--per-token", "--max-tokens", "50", "--batch-size", "2")
    means = run("-i", src, "-r", tgt, "--normalize", "--chunk-lines", "3")
    assert len(totals) == len(per_token) == len(means) == len(lines)
    translator = load_translator([ckpt], RuntimeOptions(threads=1))
    for line, target, total, pieces, mean in zip(lines, targets, totals, per_token, means,
                                                 strict=True):  # fmt: skip
        if not line.strip():
            assert (total, pieces, mean) == ("0.0000", "", "0.0000")
            continue
        values = [float(v) for v in pieces.split()]
        room = translator.max_src_len - 2  # a target is cut as the search's length limit
        n_pieces = min(len(translator.tgt_tokenizer.encode([target])[0]), room)
        assert len(values) == n_pieces + 1 and all(v <= 0 for v in values)
        assert float(total) == pytest.approx(sum(values), abs=1e-3)
        assert float(mean) == pytest.approx(float(total) / len(values), abs=1e-4)
    assert len(per_token[2].split()) == 1  # the empty target: eos alone


def test_batching_changes_nothing(ckpt, lines):
    translator = load_translator([ckpt], RuntimeOptions(threads=1))
    pairs = [(line, line[::-1]) for line in lines]
    big = list(score_pairs(translator, pairs))
    small = list(score_pairs(translator, pairs, BatchOptions(max_tokens=1, chunk_lines=2)))
    assert len(big) == len(small) == len(lines)
    for a, b in zip(big, small, strict=True):
        assert a == pytest.approx(b, abs=1e-4)
        assert all(math.isfinite(v) for v in a)
    # Streaming: results come a chunk at a time from an endless input.
    endless = itertools.cycle(pairs)
    first = list(itertools.islice(score_pairs(translator, endless, BatchOptions(chunk_lines=4)), 6))
    assert len(first) == 6
    for a, b in zip(first, big[:6], strict=True):
        assert a == pytest.approx(b, abs=1e-4)


def test_user_errors_are_one_line(ckpt, tmp_path, monkeypatch, capsys):
    src, short, tsv, nbest = (tmp_path / name for name in ("s", "short", "tsv", "nbest"))
    src.write_text("ein Hund\nzwei Katzen\n", encoding="utf-8")
    short.write_text("a dog\n", encoding="utf-8")
    tsv.write_text("ein Hund\ta dog\nno tab here\n", encoding="utf-8")
    nbest.write_text("0 ||| a dog ||| -1.0\n2 ||| cats ||| -2.0\n", encoding="utf-8")
    cases = [
        (["-i", src, "-r", short], f"{short} has 1 lines but {src} has more"),
        (["-i", tsv], f"{tsv} line 2 has no tab; expected source<TAB>target"),
        (["-i", src, "--nbest-input", nbest], "is for sentence 2, but the source has 2 lines"),
        (["--nbest-input", nbest], "--nbest-input needs the sources"),
        (["-i", src, "-r", short, "--per-token", "--normalize"], "exclude each other"),
        (["-i", tmp_path / "nope", "-r", short], "input file not found"),
    ]
    for args, message in cases:
        code = call_main(monkeypatch, "logprob", "-m", ckpt, "--threads", "1", *args)
        err = capsys.readouterr().err
        assert code == 1 and message in err, err
        assert "Traceback" not in err
    # Nothing under -o's name when a line fails half-way.
    out = tmp_path / "out.txt"
    assert call_main(monkeypatch, "logprob", "-m", ckpt, "-i", tsv, "-o", out) == 1
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["s", "short", "tsv", "nbest"]
    )
