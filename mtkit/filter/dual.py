"""Dual conditional cross-entropy: what a pair scores, and whether two models may score a corpus.

Junczys-Dowmunt (2018), "Dual Conditional Cross-Entropy Filtering of Noisy Parallel
Corpora" (the best system of the WMT18 corpus-filtering task), scores a pair (x, y)
with a forward model f (x -> y) and a backward model b (y -> x):

    H_f = -log P_f(y | x) / |y|      H_b = -log P_b(x | y) / |x|
    score = exp(-(|H_f - H_b| + (H_f + H_b) / 2))

H is in nats per target piece, eos counted: `mtkit logprob --normalize`, negated. A pair
both models find likely (small H) and agree on (|H_f - H_b| small) scores near 1; a
misaligned pair, a copy or another language scores near 0. The paper trained both
models on clean data with the same vocabulary: cross-entropies per piece compare
only under one segmentation, so the forward model's target SentencePiece must be the
backward model's source one and the other way round (checked here, as are the
languages and the corpus's unknown pieces).

Scoring is mtkit.translate.logprob's (its chunks, token-budget batches and order);
running it over a corpus as a job is mtkit.filter.job's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from mtkit.errors import CheckpointError, ConfigError, DataError
from mtkit.translate.batching import BatchOptions
from mtkit.translate.stream import RuntimeOptions, Translator

# The corpus's pieces the models may leave unknown (as `train` allows its SentencePiece
# model), in a sample of its first lines.
MAX_UNK_RATE = 0.05
UNK_SAMPLE_LINES = 2000


@dataclass(frozen=True)
class PairScore:
    """One pair's figures: the score and the two cross-entropies it came from."""

    score: float
    forward: float  # H_f, nats per target piece
    backward: float  # H_b, nats per source piece


def dual_score(forward: float, backward: float) -> float:
    """exp(-(|H_f - H_b| + (H_f + H_b) / 2)), Junczys-Dowmunt (2018)'s adq-dual score."""
    return math.exp(-(abs(forward - backward) + 0.5 * (forward + backward)))


@dataclass
class DualModels:
    forward: Translator  # source -> target
    backward: Translator  # target -> source


def load_models(
    forward: Path, backward: Path, langs: dict, runtime: RuntimeOptions = RuntimeOptions()
) -> DualModels:
    """Both models, checked against each other and against the corpus's languages."""
    from mtkit.translate.stream import load_translator

    check_direction(forward, "--forward", langs["src"], langs["tgt"])
    check_direction(backward, "--backward", langs["tgt"], langs["src"])
    models = DualModels(
        load_translator([Path(forward)], runtime, command="logprob"),
        load_translator([Path(backward)], runtime, command="logprob"),
    )
    check_vocabularies(models, forward, backward)
    return models


def check_direction(path: Path, flag: str, src: str, tgt: str) -> None:
    """ConfigError unless the checkpoint at `path` is a bilingual src -> tgt model."""
    found = checkpoint_pair(Path(path))
    if found is None:
        raise ConfigError(
            f"{flag} {path} is a multilingual model; filter scores with two bilingual models "
            f"({src}->{tgt} and back)"
        )
    if found != (src, tgt):
        raise ConfigError(
            f"{flag} {path} translates {found[0]}->{found[1]}, but the corpus needs "
            f"{src}->{tgt} there (--forward translates the corpus's source into its target, "
            "--backward the other way)"
        )


def checkpoint_pair(path: Path) -> tuple[str, str] | None:
    """(src, tgt) of a bilingual checkpoint, None for a multilingual one; read with its
    weights memory-mapped, not loaded (load_translator loads them once, after)."""
    import torch

    from mtkit.checkpoint import check_checkpoint
    from mtkit.languages import languages_of

    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path} (check the path)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - a torn or foreign file: load_checkpoint says which
        from mtkit.checkpoint import load_checkpoint

        load_checkpoint(path)
        raise
    ckpt = check_checkpoint(ckpt, path, verify=False)
    if languages_of(ckpt) is not None:
        return None
    return ckpt["langs"]["src"], ckpt["langs"]["tgt"]


def check_vocabularies(models: DualModels, forward: Path, backward: Path) -> None:
    """The two models segment each language alike, so their cross-entropies compare."""
    f, b = models.forward, models.backward
    for side, mine, theirs in (
        ("source", f.src_tokenizer, b.tgt_tokenizer),
        ("target", f.tgt_tokenizer, b.src_tokenizer),
    ):
        if mine.model_bytes != theirs.model_bytes:
            raise ConfigError(
                f"the vocabulary does not match: {forward} and {backward} segment the "
                f"corpus's {side} with different SentencePiece models, so their "
                "cross-entropies per piece do not compare; train both with one vocabulary"
            )


def check_coverage(models: DualModels, pairs: list[tuple[str, str]], names: tuple) -> None:
    """DataError when the models' vocabulary leaves over MAX_UNK_RATE of the corpus's
    pieces unknown: models of other languages or scripts than the corpus."""
    sample = pairs[:UNK_SAMPLE_LINES]
    for number, tokenizer in enumerate(
        (models.forward.src_tokenizer, models.forward.tgt_tokenizer)
    ):
        ids = [i for row in tokenizer.encode([pair[number] for pair in sample]) for i in row]
        rate = sum(i == tokenizer.unk_id for i in ids) / max(1, len(ids))
        if rate > MAX_UNK_RATE:
            raise DataError(
                f"the models' vocabulary does not match the corpus: {rate:.1%} of the pieces "
                f"of {names[number]} are unknown to it (limit {MAX_UNK_RATE:.0%}); score "
                "with models trained on this language pair"
            )


def score_chunk(
    models: DualModels, pairs: list[tuple[str, str]], batching: BatchOptions = BatchOptions()
) -> list[PairScore | None]:
    """Each pair's PairScore, in order; None for a pair with a blank side (nothing to
    score). The pairs are one chunk: each model reads them once, in batches."""
    from mtkit.translate.logprob import score_pairs

    chunk = BatchOptions(batching.max_tokens, batching.batch_size, max(1, len(pairs)))
    forward = score_pairs(models.forward, pairs, chunk)
    backward = score_pairs(models.backward, [(t, s) for s, t in pairs], chunk)
    scores = []
    for (s, t), f, b in zip(pairs, forward, backward, strict=True):
        if not s.strip() or not t.strip():
            scores.append(None)
            continue
        h_f, h_b = -sum(f) / len(f), -sum(b) / len(b)
        scores.append(PairScore(dual_score(h_f, h_b), h_f, h_b))
    return scores
