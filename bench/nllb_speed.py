"""translate on an NLLB-shaped model beside transformers' generate and CTranslate2 (issue 35).

One random M2M100ForConditionalGeneration of NLLB-200-distilled-600M's shape (the real
weights cannot be downloaded here) is saved as the hub lays it out, imported with
`mtkit import`'s code and exported to CTranslate2 (fp32 and int8): the same weights in
every engine. Each engine decodes the same test2016 sentences, as the same ids (the
`deu_Latn` token first, `eng_Latn` forced after the decoder's start), in the same
batches, with the same beam and threads, every output forced to the same length (a
random model's outputs would otherwise end anywhere): lines a second are comparable.

    python -m bench nllb_speed                         # 100 sentences, beam 4, 2 threads
    python -m bench.nllb_speed --sentences 40 --beam 1
    python -m bench.nllb_speed --tiny                  # the script itself, in seconds
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.common import MULTI30K, print_machine, read_lines, test2016

NLLB_600M = dict(d_model=1024, layers=12, heads=16, ffn=4096)
TINY = dict(d_model=64, layers=1, heads=4, ffn=128)
NLLB_VOCAB = 256_206
CODES = ("deu_Latn", "eng_Latn")
# The model in three engines at once at most (2.5 GB each in fp32) and the checkpoint.
NEEDS = 12 << 30


def _available() -> int:
    """MemAvailable of /proc/meminfo, bytes (0 when unknown)."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def nllb_style_spm(lines: int = 20_000, size: int = 8000) -> bytes:
    """A BPE SentencePiece model with SentencePiece's own specials (<unk> 0, <s> 1, </s> 2),
    as NLLB's sentencepiece.bpe.model has them, on Multi30k's German and English."""
    import io

    import sentencepiece

    text = [
        line for lang in ("de", "en") for line in read_lines(MULTI30K / f"train.{lang}.gz", lines)
    ]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=model, vocab_size=size, model_type="bpe",
        minloglevel=2,
    )  # fmt: skip
    return model.getvalue()


