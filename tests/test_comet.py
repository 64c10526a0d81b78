"""`mtkit score --metrics comet`: unbabel-comet's figures, batched, with SacreCOMET's
signature, comet-compare's tests, and one line for what is missing.

The hub's COMET models cannot be reached here, so `tiny_comet` builds one in the
library's own layout (DIR/hparams.yaml, DIR/checkpoints/model.ckpt, and the encoder's
config and tokenizer in DIR/encoder, which hparams.yaml names as `pretrained_model`):
a random 2-layer, 32-wide XLM-R made from transformers' config class, under COMET's own
RegressionMetric (wmt22-comet-da's class), saved as Lightning saves a checkpoint.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from pathlib import Path

import pytest
from conftest import call_main

pytest.importorskip("comet", reason="unbabel-comet is not installed (pip install 'mtkit[comet]')")

from mtkit.comet import CometOptions, compare_systems, load_comet, segment_scores  # noqa: E402
from mtkit.errors import ConfigError, DataError  # noqa: E402
from mtkit.score import ScoreOptions, SignificanceOptions, score_files  # noqa: E402

LINES = 40
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _lines(multi30k: Path, name: str, n: int = LINES) -> list[str]:
    with gzip.open(multi30k / name, "rt", encoding="utf-8") as file:
        return [next(file).strip() for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_comet(multi30k, tmp_path_factory) -> Path:
    """A COMET model directory: hparams.yaml, checkpoints/model.ckpt, encoder/."""
    import pytorch_lightning
    import torch
    import yaml
    from comet.models import RegressionMetric
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, XLMRobertaConfig

    out = tmp_path_factory.mktemp("comet") / "tiny-comet"
    encoder = out / "encoder"
    encoder.mkdir(parents=True)
    text = [
        line for lang in ["de", "en", "fr"] for line in _lines(multi30k, f"train.{lang}.gz", 300)
    ]
    # XLM-R's id layout: <s> 0, <pad> 1, </s> 2, <unk> 3, pieces, <mask> last.
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    special = ["<s>", "<pad>", "</s>", "<unk>"]
    tokenizer.train_from_iterator(
        text, trainers.UnigramTrainer(vocab_size=400, special_tokens=special, unk_token="<unk>")
    )
    tokenizer.add_special_tokens(["<mask>"])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>",
        cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
    )  # fmt: skip
    fast.save_pretrained(encoder)
    XLMRobertaConfig(
        vocab_size=len(fast), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=130, pad_token_id=1, bos_token_id=0,
        eos_token_id=2,
    ).save_pretrained(encoder)  # fmt: skip
    torch.manual_seed(0)
    model = RegressionMetric(
        pretrained_model=str(encoder), encoder_model="XLM-RoBERTa", hidden_sizes=[16],
        load_pretrained_weights=False, local_files_only=True,
    )  # fmt: skip
    (out / "checkpoints").mkdir()
    hparams = dict(model.hparams)
    torch.save(
        {"state_dict": model.state_dict(), "hyper_parameters": hparams,
         "pytorch-lightning_version": pytorch_lightning.__version__},
        out / "checkpoints" / "model.ckpt",
    )  # fmt: skip
    (out / "hparams.yaml").write_text(yaml.safe_dump(hparams), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def texts(multi30k) -> dict[str, list[str]]:
    """German sources, English references, and two systems made from the references."""
    src = _lines(multi30k, "test_2016_flickr.de.gz")
    ref = _lines(multi30k, "test_2016_flickr.en.gz")
    return {
        "src": src,
        "ref": ref,
        "hyp": [" ".join(line.split()[:-1]) for line in ref],  # the last word dropped
        "hyp2": [line if i % 2 else line.lower() for i, line in enumerate(ref)],
        "ref2": [line.replace(" a ", " the ") for line in ref],
    }


@pytest.fixture(scope="module")
def files(texts, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("comet-text")
    paths = {}
    for name, lines in texts.items():
        paths[name] = out / f"{name}.txt"
        paths[name].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


@pytest.fixture(scope="module")
def loaded(tiny_comet):
    return load_comet(CometOptions(comet_model=str(tiny_comet), comet_batch_size=8, device="cpu"))


def _library_predict(loaded, texts, system="hyp", batch_size=8) -> list[float]:
    samples = [
        {"src": s, "mt": h, "ref": r}
        for s, h, r in zip(texts["src"], texts[system], texts["ref"], strict=True)
    ]
    output = loaded.model.predict(samples, batch_size=batch_size, gpus=0, progress_bar=False)
    return list(output.scores)


def test_scores_are_the_librarys_predict(loaded, texts):
    """The same batches as the library's predict(), so the same floats."""
    ours = segment_scores(loaded, texts["src"], texts["hyp"], [texts["ref"]], show_progress=False)
    assert ours == _library_predict(loaded, texts)
    assert len(set(ours)) > LINES // 2  # a real figure per segment, not a constant


