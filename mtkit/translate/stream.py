"""`mtkit translate`: text in, text out, one line for every line, in bounded memory.

Owns the stream around the search: loading checkpoints for inference (device,
precision, int8 quantization), reading UTF-8 lines, encoding them with the
checkpoint's own SentencePiece model, calling mtkit.search batch by batch and
writing lines as each chunk completes (to a temporary file renamed at the end with -o).
Chunks, sorting, token-budget batches and input order are mtkit.translate.batching's
(shared with logprob), the search itself is mtkit.search's, the checkpoint
format mtkit.checkpoint's.

Line rules: an empty (or blank) line gives an empty line without being decoded;
a line longer than the model's max_positions is cut to fit, with a warning;
`--nbest K` writes K lines `LINE ||| hypothesis ||| score` per input line (LINE
counts from 0, as Moses and Marian do; an empty input line gives one line with an
empty hypothesis and score 0). `--output-format tsv` writes `source<TAB>translation`
instead (tabs inside either side become spaces), the two-column TSV that
`mtkit prepare --tsv` reads; with `--nbest K`, K rows per input line.

Every line has a key (its byte offset in the input when read from a stream): sampling
and noise draw from the seed and the key only, so a line comes out the same in any
batch or chunk, and in any shard or resumed job (mtkit.translate.shards).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mtkit.constraints import Constraints
from mtkit.device import check_choice, dtype_of, pick_device, pick_precision
from mtkit.errors import CheckpointError, ConfigError
from mtkit.io import atomic_write, check_readable, input_stream, text_lines
from mtkit.languages import Direction, direction_of
from mtkit.search import SearchOptions, check_options, search
from mtkit.tokenizer import clip_source
from mtkit.translate.batching import BatchOptions, Cuts, run_batched
from mtkit.translate.noise import NoiseOptions, check_noise, line_random, noise_words
from mtkit.translate.terms import (
    ConstraintOptions,
    Listed,
    PhraseSource,
    Unused,
    open_phrases,
    phrase_ids,
    word_continuations,
)

log = logging.getLogger(__name__)

QUANTIZE = ("none", "int8")
OUTPUT_FORMATS = ("text", "tsv")
# Rows (sentences x beam) x longest source of a batch; measured in bench/translate_speed.py.
DEFAULT_MAX_TOKENS = {"cpu": 6_000, "cuda": 60_000}


@dataclass(frozen=True)
class RuntimeOptions:
    """Where and how the models run, and in which direction."""

    device: str = "auto"  # auto: cuda when there is one, else cpu
    precision: str = "auto"  # auto: bf16 on a GPU that has it (else fp16), fp32 on the CPU
    quantize: str = "none"  # int8: int8 linear layers (CPU only; mtkit.translate.kernels)
    threads: int = 0  # torch CPU threads; 0 leaves torch's default
    shortlist: str | None = None  # a lexical shortlist file (mtkit shortlist): fewer outputs
    # The model's language codes (mtkit.languages); None: the checkpoint's own pair/default.
    src_lang: str | None = None
    tgt_lang: str | None = None


@dataclass(frozen=True)
class Decoding:
    """Everything besides the models and the input that decides what a translation
    writes: one value from the command down to the lines written."""

    search: SearchOptions = SearchOptions()
    batching: BatchOptions = BatchOptions()
    runtime: RuntimeOptions = RuntimeOptions()
    noise: NoiseOptions = NoiseOptions()
    output_format: str = "text"  # text, or tsv (source<TAB>translation)
    constraints: ConstraintOptions = ConstraintOptions()  # phrases each line must hold

    def check(self) -> None:
        """ConfigError, one line, for options no translation runs with (checked before
        any model loads); the search's own limits need the model (check_options)."""
        check_choice("--output-format", self.output_format, OUTPUT_FORMATS)
        check_noise(self.noise)
        self.batching.check()
        self.constraints.check(self.search)

    @property
    def draws(self) -> bool:
        """Whether it draws random numbers (sampling, noise): shards must share a seed."""
        return self.search.sampling or self.noise.noised

    def seeded(self, seed: int | None) -> Decoding:
        return dataclasses.replace(self, search=dataclasses.replace(self.search, seed=seed))


