"""`mtkit score`: sacreBLEU's BLEU, chrF and TER, its significance tests, and COMET.

This module reads the text (plain or gzipped UTF-8 through mtkit.io, one segment
a line, trailing whitespace stripped as sacreBLEU does), checks that the line
counts match, and asks sacreBLEU's own library for everything else: the scores
and signatures, the bootstrap confidence interval of one system, and the paired
tests (bootstrap resampling, approximate randomization) of several systems
against a baseline, with sacreBLEU's table. So the figures are sacreBLEU's
figures: `mtkit score -r REF -i A -i B --paired-bs` prints what
`sacrebleu REF -i A B --paired-bs` prints.

COMET (`--metrics comet`, with the sources) comes from Unbabel's library through
mtkit.comet; this module reports it beside sacreBLEU's metrics: a line in SacreCOMET's
signature style for one system, a block of its own (comet-compare's t-test and
bootstrap against the baseline) for several, and a "COMET" entry in the JSON.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mtkit.comet import CometOptions
from mtkit.errors import ConfigError, DataError

METRICS = ("bleu", "chrf", "ter", "comet")
SACREBLEU_METRICS = ("bleu", "chrf", "ter")
# COMET's scores are fractions (0.8452), printed with comet-score's 4 decimals whatever --width.
COMET_DECIMALS = 4
# sacreBLEU's tokenizers that work offline with no extra package; ja-mecab and
# ko-mecab need `pip install sacrebleu[ja]` / `[ko]`, spm and flores* a download.
TOKENIZERS = ("13a", "intl", "zh", "char", "none")
# sacreBLEU's seed for resampling when SACREBLEU_SEED is not set.
SACREBLEU_SEED = 12345


@dataclass(frozen=True)
class ScoreOptions:
    """Which metrics, configured as sacreBLEU's options of the same names."""

    metrics: tuple[str, ...] = ("bleu",)
    tokenize: str = "13a"  # BLEU's tokenizer
    lowercase: bool = False  # BLEU and chrF (TER has its own case flag)
    chrf_word_order: int = 0  # 2: chrF++
    ter_case_sensitive: bool = False


@dataclass(frozen=True)
class SignificanceOptions:
    """Statistical tests, as sacreBLEU's flags: --paired-bs/--paired-ar, --confidence."""

    paired_bs: bool = False  # paired bootstrap resampling (Koehn, 2004)
    paired_ar: bool = False  # paired approximate randomization (Riezler & Maxwell, 2005)
    paired_bs_n: int = 1000  # resamples (sacreBLEU's default)
    paired_ar_n: int = 10000  # trials (sacreBLEU's default)
    confidence: bool = False  # 95% bootstrap confidence interval of one system
    confidence_n: int = 1000
    seed: int = SACREBLEU_SEED  # the numpy seed sacreBLEU reads from SACREBLEU_SEED

    @property
    def paired(self) -> str | None:
        """sacreBLEU's test type: "bs", "ar" or None."""
        return "bs" if self.paired_bs else "ar" if self.paired_ar else None


@dataclass(frozen=True)
class ReportOptions:
    """How the report looks."""

    width: int = 1  # decimals
    score_only: bool = False  # only the numbers (one system, no test)
    as_json: bool = False


@dataclass
class MetricResult:
    """One corpus-level score, as sacreBLEU reports it."""

    name: str  # BLEU, chrF2, chrF2++, TER, COMET
    score: float  # full precision; the formatters round to `width`
    signature: str  # e.g. nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0
    verbose: str = ""  # BLEU's n-gram precisions, brevity penalty and lengths
    sacrebleu_score: object = field(default=None, repr=False)  # sacrebleu's Score, or CometScore
    segments: list[float] | None = field(default=None, repr=False)  # COMET's, one a line


@dataclass
class CometScore:
    """COMET's figure in the shape of sacreBLEU's Score, for the same formatters."""

    score: float
    signature_fields: dict
    name: str = "COMET"

    def format(self, width=2, score_only=False, signature="", is_json=False) -> str:
        text = f"{self.score:.{COMET_DECIMALS}f}"
        if score_only:
            return text
        if is_json:
            values = {"name": self.name, "score": round(self.score, COMET_DECIMALS)}
            values |= {"signature": signature, **self.signature_fields}
            return json.dumps(values, indent=1, ensure_ascii=False)
        return f"{self.name}|{signature} = {text}"


