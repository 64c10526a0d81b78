"""Importing NLLB-200 and M2M-100 models: mtkit computes what transformers computes.

Tiny random M2M100ForConditionalGeneration models are built with transformers
(tests/m2m100copy.py, shared fixtures in conftest.py): an NLLB tokenizer (current and
legacy_behaviour) and an M2M-100 one over a SentencePiece model trained on Multi30k,
saved as the hub lays them out, imported, and compared: where the language tokens go,
teacher-forced log-probabilities (1e-4), greedy output (token for token, over more than
100 sentences) and beam search.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import M2M100_LIMIT, records  # noqa: E402
from m2m100copy import encode, generate, lines  # noqa: E402

from mtkit.checkpoint import checkpoint_tokenizers, model_from_checkpoint  # noqa: E402
from mtkit.errors import ConfigError, DataError  # noqa: E402
from mtkit.interop.hf import hf_checkpoint  # noqa: E402
from mtkit.interop.m2m100 import M2M100_CODES, m2m100_checkpoint  # noqa: E402
from mtkit.languages import direction_of, languages_of  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
# Language pairs the comparisons run, in the tests' names (the model's codes differ).
PAIRS = (("de", "en"), ("fr", "de"))


@pytest.fixture(scope="module")
def imported(hf_m2m100):
    """The checkpoint dict of the tiny model's directory, imported in memory."""
    return hf_checkpoint(hf_m2m100.directory)


@pytest.fixture(scope="module")
def sources(multi30k):
    """German lines the SentencePiece model did not see (some pieces unknown)."""
    return lines(multi30k, "de", 8, skip=2000)


def _code(hf, lang: str) -> str:
    return hf.codes[lang]


def _source_ids(ckpt, direction, texts) -> torch.Tensor:
    """mtkit's padded source batch: the checkpoint's tokenizer, the direction's tokens."""
    src_tok, _ = checkpoint_tokenizers(ckpt)
    eos, pad = ckpt["model_config"]["eos_id"], ckpt["model_config"]["pad_id"]
    ids = [direction.source(x, eos) for x in src_tok.encode(texts)]
    width = max(map(len, ids))
    return torch.tensor([x + [pad] * (width - len(x)) for x in ids])


# -- the checkpoint ----------------------------------------------------------------------


def test_m2m100_codes_are_transformers_own():
    from transformers.models.m2m_100.tokenization_m2m_100 import FAIRSEQ_LANGUAGE_CODES

    assert {k: v.split() for k, v in M2M100_CODES.items()} == FAIRSEQ_LANGUAGE_CODES


def test_imported_checkpoint_records_what_it_is(hf_m2m100, imported):
    cfg, langs = imported["model_config"], imported["languages"]
    assert cfg["pre_norm"] and cfg["positions"] == "fairseq" and cfg["scale_embeddings"]
    assert (cfg["pad_id"], cfg["bos_id"], cfg["eos_id"]) == (1, 2, 2)
    assert not cfg["final_logits_bias"] and "final_logits_bias" not in imported["model"]
    assert cfg["tgt_vocab_size"] == hf_m2m100.model.config.vocab_size
    assert imported["vocab"]["src"] == imported["vocab"]["tgt"]
    assert imported["vocab"]["src"][:4] == ["<s>", "<pad>", "</s>", "<unk>"]
    spm = (hf_m2m100.directory / "sentencepiece.bpe.model").read_bytes()
    assert imported["spm"] == {"src": spm, "tgt": spm}
    assert langs["scheme"] == ("m2m100" if hf_m2m100.style == "m2m100" else "nllb")
    assert langs["legacy"] == (hf_m2m100.style == "nllb-legacy")
    assert langs["default"] == {"src": None, "tgt": None} and langs["directions"] == []
    table = imported["vocab"]["tgt"]
    for lang in ("de", "en", "fr"):
        piece = langs["tokens"][_code(hf_m2m100, lang)]
        assert table.index(piece) == hf_m2m100.lang_id(lang)
    assert len(langs["tokens"]) == (100 if hf_m2m100.style == "m2m100" else 202)