def test_batch_size_changes_only_rounding(tiny_comet, loaded, texts):
    one = load_comet(CometOptions(comet_model=str(tiny_comet), comet_batch_size=1, device="cpu"))
    args = (texts["src"], texts["hyp"], [texts["ref"]])
    alone = segment_scores(one, *args, show_progress=False)
    batched = segment_scores(loaded, *args, show_progress=False)
    assert alone == pytest.approx(batched, abs=1e-5)
    assert alone == _library_predict(one, texts, batch_size=1)


def test_signature_names_python_comet_precision_model_references(loaded, tiny_comet):
    import comet

    python = ".".join(map(str, sys.version_info[:3]))
    assert loaded.signature(1) == f"Python{python}|Comet{comet.__version__}|fp32|{tiny_comet}|r1"
    assert loaded.signature(2).endswith("|r2avg")


def test_two_references_average_the_segments(loaded, texts):
    args = (loaded, texts["src"], texts["hyp"])
    first = segment_scores(*args, [texts["ref"]], show_progress=False)
    second = segment_scores(*args, [texts["ref2"]], show_progress=False)
    both = segment_scores(*args, [texts["ref"], texts["ref2"]], show_progress=False)
    assert both == pytest.approx([(a + b) / 2 for a, b in zip(first, second, strict=True)])


def test_bf16_is_in_the_signature(tiny_comet, texts):
    bf16 = load_comet(CometOptions(comet_model=str(tiny_comet), device="cpu", precision="bf16"))
    assert "|bf16|" in bf16.signature(1)
    scores = segment_scores(bf16, texts["src"][:4], texts["hyp"][:4], [texts["ref"][:4]], False)
    assert all(isinstance(value, float) for value in scores)


def test_score_files_one_system(files, tiny_comet, loaded, texts):
    text = score_files(
        [files["ref"]], [files["hyp"]], ScoreOptions(metrics=("bleu", "comet")),
        source=files["src"], comet=CometOptions(comet_model=str(tiny_comet), comet_batch_size=8),
    )  # fmt: skip
    bleu, comet = text.splitlines()
    assert bleu.lstrip().startswith("BLEU|nrefs:1")
    expected = segment_scores(loaded, texts["src"], texts["hyp"], [texts["ref"]], False)
    mean = sum(expected) / len(expected)
    assert re.fullmatch(rf"COMET\|Python[\d.]+\|Comet[\d.]+\|fp32\|{re.escape(str(tiny_comet))}"
                        rf"\|r1 = {mean:.4f}", comet.strip())  # fmt: skip


def test_score_files_json(files, tiny_comet):
    report = score_files(
        [files["ref"]], [files["hyp"]], ScoreOptions(metrics=("comet",)),
        report=_json(), source=files["src"], comet=CometOptions(comet_model=str(tiny_comet)),
    )  # fmt: skip
    values = json.loads(report)
    assert values["name"] == "COMET"
    assert values["precision"] == "fp32" and values["model"] == str(tiny_comet)
    assert values["refs"] == "1" and values["signature"].startswith("Python")
    assert isinstance(values["score"], float)


def _json():
    from mtkit.score import ReportOptions

    return ReportOptions(as_json=True)


def test_compare_is_comet_compares(loaded, texts):
    """The t-test is scipy's on the segment scores; the bootstrap is comet-compare's own
    functions, seeded: the same figures as calling them directly."""
    import numpy as np
    from comet.cli.compare import bootstrap_resampling, pairwise_bootstrap
    from scipy import stats

    systems = [
        segment_scores(loaded, texts["src"], texts[name], [texts["ref"]], show_progress=False)
        for name in ("hyp", "hyp2")
    ]
    rows = compare_systems(["a", "b"], systems, seed=1)
    assert rows[0] == {"system": "a", "score": pytest.approx(np.mean(systems[0]))}
    test = stats.ttest_rel(np.float32(systems[0]), np.float32(systems[1]))
    assert rows[1]["p_value"] == pytest.approx(test.pvalue)
    np.random.seed(1)
    resampled = bootstrap_resampling(np.array(systems, dtype="float32"), int(LINES * 0.4), 300)
    (theirs,) = list(pairwise_bootstrap(resampled, ["a", "b"]))
    boot = theirs["bootstrap_resampling"]
    assert rows[1]["bootstrap"] == {
        "baseline_mean": boot["x-mean"], "mean": boot["y-mean"], "wins": boot["y_wins (%)"],
        "ties": boot["ties (%)"], "losses": boot["x_wins (%)"],
    }  # fmt: skip


