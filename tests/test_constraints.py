"""Constrained beam search (mtkit.constraints) and where constraints come from
(mtkit.translate.terms): every phrase appears, unconstrained lines of the same batch are
untouched, ensembles, shortlists, int8, n-best, the length limit, glossaries, bad files.

Uses the tiny trained checkpoints of test_search.py (a copy task on German text).
"""

from __future__ import annotations

import gzip
import logging
import random
from pathlib import Path

import pytest
import torch
from test_search import tiny_checkpoint

from mtkit.constraints import Constraints, build_automaton
from mtkit.errors import ConfigError, DataError
from mtkit.search import SearchOptions, search
from mtkit.translate.stream import Decoding, RuntimeOptions, load_translator, translate_lines
from mtkit.translate.terms import ConstraintOptions, Glossary, words

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BEAM = SearchOptions(beam_size=4)
# Per line: the phrases of the tests below. One piece, several pieces, a phrase twice,
# two phrases sharing their first pieces, a phrase inside another, a word that begins
# another ("Kind" and "Kinder": as whole words, "Kinder" does not hold "Kind"), none.
PHRASES = [
    ["Hund"],
    [],
    ["rote Mütze", "Fahrrad"],
    [],
    ["Katze", "Katze"],
    ["ein Mann", "ein Hund"],
    [],
    ["Mann", "ein Mann"],
    ["Kinder", "Kind"],
    ["spielt Fußball"],
]


@pytest.fixture(scope="module")
def ckpt(multi30k) -> Path:
    return tiny_checkpoint("transformer", multi30k)


@pytest.fixture(scope="module")
def translator(ckpt):
    return load_translator([ckpt], RuntimeOptions(threads=1))


@pytest.fixture(scope="module")
def lines(multi30k) -> list[str]:
    with gzip.open(multi30k / "val.de.gz", "rt", encoding="utf-8") as file:
        return [next(file).strip() for _ in range(len(PHRASES))]


def _src(translator, lines: list[str]):
    from mtkit.train.batching import pad_rows

    eos = translator.src_tokenizer.eos_id
    return pad_rows([ids[:30] + [eos] for ids in translator.src_tokenizer.encode(lines)], 0)


def _ids(translator, per_line) -> list[list[list[int]]]:
    return [translator.tgt_tokenizer.encode(per) if per else [] for per in per_line]


def _occurrences(tokens: list[int], phrase: list[int]) -> int:
    n = len(phrase)
    return sum(tokens[i : i + n] == phrase for i in range(len(tokens) - n + 1))


def _holds(tokens: list[int], phrases: list[list[int]]) -> bool:
    need: dict[tuple[int, ...], int] = {}
    for p in phrases:
        need[tuple(p)] = need.get(tuple(p), 0) + 1
    return all(_occurrences(tokens, list(p)) >= n for p, n in need.items())


# -- the automaton --------------------------------------------------------------------


def _walk(automaton, tokens: list[int]) -> list[int]:
    node, counts = 0, [0] * len(automaton.need)
    column = {t: c for c, t in enumerate(automaton.tokens)}
    for token in tokens:
        node = automaton.goto[node][column.get(token, len(automaton.tokens))]
        counts = [c + e for c, e in zip(counts, automaton.emits[node], strict=True)]
    return counts


def test_automaton_counts_every_occurrence_of_every_phrase():
    """Against counting by brute force, on random phrases and outputs over 3 ids: shared
    prefixes, phrases inside phrases, overlaps and restarts inside a phrase."""
    rng = random.Random(0)
    for _ in range(3000):
        phrases = [[rng.randint(1, 3) for _ in range(rng.randint(1, 3))] for _ in range(3)]
        output = [rng.randint(0, 3) for _ in range(rng.randint(0, 10))]
        automaton = build_automaton(phrases)
        distinct = list(dict.fromkeys(tuple(p) for p in phrases))
        expected = [_occurrences(output, list(p)) for p in distinct]
        assert _walk(automaton, output) == expected, (phrases, output)
        assert automaton.need == [phrases.count(list(p)) for p in distinct]


# -- the search -------------------------------------------------------------------------


