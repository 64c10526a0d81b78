"""train-bpe and the Tokenizer, on real Multi30k text with small vocabularies."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from mtkit.errors import ConfigError, DataError
from mtkit.tokenizer import SpmOptions, Tokenizer, spm_model_path, train_spm

LINES = 3000


@pytest.fixture(scope="module")
def corpus(multi30k, tmp_path_factory) -> dict[str, Path]:
    """The first 3,000 training lines of German and English, as plain text files."""
    out = tmp_path_factory.mktemp("corpus")
    paths = {}
    for lang in ("de", "en"):
        with gzip.open(multi30k / f"train.{lang}.gz", "rt", encoding="utf-8") as f:
            lines = [next(f) for _ in range(LINES)]
        paths[lang] = out / f"train.{lang}"
        paths[lang].write_text("".join(lines), encoding="utf-8")
    return paths


@pytest.fixture(scope="module")
def joint(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("spm")
    [model] = train_spm([corpus["de"], corpus["en"]], out, SpmOptions(vocab_size=1000))
    return model


def test_joint_model_has_mtkits_special_ids(joint):
    assert joint == spm_model_path(joint.parent)
    assert sorted(p.name for p in joint.parent.iterdir()) == ["spm.model", "spm.vocab"]
    tok = Tokenizer.from_file(joint)
    assert tok.vocab_size == 1000
    assert [tok.sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    vocab = (joint.parent / "spm.vocab").read_text(encoding="utf-8").splitlines()
    assert len(vocab) == 1000 and vocab[0].startswith("<pad>\t")


def test_tag_and_noise_filler_are_pieces_of_their_own(joint):
    """<BT> (tagged corpora) and <blank> (translate --noised's filler) never occur in
    Multi30k, yet each encodes to one piece, none unknown; a word of unseen characters
    does not."""
    tok = Tokenizer.from_file(joint)
    assert (tok.piece_id("<BT>"), tok.piece_id("<blank>")) == (4, 5)  # docs/train-bpe.md
    for piece in ("<BT>", "<blank>"):
        (ids,) = tok.encode([f"ein {piece} Hund"])
        assert tok.piece_id(piece) in ids and tok.unk_id not in ids and tok.knows(piece)
    assert not tok.knows("☃") and tok.piece_id("☃") is None


def test_encode_decode_roundtrip(joint, corpus):
    tok = Tokenizer.from_file(joint)
    lines = corpus["de"].read_text(encoding="utf-8").splitlines()[:200]
    lines += corpus["en"].read_text(encoding="utf-8").splitlines()[:200]
    ids = tok.encode(lines)
    # SentencePiece's normalization (nmt_nfkc) collapses runs of spaces.
    lines = [" ".join(line.split()) for line in lines]
    assert tok.decode(ids) == lines
    assert all(3 not in x and 2 not in x for x in ids)  # no bos/eos unless asked
    with_eos = tok.encode(lines, add_eos=True)
    assert all(a + [3] == b for a, b in zip(ids, with_eos, strict=True))
    assert tok.decode(with_eos) == lines  # eos decodes to nothing
    # A checkpoint stores the model's bytes: loading them gives the same ids.
    assert Tokenizer.from_bytes(tok.model_bytes).encode(lines) == ids


def test_separate_models_are_named_by_language(multi30k, tmp_path, cli):
    out = tmp_path / "spm"
    result = cli(
        "train-bpe",
        *("--input", multi30k / "train.de.gz", "--input", multi30k / "train.en.gz"),
        *("--vocab-size", "1000", "--separate", "--input-sentence-size", "5000", "--out", out),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # talk goes to stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["spm.de.model", "spm.de.vocab", "spm.en.model", "spm.en.vocab"]
    de = Tokenizer.from_file(spm_model_path(out, "de"))
    en = Tokenizer.from_file(spm_model_path(out, "en"))
    assert de.vocab_size == en.vocab_size == 1000
    assert len(de.pieces("Zwei Männer stehen am Herd.")) < len(en.pieces("Zwei Männer stehen."))


def test_unigram_and_user_defined_symbols(corpus, tmp_path):
    options = SpmOptions(vocab_size=800, model_type="unigram", user_defined_symbols=("<sep>",))
    [model] = train_spm([corpus["en"]], tmp_path, options)
    tok = Tokenizer.from_file(model)
    assert tok.sp.id_to_piece(3) == "</s>"
    # Unigram pieces carry log probabilities; BPE's scores are merge ranks (integers).
    scores = [tok.sp.get_score(i) for i in range(10, 800)]
    assert any(s != int(s) for s in scores)
    assert "<sep>" in tok.pieces("a man <sep> a dog")


def test_vocab_too_large_is_one_clear_line(corpus, tmp_path, cli):
    result = cli("train-bpe", "-i", corpus["de"], "--vocab-size", "100000", "-o", tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: vocab size 100000 is too large for this data; the most it")
    most = int(last.split("pass --vocab-size ")[1].split()[0])
    assert 1000 < most < 100000
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_vocab_too_small_and_bad_options(corpus, tmp_path):
    with pytest.raises(DataError, match="vocab size 20 is too small"):
        train_spm([corpus["de"]], tmp_path, SpmOptions(vocab_size=20))
    with pytest.raises(ConfigError, match="bpe, unigram"):
        train_spm([corpus["de"]], tmp_path, SpmOptions(model_type="wordpiece"))
    with pytest.raises(ConfigError, match="one input per language"):
        train_spm([corpus["de"], corpus["de"]], tmp_path / "x", SpmOptions(), separate=True)
    with pytest.raises(ConfigError, match="is a file; pass a directory"):
        train_spm([corpus["de"]], corpus["de"], SpmOptions())
    assert list(tmp_path.iterdir()) == []


def test_missing_and_bad_input_files(tmp_path, cli):
    result = cli("train-bpe", "-i", tmp_path / "nope.de", "-o", tmp_path / "out")
    assert result.returncode == 1
    assert "error: input file not found:" in result.stderr and "nope.de" in result.stderr
    assert "Traceback" not in result.stderr
    bad = tmp_path / "bad.de"
    bad.write_bytes(b"ein Hund\n\xff\xfe kaputt\n")
    with pytest.raises(DataError, match="not valid UTF-8"):
        train_spm([bad], tmp_path / "out", SpmOptions(vocab_size=50))


def test_models_without_mtkits_ids_are_rejected(corpus, tmp_path):
    import sentencepiece as spm

    # SentencePiece's own defaults: unk=0, bos=1, eos=2, no pad.
    prefix = tmp_path / "plain"
    spm.SentencePieceTrainer.train(
        input=str(corpus["en"]), model_prefix=str(prefix), vocab_size=500, minloglevel=2
    )
    with pytest.raises(ConfigError, match="train it with `mtkit train-bpe`"):
        Tokenizer.from_file(prefix.with_suffix(".model"))
    with pytest.raises(DataError, match="not a SentencePiece model"):
        Tokenizer.from_bytes(b"not a model")
    with pytest.raises(DataError, match="not found"):
        Tokenizer.from_file(tmp_path / "missing.model")


# -- a model's own vocabulary table (imported Marian models, issue 11) ----------------


def _marian_table(sp, drop: set[str]) -> list[str]:
    """Marian's layout: </s> 0, <unk> 1, pieces (here in reverse id order), <pad> last."""
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size() - 1, 3, -1)]
    return ["</s>", "<unk>", *[p for p in pieces if p not in drop], ">>fr<<", "<pad>"]


