"""Search properties on tiny models: beam 1 = greedy, batched = one by one, beam >= greedy.

`tiny_checkpoint` (also used by test_translate.py) trains a tiny model for a few
seconds on a copy task over Multi30k German, with its own minimal loop, so these
tests depend on the model interface only, not on mtkit.train.
"""

from __future__ import annotations

import atexit
import copy
import functools
import gzip
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from mtkit.search import SearchOptions, beam_search, greedy_search, search

ARCHS = ("transformer", "rnn")
VOCAB = 200
TRAIN_LINES = 600


def _spm_bytes(lines: list[str], vocab_size: int = VOCAB) -> bytes:
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        minloglevel=2,
        num_threads=1,
    )
    return model.getvalue()


def _config(arch: str):
    from mtkit.models import ModelConfig

    common = dict(src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, d_model=64, dropout=0.0)
    if arch == "rnn":
        return ModelConfig(arch="rnn", enc_layers=1, dec_layers=1, **common)
    return ModelConfig(n_heads=4, d_ff=128, enc_layers=1, dec_layers=1, max_positions=64, **common)


def _train(model, ids: list[list[int]], steps: int, lr: float) -> None:
    """A few hundred Adam steps of teacher forcing on copying (source = target)."""
    from mtkit.train.batching import pad_rows

    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        pick = torch.randint(len(ids), (32,), generator=generator).tolist()
        src = pad_rows([ids[i] + [3] for i in pick], 0)
        tgt_in = pad_rows([[2] + ids[i] for i in pick], 0)
        tgt_out = pad_rows([ids[i] + [3] for i in pick], 0)
        logits = model(src, tgt_in)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt_out, ignore_index=0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


@functools.cache
def tiny_checkpoint(arch: str, multi30k: Path) -> Path:
    """A checkpoint file of a tiny `arch` model trained briefly to copy German text."""
    from mtkit.checkpoint import save_checkpoint
    from mtkit.models import build_model
    from mtkit.tokenizer import Tokenizer

    torch.manual_seed(0)
    with gzip.open(multi30k / "train.de.gz", "rt", encoding="utf-8") as file:
        lines = [next(file).strip() for _ in range(TRAIN_LINES)]
    spm = _spm_bytes(lines)
    ids = [x[:24] for x in Tokenizer.from_bytes(spm).encode(lines)]
    config = _config(arch)
    model = build_model(config)
    # One thread: on a loaded 2-core machine, two spin-waiting threads are many times slower.
    # The RNN walks the target step by step, so it gets fewer steps (it learns less).
    with _threads(1):
        if arch == "transformer":
            _train(model, ids, steps=100, lr=5e-3)
        else:
            _train(model, ids, steps=40, lr=1e-2)
    directory = tempfile.mkdtemp(prefix="mtkit-test-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    path = Path(directory) / f"{arch}.pt"
    return save_checkpoint(path, checkpoint_payload(config, model, spm, spm, tgt_lang="de"))


def checkpoint_payload(config, model, src_spm: bytes, tgt_spm: bytes, tgt_lang: str, step=0):
    """What `mtkit train` saves, for a model trained by a test."""
    import dataclasses

    return {
        "model_config": dataclasses.asdict(config),
        "model": model.state_dict(),
        "spm": {"src": src_spm, "tgt": tgt_spm},
        "langs": {"src": "de", "tgt": tgt_lang},
        "train_config": {},
        "step": step,
        "epoch": 0,
        "metrics": {},
    }


class _threads:
    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self):
        self.old = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=ARCHS)
def trained(request, multi30k):
    """(model, tokenizer, val source ids) for a briefly trained tiny model of each arch."""
    from mtkit.checkpoint import load_checkpoint, model_from_checkpoint
    from mtkit.tokenizer import Tokenizer

    ckpt = load_checkpoint(tiny_checkpoint(request.param, multi30k))
    tokenizer = Tokenizer.from_bytes(ckpt["spm"]["src"])
    with gzip.open(multi30k / "val.de.gz", "rt", encoding="utf-8") as file:
        lines = [next(file).strip() for _ in range(40)]
    ids = [x[:30] + [3] for x in tokenizer.encode(lines)]
    return model_from_checkpoint(ckpt), tokenizer, ids


def _pad(rows: list[list[int]]) -> torch.Tensor:
    from mtkit.train.batching import pad_rows

    return pad_rows(rows, 0)


def test_beam_one_equals_greedy(trained):
    model, _, ids = trained
    src = _pad(ids)
    assert beam_search(model, src, beam_size=1) == greedy_search(model, src)


