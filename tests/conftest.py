"""Shared fixtures: the real Multi30k data beside the checkout, and running the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Tests never reach the Hugging Face hub: hub code is tested on local copies.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"


def _flags_without_amx() -> str:
    """This CPU's flags less AMX's: `--precision auto` then takes the fp32 path it takes
    on most CPUs, so the suite's figures are alike on every CPU (the bf16 path is tested
    with the flags given explicitly, tests/test_precision.py)."""
    from mtkit.device import cpu_flags

    return " ".join(sorted(f for f in cpu_flags() if not f.startswith("amx")))


os.environ.setdefault("MTKIT_CPU_FLAGS", _flags_without_amx())

REPO = Path(__file__).resolve().parent.parent
MULTI30K = Path(os.environ.get("MTKIT_MULTI30K", REPO.parent / "shared" / "data" / "multi30k"))


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` are skipped where torch sees no CUDA GPU (torch is imported
    only when such a test was collected)."""
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in marked:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def multi30k() -> Path:
    """Multi30k's gzipped text: train, val, test_2016_flickr × de, en, fr."""
    if not (MULTI30K / "train.de.gz").exists():
        pytest.fail(f"Multi30k not found at {MULTI30K}; set MTKIT_MULTI30K")
    return MULTI30K


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (`pytestmark = pytest.mark.usefixtures(...)`): on a
    busy 2-core machine two spin-waiting threads are many times slower than one."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def run_mtkit(*args: str, input: str | None = None, cwd: Path | None = None):
    """Run `python -m mtkit ARGS` as a user would; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "mtkit", *map(str, args)],
        input=input,
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "120"},
    )


@pytest.fixture
def cli():
    """The `run_mtkit` function, for tests that drive the command line."""
    return run_mtkit


def call_main(monkeypatch, *args: str, stdin: bytes | None = None) -> int:
    """`mtkit ARGS` through the real entry point, in this process (no torch start-up
    per call); returns the exit code. The caller reads output from capsys."""
    import io

    from mtkit.cli import main

    monkeypatch.setattr(sys, "argv", ["mtkit", *map(str, args)])
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    try:
        main()
    except SystemExit as exit:
        return exit.code or 0
    return 0


# -- a tiny training run, shared by the training tests ------------------------------------

TINY = {"d_model": 32, "n_heads": 2, "d_ff": 64, "enc_layers": 1, "dec_layers": 1}


def tiny_train_config(data, out: Path, **changes):
    """A TrainConfig for a tiny model on one CPU thread, a metrics line every update."""
    from mtkit.train import TrainConfig

    values = dict(
        data=data if isinstance(data, list) else str(data),  # a list: several corpora
        out=str(out),
        model_overrides=dict(TINY),
        max_tokens=800,
        warmup=5,
        lr=3e-3,
        valid_every=1000,
        valid_bleu_sentences=8,
        log_every=1,
        threads=1,
        device="cpu",
    )
    return TrainConfig(**(values | changes))


def records(run: Path, kind: str) -> list[dict]:
    """The metrics.jsonl records of one kind (train, valid, mix) of a run."""
    import json

    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


# -- tiny NLLB-200 / M2M-100 models laid out like the hub's (tests/m2m100copy.py) ----------

M2M100_STYLES = ("nllb", "nllb-legacy", "m2m100")
M2M100_LIMIT = 16  # target tokens before </s>: the length limit of their comparisons


@pytest.fixture(scope="session")
def m2m100_spm(multi30k) -> bytes:
    """One SentencePiece BPE model on de, en and fr Multi30k lines, for every style."""
    from m2m100copy import train_spm

    return train_spm(multi30k)


@pytest.fixture(scope="module", params=M2M100_STYLES)
def hf_m2m100(request, tmp_path_factory, multi30k, m2m100_spm):
    """A random tiny M2M100ForConditionalGeneration saved as the hub lays out NLLB-200
    (current and legacy_behaviour tokenizers) or M2M-100: an m2m100copy.HfModel."""
    from m2m100copy import build_m2m100_dir, lines

    directory = tmp_path_factory.mktemp("m2m100") / request.param
    tune = lines(multi30k, "de", 16, split="val")
    return build_m2m100_dir(directory, m2m100_spm, request.param, tune, M2M100_LIMIT)
