"""Where tensors run and in what precision: one choice for training, translating and scoring.

`--device auto` is the first CUDA GPU when torch sees one, else the CPU.
`--precision auto` is bf16 on a GPU that has it (fp16 otherwise) and fp32 on
the CPU, whose bf16 is slow on most machines. Everything here is decided once
per command; the models never look.
"""

from __future__ import annotations

import contextlib
import os

from mtkit.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def sleep_idle_threads() -> None:
    """Idle OpenMP threads sleep instead of spinning, unless the user set OMP_WAIT_POLICY.

    A decoding step is many short parallel regions; on a CPU shared with other jobs, a
    thread spinning for its descheduled partner wastes its time slice: greedy decoding
    with 2 threads at load 6 on 2 cores ran at 7-9 sentences/s spinning (libgomp's
    default) and 30-65 sleeping (bench/decode.py, issue 10); transformer-small training
    with 2 threads, 495 against 355 target tokens/s. Call it before torch is imported.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def check_choice(flag: str, value: str, valid: tuple[str, ...]) -> None:
    """ConfigError naming the valid choices when `value` is not one of them."""
    if value not in valid:
        raise ConfigError(f"unknown {flag} {value!r}; choose one of: {', '.join(valid)}")


def pick_device(device: str, local_rank: int = 0):
    """The torch.device for `--device` (auto, cpu, cuda); under torchrun, this process's GPU."""
    import torch

    check_choice("--device", device, DEVICES)
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda, but torch sees no CUDA GPU; use --device cpu or auto")
    if device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def pick_precision(precision: str, device) -> str:
    """fp32 on the CPU, bf16 on a GPU that has it (fp16 otherwise), unless asked."""
    import torch

    check_choice("--precision", precision, PRECISIONS)
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA GPU; use fp32 or bf16 on the CPU")
    return precision


def dtype_of(precision: str):
    """The torch dtype of a resolved precision name (fp32, bf16, fp16)."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast_for(precision: str, device):
    """A zero-argument callable giving the autocast context of `precision` (none for fp32)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype_of(precision))