def test_tokenization_and_language_tokens_are_where_transformers_puts_them(
    hf_m2m100, imported, multi30k
):
    """Source: [src] pieces </s> (NLLB legacy: pieces </s> [src]); target (labels):
    [tgt] pieces </s> (the decoder reads </s> [tgt] ..., as generate forces it)."""
    src_tok, tgt_tok = checkpoint_tokenizers(imported)
    eos = imported["model_config"]["eos_id"]
    for src, tgt in PAIRS:
        texts = lines(multi30k, src, 40, skip=2000)
        targets = lines(multi30k, tgt, 40, skip=2000)
        direction = direction_of(imported, _code(hf_m2m100, src), _code(hf_m2m100, tgt))
        batch = hf_m2m100.tokenizer
        batch.src_lang, batch.tgt_lang = _code(hf_m2m100, src), _code(hf_m2m100, tgt)
        ours = [direction.source(x, eos) for x in src_tok.encode(texts)]
        assert ours == batch(texts).input_ids
        labels = [direction.target(x) + [eos] for x in tgt_tok.encode(targets)]
        hf_labels = batch(text_target=targets).input_ids
        if hf_m2m100.style == "nllb-legacy":
            # Legacy labels are pieces </s> [tgt], which no decoder ever reads: generate
            # starts </s> [tgt] whatever the flag, and mtkit's targets follow generate.
            hf_labels = [[x[-1], *x[:-1]] for x in hf_labels]
        assert labels == hf_labels
        assert direction.target_prefix == (hf_m2m100.lang_id(tgt),)
        where = (direction.source_prefix, direction.source_suffix)
        expect = ((), (hf_m2m100.lang_id(src),))
        assert where == (expect if hf_m2m100.style == "nllb-legacy" else expect[::-1])
    assert any(src_tok.unk_id in x for x in ours)  # unknown pieces were met


def test_teacher_forced_log_probs_match(hf_m2m100, imported, multi30k):
    model = model_from_checkpoint(imported)
    _, tgt_tok = checkpoint_tokenizers(imported)
    texts, targets = lines(multi30k, "de", 16, skip=2000), lines(multi30k, "en", 16, skip=2000)
    direction = direction_of(imported, _code(hf_m2m100, "de"), _code(hf_m2m100, "en"))
    cfg = imported["model_config"]
    outs = [direction.target(x) + [cfg["eos_id"]] for x in tgt_tok.encode(targets)]
    width = max(map(len, outs))
    labels = torch.tensor([x + [cfg["pad_id"]] * (width - len(x)) for x in outs])
    tgt_in = torch.cat([torch.full((len(outs), 1), cfg["bos_id"]), labels[:, :-1]], 1)
    batch = encode(hf_m2m100, texts, "de", "en")
    with torch.no_grad():
        hf = hf_m2m100.model(**batch, decoder_input_ids=tgt_in).logits.log_softmax(-1)
        ours = model(_source_ids(imported, direction, texts), tgt_in).log_softmax(-1)
    real = labels != cfg["pad_id"]
    assert ours.shape == hf.shape
    assert (ours - hf)[real].abs().max().item() < 1e-4
    assert hf[real].std() > 0.5  # not a flat distribution, where anything would agree


# -- languages -----------------------------------------------------------------------------


def test_a_multilingual_model_needs_the_target_language(hf_m2m100, imported):
    with pytest.raises(ConfigError, match=r"translates into \d+ languages: give --tgt-lang"):
        direction_of(imported, _code(hf_m2m100, "de"), None)
    with pytest.raises(ConfigError, match=r"reads \d+ languages: give --src-lang"):
        direction_of(imported, None, _code(hf_m2m100, "en"))


def test_an_unknown_code_is_one_line_naming_close_codes(hf_m2m100, imported):
    wrong = "deu_latn" if hf_m2m100.style != "m2m100" else "dee"
    with pytest.raises(ConfigError) as error:
        direction_of(imported, wrong, _code(hf_m2m100, "en"))
    message = str(error.value)
    assert "\n" not in message and repr(wrong) in message
    assert _code(hf_m2m100, "de") in message and "mtkit inspect MODEL --langs" in message


def test_a_bilingual_model_refuses_another_pair():
    ckpt = {"langs": {"src": "de", "tgt": "en"}}
    assert direction_of(ckpt, None, None).source([5, 6], 3) == [5, 6, 3]
    assert direction_of(ckpt, "de", "en").target_prefix == ()
    with pytest.raises(ConfigError, match="de -> en only; --tgt-lang fr"):
        direction_of(ckpt, "de", "fr")


def test_the_languages_entry_round_trips(imported):
    languages = languages_of(imported)
    assert languages.to_dict() == imported["languages"]
    assert languages.codes == list(imported["languages"]["tokens"])