def test_every_phrase_appears_and_other_lines_are_untouched(translator, lines):
    model, tok = translator.models, translator.tgt_tokenizer
    src, phrases = _src(translator, lines), _ids(translator, PHRASES)
    plain = search(model, src, BEAM)
    constraints = Constraints(phrases)
    held = search(model, src, BEAM, constraints=constraints)
    assert constraints.dropped == []
    for per, (free,), (bound,), text in zip(phrases, plain, held, PHRASES, strict=True):
        if per:
            assert _holds(bound.tokens, per), (text, tok.decode([bound.tokens]))
            decoded = tok.decode([bound.tokens])[0]
            assert all(p in decoded for p in text)
        else:  # the same tokens as without constraints, in the same batch
            assert bound.tokens == free.tokens
            assert bound.score == pytest.approx(free.score, abs=1e-5)


def test_every_nbest_hypothesis_holds_the_phrases(translator, lines):
    src, phrases = _src(translator, lines[:6]), _ids(translator, PHRASES[:6])
    options = SearchOptions(beam_size=5, nbest=3)
    for per, hyps in zip(
        phrases,
        search(translator.models, src, options, constraints=Constraints(phrases)),
        strict=True,
    ):
        assert len(hyps) == 3
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert all(_holds(h.tokens, per) for h in hyps)


def test_ensemble_holds_the_phrases(translator, lines, multi30k):
    from mtkit.checkpoint import load_checkpoint, model_from_checkpoint

    rnn = model_from_checkpoint(load_checkpoint(tiny_checkpoint("rnn", multi30k)))
    src, phrases = _src(translator, lines), _ids(translator, PHRASES)
    models = [translator.models[0], rnn]
    plain = search(models, src, BEAM)
    held = search(models, src, BEAM, constraints=Constraints(phrases))
    for per, (free,), (bound,) in zip(phrases, plain, held, strict=True):
        assert _holds(bound.tokens, per) if per else bound.tokens == free.tokens


def test_a_shortlist_allows_the_phrases_pieces(translator, lines):
    src, phrases = _src(translator, lines), _ids(translator, PHRASES)
    wanted = {i for per in phrases for p in per for i in p}
    vocab = torch.tensor(sorted(set(range(4)) | set(range(40, 120)) - wanted))
    held = search(translator.models, src, BEAM, vocab=vocab, constraints=Constraints(phrases))
    for per, (bound,) in zip(phrases, held, strict=True):
        assert _holds(bound.tokens, per)


def test_phrases_longer_than_the_limit_are_dropped_for_that_line(translator, lines):
    src = _src(translator, lines[:3])
    options = SearchOptions(beam_size=4, max_len_a=0.0, max_len_b=6)
    phrases = _ids(translator, [["Hund"], [], ["Hund " * 8]])
    assert sum(map(len, phrases[2])) > 6
    constraints = Constraints(phrases)
    held = search(translator.models, src, options, constraints=constraints)
    plain = search(translator.models, src, options)
    assert constraints.dropped == [2]
    assert held[2][0].tokens == plain[2][0].tokens
    assert _holds(held[0][0].tokens, phrases[0])


def test_a_phrase_that_just_fits_the_limit_fills_it(translator, lines):
    """Every step is needed for the phrase: the search is held to it from the start."""
    phrase = _ids(translator, [["Hund Katze Mann"]])[0]
    limit = sum(map(len, phrase))
    options = SearchOptions(beam_size=3, max_len_a=0.0, max_len_b=limit)
    (hyp,), *_ = search(
        translator.models, _src(translator, lines[:1]), options, constraints=Constraints([phrase])
    )
    assert hyp.tokens == phrase[0]


@pytest.mark.parametrize("options", [SearchOptions(beam_size=1), SearchOptions(sampling=True)])
def test_greedy_and_sampling_are_refused(translator, lines, options):
    with pytest.raises(ConfigError, match="beam of 2 or more"):
        search(
            translator.models,
            _src(translator, lines[:1]),
            options,
            constraints=Constraints([[[5]]]),
        )


# -- translate_lines: text in, text out ------------------------------------------------------


def _texts(results) -> list[str]:
    return [hyps[0][0] for hyps in results]


def _whole_words(phrase: str, text: str) -> int:
    """How often `phrase` stands in `text` as whole words."""
    wanted, found = words(phrase), words(text)
    n = len(wanted)
    return sum(found[i : i + n] == wanted for i in range(len(found) - n + 1))


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_translate_lines_holds_the_phrases_as_whole_words(ckpt, lines, quantize):
    """translate_lines adds the rule that a phrase ends a word: the id after it never
    goes on with the word ("Hund" is not met by "Hunde"). int8 quantizes a batch's
    activations together, so there a line's output depends on which rows are still in
    the batch, constraints or not (16 of 40 lines differ alone and batched)."""
    translator = load_translator([ckpt], RuntimeOptions(threads=1, quantize=quantize))
    plain = _texts(translate_lines(translator, lines, BEAM))
    held = _texts(translate_lines(translator, lines, BEAM, constraints=PHRASES))
    for per, free, bound in zip(PHRASES, plain, held, strict=True):
        if not per and quantize == "none":
            assert bound == free
        for phrase in per:
            assert _whole_words(phrase, bound) >= per.count(phrase), (phrase, bound)


