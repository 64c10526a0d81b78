"""Export to CTranslate2: the exported model decodes as mtkit does, on real Multi30k text.

Greedy outputs must be identical token for token; beam outputs with matching settings
(raw log-probability ranking, stop when the best candidate ends, as CTranslate2 does)
nearly all identical (float sums in another order can flip a near tie).
"""

from __future__ import annotations

import dataclasses
import gzip
import sys
from pathlib import Path

import pytest
import torch

ctranslate2 = pytest.importorskip("ctranslate2")

from conftest import call_main  # noqa: E402
from test_search import _config, _spm_bytes, checkpoint_payload, tiny_checkpoint  # noqa: E402

from mtkit.errors import CheckpointError, ConfigError, WriteError  # noqa: E402
from mtkit.interop.ctranslate2 import ExportOptions, export_ctranslate2  # noqa: E402

LINES = 100  # validation sentences decoded by both
MAX_LEN = 40


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _val_lines(multi30k: Path) -> list[str]:
    with gzip.open(multi30k / "val.de.gz", "rt", encoding="utf-8") as file:
        return [next(file).strip() for _ in range(LINES)]


def _post_norm_separate(multi30k: Path, tmp: Path) -> Path:
    """A post-norm model with separate embeddings and vocabularies (200 and 150 pieces),
    trained a few dozen steps to copy German text."""
    from mtkit.checkpoint import save_checkpoint
    from mtkit.models import build_model
    from mtkit.tokenizer import Tokenizer

    torch.manual_seed(1)
    with gzip.open(multi30k / "train.de.gz", "rt", encoding="utf-8") as file:
        lines = [next(file).strip() for _ in range(600)]
    src_spm, tgt_spm = _spm_bytes(lines), _spm_bytes(lines, vocab_size=150)
    config = dataclasses.replace(
        _config("transformer"), pre_norm=False, share_embeddings=False, tgt_vocab_size=150
    )
    model = build_model(config)
    pairs = zip(
        Tokenizer.from_bytes(src_spm).encode(lines),
        Tokenizer.from_bytes(tgt_spm).encode(lines),
        strict=True,
    )
    _train_pairs(model, [(s[:24], t[:24]) for s, t in pairs], steps=40)
    payload = checkpoint_payload(config, model, src_spm, tgt_spm, tgt_lang="xx", step=40)
    return save_checkpoint(tmp / "post.pt", payload)


def _train_pairs(model, pairs: list[tuple[list[int], list[int]]], steps: int) -> None:
    """Adam steps of teacher forcing on (source ids, target ids) pairs."""
    from mtkit.train.batching import pad_rows

    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(steps):
        pick = torch.randint(len(pairs), (32,), generator=generator).tolist()
        src = pad_rows([pairs[i][0] + [3] for i in pick], 0)
        tgt_in = pad_rows([[2] + pairs[i][1] for i in pick], 0)
        tgt_out = pad_rows([pairs[i][1] + [3] for i in pick], 0)
        logits = model(src, tgt_in)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt_out, ignore_index=0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def _both(checkpoint: Path, out: Path, lines: list[str], beam_size: int):
    """(mtkit's, CTranslate2's) best target ids of `lines` with matching settings."""
    from mtkit.checkpoint import load_checkpoint, model_from_checkpoint
    from mtkit.search import SearchOptions, search
    from mtkit.tokenizer import Tokenizer
    from mtkit.train.batching import pad_rows

    ckpt = load_checkpoint(checkpoint)
    src_tok, tgt_tok = (Tokenizer.from_bytes(ckpt["spm"][side]) for side in ("src", "tgt"))
    ids = [x[:30] for x in src_tok.encode(lines)]
    options = SearchOptions(
        beam_size=beam_size,
        max_len_a=0,
        max_len_b=MAX_LEN,
        len_penalty=0.0,
        early_stop=True,
        stop="count",  # CTranslate2 ends a sentence once its beam has finished
    )
    src = pad_rows([x + [3] for x in ids], 0)
    ours = [h[0].tokens for h in search(model_from_checkpoint(ckpt), src, options)]
    translator = ctranslate2.Translator(str(out), device="cpu", intra_threads=1)
    results = translator.translate_batch(
        [[src_tok.sp.id_to_piece(i) for i in x] for x in ids],
        beam_size=beam_size,
        max_decoding_length=MAX_LEN,  # tokens before eos, as mtkit's max_len
        length_penalty=0.0,
        suppress_sequences=[["<pad>"], ["<s>"]],  # mtkit never produces pad or bos
    )
    theirs = [[tgt_tok.sp.piece_to_id(p) for p in r.hypotheses[0]] for r in results]
    return ours, theirs


