"""One model, several language pairs: target-language tags, temperature sampling,
validation per direction, `translate --tgt-lang`, and the plot by direction.

The tiny model learns two tasks from the same sources in seconds: xx -> yy copies the
words, xx -> zz maps each through a lexicon, so the language a translation is in shows
in its words. The sampling tests need no model at all.
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import call_main, records, tiny_train_config

from mtkit.errors import ConfigError
from mtkit.train import train
from mtkit.train.batching import encode_pairs
from mtkit.train.mix import Mix, parse_spec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORDS = ["ka", "lo", "mi", "nu", "pe", "ra", "si", "tu"]
LEXICON = dict(zip(WORDS, ["bo", "da", "fe", "gi", "ho", "ju", "ve", "wo"], strict=True))
TASKS = {"yy": lambda words: words, "zz": lambda words: [LEXICON[w] for w in words]}
# A model that learns both tasks in a few seconds on one thread (measured: 200 updates).
SMALL = {"d_model": 64, "n_heads": 4, "d_ff": 128, "enc_layers": 1, "dec_layers": 1,
         "dropout": 0.0}  # fmt: skip


def sentences(n: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    return [[rng.choice(WORDS) for _ in range(rng.randint(1, 4))] for _ in range(n)]


def write_task(directory: Path, tgt: str, n: int, seed: int, valid: bool = True) -> Path:
    """A prepared xx -> tgt corpus of `n` training pairs (and 40 valid pairs)."""
    directory.mkdir(parents=True)
    splits = {"train": sentences(n, seed), **({"valid": sentences(40, seed + 1)} if valid else {})}
    for split, source in splits.items():
        (directory / f"{split}.xx").write_text("".join(" ".join(s) + "\n" for s in source))
        (directory / f"{split}.{tgt}").write_text(
            "".join(" ".join(TASKS[tgt](s)) + "\n" for s in source)
        )
    langs = {"src": "xx", "tgt": tgt}
    (directory / "manifest.json").write_text(json.dumps({"langs": langs}), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> dict:
    """The two tasks, a smaller third corpus of the second, and two vocabularies from
    train-bpe: with the language tags (--langs xx,yy,zz) and without."""
    from mtkit.tokenizer import SpmOptions, train_spm

    root = tmp_path_factory.mktemp("multilingual")
    copy = write_task(root / "copy", "yy", 800, seed=1)
    lexicon = write_task(root / "lexicon", "zz", 800, seed=3)
    small = write_task(root / "small", "zz", 200, seed=5, valid=False)
    inputs = [copy / "train.xx", copy / "train.yy", lexicon / "train.zz"]
    (spm,) = train_spm(inputs, root / "spm", SpmOptions(vocab_size=64, langs=("xx", "yy", "zz")))
    (plain,) = train_spm(inputs, root / "plain", SpmOptions(vocab_size=64))
    return {"copy": copy, "lexicon": lexicon, "small": small, "spm": spm, "plain_spm": plain}


def config(tasks: dict, out: Path, data: list, **changes):
    values = {"spm": str(tasks["spm"]), "max_tokens": 600, "valid_bleu_sentences": 0}
    return tiny_train_config([str(d) for d in data], out, **(values | changes))


@pytest.fixture(scope="module")
def trained(tasks, tmp_path_factory) -> Path:
    """A model of both tasks, validated twice (the run directory)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    data = [tasks["copy"], tasks["lexicon"]]
    train(config(tasks, run, data, model_overrides=dict(SMALL), max_updates=200,
                 valid_every=100, lr=5e-3, warmup=30, label_smoothing=0.0))  # fmt: skip
    return run


# -- temperature sampling (no model) --------------------------------------------------


def fake_pairs(n: int):
    return encode_pairs(["s"] * n, ["t"] * n, lambda xs: [[5] for _ in xs],
                        lambda xs: [[6, 6] for _ in xs])  # fmt: skip


