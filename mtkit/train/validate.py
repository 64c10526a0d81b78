"""Validation during training: loss and perplexity of the validation set, BLEU and chrF of
greedy output (mtkit.search's greedy search, the one decoding core translate uses too),
for each direction of a multilingual run (mtkit.train.multilingual) and their mean.

Each rank takes every world_size-th batch and the results are shared, so all
ranks end with the same numbers (and the same early-stopping decision).
"""

from __future__ import annotations

import math

from mtkit import distributed
from mtkit.tokenizer import clip_source
from mtkit.train.batching import (
    Pairs,
    collate,
    filter_pairs,
    make_batches,
    pad_rows,
    subset,
)

# Validation loss uses the usual smoothing, so it is comparable with the training loss.
VALID_SMOOTHING = 0.1


def evaluate(model, config, data, *, dist, max_tokens: int, bleu_sentences: int, autocast) -> dict:
    """Validation metrics of `model` (the unwrapped module) with model config `config`:
    loss, NLL, perplexity, and sacreBLEU's BLEU and chrF of greedy translations. A
    multilingual run (`data.valid_sets`) is scored on each direction: its loss over all
    of them, BLEU and chrF the directions' mean, and each direction's own numbers under
    "valid_directions"."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast():
            parts = {
                name: _scores(model, config, data, pairs, refs, dist, max_tokens, bleu_sentences)
                for name, pairs, refs in _valid_sets(data)
            }
    finally:
        model.train(was_training)
    metrics = _metrics(*map(sum, zip(*[p[:3] for p in parts.values()], strict=True)))
    metrics["valid_bleu"] = sum(p[3] for p in parts.values()) / len(parts)
    metrics["valid_chrf"] = sum(p[4] for p in parts.values()) / len(parts)
    if data.valid_sets:
        metrics["valid_directions"] = {
            name: _metrics(*part[:3]) | {"valid_bleu": part[3], "valid_chrf": part[4]}
            for name, part in parts.items()
        }
    return metrics


def _metrics(loss: float, nll: float, tokens: int) -> dict:
    return {
        "valid_loss": loss / max(tokens, 1),
        "valid_nll_loss": nll / max(tokens, 1),
        "valid_ppl": math.exp(min(nll / max(tokens, 1), 100.0)),
    }


def _valid_sets(data) -> list[tuple[str | None, Pairs, list[str]]]:
    """(direction, pairs, reference lines) of each validation set: the one set of a
    bilingual run, each direction's lines of a multilingual one."""
    if not data.valid_sets:
        return [(None, data.valid, data.valid_tgt_lines)]
    out = []
    for one in data.valid_sets:
        rows = range(one.start, one.start + one.size)
        pairs = Pairs(src=subset(data.valid.src, rows), tgt=subset(data.valid.tgt, rows))
        out.append((one.name, pairs, data.valid_tgt_lines[one.start : one.start + one.size]))
    return out


def _scores(model, cfg, data, pairs: Pairs, refs: list, dist, max_tokens: int, n: int) -> tuple:
    """(summed loss, summed NLL, target tokens, BLEU, chrF) of one validation set."""
    loss, nll, tokens = _loss_sums(model, cfg, pairs, dist, max_tokens)
    bleu, chrf = _greedy_scores(model, cfg, data, pairs, refs, dist, max_tokens, n)
    return loss, nll, tokens, bleu, chrf


def _loss_sums(model, cfg, pairs: Pairs, dist, max_tokens: int) -> tuple[float, float, int]:
    """Summed smoothed loss, NLL and target tokens over the validation pairs the model takes."""
    from mtkit.train.optim import label_smoothed_loss

    pairs, _ = filter_pairs(pairs, max_len=cfg.max_positions, max_tokens=1 << 30)
    loss = nll = tokens = 0.0
    for index in make_batches(pairs, max_tokens=max_tokens, seed=0)[dist.rank :: dist.world_size]:
        batch = collate(pairs, index, pad_id=cfg.pad_id, bos_id=cfg.bos_id, eos_id=cfg.eos_id)
        batch = batch.to(dist.device)
        logits = model(batch.src, batch.tgt_in)
        b_loss, b_nll = label_smoothed_loss(
            logits, batch.tgt_out, pad_id=cfg.pad_id, smoothing=VALID_SMOOTHING
        )
        loss, nll, tokens = loss + b_loss.item(), nll + b_nll.item(), tokens + batch.n_tgt_tokens
    loss, nll, tokens = distributed.sum_all(dist, [loss, nll, tokens])
    return loss, nll, int(tokens)


def _greedy_scores(model, cfg, data, valid: Pairs, refs: list, dist, max_tokens: int, n_sentences):
    """Corpus BLEU and chrF (sacreBLEU, on detokenized text) of greedy translations of the
    first `n_sentences` lines of `valid` (0: all) against `refs`."""
    import sacrebleu

    from mtkit.search import greedy_search

    banned = data.banned_ids  # source-side tags: a translation never holds them
    n = min(n_sentences, len(valid)) if n_sentences else len(valid)
    sample = Pairs(src=subset(valid.src, range(n)), tgt=subset(valid.tgt, range(n)))
    hyps = {}
    for rows in make_batches(sample, max_tokens=max_tokens, seed=0)[dist.rank :: dist.world_size]:
        rows = rows.tolist()
        sources = [clip_source(sample.src.sentence(i), cfg.max_positions) for i in rows]
        src = pad_rows([ids + [cfg.eos_id] for ids in sources], cfg.pad_id)
        out = greedy_search(model, src.to(dist.device), banned=banned, prefix=data.target_prefix)
        hyps.update(zip(rows, data.tgt_tok.decode(out), strict=True))
    for part in distributed.gather_all(dist, hyps):
        hyps.update(part)
    outputs, refs = [hyps[i] for i in range(n)], [refs[:n]]
    return sacrebleu.corpus_bleu(outputs, refs).score, sacrebleu.corpus_chrf(outputs, refs).score
