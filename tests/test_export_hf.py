"""Export to transformers: the exported directory computes, tokenizes and decodes as mtkit.

Models of each kind the export writes, trained or shaped so that their outputs vary:
  - "m2m100": mtkit's default layout (pre-norm, positions=fairseq, shared embeddings),
    trained a hundred steps to copy German text -> M2M100ForConditionalGeneration;
  - "marian": post-norm, positions=halves, separate vocabularies and embeddings, swish,
    a random output bias, copy-trained -> MarianMTModel;
  - "opus": a random OPUS-MT-shaped MarianMTModel (pad last, decoding from <pad>'s zero
    row, eos 0, one vocabulary) imported by mtkit, then exported back.
For each: transformers' tokenizer gives mtkit's ids, teacher-forced log-probabilities
agree within 1e-4, greedy generate equals `mtkit translate --beam 1` on every one of
120 validation sentences (with mtkit's per-sentence length limits), beam 5 with the
exported generation config equals mtkit's matching search on nearly all, and
`mtkit import` of the directory translates as the checkpoint did. NLLB-200 (current and
legacy) and M2M-100 models imported by mtkit (conftest's hf_m2m100) export with their
own tokenizer class and ids and the original's weights. CTranslate2's converter reads
the exports. A real run (prepare, train-bpe, train, score) gives the card its records.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import call_main, tiny_train_config  # noqa: E402
from test_search import checkpoint_payload  # noqa: E402

from mtkit.checkpoint import (  # noqa: E402
    checkpoint_tokenizers,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from mtkit.errors import CheckpointError, ConfigError, WriteError  # noqa: E402
from mtkit.interop.ctranslate2 import ExportOptions  # noqa: E402
from mtkit.interop.hf_export import export_transformers  # noqa: E402
from mtkit.search import DEFAULT_MAX_LEN_A, DEFAULT_MAX_LEN_B, SearchOptions, search  # noqa: E402

LINES = 120  # validation sentences every comparison decodes
KINDS = ("m2m100", "marian", "opus")

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses"),
]


def _lines(multi30k: Path, split: str, n: int, lang: str = "de") -> list[str]:
    with gzip.open(multi30k / f"{split}.{lang}.gz", "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for _, line in zip(range(n), f, strict=False)]


def _spm(lines: list[str], size: int) -> bytes:
    """A SentencePiece BPE model with mtkit's ids and reserved pieces (as train-bpe's)."""
    import sentencepiece as spm

    from mtkit.tokenizer import RESERVED_PIECES

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=size,
        model_type="bpe",
        character_coverage=1.0,
        user_defined_symbols=list(RESERVED_PIECES),
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        pad_piece="<pad>",
        minloglevel=2,
        num_threads=1,
    )
    return model.getvalue()


def _copy_train(model, pairs: list[tuple[list[int], list[int]]], steps: int) -> None:
    """Adam steps of teacher forcing on (source ids, target ids): copying German."""
    from mtkit.train.batching import pad_rows

    config = model.config
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(steps):
        pick = torch.randint(len(pairs), (32,), generator=generator).tolist()
        src = pad_rows([pairs[i][0] + [config.eos_id] for i in pick], config.pad_id)
        tgt_in = pad_rows([[config.bos_id] + pairs[i][1] for i in pick], config.pad_id)
        tgt_out = pad_rows([pairs[i][1] + [config.eos_id] for i in pick], config.pad_id)
        logits = model(src, tgt_in)
        loss = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), tgt_out, ignore_index=config.pad_id
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def _trained(multi30k: Path, tmp: Path, kind: str) -> Path:
    """A copy-trained checkpoint of `kind` ("m2m100" or "marian")."""
    from mtkit.models import ModelConfig, build_model
    from mtkit.tokenizer import Tokenizer

    torch.manual_seed(3)
    lines = _lines(multi30k, "train", 600)
    shape = dict(d_model=64, n_heads=4, d_ff=128, enc_layers=2, dec_layers=2, dropout=0.0)
    if kind == "m2m100":
        src_spm = tgt_spm = _spm(lines, 300)
        config = ModelConfig(src_vocab_size=300, tgt_vocab_size=300, positions="fairseq", **shape)
    else:
        src_spm, tgt_spm = _spm(lines, 300), _spm(lines, 220)
        config = ModelConfig(
            src_vocab_size=300,
            tgt_vocab_size=220,
            pre_norm=False,
            positions="halves",
            share_embeddings=False,
            activation="swish",
            final_logits_bias=True,
            **shape,
        )
    model = build_model(config)
    if config.final_logits_bias:  # a fixed bias, as Marian's: random, so it matters
        model.final_logits_bias.normal_(0.0, 0.5)
    src_ids = Tokenizer.from_bytes(src_spm).encode(lines)
    tgt_ids = Tokenizer.from_bytes(tgt_spm).encode(lines)
    pairs = [(s[:24], t[:24]) for s, t in zip(src_ids, tgt_ids, strict=True)]
    _copy_train(model, pairs, steps=120)
    payload = checkpoint_payload(config, model, src_spm, tgt_spm, tgt_lang="en", step=120)
    return save_checkpoint(tmp / f"{kind}.pt", payload)


def _opus_dir(multi30k: Path, directory: Path) -> Path:
    """A MarianMTModel laid out as OPUS-MT's: source.spm and target.spm, one vocab.json
    (</s> 0, <unk> 1, <pad> last), decoding from <pad>, whose embedding row is zero."""
    from test_import import _marian_vocab, _train_spm
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    directory.mkdir()
    src_spm = _train_spm(_lines(multi30k, "train", 300), 160)
    tgt_spm = _train_spm(_lines(multi30k, "train", 300), 120)  # copying German too
    (directory / "source.spm").write_bytes(src_spm)
    (directory / "target.spm").write_bytes(tgt_spm)
    vocab = _marian_vocab(src_spm, tgt_spm)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    pad = vocab["<pad>"]
    shape = dict(encoder_layers=2, decoder_layers=2, encoder_ffn_dim=128, decoder_ffn_dim=128)
    config = MarianConfig(
        vocab_size=len(vocab),
        d_model=64,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        activation_function="swish",
        scale_embedding=True,
        max_position_embeddings=256,
        pad_token_id=pad,
        decoder_start_token_id=pad,
        eos_token_id=0,
        forced_eos_token_id=0,
        **shape,
    )
    model = MarianMTModel(config)
    with torch.no_grad():
        model.model.shared.weight[pad] = 0.0
    model.save_pretrained(directory)
    tokenizer = MarianTokenizer(
        str(directory / "source.spm"), str(directory / "target.spm"), str(directory / "vocab.json")
    )
    tokenizer.save_pretrained(directory)
    return directory


def _opus(multi30k: Path, tmp: Path) -> Path:
    """The OPUS-MT-shaped model imported by mtkit, then copy-trained as the others, its
    <pad> row (the decoder's start) kept zero, as Marian's own models have it."""
    from mtkit.interop.marian import marian_checkpoint

    torch.manual_seed(4)
    ckpt = marian_checkpoint(_opus_dir(multi30k, tmp / "marian"))
    model = model_from_checkpoint(ckpt)
    model.reset_parameters()  # mtkit's init, which learns faster than transformers' 0.02
    src_tok, tgt_tok = checkpoint_tokenizers(ckpt)
    lines = _lines(multi30k, "train", 600)
    pairs = list(zip(src_tok.encode(lines), tgt_tok.encode(lines), strict=True))
    pad = model.config.pad_id  # the tied output projection would train its row
    model.tgt_embed.weight.register_hook(lambda grad: grad.index_fill(0, torch.tensor(pad), 0))
    _copy_train(model, [(s, t) for s, t in pairs if max(len(s), len(t)) <= 30], steps=150)
    assert not model.tgt_embed.weight[pad].any()
    ckpt["model"] = model.state_dict()
    return save_checkpoint(tmp / "opus.pt", ckpt)


@pytest.fixture(scope="module", params=KINDS)
def exported(request, multi30k, tmp_path_factory):
    """(kind, checkpoint, exported directory, transformers model, tokenizer)."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tmp = tmp_path_factory.mktemp(request.param)
    kind = request.param
    checkpoint = _opus(multi30k, tmp) if kind == "opus" else _trained(multi30k, tmp, kind)
    out = export_transformers(checkpoint, tmp / "hf")
    model = AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    return kind, checkpoint, out, model, AutoTokenizer.from_pretrained(out)


@pytest.fixture(scope="module")
def sources(multi30k):
    return _lines(multi30k, "val", LINES)


# -- what transformers loads ----------------------------------------------------------


def test_files_config_and_class(exported):
    kind, checkpoint, out, model, tokenizer = exported
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "README.md"} <= names
    assert {"source.spm", "target.spm", "vocab.json", "tokenizer_config.json"} <= names
    assert ("target_vocab.json" in names) == (kind == "marian")  # separate vocabularies
    expected = "M2M100ForConditionalGeneration" if kind == "m2m100" else "MarianMTModel"
    assert type(model).__name__ == expected
    assert type(tokenizer).__name__ == "MarianTokenizer"
    config = load_checkpoint(checkpoint)["model_config"]
    assert model.config.decoder_start_token_id == config["bos_id"]
    assert model.config.pad_token_id == config["pad_id"]
    assert model.config.eos_token_id == config["eos_id"]
    assert not list(out.parent.glob(".hf.*"))  # no temporary directory left