def test_temperature_balances_the_pairs():
    """p ~ size^(1/T) per pair, the epoch's size kept; T = 1 is the weights as they are;
    two corpora of one pair keep their proportions."""
    from mtkit.sampling import temperature_shares

    specs = [parse_spec(p) for p in ("de-en", "bt:0.5", "fr-en", "ro-en")]
    counts, directions = (6000, 4000, 1000, 100), ["de-en", "de-en", "fr-en", "ro-en"]

    def mix(temperature):
        return Mix(specs, [fake_pairs(n) for n in counts], max_len=64, max_tokens=256, seed=1,
                   temperature=temperature, directions=directions)  # fmt: skip

    assert mix(1.0).epoch_pairs() == [6000, 2000, 1000, 100]  # as without temperature
    balanced = mix(5.0)
    pairs = balanced.epoch_pairs()
    assert abs(sum(pairs) - 9100) <= 4  # the epoch keeps its size (rounding aside)
    per_pair = np.array([pairs[0] + pairs[1], pairs[2], pairs[3]]) / sum(pairs)
    assert np.allclose(per_pair, temperature_shares([8000, 1000, 100], 5.0), atol=1e-3)
    assert abs(pairs[0] / pairs[1] - 3.0) < 0.01  # 6000 x 1 against 4000 x 0.5
    assert per_pair[2] > 100 / 9100 * 5  # the small pair seen over five times as often
    cut = balanced.epoch(1)
    assert cut.corpus_tokens.sum(0).tolist() == [3 * n for n in pairs]  # the sample is it
    rows = balanced.describe()
    assert [r["direction"] for r in rows] == directions and rows[0]["temperature"] == 5.0
    uniform = mix(1e6).epoch_pairs()
    assert max(abs(x - 9100 / 3) for x in (uniform[0] + uniform[1], *uniform[2:])) < 5
    with pytest.raises(ConfigError, match="--sample-temperature must be a positive number"):
        from mtkit.sampling import check_temperature

        check_temperature(0.0)


def test_train_bpe_balances_the_languages(tmp_path, monkeypatch, capsys):
    """train-bpe --sample-temperature reads each language's lines in proportion to
    lines^(1/T), as many lines in all; --langs reserves the tags as single pieces."""
    from mtkit.tokenizer import Tokenizer, balanced_repeats

    big, small = tmp_path / "train.de", tmp_path / "train.fr"
    big.write_text("".join(f"ein satz {i}\n" for i in range(900)))
    small.write_text("".join(f"une phrase {i}\n" for i in range(100)))
    assert balanced_repeats([big, small], 1.0) is None
    repeats = balanced_repeats([big, small], 1e9)  # uniform over the languages
    assert [int(r.sum()) for r in repeats] == [500, 500]
    assert repeats[0].max() == 1 and set(repeats[1].tolist()) == {5}
    args = ["train-bpe", "-i", big, "-i", small, "--vocab-size", 60, "-o", tmp_path / "spm"]
    assert call_main(monkeypatch, *args, "--langs", "de,fr", "--sample-temperature", 5) == 0
    capsys.readouterr()
    tok = Tokenizer.from_file(tmp_path / "spm" / "spm.model")
    assert tok.pieces("<2de> <2fr> ein") == ["▁", "<2de>", "▁", "<2fr>", "▁ein"]
    for bad, message in (("--sample-temperature", "0"), ("--langs", "de,f r")):
        code = call_main(monkeypatch, *args, bad, message)
        err = capsys.readouterr().err
        assert code == 1 and len(err.splitlines()) == 1, err


# -- training ---------------------------------------------------------------------------


def test_the_tag_reaches_the_encoder(tasks, tmp_path, monkeypatch):
    """Every source the model reads starts with its target language's tag, in training
    and in validation; the targets hold none."""
    from mtkit.models.transformer import Transformer
    from mtkit.tokenizer import Tokenizer

    tok = Tokenizer.from_file(tasks["spm"])
    tag = {code: tok.piece_id(f"<2{code}>") for code in ("yy", "zz")}
    zz_words = {tok.piece_id(f"▁{w}") for w in LEXICON.values()}
    seen = []
    forward = Transformer.forward

    def spy(self, src, tgt_in, *args, **kwargs):
        seen.append((src.clone(), tgt_in.clone()))
        return forward(self, src, tgt_in, *args, **kwargs)

    monkeypatch.setattr(Transformer, "forward", spy)
    train(config(tasks, tmp_path / "run", [tasks["copy"], tasks["lexicon"]], max_updates=3,
                 valid_every=3, valid_bleu_sentences=2))  # fmt: skip
    assert len(seen) >= 4  # three updates and the validation's loss
    for src, tgt_in in seen:
        for row, target in zip(src.tolist(), tgt_in.tolist(), strict=True):
            language = "zz" if zz_words & set(target) else "yy"
            assert row[0] == tag[language], (row, target)
            assert tag["yy"] not in row[1:] and tag["zz"] not in row[1:]
            assert not set(tag.values()) & set(target)


