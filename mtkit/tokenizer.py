"""SentencePiece for mtkit: training subword models and turning text into ids and back.

This module owns `mtkit train-bpe` (`train_spm`) and the `Tokenizer` that every
later stage uses to encode and decode. Every model trained here has the same
special ids, which the models and checkpoints rely on:

    pad = 0 ("<pad>"), unk = 1 ("<unk>"), bos = 2 ("<s>"), eos = 3 ("</s>")

`Tokenizer.encode` returns the bare subword ids; the caller adds the specials:
the source is `ids + [eos]`, the decoder input `[bos] + ids` and its output
`ids + [eos]` (teacher forcing). Reading corpora and cleaning them is `mtkit.prepare`'s job.
"""

from __future__ import annotations

import logging
import os
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mtkit.errors import ConfigError, DataError
from mtkit.io import atomic_write, check_readable, write_text
from mtkit.sampling import check_temperature

log = logging.getLogger(__name__)

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
# Pieces every model from train-bpe holds whole, for source-side tags: `mtkit train --data
# DIR:1:tag` puts <BT> (tagged back-translation, Caswell et al. 2019) before each source
# sentence of DIR. They are never produced by translate (`Tokenizer.tag_ids` are masked).
RESERVED_TAGS = ("<BT>",)
# The word `translate --noised` puts for a blanked word (Edunov et al., 2018). Held whole
# too, so that a noised synthetic source encodes it as one piece, not as <unk>s around
# "blank" ("<" and ">" are absent from most corpora, and train refuses a corpus whose
# pieces are more than 5% unknown).
BLANK_PIECE = "<blank>"
RESERVED_PIECES = (*RESERVED_TAGS, BLANK_PIECE)
# mtkit's multilingual models put the target language's piece in front of every source
# (Johnson et al., 2017; scheme "tag" of mtkit.languages): `train-bpe --langs de,en`
# reserves <2de> and <2en>, and `train` refuses a multilingual run without them.
LANG_TAG = "<2{}>"
_LANG_CODE = re.compile(r"[A-Za-z0-9_-]{1,16}")
MODEL_TYPES = ("bpe", "unigram")
# Marian samples 2 M lines by default (--sentencepiece-max-lines): enough for a
# good vocabulary, and a WMT corpus of 4.5 M pairs then trains in a few GB.
DEFAULT_INPUT_SENTENCE_SIZE = 2_000_000
# How many lines are read between two updates of the progress bar.
_PROGRESS_EVERY = 20_000


@dataclass
class SpmOptions:
    """The SentencePiece training options mtkit exposes (see `mtkit train-bpe --help`)."""

    vocab_size: int = 8000
    model_type: str = "bpe"
    # 1.0 keeps every character, right for alphabetic scripts (fairseq, Marian);
    # 0.9995 is SentencePiece's advice for CJK, where rare characters become <unk>.
    character_coverage: float = 1.0
    # Lines sampled (shuffled reservoir) from the input; 0 uses every line.
    input_sentence_size: int = DEFAULT_INPUT_SENTENCE_SIZE
    user_defined_symbols: tuple[str, ...] = ()
    threads: int = 0  # 0: every core, at most 16 (SentencePiece's default)
    # Language codes whose tags (<2de>) the model holds whole: a multilingual model's.
    langs: tuple[str, ...] = ()
    # Balance the input's languages (the suffix of each file: train.de): each is read
    # in proportion to its lines^(1/T) (mtkit.sampling); 1: every line once, as given.
    sample_temperature: float = 1.0

    def check(self) -> None:
        """Raise ConfigError for values SentencePiece would reject less clearly."""
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(
                f"unknown model type {self.model_type!r}; choose one of {', '.join(MODEL_TYPES)}"
            )
        if self.vocab_size < 8:
            raise ConfigError(f"vocab size {self.vocab_size} is too small; pass 8 or more")
        if not 0.0 < self.character_coverage <= 1.0:
            raise ConfigError(
                f"character coverage {self.character_coverage} is out of range; "
                "pass a value in (0, 1], e.g. 1.0 or 0.9995 for CJK"
            )
        if self.input_sentence_size < 0:
            raise ConfigError(
                f"input sentence size {self.input_sentence_size} is negative; "
                "pass 0 to use every line, or a positive number of lines to sample"
            )
        check_temperature(self.sample_temperature)
        for code in self.langs:
            if not _LANG_CODE.fullmatch(code):
                raise ConfigError(
                    f"--langs {code!r} is not a language code (letters, digits, _ and -, "
                    "at most 16); write e.g. --langs de,en,fr"
                )

    @property
    def symbols(self) -> list[str]:
        """The pieces held whole: the reserved ones, the language tags, the user's."""
        tags = tuple(lang_tag(code) for code in self.langs)
        return list(dict.fromkeys(RESERVED_PIECES + tags + self.user_defined_symbols))


