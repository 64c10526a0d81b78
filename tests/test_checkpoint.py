"""The checkpoint file: roundtrip, weights_only, clear errors, prefixes, averaging, pruning."""

from __future__ import annotations

import dataclasses
import random
import sys

import pytest
import torch

from mtkit.checkpoint import (
    FORMAT_VERSION,
    average_checkpoints,
    average_inputs,
    load_checkpoint,
    model_from_checkpoint,
    numbered_checkpoints,
    plain_state_dict,
    prune_checkpoints,
    save_checkpoint,
)
from mtkit.errors import CheckpointError
from mtkit.models import ModelConfig, build_model
from mtkit.train.state import rng_state, set_rng_state

TINY = ModelConfig(
    src_vocab_size=50, tgt_vocab_size=50, d_model=16, n_heads=2, d_ff=32, enc_layers=1, dec_layers=1
)


def payload(seed: int = 0, step: int = 10) -> dict:
    torch.manual_seed(seed)
    model = build_model(TINY)
    return {
        "model_config": dataclasses.asdict(TINY),
        "model": model.state_dict(),
        "spm": {"src": b"\x00spm-bytes\xff", "tgt": b"\x00spm-bytes\xff"},
        "langs": {"src": "de", "tgt": "en"},
        "train_config": {"max_tokens": 100},
        "train_state": {"rng": [rng_state(torch.device("cpu"))], "progress": {"step": step}},
        "step": step,
        "epoch": 1,
        "metrics": {"valid_bleu": 1.5},
    }


def test_roundtrip_and_weights_only(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", payload())
    ckpt = load_checkpoint(path)
    raw = torch.load(path, weights_only=True)  # what any user can do safely
    assert raw["format"] == "mtkit-checkpoint" and raw["format_version"] == FORMAT_VERSION
    assert ckpt["spm"]["src"] == b"\x00spm-bytes\xff"
    for key, value in payload()["model"].items():
        assert torch.equal(ckpt["model"][key], value)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary files left


def test_rng_states_survive_weights_only(tmp_path):
    random.seed(5)
    torch.manual_seed(5)
    path = save_checkpoint(tmp_path / "c.pt", payload())
    state = load_checkpoint(path)["train_state"]["rng"][0]
    expected = (random.random(), torch.rand(3))
    random.seed(0)
    torch.manual_seed(0)
    set_rng_state(state, torch.device("cpu"))
    assert random.random() == expected[0]
    assert torch.equal(torch.rand(3), expected[1])


def test_model_from_checkpoint_gives_the_same_model(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", payload())
    torch.manual_seed(0)
    original = build_model(TINY).eval()
    model = model_from_checkpoint(load_checkpoint(path))
    src, tgt = torch.randint(4, 50, (2, 5)), torch.randint(4, 50, (2, 4))
    assert not model.training
    assert torch.equal(model(src, tgt), original(src, tgt))


def test_wrapper_prefixes_are_removed(tmp_path):
    state = {f"module._orig_mod.{k}": v for k, v in payload()["model"].items()}
    assert plain_state_dict(state).keys() == payload()["model"].keys()
    path = save_checkpoint(tmp_path / "c.pt", {**payload(), "model": state})
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in load_checkpoint(path)["model"])


@pytest.mark.parametrize(
    "content, message",
    [
        (b"hello, I am text\n", "not a readable mtkit checkpoint"),
        (None, "not an mtkit checkpoint"),
        ("newer", "newer than this mtkit"),
        ("truncated", "truncated"),
    ],
)
def test_bad_files_raise_checkpoint_error(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    if content is None:
        torch.save({"weights": torch.zeros(2)}, path)
    elif content == "newer":
        save_checkpoint(path, payload())
        ckpt = torch.load(path, weights_only=True)
        torch.save({**ckpt, "format_version": FORMAT_VERSION + 1}, path)
    elif content == "truncated":
        save_checkpoint(path, payload())
        path.write_bytes(path.read_bytes()[:3000])
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")


def test_cli_reports_bad_checkpoint_in_one_line(tmp_path, capsys, monkeypatch):
    """Through mtkit's real entry point (in this process, to skip torch's start-up)."""
    from mtkit.cli import main

    path = tmp_path / "bad.pt"
    path.write_text("not a checkpoint")
    monkeypatch.setattr(sys, "argv", ["mtkit", "inspect", str(path)])
    with pytest.raises(SystemExit) as exit:
        main()
    err = capsys.readouterr().err
    assert exit.value.code == 1
    assert err.startswith("error: ") and "not a readable mtkit checkpoint" in err
    assert "Traceback" not in err


def test_average_of_identical_checkpoints_is_the_same(tmp_path):
    a = save_checkpoint(tmp_path / "checkpoint_1.pt", payload(seed=0))
    b = save_checkpoint(tmp_path / "checkpoint_2.pt", payload(seed=0))
    averaged = average_checkpoints([a, b])
    assert "train_state" not in averaged
    for key, value in payload(seed=0)["model"].items():
        assert torch.equal(averaged["model"][key], value)


def test_average_is_the_mean(tmp_path):
    a = save_checkpoint(tmp_path / "checkpoint_10.pt", payload(seed=0, step=10))
    b = save_checkpoint(tmp_path / "checkpoint_20.pt", payload(seed=1, step=20))
    save_checkpoint(tmp_path / "checkpoint_5.pt", payload(seed=2, step=5))  # older: left out
    paths = average_inputs([tmp_path], last=2)
    assert paths == [a, b]
    save_checkpoint(tmp_path / "avg.pt", average_checkpoints(paths))
    averaged = load_checkpoint(tmp_path / "avg.pt")
    first, second = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    for key, value in averaged["model"].items():
        torch.testing.assert_close(value, (first[key] + second[key]) / 2)
    assert averaged["step"] == 20 and "train_state" not in averaged


def test_keep_last_prunes_oldest(tmp_path):
    for step in (5, 10, 15, 20):
        (tmp_path / f"checkpoint_{step}.pt").write_bytes(b"x")
    (tmp_path / "checkpoint_best.pt").write_bytes(b"x")
    prune_checkpoints(tmp_path, keep_last=2)
    assert [p.name for p in numbered_checkpoints(tmp_path)] == [
        "checkpoint_15.pt",
        "checkpoint_20.pt",
    ]
    assert (tmp_path / "checkpoint_best.pt").exists()
