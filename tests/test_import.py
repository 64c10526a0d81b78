"""Importing Hugging Face Marian models: mtkit computes what transformers computes.

Tiny MarianMTModels with random weights are built here with transformers (no
download), with SentencePiece models trained on a few hundred Multi30k lines and
vocab.json files laid out as Marian's tokenizer expects; each is saved with
save_pretrained, imported, and compared: tokenization, teacher-forced
log-probabilities (1e-4), greedy output (token for token) and beam search where
both searches follow the same rules.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mtkit.checkpoint import (  # noqa: E402
    checkpoint_tokenizers,
    load_checkpoint,
    model_from_checkpoint,
)
from mtkit.errors import ConfigError, DataError  # noqa: E402
from mtkit.interop.marian import import_marian, marian_checkpoint  # noqa: E402
from mtkit.models import build_model  # noqa: E402
from mtkit.search import SearchOptions, search  # noqa: E402

LINES = 300
# Several shapes: shared and separate vocabularies, each activation, scaled
# embeddings or not, more decoder than encoder layers and the reverse.
SHAPES = {
    "shared-swish": dict(
        shared=True, d_model=32, heads=4, ffn=64, enc=2, dec=2, act="swish", scale=True
    ),
    "separate-gelu": dict(
        shared=False, d_model=24, heads=2, ffn=40, enc=1, dec=3, act="gelu", scale=False
    ),
    "shared-relu": dict(
        shared=True, d_model=16, heads=1, ffn=32, enc=3, dec=1, act="relu", scale=True
    ),
}


def _lines(multi30k, lang: str, n: int = LINES, skip: int = 0) -> list[str]:
    with gzip.open(multi30k / f"train.{lang}.gz", "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for _, line in zip(range(skip + n), f, strict=False)][skip:]


def _train_spm(lines: list[str], size: int) -> bytes:
    """A SentencePiece model with SentencePiece's own specials (as Marian's .spm files)."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=size,
        model_type="unigram",
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return model.getvalue()


def _marian_vocab(*spm_models: bytes, drop: int = 3) -> dict[str, int]:
    """vocab.json as Marian writes it: </s> 0, <unk> 1, the pieces, <pad> last. The
    pieces come sorted (so ids are not SentencePiece's), a few left out (so they
    must become <unk>)."""
    import sentencepiece as spm

    pieces = set()
    for data in spm_models:
        sp = spm.SentencePieceProcessor(model_proto=data)
        pieces |= {sp.id_to_piece(i) for i in range(sp.get_piece_size())}
    pieces -= {"<unk>", "<s>", "</s>"}
    kept = sorted(pieces)[drop:]
    table = ["</s>", "<unk>", *kept, "<pad>"]
    return {piece: i for i, piece in enumerate(table)}


def _build(tmp, multi30k, name: str, shape: dict):
    """Save a random MarianMTModel and its tokenizer files under tmp/name."""
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    directory = tmp / name
    directory.mkdir()
    de, en = _lines(multi30k, "de"), _lines(multi30k, "en")
    src_spm, tgt_spm = _train_spm(de, 160), _train_spm(en, 120)
    (directory / "source.spm").write_bytes(src_spm)
    (directory / "target.spm").write_bytes(tgt_spm)
    if shape["shared"]:
        src_vocab = tgt_vocab = _marian_vocab(src_spm, tgt_spm)
    else:
        src_vocab, tgt_vocab = _marian_vocab(src_spm), _marian_vocab(tgt_spm, drop=2)
        (directory / "target_vocab.json").write_text(json.dumps(tgt_vocab))
    (directory / "vocab.json").write_text(json.dumps(src_vocab))
    pad = tgt_vocab["<pad>"]
    config = MarianConfig(
        vocab_size=len(src_vocab),
        decoder_vocab_size=len(tgt_vocab),
        share_encoder_decoder_embeddings=shape["shared"],
        d_model=shape["d_model"],
        encoder_attention_heads=shape["heads"],
        decoder_attention_heads=shape["heads"],
        encoder_ffn_dim=shape["ffn"],
        decoder_ffn_dim=shape["ffn"],
        encoder_layers=shape["enc"],
        decoder_layers=shape["dec"],
        activation_function=shape["act"],
        scale_embedding=shape["scale"],
        max_position_embeddings=128,
        pad_token_id=pad,
        decoder_start_token_id=pad,
        eos_token_id=0,
        forced_eos_token_id=0,
    )
    torch.manual_seed(len(name))
    model = MarianMTModel(config).eval()
    _randomize(model)
    tokenizer = MarianTokenizer(
        source_spm=str(directory / "source.spm"),
        target_spm=str(directory / "target.spm"),
        vocab=str(directory / "vocab.json"),
        target_vocab_file=str(directory / "target_vocab.json") if not shape["shared"] else None,
        separate_vocabs=not shape["shared"],
        source_lang="de",
        target_lang="en",
    )
    _end_some(model, tokenizer, _lines(multi30k, "de", n=6, skip=LINES), pad)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory, model, tokenizer