@dataclass
class Translator:
    """Checkpoints ready to translate: models on their device, tokenizers, limits."""

    models: list
    src_tokenizer: object  # mtkit.tokenizer.Tokenizer
    tgt_tokenizer: object
    device: str
    dtype: object  # torch.dtype
    max_src_len: int  # source pieces including eos the models accept
    shortlist: object = None  # mtkit.shortlist.Shortlist, or None: every target id
    banned: tuple = ()  # target ids never produced: source-side tags (mtkit.search)
    # The language tokens of --src-lang/--tgt-lang (mtkit.languages): added to every
    # source, forced after the decoder's start; empty for a bilingual model.
    direction: Direction = Direction()

    @property
    def vocab_size(self) -> int:
        return self.models[0].config.tgt_vocab_size


# -- loading -------------------------------------------------------------------


def load_translator(
    paths: list[Path], runtime: RuntimeOptions = RuntimeOptions(), *, command: str = "translate"
) -> Translator:
    """Load one checkpoint, or several as an ensemble, for `command` (translate, logprob:
    `--precision auto` may differ, see mtkit.device.pick_precision), with the lexical
    shortlist file `runtime.shortlist` checked against the checkpoint's vocabularies."""
    if not paths:
        raise ConfigError("no model given; pass -m CHECKPOINT (a .pt file from `mtkit train`)")
    _check_runtime(runtime)
    import torch

    from mtkit.checkpoint import checkpoint_tokenizers, model_from_checkpoint
    from mtkit.translate.kernels import prepare_for_decoding

    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    device = pick_device(runtime.device).type
    if runtime.quantize == "int8" and runtime.precision == "auto" and device == "cpu":
        dtype = torch.float32  # int8 linears take fp32 activations, even where AMX has bf16
    else:
        precision = pick_precision(runtime.precision, torch.device(device), command=command)
        dtype = dtype_of(precision)
    if runtime.quantize == "int8" and (device != "cpu" or dtype != torch.float32):
        raise ConfigError(
            "--quantize int8 runs on the CPU in fp32; add --device cpu --precision fp32"
        )
    loaded_shortlist = None  # read before the checkpoints: a bad file fails at once
    if runtime.shortlist is not None:
        from mtkit.shortlist import load_shortlist

        loaded_shortlist = load_shortlist(Path(runtime.shortlist))
    ckpts = [_load(path) for path in paths]
    _check_same_vocab(ckpts, paths)
    direction = direction_of(ckpts[0], runtime.src_lang, runtime.tgt_lang)
    src_tokenizer, tgt_tokenizer = checkpoint_tokenizers(ckpts[0], name=str(paths[0]))
    banned = tgt_tokenizer.tag_ids(training_tags(ckpts))  # source-side tags: never output
    models = []
    for ckpt in ckpts:
        model = model_from_checkpoint(ckpt, device="cpu").to(device=device, dtype=dtype).eval()
        model = prepare_for_decoding(model, device=device, dtype=dtype, quantize=runtime.quantize)
        models.append(model)
        del ckpt["model"]  # the weights now live in the model; free the copy
    if loaded_shortlist is not None:
        loaded_shortlist.check_tokenizers(
            src_tokenizer, tgt_tokenizer, str(paths[0]), runtime.shortlist
        )
    return Translator(
        models=models,
        src_tokenizer=src_tokenizer,
        tgt_tokenizer=tgt_tokenizer,
        device=device,
        dtype=dtype,
        max_src_len=min(m.config.max_positions for m in models),
        shortlist=loaded_shortlist,
        banned=tuple(banned),
        direction=direction,
    )


def training_tags(ckpts: list[dict]) -> tuple[str, ...]:
    """train-bpe's reserved tags and the tags of the corpora the checkpoints trained on
    (a multilingual model's target-language tags too: they go before sources only)."""
    from mtkit.tokenizer import RESERVED_TAGS

    used = [row["tag"] for ckpt in ckpts for row in ckpt.get("mix") or [] if row.get("tag")]
    for ckpt in ckpts:
        if (ckpt.get("languages") or {}).get("scheme") == "tag":
            used += list(ckpt["languages"]["tokens"].values())
    return tuple(dict.fromkeys((*RESERVED_TAGS, *used)))