def test_loading_reports_no_missing_or_unexpected_weights(exported):
    from transformers import AutoModelForSeq2SeqLM

    _, _, out, _, _ = exported
    _, info = AutoModelForSeq2SeqLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]


def test_tokenizer_gives_mtkit_ids_and_decodes_as_mtkit(exported, sources, multi30k):
    _, checkpoint, _, _, tokenizer = exported
    src_tok, tgt_tok = checkpoint_tokenizers(load_checkpoint(checkpoint))
    tricky = ["", "  Zwei   Hunde  ", "Ein <blank> fährt.", "Ein Mann <BT> läuft."]
    texts = sources + tricky
    assert tokenizer(texts).input_ids == src_tok.encode(texts, add_eos=True)
    assert tokenizer(text_target=texts).input_ids == tgt_tok.encode(texts, add_eos=True)
    # Decoding drops the start, </s> and pad as mtkit does (<unk>: mtkit writes ⁇, a
    # transformers tokenizer nothing, so lines with one are left out).
    either = sources + _lines(multi30k, "val", LINES, lang="en")  # a target side's language
    ids = [x for x in tgt_tok.encode(either) if tgt_tok.unk_id not in x]
    assert len(ids) >= 10
    start = load_checkpoint(checkpoint)["model_config"]["bos_id"]
    with_specials = [[start, *x, tgt_tok.eos_id, tgt_tok.pad_id] for x in ids]
    decoded = tokenizer.batch_decode(with_specials, skip_special_tokens=True)
    assert decoded == tgt_tok.decode(ids)