def parse_metrics(text: str) -> list[str]:
    """`bleu,chrf` -> ["bleu", "chrf"], rejecting names sacreBLEU does not have."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        shown = ", ".join(map(repr, unknown)) or repr(text)
        raise ConfigError(f"unknown metric {shown}; choose from {', '.join(METRICS)}")
    return list(dict.fromkeys(names))


# -- the command ---------------------------------------------------------------


def score_files(
    refs: Sequence[Path | str],
    inputs: Sequence[Path | str | None] = (None,),
    options: ScoreOptions = ScoreOptions(),
    tests: SignificanceOptions = SignificanceOptions(),
    report: ReportOptions = ReportOptions(),
    source: Path | str | None = None,
    comet: CometOptions = CometOptions(),
) -> str:
    """Score one system (or compare several) from files; the report as sacreBLEU prints it.

    `inputs` are the systems' hypothesis files, the baseline first; None reads
    standard input. `source` (the source sentences) and `comet` serve --metrics comet.
    Returns the text or JSON report, without a final newline.
    """
    inputs = list(inputs) or [None]
    check_options(options.metrics, options.tokenize, options.chrf_word_order)
    check_tests(tests, len(inputs))
    uses_comet = _check_comet(options, tests, source, comet)
    names = _system_names(inputs)
    references = [_read(path) for path in refs]
    systems = [_read(path) for path in inputs]
    ref_names = [str(path) for path in refs]
    for name, hyps in zip(names, systems, strict=True):
        _check_counts(hyps, references, name, ref_names)
    sources = _read(source) if uses_comet else None
    if sources is not None and len(sources) != len(systems[0]):
        raise DataError(
            f"{source} has {len(sources)} lines but {names[0]} has {len(systems[0])}; "
            "sources and hypotheses must match line for line"
        )
    scorer = _load_comet(comet) if uses_comet else None
    with _seed(tests.seed):
        if len(systems) == 1 and tests.paired is None:
            n_bootstrap = tests.confidence_n if tests.confidence else 1
            results = score(
                systems[0], references, options=options, n_bootstrap=n_bootstrap,
                sources=sources, comet=scorer,
            )  # fmt: skip
            if report.as_json:
                return format_json(results, report.width)
            return format_text(results, report.width, report.score_only)
        return compare(names, systems, references, options, tests, report, sources, scorer)


def _check_comet(options: ScoreOptions, tests: SignificanceOptions, source, comet) -> bool:
    """Whether COMET is asked for; ConfigError for what it cannot run with."""
    if "comet" not in options.metrics:
        return False
    comet.check()
    if source is None:
        raise ConfigError("--metrics comet scores with the sources too: pass -s SOURCE_FILE")
    if tests.confidence and not _sacrebleu_names(options.metrics):
        raise ConfigError(
            "--confidence is sacreBLEU's bootstrap of BLEU, chrF or TER; COMET compares "
            "systems with -i BASELINE -i SYSTEM --paired-bs"
        )
    return True


def _load_comet(options: CometOptions):
    from mtkit.comet import load_comet

    return load_comet(options)


def _sacrebleu_names(metrics: Sequence[str]) -> list[str]:
    return [name for name in metrics if name in SACREBLEU_METRICS]


def _read(path: Path | str | None) -> list[str]:
    from mtkit.io import read_text_lines

    # sacreBLEU strips each line's trailing whitespace (a stray CR included).
    return [line.rstrip() for line in read_text_lines(path)]


def _system_names(inputs: Sequence[Path | str | None]) -> list[str]:
    names = [str(path) if path is not None else "standard input" for path in inputs]
    seen = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"{name} is given twice with -i; give each system once")
        seen.add(name)
    return names


@contextlib.contextmanager
def _seed(seed: int) -> Iterator[None]:
    """sacreBLEU's resampling reads its numpy seed from SACREBLEU_SEED: set it, then restore."""
    old = os.environ.get("SACREBLEU_SEED")
    os.environ["SACREBLEU_SEED"] = str(seed)
    try:
        yield
    finally:
        if old is None:
            del os.environ["SACREBLEU_SEED"]
        else:
            os.environ["SACREBLEU_SEED"] = old


