"""Training: it learns, resumes exactly, stops when told, survives SIGTERM, runs under
torchrun, and says clearly what is wrong with its input. Tiny models on real Multi30k."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY, call_main, records, tiny_train_config  # noqa: F401 (records: shared)

from mtkit.errors import ConfigError, DataError, MtkitError
from mtkit.train import TrainConfig, parse_duration, train
from mtkit.train.optim import label_smoothed_loss, lr_at

TINY_FLAGS = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]


def head(path: Path, n: int) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as file:
        return [next(file).rstrip("\n") for _ in range(n)]


def write_data(directory: Path, train: dict, valid: dict, manifest: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for split, sides in (("train", train), ("valid", valid)):
        for lang, lines in sides.items():
            (directory / f"{split}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if manifest:
        (directory / "manifest.json").write_text(json.dumps({"src": "de", "tgt": "en"}))
    return directory


@pytest.fixture(scope="session")
def m30k(multi30k, tmp_path_factory) -> dict:
    """2,000 Multi30k de-en training pairs, 40 validation pairs, and a 600-piece joint BPE."""
    from mtkit.tokenizer import SpmOptions, train_spm

    root = tmp_path_factory.mktemp("m30k")
    train_lines = {lang: head(multi30k / f"train.{lang}.gz", 2000) for lang in ("de", "en")}
    valid_lines = {lang: head(multi30k / f"val.{lang}.gz", 40) for lang in ("de", "en")}
    data = write_data(root / "data", train_lines, valid_lines)
    (spm,) = train_spm(
        [data / "train.de", data / "train.en"], root / "spm", SpmOptions(vocab_size=600)
    )
    # A few pairs to learn by heart: training and validation are the same 120 pairs.
    small = {lang: lines[:120] for lang, lines in train_lines.items()}
    memorise = write_data(root / "memorise", small, small)
    return {"data": data, "spm": spm, "memorise": memorise, "lines": train_lines}


def tiny_config(m30k, out: Path, **changes) -> TrainConfig:
    values = {"spm": str(m30k["spm"])} | changes
    return tiny_train_config(values.pop("data", m30k["data"]), out, **values)


# -- the objective and the schedule -------------------------------------------------------


def test_label_smoothed_loss_and_gradient_match_torch():
    logits = torch.randn(2, 5, 11, dtype=torch.float64, requires_grad=True)
    target = torch.randint(1, 11, (2, 5))
    target[1, 3:] = 0  # padding
    loss, nll = label_smoothed_loss(logits, target, pad_id=0, smoothing=0.1)
    flat = dict(input=logits.view(-1, 11), target=target.view(-1), ignore_index=0, reduction="sum")
    expected = torch.nn.functional.cross_entropy(**flat, label_smoothing=0.1)
    torch.testing.assert_close(loss, expected.float())
    torch.testing.assert_close(nll, torch.nn.functional.cross_entropy(**flat).float())
    (grad,) = torch.autograd.grad(loss, logits)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)
    assert grad[1, 3:].abs().sum() == 0  # padding gets no gradient


def test_padding_changes_no_loss():
    """A pair's loss is the same alone and in a batch padded for a longer pair."""
    from mtkit.models import ModelConfig, build_model
    from mtkit.train.batching import collate, encode_pairs

    config = ModelConfig(src_vocab_size=40, tgt_vocab_size=40, dropout=0.0, **TINY)
    model = build_model(config).eval()
    words = lambda lines: [[4 + len(w) for w in line.split()] for line in lines]  # noqa: E731
    pairs = encode_pairs(["a bb", "c dd eee f gg h"], ["x", "yy zzz q r s t u"], words, words)

    def loss_of(index):
        batch = collate(pairs, index, pad_id=0, bos_id=2, eos_id=3)
        logits = model(batch.src, batch.tgt_in)
        return label_smoothed_loss(logits, batch.tgt_out, pad_id=0, smoothing=0.1)[0]

    with torch.no_grad():
        torch.testing.assert_close(loss_of([0, 1]), loss_of([0]) + loss_of([1]))


