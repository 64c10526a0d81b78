"""Training speed: target tokens/s, model FLOP/s and peak memory of whole `mtkit train` updates.

Real Multi30k de-en text with an 8,000-piece joint BPE trained on the fly (or the
data and SentencePiece model of a run already prepared: --data, --spm), batches of
about 4,000 tokens from mtkit's length buckets, the real update (collate, forward,
fused label-smoothed loss, backward, clipping, Adam) of each --arch (default
transformer-small and rnn), each in a fresh process so its peak memory is its own:
RSS on the CPU, torch.cuda.max_memory_allocated on a GPU.

The model's achieved FLOP/s is `model_flops` (6 x parameters x tokens plus
attention, over real tokens only). It is printed as a fraction of a plain matmul of
the model's shapes timed in the same process, as the shared machine's speed drifts
(compare figures within one run), and on a GPU also as MFU: over the GPU's dense
bf16 peak (`GPU_PEAK_BF16`).

--precision fp32,bf16 measures A-B-A (fp32, bf16, fp32 again) per model, each in its
own process, and prints bf16's speed over the mean of the two fp32 runs. With
--updates N --valid every run makes the same N updates from the same weights and then
measures the validation NLL, so bf16's can be set against fp32's (the two fp32 runs
repeat one computation; the noise to weigh a difference against is another seed's).

Options (`python -m bench train_speed --help`); their defaults come from the
environment: MTKIT_BENCH_SECONDS (timed seconds a model, default 40),
MTKIT_BENCH_THREADS (default 2), MTKIT_BENCH_DEVICE (default cuda when there is one,
else cpu), MTKIT_MULTI30K (the data).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from bench.common import (
    MULTI30K,
    in_fresh_process,
    load_line,
    peak_rss_mb,
    print_machine,
    read_lines,
    sync,
)

MODELS = ("transformer-small", "rnn")
MAX_TOKENS = 4000
VOCAB = 8000
WARMUP_UPDATES = {"cpu": 1, "cuda": 5}  # untimed updates first (allocator, kernels)
COMPILE_WARMUP_UPDATES = 10  # torch.compile: recompiles for new shapes settle down first
MIN_UPDATES = 3

# Dense bf16 tensor-core peaks (FLOP/s, no sparsity) from NVIDIA's data sheets, by a
# piece of torch.cuda.get_device_name(); the first match wins, so the longer names
# come first. The H100 figure is the SXM part's; the PCIe card is slower.
GPU_PEAK_BF16 = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10", 125e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
)


def gpu_peak(name: str) -> float | None:
    """The dense bf16 peak FLOP/s of the GPU called `name`, or None when unknown."""
    return next((peak for key, peak in GPU_PEAK_BF16 if key in name), None)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench train_speed")
    env = os.environ.get
    parser.add_argument(
        "--arch", action="append", help="a preset (repeat); default: " + ", ".join(MODELS)
    )
    parser.add_argument("--seconds", type=float, default=float(env("MTKIT_BENCH_SECONDS", "40")))
    parser.add_argument("--threads", type=int, default=int(env("MTKIT_BENCH_THREADS", "2")))
    parser.add_argument("--device", default=env("MTKIT_BENCH_DEVICE", "auto"))
    parser.add_argument(
        "--precision", default="auto", help="auto, fp32, bf16, fp16, or fp32,bf16 for A-B-A"
    )
    parser.add_argument("--compile", action="store_true", help="train with --compile")
    parser.add_argument(
        "--updates", type=int, default=0, help="time exactly this many updates (not --seconds)"
    )
    parser.add_argument(
        "--valid", action="store_true", help="then the validation loss (compare precisions)"
    )
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS)
    parser.add_argument(
        "--data", help="a prepared data directory (default: Multi30k, prepared here)"
    )
    parser.add_argument("--spm", help="its joint SentencePiece model (with --data)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="model settings (tiny runs)"
    )
    parser.add_argument("--summary", action="store_true", help="also one 'RESULT:' line a model")
    args = parser.parse_args(argv)
    if bool(args.data) != bool(args.spm):
        parser.error("--data and --spm go together")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print_machine()
    with tempfile.TemporaryDirectory(prefix="mtkit-bench-") as tmp:
        if args.data and Path(args.data, "manifest.json").exists() and Path(args.spm).exists():
            data, spm = Path(args.data), Path(args.spm)
        else:
            data, spm = prepare(Path(tmp))
        print(load_line("before") + " (a shared machine: compare figures within one run)")
        precisions = args.precision.split(",")
        # A-B-A: the first precision again at the end, so drift shows.
        order = precisions + precisions[:1] if len(precisions) > 1 else precisions
        for arch in args.arch or MODELS:
            results = []
            for precision in order:
                job = Job(arch, str(data), str(spm), tmp, precision, args)
                result = in_fresh_process(measure, job)  # its peak memory its own
                print(report(result), flush=True)
                if args.summary:
                    print("RESULT: " + summary(result), flush=True)
                results.append(result)
            if len(results) > 1:
                print(ratios(results), flush=True)
        print(load_line("after"))


class Job:
    """What one measuring process does (picklable for the spawned process)."""

    def __init__(self, arch, data, spm, tmp, precision, args) -> None:
        self.arch, self.data, self.spm, self.tmp, self.precision = arch, data, spm, tmp, precision
        self.seconds, self.threads, self.device = args.seconds, args.threads, args.device
        self.compile, self.max_tokens, self.assignments = args.compile, args.max_tokens, args.set
        self.updates, self.valid = args.updates, args.valid


def prepare(tmp: Path) -> tuple[Path, Path]:
    """Multi30k de-en as `prepare` lays it out, and a joint 8,000-piece BPE."""
    from mtkit.console import setup_logging
    from mtkit.tokenizer import SpmOptions, train_spm

    setup_logging()
    data = tmp / "data"
    data.mkdir()
    for split, name in (("train", "train"), ("valid", "val")):
        for lang in ("de", "en"):
            lines = read_lines(MULTI30K / f"{name}.{lang}.gz")
            (data / f"{split}.{lang}").write_text("".join(f"{x}\n" for x in lines), "utf-8")
    (data / "manifest.json").write_text(json.dumps({"langs": {"src": "de", "tgt": "en"}}))
    (spm,) = train_spm(
        [data / "train.de", data / "train.en"], tmp / "spm", SpmOptions(vocab_size=VOCAB)
    )
    return data, spm


def measure(job: Job) -> dict:
    """Time real updates of `job.arch` for about `job.seconds`; runs in its own process."""
    import torch

    trainer, device = _trainer(job)
    start_rss = peak_rss_mb()
    order = trainer._epoch_share(1)
    warmup = COMPILE_WARMUP_UPDATES if job.compile else WARMUP_UPDATES.get(device, 1)
    compile_began = time.perf_counter()
    for b in order[:warmup]:
        trainer.train_step([b])
    sync(device)
    warmup_seconds = time.perf_counter() - compile_began
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    counts, elapsed = _timed_updates(trainer, order[warmup:], job, device)
    valid = _valid_nll(trainer) if job.valid else None
    name = torch.cuda.get_device_name(trainer.dist.device) if device == "cuda" else ""
    return {
        "arch": job.arch,
        "device": str(trainer.dist.device),
        "device_name": name,
        "peak_flops": gpu_peak(name) if name else None,
        "threads": torch.get_num_threads(),
        "precision": trainer.precision,
        "compile": job.compile,
        "warmup_updates": warmup,
        "warmup_seconds": warmup_seconds,
        "params": sum(p.numel() for p in trainer.raw.parameters()),
        "seconds": elapsed,
        "valid_nll": valid,
        **counts,
        "matmul_flops": matmul_flops(trainer.model_config, device, trainer.precision),
        "start_rss_mb": start_rss,
        "peak_mb": (torch.cuda.max_memory_allocated() / 2**20)
        if device == "cuda"
        else peak_rss_mb(),
    }


def _trainer(job: Job):
    """The run's Trainer, built as `mtkit train` builds it, and the device it runs on."""
    import torch

    from mtkit import distributed
    from mtkit.train import TrainConfig
    from mtkit.train.config import model_overrides
    from mtkit.train.setup import build_trainer

    device = job.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    config = TrainConfig(
        data=job.data,
        spm=job.spm,
        out=f"{job.tmp}/run-{job.arch}-{job.precision}-{time.monotonic_ns()}",
        arch=job.arch,
        model_overrides=model_overrides(None, job.assignments),
        max_tokens=job.max_tokens,
        threads=job.threads,
        device=device,
        precision=job.precision,
        compile=job.compile,
        warmup=4000,
    )
    return build_trainer(config, distributed.setup(device)), device


