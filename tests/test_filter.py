"""`mtkit filter`: dual cross-entropy keeps clean pairs and drops injected noise, counts
what it dropped in a prepare manifest, resumes, and says what is wrong in one line.

Two tiny Transformers (de->en, en->de, one joint BPE) are trained for a few seconds each
with a minimal loop on the first 2,000 Multi30k training pairs, as Junczys-Dowmunt
(2018) trained his filter models on clean data. The corpus to filter holds 60 of those
clean pairs and 15 pairs of each noise kind bench/noise.py injects: misaligned pairs,
the source copied to the target, French as the target, the target cut to its first half.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import call_main

from mtkit.errors import ConfigError, DataError
from mtkit.filter.command import filter_corpus
from mtkit.filter.dual import dual_score
from mtkit.filter.select import Selection
from mtkit.translate.batching import BatchOptions
from mtkit.translate.stream import RuntimeOptions

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAIN_PAIRS = 2000
STEPS = 200
VOCAB = 400
CLEAN = 60
NOISE = 15  # pairs of each kind
KINDS = ("misaligned", "copy", "wrong_language", "truncated")
CPU = RuntimeOptions(device="cpu", precision="fp32", threads=1)


def _lines(multi30k: Path, name: str, n: int) -> list[str]:
    with gzip.open(multi30k / name, "rt", encoding="utf-8") as file:
        return [next(file).strip() for _ in range(n)]


def _spm(lines: list[str], vocab_size: int = VOCAB) -> bytes:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size,
        model_type="bpe", character_coverage=1.0, pad_id=0, unk_id=1, bos_id=2, eos_id=3,
        minloglevel=2, num_threads=1,
    )  # fmt: skip
    return model.getvalue()


def _model(spm: bytes, src: list[str], tgt: list[str], steps: int, langs: tuple, path: Path):
    """A tiny Transformer trained `steps` Adam steps on (src, tgt), saved as a checkpoint."""
    from mtkit.checkpoint import save_checkpoint
    from mtkit.models import ModelConfig, build_model
    from mtkit.tokenizer import Tokenizer
    from mtkit.train.batching import pad_rows

    torch.manual_seed(0)
    config = ModelConfig(
        src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, d_model=64, n_heads=4, d_ff=128,
        enc_layers=1, dec_layers=1, max_positions=64, dropout=0.0,
    )  # fmt: skip
    model = build_model(config)
    tokenizer = Tokenizer.from_bytes(spm)
    source, target = ([x[:40] for x in tokenizer.encode(side)] for side in (src, tgt))
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=6e-3)
    model.train()
    for _ in range(steps):
        pick = torch.randint(len(source), (32,), generator=generator).tolist()
        logits = model(pad_rows([source[i] + [3] for i in pick], 0),
                       pad_rows([[2] + target[i] for i in pick], 0))  # fmt: skip
        gold = pad_rows([target[i] + [3] for i in pick], 0)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), gold, ignore_index=0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    payload = {
        "model_config": dataclasses.asdict(config), "model": model.state_dict(),
        "spm": {"src": spm, "tgt": spm}, "langs": {"src": langs[0], "tgt": langs[1]},
        "train_config": {}, "step": steps, "epoch": 0, "metrics": {},
    }  # fmt: skip
    return save_checkpoint(path, payload)


@pytest.fixture(scope="module")
def models(multi30k, tmp_path_factory) -> tuple[Path, Path]:
    """(de->en, en->de), trained on the first TRAIN_PAIRS pairs with one joint BPE."""
    out = tmp_path_factory.mktemp("filter-models")
    de = _lines(multi30k, "train.de.gz", TRAIN_PAIRS)
    en = _lines(multi30k, "train.en.gz", TRAIN_PAIRS)
    spm = _spm(de + en)
    forward = _model(spm, de, en, STEPS, ("de", "en"), out / "de-en.pt")
    backward = _model(spm, en, de, STEPS, ("en", "de"), out / "en-de.pt")
    return forward, backward


def noisy_pairs(multi30k: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """CLEAN clean pairs, then NOISE pairs of each kind (from the next pairs), and the
    kind of each."""
    n = CLEAN + NOISE * len(KINDS)
    de, en = _lines(multi30k, "train.de.gz", n), _lines(multi30k, "train.en.gz", n)
    fr = _lines(multi30k, "train.fr.gz", n)
    pairs = list(zip(de[:CLEAN], en[:CLEAN], strict=True))
    kinds = ["clean"] * CLEAN
    for k, kind in enumerate(KINDS):
        rows = range(CLEAN + k * NOISE, CLEAN + (k + 1) * NOISE)
        for i in rows:
            if kind == "misaligned":  # another sentence's translation
                pair = (de[i], en[rows[0] + (i - rows[0] + 7) % NOISE])
            elif kind == "copy":
                pair = (de[i], de[i])
            elif kind == "wrong_language":
                pair = (de[i], fr[i])
            else:  # the first half of the words
                words = en[i].split()
                pair = (de[i], " ".join(words[: max(1, len(words) // 2)]))
            pairs.append(pair)
            kinds.append(kind)
    return pairs, kinds


def prepared(pairs: list[tuple[str, str]], out: Path, valid=None) -> Path:
    """`mtkit prepare` of the pairs (no filter of its own), with a small valid split."""
    from mtkit.prepare.cleaning import CleanOptions
    from mtkit.prepare.pipeline import prepare_corpus
    from mtkit.prepare.sources import SourceOptions

    text = out.parent / f"{out.name}-text"
    text.mkdir(parents=True)
    valid = valid or pairs[:5]
    for name, rows in (("train", pairs), ("valid", valid)):
        for side, lang in enumerate(("de", "en")):
            (text / f"{name}.{lang}").write_text("".join(r[side] + "\n" for r in rows), "utf-8")
    options = SourceOptions(
        src="de", tgt="en", src_file=text / "train.de", tgt_file=text / "train.en",
        valid_src_file=text / "valid.de", valid_tgt_file=text / "valid.en",
    )  # fmt: skip
    prepare_corpus(options, out, CleanOptions(max_ratio=0, dedup=False))
    return out


@pytest.fixture(scope="module")
def corpus(multi30k, tmp_path_factory) -> tuple[Path, list[str]]:
    pairs, kinds = noisy_pairs(multi30k)
    return prepared(pairs, tmp_path_factory.mktemp("noisy") / "data"), kinds


@pytest.fixture(scope="module")
def filtered(models, corpus, tmp_path_factory) -> Path:
    """The corpus filtered to the clean share, in chunks of 32 pairs."""
    out = tmp_path_factory.mktemp("filtered") / "out"
    keep = Selection(keep=CLEAN / len(corpus[1]))
    filter_corpus(corpus[0], out, *models, keep, BatchOptions(chunk_lines=32), CPU)
    return out


def _read(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _kept_kinds(data: Path, out: Path, kinds: list[str]) -> Counter:
    pairs = list(zip(_read(data / "train.de"), _read(data / "train.en"), strict=True))
    kept = set(zip(_read(out / "train.de"), _read(out / "train.en"), strict=True))
    return Counter(kind for pair, kind in zip(pairs, kinds, strict=True) if pair in kept)


def test_the_score_is_junczys_dowmunts():
    assert dual_score(2.0, 3.0) == pytest.approx(math.exp(-(1.0 + 2.5)))
    assert dual_score(1.0, 1.0) > dual_score(1.0, 2.0) > dual_score(3.0, 4.0)


@pytest.mark.parametrize(
    ("keep", "expected"),
    [
        (0.6, [True, True, True, False, False, False]),  # the ties at the cut in corpus order
        (0.4, [True, False, True, False, False, False]),
        (1.0, [True, True, True, True, True, False]),  # nan: a blank side, never kept
    ],
)
def test_a_share_keeps_exactly_its_pairs(tmp_path, keep, expected):
    """Exactly round(keep x scored) pairs, also when the cut is a value float32 cannot
    hold exactly (0.000279) and when several pairs share it."""
    from mtkit.filter.select import kept_lines

    scores = tmp_path / "train.scores"
    values = ["0.000279", "0.000279", "0.500000", "0.000279", "0.000100", "nan"]
    scores.write_text("".join(f"{v}\t1.0\t1.0\n" for v in values), encoding="utf-8")
    kept = list(kept_lines(scores, len(values), Selection(keep=keep)))
    assert kept == expected


def test_keeps_clean_pairs_and_drops_the_noise(corpus, filtered):
    """At the clean share: most kept pairs are clean; every copy and French target goes,
    and most misaligned and half-cut targets (the kind dual cross-entropy catches least:
    the first half of a translation is likely under both models)."""
    kept = _kept_kinds(corpus[0], filtered, corpus[1])
    assert sum(kept.values()) == CLEAN
    assert kept["clean"] >= 0.8 * CLEAN, kept
    assert kept["copy"] == 0 and kept["wrong_language"] == 0, kept
    assert kept["misaligned"] <= 0.4 * NOISE and kept["truncated"] <= 0.4 * NOISE, kept


def test_scores_rank_clean_above_each_noise_kind(corpus, filtered):
    scores = [float(line.split("\t")[0]) for line in _read(filtered / "train.scores")]
    mean = {kind: sum(s for s, k in zip(scores, corpus[1], strict=True) if k == kind)
            for kind in ("clean", *KINDS)}  # fmt: skip
    mean = {kind: total / (CLEAN if kind == "clean" else NOISE) for kind, total in mean.items()}
    assert all(mean["clean"] > 1.5 * mean[kind] for kind in KINDS), mean


def test_manifest_counts_what_was_dropped(corpus, filtered):
    from mtkit.verify import verify_paths

    data, kinds = corpus
    before = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
    after = json.loads((filtered / "manifest.json").read_text(encoding="utf-8"))
    rows = after["splits"]["train"]["filters"]
    assert rows[: len(before["splits"]["train"]["filters"])] == before["splits"]["train"]["filters"]
    assert rows[-2:] == [
        {"filter": "unscorable", "before": len(kinds), "after": len(kinds), "dropped": 0},
        {"filter": "dual_xent", "before": len(kinds), "after": CLEAN,
         "dropped": len(kinds) - CLEAN},
    ]  # fmt: skip
    assert after["splits"]["train"]["pairs"] == len(_read(filtered / "train.de")) == CLEAN
    assert after["splits"]["valid"] == {
        **before["splits"]["valid"],
        "files": after["splits"]["valid"]["files"],
    }
    assert _read(filtered / "valid.en") == _read(data / "valid.en")
    how = after["filtering"]
    assert how["keep"] == CLEAN / len(kinds) and how["threshold"] is None
    assert (
        set(how["models"]) == {"forward", "backward"}
        and len(how["models"]["forward"]["sha256"]) == 64
    )
    assert all(check.ok for check in verify_paths([filtered])), "the manifest's files check"


def test_a_threshold_keeps_what_the_share_kept(models, corpus, filtered, tmp_path, monkeypatch):
    """A second run with the scores in place scores nothing (no model loads): the share's
    cut as a threshold keeps the same pairs."""
    import shutil

    from mtkit.filter import job

    out = tmp_path / "out"
    out.mkdir()
    for name in ("train.scores", "train.scores.progress.json"):
        shutil.copy(filtered / name, out / name)
    monkeypatch.setattr(job, "load_models", _no_models)
    cut = json.loads((filtered / "manifest.json").read_text())["filtering"]["cut"]
    options = BatchOptions(chunk_lines=32)
    filter_corpus(corpus[0], out, *models, Selection(threshold=cut), options, CPU)
    assert _read(out / "train.en") == _read(filtered / "train.en")


def _no_models(*args, **kwargs):
    raise AssertionError("the scores were complete: no model should load")


def test_resume_continues_and_gives_the_same_scores(
    models, corpus, filtered, tmp_path, monkeypatch
):
    """Interrupted in its third chunk, the job keeps two chunks; the next run scores the
    rest only, and the scores are byte for byte the uninterrupted run's."""
    from mtkit.filter import job

    out, calls = tmp_path / "out", []
    real = job.score_chunk

    def interrupted(dual, chunk, batching):
        calls.append(len(chunk))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(dual, chunk, batching)

    monkeypatch.setattr(job, "score_chunk", interrupted)
    args = (corpus[0], out, *models, Selection(keep=0.5), BatchOptions(chunk_lines=32), CPU)
    with pytest.raises(KeyboardInterrupt):
        filter_corpus(*args)
    progress = json.loads((out / "train.scores.progress.json").read_text())
    assert progress["lines_done"] == 64 and not progress["complete"]
    monkeypatch.setattr(job, "score_chunk", real)
    filter_corpus(*args)
    assert (out / "train.scores").read_bytes() == (filtered / "train.scores").read_bytes()
    assert not (out / "train.scores.partial").exists()