def _mtkit_src(ckpt: dict, lines: list[str]):
    src_tok, _ = checkpoint_tokenizers(ckpt)
    ids = src_tok.encode(lines, add_eos=True)
    pad = ckpt["model_config"]["pad_id"]
    width = max(map(len, ids))
    return torch.tensor([x + [pad] * (width - len(x)) for x in ids]), ids


def test_teacher_forced_log_probs_match(exported, sources, multi30k):
    _, checkpoint, _, hf_model, tokenizer = exported
    ckpt = load_checkpoint(checkpoint)
    config = ckpt["model_config"]
    targets = _lines(multi30k, "val", LINES, lang="en")
    ids = tokenizer(text_target=targets).input_ids
    pad, start = config["pad_id"], config["bos_id"]
    width = max(map(len, ids))
    labels = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
    tgt_in = torch.cat([torch.full((len(ids), 1), start), labels[:, :-1]], 1)
    batch = tokenizer(sources, return_tensors="pt", padding=True)
    src, _ = _mtkit_src(ckpt, sources)
    assert torch.equal(batch.input_ids, src)
    with torch.no_grad():
        theirs = hf_model(**batch, decoder_input_ids=tgt_in).logits.log_softmax(-1)
        ours = model_from_checkpoint(ckpt)(src, tgt_in).log_softmax(-1)
    real = labels != pad
    assert (ours - theirs)[real].abs().max().item() < 1e-4
    assert theirs[real].std() > 0.5  # not a flat distribution, where anything agrees


# -- decoding -------------------------------------------------------------------------


def _limits(src_ids: list[list[int]]) -> list[int]:
    """mtkit's per-sentence length limit (mtkit.search.Ensemble.max_lens, the defaults)."""
    return [math.floor(len(x) * DEFAULT_MAX_LEN_A + DEFAULT_MAX_LEN_B) for x in src_ids]


