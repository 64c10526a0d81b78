"""The encoded training corpus on disk: built once, reused, rebuilt on change, never half-used."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mtkit.train import corpus
from mtkit.train.batching import encode_pairs

REPO = Path(__file__).resolve().parent.parent


class FakeTokenizer:
    """A tokenizer without SentencePiece: one id per word, from the word's length."""

    def __init__(
        self, model: bytes = b"fake-model-1", vocab_size: int = 300, vocab: list | None = None
    ) -> None:
        self.model_bytes, self.vocab_size, self.name = model, vocab_size, "fake"
        self.vocab = vocab  # an imported model's own piece->id table, or None

    def encode(self, lines: list[str]) -> list[list[int]]:
        return [[4 + len(word) for word in line.split()] for line in lines]


def write_corpus(directory: Path, n: int = 50, extra: str = "") -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"src": directory / "train.de", "tgt": directory / "train.en"}
    src = [f"ein {'wort ' * (i % 7)}satz {i}" for i in range(n)]
    tgt = [f"a {'word ' * (i % 5)}sentence {i}{extra}" for i in range(n)]
    paths["src"].write_text("\n".join(src) + "\n")
    paths["tgt"].write_text("\n".join(tgt) + "\n")
    return paths


def built_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if (p / "meta.json").is_file())


def test_cache_is_built_once_then_mapped(tmp_path, monkeypatch):
    paths, tok = write_corpus(tmp_path), FakeTokenizer()
    root = tmp_path / ".encoded"
    first = corpus.open_corpus(paths, {"src": tok, "tgt": tok}, root)
    lines = {side: path.read_text().splitlines() for side, path in paths.items()}
    expected = encode_pairs(lines["src"], lines["tgt"], tok.encode, tok.encode)
    assert first.src.ids.dtype == np.uint16  # the smallest type for 300 ids
    assert np.array_equal(first.src.ids, expected.src.ids)
    assert np.array_equal(first.tgt.offsets, expected.tgt.offsets)

    def no_build(*args):
        raise AssertionError("the corpus was encoded again")

    monkeypatch.setattr(corpus, "_build", no_build)
    again = corpus.open_corpus(paths, {"src": tok, "tgt": tok}, root)
    assert isinstance(again.src.ids, np.memmap)
    assert np.array_equal(again.tgt.ids, first.tgt.ids)
    assert len(built_dirs(root)) == 1


def test_changed_text_or_model_gives_a_new_corpus(tmp_path):
    paths, tok = write_corpus(tmp_path), FakeTokenizer()
    root = tmp_path / ".encoded"
    corpus.open_corpus(paths, {"src": tok, "tgt": tok}, root)
    write_corpus(tmp_path, extra=" extra")  # the target text changes
    changed = corpus.open_corpus(paths, {"src": tok, "tgt": tok}, root)
    assert changed.tgt.sentence(0)[-1] == 4 + len("extra")
    other = FakeTokenizer(model=b"fake-model-2")
    corpus.open_corpus(paths, {"src": tok, "tgt": other}, root)
    assert len(built_dirs(root)) == 3
    # The same SentencePiece model with another piece->id table maps pieces anew.
    table = FakeTokenizer(vocab=["</s>", "<unk>", "a", "<pad>"])
    corpus.open_corpus(paths, {"src": tok, "tgt": table}, root)
    assert len(built_dirs(root)) == 4


def test_half_written_corpus_is_never_used(tmp_path, monkeypatch):
    paths, tok = write_corpus(tmp_path), FakeTokenizer()
    toks = {"src": tok, "tgt": tok}
    root = tmp_path / ".encoded"
    root.mkdir()
    key = corpus.corpus_key(paths, toks, root)
    # A crashed build's temporary directory, and a final name without meta.json.
    (root / f".tmp-{key}-99999").mkdir()
    (root / f".tmp-{key}-99999" / "src.ids").write_bytes(b"\0" * 10)
    (root / key).mkdir()
    (root / key / "src.ids").write_bytes(b"garbage")

    def crash(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(corpus, "_check_counts", crash)
    with pytest.raises(KeyboardInterrupt):
        corpus.open_corpus(paths, toks, root)
    assert not (root / key / "meta.json").exists()
    assert [p.name for p in root.iterdir() if p.name.startswith(".tmp")] == []
    monkeypatch.undo()
    pairs = corpus.open_corpus(paths, toks, root)
    assert len(pairs) == 50 and pairs.src.sentence(0) == tok.encode(["ein satz 0"])[0]


CHILD = """
import hashlib, logging, sys, time
sys.path.insert(0, {tests!r})
from mtkit.train import batching, corpus
from test_corpus_cache import FakeTokenizer, write_corpus

logging.basicConfig(level=logging.INFO)
batching.ENCODE_CHUNK = 10
tok = FakeTokenizer()
slow = tok.encode
tok.encode = lambda lines: (time.sleep(0.1), slow(lines))[1]  # a build of about 2 s
paths = {{"src": {src!r}, "tgt": {tgt!r}}}
pairs = corpus.open_corpus(paths, {{"src": tok, "tgt": tok}}, corpus.Path({root!r}))
print(pairs.src.ids.filename, hashlib.sha256(pairs.tgt.ids.tobytes()).hexdigest())
"""


def test_two_processes_starting_at_once_build_once_and_map_one_file(tmp_path):
    paths = write_corpus(tmp_path / "data", n=100)
    code = CHILD.format(
        tests=str(REPO / "tests"),
        src=str(paths["src"]),
        tgt=str(paths["tgt"]),
        root=str(tmp_path / "data" / ".encoded"),
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [child.communicate(timeout=120) for child in children]
    for child, (_, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err
    outputs = {out.strip() for out, _ in results}
    assert len(outputs) == 1  # the same file, the same contents
    assert sum(err.count("encoded 100 training pairs once") for _, err in results) == 1
    meta = json.loads((built_dirs(tmp_path / "data" / ".encoded")[0] / "meta.json").read_text())
    assert meta["pairs"] == 100
    digest = hashlib.sha256(b"").hexdigest()
    assert digest not in outputs.pop()


def test_batches_are_cut_once_and_mapped(tmp_path, monkeypatch):
    from mtkit.train import batching

    paths, tok = write_corpus(tmp_path, n=200), FakeTokenizer()
    pairs = corpus.open_corpus(paths, {"src": tok, "tgt": tok}, tmp_path / ".encoded")
    first, dropped = corpus.run_batches(pairs, max_len=9, max_tokens=60, seed=3)
    in_memory = batching.make_batches(
        pairs, max_tokens=60, seed=3, index=batching.keep_index(pairs, max_len=9, max_tokens=60)[0]
    )
    assert first == in_memory and dropped["longer_than_max_positions"] > 0

    def no_cut(*args, **kwargs):
        raise AssertionError("the batches were cut again")

    monkeypatch.setattr(corpus, "make_batches", no_cut)
    again, dropped_again = corpus.run_batches(pairs, max_len=9, max_tokens=60, seed=3)
    assert isinstance(again.order, np.memmap) and again == first and dropped_again == dropped
    assert again.target_tokens(pairs).tolist() == in_memory.target_tokens(pairs).tolist()