# -- scores of one system ------------------------------------------------------


def score(
    hyps: Sequence[str],
    refs: Sequence[Sequence[str]],
    metrics: Sequence[str] | None = None,
    options: ScoreOptions = ScoreOptions(),
    n_bootstrap: int = 1,
    hyp_name: str = "the hypotheses",
    ref_names: Sequence[str] = (),
    sources: Sequence[str] | None = None,
    comet=None,
) -> list[MetricResult]:
    """Score `hyps` against one or more reference streams (each a list of lines).

    `metrics` overrides `options.metrics`. Results come in sacreBLEU's order
    (BLEU, chrF, TER), then COMET, which needs the `sources` and a model loaded by
    mtkit.comet.load_comet. `n_bootstrap` > 1 adds sacreBLEU's 95% confidence interval
    (seeded by SACREBLEU_SEED). The names only serve the error for counts that differ.
    """
    names = list(options.metrics if metrics is None else metrics)
    check_options(names, options.tokenize, options.chrf_word_order)
    _check_counts(hyps, refs, hyp_name, ref_names)
    results = []
    for metric in build_metrics(_sacrebleu_names(names), options).values():
        result = metric.corpus_score(list(hyps), [list(r) for r in refs], n_bootstrap)
        results.append(
            MetricResult(
                name=result.name,
                score=result.score,
                signature=metric.get_signature().format(),
                verbose=result._verbose or "",
                sacrebleu_score=result,
            )
        )
    if "comet" in names:
        if comet is None or sources is None:
            raise ConfigError("COMET needs the sources and a model (mtkit.comet.load_comet)")
        results.append(comet_result(comet, sources, hyps, refs))
    return results


def comet_result(comet, sources, hyps, refs, description: str = "COMET") -> MetricResult:
    """The system-level COMET score (the mean of the segments'), with its signature."""
    from mtkit.comet import segment_scores

    segments = segment_scores(comet, sources, hyps, refs, description=description)
    value = sum(segments) / len(segments) if segments else 0.0
    return _comet_metric(comet, len(refs), value, segments)


def _comet_metric(comet, n_refs: int, value: float, segments: list[float]) -> MetricResult:
    score_object = CometScore(value, comet.signature_fields(n_refs))
    return MetricResult(
        "COMET", value, comet.signature(n_refs), sacrebleu_score=score_object, segments=segments
    )


def build_metrics(names: Sequence[str], options: ScoreOptions, refs=None) -> dict:
    """sacreBLEU metric objects by upper-case name, in sacreBLEU's order; `refs` are cached.
    COMET is not sacreBLEU's: mtkit.comet scores it."""
    from sacrebleu.metrics import BLEU, CHRF, TER

    lowercase = options.lowercase
    built = {
        "bleu": lambda: BLEU(tokenize=options.tokenize, lowercase=lowercase, references=refs),
        "chrf": lambda: CHRF(
            word_order=options.chrf_word_order, lowercase=lowercase, references=refs
        ),
        "ter": lambda: TER(case_sensitive=options.ter_case_sensitive, references=refs),
    }
    names = sorted(set(_sacrebleu_names(names)), key=METRICS.index)
    return {name.upper(): built[name]() for name in names}


def check_options(metrics: Sequence[str], tokenize: str, chrf_word_order: int) -> None:
    """Raise ConfigError for an option sacreBLEU would reject (before any text is read)."""
    unknown = [name for name in metrics if name not in METRICS]
    if unknown or not metrics:
        shown = repr(unknown[0]) if unknown else "(none)"
        raise ConfigError(f"unknown metric {shown}; choose from {', '.join(METRICS)}")
    if tokenize not in TOKENIZERS:
        raise ConfigError(f"unknown tokenizer {tokenize!r}; choose from {', '.join(TOKENIZERS)}")
    if chrf_word_order < 0:
        raise ConfigError(f"chrF word order {chrf_word_order} is negative; pass 0 (chrF) or 2")