def test_beam_one_search_path_equals_greedy(trained):
    """Beam search's own loop with K=1 (not the greedy shortcut) picks the same tokens,
    when it stops as fairseq does (stop="count"): by the length-penalty bound it would go
    on with the runner-up after the best candidate ended, since that one may still win."""
    from mtkit import search as S

    model, _, ids = trained
    src = _pad(ids)
    ensemble = S.Ensemble([model])
    options = SearchOptions(beam_size=1, stop="count")
    with torch.inference_mode():
        beam = S._beam(ensemble, src, ensemble.max_lens(src, 1.2, 10), options)
    assert [h[0].tokens for h in beam] == greedy_search(model, src)


@pytest.mark.parametrize("beam_size", [1, 5])
def test_batched_equals_one_at_a_time(trained, beam_size):
    model, _, ids = trained
    options = SearchOptions(beam_size=beam_size, nbest=beam_size)
    batched = search(model, _pad(ids[:12]), options)
    for row, hyps in zip(ids[:12], batched, strict=True):
        alone = search(model, _pad([row]), options)[0]
        assert [h.tokens for h in hyps] == [h.tokens for h in alone]
        assert [h.score for h in hyps] == pytest.approx([h.score for h in alone], abs=1e-4)


def test_beam_finds_at_least_greedy_score(trained):
    model, _, ids = trained
    src = _pad(ids)
    greedy = [h[0].score for h in search(model, src, SearchOptions(beam_size=1))]
    beam = [h[0].score for h in search(model, src, SearchOptions(beam_size=5))]
    assert sum(beam) / len(beam) >= sum(greedy) / len(greedy)


def test_trained_model_copies(trained):
    """The fixture model really learned something: greedy output overlaps its input."""
    model, _, ids = trained
    if model.config.arch == "rnn":
        pytest.skip("the RNN trains too briefly to copy")
    out = greedy_search(model, _pad(ids))
    overlap = sum(len(set(o) & set(i)) / len(set(i)) for o, i in zip(out, ids, strict=True))
    assert overlap / len(ids) > 0.3


def test_nbest_sorted_distinct_and_scored(trained):
    model, _, ids = trained
    for hyps in search(model, _pad(ids[:8]), SearchOptions(beam_size=4, nbest=4)):
        assert len(hyps) == 4
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 4
        for h in hyps:
            penalty = ((5 + len(h.tokens) + 1) / 6) ** SearchOptions.len_penalty
            assert h.score == pytest.approx(h.log_prob / penalty, rel=1e-5)


def test_length_normalisation_divides_by_length(trained):
    model, _, ids = trained
    hyps = search(model, _pad(ids[:4]), SearchOptions(beam_size=3, len_norm=True))
    for (h,) in hyps:
        assert h.score == pytest.approx(h.log_prob / (len(h.tokens) + 1), rel=1e-5)


@pytest.mark.parametrize("beam_size", [1, 4])
def test_max_len_is_respected(trained, beam_size):
    model, _, ids = trained
    src = _pad(ids)
    out = search(model, src, SearchOptions(beam_size=beam_size, max_len_a=0.0, max_len_b=3))
    assert max(len(h[0].tokens) for h in out) <= 3
    out = search(model, src, SearchOptions(beam_size=beam_size, max_len_a=0.5, max_len_b=0))
    for row, (h, *_) in zip(ids, out, strict=True):
        assert len(h.tokens) <= int(0.5 * len(row))


def test_ensemble_of_one_and_of_twins_equal_single(trained):
    model, _, ids = trained
    src = _pad(ids[:10])
    single = search(model, src, SearchOptions(beam_size=3))
    assert search([model], src, SearchOptions(beam_size=3)) == single
    twins = search([model, model], src, SearchOptions(beam_size=3))
    assert [h[0].tokens for h in twins] == [h[0].tokens for h in single]


def test_sampling_is_reproducible_with_a_seed(trained):
    model, _, ids = trained
    src = _pad(ids[:10])
    options = SearchOptions(sampling=True, nbest=3, top_p=0.9, temperature=1.2, seed=7)
    first = search(model, src, options)
    assert search(model, src, options) == first
    assert all(len(h) == 3 for h in first)
    other = search(model, src, SearchOptions(sampling=True, nbest=3, top_p=0.9, seed=8))
    assert other != first


def test_a_sentence_samples_alike_in_any_batch_by_its_key(trained):
    """Sampling draws per sentence key: neighbours and batch position change nothing."""
    model, _, ids = trained
    options = SearchOptions(sampling=True, nbest=2, top_k=20, seed=3)
    keys = [100 + 7 * i for i in range(10)]
    together = search(model, _pad(ids[:10]), options, keys=keys)
    order = [7, 2, 9, 0]
    apart = search(model, _pad([ids[i] for i in order]), options, keys=[keys[i] for i in order])
    for i, hyps in zip(order, apart, strict=True):
        assert [h.tokens for h in hyps] == [h.tokens for h in together[i]]
    other_keys = search(model, _pad(ids[:10]), options, keys=[k + 1 for k in keys])
    assert [h[0].tokens for h in other_keys] != [h[0].tokens for h in together]