def _end_some(model, tokenizer, lines: list[str], pad: int) -> None:
    """Raise eos's final_logits_bias until greedy output of `lines` ends early for
    some lines and at the length limit for others, so both paths are compared."""
    for _ in range(40):
        lengths = [len(x) for x in _generate(model, tokenizer, pad, 0, lines, 12, num_beams=1)]
        if min(lengths) < 12 and max(lengths) == 12:
            return
        with torch.no_grad():
            model.final_logits_bias[0, 0] += 1.0 if min(lengths) == 12 else -0.3
    raise AssertionError(f"no eos bias gives mixed lengths; last lengths {lengths}")


def _randomize(model) -> None:
    """Weights far from HF's init (std 0.02 makes every distribution flat, so argmax
    would rest on rounding): unit-gain linears, unit embeddings, LayerNorms and the
    pad rows and final_logits_bias random too."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" in name:  # the sinusoid table: recomputed on load
                continue
            if p.dim() == 2:
                std = 0.5 if "embed" in name or "shared" in name else p.size(1) ** -0.5
                p.normal_(0.0, std)
            elif "layer_norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.1)
        # Peaky distributions: the decoder's last LayerNorm scales the logits.
        model.model.decoder.layers[-1].final_layer_norm.weight.mul_(3.0)
        model.final_logits_bias.normal_(0.0, 0.5)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=list(SHAPES))
def pair(request, tmp_path_factory, multi30k):
    """(HF model, HF tokenizer, Marian directory, imported checkpoint) of one shape."""
    with pytest.warns(UserWarning, match="sacremoses"):  # HF without sacremoses says so
        directory, model, tokenizer = _build(
            tmp_path_factory.mktemp("marian"), multi30k, request.param, SHAPES[request.param]
        )
    return model, tokenizer, directory, marian_checkpoint(directory)


@pytest.fixture(scope="module")
def sources(multi30k):
    """Lines the spm models did not see: unknown pieces and uneven lengths."""
    return _lines(multi30k, "de", n=6, skip=LINES)


def _hf_batch(tokenizer, lines):
    return tokenizer(lines, return_tensors="pt", padding=True)


def _mtkit_src(ckpt, lines):
    src_tok, _ = checkpoint_tokenizers(ckpt)
    ids = src_tok.encode(lines, add_eos=True)
    pad = ckpt["model_config"]["pad_id"]
    width = max(map(len, ids))
    return torch.tensor([x + [pad] * (width - len(x)) for x in ids])


def test_tokenization_matches_marian_tokenizer(pair, sources, multi30k):
    """The same pieces; the same ids too, but for the source of separate vocabularies,
    where the import moved </s> and <pad> to the target's ids."""
    _, tokenizer, _, ckpt = pair
    src_tok, tgt_tok = checkpoint_tokenizers(ckpt)
    hf_src = tokenizer(sources).input_ids
    hf_pieces = {i: piece for piece, i in tokenizer.encoder.items()}
    ours = src_tok.encode(sources, add_eos=True)
    assert [[src_tok.vocab[i] for i in x] for x in ours] == [
        [hf_pieces[i] for i in x] for x in hf_src
    ]
    if ckpt["model_config"]["share_embeddings"]:
        assert ours == hf_src
    targets = _lines(multi30k, "en", n=6, skip=LINES)
    hf_tgt = tokenizer(text_target=targets).input_ids
    assert tgt_tok.encode(targets, add_eos=True) == hf_tgt
    assert any(tgt_tok.unk_id in ids for ids in hf_tgt + hf_src)  # unknown pieces were met


