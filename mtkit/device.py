"""Where tensors run and in what precision: one choice for training, translating and scoring.

`--device auto` is the first CUDA GPU when torch sees one, else the CPU.
`--precision auto` is bf16 on a GPU that has it (fp16 otherwise); on the CPU it
is bf16 for training and translating where the CPU has AMX (Intel's matrix units,
Xeon since Sapphire Rapids), told by its feature flags, never by its name, and
fp32 elsewhere: without AMX, bf16 matmuls are emulated or run on AVX-512 units at
best, and are slower than fp32. Everything here is decided once per command; the
models never look.
"""

from __future__ import annotations

import contextlib
import logging
import os

from mtkit.errors import ConfigError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# The CPU feature flags (as /proc/cpuinfo spells them) that decide bf16's speed there.
CPU_FEATURES = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
# Commands whose `--precision auto` is bf16 on an AMX CPU. Measured on a 2-core Xeon with
# AMX (torch 2.13): the model's training step under bf16 autocast runs at 1.4x
# (transformer-small) to 1.85x (transformer-base) fp32's speed. Translation measured
# 1.05x, within noise, with outputs that differ from fp32's on some lines, so translate
# (and logprob, whose numbers are its output) stay fp32 until measured faster and as good.
AUTO_BF16_ON_AMX = ("train",)
# Flags to decide by instead of /proc/cpuinfo's (space-separated): pins the choice for a
# fleet of mixed CPUs, and lets the test suite take the same path on every CPU.
CPU_FLAGS_ENV = "MTKIT_CPU_FLAGS"


# Spins an idle OpenMP thread makes before it sleeps: libgomp counts about 100 a
# microsecond, so 0.1 ms (see set_native_defaults).
IDLE_SPINS = 10_000
# Compiled oneDNN kernels kept, in oneDNN's cache and in ideep's (torch's oneDNN
# layer), each keyed by the shapes of a call (see set_native_defaults).
ONEDNN_CACHE = 64
# The same caches for `mtkit train`: oneDNN's own default (see set_native_defaults).
TRAIN_ONEDNN_CACHE = 1024


def set_native_defaults(command: str | None = None) -> None:
    """How the native libraries under torch behave, unless the user set it: call it
    before torch is imported (they read the environment as they load). `command` is the
    mtkit command about to run (train keeps larger oneDNN caches, below).

    OpenMP: idle threads spin for about 0.1 ms, then sleep. A decoding step is many
    short parallel regions. Never spinning (PASSIVE) makes each one wake a sleeping
    thread; spinning until the next (libgomp's default, 300,000 spins) wastes the time
    slice of a thread whose partner was descheduled on a busy CPU. Measured with 2
    threads on 2 cores (issue 10), beam 5 / greedy sentences/s: quiet, PASSIVE 64-76 /
    232-255, 0.1 ms 90-93 / 275-283; beside two busy processes, PASSIVE 33-38 / 98-157,
    0.1 ms 28-37 / 86-112, libgomp's default 7-9 (greedy, at load 6). Training at 2
    threads, quiet: 0.1 ms 3-7% more tokens/s than PASSIVE.

    oneDNN (translate's packed linears): a kernel is compiled and cached for every
    number of rows a batch has, and both caches default to 1,024 entries; translating
    4,000 lines grew the peak RSS from 778 to 953 MB (480 MB flat without oneDNN). At
    64 entries it peaked at 672 MB, as fast within the noise of the machine, and
    20,000 lines reached 758 MB by line 8,000 and stayed there.

    Training keeps oneDNN's default of 1,024 entries. On a CPU with AVX-512 or AMX,
    torch runs bf16 matmuls through oneDNN, a compiled kernel for each shape, and one
    update of transformer-small makes about 100 matmul calls (forward, and backward for
    inputs and weights, of every linear layer: 102 counted with torch.profiler, issue 28).
    With 64 entries none of them survived until the next update, so every bf16 update
    under `mtkit train` compiled every kernel again (a plain autocast loop, outside the
    CLI, kept the default: one of the differences behind issue 28's 1.4x against 0.99x).
    """
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.environ["GOMP_SPINCOUNT"] = str(IDLE_SPINS)
    capacity = TRAIN_ONEDNN_CACHE if command == "train" else ONEDNN_CACHE
    for key in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        os.environ.setdefault(key, str(capacity))


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


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (the first `flags` line of /proc/cpuinfo, or the
    MTKIT_CPU_FLAGS environment variable where set); empty where there is no such file
    (not Linux) or no such line."""
    if CPU_FLAGS_ENV in os.environ and cpuinfo == "/proc/cpuinfo":
        return frozenset(os.environ[CPU_FLAGS_ENV].split())
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as file:
            for line in file:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_model_name(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name from /proc/cpuinfo, else platform's guess."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


# The flags a machine line names beside a speed figure: the vector and matrix units
# that decide fp32's, bf16's and int8's speed.
DESCRIBED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def describe_cpu(cpuinfo: str = "/proc/cpuinfo") -> str:
    """One line naming the machine for a speed figure: "AMD EPYC, 2 CPUs, avx2"."""
    flags = cpu_flags(cpuinfo)
    units = " ".join(flag for flag in DESCRIBED_FLAGS if flag in flags) or "no AVX2"
    return f"{cpu_model_name(cpuinfo)}, {os.cpu_count()} CPUs, {units}"


def cpu_features(flags: frozenset[str] | set[str] | None = None) -> set[str]:
    """Which of CPU_FEATURES the CPU has (`flags`: a CPU's flags; default: this one's)."""
    return set(CPU_FEATURES) & set(cpu_flags() if flags is None else flags)


def has_amx(flags: frozenset[str] | set[str]) -> bool:
    """Whether flags say the CPU has AMX's bf16 matrix units (tiles and the bf16 op)."""
    return {"amx_bf16", "amx_tile"} <= set(flags)


def auto_cpu_precision(command: str, flags: frozenset[str] | set[str] | None = None) -> str:
    """`--precision auto` on the CPU for `command`: bf16 where AMX makes it faster (see
    AUTO_BF16_ON_AMX), else fp32. `flags` default to this CPU's."""
    flags = cpu_flags() if flags is None else flags
    return "bf16" if command in AUTO_BF16_ON_AMX and has_amx(flags) else "fp32"


def pick_precision(
    precision: str, device, *, command: str = "", flags: frozenset[str] | None = None
) -> str:
    """The precision to run in: what was asked, or for `auto` bf16 on a GPU that has it
    (fp16 otherwise) and on the CPU `auto_cpu_precision(command, flags)`, said in one
    log line."""
    import torch

    check_choice("--precision", precision, PRECISIONS)
    if precision == "auto":
        if device.type != "cuda":
            chosen = auto_cpu_precision(command, flags)
            amx = has_amx(cpu_flags() if flags is None else flags)
            if command in AUTO_BF16_ON_AMX:
                log.info(f"{chosen}: this CPU has {'' if amx else 'no '}AMX")
            return chosen
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