def lang_tag(code: str) -> str:
    """The piece of a language in mtkit's multilingual models: <2de> for de."""
    return LANG_TAG.format(code)


def spm_model_path(spm_dir: Path, lang: str | None = None) -> Path:
    """Where train-bpe puts a model: SPM/spm.model (joint) or SPM/spm.LANG.model (separate)."""
    return Path(spm_dir) / ("spm.model" if lang is None else f"spm.{lang}.model")


def input_lang(path: Path) -> str:
    """The language a corpus file is named for: its last suffix (train.de, train.de.gz -> de)."""
    name = Path(path).name
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = Path(name).suffix.lstrip(".")
    if not suffix:
        raise ConfigError(
            f"cannot tell the language of {path} from its name; with --separate or "
            "--sample-temperature each input must end in its language code, e.g. train.de"
        )
    return suffix


def train_spm(
    inputs: Sequence[Path], out_dir: Path, options: SpmOptions, separate: bool = False
) -> list[Path]:
    """Train one joint SentencePiece model on all `inputs`, or one per input file.

    Writes spm.model and spm.vocab into `out_dir` (or spm.LANG.model and
    spm.LANG.vocab per input with `separate`, LANG from the file name) and
    returns the model paths. Files appear only once complete.
    """
    options.check()
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise ConfigError("no input files; pass --input FILE at least once")
    for path in inputs:
        check_readable(path, "input file")
    langs = [input_lang(p) for p in inputs] if separate else []
    if len(set(langs)) != len(langs):
        raise ConfigError(
            f"--separate needs one input per language, but the inputs' languages are "
            f"{', '.join(langs)}; give each language one file (train.de, train.en)"
        )
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; pass a directory for the model files")
    out_dir.mkdir(parents=True, exist_ok=True)
    if not separate:
        repeats = balanced_repeats(inputs, options.sample_temperature)
        return [_train_one(inputs, out_dir, "spm", options, repeats)]
    if options.sample_temperature != 1.0:
        raise ConfigError(
            "--sample-temperature balances the languages of one joint model; "
            "drop it with --separate (each model reads one language)"
        )
    return [
        _train_one([p], out_dir, f"spm.{lang}", options)
        for p, lang in zip(inputs, langs, strict=True)
    ]


def _train_one(
    inputs: list[Path], out_dir: Path, name: str, options: SpmOptions, repeats=None
) -> Path:
    """Train one model in a temporary directory beside the output, then move it into place.
    `repeats`: how often each line of each input is read (balanced_repeats); None: once."""
    from mtkit.console import progress

    with progress() as bar:
        reading = bar.add_task(f"reading {name} input", total=_total_bytes(inputs))
        reader = _LineReader(inputs, on_bytes=lambda n: bar.update(reading, completed=n))
        reader.repeats = repeats
        # SentencePiece reads every line before it trains, so training starts
        # when the reader is exhausted; it has no progress of its own to show.
        training = []
        reader.on_done = lambda: training.append(
            bar.add_task(f"training {name} ({options.model_type})", total=None)
        )
        model = _sentencepiece_train(reader, options)
        bar.update(training[0], total=1, completed=1)
    # SentencePiece's own writer reports success on a full disk, so it hands us the
    # bytes and we write them; the .model is what other stages look for: it comes last.
    write_text(out_dir / f"{name}.vocab", _vocab_text(model))
    with atomic_write(out_dir / f"{name}.model") as file:
        file.write(model)
    log.info(
        "wrote %s (%s, vocab %d)", out_dir / f"{name}.model", options.model_type, options.vocab_size
    )
    return out_dir / f"{name}.model"