def test_killed_mid_chunk_resumes_to_the_same_bytes(
    models, corpus, filtered, tmp_path, cli, monkeypatch
):
    """kill -9 after the second chunk is written but before it is committed: the next
    run cuts the partial file back to the first chunk and gives the same scores."""
    from mtkit.translate.shards import KILL_AFTER_ENV

    out = tmp_path / "out"
    args = ["filter", "--data", corpus[0], "-f", models[0], "-b", models[1], "-o", out, "--keep",
            "0.5", "--chunk-lines", "32", "--device", "cpu", "--threads", "1"]  # fmt: skip
    monkeypatch.setenv(KILL_AFTER_ENV, "64")
    killed = cli(*args)
    assert killed.returncode == -9
    progress = json.loads((out / "train.scores.progress.json").read_text())
    assert progress["lines_done"] == 32
    assert (out / "train.scores.partial").stat().st_size > progress["output_bytes"]
    monkeypatch.delenv(KILL_AFTER_ENV)
    assert cli(*args).returncode == 0
    assert (out / "train.scores").read_bytes() == (filtered / "train.scores").read_bytes()


def test_another_job_is_refused_and_restart_starts_over(models, corpus, filtered, tmp_path):
    import shutil

    out = tmp_path / "out"
    out.mkdir()
    for name in ("train.scores", "train.scores.progress.json"):
        shutil.copy(filtered / name, out / name)
    args = (corpus[0], out, *models, Selection(keep=0.5))
    with pytest.raises(
        ConfigError, match=r"belongs to another job: the option --chunk-lines changed \(32 -> 40\)"
    ):
        filter_corpus(*args, BatchOptions(chunk_lines=40), CPU)
    filter_corpus(*args, BatchOptions(chunk_lines=40), CPU, restart=True)
    assert len(_read(out / "train.scores")) == len(corpus[1])