def _load(path: Path) -> dict:
    """A checkpoint file, or a Hugging Face directory (Marian, NLLB-200, M2M-100)
    imported in memory."""
    from mtkit.checkpoint import load_checkpoint
    from mtkit.interop.hf import hf_checkpoint, is_hf_dir

    return hf_checkpoint(path) if is_hf_dir(path) else load_checkpoint(path)


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


def format_result(
    line_no: int, source: str, hyps: list[tuple[str, float]], nbest: bool, output_format: str
) -> str:
    """The output lines of one input line: its translation, its n-best list, or TSV rows."""
    if output_format == "tsv":
        source = _no_tabs(source)
        return "".join(f"{source}\t{_no_tabs(text)}\n" for text, _ in hyps)
    return format_nbest(line_no, hyps) if nbest else hyps[0][0] + "\n"


def _no_tabs(text: str) -> str:
    return text.replace("\t", " ") if "\t" in text else text


def keyed_lines(stream: BinaryIO, name: str, offset: int = 0) -> Iterator[tuple[int, str]]:
    """(byte offset, line) for every line of a binary stream, as `text_lines` reads them
    (UTF-8, LF-ended), with a final CR removed; offsets count from `offset`."""
    for line in text_lines(stream, name):
        size = len(line.encode("utf-8")) + 1
        yield offset, line.removesuffix("\r")
        offset += size


# -- translating ---------------------------------------------------------------


def translate_lines(
    translator: Translator,
    lines: Iterable[str],
    search_options: SearchOptions = SearchOptions(),
    batching: BatchOptions = BatchOptions(),
    noise: NoiseOptions = NoiseOptions(),
    constraints: Iterable[Sequence[str]] | None = None,
) -> Iterator[list[tuple[str, float]]]:
    """For every input line, in order, its `nbest` (text, score) pairs, best first.

    An empty or blank line yields [("", 0.0)]. Reads `batching.chunk_lines` lines
    at a time, so memory does not depend on the length of `lines`. Lines are keyed
    0, 1, 2 ... for sampling and noise (see `translate_keyed`). `constraints`: for
    every line, the target phrases its translation must hold (mtkit.constraints).
    """
    source = None if constraints is None else Listed(constraints)
    keyed = enumerate(lines)
    return translate_keyed(translator, keyed, search_options, batching, noise, constraints=source)


def translate_keyed(
    translator: Translator,
    keyed: Iterable[tuple[int, str]],
    search_options: SearchOptions = SearchOptions(),
    batching: BatchOptions = BatchOptions(),
    noise: NoiseOptions = NoiseOptions(),
    first_line: int = 0,
    where: str = "",
    constraints: PhraseSource | None = None,
) -> Iterator[list[tuple[str, float]]]:
    """`translate_lines` over (key, line) pairs: a line's samples and noise depend only
    on the seed (drawn once here when None) and its key. Warnings number the lines from
    `first_line` + 1 and add `where` (" of shard 2/8"). `constraints` gives each line's
    target phrases (mtkit.translate.terms)."""
    Decoding(search_options, batching, noise=noise).check()
    check_options(search_options, translator.vocab_size)
    _check_filler(translator, noise)
    if constraints is not None:
        Constraints.check(search_options)  # a beam of 2 or more
        constraints.check(translator.tgt_tokenizer)
    if Decoding(search_options, noise=noise).draws and search_options.seed is None:
        search_options = dataclasses.replace(search_options, seed=random.getrandbits(63))
    return _translate_keyed(
        translator, keyed, search_options, batching, noise, first_line, where, constraints
    )


# Marks a log record that says the same for every shard of a job (the model, the
# options): `--workers N` prints it from the first worker only, not N times.
JOB_WIDE = {"job_wide": True}


def not_job_wide(record: logging.LogRecord) -> bool:
    """A log filter for workers 2..N: drops the records marked JOB_WIDE."""
    return not getattr(record, "job_wide", False)


