"""`mtkit score`: sacreBLEU's BLEU, chrF and TER over a hypothesis file and references.

This module reads the text (plain or gzipped UTF-8, one segment a line, trailing
whitespace stripped as sacreBLEU does), checks that the line counts match, and
asks sacreBLEU for the scores, so the figures and signatures are sacreBLEU's own.
Formatting the result is left to the CLI (`format_text`, `format_json` help it).
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from mtkit.errors import ConfigError, DataError

METRICS = ("bleu", "chrf", "ter")
# sacreBLEU's tokenizers that work offline with no extra package; ja-mecab and
# ko-mecab need `pip install sacrebleu[ja]` / `[ko]`, spm and flores* a download.
TOKENIZERS = ("13a", "intl", "zh", "char", "none")


@dataclass
class MetricResult:
    """One corpus-level score, as sacreBLEU reports it."""

    name: str  # BLEU, chrF2, chrF2++, TER
    score: float  # full precision; the formatters round to `width`
    signature: str  # e.g. nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0
    verbose: str = ""  # BLEU's n-gram precisions, brevity penalty and lengths
    sacrebleu_score: object = field(default=None, repr=False)  # sacrebleu's Score


def parse_metrics(text: str) -> list[str]:
    """`bleu,chrf` -> ["bleu", "chrf"], rejecting names sacreBLEU does not have."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        shown = ", ".join(map(repr, unknown)) or repr(text)
        raise ConfigError(f"unknown metric {shown}; choose from {', '.join(METRICS)}")
    return list(dict.fromkeys(names))


def score(
    hyps: Sequence[str],
    refs: Sequence[Sequence[str]],
    metrics: Sequence[str] = ("bleu",),
    tokenize: str = "13a",
    lowercase: bool = False,
    chrf_word_order: int = 0,
    ter_case_sensitive: bool = False,
    hyp_name: str = "the hypotheses",
    ref_names: Sequence[str] = (),
) -> list[MetricResult]:
    """Score `hyps` against one or more reference streams (each a list of lines).

    `lowercase` applies to BLEU and chrF; TER is case-insensitive unless
    `ter_case_sensitive`, as in sacreBLEU. Results come in sacreBLEU's order
    (BLEU, chrF, TER). The names only serve the error for line counts that differ.
    """
    from sacrebleu.metrics import BLEU, CHRF, TER

    check_options(metrics, tokenize=tokenize, chrf_word_order=chrf_word_order)
    _check_counts(hyps, refs, hyp_name, ref_names)
    built = {
        "bleu": lambda: BLEU(tokenize=tokenize, lowercase=lowercase),
        "chrf": lambda: CHRF(word_order=chrf_word_order, lowercase=lowercase),
        "ter": lambda: TER(case_sensitive=ter_case_sensitive),
    }
    results = []
    for name in sorted(set(metrics), key=METRICS.index):
        metric = built[name]()
        result = metric.corpus_score(list(hyps), [list(r) for r in refs])
        results.append(
            MetricResult(
                name=result.name,
                score=result.score,
                signature=metric.get_signature().format(),
                verbose=result._verbose or "",
                sacrebleu_score=result,
            )
        )
    return results


def check_options(metrics: Sequence[str], tokenize: str, chrf_word_order: int) -> None:
    """Raise ConfigError for an option sacreBLEU would reject (before any text is read)."""
    unknown = [name for name in metrics if name not in METRICS]
    if unknown:
        raise ConfigError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    if tokenize not in TOKENIZERS:
        raise ConfigError(f"unknown tokenizer {tokenize!r}; choose from {', '.join(TOKENIZERS)}")
    if chrf_word_order < 0:
        raise ConfigError(f"chrF word order {chrf_word_order} is negative; pass 0 (chrF) or 2")


def _check_counts(
    hyps: Sequence[str], refs: Sequence[Sequence[str]], hyp_name: str, ref_names: Sequence[str]
) -> None:
    if not refs:
        raise ConfigError("no references; pass -r REF at least once")
    if not hyps and not any(refs):
        raise DataError("the hypotheses and references are empty; there is nothing to score")
    for number, ref in enumerate(refs):
        if len(ref) != len(hyps):
            ref_name = ref_names[number] if number < len(ref_names) else f"reference {number + 1}"
            raise DataError(
                f"{hyp_name} has {len(hyps)} lines but {ref_name} has {len(ref)}; "
                "hypotheses and references must match line for line"
            )


def read_lines(path: Path | None, stdin: IO[bytes] | None = None) -> list[str]:
    """Lines of a plain or gzipped UTF-8 file (or of `stdin` when `path` is None).

    Each line loses its trailing whitespace, exactly as the sacrebleu command does.
    """
    if path is None:
        return _decode_lines(stdin, "standard input")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path} (check the path)")
    with open(path, "rb") as raw:
        binary = gzip.GzipFile(fileobj=raw) if path.name.endswith(".gz") else raw
        try:
            return _decode_lines(binary, str(path))
        except (OSError, EOFError) as error:
            raise DataError(f"cannot read {path}: {error}") from None


def _decode_lines(binary: IO[bytes], name: str) -> list[str]:
    # newline="\n" as sacreBLEU opens files: a stray \r stays in the line (then
    # rstrip removes it), and U+2028 and friends do not split lines.
    text = io.TextIOWrapper(binary, encoding="utf-8", newline="\n")
    try:
        return [line.rstrip() for line in text]
    except UnicodeDecodeError as error:
        raise DataError(f"{name} is not valid UTF-8 ({error.reason}); convert it first") from None
    finally:
        text.detach()


def format_text(results: Sequence[MetricResult], width: int = 1, score_only: bool = False) -> str:
    """sacreBLEU's text report (`sacrebleu -f text`): one line per metric, aligned on '='."""
    lines = [r.sacrebleu_score.format(width, score_only, r.signature) for r in results]
    if score_only or len(lines) == 1:
        return "\n".join(lines)
    left = max(line.index("=") - 1 for line in lines)
    return "\n".join(
        f"{line[: line.index('=') - 1]:>{left}}{line[line.index('=') - 1 :]}" for line in lines
    )


def format_json(results: Sequence[MetricResult], width: int = 1) -> str:
    """sacreBLEU's JSON report (`sacrebleu -f json`): an object for one metric, else a list."""
    objects = [r.sacrebleu_score.format(width, False, r.signature, is_json=True) for r in results]
    if len(objects) == 1:
        return objects[0]
    return "[\n" + ",\n".join(objects) + "\n]"


def as_dicts(results: Sequence[MetricResult], width: int = 1) -> list[dict]:
    """The JSON report as Python objects (always a list), for other stages' metrics."""
    return [json.loads(format_json([r], width)) for r in results]