def test_teacher_forced_log_probs_match(pair, sources, multi30k):
    hf_model, tokenizer, _, ckpt = pair
    model = model_from_checkpoint(ckpt)
    batch = _hf_batch(tokenizer, sources)
    targets = _lines(multi30k, "en", n=6, skip=LINES)
    ids = tokenizer(text_target=targets).input_ids
    width, pad = max(map(len, ids)), ckpt["model_config"]["pad_id"]  # the target's pad
    labels = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
    start = ckpt["model_config"]["bos_id"]
    tgt_in = torch.cat([torch.full((len(targets), 1), start), labels[:, :-1]], 1)
    with torch.no_grad():
        hf = hf_model(**batch, decoder_input_ids=tgt_in).logits.log_softmax(-1)
        ours = model(_mtkit_src(ckpt, sources), tgt_in).log_softmax(-1)
    real = labels != pad
    assert ours.shape == hf.shape
    assert (ours - hf)[real].abs().max().item() < 1e-4
    assert hf[real].std() > 0.5  # not a flat distribution, where anything would agree


def test_greedy_equals_generate(pair, sources):
    hf_model, tokenizer, _, ckpt = pair
    limit = 12
    hf = _generate(hf_model, tokenizer, *_pad_eos(ckpt), sources, limit, num_beams=1)
    options = SearchOptions(beam_size=1, max_len_a=0.0, max_len_b=limit)
    ours = search(model_from_checkpoint(ckpt), _mtkit_src(ckpt, sources), options)
    assert [h[0].tokens for h in ours] == hf
    assert any(len(x) < limit for x in hf) and any(len(x) == limit for x in hf)


def test_imported_model_exports_to_ctranslate2_alike(pair, sources, tmp_path):
    """The CTranslate2 export of an imported model reads pieces through the model's own
    table and starts decoding from its decoder-start id: greedy output equals mtkit's."""
    import ctranslate2

    from mtkit.interop.ctranslate2 import export_ctranslate2

    _, _, directory, ckpt = pair
    limit = 12
    options = SearchOptions(beam_size=1, max_len_a=0.0, max_len_b=limit)
    ours = [
        h[0].tokens for h in search(model_from_checkpoint(ckpt), _mtkit_src(ckpt, sources), options)
    ]
    out = export_ctranslate2(import_marian(directory, tmp_path / "m.pt"), tmp_path / "ct2")
    src_table, tgt_table = ckpt["vocab"]["src"], ckpt["vocab"]["tgt"]
    src_tok, _ = checkpoint_tokenizers(ckpt)
    pieces = [[src_table[i] for i in ids] for ids in src_tok.encode(sources)]
    translator = ctranslate2.Translator(str(out), device="cpu", intra_threads=1)
    results = translator.translate_batch(
        pieces, beam_size=1, max_decoding_length=limit, suppress_sequences=[["<pad>"]]
    )
    index = {piece: i for i, piece in enumerate(tgt_table)}
    assert [[index[p] for p in r.hypotheses[0]] for r in results] == ours
    assert any(ours)


@pytest.mark.parametrize(
    "hf_options, ours",
    [
        # Raw log-probability, and stop when K hypotheses have ended (fairseq's rule).
        (dict(length_penalty=0.0, early_stopping=True), dict(len_penalty=0.0, stop="count")),
        # Divide by |Y| counting eos: HF's length_penalty=1 is mtkit's --len-norm.
        (dict(length_penalty=1.0, early_stopping=True), dict(len_norm=True, stop="count")),
    ],
)
def test_beam_equals_generate_where_the_rules_agree(pair, multi30k, hf_options, ours):
    """Compared where transformers' best ended before the length limit. At the limit
    transformers' forced eos scores log 1 = 0 while mtkit (as fairseq) keeps the model's
    eos log-probability, so hypotheses cut by the limit rank higher there; a best
    hypothesis that ended on its own outranks them in both."""
    hf_model, tokenizer, _, ckpt = pair
    limit, pad, eos = 30, *_pad_eos(ckpt)
    sources = _lines(multi30k, "de", n=16, skip=LINES)
    model = model_from_checkpoint(ckpt)
    with _eos_boost(hf_model, model, eos, 5.0):
        hf = _generate(hf_model, tokenizer, pad, eos, sources, limit, num_beams=4, **hf_options)
        options = SearchOptions(beam_size=4, max_len_a=0.0, max_len_b=limit, **ours)
        found = [h[0].tokens for h in search(model, _mtkit_src(ckpt, sources), options)]
    compared = [(a, b) for a, b in zip(found, hf, strict=True) if len(b) < limit]
    assert len(compared) >= 3
    assert all(a == b for a, b in compared)