def _check_filler(translator: Translator, noise: NoiseOptions) -> None:
    """A warning when the filler of blanked words is unknown to the model's target
    SentencePiece model, which the synthetic sources are usually encoded with: their
    blanks would become <unk> pieces. Models from train-bpe hold the default whole."""
    if noise.noised and not translator.tgt_tokenizer.knows(noise.noise_filler):
        log.warning(
            "--noise-filler %r holds characters the model's target SentencePiece model does "
            "not know: the noised sources will have <unk> pieces where words were blanked; "
            "pass --noise-filler WORD with a word it encodes (e.g. BLANK)",
            noise.noise_filler,
            extra=JOB_WIDE,
        )


def _translate_keyed(translator, keyed, search_options, batching, noise, first, where, phrases):
    unused = Unused()  # lines whose constraints do not fit
    joins = phrases and word_continuations(translator.tgt_tokenizer, translator.vocab_size)

    def encode(chunk, number, cuts):
        lines = [line for _, line in chunk]
        ids = translator.src_tokenizer.encode(lines)
        targets = phrase_ids(translator.tgt_tokenizer, phrases, lines, number, where)
        return [
            (_fit(piece_ids, translator, number + i, cuts, where), key, targets[i], number + i)
            for i, (piece_ids, (key, _)) in enumerate(zip(ids, chunk, strict=True))
        ]

    def run(batch):
        warn = lambda i: unused.warn(i, where)  # noqa: E731
        return _translate_batch(translator, batch, search_options, warn, joins)

    results = run_batched(
        keyed,
        batching,
        encode,
        cost=lambda item: len(item[0]),
        run=run,
        empty=[("", 0.0)],
        max_tokens=batching.max_tokens or DEFAULT_MAX_TOKENS[translator.device],
        rows_per_item=search_options.nbest if search_options.sampling else search_options.beam_size,
        first=first,
    )
    for (key, _), hyps in results:
        yield _noised(hyps, key, noise, search_options.seed) if noise.noised else hyps
    if phrases is not None:
        phrases.finish()
        unused.summary()


def _noised(hyps, key: int, noise: NoiseOptions, seed: int):
    rng = line_random(seed, key)
    return [(noise_words(text, noise, rng), score) for text, score in hyps]


def _fit(piece_ids: list[int], translator: Translator, line_no: int, cuts: Cuts, where: str):
    """Source ids + eos (and the direction's language tokens), cut to the model's
    max_positions (with a warning); [] for a blank line."""
    if not piece_ids:
        return []
    direction = translator.direction
    room = translator.max_src_len - direction.extra_source
    if len(piece_ids) + 1 > room:
        cuts.warn(
            "line %d%s has %d pieces; only the first %d are translated (the model's max_positions)",
            line_no + 1,
            where,
            len(piece_ids),
            room - 1,
        )
        piece_ids = clip_source(piece_ids, room)
    return direction.source(piece_ids, translator.src_tokenizer.eos_id)


def _translate_batch(translator: Translator, batch: list, options, unused, joins=None) -> list:
    """Search one batch of (source ids, key, constraint ids, line number): each source's
    nbest (text, score) pairs; `unused(line number)` for constraints that did not fit;
    `joins`: the ids that go on with a word (mtkit.constraints)."""
    sources = [item[0] for item in batch]
    vocab = _shortlist(translator, sources, options)
    src = _pad(sources, translator)
    keys = [item[1] for item in batch]
    phrases = [item[2] for item in batch]
    constraints = Constraints(phrases, joins) if any(phrases) else None
    prefix = translator.direction.target_prefix
    hyps = search(
        translator.models, src, options, keys, vocab, translator.banned, prefix, constraints
    )
    for i in constraints.dropped if constraints else ():
        unused(batch[i][3] + 1)
    flat = [h for per in hyps for h in per]  # nbest per sentence, in batch order
    texts = translator.tgt_tokenizer.decode([h.tokens for h in flat])
    pairs = [(_one_line(text), h.score) for text, h in zip(texts, flat, strict=True)]
    n = options.nbest
    return [pairs[j * n : (j + 1) * n] for j in range(len(batch))]