def _generate(hf_model, tokenizer, lines, limits, eos: int, beams: int) -> list[list[int]]:
    """transformers' output ids (start and eos cut) with mtkit's per-sentence limits."""
    from transformers import LogitsProcessorList

    batch = tokenizer(lines, return_tensors="pt", padding=True)
    force = _ForceEosAt(limits, eos, beams)
    with torch.no_grad():
        out = hf_model.generate(
            **batch,
            num_beams=beams,
            max_length=max(limits) + 2,  # the decoder start, the tokens, </s>
            logits_processor=LogitsProcessorList([force]),
        )
    rows = out[:, 1:].tolist()
    return [row[: row.index(eos)] if eos in row else row for row in rows]


class _ForceEosAt:
    """transformers' ForcedEOSTokenLogitsProcessor with a limit per sentence (`generate`
    takes one max_length a batch): after `limit` tokens only </s>, scored 0 as there."""

    def __init__(self, limits: list[int], eos: int, beams: int) -> None:
        self.ends = torch.tensor(limits).repeat_interleave(beams) + 1  # input length then
        self.eos = eos

    def __call__(self, input_ids, scores):
        rows = self.ends == input_ids.size(1)  # [N]: rows of batch*beams, beams adjacent
        scores[rows] = -math.inf
        scores[rows, self.eos] = 0.0
        return scores


def _banned(checkpoint) -> list[int]:
    from mtkit.translate.stream import load_translator

    return list(load_translator([checkpoint]).banned)


def test_greedy_generate_equals_mtkit_translate_beam_1(exported, sources):
    from mtkit.translate.stream import load_translator, translate_lines

    kind, checkpoint, _, hf_model, tokenizer = exported
    ckpt = load_checkpoint(checkpoint)
    src, src_ids = _mtkit_src(ckpt, sources)
    eos = ckpt["model_config"]["eos_id"]
    theirs = _generate(hf_model, tokenizer, sources, _limits(src_ids), eos, beams=1)
    options = SearchOptions(beam_size=1)
    found = search(model_from_checkpoint(ckpt), src, options, banned=_banned(checkpoint))
    ours = [h[0].tokens for h in found]
    assert ours == theirs
    assert len({tuple(x) for x in ours}) > 0.9 * LINES  # varied output, not one repeat
    texts = [h[0][0] for h in translate_lines(load_translator([checkpoint]), sources, options)]
    unk = checkpoint_tokenizers(ckpt)[1].unk_id
    decoded = tokenizer.batch_decode(theirs, skip_special_tokens=True)
    # <unk>: mtkit writes ⁇, transformers nothing. A final lone ▁ piece: mtkit keeps the
    # space it decodes to, MarianTokenizer strips the text.
    known = [i for i, x in enumerate(theirs) if unk not in x]
    assert len(known) >= 8
    assert [texts[i].rstrip(" ") for i in known] == [decoded[i] for i in known]


def test_beam_5_with_the_generation_config_equals_mtkit_on_nearly_all(exported, sources):
    """generation_config.json asks for beam 5, length_penalty 1, early_stopping True:
    mtkit's --len-norm --stop count. The sentences that differ are ones whose
    hypotheses reach the length limit, where transformers scores the forced </s> as
    log 1 = 0 and mtkit (as fairseq) keeps the model's log-probability of </s>."""
    from transformers import GenerationConfig

    _, checkpoint, out, hf_model, tokenizer = exported
    generation = GenerationConfig.from_pretrained(out)
    assert (generation.num_beams, generation.length_penalty) == (5, 1.0)
    assert generation.early_stopping is True
    ckpt = load_checkpoint(checkpoint)
    src, src_ids = _mtkit_src(ckpt, sources)
    limits = _limits(src_ids)
    eos = ckpt["model_config"]["eos_id"]
    theirs = _generate(hf_model, tokenizer, sources, limits, eos, generation.num_beams)
    options = SearchOptions(beam_size=5, len_norm=True, stop="count")
    found = search(model_from_checkpoint(ckpt), src, options, banned=_banned(checkpoint))
    ours = [h[0].tokens for h in found]
    differ = [i for i in range(LINES) if ours[i] != theirs[i]]
    assert all(limits[i] in (len(ours[i]), len(theirs[i])) for i in differ), differ
    assert len(differ) <= 0.05 * LINES, f"beam 5: {LINES - len(differ)}/{LINES} identical"


