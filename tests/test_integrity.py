"""Checksums: a file changed on disk is refused with one line (checkpoints) or encoded again
(the encoded corpus); files of an older mtkit still load; inspect --verify checks them all."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import call_main
from test_corpus_cache import FakeTokenizer, write_corpus
from test_search import tiny_checkpoint
from test_train import m30k, mtkit_args  # noqa: F401 - m30k is a fixture

from mtkit.checkpoint import load_checkpoint
from mtkit.errors import ChecksumError
from mtkit.io import content_checksum, file_checksum
from mtkit.train import corpus

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def damage(path: Path, key: str | None = None) -> Path:
    """Change one byte in the middle of a weight tensor's bytes in the file (the largest
    weight, or `key`), as a bad copy or bit rot would; returns `path`."""
    state = torch.load(path, weights_only=True)["model"]
    key = key or max(state, key=lambda k: state[k].numel())
    weights = state[key].contiguous().view(-1).view(torch.uint8).numpy().tobytes()
    data = bytearray(path.read_bytes())
    start = data.find(weights)
    assert start > 0 and data.find(weights, start + 1) < 0, "the weights' bytes are not unique"
    data[start + len(weights) // 2] ^= 0x10
    path.write_bytes(data)
    return path


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_content_checksum_survives_a_round_trip_and_sees_every_part(tmp_path):
    value = {
        "model": {"w": torch.randn(4, 3), "b": torch.zeros(3, dtype=torch.bfloat16)},
        "state": {0: {"step": torch.tensor(5.0)}, "rng": [3, (1, 2), None]},
        "spm": b"\x00model\xff",
        "lr": 0.1,
    }
    torch.save(value, tmp_path / "v.pt")
    loaded = torch.load(tmp_path / "v.pt", weights_only=True)
    assert content_checksum(loaded) == content_checksum(value) == content_checksum(value, 4)
    changed = [
        {**value, "lr": 0.2},
        {**value, "spm": b"\x00model\xfe"},
        {**value, "model": {**value["model"], "w": value["model"]["w"].double()}},
        {**value, "model": {**value["model"], "w": value["model"]["w"].reshape(3, 4)}},
        {**value, "model": {"v": value["model"]["w"], "b": value["model"]["b"]}},
        {**value, "state": {0: {"step": torch.tensor(6.0)}, "rng": [3, (1, 2), None]}},
    ]
    sums = {content_checksum(v) for v in changed}
    assert len(sums) == len(changed) and content_checksum(value) not in sums


@pytest.fixture
def damaged(multi30k, tmp_path) -> Path:
    """A copy of a tiny trained checkpoint with one byte of its weights changed."""
    path = tmp_path / "damaged.pt"
    shutil.copy(tiny_checkpoint("transformer", multi30k), path)
    return damage(path)


def test_one_changed_byte_is_refused_on_load(damaged):
    with pytest.raises(ChecksumError, match=f"^{damaged} is damaged: its sha256 checksum is "):
        load_checkpoint(damaged)
    assert load_checkpoint(damaged, verify=False)["step"] == 0  # torch itself reads it


@pytest.mark.parametrize("command", ["translate", "average", "export", "init-from"])
def test_a_damaged_checkpoint_is_refused_by_every_reader(
    command,
    damaged,
    m30k,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    source = tmp_path / "in.de"
    source.write_text("ein mann\n")
    args = {
        "translate": ["translate", "-m", damaged, "-i", source, "--threads", "1"],
        "average": ["average", damaged, damaged, "-o", tmp_path / "avg.pt"],
        "export": ["export", "-m", damaged, "-o", tmp_path / "ct2"],
        "init-from": ["train", "--data", m30k["data"], "--out", tmp_path / "run", "--init-from",
                      damaged, "--max-updates", "1", "--threads", "1", "--device", "cpu"],
    }[command]  # fmt: skip
    assert call_main(monkeypatch, *args) == 1
    out, err = capsys.readouterr()
    assert out == ""
    line = one_error_line(err)
    assert line.startswith(f"error: {damaged} is damaged: its sha256 checksum is ")
    assert line.endswith(
        "copy it again from where it came from, or use another checkpoint of the run"
    )
    assert not (tmp_path / "avg.pt").exists() and not (tmp_path / "ct2").exists()
    assert not (tmp_path / "run" / "checkpoint_last.pt").exists()


def test_a_damaged_checkpoint_last_is_refused_by_resume(m30k, tmp_path, monkeypatch, capsys):  # noqa: F811
    run = tmp_path / "run"
    assert call_main(monkeypatch, *mtkit_args(m30k, run, "--max-updates", "1")) == 0
    damage(run / "checkpoint_last.pt")
    capsys.readouterr()
    assert call_main(monkeypatch, *mtkit_args(m30k, run, "--max-updates", "2", "--resume")) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {run}/checkpoint_last.pt is damaged: its sha256 checksum is ")
    assert torch.load(run / "checkpoint_last.pt", weights_only=True)["step"] == 1  # untouched


def old_format_copy(path: Path, out: Path) -> Path:
    """`path` saved as mtkit wrote checkpoints before checksums: the same dict, torch.save'd
    through a file object, without "checksum"."""
    ckpt = torch.load(path, weights_only=True)
    del ckpt["checksum"]
    with open(out, "wb") as file:
        torch.save(ckpt, file)
    return out


def test_a_checkpoint_without_checksum_loads_with_a_note(multi30k, tmp_path, monkeypatch, capsys):
    old = old_format_copy(tiny_checkpoint("transformer", multi30k), tmp_path / "old.pt")
    source = tmp_path / "in.de"
    source.write_text("ein mann\nzwei hunde\n")
    assert call_main(monkeypatch, "translate", "-m", old, "-i", source, "--threads", "1") == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2
    assert f"{old} has no checksum (written by an older mtkit)" in " ".join(err.split())
    assert call_main(monkeypatch, "inspect", "--verify", old) == 0
    assert (
        capsys.readouterr().out
        == f"{old}: ok: checkpoint without a checksum (older mtkit): not verified\n"
    )
    # Saved again (by average, say), it gets one.
    assert call_main(monkeypatch, "average", old, "-o", tmp_path / "new.pt") == 0
    assert "checksum" in torch.load(tmp_path / "new.pt", weights_only=True)


def test_inspect_verify_one_line_per_file(multi30k, m30k, tmp_path, monkeypatch, capsys):  # noqa: F811
    good = tiny_checkpoint("transformer", multi30k)
    data = tmp_path / "data"
    val = {lang: multi30k / f"val.{lang}.gz" for lang in ("de", "en")}
    prepare = ["prepare", "--src", "de", "--tgt", "en", "--out", data, "--limit", "30",
               "--src-file", val["de"], "--tgt-file", val["en"]]  # fmt: skip
    assert call_main(monkeypatch, *prepare) == 0
    with open(data / "train.en", "a") as file:
        file.write("one more line\n")
    damaged = damage(shutil.copy(good, tmp_path / "damaged.pt"))
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    capsys.readouterr()
    code = call_main(monkeypatch, "inspect", "--verify", good, damaged, data, text, m30k["spm"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert lines == [
        f"{good}: ok: checkpoint, sha256 matches (step 0)",
        lines[1],
        f"{data}/train.de: ok: prepared text, 30 lines, sha256 matches",
        lines[3],
        f"{text}: FAILED: not a kind of file mtkit checks (checkpoint, corpus, data)",
        f"{m30k['spm']}: ok: SentencePiece model, 600 pieces (no checksum)",
    ]
    assert lines[1].startswith(f"{damaged}: FAILED: {damaged} is damaged: its sha256 checksum")
    assert lines[3].startswith(f"{data}/train.en: FAILED: ") and "manifest.json records" in lines[3]
    assert call_main(monkeypatch, "inspect", "--verify", good, data / "train.de") == 0


# -- the encoded corpus ------------------------------------------------------------------


def flip(path: Path, offset: int, keep_mtime: bool = False) -> None:
    """Change one byte in place (same inode); with keep_mtime, as bit rot would: unseen by
    the file's mtime."""
    stat = path.stat()
    with open(path, "r+b") as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 0x01]))
    if keep_mtime:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_changed_encoded_corpus_is_encoded_again(tmp_path, caplog):
    """The cache is derived data: a start that finds it changed warns and encodes the text
    again (the same arrays as before), rather than train on it or refuse."""
    paths, tok = write_corpus(tmp_path), FakeTokenizer()
    toks, root = {"src": tok, "tgt": tok}, tmp_path / ".encoded"
    first = corpus.open_corpus(paths, toks, root)
    expected, directory = first.tgt.ids.copy(), Path(first.directory)
    flip(directory / "tgt.ids", 7)
    with caplog.at_level("WARNING", logger="mtkit.train.corpus"):
        again = corpus.open_corpus(paths, toks, root)
    assert f"{directory}/tgt.ids is damaged: its sha256 checksum" in caplog.text
    assert "encoding the corpus again" in caplog.text
    assert (again.tgt.ids == expected).all()
    assert corpus.corpus_problem(directory, full=True) is None


