"""Tiny NLLB-200 and M2M-100 models laid out like their hub repositories, for tests.

`build_m2m100_dir` writes what `facebook/nllb-200-distilled-600M` or
`facebook/m2m100_418M` hold (config.json, model.safetensors, sentencepiece.bpe.model,
the tokenizer's files) for a random M2M100ForConditionalGeneration of tiny size,
with a SentencePiece BPE model trained here on Multi30k lines. The tokenizers are
transformers' own: NllbTokenizer (its fast BPE built from the SentencePiece pieces and
scores, as transformers' converter does) and M2M100Tokenizer (SentencePiece and a
vocab.json laid out as fairseq's dictionary: sorted, a few pieces left out, so ids are
not SentencePiece's and some pieces are unknown).
"""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path

# The languages the tests translate between, in each model's codes.
NLLB_CODES = {"de": "deu_Latn", "en": "eng_Latn", "fr": "fra_Latn"}
M2M_CODES = {"de": "de", "en": "en", "fr": "fr"}
SPM_LINES = 400  # lines of each language the SentencePiece model trains on
SHAPE = dict(d_model=32, heads=4, ffn=64, layers=2)
# A random model repeats a token or two: the embedding rides the residual stream to the
# tied output projection, which finds the input's own row, and attention of random
# queries averages the source away. Small embeddings, gains of random sign in the last
# LayerNorm (the input's row then scores ~0 on average) and queries 6x as large (sharp
# attention) give varied output: over 100 distinct outputs for 120 lines.
EMBED_STD, OUT_GAIN, QUERY_GAIN = 0.2, 1.5, 6.0


@dataclass
class HfModel:
    """A saved tiny model: its directory, the transformers model and tokenizer."""

    directory: Path
    model: object  # M2M100ForConditionalGeneration, eval mode
    tokenizer: object  # NllbTokenizer or M2M100Tokenizer
    style: str  # "nllb", "nllb-legacy" or "m2m100"
    codes: dict  # {de, en, fr} -> the model's codes

    def lang_id(self, lang: str) -> int:
        """The id of the language token of `lang` (de, en, fr)."""
        tok = self.tokenizer
        code = self.codes[lang]
        return tok.get_lang_id(code) if self.style == "m2m100" else tok.convert_tokens_to_ids(code)


def lines(multi30k: Path, lang: str, n: int, skip: int = 0, split: str = "train") -> list[str]:
    with gzip.open(multi30k / f"{split}.{lang}.gz", "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for _, line in zip(range(skip + n), f, strict=False)][skip:]


def train_spm(multi30k: Path, size: int = 320) -> bytes:
    """A SentencePiece BPE model (as NLLB's and M2M-100's) on de, en and fr lines."""
    import sentencepiece as spm

    text = [line for lang in ("de", "en", "fr") for line in lines(multi30k, lang, SPM_LINES)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text),
        model_writer=model,
        vocab_size=size,
        model_type="bpe",
        character_coverage=0.995,  # a few rare characters stay unknown
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return model.getvalue()


def nllb_tokenizer(spm_bytes: bytes, legacy: bool):
    """transformers' NllbTokenizer over these pieces: fairseq ids (SentencePiece id + 1)."""
    import sentencepiece as spm
    from tokenizers import Regex, normalizers
    from transformers import NllbTokenizer
    from transformers.tokenization_utils_base import generate_merges

    sp = spm.SentencePieceProcessor(model_proto=spm_bytes)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    scores = {}
    for i in range(3, sp.get_piece_size()):
        vocab[sp.id_to_piece(i)] = i + 1
        scores[sp.id_to_piece(i)] = sp.get_score(i)
    tokenizer = NllbTokenizer(
        vocab=vocab,
        merges=generate_merges(vocab, scores),
        src_lang="deu_Latn",
        tgt_lang="eng_Latn",
        legacy_behaviour=legacy,
    )
    # The hub's tokenizer.json normalizes as SentencePiece's nmt_nfkc does (its
    # precompiled character map needs protobuf to extract): NFKC (a no-break space is a
    # space), runs of spaces one.
    tokenizer._tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(Regex(r" {2,}"), " ")]
    )
    return tokenizer


def m2m100_tokenizer(spm_bytes: bytes, directory: Path, drop: int = 4):
    """transformers' M2M100Tokenizer: vocab.json as fairseq's dictionary (specials, then
    the pieces sorted, the `drop` last merges left out)."""
    import sentencepiece as spm
    from transformers import M2M100Tokenizer

    sp = spm.SentencePieceProcessor(model_proto=spm_bytes)
    by_id = [sp.id_to_piece(i) for i in range(3, sp.get_piece_size())]
    pieces = sorted(by_id[:-drop])  # the last merges (rare pieces) left out
    vocab = {p: i for i, p in enumerate(["<s>", "<pad>", "</s>", "<unk>", *pieces])}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    return M2M100Tokenizer(
        vocab_file=str(directory / "vocab.json"),
        spm_file=str(directory / "sentencepiece.bpe.model"),
        src_lang="de",
        tgt_lang="en",
    )