def test_mtkit_import_of_the_export_translates_as_the_checkpoint(exported, sources, tmp_path):
    from mtkit.interop.hf import import_hf
    from mtkit.translate.stream import load_translator, translate_lines

    _, checkpoint, out, _, _ = exported
    again = import_hf(out, tmp_path / "again.pt")
    options = SearchOptions(beam_size=5)
    lines = sources[:60] + ["", "Ein Mann <blank> fährt."]
    before = [h[0][0] for h in translate_lines(load_translator([checkpoint]), lines, options)]
    after = [h[0][0] for h in translate_lines(load_translator([again]), lines, options)]
    assert before == after


# -- CTranslate2's own converter ------------------------------------------------------


def _ct2_greedy(out: Path, tmp: Path, ckpt: dict, lines: list[str]) -> list[list[int]]:
    """CTranslate2's TransformersConverter on the exported directory, then greedy
    decoding of the tokenizer's pieces (</s> included, as a converted model expects)."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    from ctranslate2.converters import TransformersConverter

    TransformersConverter(str(out)).convert(str(tmp / "ct2"))
    src_tok, tgt_tok = checkpoint_tokenizers(ckpt)
    tables = [tok.vocab or [tok.sp.id_to_piece(i) for i in range(tok.vocab_size)]
              for tok in (src_tok, tgt_tok)]  # fmt: skip
    pieces = [[tables[0][i] for i in x] for x in src_tok.encode(lines, add_eos=True)]
    translator = ctranslate2.Translator(str(tmp / "ct2"), device="cpu", intra_threads=1)
    (vocabulary,) = tmp.glob("ct2/*vocabulary.json")  # CTranslate2 drops Marian's <pad>
    suppress = [[p] for p in ("<pad>", "<s>", "<BT>") if p in json.loads(vocabulary.read_text())]
    results = translator.translate_batch(
        pieces, beam_size=1, max_decoding_length=40, suppress_sequences=suppress
    )
    index = {piece: i for i, piece in enumerate(tables[1])}
    return [[index[p] for p in r.hypotheses[0]] for r in results]


def _mtkit_greedy(checkpoint, lines: list[str]) -> list[list[int]]:
    ckpt = load_checkpoint(checkpoint)
    src, _ = _mtkit_src(ckpt, lines)
    options = SearchOptions(beam_size=1, max_len_a=0.0, max_len_b=40)
    found = search(model_from_checkpoint(ckpt), src, options, banned=_banned(checkpoint))
    return [h[0].tokens for h in found]


@pytest.mark.parametrize("exported", ["opus"], indirect=True)
def test_ctranslate2_converts_an_opus_mt_export_alike(exported, sources, tmp_path):
    _, checkpoint, out, _, _ = exported
    theirs = _ct2_greedy(out, tmp_path, load_checkpoint(checkpoint), sources)
    assert theirs == _mtkit_greedy(checkpoint, sources)


@pytest.mark.parametrize("exported", ["m2m100"], indirect=True)
def test_ctranslate2_converts_an_m2m100_export_but_for_its_position_offset(
    exported, sources, tmp_path, monkeypatch
):
    """CTranslate2's M2M100Loader takes transformers' position table from row 2, which is
    fairseq's pad_id + 1 for pad 1 (NLLB, M2M-100); mtkit's pad is 0, so its first token
    sits at row 1. With the table from padding_idx + 1, every sentence is decoded alike."""
    pytest.importorskip("ctranslate2")
    from ctranslate2.converters import transformers as loaders

    def from_first_token(self, spec, module):
        spec.encodings = module.weights[module.padding_idx + 1 :]

    monkeypatch.setattr(loaders.M2M100Loader, "set_position_encodings", from_first_token)
    _, checkpoint, out, _, _ = exported
    theirs = _ct2_greedy(out, tmp_path, load_checkpoint(checkpoint), sources)
    assert theirs == _mtkit_greedy(checkpoint, sources)


# -- what is refused ------------------------------------------------------------------


def _variant(checkpoint: Path, tmp: Path, **changes) -> Path:
    """The checkpoint with other model settings (the weights fit every variant here)."""
    ckpt = load_checkpoint(checkpoint)
    ckpt["model_config"] = dataclasses.asdict(
        dataclasses.replace(model_from_checkpoint(ckpt).config, **changes)
    )
    name = "-".join(f"{k}={v}" for k, v in changes.items())
    return save_checkpoint(tmp / f"{name}.pt", ckpt)


@pytest.mark.parametrize("exported", ["m2m100"], indirect=True)
@pytest.mark.parametrize(
    "changes, setting",
    [
        (dict(positions="interleaved"), "positions=interleaved"),
        (dict(pre_norm=False), "post-norm with positions=fairseq"),
        (dict(positions="halves"), "pre-norm with positions=halves"),
    ],
)
def test_settings_no_class_computes_are_refused_by_name(exported, tmp_path, changes, setting):
    _, checkpoint, _, _, _ = exported
    variant = _variant(checkpoint, tmp_path, **changes)
    with pytest.raises(ConfigError, match=setting) as error:
        export_transformers(variant, tmp_path / "out")
    assert "\n" not in str(error.value) and "--format ctranslate2" in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("exported", ["m2m100"], indirect=True)
def test_an_rnn_and_an_existing_directory_are_refused(exported, multi30k, tmp_path):
    from test_search import tiny_checkpoint

    _, checkpoint, _, _, _ = exported
    with pytest.raises(CheckpointError, match=r"RNN model \(arch=rnn\)"):
        export_transformers(tiny_checkpoint("rnn", multi30k), tmp_path / "rnn")
    (tmp_path / "taken").mkdir()
    with pytest.raises(WriteError, match="already exists; pass --force"):
        export_transformers(checkpoint, tmp_path / "taken")
    force = ExportOptions(to="transformers", force=True)
    assert export_transformers(checkpoint, tmp_path / "taken", force).is_dir()


@pytest.mark.parametrize("exported", ["m2m100"], indirect=True)
def test_a_pre_norm_model_with_separate_embeddings_is_refused(exported, tmp_path):
    _, checkpoint, _, _, _ = exported
    ckpt = load_checkpoint(checkpoint)
    ckpt["model_config"]["share_embeddings"] = False
    ckpt["model"]["src_embed.weight"] = ckpt["model"]["tgt_embed.weight"].clone()
    variant = save_checkpoint(tmp_path / "separate.pt", ckpt)
    with pytest.raises(ConfigError, match="share_embeddings=false"):
        export_transformers(variant, tmp_path / "out")


# -- the card, from a real run --------------------------------------------------------


@pytest.fixture(scope="module")
def run(multi30k, tmp_path_factory):
    """A real run: prepare 800 pairs, a 300-piece BPE, 12 updates of a tiny model, the
    average of its checkpoints and the recipes' RUN/bleu.txt of 40 test sentences."""
    from mtkit.checkpoint import average_into
    from mtkit.prepare.pipeline import prepare_corpus
    from mtkit.prepare.sources import SourceOptions
    from mtkit.score import ScoreOptions, score_files
    from mtkit.tokenizer import SpmOptions, train_spm
    from mtkit.train import train
    from mtkit.translate.stream import load_translator, translate_lines

    root = tmp_path_factory.mktemp("run")
    files = {
        f"{prefix}{side}_file": multi30k / f"{stem}.{lang}.gz"
        for prefix, stem in (("", "train"), ("valid_", "val"), ("test_", "test_2016_flickr"))
        for side, lang in (("src", "de"), ("tgt", "en"))
    }
    prepare_corpus(SourceOptions(src="de", tgt="en", **files), root / "data", limit=800)
    (spm,) = train_spm(
        [root / "data/train.de", root / "data/train.en"],
        root / "spm",
        SpmOptions(vocab_size=300, threads=1),
    )
    run = root / "run"
    config = tiny_train_config(root / "data", run, spm=str(spm), max_updates=12, valid_every=6)
    train(config)
    average_into([run], run / "checkpoint_avg.pt", last=2)
    test = _lines(multi30k, "test_2016_flickr", 40)
    hyps = [h[0][0] for h in translate_lines(load_translator([run / "checkpoint_avg.pt"]), test)]
    (run / "test.hyp").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    (root / "test.en").write_text(
        "\n".join(_lines(multi30k, "test_2016_flickr", 40, "en")) + "\n", encoding="utf-8"
    )
    report = score_files(
        [root / "test.en"], [run / "test.hyp"], ScoreOptions(metrics=("bleu", "chrf"))
    )
    (run / "bleu.txt").write_text(report + "\n", encoding="utf-8")
    return run


