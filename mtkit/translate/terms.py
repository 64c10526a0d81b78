"""Where each line's constraints come from: a constraints file, or a glossary of terms.

Owns `translate --constraints FILE` (per input line, TAB-separated target phrases
that must all appear in its translation; an empty line: none), `--terms GLOSSARY`
(lines `source term<TAB>target term`: a line's constraints are the target terms whose
source terms it holds as whole words) and `--terms-ignore-case`: the options, the
checks of both files, reading the constraints file beside the input (from any line,
for shards and resumed jobs), finding a glossary's terms in a line, and the
warnings for lines whose constraints could not be used. The search that holds
translations to the phrases is mtkit.search's (with mtkit.constraints); encoding
them and running the batches is mtkit.translate.stream's, which calls this module.

Matching a glossary: a line and each source term are split into words (runs of
letters and digits) and single punctuation marks; a term matches where its words
follow one another in the line, so "Hund" matches "Der Hund." and not "Hunde"
(whole words), and "New York" matches across any spacing. The longest term starting
at a word wins and the search goes on after it. A target term is used once per line,
however many of its source terms the line holds. Case must match unless
`--terms-ignore-case` (then words compare casefolded). A source term listed twice
keeps its first target term (a warning counts the others).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mtkit.errors import ConfigError, DataError
from mtkit.io import check_readable, open_binary, text_lines

log = logging.getLogger(__name__)

# Lines named in warnings about unusable constraints before they are only counted.
WARN_LIMIT = 5
_WORDS = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class ConstraintOptions:
    """Target phrases each line's translation must hold; `mtkit translate` maps its
    --constraints, --terms and --terms-ignore-case onto these fields."""

    constraints: str | None = None  # per input line: TAB-separated target phrases
    terms: str | None = None  # a glossary: source term<TAB>target term a line
    terms_ignore_case: bool = False  # glossary source terms match whatever their case

    @property
    def active(self) -> bool:
        return self.constraints is not None or self.terms is not None

    def check(self, search) -> None:
        """ConfigError/DataError, one line, for options no translation runs with: both
        files, a search that is not a beam of 2 or more (mtkit.search.SearchOptions),
        --terms-ignore-case alone, a file that is missing."""
        if self.terms_ignore_case and self.terms is None:
            raise ConfigError("--terms-ignore-case needs --terms GLOSSARY")
        if not self.active:
            return
        if self.constraints is not None and self.terms is not None:
            raise ConfigError("use one of --constraints and --terms, not both")
        from mtkit.constraints import Constraints

        Constraints.check(search)
        if self.constraints is not None:
            check_readable(self.constraints, "constraints file")
        if self.terms is not None:
            check_readable(self.terms, "glossary")

    def identity(self) -> dict | None:
        """What a resumable job records of them: the files' checksums (None: no option)."""
        if not self.active:
            return None
        from mtkit.io import file_checksum

        return {
            "constraints": self.constraints and file_checksum(self.constraints),
            "terms": self.terms and file_checksum(self.terms),
            "terms_ignore_case": self.terms_ignore_case,
        }


# -- glossaries ----------------------------------------------------------------------


def words(text: str, ignore_case: bool = False) -> tuple[str, ...]:
    """The words and punctuation marks of `text`, casefolded when `ignore_case`."""
    found = _WORDS.findall(text.casefold() if ignore_case else text)
    return tuple(found)