def _total_bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def _sentencepiece_train(reader: _LineReader, options: SpmOptions) -> bytes:
    """Call SentencePiece's trainer and return the model, turning its errors into ours."""
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    threads = options.threads or min(16, os.cpu_count() or 1)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(reader),
            model_writer=model,
            vocab_size=options.vocab_size,
            model_type=options.model_type,
            character_coverage=options.character_coverage,
            input_sentence_size=options.input_sentence_size,
            shuffle_input_sentence=True,
            user_defined_symbols=options.symbols,
            num_threads=threads,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            pad_piece="<pad>",
            # Errors only: they come back as exceptions; the INFO log is hundreds of lines.
            minloglevel=2,
        )
    except RuntimeError as error:
        # An error in our reader reaches us wrapped in SentencePiece's RuntimeError.
        raise reader.error or _spm_error(str(error)) from None
    return model.getvalue()


def _vocab_text(model: bytes) -> str:
    """The .vocab file SentencePiece writes beside a model: `piece<TAB>score`, in id order."""
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_proto=model)
    return "".join(
        f"{processor.id_to_piece(i)}\t{processor.get_score(i):g}\n"
        for i in range(processor.get_piece_size())
    )


def _spm_error(message: str) -> Exception:
    """Our one-line error for a SentencePiece training failure."""
    too_high = re.search(r"Vocabulary size too high \((\d+)\).*<= (\d+)", message)
    if too_high:
        size, most = too_high.groups()
        return DataError(
            f"vocab size {size} is too large for this data; the most it allows is {most}; "
            f"pass --vocab-size {most} or less"
        )
    too_low = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", message)
    if too_low:
        size, need = too_low.groups()
        return DataError(
            f"vocab size {size} is too small for this data, which needs {need} pieces for its "
            f"characters alone; pass --vocab-size {need} or more, or lower --character-coverage"
        )
    if "sentences_.empty()" in message:
        return DataError("the input files have no text to train on; check the --input files")
    first = message.strip().splitlines()[0] if message.strip() else "no message"
    return DataError(f"SentencePiece training failed: {first}")


def balanced_repeats(inputs: list[Path], temperature: float, seed: int = 1) -> list | None:
    """How often SentencePiece reads each line of each input (a uint32 array per input) so
    that the languages (file suffixes) come in proportion to lines^(1/T) and the lines in
    all stay as many as the input's (mtkit.sampling): a language above its share is read
    in part, one below it in whole copies and a seeded part more. None for T = 1."""
    if temperature == 1.0:
        return None
    import numpy as np

    from mtkit.sampling import balanced_sizes, draw

    langs = [input_lang(path) for path in inputs]  # before the long count: fail at once
    counts = [_count_lines(path) for path in inputs]
    names = list(dict.fromkeys(langs))
    sizes = [
        sum(n for n, lang in zip(counts, langs, strict=True) if lang == name) for name in names
    ]
    repeats: list = [None] * len(inputs)
    for g, (name, size, target) in enumerate(
        zip(names, sizes, balanced_sizes(sizes, temperature), strict=True)
    ):
        taken = draw(size, target / size if size else 0.0, [seed, g])
        times = np.bincount(taken, minlength=size).astype(np.uint32)
        mine = [k for k, lang in enumerate(langs) if lang == name]
        bounds = np.cumsum([0] + [counts[k] for k in mine])
        for k, start, end in zip(mine, bounds[:-1], bounds[1:], strict=True):
            repeats[k] = times[start:end]
        log.info("train-bpe reads %s lines of %s (%s in the input; --sample-temperature %g)",
                 f"{len(taken):,}", name, f"{size:,}", temperature)  # fmt: skip
    return repeats


def _count_lines(path: Path) -> int:
    from mtkit.io import open_text

    try:
        with open_text(path) as text:
            return sum(1 for _ in text)
    except UnicodeDecodeError as error:
        raise _utf8_error(path, error) from None