def _front_matter(readme: Path) -> tuple[dict, str]:
    import yaml

    text = readme.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def test_the_card_holds_the_runs_records(run, tmp_path):
    out = export_transformers(run / "checkpoint_avg.pt", tmp_path / "m30k-de-en")
    header, body = _front_matter(out / "README.md")
    assert header["language"] == ["de", "en"] and header["pipeline_tag"] == "translation"
    assert header["license"] == "unknown" and "translation" in header["tags"]
    assert header["metrics"] == ["bleu", "chrf"]
    (result,) = header["model-index"][0]["results"]
    assert result["dataset"] == {"name": "test_2016_flickr", "type": "local", "split": "test"}
    report = (run / "bleu.txt").read_text(encoding="utf-8")
    for metric in result["metrics"]:
        signature = metric["args"]
        assert f"{metric['name']}|{signature} = {metric['value']:.1f}" in report
        assert "version:" in signature and signature.replace("\\", "") in body.replace("\\", "")
    assert "mtkit train --data" in body and "--max-updates 12" in body
    assert "train 800 pairs" in body and "train.de.gz" in body
    assert "The weights average 2 checkpoints" in body


def test_the_card_takes_a_licence_and_other_score_files(run, tmp_path):
    report = tmp_path / "scores.json"
    report.write_text(
        json.dumps({"name": "BLEU", "score": 12.34, "signature": "nrefs:1|tok:13a|version:2"})
    )
    checkpoint = run / "checkpoint_last.pt"
    out = export_transformers(checkpoint, tmp_path / "out", license="cc-by-4.0", scores=[report])
    header, _ = _front_matter(out / "README.md")
    assert header["license"] == "cc-by-4.0"
    (metric,) = header["model-index"][0]["results"][0]["metrics"]
    assert (metric["type"], metric["value"], metric["args"]) == (
        "bleu",
        12.34,
        "nrefs:1|tok:13a|version:2",
    )
    plain = export_transformers(run / "checkpoint_last.pt", tmp_path / "plain")
    assert "model-index" not in _front_matter(plain / "README.md")[0]  # no report: no scores