def test_inspect_lists_the_codes(imported, tmp_path):
    from mtkit.checkpoint import describe, save_checkpoint

    path = save_checkpoint(tmp_path / "m.pt", imported)
    assert describe(path, langs=True).splitlines() == list(imported["languages"]["tokens"])
    scheme = imported["languages"]["scheme"]
    assert f"languages: scheme={scheme}" in describe(path)


@pytest.mark.parametrize("hf_m2m100", ["m2m100"], indirect=True)
def test_the_command_line(hf_m2m100, many, tmp_path, monkeypatch, capsys):
    """import, inspect --langs, translate with and without the languages (one line)."""
    from conftest import call_main

    model = tmp_path / "m2m.pt"
    assert call_main(monkeypatch, "import", hf_m2m100.directory, "-o", model) == 0
    assert call_main(monkeypatch, "inspect", model, "--langs") == 0
    assert capsys.readouterr().out.split()[:3] == ["af", "am", "ar"]
    text = "\n".join(many["de"][:5]) + "\n"
    args = ["translate", "-m", model, "--beam", "2", "--src-lang", "de"]
    assert call_main(monkeypatch, *args, stdin=text.encode()) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "give --tgt-lang" in err
    assert call_main(monkeypatch, *args, "--tgt-lang", "xx", stdin=text.encode()) == 1
    assert "unknown language code 'xx'" in capsys.readouterr().err
    assert call_main(monkeypatch, *args, "--tgt-lang", "en", stdin=text.encode()) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5


# -- what the import refuses ------------------------------------------------------------


@pytest.mark.parametrize("hf_m2m100", ["nllb"], indirect=True)
def test_foreign_or_incomplete_directories_are_one_line(hf_m2m100, tmp_path):
    import json
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(hf_m2m100.directory, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(config | {"decoder_ffn_dim": 8}))
    with pytest.raises(ConfigError, match="decoder_ffn_dim=8"):
        m2m100_checkpoint(copy)
    (copy / "config.json").write_text(json.dumps(config | {"model_type": "bart"}))
    with pytest.raises(ConfigError, match="model_type 'bart'"):
        hf_checkpoint(copy)
    (copy / "config.json").write_text(json.dumps(config))
    (copy / "sentencepiece.bpe.model").unlink()
    with pytest.raises(DataError, match=r"sentencepiece\.bpe\.model not found"):
        m2m100_checkpoint(copy)


# -- search --------------------------------------------------------------------------------

SEARCH_LINES = 120  # sentences each comparison decodes


@pytest.fixture(scope="module")
def many(multi30k):
    """{lang: lines} of the validation set: more than 100 sentences to decode."""
    return {lang: lines(multi30k, lang, SEARCH_LINES, split="val") for lang in ("de", "fr")}


def _search(ckpt, direction, texts, **options):
    from mtkit.search import SearchOptions, search

    options = SearchOptions(max_len_a=0.0, max_len_b=M2M100_LIMIT, **options)
    src = _source_ids(ckpt, direction, texts)
    hyps = search(model_from_checkpoint(ckpt), src, options, prefix=direction.target_prefix)
    return [per[0].tokens for per in hyps]


@pytest.mark.parametrize("pair", PAIRS)
def test_greedy_equals_generate_on_every_sentence(hf_m2m100, imported, many, pair):
    src, tgt = pair
    direction = direction_of(imported, _code(hf_m2m100, src), _code(hf_m2m100, tgt))
    texts = many[src]
    hf = generate(hf_m2m100, texts, src, tgt, M2M100_LIMIT, num_beams=1)
    ours = _search(imported, direction, texts, beam_size=1)
    assert len(ours) >= 100 and ours == hf
    ended = sum(len(x) < M2M100_LIMIT for x in hf)
    assert 0 < ended < len(hf)  # both the early end and the length limit are compared
    assert len({tuple(x) for x in hf}) > len(hf) // 2  # not one output for every input


