"""Precision: `--precision auto` by the CPU's features (fake flags), and the bf16 path on
any CPU (autocast bf16 runs everywhere, slowly): a training step lowers the loss, cached
decoding equals uncached decoding, translation finds fp32's output for most sentences.

The checks are functions of the device, so tests/test_cuda.py runs the same ones on a GPU.
"""

from __future__ import annotations

import gzip
import os

import pytest
import torch
from test_search import SearchOptions, search, tiny_checkpoint
from test_train import TINY, m30k, tiny_config  # noqa: F401 (m30k: a fixture)

from mtkit.device import (
    auto_cpu_precision,
    cpu_features,
    cpu_flags,
    cpu_model_name,
    pick_precision,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Feature flags as /proc/cpuinfo spells them (abridged).
SAPPHIRE_RAPIDS = frozenset(
    ["fpu", "sse2", "avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"]
)
ZEN4 = frozenset(["fpu", "sse2", "avx2", "avx512f", "avx512_bf16"])  # bf16 dot products, no AMX
ZEN2 = frozenset(["fpu", "sse2", "avx2"])


@pytest.mark.parametrize(
    ("flags", "command", "expected"),
    [
        (SAPPHIRE_RAPIDS, "train", "bf16"),
        (SAPPHIRE_RAPIDS, "translate", "fp32"),  # not measured faster and as good yet
        (SAPPHIRE_RAPIDS, "logprob", "fp32"),  # scores are the output: fp32
        (ZEN4, "train", "fp32"),
        (ZEN2, "translate", "fp32"),
        (frozenset(), "train", "fp32"),  # no /proc/cpuinfo
    ],
)
def test_auto_precision_follows_the_features_given(flags, command, expected, caplog):
    caplog.set_level("INFO", logger="mtkit.device")
    assert auto_cpu_precision(command, flags) == expected
    cpu = torch.device("cpu")
    assert pick_precision("auto", cpu, command=command, flags=flags) == expected
    if command == "train":
        amx = "has AMX" if "amx_bf16" in flags else "has no AMX"
        assert f"{expected}: this CPU {amx}" in caplog.text


def test_an_explicit_precision_is_kept_whatever_the_cpu():
    cpu = torch.device("cpu")
    assert pick_precision("fp32", cpu, command="train", flags=SAPPHIRE_RAPIDS) == "fp32"
    assert pick_precision("bf16", cpu, command="train", flags=ZEN2) == "bf16"


def test_cpu_flags_and_name_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
        "flags\t\t: fpu avx2 amx_bf16 amx_tile avx512_bf16 avx512f\n\n"
        "processor\t: 1\nflags\t\t: fpu\n"
    )
    flags = cpu_flags(str(cpuinfo))
    assert {"amx_bf16", "amx_tile", "avx512_bf16", "fpu"} <= flags and len(flags) == 6
    assert cpu_features(flags) == {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
    assert cpu_model_name(str(cpuinfo)) == "Intel(R) Xeon(R) Platinum 8480+"
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()
    assert cpu_model_name(str(tmp_path / "missing"))  # platform's guess, never empty


def test_the_machine_line_names_the_model_and_the_units_that_decide_speed(tmp_path):
    from mtkit.device import describe_cpu

    xeon, epyc = tmp_path / "xeon", tmp_path / "epyc"
    xeon.write_text(
        "model name\t: Intel(R) Xeon(R) Platinum 8480+\n"
        "flags\t\t: fpu amx_tile avx2 avx512f amx_bf16 sse2\n"
    )
    epyc.write_text("model name\t: AMD EPYC\nflags\t\t: fpu sse2\n")
    cpus = f"{os.cpu_count()} CPUs"
    assert (
        describe_cpu(str(xeon))
        == f"Intel(R) Xeon(R) Platinum 8480+, {cpus}, avx2 avx512f amx_bf16 amx_tile"
    )
    assert describe_cpu(str(epyc)) == f"AMD EPYC, {cpus}, no AVX2"


def test_translate_auto_stays_fp32_on_an_amx_cpu_and_bf16_is_kept(multi30k, monkeypatch):
    from mtkit import device
    from mtkit.translate.stream import RuntimeOptions, load_translator

    monkeypatch.setattr(device, "cpu_flags", lambda cpuinfo="": SAPPHIRE_RAPIDS)
    path = tiny_checkpoint("transformer", multi30k)
    runtime = RuntimeOptions(device="cpu", threads=1)
    assert load_translator([path], runtime).dtype == torch.float32
    bf16 = RuntimeOptions(device="cpu", threads=1, precision="bf16")
    assert load_translator([path], bf16).dtype == torch.bfloat16
    int8 = RuntimeOptions(device="cpu", threads=1, quantize="int8")
    assert load_translator([path], int8).dtype == torch.float32
    assert load_translator([path], runtime, command="logprob").dtype == torch.float32


def test_cpu_flags_from_the_environment(monkeypatch):
    from mtkit import device

    monkeypatch.setenv("MTKIT_CPU_FLAGS", "fpu avx2 amx_bf16 amx_tile")
    assert device.has_amx(device.cpu_flags())
    assert device.auto_cpu_precision("train") == "bf16"
    monkeypatch.setenv("MTKIT_CPU_FLAGS", "fpu avx2")
    assert device.auto_cpu_precision("train") == "fp32"


# -- checks shared with tests/test_cuda.py ----------------------------------------------


def batch_loss(trainer, b: int) -> tuple[float, torch.dtype]:
    """(loss per target token of batch b, the logits' dtype) under the run's autocast."""
    from mtkit.train.batching import collate
    from mtkit.train.optim import label_smoothed_loss

    cfg = trainer.model_config
    index = trainer.batches[b]
    batch = collate(
        trainer.data.train, index, pad_id=cfg.pad_id, bos_id=cfg.bos_id, eos_id=cfg.eos_id
    ).to(trainer.dist.device)
    with torch.no_grad(), trainer.autocast():
        logits = trainer.raw(batch.src, batch.tgt_in)
    loss, _ = label_smoothed_loss(logits, batch.tgt_out, pad_id=cfg.pad_id, smoothing=0.0)
    return float(loss) / batch.n_tgt_tokens, logits.dtype


def check_steps_lower_the_loss(m30k, out, *, device, precision, expect=None, steps=5):  # noqa: F811
    """`steps` updates on one batch lower that batch's loss; the run resolves `precision`
    to `expect` (default: itself) and its logits are in that dtype."""
    from mtkit import distributed
    from mtkit.device import dtype_of
    from mtkit.train.setup import build_trainer

    config = tiny_config(
        m30k,
        out,
        data=str(m30k["memorise"]),
        model_overrides=dict(TINY, dropout=0.0),
        device=device,
        precision=precision,
        warmup=0,
        schedule="constant",
        lr=3e-3,
        label_smoothing=0.0,
    )
    trainer = build_trainer(config, distributed.setup(device))
    expect = expect or precision
    assert trainer.precision == expect
    before, dtype = batch_loss(trainer, 0)
    assert dtype == dtype_of(expect)
    for _ in range(steps):
        trainer.train_step([0])
    after, _ = batch_loss(trainer, 0)
    assert all(torch.isfinite(p).all() for p in trainer.raw.parameters())
    assert after < before - 0.1, (before, after)
    return trainer


class Uncached:
    """A model whose decode_step runs `forward` over the whole prefix: no caches."""

    def __init__(self, model) -> None:
        self.model, self.config = model, model.config

    def encode(self, src):
        return {"src": src, "prefix": src[:, :0]}

    def decode_step(self, tokens, state):
        prefix = torch.cat([state["prefix"], tokens[:, None]], 1)
        return self.model(state["src"], prefix)[:, -1], {"src": state["src"], "prefix": prefix}

    def reorder_state(self, state, index):
        return {key: value.index_select(0, index) for key, value in state.items()}


def val_ids(tokenizer, multi30k, n: int) -> list[list[int]]:
    with gzip.open(multi30k / "val.de.gz", "rt", encoding="utf-8") as file:
        lines = [next(file).strip() for _ in range(n)]
    return [x[:30] + [3] for x in tokenizer.encode(lines)]


def check_cached_equals_uncached_bf16(multi30k, device: str):
    """The tiny Transformer in bf16 weights on `device`, as translate loads it: step by
    step along a fixed target, the cached decoder's log-probabilities are the full
    forward pass's (within bf16's rounding: at most 0.135 apart on the CPU, where a
    wrong cache is nats off), and greedy and beam search over both find
    the same best hypothesis for most sentences (bf16 rounds the two paths' sums
    differently, so a near tie may go either way)."""
    from mtkit.checkpoint import load_checkpoint, model_from_checkpoint
    from mtkit.tokenizer import Tokenizer
    from mtkit.train.batching import pad_rows
    from mtkit.translate.kernels import prepare_for_decoding

    ckpt = load_checkpoint(tiny_checkpoint("transformer", multi30k))
    model = model_from_checkpoint(ckpt).to(device=device, dtype=torch.bfloat16).eval()
    model = prepare_for_decoding(model, device=device, dtype=torch.bfloat16, quantize="none")
    ids = val_ids(Tokenizer.from_bytes(ckpt["spm"]["src"]), multi30k, 16)
    src = pad_rows(ids, 0).to(device)
    tgt_in = pad_rows([[2] + x[:-1] for x in ids], 0).to(device)  # teacher forcing: a copy
    with torch.inference_mode():
        full = model(src, tgt_in).float().log_softmax(-1)  # [B,T,V]
        state = model.encode(src)
        for t in range(tgt_in.size(1)):
            logits, state = model.decode_step(tgt_in[:, t], state)
            step = logits.float().log_softmax(-1)
            assert step.dtype == torch.float32 and logits.dtype == torch.bfloat16
            torch.testing.assert_close(step, full[:, t], atol=0.25, rtol=0.05)
    for beam in (1, 5):
        options = SearchOptions(beam_size=beam)
        with torch.inference_mode():
            cached, uncached = search(model, src, options), search(Uncached(model), src, options)
        same = sum(a[0].tokens == b[0].tokens for a, b in zip(cached, uncached, strict=True))
        assert same >= 0.5 * len(ids), (beam, same)  # CPU: 12 (greedy), 14 (beam 5) of 16


def check_translate_matches(multi30k, device: str, precision: str, reference: list[str] | None):
    """Translate 40 validation lines greedy and beam 5 on `device` in `precision`; with
    `reference` (the CPU fp32 outputs), most lines must equal it. Returns the outputs."""
    from mtkit.translate.stream import RuntimeOptions, load_translator, translate_lines

    with gzip.open(multi30k / "val.de.gz", "rt", encoding="utf-8") as file:
        lines = [next(file).strip() for _ in range(40)]
    runtime = RuntimeOptions(device=device, precision=precision, threads=1)
    translator = load_translator([tiny_checkpoint("transformer", multi30k)], runtime)
    outputs = []
    for beam in (1, 5):
        options = SearchOptions(beam_size=beam, max_len_a=0, max_len_b=40)
        outputs += [hyps[0][0] for hyps in translate_lines(translator, lines, options)]
    if reference is not None:
        same = sum(a == b for a, b in zip(outputs, reference, strict=True))
        assert same >= 0.6 * len(outputs), f"{same} of {len(outputs)}"  # CPU bf16: 68 of 80
    return outputs


# -- the CPU's bf16 path ----------------------------------------------------------


def test_bf16_training_steps_lower_the_loss_on_the_cpu(m30k, tmp_path):  # noqa: F811
    check_steps_lower_the_loss(m30k, tmp_path / "run", device="cpu", precision="bf16")


def test_auto_trains_in_bf16_on_an_amx_cpu(m30k, tmp_path, monkeypatch):  # noqa: F811
    from mtkit import device

    monkeypatch.setattr(device, "cpu_flags", lambda cpuinfo="": SAPPHIRE_RAPIDS)
    check_steps_lower_the_loss(
        m30k, tmp_path / "run", device="cpu", precision="auto", expect="bf16", steps=2
    )


def test_cached_equals_uncached_decoding_in_bf16_on_the_cpu(multi30k):
    check_cached_equals_uncached_bf16(multi30k, "cpu")


def test_bf16_translation_finds_fp32_output_for_most_lines(multi30k):
    fp32 = check_translate_matches(multi30k, "cpu", "fp32", None)
    check_translate_matches(multi30k, "cpu", "bf16", fp32)


@pytest.mark.parametrize(("command", "capacity"), [("train", "1024"), ("translate", "64")])
def test_training_keeps_onednn_default_kernel_caches(monkeypatch, command, capacity):
    """bf16 matmuls on AVX-512/AMX CPUs are oneDNN kernels cached by shape: an update
    needs about 100, so `mtkit train` must not keep translate's 64."""
    import os

    from mtkit.device import set_native_defaults

    for key in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    set_native_defaults(command)
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == capacity
    assert os.environ["LRU_CACHE_CAPACITY"] == capacity