def test_a_tiny_model_learns_both_directions(tasks, trained, tmp_path, monkeypatch, capsys):
    """--tgt-lang chooses the task: the same sources copied (yy) or mapped (zz)."""
    test = sentences(60, seed=99)
    source = tmp_path / "test.xx"
    source.write_text("".join(" ".join(s) + "\n" for s in test))
    for tgt in ("yy", "zz"):
        args = ["translate", "-m", trained / "checkpoint_last.pt", "-i", source, "--tgt-lang"]
        assert call_main(monkeypatch, *args, tgt, "--beam", "2", "--threads", "1") == 0
        lines = capsys.readouterr().out.splitlines()
        right = [line == " ".join(TASKS[tgt](s)) for line, s in zip(lines, test, strict=True)]
        assert len(lines) == len(test) and sum(right) >= 0.8 * len(test), (tgt, lines[:5])
        words = [w for line in lines for w in line.split()]
        vocabulary = set(TASKS[tgt](WORDS))
        assert sum(w in vocabulary for w in words) >= 0.98 * len(words), (tgt, lines[:5])


def test_the_checkpoint_knows_its_languages(trained, monkeypatch, capsys):
    from mtkit.checkpoint import load_checkpoint

    ckpt = load_checkpoint(trained / "checkpoint_last.pt")
    assert ckpt["langs"] == {"src": "mul", "tgt": "mul"}
    assert ckpt["languages"] == {
        "scheme": "tag",
        "legacy": False,
        "tokens": {"xx": "<2xx>", "yy": "<2yy>", "zz": "<2zz>"},
        "directions": [["xx", "yy"], ["xx", "zz"]],
        "default": {"src": None, "tgt": None},
    }
    assert [row["direction"] for row in ckpt["mix"]] == ["xx-yy", "xx-zz"]
    assert call_main(monkeypatch, "inspect", trained / "checkpoint_last.pt", "--langs") == 0
    assert capsys.readouterr().out.split() == ["xx", "yy", "zz"]
    # translate never writes a tag: they go before sources only
    from mtkit.translate.stream import RuntimeOptions, load_translator

    translator = load_translator([trained / "checkpoint_last.pt"], RuntimeOptions(tgt_lang="zz"))
    tags = {translator.tgt_tokenizer.piece_id(f"<2{code}>") for code in ("xx", "yy", "zz")}
    assert tags <= set(translator.banned)
    assert translator.direction.source_prefix == (translator.src_tokenizer.piece_id("<2zz>"),)


def test_validation_rows_per_direction(trained):
    """Each valid record holds every direction's numbers; the mean is what the best
    checkpoint follows."""
    rows = records(trained, "valid")
    assert [r["step"] for r in rows] == [100, 200]
    for row in rows:
        directions = row["valid_directions"]
        assert list(directions) == ["xx-yy", "xx-zz"]
        for values in directions.values():
            assert {"valid_bleu", "valid_chrf", "valid_nll_loss", "valid_ppl"} <= set(values)
        mean = sum(v["valid_bleu"] for v in directions.values()) / 2
        assert math.isclose(row["valid_bleu"], mean)
        assert math.isclose(
            row["valid_chrf"], sum(v["valid_chrf"] for v in directions.values()) / 2
        )
    assert rows[-1]["best_bleu"] == max(r["valid_bleu"] for r in rows)
    assert min(rows[-1]["valid_directions"][d]["valid_bleu"] for d in ("xx-yy", "xx-zz")) > 50
    (mix,) = records(trained, "mix")
    valid = [(r["direction"], r["valid"]) for r in mix["corpora"]]
    assert valid == [("xx-yy", True), ("xx-zz", True)]


def test_plot_draws_each_direction(trained):
    from mtkit.plot import draw, read_run

    curves = read_run(trained)
    assert list(curves.directions) == ["xx-yy", "xx-zz"]
    assert curves.directions["xx-zz"]["step"] == [100.0, 200.0]
    figure = draw([curves])
    titles = [ax.get_title() for ax in figure.axes]
    assert "BLEU by direction" in titles and "chrF by direction" in titles
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert "xx-yy" in legend and "xx-zz" in legend


def test_resume_keeps_the_sampler_state(tasks, tmp_path):
    """Balanced at T = 3 and stopped at update 5, a resumed run takes the very batches
    (losses, tokens, shares by corpus) of one that ran 10 updates straight."""
    data = [tasks["copy"], tasks["small"]]
    values = {"max_tokens": 2000, "sample_temperature": 3.0}
    straight = train(config(tasks, tmp_path / "straight", data, max_updates=10, **values))
    assert straight.epoch >= 3  # the resumed half crosses into new epochs (new samples)
    train(config(tasks, tmp_path / "resumed", data, max_updates=5, **values))
    train(config(tasks, tmp_path / "resumed", data, max_updates=10, resume=True, **values))
    a, b = records(tmp_path / "straight", "train"), records(tmp_path / "resumed", "train")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 11))
    assert [r["tokens"] for r in a] == [r["tokens"] for r in b]
    assert [r["mix_share"] for r in a] == [r["mix_share"] for r in b]
    for x, y in zip(a, b, strict=True):
        assert math.isclose(x["loss"], y["loss"], rel_tol=1e-4), (x, y)
    (mix,) = records(tmp_path / "straight", "mix")
    rates = [row["rate"] for row in mix["corpora"]]
    assert rates[0] < 1 < rates[1]  # 800 against 200 pairs: the small one upsampled
    with pytest.raises(ConfigError, match="sample_temperature: 3.0 -> 1.0"):
        train(config(tasks, tmp_path / "resumed", data, max_updates=12, resume=True,
                     max_tokens=2000))  # fmt: skip