# -- the command ----------------------------------------------------------------------


def test_export_command_format_transformers_and_to_alias(run, tmp_path, monkeypatch, capsys):
    checkpoint = run / "checkpoint_last.pt"
    code = call_main(monkeypatch, "export", checkpoint, "--format", "transformers",
                     "-o", tmp_path / "a")  # fmt: skip
    assert code == 0 and (tmp_path / "a" / "model.safetensors").is_file()
    code = call_main(monkeypatch, "export", "-m", checkpoint, "--to", "transformers",
                     "-o", tmp_path / "b")  # fmt: skip
    assert code == 0 and (tmp_path / "b" / "config.json").is_file()
    capsys.readouterr()
    code = call_main(monkeypatch, "export", "-m", checkpoint, "--format", "transformers",
                     "--quantize", "int8", "-o", tmp_path / "c")  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "--quantize" in err[0]
    assert not (tmp_path / "c").exists()
    code = call_main(monkeypatch, "export", checkpoint, "-m", checkpoint, "-o", tmp_path / "d")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "give the checkpoint once" in err[0]


# -- NLLB-200 and M2M-100 imports: their own tokenizers ---------------------------------


@pytest.fixture(scope="module")
def reexported(hf_m2m100, tmp_path_factory):
    """(the imported checkpoint, its export as an m2m100copy.HfModel) of a tiny model laid
    out as the hub's NLLB-200 (current, legacy) or M2M-100 (conftest's hf_m2m100)."""
    from m2m100copy import HfModel
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from mtkit.interop.hf import import_hf

    tmp = tmp_path_factory.mktemp(f"export-{hf_m2m100.style}")
    checkpoint = import_hf(hf_m2m100.directory, tmp / "imported.pt")
    out = export_transformers(checkpoint, tmp / "hf", ExportOptions(to="transformers"))
    model = AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    exported = HfModel(
        out, model, AutoTokenizer.from_pretrained(out), hf_m2m100.style, hf_m2m100.codes
    )
    return checkpoint, exported