class Glossary:
    """Source terms (as words) and their target terms, found in lines."""

    def __init__(self, entries: dict[tuple[str, ...], str], ignore_case: bool = False) -> None:
        self.entries, self.ignore_case = entries, ignore_case
        self.longest = max(map(len, entries), default=0)
        self.firsts = {key[0] for key in entries}
        self.lines = self.with_terms = self.terms = 0  # what `targets` has seen

    @classmethod
    def load(cls, path: Path | str, ignore_case: bool = False) -> Glossary:
        """Read a glossary: UTF-8 lines `source<TAB>target` (blank lines are skipped)."""
        entries: dict[tuple[str, ...], str] = {}
        repeated = 0
        with open_binary(check_readable(path, "glossary")) as stream:
            for number, line in enumerate(text_lines(stream, str(path)), 1):
                if not line.strip():
                    continue
                source, target = _entry(line.removesuffix("\r"), path, number)
                key = words(source, ignore_case)
                if key in entries:
                    repeated += entries[key] != target
                    continue
                entries[key] = target
        if not entries:
            raise DataError(f"glossary {path} holds no terms; write `source<TAB>target` lines")
        if repeated:
            log.warning(
                "glossary %s: %d source terms are listed again with another target term; "
                "the first one is used",
                path,
                repeated,
            )
        return cls(entries, ignore_case)

    def targets(self, line: str) -> list[str]:
        """The target terms of the source terms in `line`, once each, in line order."""
        found: list[str] = []
        line_words = words(line, self.ignore_case)
        i = 0
        while i < len(line_words):
            step = 1
            if line_words[i] in self.firsts:
                for n in range(min(self.longest, len(line_words) - i), 0, -1):
                    target = self.entries.get(line_words[i : i + n])
                    if target is not None:
                        found.append(target)
                        step = n
                        break
            i += step
        found = list(dict.fromkeys(found))
        self.lines += 1
        self.with_terms += bool(found)
        self.terms += len(found)
        return found


def _entry(line: str, path, number: int) -> tuple[str, str]:
    fields = line.split("\t")
    if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
        raise DataError(
            f"glossary {path} line {number} is not `source term<TAB>target term`: {line[:80]!r}"
        )
    if not words(fields[0]):
        raise DataError(f"glossary {path} line {number}: the source term has no words")
    return fields[0].strip(), fields[1].strip()


# -- the phrases of each line during a run ------------------------------------------------


class PhraseSource:
    """A run's constraints, line by line: `phrases(line)` once per input line, in order."""

    def phrases(self, line: str) -> list[str]:
        raise NotImplementedError

    def check(self, tokenizer) -> None:
        """DataError for a phrase the target SentencePiece model cannot encode, where that
        can be known before the run (a glossary's target terms)."""

    def finish(self) -> None:
        """The run has read its last line."""


class Listed(PhraseSource):
    """Phrases given in memory, one list per line (mtkit.translate.stream.translate_lines)."""

    def __init__(self, per_line: Iterable[Sequence[str]]) -> None:
        self.per_line = iter(per_line)

    def phrases(self, line: str) -> list[str]:
        phrases = next(self.per_line, None)
        if phrases is None:
            raise ConfigError("fewer constraint lists than lines to translate")
        return [p for p in phrases if p.strip()]


class FilePhrases(PhraseSource):
    """The lines of a constraints file from line `first` (0-based), beside the input's."""

    def __init__(self, path: Path | str, first: int = 0, whole: bool = True) -> None:
        self.path, self.number, self.whole = Path(path), first, whole
        self.stream = open_binary(check_readable(path, "constraints file"))
        self.lines = text_lines(self.stream, f"constraints file {path}")
        for _ in range(first):
            if next(self.lines, None) is None:
                self._fewer()

    def phrases(self, line: str) -> list[str]:
        text = next(self.lines, None)
        if text is None:
            self._fewer()
        self.number += 1
        return [p.strip() for p in text.removesuffix("\r").split("\t") if p.strip()]

    def _fewer(self):
        self.stream.close()
        raise DataError(
            f"constraints file {self.path} has fewer lines than the input "
            f"(it ends before line {self.number + 1}); give one line per input line"
        )

    def finish(self) -> None:
        more = self.whole and next(self.lines, None) is not None
        self.stream.close()
        if more:
            raise DataError(
                f"constraints file {self.path} has more lines than the input "
                f"({self.number}); give one line per input line"
            )


class GlossaryPhrases(PhraseSource):
    """The target terms of each line's source terms (`Glossary.targets`)."""

    def __init__(self, path: Path | str, ignore_case: bool) -> None:
        self.path, self.glossary = path, Glossary.load(path, ignore_case)

    def phrases(self, line: str) -> list[str]:
        return self.glossary.targets(line)

    def check(self, tokenizer) -> None:
        targets = list(self.glossary.entries.values())
        for target, ids in zip(targets, tokenizer.encode(targets), strict=True):
            if tokenizer.unk_id in ids:
                raise DataError(unknown_pieces(target, f"glossary {self.path}"))

    def finish(self) -> None:
        g = self.glossary
        log.info(
            "terms: %d of %d lines held glossary terms (%d terms in all)",
            g.with_terms, g.lines, g.terms,
        )  # fmt: skip