# -- one line for what cannot work ---------------------------------------------------------


def test_missing_and_unknown_tags_are_one_line_each(tasks, trained, tmp_path, monkeypatch, capsys):
    source = tmp_path / "in.xx"
    source.write_text("ka lo\n")
    model = trained / "checkpoint_last.pt"
    cases = {
        "no tag pieces": (
            ["train", "--data", tasks["copy"], "--data", tasks["lexicon"], "--spm",
             tasks["plain_spm"], "--out", tmp_path / "run", "--max-updates", "1"],
            "has no piece <2xx>, <2yy>, <2zz> for the multilingual run (xx-yy, xx-zz); "
            "train it with `mtkit train-bpe --langs xx,yy,zz ...`",
        ),
        "no --tgt-lang": (["translate", "-m", model, "-i", source],
                          "give --tgt-lang (list them: mtkit inspect MODEL)"),
        "unknown code": (["translate", "-m", model, "-i", source, "--tgt-lang", "qq"],
                         "unknown language code 'qq'; closest:"),
        "not a target": (["translate", "-m", model, "-i", source, "--tgt-lang", "xx"],
                         "this model was trained on xx->yy, xx->zz, not *->xx"),
    }  # fmt: skip
    for name, (args, message) in cases.items():
        code = call_main(monkeypatch, *args)
        out, err = capsys.readouterr()
        assert code == 1 and out == "", (name, err)
        assert err.startswith("error: ") and message in err, (name, err)
        assert len(err.splitlines()) == 1, (name, err)
    assert not (tmp_path / "run").exists()


# -- the recipe ---------------------------------------------------------------------------------


def test_recipe_plans_the_comparison(tmp_path, multi30k):
    """`make -n` of recipes/multi30k-multilingual.mk: four bilingual models, one
    multilingual model on the four pairs for their budget together, every output
    scored against its baseline, zero-shot directly and through English."""
    from test_recipes import make

    result = make("multi30k-multilingual", tmp_path, "-n", MULTI30K=str(multi30k), DEVICE="cpu")
    assert result.returncode == 0, result.stdout
    lines = re.sub(r"\\\n\s*", " ", result.stdout).splitlines()  # continued lines joined
    data, run = tmp_path / "data", tmp_path / "run"
    multi = next(
        line for line in lines if " train --data " in line and "--out " + f"{run}/multi" in line
    )
    assert multi.count("--data ") == 4 and " --src " not in multi
    assert "--spm " + f"{data}/spm/spm.model" in multi
    assert multi.endswith("--sample-temperature 1 --max-updates 3200 --max-time 0")
    bilingual = [line for line in lines if " train --data " in line and line not in (multi,)]
    assert len(bilingual) == 4 and all("--max-updates 800 " in line for line in bilingual)
    assert any(f"--spm {data}/spm-de-en/spm.model --src en --tgt de" in b for b in bilingual)
    bpe = next(line for line in lines if f"--out {data}/spm/" in line)
    assert "--langs de,en,fr" in bpe and bpe.count("--input ") == 3
    pivot = next(line for line in lines if f"-o {run}/pivot-de-fr.hyp" in line)
    assert f"-i  {run}/multi-de-en.hyp" in pivot and "--tgt-lang fr" in pivot
    zero = next(line for line in lines if f"-o {run}/multi-fr-de.hyp" in line)
    assert f"-i  {data}/fr-en/test.fr" in zero and "--tgt-lang de" in zero
    score = next(line for line in lines if f"{run}/fr-de.score.tmp" in line and " score " in line)
    assert f"-r {data}/de-en/test.de -i {run}/pivot-fr-de.hyp -i {run}/multi-fr-de.hyp" in score
    assert "--paired-bs" in score
    langid = next(line for line in lines if "mtkit.prepare.langid" in line)
    assert f"{run}/multi-de-fr.hyp:fr:multi-de-fr" in langid