@pytest.mark.parametrize(
    "hf_options, ours",
    [
        # Raw log-probability, stop when K hypotheses have ended (fairseq's rule).
        (dict(length_penalty=0.0, early_stopping=True), dict(len_penalty=0.0, stop="count")),
        # Divide by |Y| (the forced language token and eos counted, as transformers does).
        (dict(length_penalty=1.0, early_stopping=True), dict(len_norm=True, stop="count")),
    ],
)
def test_beam_equals_generate_on_most_sentences(hf_m2m100, imported, many, hf_options, ours):
    """Beam 4 over 120 sentences. Where transformers' best ended before the length limit
    the two agree on every sentence. At the limit transformers' forced eos scores log 1
    = 0 while mtkit (as fairseq) keeps the model's eos log-probability: there each
    search's best is the better of the two under its own rule (checked by rescoring)."""
    direction = direction_of(imported, _code(hf_m2m100, "de"), _code(hf_m2m100, "en"))
    texts = many["de"]
    hf = generate(hf_m2m100, texts, "de", "en", M2M100_LIMIT, num_beams=4, **hf_options)
    found = _search(imported, direction, texts, beam_size=4, **ours)
    pairs = list(zip(found, hf, strict=True))
    early = [(a, b) for a, b in pairs if len(b) < M2M100_LIMIT]
    assert len(early) >= 60 and all(a == b for a, b in early)
    differ = [i for i, (a, b) in enumerate(pairs) if a != b]
    assert len(differ) <= len(pairs) // 3
    model, power = model_from_checkpoint(imported), hf_options["length_penalty"]
    src = _source_ids(imported, direction, texts)
    for i in differ:
        mine, theirs = (_rescore(model, src[i], hyp, direction) for hyp in pairs[i])
        assert _at_limit(theirs, power) >= _at_limit(mine, power) - 1e-4
        assert _own(mine, power) >= _own(theirs, power) - 1e-4


def test_translate_applies_the_languages_and_refuses_without_them(
    hf_m2m100, imported, many, tmp_path
):
    """`translate` of the checkpoint and of the directory itself (imported in memory)
    writes what transformers' greedy output decodes to; no --tgt-lang is one line."""
    from mtkit.checkpoint import save_checkpoint
    from mtkit.search import SearchOptions
    from mtkit.translate.stream import RuntimeOptions, load_translator, translate_lines

    path = save_checkpoint(tmp_path / "m.pt", imported)
    src, tgt = _code(hf_m2m100, "fr"), _code(hf_m2m100, "de")
    with pytest.raises(ConfigError, match="give --tgt-lang") as error:
        load_translator([path], RuntimeOptions(src_lang=src))
    assert "\n" not in str(error.value)
    texts = many["fr"][:40]
    hf = generate(hf_m2m100, texts, "fr", "de", M2M100_LIMIT, num_beams=1)
    options = SearchOptions(beam_size=1, max_len_a=0.0, max_len_b=M2M100_LIMIT)
    for model in (path, hf_m2m100.directory):
        translator = load_translator([model], RuntimeOptions(src_lang=src, tgt_lang=tgt))
        ours = [per[0][0] for per in translate_lines(translator, texts, options)]
        assert ours == translator.tgt_tokenizer.decode(hf)


def test_logprob_scores_the_target_after_the_forced_language_token(
    hf_m2m100, imported, many, multi30k
):
    from mtkit.translate.logprob import score_pairs
    from mtkit.translate.stream import RuntimeOptions, load_translator

    texts, targets = many["de"][:24], lines(multi30k, "en", 24, split="val")
    languages = RuntimeOptions(src_lang=_code(hf_m2m100, "de"), tgt_lang=_code(hf_m2m100, "en"))
    translator = load_translator([hf_m2m100.directory], languages, command="logprob")
    ours = list(score_pairs(translator, list(zip(texts, targets, strict=True))))
    batch = encode(hf_m2m100, texts, "de", "en", targets=targets)
    labels = batch.pop("labels")
    if hf_m2m100.style == "nllb-legacy":  # pieces </s> [tgt]: as generate reads it
        labels = torch.stack([_legacy(row) for row in labels])
    tgt_in = torch.cat([torch.full((len(texts), 1), 2), labels[:, :-1]], 1)
    with torch.no_grad():
        lprobs = hf_m2m100.model(**batch, decoder_input_ids=tgt_in).logits.log_softmax(-1)
    gold = lprobs.gather(-1, labels[..., None]).squeeze(-1)
    for row, values, label in zip(gold, ours, labels, strict=True):
        n = int((label != 1).sum())
        assert len(values) == n - 1  # the forced language token is not scored
        assert max(abs(a - b) for a, b in zip(values, row[1:n].tolist(), strict=True)) < 1e-4


def _legacy(row):
    """A padded legacy label row (pieces </s> [tgt] <pad>...) as [tgt] pieces </s> <pad>..."""
    n = int((row != 1).sum())
    return torch.cat([row[n - 1 : n], row[: n - 1], row[n:]])