def build_m2m100_dir(
    directory: Path, spm_bytes: bytes, style: str, tune: list[str], limit: int, seed: int = 0
) -> HfModel:
    """Save a random tiny M2M100ForConditionalGeneration and its tokenizer in `directory`,
    its </s> tuned so that greedy output of the German lines `tune` (at most `limit`
    tokens) ends early for some and at the limit for others."""
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    directory.mkdir(parents=True)
    (directory / "sentencepiece.bpe.model").write_bytes(spm_bytes)
    if style == "m2m100":
        tokenizer, codes = m2m100_tokenizer(spm_bytes, directory), M2M_CODES
    else:
        tokenizer, codes = nllb_tokenizer(spm_bytes, legacy=style == "nllb-legacy"), NLLB_CODES
    if style == "m2m100":  # vocab.json, the language tokens, 8 made-up words (128,112)
        size = max(tokenizer.lang_token_to_id.values()) + 1 + tokenizer.num_madeup_words
    else:
        size = len(tokenizer) + 2  # spare rows, as NLLB's 256,206 for 256,204 tokens
    config = M2M100Config(
        vocab_size=size,
        d_model=SHAPE["d_model"],
        encoder_attention_heads=SHAPE["heads"],
        decoder_attention_heads=SHAPE["heads"],
        encoder_ffn_dim=SHAPE["ffn"],
        decoder_ffn_dim=SHAPE["ffn"],
        encoder_layers=SHAPE["layers"],
        decoder_layers=SHAPE["layers"],
        max_position_embeddings=128,
        dropout=0.0,
        attention_dropout=0.0,
        encoder_layerdrop=0.0,
        decoder_layerdrop=0.0,
        scale_embedding=True,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
    )
    torch.manual_seed(seed)
    model = M2M100ForConditionalGeneration(config).eval()
    randomize(model)
    hf = HfModel(directory, model, tokenizer, style, codes)
    end_some(hf, tune, limit)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return hf


def randomize(model) -> None:
    """Weights far from transformers' init (std 0.02 makes every distribution flat, so
    argmax would rest on rounding): unit-gain linears, random LayerNorms, small
    embeddings, gains of random sign in the last LayerNorm, large queries (EMBED_STD,
    OUT_GAIN, QUERY_GAIN)."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                std = EMBED_STD if "embed" in name or "shared" in name else p.size(1) ** -0.5
                p.normal_(0.0, std)
            elif "layer_norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.1)
            if name.endswith("q_proj.weight"):
                p.mul_(QUERY_GAIN)
        final = model.model.decoder.layer_norm.weight
        final.mul_(OUT_GAIN * torch.randint(0, 2, final.shape).mul(2).sub(1))


def end_some(hf: HfModel, sources: list[str], limit: int) -> None:
    """Scale </s>'s embedding row (its logit's spread) until greedy output of `sources`
    ends early for some and at the limit for others: a bisection, a few generate calls."""
    import torch

    embed, eos = hf.model.model.shared.weight, hf.model.config.eos_token_id
    row = embed[eos].detach().clone()
    low, high, n = 1.0, 30.0, len(sources)
    for _ in range(12):
        scale = (low + high) / 2
        with torch.no_grad():
            embed[eos].copy_(row * scale)
        lengths = [len(x) for x in generate(hf, sources, "de", "en", limit, num_beams=1)]
        early = sum(length < limit for length in lengths)
        if n // 4 <= early <= 3 * n // 4:
            return
        low, high = (scale, high) if early < n // 4 else (low, scale)
    raise AssertionError(f"no </s> scale gives mixed lengths; last lengths {lengths}")


def generate(
    hf: HfModel, sources: list[str], src: str, tgt: str, limit: int, **options
) -> list[list[int]]:
    """transformers' output ids after the forced language token, cut before </s>: `limit`
    tokens at most before </s> (as mtkit's max_len_b; </s> is forced after them)."""
    import torch
    from transformers import GenerationConfig

    config = GenerationConfig(
        max_new_tokens=limit + 2,  # the language token, `limit` tokens, </s>
        do_sample=False,
        decoder_start_token_id=2,
        forced_bos_token_id=hf.lang_id(tgt),
        pad_token_id=1,
        eos_token_id=2,
        forced_eos_token_id=2,
        bad_words_ids=[[1]],  # <pad>, which mtkit never produces either
        **options,
    )
    with torch.no_grad():
        out = hf.model.generate(**encode(hf, sources, src), generation_config=config)
    assert (out[:, 1] == hf.lang_id(tgt)).all()
    rows = out[:, 2:].tolist()
    return [row[: row.index(2)] if 2 in row else row for row in rows]


def encode(hf: HfModel, sources: list[str], src: str, tgt: str = "en", targets=None):
    """The tokenizer's batch: input_ids, attention_mask (and labels of `targets`)."""
    hf.tokenizer.src_lang = hf.codes[src]
    hf.tokenizer.tgt_lang = hf.codes[tgt]
    return hf.tokenizer(sources, text_target=targets, return_tensors="pt", padding=True)