def test_translate_lines_warns_for_phrases_over_the_limit(translator, lines, caplog):
    options = SearchOptions(beam_size=3, max_len_a=0.0, max_len_b=5)
    with caplog.at_level(logging.WARNING):
        held = _texts(
            translate_lines(translator, lines[:2], options, constraints=[["Hund " * 9], []])
        )
    assert held == _texts(translate_lines(translator, lines[:2], options))
    assert "line 1: its constraints do not fit the length limit" in caplog.text


def test_a_phrase_with_unknown_pieces_is_refused(translator, lines):
    with pytest.raises(DataError, match=r"line 2: the target phrase '☃' .*<unk>"):
        list(translate_lines(translator, lines[:2], BEAM, constraints=[[], ["☃"]]))


# -- glossaries ---------------------------------------------------------------------------


def _glossary(tmp_path, text: str, ignore_case: bool = False) -> Glossary:
    path = tmp_path / "glossary.tsv"
    path.write_text(text, encoding="utf-8")
    return Glossary.load(path, ignore_case)


def test_glossary_matches_whole_words_longest_first_once_each(tmp_path):
    glossary = _glossary(tmp_path, "Hund\tdog\nroten Hut\tred hat\nHut\that\nNew York\tNew York\n")
    assert glossary.targets("Der Hund und der Hund.") == ["dog"]
    assert glossary.targets("Hunde und Hundehütte") == []  # whole words only
    assert glossary.targets("Ein Mann mit einem roten Hut, ein Hut.") == ["red hat", "hat"]
    assert glossary.targets("nach New   York") == ["New York"]
    assert glossary.targets("der hund") == []  # case matters by default
    assert (glossary.lines, glossary.with_terms, glossary.terms) == (5, 3, 4)