def _utf8_error(path: Path, error: UnicodeDecodeError) -> DataError:
    return DataError(f"{path} is not valid UTF-8 ({error.reason}); convert it, e.g. with iconv")


def _repeated(lines: Iterator[str], times) -> Iterator[str]:
    """Each line `times[i]` times (a file that grew since it was counted: the rest once)."""
    for i, line in enumerate(lines):
        for _ in range(int(times[i]) if i < len(times) else 1):
            yield line


class _LineReader:
    """The lines of plain or gzipped UTF-8 files, for SentencePiece's sentence_iterator.

    Reports bytes read (progress) and keeps the first error it meets, since
    SentencePiece turns an exception from the iterator into a RuntimeError.
    """

    def __init__(self, paths: list[Path], on_bytes):
        self.paths = paths
        self.on_bytes = on_bytes
        self.on_done = lambda: None
        self.error: DataError | None = None
        self.repeats: list | None = None  # per path, how often each line is read

    def __iter__(self) -> Iterator[str]:
        done = 0
        for k, path in enumerate(self.paths):
            try:
                lines = self._lines(path, done)
                yield from lines if self.repeats is None else _repeated(lines, self.repeats[k])
            except UnicodeDecodeError as error:
                self.error = _utf8_error(path, error)
            except (OSError, EOFError, zlib.error) as error:
                self.error = DataError(f"cannot read {path}: {error}")
            except DataError as error:  # open_text's own (missing file, broken gzip)
                self.error = error
            if self.error:
                raise self.error
            done += path.stat().st_size
            self.on_bytes(done)
        self.on_done()

    def _lines(self, path: Path, done: int) -> Iterator[str]:
        from mtkit.io import open_text

        with open_text(path) as text:
            # Progress counts bytes of the file as stored (compressed for gzip).
            raw = getattr(text.buffer, "fileobj", None) or text.buffer
            for number, line in enumerate(text, 1):
                yield line.rstrip("\r\n")
                if number % _PROGRESS_EVERY == 0:
                    self.on_bytes(done + raw.tell())


