"""Fine-tuning with `train --init-from`: the checkpoint's weights, settings, SentencePiece
models and vocabulary; a fresh optimiser, schedule and step count; validation before the
first update. For mtkit's own checkpoints and imported Marian models alike."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest
import torch
from conftest import tiny_train_config

from mtkit.checkpoint import load_checkpoint, model_from_checkpoint
from mtkit.errors import ConfigError
from mtkit.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _head(path: Path, n: int, skip: int = 0) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as file:
        return [line.rstrip("\n") for _, line in zip(range(skip + n), file, strict=False)][skip:]


def _data(directory: Path, multi30k: Path, skip: int) -> Path:
    """600 de-en training pairs from line `skip` on, 20 validation pairs."""
    directory.mkdir(parents=True)
    for lang in ("de", "en"):
        train_lines = _head(multi30k / f"train.{lang}.gz", 600, skip)
        (directory / f"train.{lang}").write_text("\n".join(train_lines) + "\n")
        (directory / f"valid.{lang}").write_text("\n".join(_head(multi30k / f"val.{lang}.gz", 20)))
    (directory / "manifest.json").write_text(json.dumps({"src": "de", "tgt": "en"}))
    return directory


def _config(data: Path, out: Path, **changes) -> TrainConfig:
    values = dict(max_tokens=600, max_updates=3, warmup=2, lr=2e-3, valid_bleu_sentences=4)
    return tiny_train_config(data, out, **(values | changes))


@pytest.fixture(scope="module")
def own_run(tmp_path_factory, multi30k):
    """A tiny mtkit run on one slice of Multi30k, and data from another slice."""
    from mtkit.tokenizer import SpmOptions, train_spm

    root = tmp_path_factory.mktemp("ft")
    first, second = _data(root / "a", multi30k, 0), _data(root / "b", multi30k, 600)
    (spm,) = train_spm([first / "train.de", first / "train.en"], root / "spm", SpmOptions(300))
    train(_config(first, root / "base", spm=str(spm)))
    return {"base": root / "base" / "checkpoint_last.pt", "data": second, "root": root}


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_init_from_own_checkpoint_starts_fresh_from_its_weights(own_run, caplog):
    base = load_checkpoint(own_run["base"])
    out = own_run["root"] / "ft"
    with caplog.at_level(logging.INFO, logger="mtkit.train.setup"):
        train(_config(own_run["data"], out, init_from=str(own_run["base"]), max_updates=2))
    assert "step 0 (--init-from, before any update): valid loss" in caplog.text
    tuned = load_checkpoint(out / "checkpoint_last.pt")
    assert tuned["step"] == 2  # a fresh step count, not the base's 3 + 2
    assert tuned["spm"] == base["spm"] and tuned["model_config"] == base["model_config"]
    assert "valid_bleu" in tuned["metrics"]  # the validation before the first update
    records = [r for r in _metrics(out) if r["kind"] == "train"]
    assert records[0]["step"] == 1 and records[0]["lr"] < 2e-3  # the warm-up starts again
    start = [r for r in _metrics(out) if r["kind"] == "valid" and r["step"] == 0]
    assert start and start[0]["valid_bleu"] == tuned["metrics"]["valid_bleu"]  # curves start there
    changed = [k for k, v in tuned["model"].items() if not torch.equal(v, base["model"][k])]
    assert changed  # it trained


def test_init_from_weights_are_the_checkpoints(own_run):
    """Before any update the model is the checkpoint's (seed and init do not matter)."""
    from mtkit import distributed
    from mtkit.train.setup import build_trainer

    config = _config(own_run["data"], own_run["root"] / "w", init_from=str(own_run["base"]), seed=7)
    dist = distributed.setup(config.device)
    try:
        trainer = build_trainer(config, dist)
    finally:
        distributed.teardown(dist)
    base = load_checkpoint(own_run["base"])["model"]
    assert all(torch.equal(v, base[k]) for k, v in trainer.raw.state_dict().items())


def test_init_from_refuses_spm(own_run):
    config = _config(own_run["data"], own_run["root"] / "y", init_from="x.pt", spm="spm.model")
    with pytest.raises(ConfigError, match="--init-from brings the checkpoint's own"):
        train(config)


def test_init_from_imported_marian_model_keeps_its_vocabulary(own_run, multi30k, tmp_path):
    """An imported model fine-tunes on text tokenized through its own id table, and the
    fine-tuned checkpoint keeps the table, the Marian settings and the fixed output bias."""
    from test_import import SHAPES, _build

    from mtkit.interop.marian import import_marian
    from mtkit.translate.stream import load_translator, translate_lines

    with pytest.warns(UserWarning):
        directory, _, _ = _build(tmp_path, multi30k, "marian", SHAPES["shared-swish"])
    imported = load_checkpoint(import_marian(directory, tmp_path / "opus.pt"))
    out = tmp_path / "ft"
    train(_config(own_run["data"], out, init_from=str(tmp_path / "opus.pt"), model_overrides={}))
    tuned = load_checkpoint(out / "checkpoint_last.pt")
    assert tuned["vocab"] == imported["vocab"] and tuned["step"] == 3
    assert tuned["model_config"] == imported["model_config"]
    assert torch.equal(tuned["model"]["final_logits_bias"], imported["model"]["final_logits_bias"])
    assert not torch.equal(
        tuned["model"]["tgt_embed.weight"], imported["model"]["tgt_embed.weight"]
    )
    model_from_checkpoint(tuned)
    lines = ["Ein Hund läuft.", ""]
    translator = load_translator([out / "checkpoint_last.pt"])
    assert [h[0][0] for h in translate_lines(translator, lines)][1] == ""


def test_init_from_with_a_shape_changing_setting_is_one_clear_error(own_run):
    config = _config(
        own_run["data"],
        own_run["root"] / "z",
        init_from=str(own_run["base"]),
        model_overrides={"d_ff": 128},
    )
    with pytest.raises(ConfigError, match="do not fit the model its settings and --set give"):
        train(config)