def _shortlist(translator: Translator, sources: list[list[int]], options: SearchOptions):
    """The target ids [V'] the batch may produce, on the device; None without a shortlist."""
    if translator.shortlist is None:
        return None
    import torch

    allowed = translator.shortlist.allowed(sources, min_size=2 * options.beam_size + 4)
    return torch.from_numpy(allowed).to(translator.device)


def _pad(sources: list[list[int]], translator: Translator):
    """[B,S] long on the translator's device, right-padded."""
    import torch

    width, pad = max(map(len, sources)), translator.models[0].config.pad_id
    rows = [ids + [pad] * (width - len(ids)) for ids in sources]
    return torch.tensor(rows, dtype=torch.long).to(translator.device, non_blocking=True)


def _one_line(text: str) -> str:
    """A translation never spans lines, whatever the pieces decode to."""
    return " ".join(text.splitlines()) if "\n" in text or "\r" in text else text


# -- the command ---------------------------------------------------------------


def translate_file(
    model_paths: list[Path],
    input_path: Path | None = None,
    output_path: Path | None = None,
    decoding: Decoding = Decoding(),
) -> int:
    """Translate `input_path` (stdin when None) to `output_path` (stdout when None), in one
    go: no progress is kept (mtkit.translate.shards makes file-to-file jobs resumable).

    Returns the number of input lines translated. Shows a progress bar on stderr
    when writing to a file.
    """
    decoding.check()
    if input_path is not None:
        check_readable(input_path, "input file")
    translator = load_translator(model_paths, decoding.runtime)
    log_start(translator, decoding)
    total = count_lines(Path(input_path)) if input_path is not None else None
    name = str(input_path) if input_path else "stdin"
    phrases = open_phrases(decoding.constraints, input_path)
    with input_stream(input_path) as source, open_output(output_path) as sink, phrases as targets:
        keyed = keyed_lines(source, name)
        with _progress(output_path is not None, total) as advance:
            every = min(1000, decoding.batching.chunk_lines)  # a chunk's lines leave at once

            def tick(count: int, _key: int) -> None:
                if count % every == 0:
                    advance(every)
                    sink.flush()

            count = write_results(translator, keyed, sink, decoding, 0, tick, "", targets)
            advance(count % every)
            return count


def log_start(translator: Translator, decoding: Decoding) -> None:
    search_options = decoding.search
    mode = "sampling" if search_options.sampling else f"beam {search_options.beam_size}"
    log.info(
        "translating with %d model(s) on %s (%s), %s%s%s",
        len(translator.models),
        translator.device,
        str(translator.dtype).removeprefix("torch."),
        mode,
        ", noised" if decoding.noise.noised else "",
        ", constrained" if decoding.constraints.active else "",
    )


def write_results(
    translator: Translator,
    keyed: Iterable[tuple[int, str]],
    sink: BinaryIO,
    decoding: Decoding,
    first_line: int = 0,
    on_line=None,
    where: str = "",
    constraints: PhraseSource | None = None,
) -> int:
    """Translate (key, line) pairs and write each line's output as it comes; returns the
    lines done. `on_line(count, key)` runs after each line is written (count from 1);
    nbest LINE numbers start at `first_line`. `constraints`: each line's target phrases
    (mtkit.translate.terms.open_phrases)."""
    pending: deque[tuple[int, str]] = deque()  # read, not yet written: at most a chunk

    def remember():
        for key, line in keyed:
            pending.append((key, line))
            yield key, line

    results = translate_keyed(
        translator,
        remember(),
        decoding.search,
        decoding.batching,
        decoding.noise,
        first_line,
        where,
        constraints,
    )
    nbest, output_format = decoding.search.nbest > 1, decoding.output_format
    count = words = 0
    started = time.perf_counter()
    for hyps in results:
        key, line = pending.popleft()
        sink.write(format_result(first_line + count, line, hyps, nbest, output_format).encode())
        count += 1
        words += len(hyps[0][0].split())
        if on_line is not None:
            on_line(count, key)
    seconds = time.perf_counter() - started
    # fairseq-generate's closing line: the decoding rate, model loading left out.
    log.info(
        "translated %d lines%s (%d words out) in %.1f s: %.1f lines/s",
        count, where, words, seconds, count / max(seconds, 1e-9),
    )  # fmt: skip
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