def test_sampling_top_k_one_is_greedy(trained):
    model, _, ids = trained
    src = _pad(ids[:10])
    sampled = search(model, src, SearchOptions(sampling=True, top_k=1, seed=0))
    assert [h[0].tokens for h in sampled] == greedy_search(model, src)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_min_len_and_max_len_together_fix_the_length(trained, beam_size):
    model, _, ids = trained
    options = SearchOptions(beam_size=beam_size, min_len=6, max_len_a=0.0, max_len_b=6)
    assert {len(h[0].tokens) for h in search(model, _pad(ids[:8]), options)} == {6}


def test_early_stop_ends_no_later_and_keeps_nbest(trained):
    model, _, ids = trained
    src = _pad(ids)
    late = search(model, src, SearchOptions(beam_size=4, nbest=2))
    early = search(model, src, SearchOptions(beam_size=4, nbest=2, early_stop=True))
    assert all(len(hyps) == 2 for hyps in early)
    # Stopping earlier can only miss hypotheses: the best found is never better.
    for first, last in zip(early, late, strict=True):
        assert first[0].score <= last[0].score + 1e-5


class _Uncached:
    """A model whose decode_step recomputes the whole prefix with `forward`: no caches, so
    search over it is what search over the cached model must give."""

    def __init__(self, model) -> None:
        self.model, self.config = model, model.config

    def encode(self, src):
        bos = torch.full((src.size(0), 1), self.config.bos_id, dtype=torch.long)
        return {"src": src, "prefix": bos[:, :0]}

    def decode_step(self, tokens, state):
        prefix = torch.cat([state["prefix"], tokens[:, None]], 1)
        return self.model(state["src"], prefix)[:, -1], {"src": state["src"], "prefix": prefix}

    def reorder_state(self, state, index):
        return {key: value.index_select(0, index) for key, value in state.items()}


@pytest.mark.parametrize("cache_chunk", [16, 2])
@pytest.mark.parametrize("beam_size", [1, 5])
def test_cached_search_equals_uncached_search(trained, beam_size, cache_chunk, monkeypatch):
    """Greedy and beam search (n-best, lengths, scores) over the incremental decoder, as
    translate prepares it (oneDNN-packed fp32 on the CPU), equal search over the full
    forward pass of the same model, sentences leaving the batch as they end; with a
    cache of 2 slots, full caches are compacted (dead beams' slots dropped) and grown
    at most steps. (int8 is not compared: its activations are quantized per batch, so
    they depend on the batch.)"""
    from mtkit.models import transformer
    from mtkit.translate.kernels import prepare_for_decoding

    monkeypatch.setattr(transformer, "CACHE_CHUNK", cache_chunk)

    model, _, ids = trained
    model = prepare_for_decoding(
        copy.deepcopy(model), device="cpu", dtype=torch.float32, quantize="none"
    )
    src = _pad(ids[:16])
    options = SearchOptions(beam_size=beam_size, nbest=beam_size)
    cached, uncached = search(model, src, options), search(_Uncached(model), src, options)
    for mine, theirs in zip(cached, uncached, strict=True):
        assert [h.tokens for h in mine] == [h.tokens for h in theirs]
        assert [h.score for h in mine] == pytest.approx([h.score for h in theirs], abs=1e-4)


@pytest.mark.parametrize("columns", [40_000, 5 * 8_003, 300])
def test_block_topk_equals_topk(columns):
    """Beam search's top candidates by block maxima are torch.topk's, whatever the width
    (whole blocks, a partial last block, too narrow for blocks)."""
    from mtkit.search import _topk

    x = torch.randn(7, columns, generator=torch.Generator().manual_seed(columns))
    x[3, -5:] = 100.0 + torch.arange(5.0)  # the best of a row in its last columns
    x[4, :12] = float("-inf")
    values, indices = _topk(x, 10)
    expected = x.topk(10, dim=1)
    torch.testing.assert_close(values, expected.values, rtol=0, atol=0)
    torch.testing.assert_close(indices, expected.indices, rtol=0, atol=0)


def test_beam_search_under_bf16_autocast(trained, monkeypatch):
    """The GPU's path (bf16 autocast), here on the CPU: beam search with caches compacted
    and grown at most steps (a 2-slot cache) runs in bf16 and finds nearly fp32's best."""
    from mtkit.models import transformer

    model, _, ids = trained
    if model.config.arch != "transformer":
        pytest.skip("the bf16 cache layout is the Transformer's")
    monkeypatch.setattr(transformer, "CACHE_CHUNK", 2)
    src, options = _pad(ids[:16]), SearchOptions(beam_size=5, nbest=5)
    fp32 = search(model, src, options)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = search(model, src, options)
    assert all(len(hyps) == 5 for hyps in bf16)
    same = sum(a[0].tokens == b[0].tokens for a, b in zip(fp32, bf16, strict=True))
    assert same >= 0.5 * len(fp32)  # 13 of 16 measured