def _timed_updates(trainer, order: list, job: Job, device: str) -> tuple[dict, float]:
    """Updates over `order` until job.updates, or job.seconds and MIN_UPDATES: what they
    counted (_count) and their seconds."""
    counts = {"updates": 0, "tgt_tokens": 0, "padded": 0, "longer_side": 0, "flops": 0.0}
    began = time.perf_counter()
    for b in order:
        trainer.train_step([b])
        _count(counts, trainer, b)
        if job.updates:
            if counts["updates"] >= job.updates:
                break
        elif time.perf_counter() - began >= job.seconds and counts["updates"] >= MIN_UPDATES:
            break
    sync(device)
    return counts, time.perf_counter() - began


def _valid_nll(trainer) -> float:
    """The validation set's NLL per target token after the timed updates, in the run's
    precision (the same seed, weights and batch order in every run: only the precision
    differs between runs of the same --updates)."""
    return trainer.evaluate(bleu_sentences=1)["valid_nll_loss"]


def _count(counts: dict, trainer, b: int) -> None:
    import torch

    index = trainer.batches[b]
    src = torch.from_numpy(trainer.data.train.src.lengths()[index] + 1)
    tgt = torch.from_numpy(trainer.data.train.tgt.lengths()[index] + 1)
    counts["updates"] += 1
    counts["tgt_tokens"] += int(tgt.sum())
    counts["padded"] += len(index) * int(max(src.max(), tgt.max()))
    counts["longer_side"] += int(src.maximum(tgt).sum())
    counts["flops"] += model_flops(trainer.raw, trainer.model_config, src, tgt)


