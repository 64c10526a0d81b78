"""Several corpora in one run: weights, per-epoch samples, exact resume, tags, and bad input.

Tiny models on real Multi30k slices; the sampling tests need no model at all.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import call_main, records, tiny_train_config

from mtkit.errors import ConfigError
from mtkit.train import TrainConfig, train
from mtkit.train.batching import encode_pairs
from mtkit.train.mix import Mix, parse_spec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def lines_of(path: Path, start: int, n: int) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as file:
        return [line.rstrip("\n") for i, line in enumerate(file) if start <= i < start + n]


def write_corpus(directory: Path, de: list, en: list, valid: bool, pair=("de", "en")) -> Path:
    directory.mkdir(parents=True)
    (directory / f"train.{pair[0]}").write_text("\n".join(de) + "\n", encoding="utf-8")
    (directory / f"train.{pair[1]}").write_text("\n".join(en) + "\n", encoding="utf-8")
    if valid:
        (directory / f"valid.{pair[0]}").write_text("\n".join(de[:20]) + "\n", encoding="utf-8")
        (directory / f"valid.{pair[1]}").write_text("\n".join(en[:20]) + "\n", encoding="utf-8")
    langs = {"src": pair[0], "tgt": pair[1]}
    (directory / "manifest.json").write_text(json.dumps({"langs": langs}), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def corpora(multi30k, tmp_path_factory) -> dict:
    """Two de-en corpora (the first with a valid split), a fr-en one, and a joint BPE
    trained by train-bpe (so it reserves <BT>), plus one trained without it."""
    import sentencepiece as spm

    from mtkit.tokenizer import SpmOptions, train_spm

    root = tmp_path_factory.mktemp("mix")
    de, en = (lines_of(multi30k / f"train.{lang}.gz", 0, 500) for lang in ("de", "en"))
    fr = lines_of(multi30k / "train.fr.gz", 0, 100)
    a = write_corpus(root / "a", de[:300], en[:300], valid=True)
    b = write_corpus(root / "b", de[300:], en[300:], valid=False)
    c = write_corpus(root / "c", fr, en[:100], valid=False, pair=("fr", "en"))
    (model,) = train_spm([a / "train.de", a / "train.en"], root / "spm", SpmOptions(vocab_size=500))
    # A model without the reserved piece, as an older train-bpe or another tool writes it.
    spm.SentencePieceTrainer.train(
        input=f"{a / 'train.de'},{a / 'train.en'}",
        model_prefix=str(root / "plain"),
        vocab_size=500,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        minloglevel=2,
    )
    return {"a": a, "b": b, "c": c, "spm": model, "plain_spm": root / "plain.model"}


def config(corpora, out: Path, data, **changes) -> TrainConfig:
    values = {"spm": str(corpora["spm"]), "max_tokens": 600, "valid_bleu_sentences": 4}
    return tiny_train_config(data, out, **(values | changes))


# -- the sample of an epoch -------------------------------------------------------------


def fake_pairs(n: int, tag: int):
    """n pairs whose every target sentence is 3 pieces of id `tag`."""
    return encode_pairs(
        [f"s{i}" for i in range(n)], ["t"] * n, lambda xs: [[5] for _ in xs],
        lambda xs: [[tag] * 3 for _ in xs],
    )  # fmt: skip


def test_each_epoch_holds_weight_times_each_corpus():
    specs = [parse_spec("big:0.25"), parse_spec("mid:1"), parse_spec("small:2.5")]
    counts = (4000, 1000, 400)
    mix = Mix(
        specs,
        [fake_pairs(n, 10 + c) for c, n in enumerate(counts)],
        max_len=64,
        max_tokens=256,
        seed=3,
    )
    assert mix.epoch_pairs() == [1000, 1000, 1000]
    seen_big = set()
    for epoch in (1, 2, 3):
        cut = mix.epoch(epoch)
        order = cut.batches.order
        corpus = np.searchsorted(mix.starts, order, side="right") - 1
        shares = np.bincount(corpus, minlength=3) / len(order)
        # Equal thirds by pairs, and (4 target tokens a pair everywhere) by tokens too.
        assert np.allclose(shares, 1 / 3, atol=0.01), shares
        tokens = cut.corpus_tokens.sum(0)
        assert np.allclose(tokens / tokens.sum(), 1 / 3, atol=0.01)
        assert tokens.sum() == cut.batches.tokens.sum() == 4 * len(order)
        # The 2.5 corpus: every pair twice, half of them a third time.
        small = np.bincount(order[corpus == 2] - mix.starts[2], minlength=400)
        assert set(np.unique(small)) == {2, 3} and (small == 3).sum() == 200
        big = order[corpus == 0]
        assert len(set(big.tolist())) == len(big) == 1000  # a subset without repeats
        seen_big |= set(big.tolist())
    # A fresh subset each epoch: three epochs see far more than one quarter of the corpus.
    assert len(seen_big) > 2000
    # The same (seed, epoch) cuts the same batches; another seed others.
    again = Mix(specs, [fake_pairs(n, 10) for n in counts], max_len=64, max_tokens=256, seed=3)
    assert again.epoch(2).batches == mix.epoch(2).batches
    other = Mix(specs, [fake_pairs(n, 10) for n in counts], max_len=64, max_tokens=256, seed=4)
    assert other.epoch(2).batches != mix.epoch(2).batches


@pytest.mark.parametrize(
    "text, message",
    [
        ("data/a:0", "the weight '0' is not a positive number"),
        ("data/a:-1", "the weight '-1' is not a positive number"),
        ("data/a:abc", "the weight 'abc' is not a positive number"),
        ("data/a:nan", "the weight 'nan' is not a positive number"),
        ("data/a:1:bt", "the tag 'bt' is not `tag` or a piece like <BT>"),
        ("data/a:1:tag:x", "is not DIR[:WEIGHT[:TAG]]"),
    ],
)
def test_bad_specs(text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_spec(text)


def test_spec_defaults():
    assert parse_spec("d") == parse_spec("d:") == parse_spec("d:1:")
    assert parse_spec("d:0.5:tag").tag == "<BT>" and parse_spec("d:2:<FT>").tag == "<FT>"
    assert parse_spec("d").plain and not parse_spec("d:1:tag").plain


# -- training on a mix -------------------------------------------------------------------


def test_tag_piece_only_in_the_tagged_corpus(corpora, tmp_path):
    from mtkit.tokenizer import Tokenizer
    from mtkit.train.data import load_run_data

    tok = Tokenizer.from_file(corpora["spm"])
    (tag,) = tok.tag_ids()
    assert tok.sp.id_to_piece(tag) == "<BT>"
    data = [str(corpora["a"]), f"{corpora['b']}:1:tag"]
    run_data = load_run_data(config(corpora, tmp_path / "run", data))
    untagged, tagged = run_data.corpora
    assert run_data.valid_dir == str(corpora["a"])
    firsts = tagged.src.ids[tagged.src.offsets[:-1]]
    assert (firsts == tag).all()  # every source sentence starts with it ...
    assert (np.asarray(tagged.src.ids) == tag).sum() == len(tagged)  # ... and holds it once
    assert tag not in np.asarray(untagged.src.ids)
    assert tag not in np.asarray(tagged.tgt.ids) and tag not in np.asarray(untagged.tgt.ids)
    # The same directory untagged is another cache, without the tag.
    plain = load_run_data(config(corpora, tmp_path / "run", [str(corpora["b"])])).corpora[0]
    assert tag not in np.asarray(plain.src.ids)
    assert len(plain.src.ids) == len(tagged.src.ids) - len(tagged)


def test_resume_continues_the_same_mix(corpora, tmp_path):
    """Stopped at update 5 and resumed, a run takes the same batches (same losses, same
    tokens per corpus) as one that ran 10 updates straight, across epoch boundaries."""
    data = [str(corpora["a"]), f"{corpora['b']}:0.5:tag"]
    straight = train(config(corpora, tmp_path / "straight", data, max_updates=10, max_tokens=4000))
    assert straight.epoch >= 3  # the resumed part crosses into new epochs (new samples)
    half = config(corpora, tmp_path / "resumed", data, max_updates=5, max_tokens=4000)
    train(half)
    train(config(corpora, tmp_path / "resumed", data, max_updates=10, max_tokens=4000, resume=True))
    a, b = records(tmp_path / "straight", "train"), records(tmp_path / "resumed", "train")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 11))
    assert [r["tokens"] for r in a] == [r["tokens"] for r in b]
    assert [r["mix_share"] for r in a] == [r["mix_share"] for r in b]
    for x, y in zip(a, b, strict=True):
        assert math.isclose(x["loss"], y["loss"], rel_tol=1e-4), (x, y)
    shares = a[-1]["mix_share"]
    # a: 300 pairs, b: 100 of its 200 an epoch: about a quarter of the tokens from b.
    assert 0.15 < shares[1] < 0.35 and math.isclose(sum(shares), 1, abs_tol=1e-3)


def test_the_mix_is_logged_stored_and_inspected(corpora, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    data = [str(corpora["a"]), f"{corpora['b']}:0.5:tag"]
    train(config(corpora, run, data, max_updates=3, valid_every=3))
    (mix,) = records(run, "mix")
    assert [(r["data"], r["weight"], r["tag"], r["valid"]) for r in mix["corpora"]] == [
        (str(corpora["a"]), 1.0, None, True),
        (str(corpora["b"]), 0.5, "<BT>", False),
    ]
    assert [r["epoch_pairs"] for r in mix["corpora"]] == [300, 100]
    assert call_main(monkeypatch, "inspect", str(run / "checkpoint_last.pt"), "--json") == 0
    stored = json.loads(capsys.readouterr().out)["mix"]
    assert [r["pairs"] for r in stored] == [300, 200]
    assert sum(r["target_tokens"] for r in stored) > 0
    assert call_main(monkeypatch, "inspect", str(run / "checkpoint_3.pt")) == 0
    text = capsys.readouterr().out
    assert f"mix: {corpora['b']} pairs=200 weight=0.5 tag=<BT> target_tokens=" in text
    # Resuming with another weight is another mix: refused.
    other = [str(corpora["a"]), f"{corpora['b']}:0.7:tag"]
    with pytest.raises(ConfigError, match="the data mix differs"):
        train(config(corpora, run, other, max_updates=4, resume=True))


def test_translate_never_produces_the_tag(corpora, tmp_path):
    """Even a model whose every step favours <BT> above all never emits it."""
    import torch

    from mtkit.search import SearchOptions, search
    from mtkit.translate.stream import load_translator

    run = tmp_path / "run"
    train(config(corpora, run, [str(corpora["a"]), f"{corpora['b']}:1:tag"], max_updates=1))
    translator = load_translator([run / "checkpoint_last.pt"])
    (model,) = translator.models
    (tag,) = translator.tgt_tokenizer.tag_ids()
    step = model.decode_step

    def favour_tag(tokens, state):  # the tag's logit above every other
        logits, state = step(tokens, state)
        return logits.index_fill(-1, torch.tensor([tag]), 1e4), state

    model.decode_step = favour_tag
    src = torch.tensor([translator.src_tokenizer.encode(["ein hund"])[0] + [3]])
    for beam in (1, 3):
        options = SearchOptions(beam_size=beam, nbest=1, max_len_b=10)
        hyps = search([model], src, options, banned=translator.banned)
        assert tag not in hyps[0][0].tokens
    assert translator.banned == (tag,)


# -- bad input: one line, nothing written ------------------------------------------------


@pytest.mark.parametrize(
    "problem, message",
    [
        ("not prepared", "is no prepared corpus (no train.de or train.en)"),
        ("bad weight", "the weight 'x' is not a positive number"),
        # Corpora of other pairs make a multilingual run, which needs the language tags.
        ("other pair", "for the multilingual run (de-en, fr-en); train it with"),
        ("no tag piece", "has no piece <BT> for the tagged corpus"),
    ],
)
def test_bad_mix_is_one_line(corpora, tmp_path, capsys, monkeypatch, problem, message):
    second, spm = f"{corpora['b']}:1:tag", corpora["spm"]
    if problem == "not prepared":
        (tmp_path / "empty").mkdir()
        second = str(tmp_path / "empty")
    elif problem == "bad weight":
        second = f"{corpora['b']}:x"
    elif problem == "other pair":
        second = str(corpora["c"])
    else:
        spm = corpora["plain_spm"]
    run = tmp_path / "run"
    args = ["train", "--data", str(corpora["a"]), "--data", second, "--spm", str(spm)]
    args += ["--out", str(run), "--max-updates", "1", "--device", "cpu", "--threads", "1"]
    code = call_main(monkeypatch, *args)
    out, err = capsys.readouterr()
    assert code == 1 and out == "", err
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
    assert not run.exists()