@contextlib.contextmanager
def _eos_boost(hf_model, model, eos: int, boost: float):
    """Both models' eos bias raised by `boost` for a while (the HF model is shared)."""
    with torch.no_grad():
        hf_model.final_logits_bias[0, eos] += boost
        model.final_logits_bias[eos] += boost
    try:
        yield
    finally:
        with torch.no_grad():
            hf_model.final_logits_bias[0, eos] -= boost


def _pad_eos(ckpt) -> tuple[int, int]:
    return ckpt["model_config"]["pad_id"], ckpt["model_config"]["eos_id"]


def _generate(hf_model, tokenizer, pad, eos, lines, limit: int, **options) -> list[list[int]]:
    """transformers' output ids without the start token, cut before the first eos.
    `limit` tokens before eos, as mtkit's max_len_b (eos is forced after them)."""
    from transformers import GenerationConfig

    config = GenerationConfig(
        max_new_tokens=limit + 1,
        do_sample=False,
        decoder_start_token_id=pad,
        pad_token_id=pad,
        eos_token_id=eos,
        forced_eos_token_id=eos,
        bad_words_ids=[[pad]],
        **options,
    )
    with torch.no_grad():
        out = hf_model.generate(**_hf_batch(tokenizer, lines), generation_config=config)
    rows = out[:, 1:].tolist()
    return [row[: row.index(eos)] if eos in row else row for row in rows]


# -- the checkpoint --------------------------------------------------------------


def test_imported_checkpoint_records_what_it_is(pair):
    _, _, directory, ckpt = pair
    cfg = ckpt["model_config"]
    assert ckpt["langs"] == {"src": "de", "tgt": "en"}
    assert cfg["pad_id"] == cfg["bos_id"] == cfg["tgt_vocab_size"] - 1 and cfg["eos_id"] == 0
    assert not cfg["pre_norm"] and cfg["positions"] == "halves" and cfg["final_logits_bias"]
    assert ckpt["vocab"]["tgt"][0] == "</s>" and ckpt["vocab"]["tgt"][-1] == "<pad>"
    assert ckpt["train_config"]["imported_from"] == str(directory)
    # Separate vocabularies: the source's </s> and <pad> moved to the target's ids.
    assert ckpt["vocab"]["src"][cfg["pad_id"]] == "<pad>"
    assert ckpt["vocab"]["src"][cfg["eos_id"]] == "</s>"
    assert cfg["share_embeddings"] == (cfg["src_vocab_size"] == cfg["tgt_vocab_size"])


@pytest.mark.parametrize("pair", ["separate-gelu"], indirect=True)
def test_import_writes_a_checkpoint_translate_and_average_read(pair, tmp_path):
    from mtkit.checkpoint import average_checkpoints, describe
    from mtkit.translate.stream import load_translator, translate_lines

    _, _, directory, ckpt = pair
    path = import_marian(directory, tmp_path / "m.pt")
    loaded = load_checkpoint(path)
    assert loaded["format_version"] == 2 and loaded["vocab"] == ckpt["vocab"]
    info = json.loads(describe(path, as_json=True))
    assert info["vocab_table"] == {side: len(t) for side, t in ckpt["vocab"].items()}
    averaged = average_checkpoints([path, path])
    assert all(torch.equal(averaged["model"][k], v) for k, v in loaded["model"].items())
    options = SearchOptions(beam_size=2)
    lines = ["Ein Mann fährt Fahrrad.", "", "Zwei Hunde spielen im Schnee."]
    one = [h[0][0] for h in translate_lines(load_translator([path]), lines, options)]
    two = [h[0][0] for h in translate_lines(load_translator([path, path]), lines, options)]
    from_dir = [h[0][0] for h in translate_lines(load_translator([directory]), lines, options)]
    assert one == two == from_dir and one[1] == "" and len(one) == 3