def model_flops(model, config, src, tgt) -> float:
    """Training FLOPs of one batch over its real tokens (src, tgt: lengths with eos/bos).

    The count behind every MFU figure here, after Kaplan et al. (2020), "Scaling Laws
    for Neural Language Models", sec. 2.1, and Chowdhery et al. (2022), "PaLM",
    appendix B: a weight matrix costs 2 FLOPs a token per parameter forward and 4
    backward, so 6 x the matmul parameters x tokens (the encoder's per source token,
    the decoder's per target token, the output projection counted although it is
    the tied embedding; embedding lookups are free), plus attention, whose QK^T and
    AV are 2 x 2 x len_q x len_k x D FLOPs forward, x3 with backward: 12 x D x
    len_q x len_k per attention layer (self-attention on each side, cross-attention
    in the decoder). Padding is not counted: it is work done, not model FLOPs.
    """
    encoder = decoder = 0
    for name, parameter in model.named_parameters():
        if parameter.dim() != 2 or "embed" in name:
            continue
        if name.startswith("encoder"):
            encoder += parameter.numel()
        else:
            decoder += parameter.numel()
    decoder += config.tgt_vocab_size * config.d_model  # the output layer (the tied embedding)
    S, T = src.double(), tgt.double()
    flops = 6 * (encoder * S.sum() + decoder * T.sum())
    D = config.d_model
    if config.arch == "transformer":
        attention = config.enc_layers * (S * S).sum()
        attention += config.dec_layers * ((T * T).sum() + (T * S).sum())
    else:
        attention = (T * S).sum()
    return float(flops + 12 * D * attention)


