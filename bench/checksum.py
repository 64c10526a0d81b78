"""What verifying a checkpoint's checksum costs at load: a transformer-big checkpoint with
random weights, saved once, then loaded with and without verification.

    python -m bench checksum                  # transformer-big, weights only
    python -m bench.checksum --train-state    # also Adam's two moments (checkpoint_last.pt)
    python -m bench.checksum --arch transformer-base --repeats 5

Loads read a file the page cache already holds (the second load of a run, or right after
a save): the figures are the hash's own cost, not the disk's.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import print_machine


def build_checkpoint(path: Path, arch: str, train_state: bool) -> tuple[int, float]:
    """Save a checkpoint of `arch` with random weights at `path`; returns its parameters
    and the seconds the save spent on the checksum (one thread, as in training)."""
    import dataclasses

    import torch

    from mtkit.checkpoint import save_checkpoint
    from mtkit.models import build_model
    from mtkit.models.config import override, preset_config

    config = override(preset_config(arch), {"src_vocab_size": 32000, "tgt_vocab_size": 32000})
    model = build_model(config)
    payload = {
        "model_config": dataclasses.asdict(config),
        "model": model.state_dict(),
        "spm": {"src": b"-", "tgt": b"-"},  # (empty bytes are not weights_only-safe)
        "langs": {"src": "de", "tgt": "en"},
        "step": 0,
    }
    if train_state:
        state = payload["model"].items()
        moments = {k: (torch.randn_like(v), torch.rand_like(v)) for k, v in state}
        payload["train_state"] = {"optimizer": moments}
    from mtkit.io import content_checksum

    began = time.perf_counter()
    content_checksum(payload, threads=1)
    at_save = time.perf_counter() - began
    save_checkpoint(path, payload)
    return sum(p.numel() for p in model.parameters()), at_save


def time_load(path: Path, verify: bool, repeats: int) -> float:
    from mtkit.checkpoint import load_checkpoint

    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        load_checkpoint(path, verify=verify)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench checksum")
    parser.add_argument("--arch", default="transformer-big")
    parser.add_argument("--train-state", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from mtkit.device import cpu_flags

    print_machine("sha_ni" if "sha_ni" in cpu_flags() else "no sha_ni")  # SHA-256's own unit
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.pt"
        params, at_save = build_checkpoint(path, args.arch, args.train_state)
        size = path.stat().st_size / 1e6
        time_load(path, verify=False, repeats=1)  # into the page cache
        plain = time_load(path, verify=False, repeats=args.repeats)
        checked = time_load(path, verify=True, repeats=args.repeats)
    cost = checked - plain
    print(f"{args.arch}: {params / 1e6:.0f} M parameters, {size:.0f} MB file")
    print(f"load without verification: {plain * 1e3:8.0f} ms")
    print(f"load with verification:    {checked * 1e3:8.0f} ms")
    print(f"verification:              {cost * 1e3:8.0f} ms ({size / max(cost, 1e-9):.0f} MB/s)")
    print(f"checksum at save (1 thread, the writer thread): {at_save * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