def _rescore(model, src, tokens, direction) -> list[float]:
    """The log-probabilities of tokens + eos (after the forced prefix) given src [S]."""
    prefix = list(direction.target_prefix)
    cfg = model.config
    tgt_in = torch.tensor([[cfg.bos_id, *prefix, *tokens]])
    with torch.no_grad():
        lprobs = model(src[None], tgt_in).log_softmax(-1)[0]
    out = [*prefix, *tokens, cfg.eos_id]
    return [lprobs[t, y].item() for t, y in enumerate(out)][len(prefix) :]


def _own(lprobs: list[float], power: float) -> float:
    """mtkit's score: eos keeps its log-probability, |Y| counts the forced token."""
    return sum(lprobs) / (len(lprobs) + 1) ** power


def _at_limit(lprobs: list[float], power: float) -> float:
    """transformers' score: an eos forced at the length limit scores 0."""
    tokens = len(lprobs) - 1
    total = sum(lprobs[:-1]) + (0.0 if tokens == M2M100_LIMIT else lprobs[-1])
    return total / (len(lprobs) + 1) ** power


# -- fine-tuning ---------------------------------------------------------------------------


def _prepared(directory, multi30k, pair=("de", "en"), n=120):
    """A prepared corpus: n training pairs, 20 validation pairs, its manifest."""
    import json

    directory.mkdir(parents=True)
    for lang in pair:
        train_lines = lines(multi30k, lang, n, skip=3000)
        (directory / f"train.{lang}").write_text("\n".join(train_lines) + "\n")
        (directory / f"valid.{lang}").write_text("\n".join(lines(multi30k, lang, 20, split="val")))
    (directory / "manifest.json").write_text(json.dumps({"src": pair[0], "tgt": pair[1]}))
    return directory


def _finetune(ckpt_path, data, out, **changes):
    from conftest import tiny_train_config

    from mtkit.train import train

    values = dict(max_tokens=800, max_updates=2, warmup=1, lr=1e-3, valid_bleu_sentences=20)
    values |= dict(init_from=str(ckpt_path), model_overrides={}, valid_every=2)
    train(tiny_train_config(data, out, **(values | changes)))
    return out / "checkpoint_last.pt"


@pytest.fixture(scope="module")
def base(hf_m2m100, imported, tmp_path_factory, multi30k):
    """The imported checkpoint as a file, and a prepared de-en corpus."""
    from mtkit.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("finetune")
    return {
        "ckpt": save_checkpoint(root / "base.pt", imported),
        "data": _prepared(root / "de-en", multi30k),
        "root": root,
    }


def _chrf(model, texts, refs, src, tgt) -> float:
    import sacrebleu

    from mtkit.search import SearchOptions
    from mtkit.translate.stream import RuntimeOptions, load_translator, translate_lines

    translator = load_translator([model], RuntimeOptions(src_lang=src, tgt_lang=tgt))
    out = [per[0][0] for per in translate_lines(translator, texts, SearchOptions(beam_size=1))]
    return sacrebleu.corpus_chrf(out, [refs]).score


@pytest.mark.parametrize("hf_m2m100", ["nllb", "m2m100"], indirect=True)
def test_finetuning_validates_into_the_target_language_and_remembers_it(hf_m2m100, base, multi30k):
    """Validation decodes into --tgt-lang: its chrF before the first update is translate's
    into that language (and not into another); the checkpoint then translates de -> en
    with no flags. M2M-100's codes are the data's own (de, en): no flags there either."""
    from mtkit.checkpoint import load_checkpoint

    de, en, fr = (_code(hf_m2m100, lang) for lang in ("de", "en", "fr"))
    flags = dict(src_lang=de, tgt_lang=en) if hf_m2m100.style == "nllb" else {}
    out = base["root"] / f"ft-{hf_m2m100.style}"
    last = _finetune(base["ckpt"], base["data"], out, **flags)
    first = [r for r in records(out, "valid") if r["step"] == 0][0]
    texts, refs = lines(multi30k, "de", 20, split="val"), lines(multi30k, "en", 20, split="val")
    assert first["valid_chrf"] == pytest.approx(_chrf(base["ckpt"], texts, refs, de, en))
    assert first["valid_chrf"] != pytest.approx(_chrf(base["ckpt"], texts, refs, de, fr))
    tuned = load_checkpoint(last)
    assert tuned["languages"]["default"] == {"src": de, "tgt": en}
    assert tuned["langs"] == {"src": de, "tgt": en} and not tuned["languages"]["legacy"]
    assert _chrf(last, texts, refs, None, None) == _chrf(last, texts, refs, de, en)