def matmul_flops(config, device: str, precision: str = "fp32") -> float:
    """FLOP/s of plain matmuls of the model's shapes: [4000, D] x [D, F] and [D, V], in the
    dtype the training's autocast computes them in."""
    import torch

    from mtkit.device import dtype_of

    dtype = dtype_of(precision)
    D = config.d_model
    wide = config.d_ff if config.arch == "transformer" else 4 * D  # FFN, or the LSTM gates
    best = 0.0
    for n in (wide, config.tgt_vocab_size):
        a = torch.randn(MAX_TOKENS, D, device=device, dtype=dtype)
        b = torch.randn(D, n, device=device, dtype=dtype)
        a @ b
        repeats = 5 if device == "cpu" else 50
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync(device)
        best = max(best, 2 * MAX_TOKENS * D * n * repeats / (time.perf_counter() - start))
    return best


def report(r: dict) -> str:
    rate = r["flops"] / r["seconds"]
    memory = "peak GPU memory" if r["device"].startswith("cuda") else "peak RSS"
    mfu = ""
    if r["peak_flops"]:
        mfu = f"MFU {rate / r['peak_flops']:.1%} of {r['device_name']}'s bf16 peak; "
    elif r["device_name"]:
        mfu = f"MFU unknown ({r['device_name']} is not in GPU_PEAK_BF16); "
    compiled = (
        f", --compile ({r['warmup_updates']} warm-up updates took {r['warmup_seconds']:.0f} s)"
        if r["compile"]
        else ""
    )
    return (
        f"{r['arch']}: {r['tgt_tokens'] / r['seconds']:,.0f} target tokens/s on {r['device']} "
        f"({r['precision']}{compiled}, {r['threads']} threads; {r['updates']} updates of "
        f"{r['tgt_tokens'] / max(r['updates'], 1):,.0f} target tokens in {r['seconds']:.1f} s, "
        f"padding {r['padded'] / max(r['longer_side'], 1) - 1:.1%}), "
        f"{r['params'] / 1e6:.1f} M parameters; model {rate / 1e9:.1f} GFLOP/s = {mfu}"
        f"{rate / r['matmul_flops']:.0%} of matmul ({r['matmul_flops'] / 1e9:.1f} GFLOP/s); "
        f"{memory} {r['peak_mb']:,.0f} MB (RSS {r['start_rss_mb']:,.0f} MB after set-up)"
        + (f"; valid NLL {r['valid_nll']:.4f}" if r["valid_nll"] is not None else "")
    )


def summary(r: dict) -> str:
    """One short line for bench/gpu.sh's table."""
    rate = r["flops"] / r["seconds"]
    if r["peak_flops"]:
        flops = f"MFU {rate / r['peak_flops']:.1%} ({rate / 1e12:.1f} TFLOP/s)"
    else:
        flops = f"{rate / 1e9:.1f} GFLOP/s (MFU: no GPU peak known)"
    memory = "peak GPU mem" if r["device"].startswith("cuda") else "peak RSS"
    return (
        f"{r['tgt_tokens'] / r['seconds']:,.0f} tgt tok/s, {flops}, "
        f"{memory} {r['peak_mb'] / 1024:.2f} GiB, {r['precision']}, {r['updates']} updates"
    )


def ratios(results: list[dict]) -> str:
    """A-B-A: each later precision's speed over the mean of the first one's runs."""

    def speed(r):
        return r["tgt_tokens"] / r["seconds"]

    base = [speed(r) for r in results if r["precision"] == results[0]["precision"]]
    reference = sum(base) / len(base)
    parts = [
        f"{r['precision']} {speed(r) / reference:.2f}x"
        for r in results
        if r["precision"] != results[0]["precision"]
    ]
    drift = max(base) / min(base) - 1
    return (
        f"{results[0]['arch']}: {', '.join(parts)} of {results[0]['precision']} "
        f"(mean of {len(base)} runs, which differ by {drift:.0%})"
    )


if __name__ == "__main__":
    main()
