"""The GPU's paths, skipped without CUDA (the `cuda` marker, tests/conftest.py); bench/gpu.sh
runs them on a GPU. bf16 autocast and fp16 with GradScaler lower the loss through the
fused Adam; a resumed GPU run continues exactly (CUDA's RNG state included); cached
decoding equals uncached decoding in bf16; translating on the GPU finds the CPU's output
for most lines. The checks are tests/test_precision.py's, which run them on the CPU.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_precision import (
    check_cached_equals_uncached_bf16,
    check_steps_lower_the_loss,
    check_translate_matches,
)
from test_train import TINY, m30k, records, tiny_config  # noqa: F401 (m30k: a fixture)

from mtkit.train import train

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("one_torch_thread")]


def test_bf16_steps_lower_the_loss_on_the_gpu(m30k, tmp_path):  # noqa: F811
    trainer = check_steps_lower_the_loss(m30k, tmp_path / "run", device="cuda", precision="bf16")
    assert trainer.scaler is None
    assert all(p.is_cuda and p.dtype == torch.float32 for p in trainer.raw.parameters())
    assert all(s["exp_avg"].is_cuda for s in trainer.optimizer.state.values())


def test_fp16_steps_with_the_grad_scaler_lower_the_loss(m30k, tmp_path):  # noqa: F811
    # More steps: the scaler starts at 2**16 and skips the steps whose gradients overflow.
    trainer = check_steps_lower_the_loss(
        m30k, tmp_path / "run", device="cuda", precision="fp16", steps=10
    )
    assert trainer.scaler is not None and trainer.scaler.is_enabled()
    assert math.isfinite(trainer.scaler.get_scale()) and trainer.scaler.get_scale() >= 1.0


def test_auto_is_bf16_or_fp16_on_the_gpu(m30k, tmp_path):  # noqa: F811
    expect = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    check_steps_lower_the_loss(
        m30k, tmp_path / "run", device="cuda", precision="auto", expect=expect, steps=10
    )


def test_resume_on_the_gpu_is_exact(m30k, tmp_path):  # noqa: F811
    """6 updates straight == 3, stop, --resume, 3 more, in bf16 with dropout (CUDA's RNG
    restored) and accumulation 2. Deterministic kernels where torch has them; the
    tolerance covers the sums of atomic adds that have none (a wrong RNG state or
    optimiser state moves the losses by 1e-2 or more)."""
    kw = dict(
        update_freq=2,
        model_overrides=dict(TINY, dropout=0.3),
        device="cuda",
        precision="bf16",
    )
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        straight = train(tiny_config(m30k, tmp_path / "a", max_updates=6, **kw))
        train(tiny_config(m30k, tmp_path / "b", max_updates=3, **kw))
        resumed = train(tiny_config(m30k, tmp_path / "b", max_updates=6, resume=True, **kw))
    finally:
        torch.use_deterministic_algorithms(was)
    assert straight.step == resumed.step == 6
    curve_a = [(r["step"], r["loss"]) for r in records(tmp_path / "a", "train")]
    curve_b = [(r["step"], r["loss"]) for r in records(tmp_path / "b", "train")]
    assert [s for s, _ in curve_a] == [s for s, _ in curve_b] == [1, 2, 3, 4, 5, 6]
    assert [x for _, x in curve_b] == pytest.approx([x for _, x in curve_a], rel=1e-4)
    a = torch.load(tmp_path / "a" / "checkpoint_last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint_last.pt", weights_only=True)["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


def test_cached_equals_uncached_decoding_in_bf16_on_the_gpu(multi30k):
    check_cached_equals_uncached_bf16(multi30k, "cuda")


@pytest.mark.parametrize("precision", ["auto", "fp32"])
def test_gpu_translation_matches_the_cpu_for_most_lines(multi30k, precision):
    cpu = check_translate_matches(multi30k, "cpu", "fp32", None)
    check_translate_matches(multi30k, "cuda", precision, cpu)
