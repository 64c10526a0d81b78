"""Training speed: target tokens/s and peak memory of whole `mtkit train` updates.

Real Multi30k de-en text with an 8,000-piece joint BPE trained on the fly,
batches of about 4,000 tokens from mtkit's length buckets, the real update (collate,
forward, fused label-smoothed loss, backward, clipping, Adam) of transformer-small
and rnn, each in a fresh process so its peak memory is its own: RSS on the CPU,
torch.cuda.max_memory_allocated on a GPU (bf16 autocast there).

The model's achieved FLOP/s is an estimate: 6 x (encoder matmul parameters x
source tokens + decoder matmul parameters, output layer included, x target tokens)
plus attention (12 x d_model x length products per layer; forward and backward),
over real tokens only. It is printed as a fraction of a plain matmul of the
model's shapes timed in the same process, as the shared machine's speed drifts:
compare figures within one run. Environment: MTKIT_BENCH_SECONDS (timed seconds a
model, default 40), MTKIT_BENCH_THREADS (default 2), MTKIT_BENCH_DEVICE (default
cuda when there is one, else cpu), MTKIT_MULTI30K (the data).
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import tempfile
import time
from pathlib import Path

MODELS = ("transformer-small", "rnn")
MAX_TOKENS = 4000
VOCAB = 8000
WARMUP_UPDATES = {"cpu": 1, "cuda": 5}  # untimed updates first (allocator, kernels)
MIN_UPDATES = 3
REPO = Path(__file__).resolve().parent.parent
MULTI30K = Path(os.environ.get("MTKIT_MULTI30K", REPO.parent / "shared" / "data" / "multi30k"))


def main() -> None:
    import multiprocessing

    seconds = float(os.environ.get("MTKIT_BENCH_SECONDS", "40"))
    threads = int(os.environ.get("MTKIT_BENCH_THREADS", "2"))
    with tempfile.TemporaryDirectory(prefix="mtkit-bench-") as tmp:
        data, spm = prepare(Path(tmp))
        print(
            f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
            "(a shared machine: compare figures within one run)"
        )
        context = multiprocessing.get_context("spawn")  # a fresh process: its own peak memory
        for arch in MODELS:
            with context.Pool(1) as pool:
                result = pool.apply(measure, (arch, str(data), str(spm), tmp, seconds, threads))
            print(report(result), flush=True)
        print(f"load average after: {os.getloadavg()[0]:.1f}")


def prepare(tmp: Path) -> tuple[Path, Path]:
    """Multi30k de-en as `prepare` lays it out, and a joint 8,000-piece BPE."""
    from mtkit.console import setup_logging
    from mtkit.tokenizer import SpmOptions, train_spm

    setup_logging()
    data = tmp / "data"
    data.mkdir()
    for split, name in (("train", "train"), ("valid", "val")):
        for lang in ("de", "en"):
            with gzip.open(MULTI30K / f"{name}.{lang}.gz", "rt", encoding="utf-8") as file:
                (data / f"{split}.{lang}").write_text(file.read(), encoding="utf-8")
    (data / "manifest.json").write_text(json.dumps({"langs": {"src": "de", "tgt": "en"}}))
    (spm,) = train_spm(
        [data / "train.de", data / "train.en"], tmp / "spm", SpmOptions(vocab_size=VOCAB)
    )
    return data, spm


def measure(arch: str, data: str, spm: str, tmp: str, seconds: float, threads: int) -> dict:
    """Time real updates of `arch` for about `seconds`; runs in its own process."""
    import torch

    from mtkit.train import TrainConfig, distributed
    from mtkit.train.setup import build_trainer

    device = os.environ.get("MTKIT_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
    config = TrainConfig(
        data=data,
        spm=spm,
        out=f"{tmp}/run-{arch}",
        arch=arch,
        max_tokens=MAX_TOKENS,
        threads=threads,
        device=device,
        warmup=4000,
    )
    trainer = build_trainer(config, distributed.setup(device))
    start_rss = _rss_mb()
    order = trainer._epoch_share(1)
    warmup = WARMUP_UPDATES.get(device, 1)
    for b in order[:warmup]:
        trainer.train_step([b])
    _sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    counts = {"updates": 0, "tgt_tokens": 0, "padded": 0, "longer_side": 0, "flops": 0.0}
    began = time.perf_counter()
    for b in order[warmup:]:
        trainer.train_step([b])
        _count(counts, trainer, b)
        if time.perf_counter() - began >= seconds and counts["updates"] >= MIN_UPDATES:
            break
    _sync(device)
    elapsed = time.perf_counter() - began
    return {
        "arch": arch,
        "device": str(trainer.dist.device),
        "threads": torch.get_num_threads(),
        "precision": "bf16" if device == "cuda" else "fp32",
        "params": sum(p.numel() for p in trainer.raw.parameters()),
        "seconds": elapsed,
        **counts,
        "matmul_flops": matmul_flops(trainer.model_config, device),
        "start_rss_mb": start_rss,
        "peak_mb": (torch.cuda.max_memory_allocated() / 2**20) if device == "cuda" else _rss_mb(),
    }


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
    """Training FLOPs of one batch over its real tokens (src, tgt: lengths with eos/bos)."""
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
    # Attention: QK^T and AV are 2 x 2 x len_q x len_k x D forward, x3 with backward.
    D = config.d_model
    if config.arch == "transformer":
        attention = config.enc_layers * (S * S).sum()
        attention += config.dec_layers * ((T * T).sum() + (T * S).sum())
    else:
        attention = (T * S).sum()
    return float(flops + 12 * D * attention)


def matmul_flops(config, device: str) -> float:
    """FLOP/s of plain matmuls of the model's shapes: [4000, D] x [D, F] and [D, V]."""
    import torch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    D = config.d_model
    wide = config.d_ff if config.arch == "transformer" else 4 * D  # FFN, or the LSTM gates
    best = 0.0
    for n in (wide, config.tgt_vocab_size):
        a = torch.randn(MAX_TOKENS, D, device=device, dtype=dtype)
        b = torch.randn(D, n, device=device, dtype=dtype)
        a @ b
        repeats = 5 if device == "cpu" else 50
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        _sync(device)
        best = max(best, 2 * MAX_TOKENS * D * n * repeats / (time.perf_counter() - start))
    return best


def report(r: dict) -> str:
    rate = r["flops"] / r["seconds"]
    memory = "peak GPU memory" if r["device"].startswith("cuda") else "peak RSS"
    return (
        f"{r['arch']}: {r['tgt_tokens'] / r['seconds']:,.0f} target tokens/s on {r['device']} "
        f"({r['precision']}, {r['threads']} threads; {r['updates']} updates of "
        f"{r['tgt_tokens'] / max(r['updates'], 1):,.0f} target tokens in {r['seconds']:.1f} s, "
        f"padding {r['padded'] / max(r['longer_side'], 1) - 1:.1%}), "
        f"{r['params'] / 1e6:.1f} M parameters; model {rate / 1e9:.1f} GFLOP/s = "
        f"{rate / r['matmul_flops']:.0%} of matmul ({r['matmul_flops'] / 1e9:.1f} GFLOP/s); "
        f"{memory} {r['peak_mb']:,.0f} MB (RSS {r['start_rss_mb']:,.0f} MB after set-up)"
    )


def _rss_mb() -> float:
    """This process's peak RSS: VmHWM, which exec resets (ru_maxrss keeps the parent's peak)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
