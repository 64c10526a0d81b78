"""`mtkit translate`: text in, text out, one line for every line, in bounded memory.

Owns the stream around the search: loading checkpoints for inference (device,
precision, int8 quantization), reading UTF-8 lines in chunks, encoding them with
the checkpoint's own SentencePiece model, sorting each chunk by length into
token-budget batches, calling mtkit.translate.search, restoring input order and writing
lines as each chunk completes (to a temporary file renamed at the end with -o).
The search itself lives in mtkit.translate.search, the checkpoint format in mtkit.checkpoint.

Line rules: an empty (or blank) line gives an empty line without being decoded;
a line longer than the model's max_positions is cut to fit, with a warning;
`--nbest K` writes K lines `LINE ||| hypothesis ||| score` per input line (LINE
counts from 0, as Moses and Marian do; an empty input line gives one line with an
empty hypothesis and score 0).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mtkit.device import check_choice, dtype_of, pick_device, pick_precision
from mtkit.errors import CheckpointError, ConfigError, DataError
from mtkit.io import atomic_write, input_stream, text_lines
from mtkit.tokenizer import clip_source
from mtkit.translate.search import SearchOptions, check_options, search

log = logging.getLogger(__name__)

QUANTIZE = ("none", "int8")
# Lines read, sorted and translated together: big enough to sort into well-filled
# batches, small enough that memory does not grow with the input.
DEFAULT_CHUNK_LINES = 10_000
# Rows (sentences x beam) x longest source of a batch; measured in bench/translate_speed.py.
DEFAULT_MAX_TOKENS = {"cpu": 6_000, "cuda": 60_000}
# Truncation warnings printed per run before they are only counted.
_WARN_LIMIT = 5


@dataclass(frozen=True)
class RuntimeOptions:
    """Where and how the models run."""

    device: str = "auto"  # auto: cuda when there is one, else cpu
    precision: str = "auto"  # auto: bf16 on a GPU that has it (else fp16), fp32 on the CPU
    quantize: str = "none"  # int8: int8 linear layers (CPU only; mtkit.translate.kernels)
    threads: int = 0  # torch CPU threads; 0 leaves torch's default


@dataclass(frozen=True)
class BatchOptions:
    """How lines are grouped for the search."""

    max_tokens: int | None = None  # None: DEFAULT_MAX_TOKENS for the device
    batch_size: int | None = None  # at most this many sentences a batch
    chunk_lines: int = DEFAULT_CHUNK_LINES


@dataclass
class Translator:
    """Checkpoints ready to translate: models on their device, tokenizers, limits."""

    models: list
    src_tokenizer: object  # mtkit.tokenizer.Tokenizer
    tgt_tokenizer: object
    device: str
    dtype: object  # torch.dtype
    max_src_len: int  # source pieces including eos the models accept
    shortlist: object = None  # mtkit.translate.shortlist.Shortlist, or None: every target id

    @property
    def vocab_size(self) -> int:
        return self.models[0].config.tgt_vocab_size


# -- loading -------------------------------------------------------------------


def load_translator(
    paths: list[Path], runtime: RuntimeOptions = RuntimeOptions(), shortlist: Path | None = None
) -> Translator:
    """Load one checkpoint, or several as an ensemble, for translation (with a lexical
    shortlist file from `mtkit shortlist`, checked against the checkpoint's vocabularies)."""
    if not paths:
        raise ConfigError("no model given; pass -m CHECKPOINT (a .pt file from `mtkit train`)")
    _check_runtime(runtime)
    import torch

    from mtkit.checkpoint import checkpoint_tokenizers, model_from_checkpoint
    from mtkit.translate.kernels import prepare_for_decoding

    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    device = pick_device(runtime.device).type
    dtype = dtype_of(pick_precision(runtime.precision, torch.device(device)))
    if runtime.quantize == "int8" and (device != "cpu" or dtype != torch.float32):
        raise ConfigError(
            "--quantize int8 runs on the CPU in fp32; add --device cpu --precision fp32"
        )
    loaded_shortlist = None  # read before the checkpoints: a bad file fails at once
    if shortlist is not None:
        from mtkit.translate.shortlist import load_shortlist

        loaded_shortlist = load_shortlist(shortlist)
    ckpts = [_load(path) for path in paths]
    _check_same_vocab(ckpts, paths)
    models = []
    for ckpt in ckpts:
        model = model_from_checkpoint(ckpt, device="cpu").to(device=device, dtype=dtype).eval()
        models.append(
            prepare_for_decoding(model, device=device, dtype=dtype, quantize=runtime.quantize)
        )
        del ckpt["model"]  # the weights now live in the model; free the copy
    src_tokenizer, tgt_tokenizer = checkpoint_tokenizers(ckpts[0], name=str(paths[0]))
    if loaded_shortlist is not None:
        loaded_shortlist.check_tokenizers(src_tokenizer, tgt_tokenizer, str(paths[0]), shortlist)
    return Translator(
        models=models,
        src_tokenizer=src_tokenizer,
        tgt_tokenizer=tgt_tokenizer,
        device=device,
        dtype=dtype,
        max_src_len=min(m.config.max_positions for m in models),
        shortlist=loaded_shortlist,
    )


def _load(path: Path) -> dict:
    """A checkpoint file, or a Hugging Face Marian directory imported in memory."""
    from mtkit.checkpoint import load_checkpoint
    from mtkit.interop.marian import is_marian_dir, marian_checkpoint

    return marian_checkpoint(path) if is_marian_dir(path) else load_checkpoint(path)


def _check_runtime(runtime: RuntimeOptions) -> None:
    check_choice("--quantize", runtime.quantize, QUANTIZE)
    if runtime.threads < 0:
        raise ConfigError(f"--threads must be 0 (torch's choice) or more, got {runtime.threads}")


def _check_same_vocab(ckpts: list[dict], paths: list[Path]) -> None:
    """An ensemble averages distributions over one target vocabulary: insist on it."""
    first = ckpts[0]["spm"]
    for ckpt, path in zip(ckpts[1:], paths[1:], strict=True):
        same_tables = ckpt.get("vocab") == ckpts[0].get("vocab")  # imported models' ids
        if ckpt["spm"] != first or not same_tables:
            raise CheckpointError(
                f"{path} uses other SentencePiece models than {paths[0]}; an ensemble needs "
                "checkpoints trained with the same vocabulary"
            )


# -- reading and writing -------------------------------------------------------


@contextmanager
def open_output(path: Path | None):
    """A binary stream to stdout, or to a temporary file renamed to `path` on success."""
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with atomic_write(path) as stream:
        yield stream


def count_lines(path: Path) -> int | None:
    """Lines in a plain file, counted in 1 MiB blocks (for the progress bar); None for gzip."""
    if path.name.endswith(".gz"):
        return None
    count, last = 0, b"\n"
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def format_nbest(line_no: int, hyps: list[tuple[str, float]]) -> str:
    """Moses-style n-best lines: `LINE ||| hypothesis ||| score`, best first."""
    return "".join(f"{line_no} ||| {text} ||| {score:.4f}\n" for text, score in hyps)


# -- translating ---------------------------------------------------------------


def translate_lines(
    translator: Translator,
    lines: Iterable[str],
    search_options: SearchOptions = SearchOptions(),
    batching: BatchOptions = BatchOptions(),
) -> Iterator[list[tuple[str, float]]]:
    """For every input line, in order, its `nbest` (text, score) pairs, best first.

    An empty or blank line yields [("", 0.0)]. Reads `batching.chunk_lines` lines
    at a time, so memory does not depend on the length of `lines`.
    """
    check_options(search_options, translator.vocab_size)
    if batching.chunk_lines < 1:
        raise ConfigError(f"--chunk-lines must be at least 1, got {batching.chunk_lines}")
    warned = [0]
    for first, chunk in _chunks(lines, batching.chunk_lines):
        yield from _translate_chunk(translator, chunk, first, search_options, batching, warned)
    if warned[0] > _WARN_LIMIT:
        log.warning("%d lines in all were truncated to fit the model", warned[0])


def _chunks(lines: Iterable[str], size: int) -> Iterator[tuple[int, list[str]]]:
    chunk, first = [], 0
    for line in lines:
        chunk.append(line)
        if len(chunk) == size:
            yield first, chunk
            first, chunk = first + size, []
    if chunk:
        yield first, chunk


def _translate_chunk(translator, lines, first, options, batching, warned):
    """Encode, sort by length, batch, search, decode: results in input order."""
    ids = translator.src_tokenizer.encode(lines)
    ids = [
        _fit(piece_ids, translator.max_src_len, first + i, warned, translator.src_tokenizer.eos_id)
        for i, piece_ids in enumerate(ids)
    ]
    results: list[list[tuple[str, float]]] = [[("", 0.0)] for _ in lines]
    todo = sorted((i for i, x in enumerate(ids) if x), key=lambda i: -len(ids[i]))
    rows_per_sentence = options.nbest if options.sampling else options.beam_size
    max_tokens = batching.max_tokens or DEFAULT_MAX_TOKENS[translator.device]
    for batch in _batches(todo, ids, rows_per_sentence, max_tokens, batching.batch_size):
        vocab = _shortlist(translator, [ids[i] for i in batch], options)
        hyps = search(translator.models, _pad(batch, ids, translator), options, vocab)
        flat = [h for per in hyps for h in per]  # nbest per sentence, in batch order
        texts = translator.tgt_tokenizer.decode([h.tokens for h in flat])
        pairs = [(_one_line(text), h.score) for text, h in zip(texts, flat, strict=True)]
        n = options.nbest
        for j, i in enumerate(batch):
            results[i] = pairs[j * n : (j + 1) * n]
    return results


def _fit(
    piece_ids: list[int], max_src_len: int, line_no: int, warned: list[int], eos_id: int
) -> list[int]:
    """Source ids + eos, cut to the model's max_positions (with a warning); [] for a blank line."""
    if not piece_ids:
        return []
    if len(piece_ids) + 1 > max_src_len:
        warned[0] += 1
        if warned[0] <= _WARN_LIMIT:
            log.warning(
                "line %d has %d pieces; only the first %d are translated (the model's "
                "max_positions)",
                line_no + 1,
                len(piece_ids),
                max_src_len - 1,
            )
        piece_ids = clip_source(piece_ids, max_src_len)
    return [*piece_ids, eos_id]


def _batches(order: list[int], ids, rows_per_sentence: int, max_tokens: int, batch_size):
    """Cut longest-first `order` into batches of rows x longest source <= max_tokens."""
    batch: list[int] = []
    longest = 0
    for i in order:
        longest_if = max(longest, len(ids[i]))
        too_many = batch_size is not None and len(batch) >= batch_size
        if batch and (too_many or (len(batch) + 1) * rows_per_sentence * longest_if > max_tokens):
            yield batch
            batch, longest_if = [], len(ids[i])
        batch.append(i)
        longest = longest_if
    if batch:
        yield batch


def _shortlist(translator: Translator, sources: list[list[int]], options: SearchOptions):
    """The target ids [V'] the batch may produce, on the device; None without a shortlist."""
    if translator.shortlist is None:
        return None
    import torch

    allowed = translator.shortlist.allowed(sources, min_size=2 * options.beam_size + 4)
    return torch.from_numpy(allowed).to(translator.device)


def _pad(batch: list[int], ids, translator: Translator):
    """[B,S] long on the translator's device, right-padded."""
    import torch

    width, pad = max(len(ids[i]) for i in batch), translator.models[0].config.pad_id
    rows = [ids[i] + [pad] * (width - len(ids[i])) for i in batch]
    return torch.tensor(rows, dtype=torch.long).to(translator.device, non_blocking=True)


def _one_line(text: str) -> str:
    """A translation never spans lines, whatever the pieces decode to."""
    return " ".join(text.splitlines()) if "\n" in text or "\r" in text else text


# -- the command ---------------------------------------------------------------


def translate_file(
    model_paths: list[Path],
    input_path: Path | None = None,
    output_path: Path | None = None,
    search_options: SearchOptions = SearchOptions(),
    batching: BatchOptions = BatchOptions(),
    runtime: RuntimeOptions = RuntimeOptions(),
    shortlist: Path | None = None,
) -> int:
    """Translate `input_path` (stdin when None) to `output_path` (stdout when None), with a
    lexical shortlist file when `shortlist` is given.

    Returns the number of input lines translated. Shows a progress bar on stderr
    when writing to a file.
    """
    if input_path is not None and not Path(input_path).is_file():
        what = "is a directory" if Path(input_path).is_dir() else "not found"
        raise DataError(f"input file {what}: {input_path} (pass a text file, or use stdin)")
    translator = load_translator(model_paths, runtime, shortlist)
    check_options(search_options, translator.vocab_size)
    log.info(
        "translating with %d model(s) on %s (%s), %s",
        len(translator.models),
        translator.device,
        str(translator.dtype).removeprefix("torch."),
        "sampling" if search_options.sampling else f"beam {search_options.beam_size}",
    )
    total = count_lines(Path(input_path)) if input_path is not None else None
    name = str(input_path) if input_path else "stdin"
    with input_stream(input_path) as source, open_output(output_path) as sink:
        lines = (line.removesuffix("\r") for line in text_lines(source, name))
        results = translate_lines(translator, lines, search_options, batching)
        with _progress(output_path is not None, total) as advance:
            every = min(1000, batching.chunk_lines)  # a chunk's lines leave at once
            return _write(results, sink, search_options.nbest > 1, advance, every)


def _write(results, sink: BinaryIO, nbest: bool, advance, every: int) -> int:
    """Write results as they come, flushing (and advancing the bar) every `every` lines."""
    count = 0
    for line_no, hyps in enumerate(results):
        text = format_nbest(line_no, hyps) if nbest else hyps[0][0] + "\n"
        sink.write(text.encode("utf-8"))
        count += 1
        if count % every == 0:
            advance(every)
            sink.flush()
    advance(count % every)
    return count


@contextmanager
def _progress(show: bool, total: int | None):
    if not show:
        yield lambda n: None
        return
    from mtkit.console import progress

    with progress() as bar:
        task = bar.add_task("translating", total=total)
        yield lambda n: bar.advance(task, n)
