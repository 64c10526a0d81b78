"""Student presets and lexical shortlists: built from a tiny corpus, used by the search,
exported to CTranslate2's vocabulary map, and every bad input one line."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import call_main
from test_search import _spm_bytes, _train, checkpoint_payload, tiny_checkpoint

from mtkit.errors import ConfigError, DataError
from mtkit.models.config import override, preset_config
from mtkit.search import SearchOptions, search
from mtkit.shortlist import (
    Shortlist,
    ShortlistOptions,
    build_shortlist_file,
    load_shortlist,
    tokenizer_fingerprint,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LINES = 600


def _german(multi30k: Path, name: str = "train", n: int = LINES) -> list[str]:
    with gzip.open(multi30k / f"{name}.de.gz", "rt", encoding="utf-8") as file:
        return [next(file).strip() for _ in range(n)]


def _copy_data(multi30k: Path, tmp: Path) -> Path:
    """A data directory for the copy task the tiny test models learned: de -> de."""
    data = tmp / "data"
    data.mkdir()
    (data / "train.de").write_text("\n".join(_german(multi30k)) + "\n", encoding="utf-8")
    (data / "valid.de").write_text("\n".join(_german(multi30k, "val", 50)) + "\n")
    return data


@pytest.fixture(scope="module")
def tiny(multi30k, tmp_path_factory):
    """(checkpoint, data directory, shortlist file) for the tiny copying Transformer."""
    tmp = tmp_path_factory.mktemp("shortlist")
    checkpoint = tiny_checkpoint("transformer", multi30k)
    data = _copy_data(multi30k, tmp)
    out = tmp / "sl.npz"
    options = ShortlistOptions(best=5, first=10)
    found = build_shortlist_file(data, out, options, model=checkpoint, src="de", tgt="de")
    assert 0.5 < found["coverage"] <= 1.0 and found["sentences"] == 50
    return checkpoint, data, out


def _tokenizer(checkpoint: Path):
    from mtkit.checkpoint import checkpoint_tokenizers, load_checkpoint

    return checkpoint_tokenizers(load_checkpoint(checkpoint))[0]


def _src(tok, lines: list[str]):
    from mtkit.train.batching import pad_rows

    ids = [x[:30] + [tok.eos_id] for x in tok.encode(lines)]
    return ids, pad_rows(ids, 0)


def _decoder(checkpoint: Path):
    """The model as translate runs it on the CPU (oneDNN-packed output projection)."""
    from mtkit.translate.stream import load_translator

    return load_translator([checkpoint]).models[0]


# -- presets ----------------------------------------------------------------------


def test_student_presets_are_deep_encoder_shallow_decoder():
    students = (("transformer-student", (6, 2), 256), ("transformer-student-12-1", (12, 1), 256),
                ("transformer-student-narrow", (6, 1), 128))  # fmt: skip
    small = preset_config("transformer-small")
    for name, layers, width in students:
        config = preset_config(name)
        assert (config.enc_layers, config.dec_layers, config.d_model) == (*layers, width)
        assert config.dec_layers < small.dec_layers and config.share_embeddings


def test_tiny_student_trains_exports_averages_and_matches_ctranslate2(multi30k, tmp_path):
    """A 6-2 student (narrowed to 64) trains, averages, inspects, and CTranslate2's greedy
    output of its export equals mtkit's token for token."""
    pytest.importorskip("ctranslate2")
    from test_export import _both

    from mtkit.checkpoint import average_into, describe, save_checkpoint
    from mtkit.interop.ctranslate2 import export_ctranslate2
    from mtkit.models import build_model
    from mtkit.tokenizer import Tokenizer

    torch.manual_seed(0)
    lines = _german(multi30k)
    spm = _spm_bytes(lines)
    config = override(
        preset_config("transformer-student"),
        dict(src_vocab_size=200, tgt_vocab_size=200, d_model=64, d_ff=128, dropout=0.0),
    )
    config = dataclasses.replace(config, max_positions=64)
    model = build_model(config)
    _train(model, [x[:24] for x in Tokenizer.from_bytes(spm).encode(lines)], steps=30, lr=5e-3)
    paths = [
        save_checkpoint(
            tmp_path / f"checkpoint_{i}.pt",
            checkpoint_payload(config, model, spm, spm, "de", step=i),
        )
        for i in (1, 2)
    ]
    average_into(paths, tmp_path / "avg.pt")
    assert "enc_layers" in describe(tmp_path / "avg.pt")
    out = export_ctranslate2(tmp_path / "avg.pt", tmp_path / "ct2")
    ours, theirs = _both(tmp_path / "avg.pt", out, _german(multi30k, "val", 40), beam_size=1)
    assert sum(map(len, ours)) > 40 and ours == theirs