def test_greedy_identical_and_beam_nearly_pre_norm_shared(multi30k, tmp_path):
    checkpoint = tiny_checkpoint("transformer", multi30k)
    out = export_ctranslate2(checkpoint, tmp_path / "ct2")
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "model.bin", "shared_vocabulary.json", "spm.model",
    ]  # fmt: skip
    lines = _val_lines(multi30k)
    ours, theirs = _both(checkpoint, out, lines, beam_size=1)
    assert sum(len(x) for x in ours) > 5 * LINES  # real output, not empty lines
    assert ours == theirs
    ours, theirs = _both(checkpoint, out, lines, beam_size=5)
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    assert same >= 0.95 * LINES, f"beam 5: {same}/{LINES} identical"


def test_greedy_identical_post_norm_separate_vocabularies(multi30k, tmp_path):
    checkpoint = _post_norm_separate(multi30k, tmp_path)
    out = export_ctranslate2(checkpoint, tmp_path / "ct2")
    names = {p.name for p in out.iterdir()}
    assert {"source_vocabulary.json", "target_vocabulary.json"} <= names
    assert {"spm.de.model", "spm.xx.model"} <= names
    ours, theirs = _both(checkpoint, out, _val_lines(multi30k), beam_size=1)
    assert ours == theirs


def test_int8_export_is_smaller_and_translates(multi30k, tmp_path):
    checkpoint = tiny_checkpoint("transformer", multi30k)
    full = export_ctranslate2(checkpoint, tmp_path / "fp32")
    small = export_ctranslate2(checkpoint, tmp_path / "int8", ExportOptions(quantize="int8"))
    assert (small / "model.bin").stat().st_size < 0.5 * (full / "model.bin").stat().st_size
    lines = _val_lines(multi30k)[:20]
    ours, theirs = _both(checkpoint, small, lines, beam_size=1)
    assert len(theirs) == len(lines) and all(theirs)


def test_errors(multi30k, tmp_path, monkeypatch):
    transformer = tiny_checkpoint("transformer", multi30k)
    with pytest.raises(CheckpointError, match="RNN model; CTranslate2 runs Transformers only"):
        export_ctranslate2(tiny_checkpoint("rnn", multi30k), tmp_path / "rnn")
    assert not (tmp_path / "rnn").exists()
    with pytest.raises(ConfigError, match="unknown --format 'onnx'.*ctranslate2, transformers"):
        export_ctranslate2(transformer, tmp_path / "a", ExportOptions(to="onnx"))
    with pytest.raises(ConfigError, match="unknown --quantize 'int4'"):
        export_ctranslate2(transformer, tmp_path / "a", ExportOptions(quantize="int4"))
    (tmp_path / "taken").mkdir()
    with pytest.raises(WriteError, match="already exists; pass --force"):
        export_ctranslate2(transformer, tmp_path / "taken")
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"pip install 'mtkit\[ctranslate2\]'"):
        export_ctranslate2(transformer, tmp_path / "b")


def test_cli_one_error_line(multi30k, tmp_path, monkeypatch, capsys):
    rnn = tiny_checkpoint("rnn", multi30k)
    code = call_main(monkeypatch, "export", "-m", rnn, "--to", "ctranslate2", "-o", tmp_path / "x")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("error: ")
    transformer = tiny_checkpoint("transformer", multi30k)
    out = tmp_path / "ok"
    assert call_main(monkeypatch, "export", "-m", transformer, "-o", out, "--quantize", "int8") == 0
    assert (out / "model.bin").is_file()