@pytest.mark.parametrize("hf_m2m100", ["nllb"], indirect=True)
def test_add_lang_adds_a_token_that_trains(hf_m2m100, base):
    """--add-lang: two new languages take NLLB's two spare rows, a third a new row; each
    starts from its LIKE's embedding (or the languages' mean), trains, and inspect lists it."""
    from mtkit.checkpoint import describe, load_checkpoint
    from mtkit.train.config import TrainConfig
    from mtkit.train.setup import load_init

    added = ("hsb_Latn:deu_Latn", "dsb_Latn:deu_Latn", "csb_Latn")
    config = TrainConfig(init_from=str(base["ckpt"]), add_lang=added)
    init = load_init(config)
    table, start = init["tokenizers"][1].vocab, init["model"]["tgt_embed.weight"]
    old = load_checkpoint(base["ckpt"])
    assert len(table) == len(old["vocab"]["tgt"]) + 1  # two spare rows, then one more
    hsb, deu = table.index("hsb_Latn"), table.index("deu_Latn")
    assert torch.equal(start[hsb], start[deu])
    out = base["root"] / "ft-hsb"
    last = _finetune(base["ckpt"], base["data"], out, add_lang=added, src_lang="hsb_Latn",
                     tgt_lang="eng_Latn")  # fmt: skip
    tuned = load_checkpoint(last)
    assert not torch.equal(tuned["model"]["tgt_embed.weight"][hsb], start[hsb])  # it trained
    assert tuned["model_config"]["tgt_vocab_size"] == len(table)
    codes = describe(last, langs=True).splitlines()
    assert {"hsb_Latn", "dsb_Latn", "csb_Latn"} <= set(codes)
    assert tuned["languages"]["default"] == {"src": "hsb_Latn", "tgt": "eng_Latn"}


@pytest.mark.parametrize("hf_m2m100", ["nllb"], indirect=True)
def test_finetuning_mistakes_are_one_line(hf_m2m100, base):
    from mtkit.train.config import TrainConfig, check

    ckpt, data = base["ckpt"], base["data"]
    with pytest.raises(ConfigError, match="give --tgt-lang") as error:
        _finetune(ckpt, data, base["root"] / "no-flags")
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="knows deu_Latn already"):
        _finetune(ckpt, data, base["root"] / "known", add_lang=("deu_Latn",))
    with pytest.raises(ConfigError, match="unknown language code 'xxx_Latn'"):
        _finetune(ckpt, data, base["root"] / "like", add_lang=("hsb_Latn:xxx_Latn",))
    with pytest.raises(ConfigError, match="a run from scratch takes --src/--tgt"):
        check(TrainConfig(data=str(data), out="x", spm="s.model", tgt_lang="eng_Latn"))


# -- out again: CTranslate2 ----------------------------------------------------------------


@pytest.mark.parametrize("hf_m2m100", ["nllb", "m2m100"], indirect=True)
def test_ctranslate2_export_translates_alike(hf_m2m100, imported, many, tmp_path):
    """The CTranslate2 export of an imported model, given the source's language token and
    the target's as target_prefix (as CTranslate2's M2M-100 guide does): greedy output
    equals mtkit's on every sentence."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    from mtkit.checkpoint import save_checkpoint
    from mtkit.interop.ctranslate2 import export_ctranslate2

    src, tgt = _code(hf_m2m100, "de"), _code(hf_m2m100, "en")
    direction = direction_of(imported, src, tgt)
    texts = many["de"]
    ours = _search(imported, direction, texts, beam_size=1)
    out = export_ctranslate2(save_checkpoint(tmp_path / "m.pt", imported), tmp_path / "ct2")
    table = imported["vocab"]["tgt"]
    src_tok, _ = checkpoint_tokenizers(imported)
    lang = [table[i] for i in direction.source_prefix]
    pieces = [lang + [table[i] for i in ids] for ids in src_tok.encode(texts)]
    prefix = [[table[i] for i in direction.target_prefix]] * len(texts)
    translator = ctranslate2.Translator(str(out), device="cpu", intra_threads=1)
    results = translator.translate_batch(
        pieces, target_prefix=prefix, beam_size=1, max_decoding_length=M2M100_LIMIT + 1,
        suppress_sequences=[["<pad>"]],
    )  # fmt: skip
    index = {piece: i for i, piece in enumerate(table)}
    theirs = [[index[p] for p in r.hypotheses[0][1:]] for r in results]
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    assert same == len(texts), f"{same} of {len(texts)} equal"