def test_several_systems_with_a_test(files, tiny_comet):
    comet = CometOptions(comet_model=str(tiny_comet))
    args = ([files["ref"]], [files["hyp"], files["hyp2"]], ScoreOptions(metrics=("bleu", "comet")))
    tests = SignificanceOptions(paired_bs=True, paired_bs_n=50, seed=1)
    text = score_files(*args, tests, source=files["src"], comet=comet)
    block = text[text.index("COMET|") :]
    assert f"Baseline: {files['hyp']}" in block and str(files["hyp2"]) in block
    assert "paired t-test" in block and "300 samples of 40%" in block
    entries = json.loads(score_files(*args, tests, _json(), source=files["src"], comet=comet))
    assert [set(entry) for entry in entries] == [{"system", "BLEU", "COMET"}] * 2
    assert entries[0]["COMET"]["p_value"] is None
    assert 0 <= entries[1]["COMET"]["p_value"] <= 1


# -- what is missing: one line each ----------------------------------------------------


def test_missing_library_is_one_line(monkeypatch, files, tiny_comet):
    monkeypatch.setitem(sys.modules, "comet", None)  # `import comet` raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'mtkit\[comet\]'"):
        load_comet(CometOptions(comet_model=str(tiny_comet)))


def test_model_not_in_the_cache_is_one_line():
    with pytest.raises(ConfigError, match="huggingface-cli download mtkit-tests/no-such-comet"):
        load_comet(CometOptions(comet_model="mtkit-tests/no-such-comet"))


def test_bad_directory_and_options(tmp_path, files):
    with pytest.raises(DataError, match="hparams.yaml and checkpoints/model.ckpt"):
        load_comet(CometOptions(comet_model=str(tmp_path)))
    with pytest.raises(ConfigError, match="needs a model"):
        score_files([files["ref"]], [files["hyp"]], ScoreOptions(metrics=("comet",)),
                    source=files["src"])  # fmt: skip
    with pytest.raises(ConfigError, match="-s SOURCE_FILE"):
        score_files([files["ref"]], [files["hyp"]], ScoreOptions(metrics=("comet",)),
                    comet=CometOptions(comet_model=str(tmp_path)))  # fmt: skip


def test_source_of_another_length_is_one_line(files, tmp_path, tiny_comet):
    short = tmp_path / "short.de"
    short.write_text("ein Satz\n", encoding="utf-8")
    with pytest.raises(DataError, match="1 lines but .* has 40"):
        score_files([files["ref"]], [files["hyp"]], ScoreOptions(metrics=("comet",)),
                    source=short, comet=CometOptions(comet_model=str(tiny_comet)))  # fmt: skip


def test_encoder_not_to_be_had_is_one_line(tiny_comet, tmp_path):
    """hparams.yaml names an encoder (xlm-roberta-large for the hub's models) whose
    tokenizer and config are neither here nor reachable."""
    import shutil

    import torch

    copy = tmp_path / "copy"
    shutil.copytree(tiny_comet, copy, ignore=shutil.ignore_patterns("encoder"))
    checkpoint = torch.load(copy / "checkpoints" / "model.ckpt", weights_only=False)
    checkpoint["hyper_parameters"]["pretrained_model"] = "xlm-roberta-large"
    torch.save(checkpoint, copy / "checkpoints" / "model.ckpt")
    hparams = (copy / "hparams.yaml").read_text(encoding="utf-8")
    hparams = hparams.replace(str(tiny_comet / "encoder"), "xlm-roberta-large")
    (copy / "hparams.yaml").write_text(hparams, encoding="utf-8")
    with pytest.raises(ConfigError, match="huggingface-cli download xlm-roberta-large"):
        load_comet(CometOptions(comet_model=str(copy)))


def test_command_line(monkeypatch, capsys, files, tiny_comet):
    """stdout holds the report only; the bar and the library's talk go to stderr."""
    args = ["score", "-r", files["ref"], "-i", files["hyp"], "-s", files["src"], "--metrics",
            "comet", "--comet-model", tiny_comet, "--comet-batch-size", "5"]  # fmt: skip
    assert call_main(monkeypatch, *args) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"COMET\|Python[\d.]+\|Comet[\d.]+\|fp32\|.*\|r1 = -?\d\.\d{4}", line)
    assert call_main(monkeypatch, *args[:-4]) == 1
    (error,) = capsys.readouterr().err.strip().splitlines()
    assert error == (
        "error: --metrics comet needs a model: --comet-model Unbabel/wmt22-comet-da "
        "(from the hub or its cache) or --comet-model DIR"
    )