def test_workers_score_the_same(models, corpus, filtered, tmp_path):
    out = tmp_path / "out"
    filter_corpus(
        corpus[0], out, *models, Selection(keep=0.5), BatchOptions(chunk_lines=32), CPU, workers=2
    )
    ours = [list(map(float, line.split("\t"))) for line in _read(out / "train.scores")]
    alone = [list(map(float, line.split("\t"))) for line in _read(filtered / "train.scores")]
    assert len(ours) == len(alone)
    for row, other in zip(ours, alone, strict=True):
        assert row == pytest.approx(other, abs=1e-4)
    assert not list(out.glob("*shard*"))


# -- bad inputs: one line each ------------------------------------------------------------


def test_models_of_other_languages(models, corpus, tmp_path):
    forward, backward = models
    with pytest.raises(
        ConfigError, match=r"--forward .* translates en->de, but the corpus needs de->en"
    ):
        filter_corpus(
            corpus[0], tmp_path / "o", backward, forward, Selection(keep=0.5), runtime=CPU
        )


def test_a_vocabulary_that_does_not_match(multi30k, models, corpus, tmp_path):
    """A backward model with its own BPE: cross-entropies per piece would not compare."""
    de = _lines(multi30k, "train.de.gz", 500)
    en = _lines(multi30k, "train.en.gz", 500)
    other = _model(_spm(de + en, 300), en, de, 0, ("en", "de"), tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="the vocabulary does not match"):
        filter_corpus(corpus[0], tmp_path / "o", models[0], other, Selection(keep=0.5), runtime=CPU)


