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
from mtkit.translate.stream import RuntimeOptions, load_translator, translate_lines
from mtkit.translate.terms import Glossary

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BEAM = SearchOptions(beam_size=4)
# Per line: the phrases of the tests below. One piece, several pieces, a phrase twice,
# two phrases sharing their first pieces, a phrase inside another, and none.
PHRASES = [
    ["Hund"],
    [],
    ["rote Mütze", "Fahrrad"],
    [],
    ["Katze", "Katze"],
    ["ein Mann", "ein Hund"],
    [],
    ["Mann", "ein Mann"],
    [],
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


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_translate_lines_holds_the_phrases(ckpt, lines, quantize):
    translator = load_translator([ckpt], RuntimeOptions(threads=1, quantize=quantize))
    plain = _texts(translate_lines(translator, lines, BEAM))
    held = _texts(translate_lines(translator, lines, BEAM, constraints=PHRASES))
    for per, free, bound in zip(PHRASES, plain, held, strict=True):
        assert all(p in bound for p in per) if per else bound == free


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