def test_vocab_table_maps_pieces_by_string(joint):
    sp = Tokenizer.from_file(joint).sp
    line = "Ein Mann fährt Fahrrad."
    dropped = sp.encode(line, out_type=str)[1]
    table = _marian_table(sp, {dropped})
    tok = Tokenizer.from_file(joint, vocab=table)
    assert (tok.eos_id, tok.unk_id, tok.pad_id, tok.bos_id) == (
        0,
        1,
        len(table) - 1,
        len(table) - 1,
    )
    assert tok.vocab_size == len(table)
    [ids] = tok.encode([line], add_eos=True)
    pieces = sp.encode(line, out_type=str)
    expected = [1 if p == dropped else table.index(p) for p in pieces] + [0]
    assert ids == expected  # looked up by string; the missing piece is <unk>; eos is </s>
    assert tok.encode([">>fr<< Ein Mann"])[0][0] == table.index(">>fr<<")  # kept whole
    assert tok.encode([""]) == [[]] and tok.encode([]) == []
    # pad/start and eos decode to nothing; the rest to text (the <unk> as SentencePiece's mark)
    full = tok.encode(["Zwei Hunde spielen."])[0]
    assert tok.decode([[tok.pad_id, *full, tok.eos_id]]) == ["Zwei Hunde spielen."]
    # A joint table's piece this SentencePiece model lacks: its word mark is a space.
    foreign = Tokenizer.from_file(joint, vocab=["</s>", "<unk>", "▁Zwei", "▁Qxzyw", "<pad>"])
    assert foreign.decode([[2, 3, 2]]) == ["Zwei Qxzyw Zwei"]


def test_vocab_table_without_specials_is_refused(joint):
    with pytest.raises(DataError, match="lacks <pad>"):
        Tokenizer.from_file(joint, vocab=["</s>", "<unk>", "a"])
    with pytest.raises(DataError, match="has a piece twice"):
        Tokenizer.from_file(joint, vocab=["</s>", "<unk>", "a", "a", "<pad>"])


def test_spm_training_reads_gzip_through_mtkit_io(corpus, tmp_path):
    """train-bpe's reader is mtkit.io's: gzip input, and a broken gzip is one DataError."""
    packed = tmp_path / "train.de.gz"
    packed.write_bytes(gzip.compress(corpus["de"].read_bytes()))
    [model] = train_spm([packed], tmp_path / "spm", SpmOptions(vocab_size=300))
    assert Tokenizer.from_file(model).vocab_size == 300
    broken = tmp_path / "broken.de.gz"
    broken.write_bytes(gzip.compress(corpus["de"].read_bytes())[:2000])
    with pytest.raises(DataError, match="broken.de.gz"):
        train_spm([broken], tmp_path / "spm2", SpmOptions(vocab_size=300))