def test_a_corpus_the_models_cannot_read(models, tmp_path):
    greek = [("Ένας σκύλος τρέχει στο πάρκο .", "Ένας σκύλος τρέχει .")] * 20
    data = prepared(greek, tmp_path / "greek")
    with pytest.raises(DataError, match=r"vocabulary does not match the corpus: .* are unknown"):
        filter_corpus(data, tmp_path / "o", *models, Selection(keep=0.5), runtime=CPU)
    assert not (tmp_path / "o" / "train.scores.progress.json").exists()


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        (Selection(), "--keep SHARE .* or --threshold SCORE"),
        (Selection(keep=0.5, threshold=0.1), "one of them"),
        (Selection(keep=1.5), "--keep 1.5 is not a share"),
        (Selection(threshold=2.0), "--threshold 2.0 is out of range"),
    ],
)
def test_bad_selections(models, corpus, tmp_path, selection, message):
    with pytest.raises(ConfigError, match=message):
        filter_corpus(corpus[0], tmp_path / "o", *models, selection, runtime=CPU)


def test_bad_directories(models, corpus, tmp_path):
    with pytest.raises(ConfigError, match="is --data itself"):
        filter_corpus(corpus[0], corpus[0], *models, Selection(keep=0.5), runtime=CPU)
    with pytest.raises(DataError, match="has no manifest.json"):
        filter_corpus(tmp_path, tmp_path / "o", *models, Selection(keep=0.5), runtime=CPU)


def test_command_line(models, corpus, filtered, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    code = call_main(
        monkeypatch, "filter", "--data", corpus[0], "-f", models[0], "-b", models[1], "-o", out,
        "--keep", str(CLEAN / len(corpus[1])), "--chunk-lines", "32", "--device", "cpu",
        "--threads", "1",
    )  # fmt: skip
    assert code == 0
    assert capsys.readouterr().out == ""
    assert _read(out / "train.en") == _read(filtered / "train.en")
    code = call_main(monkeypatch, "filter", "--data", corpus[0], "-f", models[1], "-b", models[0],
                     "-o", tmp_path / "o2", "--keep", "0.5")  # fmt: skip
    assert code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --forward") and "translates en->de" in line