def hf_directory(directory: Path, spm: bytes, shape: dict, vocab: int):
    """A random M2M100ForConditionalGeneration saved as NLLB's repository is laid out:
    config.json, model.safetensors, sentencepiece.bpe.model and tokenizer_config.json
    (the language codes; the ids are fairseq's layout). Returns the model."""
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sentencepiece.bpe.model").write_bytes(spm)
    tokenizer = {"tokenizer_class": "NllbTokenizer", "additional_special_tokens": list(CODES)}
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    config = M2M100Config(
        vocab_size=vocab, d_model=shape["d_model"], encoder_layers=shape["layers"],
        decoder_layers=shape["layers"], encoder_attention_heads=shape["heads"],
        decoder_attention_heads=shape["heads"], encoder_ffn_dim=shape["ffn"],
        decoder_ffn_dim=shape["ffn"], max_position_embeddings=1024, scale_embedding=True,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, dropout=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = M2M100ForConditionalGeneration(config).eval()
    model.save_pretrained(directory)
    return model


def batches(ids: list[list[int]], size: int) -> list[list[int]]:
    """Indices of `ids` sorted by length, cut into batches of `size`."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    return [order[i : i + size] for i in range(0, len(order), size)]


def run_hf(model, ids, groups, prefix: int, beam: int, length: int) -> tuple[float, int]:
    """transformers' generate: seconds and tokens written (language token and eos out)."""
    import torch
    from transformers import GenerationConfig

    config = GenerationConfig(
        num_beams=beam, do_sample=False, decoder_start_token_id=2, forced_bos_token_id=prefix,
        pad_token_id=1, eos_token_id=2, forced_eos_token_id=2, min_new_tokens=length + 1,
        max_new_tokens=length + 2,
        early_stopping=True, length_penalty=1.0,
    )  # fmt: skip
    began, tokens = time.perf_counter(), 0
    for group in groups:
        rows = [ids[i] for i in group]
        width = max(map(len, rows))
        src = torch.tensor([r + [1] * (width - len(r)) for r in rows])
        with torch.inference_mode():
            out = model.generate(input_ids=src, attention_mask=src != 1, generation_config=config)
        tokens += int(((out[:, 2:] != 1) & (out[:, 2:] != 2)).sum())
    return time.perf_counter() - began, tokens


def run_mtkit(ckpt: Path, ids, groups, beam: int, length: int, quantize: str, threads: int):
    """mtkit's search over the same batches: seconds and tokens written."""
    import torch

    from mtkit.search import SearchOptions, search
    from mtkit.translate.stream import RuntimeOptions, load_translator

    runtime = RuntimeOptions(
        device="cpu", precision="fp32", quantize=quantize, threads=threads,
        src_lang=CODES[0], tgt_lang=CODES[1],
    )  # fmt: skip
    translator = load_translator([ckpt], runtime)
    prefix = translator.direction.target_prefix
    options = SearchOptions(
        beam_size=beam, min_len=length, max_len_a=0.0, max_len_b=length, len_norm=True
    )
    began, tokens = time.perf_counter(), 0
    for group in groups:
        rows = [ids[i] for i in group]
        width = max(map(len, rows))
        src = torch.tensor([r + [1] * (width - len(r)) for r in rows])
        hyps = search(translator.models, src, options, prefix=prefix)
        tokens += sum(len(per[0].tokens) for per in hyps)
    return time.perf_counter() - began, tokens


def run_ct2(directory: Path, table, ids, groups, beam: int, length: int, kind: str, threads):
    """CTranslate2 over the same batches: seconds and tokens written."""
    import ctranslate2

    translator = ctranslate2.Translator(
        str(directory), device="cpu", compute_type=kind, intra_threads=threads
    )
    began, tokens = time.perf_counter(), 0
    for group in groups:
        pieces = [[table[i] for i in ids[j][:-1]] for j in group]  # CTranslate2 adds </s>
        results = translator.translate_batch(
            pieces, target_prefix=[[CODES[1]]] * len(group), beam_size=beam,
            min_decoding_length=length + 1, max_decoding_length=length + 1, length_penalty=1.0,
        )  # fmt: skip
        tokens += sum(len(r.hypotheses[0]) - 1 for r in results)
    return time.perf_counter() - began, tokens


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=100)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--length", type=int, default=30, help="target tokens every output has")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="a 64-wide model: check the script")
    args = parser.parse_args(argv)
    import torch

    from mtkit.checkpoint import checkpoint_tokenizers, save_checkpoint
    from mtkit.interop.ctranslate2 import ExportOptions, export_ctranslate2
    from mtkit.interop.m2m100 import m2m100_checkpoint
    from mtkit.languages import direction_of

    torch.set_num_threads(args.threads)
    free = _available()
    if not args.tiny and free < NEEDS:
        print(f"skipped: it needs about {NEEDS >> 30} GiB free, {free / (1 << 30):.1f} free")
        return
    with tempfile.TemporaryDirectory(prefix="mtkit-nllb-speed-") as scratch:
        tmp = Path(scratch)
        spm = nllb_style_spm()
        shape = TINY if args.tiny else NLLB_600M
        model = hf_directory(tmp / "hf", spm, shape, NLLB_VOCAB)
        ckpt = m2m100_checkpoint(tmp / "hf")
        table = ckpt["vocab"]["src"]
        direction = direction_of(ckpt, *CODES)
        path = save_checkpoint(tmp / "nllb.pt", ckpt)
        del ckpt
        sources, _ = test2016(args.sentences)
        tables = {"spm": {"src": spm, "tgt": spm}, "vocab": {"src": table, "tgt": table}}
        src_tok, _ = checkpoint_tokenizers(tables)
        ids = [direction.source(x, 2) for x in src_tok.encode(sources)]
        groups = batches(ids, args.batch)
        prefix = direction.target_prefix[0]
        n_params = sum(p.numel() for p in model.parameters())
        print_machine(f"threads {args.threads}", f"beam {args.beam}", f"batch {args.batch}")
        print(
            f"model: {n_params / 1e6:.0f} M parameters, vocab {NLLB_VOCAB:,}; {len(ids)} "
            f"test2016 sentences, every output {args.length} tokens"
        )
        beam, length, threads = args.beam, args.length, args.threads
        rows = [("transformers generate fp32", *run_hf(model, ids, groups, prefix, beam, length))]
        del model
        for quantize, name in (("none", "fp32"), ("int8", "int8")):
            seconds, tokens = run_mtkit(path, ids, groups, beam, length, quantize, threads)
            rows.append((f"mtkit translate {name}", seconds, tokens))
        for kind, name in (("float32", "fp32"), ("int8", "int8")):
            out = tmp / f"ct2-{kind}"
            export_ctranslate2(
                path, out, ExportOptions(quantize="none" if name == "fp32" else kind)
            )
            seconds, tokens = run_ct2(out, table, ids, groups, beam, length, kind, threads)
            rows.append((f"CTranslate2 {name}", seconds, tokens))
        print(f"{'engine':<28} {'seconds':>8} {'lines/s':>8} {'tokens':>7}")
        for name, seconds, tokens in rows:
            print(f"{name:<28} {seconds:>8.1f} {len(ids) / seconds:>8.2f} {tokens:>7}")


if __name__ == "__main__":
    main()