def test_learning_rate_schedules():
    kw = dict(lr=1e-3, warmup=100, max_updates=1000)
    assert lr_at(50, schedule="inverse_sqrt", **kw) == pytest.approx(5e-4)
    assert lr_at(100, schedule="inverse_sqrt", **kw) == pytest.approx(1e-3)
    assert lr_at(400, schedule="inverse_sqrt", **kw) == pytest.approx(5e-4)
    assert lr_at(1000, schedule="cosine", **kw) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(550, schedule="cosine", **kw) == pytest.approx(5e-4)
    assert lr_at(900, schedule="constant", **kw) == 1e-3


@pytest.mark.parametrize(
    "text, seconds", [("90", 90), ("90s", 90), ("20m", 1200), ("1h30m", 5400), ("1.5h", 5400)]
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


def test_parse_duration_rejects_nonsense():
    with pytest.raises(ConfigError, match="20m"):
        parse_duration("twenty minutes")


# -- training runs --------------------------------------------------------------------


def test_learns_a_few_hundred_pairs(m30k, tmp_path):
    """120 pairs learnt by heart: the loss falls close to zero and BLEU on them is high."""
    config = tiny_config(
        m30k,
        tmp_path / "run",
        data=str(m30k["memorise"]),
        model_overrides=dict(TINY, d_model=64, d_ff=256, dropout=0.0),
        max_tokens=1200,
        max_updates=100,
        lr=1e-2,
        warmup=10,
        schedule="constant",
        label_smoothing=0.0,
        log_every=10,
        valid_bleu_sentences=20,
    )
    result = train(config)
    losses = [r["loss"] for r in records(tmp_path / "run", "train")]
    assert losses[0] > 5.0 and losses[-1] < 0.5
    assert result.last_valid["valid_nll_loss"] < 0.5
    assert result.last_valid["valid_bleu"] > 50


def test_resume_continues_the_same_loss_curve(m30k, tmp_path):
    """6 updates straight == 3 updates, stop, --resume, 3 more (dropout on, accumulation 2)."""
    kw = dict(update_freq=2, model_overrides=dict(TINY, dropout=0.3))
    straight = train(tiny_config(m30k, tmp_path / "a", max_updates=6, **kw))
    train(tiny_config(m30k, tmp_path / "b", max_updates=3, **kw))
    resumed = train(tiny_config(m30k, tmp_path / "b", max_updates=6, resume=True, **kw))
    assert straight.step == resumed.step == 6
    curve_a = [(r["step"], r["loss"]) for r in records(tmp_path / "a", "train")]
    curve_b = [(r["step"], r["loss"]) for r in records(tmp_path / "b", "train")]
    assert [s for s, _ in curve_b] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in curve_a] == [1, 2, 3, 4, 5, 6]
    assert [x for _, x in curve_b] == pytest.approx([x for _, x in curve_a], rel=1e-6)
    again = train(tiny_config(m30k, tmp_path / "b", max_updates=6, resume=True, **kw))
    assert again.step == 6 and len(records(tmp_path / "b", "train")) == 6  # nothing more to do
    a = torch.load(tmp_path / "a" / "checkpoint_last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint_last.pt", weights_only=True)["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_stops_after_one_epoch_and_validates(m30k, tmp_path):
    result = train(tiny_config(m30k, tmp_path / "run", data=str(m30k["memorise"]), max_epochs=1))
    assert result.stopped_by == "max_epochs" and result.epoch == 1
    (valid,) = records(tmp_path / "run", "valid")
    assert valid["step"] == result.step
    assert {"valid_loss", "valid_ppl", "valid_bleu", "best_bleu"} <= valid.keys()
    assert math.isclose(valid["valid_ppl"], math.exp(valid["valid_nll_loss"]))
    assert (tmp_path / "run" / "checkpoint_best.pt").exists()


def test_early_stopping_with_patience(m30k, tmp_path):
    """A learning rate too small to change greedy output: BLEU never improves."""
    result = train(
        tiny_config(m30k, tmp_path / "run", lr=1e-12, valid_every=2, patience=2, max_updates=50)
    )
    assert result.stopped_by == "patience" and result.step == 6
    assert result.best["step"] == 2


def test_time_limit(m30k, tmp_path):
    result = train(tiny_config(m30k, tmp_path / "run", max_time=1e-3))
    assert result.stopped_by == "max_time" and result.step == 1


def test_rnn_trains(m30k, tmp_path):
    overrides = {"d_model": 32, "enc_layers": 1, "dec_layers": 1}
    result = train(
        tiny_config(m30k, tmp_path / "run", arch="rnn", model_overrides=overrides, max_updates=3)
    )
    losses = [r["loss"] for r in records(tmp_path / "run", "train")]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert result.last_valid["valid_loss"] > 0


def test_out_of_memory_says_what_to_do(m30k, tmp_path, monkeypatch):
    from mtkit import distributed
    from mtkit.train.setup import build_trainer

    trainer = build_trainer(tiny_config(m30k, tmp_path / "run"), distributed.setup("cpu"))

    def explode(*args):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB")

    monkeypatch.setattr(trainer, "_forward_backward", explode)
    with pytest.raises(MtkitError, match=r"--max-tokens 800; lower --max-tokens \(e.g. 400\)"):
        trainer.run()


def test_separate_vocabularies_and_config_file(m30k, tmp_path):
    """--src-spm/--tgt-spm: no shared embeddings; --config takes a run's config.json."""
    from mtkit.tokenizer import SpmOptions, train_spm
    from mtkit.train.config import model_overrides

    data = m30k["data"]
    src_spm, tgt_spm = train_spm(
        [data / "train.de", data / "train.en"],
        tmp_path / "spm",
        SpmOptions(vocab_size=500),
        separate=True,
    )
    (tmp_path / "config.json").write_text(json.dumps({"model": {**TINY, "src_vocab_size": 9}}))
    overrides = model_overrides(str(tmp_path / "config.json"), ["dropout=0.2"])
    assert overrides == {**TINY, "dropout": "0.2"}
    config = tiny_config(
        m30k,
        tmp_path / "run",
        spm=None,
        src_spm=str(src_spm),
        tgt_spm=str(tgt_spm),
        model_overrides=overrides,
        max_updates=2,
    )
    swapped = dataclasses.replace(config, src_spm=config.tgt_spm, tgt_spm=config.src_spm)
    with pytest.raises(DataError, match="swapped"):
        train(swapped)
    train(config)
    ckpt = torch.load(tmp_path / "run" / "checkpoint_last.pt", weights_only=True)
    assert ckpt["model_config"]["share_embeddings"] is False
    assert ckpt["model_config"]["dropout"] == 0.2
    assert ckpt["spm"]["src"] == src_spm.read_bytes() and ckpt["spm"]["tgt"] != ckpt["spm"]["src"]


def test_update_with_nonfinite_gradient_is_skipped(m30k, tmp_path, monkeypatch):
    from mtkit import distributed
    from mtkit.train.setup import build_trainer

    trainer = build_trainer(tiny_config(m30k, tmp_path / "run"), distributed.setup("cpu"))
    forward_backward = trainer._forward_backward

    def poisoned(*args):
        forward_backward(*args)
        next(trainer.raw.parameters()).grad[0] = float("nan")

    before = {k: v.clone() for k, v in trainer.raw.state_dict().items()}
    monkeypatch.setattr(trainer, "_forward_backward", poisoned)
    trainer.train_step([0])
    after = trainer.raw.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert trainer.interval.take(trainer.dist, time.monotonic())["skipped_updates"] == 1


def test_vocabulary_that_does_not_cover_the_pair(m30k, tmp_path):
    """Source text in another script: the joint model leaves most pieces unknown."""
    cyrillic = str.maketrans("aeiouptkbdg", "аеиоуптквдг")
    lines = {lang: m30k["lines"][lang][:50] for lang in ("de", "en")}
    lines["de"] = [line.translate(cyrillic) for line in lines["de"]]
    data = write_data(tmp_path / "data", lines, lines)
    with pytest.raises(DataError, match=r"unknown \(limit 5%\).*train-bpe"):
        train(tiny_config(m30k, tmp_path / "run", data=str(data)))


# -- the command line ------------------------------------------------------------------


def mtkit_args(m30k, out: Path, *extra: str) -> list[str]:
    base = ["train", "--data", m30k["data"], "--spm", m30k["spm"], "--out", out]
    flags = ["--max-tokens", "800", "--warmup", "5", "--lr", "3e-3", "--threads", "1"]
    return [*base, *flags, "--device", "cpu", *TINY_FLAGS, "--valid-bleu-sentences", "8", *extra]


def main_in_process(capsys, monkeypatch, *args) -> tuple[int, str, str]:
    """`mtkit ARGS` in this process: (exit code, stdout, stderr)."""
    code = call_main(monkeypatch, *args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_end_to_end(m30k, tmp_path, cli, capsys, monkeypatch):
    run = tmp_path / "run"
    flags = ["--max-updates", "6", "--valid-every", "2", "--keep-last", "2", "--log-every", "3"]
    result = cli(*mtkit_args(m30k, run, *flags))  # a real process, as a user runs it
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # stdout is for data only
    names = sorted(p.name for p in run.iterdir())
    assert names == [
        "checkpoint_4.pt",
        "checkpoint_6.pt",
        "checkpoint_best.pt",
        "checkpoint_last.pt",
        "config.json",
        "metrics.jsonl",
    ]
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["d_model"] == 32 and config["langs"] == {"src": "de", "tgt": "en"}
    assert [r["step"] for r in records(run, "train")] == [3, 6]
    assert [r["step"] for r in records(run, "valid")] == [2, 4, 6]
    train_keys = {"loss", "lr", "tokens_per_s", "elapsed", "epoch"}
    assert train_keys <= records(run, "train")[0].keys()
    code, _, err = main_in_process(
        capsys, monkeypatch, "average", run, "--last", "2", "-o", run / "avg.pt"
    )
    assert code == 0, err
    code, out, _ = main_in_process(capsys, monkeypatch, "inspect", run / "avg.pt", "--json")
    info = json.loads(out)
    assert info["step"] == 6 and not info["resumable"] and info["langs"]["tgt"] == "en"
    assert info["metrics"]["averaged"] == [
        str(run / "checkpoint_4.pt"),
        str(run / "checkpoint_6.pt"),
    ]


@pytest.mark.parametrize(
    "problem, message",
    [
        ("no valid file", "data file not found"),
        ("no languages", "pass --src and --tgt"),
        ("no spm", "no SentencePiece model"),
        ("existing run", "already holds a run (checkpoint_last.pt); pass --resume"),
        ("resume mismatch", "differ from the saved run (max_tokens: 800 -> 900; model d_model"),
    ],
)
def test_cli_errors(m30k, tmp_path, capsys, monkeypatch, problem, message):
    lines = {lang: m30k["lines"][lang][:20] for lang in ("de", "en")}
    data = write_data(tmp_path / "data", lines, lines, manifest=problem != "no languages")
    if problem == "no valid file":
        (data / "valid.en").unlink()
    run = tmp_path / "run"
    args = mtkit_args(m30k, run, "--max-updates", "1")
    args[args.index("--data") + 1] = data
    if problem == "no spm":
        del args[args.index("--spm") : args.index("--spm") + 2]
    if problem in ("existing run", "resume mismatch"):
        assert main_in_process(capsys, monkeypatch, *args)[0] == 0
    if problem == "resume mismatch":
        args[args.index("--max-tokens") + 1] = "900"
        args += ["--resume", "--set", "d_model=64"]
    code, out, err = main_in_process(capsys, monkeypatch, *args)
    assert code == 1 and out == ""
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_sigterm_saves_and_resume_goes_on(m30k, tmp_path):
    run = tmp_path / "run"
    args = mtkit_args(m30k, run, "--max-updates", "100000", "--log-every", "1")
    process = subprocess.Popen(
        [sys.executable, "-m", "mtkit", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "checkpoint_last.pt saved" in stderr and "Traceback" not in stderr
    ckpt = torch.load(run / "checkpoint_last.pt", weights_only=True)
    stopped_at = ckpt["step"]
    assert stopped_at >= 2
    resumed = train(tiny_config(m30k, run, max_updates=stopped_at + 2, resume=True))
    assert resumed.step == stopped_at + 2 and resumed.stopped_by == "max_updates"
    assert [r["step"] for r in records(run, "train")] == list(range(1, stopped_at + 3))


def free_port() -> int:
    """A port no one listens on now: two test runs on one machine do not collide."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def busy_cpu(processes: int = 2):
    """Processes that keep every core busy while the block runs (users' machines are not quiet)."""
    spin = [sys.executable, "-c", "while True: pass"]
    busy = [subprocess.Popen(spin) for _ in range(processes)]
    try:
        yield
    finally:
        for process in busy:
            process.kill()
            process.wait()


def test_torchrun_two_processes(m30k, tmp_path):
    """DDP on the CPU (gloo) on a busy machine: two ranks share the batches; rank 0 alone
    writes; both leave cleanly (no abort at shutdown)."""
    run = tmp_path / "run"
    args = mtkit_args(m30k, run, "--max-updates", "4", "--log-every", "2", "--valid-every", "4")
    args += ["--set", "dropout=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", str(free_port()), "-m", "mtkit", *map(str, args)]
    with busy_cpu():
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "terminate called" not in result.stderr
    ckpt = torch.load(run / "checkpoint_last.pt", weights_only=True)
    assert ckpt["step"] == 4 and ckpt["train_config"]["world_size"] == 2
    assert len(ckpt["train_state"]["rng"]) == 2  # each rank's generators, for exact resume
    assert [r["step"] for r in records(run, "train")] == [2, 4]  # one writer
    assert not any(k.startswith("module.") for k in ckpt["model"])
    # The same batches in one process, two per update: the same gradients, the same weights.
    single = tiny_config(
        m30k,
        tmp_path / "single",
        max_updates=4,
        update_freq=2,
        model_overrides=dict(TINY, dropout=0.0),
    )
    train(single)
    alone = torch.load(tmp_path / "single" / "checkpoint_last.pt", weights_only=True)["model"]
    for key, value in ckpt["model"].items():
        torch.testing.assert_close(value, alone[key], atol=1e-5, rtol=1e-4)


# -- WMT-size runs: no valid split, chrF selection, cheap checkpoints ------------------------


def test_trains_without_a_valid_split(m30k, tmp_path, caplog):
    lines = {lang: m30k["lines"][lang][:60] for lang in ("de", "en")}
    data = write_data(tmp_path / "data", lines, {})
    result = train(
        tiny_config(m30k, tmp_path / "run", data=str(data), max_updates=3, valid_every=2)
    )
    assert result.stopped_by == "max_updates" and result.last_valid == {}
    names = sorted(p.name for p in (tmp_path / "run").glob("checkpoint_*.pt"))
    assert names == ["checkpoint_2.pt", "checkpoint_3.pt", "checkpoint_last.pt"]
    assert records(tmp_path / "run", "valid") == []
    warnings = [r.message for r in caplog.records if "no valid split" in r.getMessage()]
    assert len(warnings) == 1
    assert (data / ".encoded").is_dir()  # the encoded corpus sits next to the data


def test_chrf_selects_the_best_checkpoint(m30k, tmp_path):
    run = tmp_path / "run"
    config = tiny_config(
        m30k, run, data=str(m30k["memorise"]), best_metric="chrf", valid_every=3, max_updates=12
    )
    config.lr, config.valid_bleu_sentences = 1e-2, 20
    result = train(config)
    valid = records(run, "valid")
    assert all("valid_chrf" in r and "valid_bleu" in r for r in valid)
    best = max(valid, key=lambda r: (r["valid_chrf"], -r["step"]))  # the first of the highest
    ckpt = torch.load(run / "checkpoint_best.pt", weights_only=True)
    assert ckpt["step"] == best["step"] == result.best["step"]
    assert ckpt["metrics"]["best_chrf"] == pytest.approx(best["valid_chrf"])


def test_numbered_checkpoints_hold_weights_only_and_timed_saves(m30k, tmp_path):
    """--save-every-minutes (here: at once) saves between validations; only
    checkpoint_last.pt carries the optimiser and RNG state."""
    run = tmp_path / "run"
    train(tiny_config(m30k, run, max_updates=3, valid_every=3, save_every_minutes=1e-9))
    for step in (1, 2, 3):
        numbered = torch.load(run / f"checkpoint_{step}.pt", weights_only=True)
        assert numbered["step"] == step and "train_state" not in numbered
    last = torch.load(run / "checkpoint_last.pt", weights_only=True)
    assert last["step"] == 3 and {"optimizer", "rng", "progress"} <= last["train_state"].keys()
    assert (run / "checkpoint_best.pt").samefile(run / "checkpoint_3.pt")