# -- building ---------------------------------------------------------------------


def test_built_shortlist_has_frequent_pieces_and_specials(tiny):
    checkpoint, _, path = tiny
    shortlist = load_shortlist(path)
    tok = _tokenizer(checkpoint)
    assert set(shortlist.specials.tolist()) == {0, 1, 2, 3}
    assert len(shortlist.first) == 10 and tok.eos_id not in shortlist.first
    period = tok.sp.piece_to_id(".")
    assert period in shortlist.first  # Multi30k's captions nearly all end with one
    allowed = shortlist.allowed(tok.encode(["Ein Hund läuft."]))
    assert {0, 1, 2, 3, period} <= set(allowed.tolist())
    # a piece's own list holds itself: the data are a copy task
    piece = tok.encode(["Hund"])[0][-1]
    assert piece in shortlist.targets[piece]
    assert shortlist.meta["tgt_tokenizer"] == tokenizer_fingerprint(tok)


def test_dice_method_builds_too(tiny, tmp_path):
    checkpoint, data, _ = tiny
    out = tmp_path / "dice.npz"
    options = ShortlistOptions(method="dice", best=5, first=10)
    found = build_shortlist_file(data, out, options, model=checkpoint, src="de", tgt="de")
    assert found["coverage"] > 0.5 and load_shortlist(out).meta["options"]["method"] == "dice"


# -- searching --------------------------------------------------------------------


@pytest.mark.parametrize("beam_size", [1, 4])
def test_shortlist_of_everything_equals_no_shortlist(tiny, multi30k, beam_size):
    checkpoint = tiny[0]
    model = _decoder(checkpoint)
    _, src = _src(_tokenizer(checkpoint), _german(multi30k, "val", 12))
    options = SearchOptions(beam_size=beam_size, nbest=min(2, beam_size))
    plain = search(model, src, options)
    every = search(model, src, options, vocab=torch.arange(model.config.tgt_vocab_size))
    assert [[h.tokens for h in per] for per in every] == [[h.tokens for h in per] for per in plain]
    assert [[h.score for h in per] for per in every] == [[h.score for h in per] for per in plain]


@pytest.mark.parametrize("beam_size", [1, 5])
def test_real_shortlist_outputs_only_allowed_pieces(tiny, multi30k, beam_size):
    checkpoint, _, path = tiny
    shortlist, model = load_shortlist(path), _decoder(checkpoint)
    ids, src = _src(_tokenizer(checkpoint), _german(multi30k, "val", 12))
    allowed = shortlist.allowed(ids, min_size=2 * beam_size + 4)
    assert len(allowed) < model.config.tgt_vocab_size  # a real restriction
    hyps = search(model, src, SearchOptions(beam_size=beam_size), torch.from_numpy(allowed))
    produced = {i for per in hyps for i in per[0].tokens}
    assert produced and produced <= set(allowed.tolist())


def test_translate_cli_with_shortlist(tiny, multi30k, tmp_path, monkeypatch, capsys):
    checkpoint, _, path = tiny
    lines = _german(multi30k, "val", 8)
    (tmp_path / "in.de").write_text("\n".join(lines) + "\n")
    args = ("translate", "-m", checkpoint, "-i", tmp_path / "in.de", "--beam", "3")
    assert call_main(monkeypatch, *args, "--shortlist", path) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(lines)


# -- CTranslate2 ------------------------------------------------------------------