def check_tests(tests: SignificanceOptions, n_systems: int) -> None:
    """Raise ConfigError for tests that do not fit the number of systems."""
    if tests.paired_bs and tests.paired_ar:
        raise ConfigError("--paired-bs and --paired-ar exclude each other; choose one test")
    if tests.paired and n_systems < 2:
        raise ConfigError(
            "a paired test compares systems with a baseline; give -i BASELINE -i SYSTEM"
        )
    if tests.confidence and n_systems > 1:
        raise ConfigError(
            "--confidence is for one system; compare several with --paired-bs or --paired-ar"
        )
    for flag, value in (
        ("--paired-bs-n", tests.paired_bs_n),
        ("--paired-ar-n", tests.paired_ar_n),
        ("--confidence-n", tests.confidence_n),
    ):
        if value < 1:
            raise ConfigError(f"{flag} must be at least 1, got {value}")


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


# -- several systems -----------------------------------------------------------


def compare(
    names: Sequence[str],
    systems: Sequence[Sequence[str]],
    refs: Sequence[Sequence[str]],
    options: ScoreOptions = ScoreOptions(),
    tests: SignificanceOptions = SignificanceOptions(),
    report: ReportOptions = ReportOptions(),
    sources: Sequence[str] | None = None,
    comet=None,
) -> str:
    """sacreBLEU's multi-system table: each system's scores, or a paired test against the
    first system (the baseline) with p-values. Seeded by SACREBLEU_SEED (see `_seed`).
    COMET (with `sources` and a loaded `comet`) follows in a block of its own, its test
    comet-compare's; in JSON, a "COMET" entry in each system's object."""
    texts, entries = [], []
    if _sacrebleu_names(options.metrics):
        scores, signatures = _sacrebleu_table(names, systems, refs, options, tests, report.width)
        if report.as_json:
            entries = _json_systems(scores)
        else:
            texts.append(_print_table(scores, signatures, tests, report))
    if "comet" in options.metrics:
        if comet is None or sources is None:
            raise ConfigError("COMET needs the sources and a model (mtkit.comet.load_comet)")
        rows = compare_comet(names, systems, refs, sources, comet, tests)
        if report.as_json:
            entries = entries or [{"system": row["system"]} for row in rows]
            for entry, row in zip(entries, rows, strict=True):
                entry["COMET"] = _comet_entry(row, tests)
        else:
            texts.append(format_comet_table(rows, comet.signature(len(refs)), tests))
    if report.as_json:
        return json.dumps(entries, indent=4, default=_number)
    return "\n\n".join(texts)


def _sacrebleu_table(names, systems, refs, options, tests, width) -> tuple[dict, dict]:
    """(scores, signatures) of sacreBLEU's metrics, plain or with sacreBLEU's paired test."""
    metrics = build_metrics(options.metrics, options, refs=[list(r) for r in refs])
    if tests.paired is None:
        return _plain_table(names, systems, metrics, width)
    from sacrebleu.significance import PairedTest

    named = [(f"Baseline: {names[0]}", list(systems[0]))]
    named += [(name, list(hyps)) for name, hyps in zip(names[1:], systems[1:], strict=True)]
    n = tests.paired_bs_n if tests.paired == "bs" else tests.paired_ar_n
    test = PairedTest(named, metrics, references=None, test_type=tests.paired, n_samples=n)
    signatures, scores = test()
    return scores, {name: sig.format() for name, sig in signatures.items()}


def _plain_table(names, systems, metrics: dict, width: int) -> tuple[dict, dict]:
    """Scores of every system without a test, formatted as sacreBLEU's table wants them."""
    scores: dict[str, list] = {"System": list(names)}
    signatures = {}
    for hyps in systems:
        for metric in metrics.values():
            result = metric.corpus_score(list(hyps), references=None)
            signatures[result.name] = metric.get_signature().format()
            scores.setdefault(result.name, []).append(result.format(width, True))
    return scores, signatures


