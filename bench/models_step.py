"""Model microbenchmark: training tokens/s and decode-step time, against a matmul's FLOP/s.

Random token ids in Multi30k-like shapes (about 4,000 target tokens a batch,
sentences of 16 pieces, a vocabulary of 8,000), no data loading, no optimizer:
the figures are the models' own. The achieved FLOP/s counts the matmuls
(projections, attention, output layer; x3 for forward+backward) and is printed as
a fraction of a plain matmul of a similar shape timed in the same run, as the
shared machine's speed drifts. `python -m bench models_step`; MTKIT_BENCH_THREADS
(default 2) and MTKIT_BENCH_DEVICE (default cuda when there is one, else cpu).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time

from bench.common import print_machine, sync

SRC_LEN = TGT_LEN = 16
BATCH = 256  # x16 = 4,096 target tokens
BEAM_BATCH = 150  # beam 5 x 30 sentences
DECODE_STEPS = 30


def main() -> None:
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("MTKIT_BENCH_THREADS", "2")))
    device = os.environ.get("MTKIT_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device == "cuda" else None
    peak = matmul_flops(device, dtype)
    print_machine()
    print(f"device {device}, {torch.get_num_threads()} threads, autocast {dtype}")
    print(f"matmul [4096,256]x[256,1024]: {peak / 1e9:.1f} GFLOP/s")
    for preset in ("transformer-small", "rnn"):
        model = _model(preset, device)
        seconds = time_training(model, device, dtype)
        flops = training_flops(model.config)
        tokens = BATCH * TGT_LEN
        print(
            f"{preset}: train fwd+bwd {tokens / seconds:,.0f} target tokens/s "
            f"({seconds * 1e3:.0f} ms a batch of {tokens}), "
            f"{flops / seconds / 1e9:.1f} GFLOP/s = {flops / seconds / peak:.0%} of matmul"
        )
        step = time_decoding(model.eval(), device, dtype)
        print(f"{preset}: decode_step B={BEAM_BATCH}: {step * 1e3:.1f} ms a step")


def _model(preset: str, device: str):
    from mtkit.models import build_model
    from mtkit.models.config import preset_config

    return build_model(dataclasses.replace(preset_config(preset), dropout=0.0)).to(device)


def _batch(config, batch: int, device: str):
    import torch

    src = torch.randint(4, config.src_vocab_size, (batch, SRC_LEN), device=device)
    tgt = torch.randint(4, config.tgt_vocab_size, (batch, TGT_LEN), device=device)
    return src, tgt


def _time(fn, device: str, repeats: int) -> float:
    """Median seconds of fn() after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_flops(device: str, dtype) -> float:
    """FLOP/s of a plain [4096,256]x[256,1024] matmul, the shape of an FFN layer."""
    import torch

    a = torch.randn(4096, 256, device=device, dtype=dtype)
    b = torch.randn(256, 1024, device=device, dtype=dtype)
    n = 5 if device == "cpu" else 100

    def run():
        for _ in range(n):
            a @ b

    return 2 * 4096 * 256 * 1024 * n / _time(run, device, repeats=5)


def time_training(model, device: str, dtype) -> float:
    import torch
    import torch.nn.functional as F

    src, tgt = _batch(model.config, BATCH, device)

    def step():
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            logits = model(src, tgt)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), tgt.flatten())
        loss.backward()

    return _time(step, device, repeats=3 if device == "cpu" else 20)


def time_decoding(model, device: str, dtype) -> float:
    """Seconds per decode_step for BEAM_BATCH rows over DECODE_STEPS steps."""
    import torch

    src, tgt = _batch(model.config, BEAM_BATCH, device)

    @torch.inference_mode()
    def decode():
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            state = model.encode(src)
            tokens = torch.full_like(src[:, 0], model.config.bos_id)
            for _ in range(DECODE_STEPS):
                logits, state = model.decode_step(tokens, state)
                tokens = logits.argmax(-1)

    return _time(decode, device, repeats=3) / DECODE_STEPS


def training_flops(config) -> float:
    """Matmul FLOPs of one forward+backward (3x forward) on a BATCH x 16 x 16 batch."""
    D, F, V, S, T = config.d_model, config.d_ff, config.tgt_vocab_size, SRC_LEN, TGT_LEN
    if config.arch == "transformer":
        enc = config.enc_layers * (4 * D * D + 2 * D * F + 2 * S * D)  # a source token
        dec = config.dec_layers * (6 * D * D + 2 * D * F + T * D + 2 * S * D)  # a target token
        cross_kv = config.dec_layers * 2 * D * D  # a source token
        per_sentence = S * (enc + cross_kv) + T * (dec + D * V)
    else:
        gates = 4 if config.rnn_cell == "lstm" else 3
        enc = config.enc_layers * 2 * gates * (D // 2) * (D + D // 2)  # both directions
        dec = gates * D * 3 * D + (config.dec_layers - 1) * gates * D * 2 * D
        attention = 2 * S * D + 2 * D * D  # scores, context, combine
        per_sentence = S * (enc + D * D) + T * (dec + attention + D * V)
    return 3 * 2 * BATCH * per_sentence


if __name__ == "__main__":
    main()