def test_ctranslate2_export_with_vmap(tiny, multi30k, tmp_path):
    """vmap.txt goes with the model; CTranslate2 with use_vmap=True (a batch's candidates:
    the union of its sentences' lists) produces only listed pieces, and greedily the same
    as mtkit with the same shortlist."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    from mtkit.interop.ctranslate2 import ExportOptions, export_ctranslate2

    checkpoint, _, path = tiny
    out = export_ctranslate2(checkpoint, tmp_path / "ct2", ExportOptions(shortlist=path))
    assert (out / "vmap.txt").is_file()
    tok, shortlist, model = _tokenizer(checkpoint), load_shortlist(path), _decoder(checkpoint)
    ids, src = _src(tok, _german(multi30k, "val", 20))
    translator = ctranslate2.Translator(str(out), device="cpu", intra_threads=1)
    pieces = [[tok.sp.id_to_piece(i) for i in x[:-1]] for x in ids]
    results = translator.translate_batch(
        pieces, beam_size=1, max_decoding_length=40, use_vmap=True,
        suppress_sequences=[["<pad>"], ["<s>"]],
    )  # fmt: skip
    theirs = [[tok.sp.piece_to_id(p) for p in result.hypotheses[0]] for result in results]
    allowed = shortlist.allowed(ids)
    assert len(allowed) < model.config.tgt_vocab_size
    assert {i for x in theirs for i in x} <= set(allowed.tolist())
    options = SearchOptions(beam_size=1, max_len_a=0, max_len_b=40)
    ours = search(model, src, options, vocab=torch.from_numpy(allowed))
    assert [per[0].tokens for per in ours] == theirs


# -- bad inputs -------------------------------------------------------------------


def test_bad_inputs_are_one_line(tiny, multi30k, tmp_path, monkeypatch, capsys):
    checkpoint, data, path = tiny
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="is not a shortlist file"):
        load_shortlist(tmp_path / "junk.npz")
    with pytest.raises(DataError, match="shortlist not found"):
        load_shortlist(tmp_path / "none.npz")
    with pytest.raises(ConfigError, match="unknown --method 'giza'"):
        ShortlistOptions(method="giza").check()
    with pytest.raises(ConfigError, match="-m CHECKPOINT, or --spm"):
        build_shortlist_file(data, tmp_path / "x.npz", src="de", tgt="de")
    # a shortlist for another vocabulary (a 150-piece model): translate and export refuse it
    other = tmp_path / "other.model"
    other.write_bytes(_spm_bytes(_german(multi30k), vocab_size=150))
    foreign = tmp_path / "foreign.npz"
    build_shortlist_file(data, foreign, spm=other, src="de", tgt="de")
    (tmp_path / "in.de").write_text("Ein Hund.\n")
    cases = [
        ("translate", "-m", checkpoint, "-i", tmp_path / "in.de", "--shortlist", foreign),
        (
            "translate",
            "-m",
            checkpoint,
            "-i",
            tmp_path / "in.de",
            "--shortlist",
            tmp_path / "junk.npz",
        ),
        ("export", "-m", checkpoint, "-o", tmp_path / "ct2", "--shortlist", foreign),
        ("shortlist", "--data", data, "-o", tmp_path / "y.npz", "-m", checkpoint, "--best", "0"),
        ("shortlist", "--data", tmp_path / "nowhere", "-o", tmp_path / "y.npz", "-m", checkpoint),
    ]
    capsys.readouterr()
    for args in cases:
        code = call_main(monkeypatch, *args)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and len(err) == 1 and err[0].startswith("error: "), (args, err)
    assert not (tmp_path / "ct2").exists() and not (tmp_path / "y.npz").exists()


def test_damaged_file_is_refused(tiny, tmp_path):
    shortlist = load_shortlist(tiny[2])
    from mtkit.shortlist import write_shortlist

    path = write_shortlist(
        tmp_path / "s.npz", shortlist.targets, shortlist.first, shortlist.specials, shortlist.meta
    )
    with np.load(path) as data:
        arrays = dict(data)
    arrays["first"] = arrays["first"][::-1].copy()
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match="damaged"):
        load_shortlist(tmp_path / "bad.npz")
    assert isinstance(load_shortlist(path), Shortlist)


def test_rnn_takes_a_shortlist_too(multi30k):
    from mtkit.checkpoint import load_checkpoint, model_from_checkpoint

    model = model_from_checkpoint(load_checkpoint(tiny_checkpoint("rnn", multi30k))).eval()
    _, src = _src(_tokenizer(tiny_checkpoint("rnn", multi30k)), _german(multi30k, "val", 6))
    options = SearchOptions(beam_size=3)
    plain = search(model, src, options)
    every = search(model, src, options, vocab=torch.arange(model.config.tgt_vocab_size))
    assert [per[0].tokens for per in every] == [per[0].tokens for per in plain]
    allowed = torch.arange(0, model.config.tgt_vocab_size, 2)  # pad, bos and every even id
    allowed = torch.cat([allowed, torch.tensor([3])]).sort().values  # and eos
    produced = {i for per in search(model, src, options, vocab=allowed) for i in per[0].tokens}
    assert produced and produced <= set(allowed.tolist())