def _print_table(scores: dict, signatures: dict, tests: SignificanceOptions, report: ReportOptions):
    """sacreBLEU's own table printer, captured, without colours; or its JSON."""
    from argparse import Namespace

    from sacrebleu.utils import Color, print_results_table

    if report.as_json:
        return json.dumps(_json_systems(scores), indent=4, default=_number)
    args = Namespace(
        format="text",
        width=report.width,
        paired_bs=tests.paired == "bs",
        paired_ar=tests.paired == "ar",
        paired_bs_n=tests.paired_bs_n,
        paired_ar_n=tests.paired_ar_n,
    )
    colours, Color.ENABLE_COLORS = Color.ENABLE_COLORS, False
    try:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            print_results_table(scores, signatures, args)
    finally:
        Color.ENABLE_COLORS = colours
    return out.getvalue().rstrip("\n")


def _json_systems(scores: dict) -> list[dict]:
    """sacreBLEU's `-f json` for several systems: one object per system, metrics by name.

    sacreBLEU's own printer fails on the numpy float32 p-values of --paired-bs
    (sacrebleu 2.6.0: "Object of type float32 is not JSON serializable"); numpy
    numbers are written as plain floats here, the layout is sacreBLEU's.
    """
    systems = []
    for i, name in enumerate(scores["System"]):
        entry = {"system": name}
        for metric, values in scores.items():
            if metric != "System":
                value = values[i]
                entry[metric] = value if isinstance(value, str) else dict(vars(value))
        systems.append(entry)
    return systems


def compare_comet(names, systems, refs, sources, comet, tests: SignificanceOptions) -> list[dict]:
    """Every system's COMET score; with --paired-bs or --paired-ar, comet-compare's paired
    t-test and bootstrap against the first system (mtkit.comet.compare_systems)."""
    from mtkit.comet import compare_systems, segment_scores

    segments = [
        segment_scores(comet, sources, hyps, refs, description=f"COMET {name}")
        for name, hyps in zip(names, systems, strict=True)
    ]
    if tests.paired is not None:
        return compare_systems(names, segments, seed=tests.seed)
    return [
        {"system": name, "score": sum(values) / len(values) if values else 0.0}
        for name, values in zip(names, segments, strict=True)
    ]


def _comet_entry(row: dict, tests: SignificanceOptions):
    """A system's COMET in the JSON: the score as text without a test (as sacreBLEU's
    plain table), else the score, p-value, t statistic and bootstrap figures."""
    if tests.paired is None:
        return f"{row['score']:.{COMET_DECIMALS}f}"
    return {key: value for key, value in row.items() if key != "system"} | {
        "p_value": row.get("p_value")
    }


def format_comet_table(rows: Sequence[dict], signature: str, tests: SignificanceOptions) -> str:
    """COMET's block of a multi-system report: the signature, then a row a system (with
    the test's p-value, "*" below 0.05, and the bootstrap's wins/ties/losses)."""
    from mtkit.comet import COMPARE_SAMPLE_RATIO, COMPARE_SPLITS

    digits = COMET_DECIMALS
    if tests.paired is None:
        table = [[row["system"], f"{row['score']:.{digits}f}"] for row in rows]
        return f"COMET|{signature}\n" + _simple_table(["System", "COMET"], table)
    table = [[f"Baseline: {rows[0]['system']}", f"{rows[0]['score']:.{digits}f}", "", ""]]
    for row in rows[1:]:
        boot = row["bootstrap"]
        star = " *" if row["p_value"] < 0.05 else ""
        table.append(
            [row["system"], f"{row['score']:.{digits}f}", f"{row['p_value']:.4f}{star}",
             f"{boot['wins']:.2f} / {boot['ties']:.2f} / {boot['losses']:.2f}"]
        )  # fmt: skip
    header = ["System", "COMET", "p-value", "wins / ties / losses"]
    note = (
        "comet-compare's tests against the baseline: a paired t-test of the segment scores\n"
        f"(two-sided; * p < 0.05), and bootstrap resampling ({COMPARE_SPLITS} samples of "
        f"{COMPARE_SAMPLE_RATIO:.0%} of the segments,\nseed {tests.seed}): the share of samples "
        "the system wins, ties (|delta| < 0.001) and loses"
    )
    return f"COMET|{signature}\n" + _simple_table(header, table) + "\n" + note


def _simple_table(header: list[str], rows: list[list[str]]) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=header, tablefmt="simple", disable_numparse=True)


def _number(value) -> float:
    if hasattr(value, "item"):  # a numpy scalar
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# -- formatting one system -----------------------------------------------------


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