def test_corpus_checks_at_start_are_cheap_and_verify_is_full(tmp_path, caplog, monkeypatch):
    """A start hashes only files whose mtime or inode changed (sizes always count); bit rot
    that keeps the mtime is left to `inspect --verify`, which hashes everything."""
    paths, tok = write_corpus(tmp_path), FakeTokenizer()
    toks, root = {"src": tok, "tgt": tok}, tmp_path / ".encoded"
    directory = Path(corpus.open_corpus(paths, toks, root).directory)
    flip(directory / "src.ids", 3, keep_mtime=True)
    assert corpus.corpus_problem(directory) is None  # unseen at start: no reread
    problem = corpus.corpus_problem(directory, full=True)
    assert problem.startswith(f"{directory}/src.ids is damaged: its sha256 checksum")
    assert call_main(monkeypatch, "inspect", "--verify", directory) == 1
    with open(directory / "src.offsets", "ab") as file:  # a size change is seen at once
        file.write(b"\0" * 8)
    assert "src.offsets has " in corpus.corpus_problem(directory)
    # A copied corpus (new inodes) is hashed once, then trusted on its stat again.
    fresh = tmp_path / "fresh"
    directory = Path(corpus.open_corpus(paths, toks, fresh).directory)
    moved = tmp_path / "moved"
    shutil.copytree(fresh, moved)
    hashed = []
    monkeypatch.setattr(corpus, "checksum_of", lambda p: hashed.append(p) or file_checksum(p))
    assert corpus.corpus_problem(moved / directory.name) is None and len(hashed) == 4
    assert corpus.corpus_problem(moved / directory.name) is None and len(hashed) == 4