def test_import_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(ConfigError, match="not a hub id"):
        import_marian(str(tmp_path / "no" / "such" / "dir"), tmp_path / "x.pt")
    with pytest.raises(DataError, match="config.json not found"):
        import_marian(tmp_path, tmp_path / "x.pt")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bart"}))
    with pytest.raises(ConfigError, match="not 'marian'"):
        import_marian(tmp_path, tmp_path / "x.pt")


def test_hub_id_offline_says_how_to_use_a_local_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE is set.*--local-dir") as error:
        import_marian("Helsinki-NLP/opus-mt-de-en", tmp_path / "x.pt")
    assert "\n" not in str(error.value)


def test_version_1_checkpoints_still_load(tmp_path):
    """A checkpoint saved before format 2 (no vocabulary tables, no Marian settings in
    its config) loads, rebuilds mtkit's old model and tokenizes with SentencePiece ids."""
    import sentencepiece as spm

    from mtkit.models import ModelConfig

    model_file = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["ein mann", "zwei hunde", "ein hund läuft"] * 20),
        model_writer=model_file,
        vocab_size=20,
        hard_vocab_limit=False,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        minloglevel=2,
    )
    config = dataclasses.asdict(ModelConfig(d_model=16, n_heads=2, d_ff=32, enc_layers=1))
    for key in ("activation", "positions", "scale_embeddings", "final_logits_bias"):
        del config[key]
    model = build_model(config)
    old = {
        "format": "mtkit-checkpoint",
        "format_version": 1,
        "model_config": config,
        "model": model.state_dict(),
        "spm": {"src": model_file.getvalue(), "tgt": model_file.getvalue()},
        "langs": {"src": "de", "tgt": "en"},
        "step": 5,
    }
    torch.save(old, tmp_path / "v1.pt")
    ckpt = load_checkpoint(tmp_path / "v1.pt")
    assert ckpt["format_version"] == 2 and ckpt["vocab"] == {}
    assert ckpt["model_config"]["activation"] == "relu"
    assert ckpt["model_config"]["positions"] == "interleaved"
    rebuilt = model_from_checkpoint(ckpt)
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in model.state_dict().items())
    src_tok, _ = checkpoint_tokenizers(ckpt)
    assert src_tok.vocab is None and src_tok.encode(["ein hund"], add_eos=True)[0][-1] == 3


@pytest.mark.parametrize("pair", ["shared-swish"], indirect=True)
def test_import_command(pair, tmp_path, monkeypatch, capsys):
    from conftest import call_main

    _, _, directory, ckpt = pair
    assert call_main(monkeypatch, "import", str(directory), "-o", str(tmp_path / "m.pt")) == 0
    assert load_checkpoint(tmp_path / "m.pt")["vocab"] == ckpt["vocab"]
    assert "wrote" in capsys.readouterr().err
    code = call_main(monkeypatch, "import", "Helsinki-NLP/opus-mt-xx-yy", "-o", str(tmp_path / "x"))
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: cannot download") and err.count("\n") == 1


@pytest.mark.parametrize("pair", ["shared-swish", "separate-gelu"], indirect=True)
def test_pytorch_model_bin_with_every_tied_name_imports_alike(pair, tmp_path):
    """Older hub repos hold pytorch_model.bin with every tied name (shared, both
    embed_tokens, lm_head) and the sinusoid tables; the import is the same."""
    import shutil

    hf_model, _, directory, ckpt = pair
    copy = tmp_path / "bin"
    shutil.copytree(directory, copy)
    (copy / "model.safetensors").unlink()
    torch.save(hf_model.state_dict(), copy / "pytorch_model.bin")
    again = marian_checkpoint(copy)
    assert again["model"].keys() == ckpt["model"].keys()
    assert all(torch.equal(again["model"][k], v) for k, v in ckpt["model"].items())
    untied = hf_model.state_dict()
    untied["lm_head.weight"] = untied["lm_head.weight"] + 1.0
    torch.save(untied, copy / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="lm_head"):
        marian_checkpoint(copy)