def test_an_imported_nllb_or_m2m100_exports_as_it_came(hf_m2m100, reexported, sources):
    """The weights are the original's, the tokenizer is its class and gives its ids (the
    language token where the style puts it), and greedy output is mtkit's."""
    from conftest import M2M100_LIMIT
    from m2m100copy import encode, generate

    from mtkit.languages import direction_of

    checkpoint, exported = reexported
    original = hf_m2m100.model.state_dict()
    assert all(torch.equal(v, original[k]) for k, v in exported.model.state_dict().items())
    assert type(exported.tokenizer).__name__ == type(hf_m2m100.tokenizer).__name__
    ids = encode(exported, sources, "de").input_ids
    assert torch.equal(ids, encode(hf_m2m100, sources, "de").input_ids)
    ckpt = load_checkpoint(checkpoint)
    direction = direction_of(ckpt, exported.codes["de"], exported.codes["en"])
    src_tok, _ = checkpoint_tokenizers(ckpt)
    assert [direction.source(x, src_tok.eos_id) for x in src_tok.encode(sources[:20])] == [
        [i for i in row if i != ckpt["model_config"]["pad_id"]] for row in ids[:20].tolist()
    ]
    theirs = generate(exported, sources, "de", "en", M2M100_LIMIT, num_beams=1)
    options = SearchOptions(beam_size=1, max_len_a=0.0, max_len_b=M2M100_LIMIT)
    hyps = search(model_from_checkpoint(ckpt), ids, options, prefix=direction.target_prefix)
    assert [h[0].tokens for h in hyps] == theirs


def test_an_exported_nllb_or_m2m100_imports_back_alike(reexported, sources, tmp_path):
    from mtkit.interop.hf import import_hf
    from mtkit.translate.stream import RuntimeOptions, load_translator, translate_lines

    checkpoint, exported = reexported
    again = import_hf(exported.directory, tmp_path / "again.pt")
    runtime = RuntimeOptions(src_lang=exported.codes["de"], tgt_lang=exported.codes["fr"])
    texts = {}
    for path in (checkpoint, again):
        translator = load_translator([path], runtime)
        texts[path] = [h[0][0] for h in translate_lines(translator, sources[:40], SearchOptions(2))]
    assert texts[checkpoint] == texts[again]


def test_ctranslate2_converts_an_nllb_or_m2m100_export_alike(reexported, sources, tmp_path):
    """Their pad is 1, so CTranslate2's position table (from row 2) is right for them."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    from conftest import M2M100_LIMIT
    from ctranslate2.converters import TransformersConverter
    from m2m100copy import encode

    from mtkit.languages import direction_of

    checkpoint, exported = reexported
    TransformersConverter(str(exported.directory)).convert(str(tmp_path / "ct2"))
    ckpt = load_checkpoint(checkpoint)
    ids = encode(exported, sources, "de").input_ids
    pad = ckpt["model_config"]["pad_id"]
    pieces = [exported.tokenizer.convert_ids_to_tokens([i for i in row if i != pad])
              for row in ids.tolist()]  # fmt: skip
    language = ckpt["languages"]["tokens"][exported.codes["en"]]
    translator = ctranslate2.Translator(str(tmp_path / "ct2"), device="cpu", intra_threads=1)
    results = translator.translate_batch(
        pieces,
        target_prefix=[[language]] * len(pieces),
        beam_size=1,
        max_decoding_length=M2M100_LIMIT + 1,  # the language token counts here
        suppress_sequences=[["<pad>"]],
    )
    index = {piece: i for i, piece in enumerate(ckpt["vocab"]["tgt"])}
    theirs = [[index[p] for p in r.hypotheses[0][1:]] for r in results]
    direction = direction_of(ckpt, exported.codes["de"], exported.codes["en"])
    options = SearchOptions(beam_size=1, max_len_a=0.0, max_len_b=M2M100_LIMIT)
    hyps = search(model_from_checkpoint(ckpt), ids, options, prefix=direction.target_prefix)
    assert [h[0].tokens for h in hyps] == theirs


def test_a_killed_export_leaves_no_directory(run, tmp_path, monkeypatch, cli):
    monkeypatch.setenv("MTKIT_CRASH_AT", "export-before-rename")
    out = tmp_path / "hub"
    result = cli("export", run / "checkpoint_last.pt", "--format", "transformers", "-o", out)
    assert result.returncode != 0 and not out.exists()
    (staged,) = tmp_path.glob(".hub.*")  # complete, under its temporary name
    assert (staged / "model.safetensors").is_file()