def test_glossary_ignore_case(tmp_path):
    glossary = _glossary(tmp_path, "Hund\tdog\n", ignore_case=True)
    assert glossary.targets("DER HUND schläft") == ["dog"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("Hund\tdog\nKatze\n", "line 2 is not `source term<TAB>target term`"),
        ("Hund\tdog\tchien\n", "line 1 is not"),
        ("Hund\t \n", "line 1 is not"),
        ("\n\n", "holds no terms"),
    ],
)
def test_bad_glossaries_say_which_line(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        _glossary(tmp_path, text)


def test_glossary_not_utf8(tmp_path):
    path = tmp_path / "glossary.tsv"
    path.write_bytes(b"Hund\tdog\n\xffKatze\tcat\n")
    with pytest.raises(DataError, match="line 2 is not valid UTF-8"):
        Glossary.load(path)


# -- the command line: files, jobs, shards ------------------------------------------------

FAST = ("--threads", "1", "--beam", "3")


@pytest.fixture
def run_cli(monkeypatch, capsysbinary):
    """`mtkit ARGS` in this process: (exit code, stdout, stderr) as text."""
    from conftest import call_main

    def run(*args):
        code = call_main(monkeypatch, *args)
        out, err = capsysbinary.readouterr()
        return code, out.decode("utf-8"), err.decode("utf-8")

    return run


@pytest.fixture
def files(tmp_path, lines):
    """The input (with an empty line) and its constraints file, one line per line."""
    source = tmp_path / "in.de"
    source.write_text("\n".join([*lines, ""]) + "\n", encoding="utf-8")
    constraints = tmp_path / "constraints.tsv"
    constraints.write_text("".join("\t".join(per) + "\n" for per in [*PHRASES, ["Hund"]]))
    return source, constraints


def _error_line(code: int, err: str, *fragments: str) -> None:
    assert code == 1
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_cli_constraints_file(run_cli, ckpt, files, tmp_path):
    source, constraints = files
    plain, held = tmp_path / "plain.txt", tmp_path / "held.txt"
    assert run_cli("translate", "-m", ckpt, *FAST, "-i", source, "-o", plain)[0] == 0
    code, _, err = run_cli(
        "translate", "-m", ckpt, *FAST, "-i", source, "-o", held, "--constraints", constraints
    )
    assert code == 0, err
    plain_lines, held_lines = plain.read_text().splitlines(), held.read_text().splitlines()
    assert len(held_lines) == len(PHRASES) + 1 and held_lines[-1] == ""  # blank stays blank
    for per, free, bound in zip(PHRASES, plain_lines, held_lines, strict=False):
        assert all(p in bound for p in per) if per else bound == free


def test_cli_shards_read_their_own_constraint_lines(run_cli, ckpt, files, tmp_path):
    source, constraints = files
    whole, split = tmp_path / "whole.txt", tmp_path / "split.txt"
    held = ("--constraints", constraints)
    assert run_cli("translate", "-m", ckpt, *FAST, "-i", source, "-o", whole, *held)[0] == 0
    for k in (1, 2):
        args = ("-i", source, "-o", split, "--shard", f"{k}/2", *held)
        assert run_cli("translate", "-m", ckpt, *FAST, *args)[0] == 0
    assert run_cli("translate-merge", "-o", split)[0] == 0
    assert split.read_text() == whole.read_text()


def test_a_job_records_the_constraints_files_checksum(ckpt, files):
    from mtkit.translate.shards import job_identity

    source, constraints = files
    decoding = Decoding(search=BEAM, constraints=ConstraintOptions(str(constraints)))
    before = job_identity([ckpt], source, decoding, None)["options"]["constraints"]
    constraints.write_text(constraints.read_text().replace("Hund", "Katze"))
    after = job_identity([ckpt], source, decoding, None)["options"]["constraints"]
    assert before["constraints"] != after["constraints"]
    assert "constraints" not in job_identity([ckpt], source, Decoding(), None)["options"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda text: text.rsplit("\n", 2)[0] + "\n", "has 10 lines and the input"),
        (lambda text: text + "Hund\n", "has 12 lines and the input"),
        (lambda text: text.encode() + b"\xff\n", "line 12 is not valid UTF-8"),
        (lambda text: text.replace("Fahrrad", "Fahrrad\t☃"), "line 3: the target phrase '☃'"),
    ],
    ids=["fewer-lines", "more-lines", "not-utf8", "unknown-pieces"],
)
def test_cli_bad_constraints_files_are_one_line(run_cli, ckpt, files, tmp_path, change, message):
    source, constraints = files
    changed = change(constraints.read_text())
    if isinstance(changed, bytes):
        constraints.write_bytes(changed)
    else:
        constraints.write_text(changed)
    out = tmp_path / "out.txt"
    args = ("-i", source, "-o", out, "--constraints", constraints)
    _error_line(*[run_cli("translate", "-m", ckpt, *FAST, *args)[i] for i in (0, 2)], message)
    assert not out.exists()


def test_cli_refuses_greedy_and_both_files(run_cli, ckpt, files):
    source, constraints = files
    code, _, err = run_cli(
        "translate", "-m", ckpt, "-i", source, "--beam", "1", "--constraints", constraints
    )
    _error_line(code, err, "beam of 2 or more")
    both = ("--constraints", constraints, "--terms", constraints)
    _error_line(
        *[run_cli("translate", "-m", ckpt, "-i", source, *both)[i] for i in (0, 2)], "one of"
    )


def test_cli_terms(run_cli, ckpt, lines, tmp_path):
    source = tmp_path / "in.de"
    source.write_text("Ein Hund läuft.\nZwei Männer.\nDer hund schläft.\n", encoding="utf-8")
    glossary = tmp_path / "glossary.tsv"
    glossary.write_text("Hund\tKatze\nMänner\tFrauen\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    args = ("-i", source, "-o", out, "--terms", glossary)
    code, _, err = run_cli("translate", "-m", ckpt, *FAST, *args)
    assert code == 0, err
    first, second, third = out.read_text().splitlines()
    assert "Katze" in first and "Frauen" in second
    assert "terms: 2 of 3 lines held glossary terms (2 terms in all)" in err
    code, _, err = run_cli("translate", "-m", ckpt, *FAST, *args, "--terms-ignore-case")
    assert code == 0, err
    assert "Katze" in out.read_text().splitlines()[2]
    glossary.write_text("Hund\t☃\n", encoding="utf-8")
    _error_line(*[run_cli("translate", "-m", ckpt, *FAST, *args)[i] for i in (0, 2)], "'☃'")