def phrase_ids(tokenizer, source: PhraseSource | None, lines, number: int, where: str):
    """Each line's constraints from `source` as lists of target ids (none without one);
    DataError for a phrase with <unk> pieces. `number`: the first line's, from 0."""
    if source is None:
        return [()] * len(lines)
    per_line = [source.phrases(line) for line in lines]
    encoded = iter(tokenizer.encode([p for per in per_line for p in per]))
    targets = [[next(encoded) for _ in per] for per in per_line]
    for i, (per, ids) in enumerate(zip(per_line, targets, strict=True)):
        for phrase in (p for p, x in zip(per, ids, strict=True) if tokenizer.unk_id in x):
            raise DataError(unknown_pieces(phrase, f"line {number + i + 1}{where}"))
    return targets


def word_continuations(tokenizer, size: int):
    """[size] bool (torch): the target ids whose pieces go on with the word before them,
    those without SentencePiece's word mark that begin with a letter or digit: what may
    not follow a phrase (mtkit.constraints.Constraints' joins)."""
    import torch

    if tokenizer.vocab is not None:
        pieces = list(tokenizer.vocab)
    else:
        pieces = [tokenizer.sp.id_to_piece(i) for i in range(tokenizer.sp.get_piece_size())]
    special = {tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id}
    joins = torch.zeros(size, dtype=torch.bool)
    for i, piece in enumerate(pieces[:size]):
        joins[i] = i not in special and piece[:1].isalnum()
    return joins


def unknown_pieces(phrase: str, where: str) -> str:
    return (
        f"{where}: the target phrase {phrase!r} holds characters the model's target "
        "SentencePiece model cannot encode (<unk> pieces); no translation could hold it"
    )


@contextlib.contextmanager
def open_phrases(
    options: ConstraintOptions, input_path: Path | None, start: int = 0, done: int = 0,
    whole: bool = True,
) -> Iterator[PhraseSource | None]:  # fmt: skip
    """The phrase source of a run that reads the input from byte `start` (a shard's),
    `done` lines after it (a resumed job's), to its end when `whole`; None without options."""
    if not options.active:
        yield None
        return
    if options.terms is not None:
        yield GlossaryPhrases(options.terms, options.terms_ignore_case)
        return
    first = done + (_lines_before(input_path, start) if start else 0)
    source = FilePhrases(options.constraints, first, whole)
    try:
        yield source
    finally:
        source.stream.close()


def _lines_before(path: Path, offset: int) -> int:
    """Lines of a plain file before byte `offset` (a line start)."""
    count, left = 0, offset
    with open(path, "rb") as stream:
        while left and (block := stream.read(min(left, 1 << 20))):
            count += block.count(b"\n")
            left -= len(block)
    return count


def check_files(options: ConstraintOptions, input_path: Path | None) -> None:
    """Before any model loads, once per command: a glossary that does not read, a
    constraints file that is not UTF-8 or has not one line per line of a plain input."""
    if options.terms is not None:
        Glossary.load(options.terms, options.terms_ignore_case)
    if options.constraints is None:
        return
    with open_binary(check_readable(options.constraints, "constraints file")) as stream:
        lines = sum(1 for _ in text_lines(stream, f"constraints file {options.constraints}"))
    if input_path is None:
        return  # standard input: its end is checked when it comes
    with open_binary(input_path) as stream:
        inputs = sum(1 for _ in stream)  # lines as the translation reads them
    if inputs != lines:
        raise DataError(
            f"constraints file {options.constraints} has {lines} lines and the input "
            f"{input_path} {inputs}; give one line of TAB-separated target phrases per "
            "input line (an empty line for none)"
        )


class Unused:
    """Lines whose constraints could not be used (longer than the length limit): a
    warning for each of the first WARN_LIMIT, then a count at the end."""

    def __init__(self) -> None:
        self.count = 0

    def warn(self, line_no: int, where: str) -> None:
        self.count += 1
        if self.count <= WARN_LIMIT:
            log.warning(
                "line %d%s: its constraints do not fit the length limit (--max-len-a/-b); "
                "translated without them",
                line_no,
                where,
            )

    def summary(self) -> None:
        if self.count > WARN_LIMIT:
            log.warning("%d lines in all were translated without their constraints", self.count)