def test_changed_batches_beside_the_corpus_are_cut_again(tmp_path, caplog):
    paths, tok = write_corpus(tmp_path, n=200), FakeTokenizer()
    pairs = corpus.open_corpus(paths, {"src": tok, "tgt": tok}, tmp_path / ".encoded")
    first, _ = corpus.run_batches(pairs, max_len=9, max_tokens=60, seed=3)
    order = np.array(first.order)
    (stem,) = Path(pairs.directory).glob("batches-*.order.npy")
    flip(stem, stem.stat().st_size - 3)  # in the array, past the .npy header
    with caplog.at_level("WARNING", logger="mtkit.train.corpus"):
        again, _ = corpus.run_batches(pairs, max_len=9, max_tokens=60, seed=3)
    assert f"{stem} is damaged" in caplog.text and "cutting the batches again" in caplog.text
    assert (np.array(again.order) == order).all()
    flip(stem, stem.stat().st_size - 3, keep_mtime=True)  # unseen at start, seen by verify
    assert corpus.corpus_problem(Path(pairs.directory)) is None
    assert corpus.corpus_problem(Path(pairs.directory), full=True).startswith(f"{stem} is damaged")


def test_train_warns_when_prepared_text_changed_since_prepare(multi30k, tmp_path, caplog):
    from mtkit.prepare.pipeline import prepare_corpus
    from mtkit.prepare.sources import SourceOptions
    from mtkit.train.data import warn_if_changed_since_prepare

    data = tmp_path / "data"
    val = {lang: multi30k / f"val.{lang}.gz" for lang in ("de", "en")}
    prepare_corpus(SourceOptions(src="de", tgt="en", src_file=val["de"], tgt_file=val["en"]),
                   data, limit=20)  # fmt: skip
    paths = {"src": data / "train.de", "tgt": data / "train.en"}
    (tmp_path / ".encoded").mkdir()
    with caplog.at_level("WARNING", logger="mtkit.train.data"):
        warn_if_changed_since_prepare(data, paths, tmp_path / ".encoded")
        assert "is not the file" not in caplog.text
        with open(paths["tgt"], "a") as file:
            file.write("an extra line\n")
        warn_if_changed_since_prepare(data, paths, tmp_path / ".encoded")
    assert f"{paths['tgt']} is not the file `mtkit prepare` wrote" in caplog.text
    assert str(paths["src"]) not in caplog.text


@pytest.mark.parametrize(
    "checksum, message",
    [
        ({"algorithm": "md5", "content": "0" * 32}, "has a checksum this mtkit cannot check"),
        ("not a dict", "has a checksum this mtkit cannot check"),
        ({"algorithm": "sha256", "content": "0" * 64}, "is damaged: its sha256 checksum"),
    ],
)
def test_a_checksum_entry_that_cannot_match_is_one_line(
    checksum, message, multi30k, tmp_path, monkeypatch, capsys
):
    ckpt = torch.load(tiny_checkpoint("transformer", multi30k), weights_only=True)
    torch.save({**ckpt, "checksum": checksum}, tmp_path / "odd.pt")
    assert call_main(monkeypatch, "inspect", tmp_path / "odd.pt") == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {tmp_path / 'odd.pt'} ") and message in line


def test_inspect_several_files_needs_verify(multi30k, tmp_path, monkeypatch, capsys):
    good = tiny_checkpoint("transformer", multi30k)
    assert call_main(monkeypatch, "inspect", good, good) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line == (
        "error: inspect shows one checkpoint, got 2 files; pass --verify to check several"
    )
    assert call_main(monkeypatch, "inspect", "--verify", tmp_path / "nope.pt") == 1
    assert capsys.readouterr().out == f"{tmp_path / 'nope.pt'}: FAILED: no such file or directory\n"
    assert call_main(monkeypatch, "inspect", good) == 0
    assert "checksum: sha256" in capsys.readouterr().out.splitlines()