class Tokenizer:
    """A loaded SentencePiece model: lines of text to lists of ids and back, in batches.

    Without `vocab`, ids are SentencePiece's own (a model from `mtkit train-bpe`, with
    mtkit's special ids). With `vocab` (id -> piece, e.g. an imported Marian model's
    vocab.json), ids are the model's: each piece is looked up by its string, a piece
    the table lacks becomes <unk>, and SentencePiece's own ids are never used. Marian's
    tables have `</s>` 0, `<unk>` 1 and `<pad>` last, and no `<s>`: the decoder starts
    from `<pad>`, so `bos_id` is the pad id there.
    """

    def __init__(self, processor, name: str = "<bytes>", vocab: Sequence[str] | None = None):
        self.sp = processor
        self.name = name
        self.vocab = list(vocab) if vocab is not None else None
        if self.vocab is None:
            self._check_spm_ids()
            self.pad_id, self.unk_id, self.bos_id, self.eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID
            return
        self.index = {piece: i for i, piece in enumerate(self.vocab)}
        missing = [p for p in ("</s>", "<unk>", "<pad>") if p not in self.index]
        if missing or len(self.index) != len(self.vocab):
            what = f"lacks {', '.join(missing)}" if missing else "has a piece twice"
            raise DataError(f"the vocabulary of {name} {what}; it is not a usable model vocabulary")
        self.pad_id, self.unk_id = self.index["<pad>"], self.index["<unk>"]
        self.eos_id = self.index["</s>"]
        self.bos_id = self.index.get("<s>", self.pad_id)

    def _check_spm_ids(self) -> None:
        sp = self.sp
        ids = (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id())
        if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise ConfigError(
                f"SentencePiece model {self.name} has pad/unk/bos/eos ids {ids}, but mtkit needs "
                f"{(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}; train it with `mtkit train-bpe`"
            )

    @classmethod
    def from_file(cls, path: Path, vocab: Sequence[str] | None = None) -> Tokenizer:
        """Load a .model file (written by train-bpe, or any with `vocab`)."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"SentencePiece model not found: {path} (check the path)")
        return cls.from_bytes(path.read_bytes(), name=str(path), vocab=vocab)

    @classmethod
    def from_bytes(
        cls, data: bytes, name: str = "<bytes>", vocab: Sequence[str] | None = None
    ) -> Tokenizer:
        """Load a model from its serialized bytes (as checkpoints store it)."""
        import sentencepiece as spm

        processor = spm.SentencePieceProcessor()
        try:
            processor.LoadFromSerializedProto(data)
        except (RuntimeError, OSError, TypeError):
            raise DataError(
                f"{name} is not a SentencePiece model; pass the .model file from train-bpe"
            ) from None
        return cls(processor, name=name, vocab=vocab)

    @property
    def model_bytes(self) -> bytes:
        """The serialized model, to store in a checkpoint."""
        return self.sp.serialized_model_proto()

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size() if self.vocab is None else len(self.vocab)

    def encode(
        self, lines: Sequence[str], add_bos: bool = False, add_eos: bool = False
    ) -> list[list[int]]:
        """Ids of each line; bos/eos only when asked (the source wants `add_eos=True`)."""
        if self.vocab is None:
            # One batched call: SentencePiece encodes a list in C++ threads, many times
            # faster than a Python loop over lines.
            return self.sp.encode(list(lines), add_bos=add_bos, add_eos=add_eos)
        split = [_language_code(line) for line in lines]
        codes, texts = [code for code, _ in split], [text for _, text in split]
        get, unk = self.index.get, self.unk_id
        before, after = [self.bos_id] if add_bos else [], [self.eos_id] if add_eos else []
        return [
            before + [get(p, unk) for p in code] + [get(p, unk) for p in pieces] + after
            for code, pieces in zip(codes, self.sp.encode(list(texts), out_type=str), strict=True)
        ]

    def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Text of each id list; pad, bos and eos decode to nothing."""
        if self.vocab is None:
            return self.sp.decode([list(x) for x in ids])
        skip = {self.pad_id, self.bos_id, self.eos_id}
        pieces = [[self.vocab[i] for i in x if i not in skip] for x in ids]
        # A joint table also holds the other side's pieces, which this SentencePiece
        # model leaves as they are: their word marks become spaces, as MarianTokenizer does.
        texts = self.sp.decode(pieces) if pieces else []
        return [t.replace(_WORD_MARK, " ").strip() if _WORD_MARK in t else t for t in texts]

    def tag_ids(self, tags=RESERVED_TAGS) -> list[int]:
        """The ids of those of `tags` this model holds as pieces of their own (the source-side
        tags a target must never produce)."""
        return [i for i in map(self.piece_id, tags) if i is not None]

    def piece_id(self, piece: str) -> int | None:
        """The id of `piece` when this model holds it as a piece of its own, else None."""
        if self.vocab is not None:
            return self.index.get(piece)
        i = self.sp.piece_to_id(piece)
        return i if i != self.unk_id and self.sp.id_to_piece(i) == piece else None

    def knows(self, text: str) -> bool:
        """Whether `text` encodes without <unk> pieces."""
        return self.unk_id not in self.encode([text])[0]

    def pieces(self, line: str) -> list[str]:
        """The subword pieces of one line, for inspection."""
        return self.sp.encode(line, out_type=str)


_WORD_MARK = "\u2581"  # SentencePiece's "▁", the start of a word


def _language_code(line: str) -> tuple[list[str], str]:
    """A leading Marian target-language token (">>fra<< text") apart from the text,
    which SentencePiece must not split (as Hugging Face's MarianTokenizer does)."""
    if line.startswith(">>") and (end := line.find("<<")) != -1:
        return [line[: end + 2]], line[end + 2 :]
    return [], line


def clip_source(ids: list[int], max_positions: int) -> list[int]:
    """The source pieces that fit a model of `max_positions` with eos appended (the first
    max_positions - 1): validation, translate and logprob cut over-long sources the same way."""
    return ids[: max_positions - 1]
