"""Peak memory of fine-tuning an NLLB-200-distilled-600M-shaped model on the CPU (issue 35).

The real weights cannot be downloaded here, so the model has distilled-600M's shape
with random weights: d_model 1024, 12+12 layers, 16 heads, feed-forward 4096, a
256,206-row tied embedding (615 M parameters), NLLB's settings (pre-norm, ReLU, scaled
embeddings, positions=fairseq), its languages entry and an id table as long as NLLB's
(Multi30k's 8,000 BPE pieces in fairseq's layout, the rest placeholders): memory and
time depend on the shapes only. Each run is `mtkit train --init-from` on Multi30k de-en
for a few updates, fp32 weights and Adam; the parent samples the child's resident
memory every 0.1 s and splits the peak into the updates (until metrics.jsonl holds the
last update) and the checkpoint save at the end (its host copy of weights and Adam).

    python -m bench finetune_memory                          # 1024 and 2048 target tokens
    python -m bench.finetune_memory --max-tokens 512 --updates 2
    python -m bench.finetune_memory --tiny                   # the script itself, in seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import OUT, REPO, in_fresh_process, prepare_multi30k, print_machine

# facebook/nllb-200-distilled-600M's config.json (the numbers that make its memory).
NLLB_600M = dict(d_model=1024, n_heads=16, d_ff=4096, enc_layers=12, dec_layers=12)
NLLB_VOCAB = 256_206
TINY = dict(d_model=64, n_heads=4, d_ff=128, enc_layers=1, dec_layers=1)
GIB = 1 << 30
# Weights, gradients, Adam's two moments (16 bytes a parameter), the save's host copy of
# weights and moments (12 more: 17.2 GB for 615 M) and the activations: `make bench`
# skips the 600M run on a machine with less free.
NEEDS = 20 * GIB


def _available() -> int:
    """MemAvailable of /proc/meminfo, bytes (0 when unknown)."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def nllb_checkpoint(path: Path, spm_path: Path, shape: dict) -> dict:
    """Save a random NLLB-shaped checkpoint at `path`; its parameter count and bytes."""
    import sentencepiece
    import torch

    from mtkit.checkpoint import save_checkpoint
    from mtkit.models import build_model
    from mtkit.models.config import ModelConfig, validate

    spm = spm_path.read_bytes()
    sp = sentencepiece.SentencePieceProcessor(model_proto=spm)
    pieces = [sp.id_to_piece(i) for i in range(4, sp.get_piece_size())]  # past mtkit's 4
    codes = ["deu_Latn", "eng_Latn"]
    table = ["<s>", "<pad>", "</s>", "<unk>", *pieces, *codes, "<mask>"]
    table += [f"<unused{i}>" for i in range(len(table), NLLB_VOCAB)]
    config = validate(
        ModelConfig(
            src_vocab_size=NLLB_VOCAB, tgt_vocab_size=NLLB_VOCAB, pad_id=1, bos_id=2, eos_id=2,
            pre_norm=True, positions="fairseq", activation="relu", scale_embeddings=True,
            dropout=0.1, max_positions=1024, **shape,
        )
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(config)
    parameters = sum(p.numel() for p in model.parameters())
    save_checkpoint(
        path,
        {
            "model_config": dataclasses.asdict(config),
            "model": model.state_dict(),
            "spm": {"src": spm, "tgt": spm},
            "vocab": {"src": table, "tgt": table},
            "langs": {"src": "mul", "tgt": "mul"},
            "languages": {
                "scheme": "nllb",
                "legacy": False,
                "tokens": {c: c for c in codes},
                "directions": [],
                "default": {"src": None, "tgt": None},
            },  # fmt: skip
            "step": 0,
            "epoch": 0,
            "metrics": {},
            "train_config": {"note": "random weights of NLLB-200-distilled-600M's shape"},
        },
    )
    return {"parameters": parameters, "bytes": path.stat().st_size}


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_finetune(ckpt: Path, data: Path, out: Path, max_tokens: int, updates: int, threads: int):
    """`mtkit train --init-from` for `updates` updates: peak RSS (bytes) during the updates
    and during the final save, seconds an update, and the exit code."""
    args = [
        sys.executable, "-m", "mtkit", "train", "--init-from", ckpt, "--data", data,
        "--src-lang", "deu_Latn", "--tgt-lang", "eng_Latn", "--out", out,
        "--max-updates", updates, "--max-tokens", max_tokens, "--warmup", 1, "--lr", 1e-5,
        "--keep-last", 1, "--log-every", 1, "--threads", threads, "--precision", "fp32",
        "--device", "cpu",
    ]  # fmt: skip
    log = out.with_suffix(".log")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as stderr:
        child = subprocess.Popen([str(a) for a in args], stdout=subprocess.DEVNULL, stderr=stderr)
        peaks = {"updates": 0, "save": 0}
        metrics, phase, ends = out / "metrics.jsonl", "updates", {}
        while child.poll() is None:
            if phase == "updates" and _steps(metrics) >= updates:
                phase = "save"
            if phase == "updates" and _steps(metrics) >= 1 and "first" not in ends:
                ends["first"] = time.monotonic()
            if phase == "save" and "last" not in ends:
                ends["last"] = time.monotonic()
            peaks[phase] = max(peaks[phase], _rss_bytes(child.pid))
            time.sleep(0.1)
    per_update = (ends["last"] - ends["first"]) / max(1, updates - 1) if len(ends) == 2 else 0
    return peaks, per_update, child.returncode, log


def _steps(metrics: Path) -> int:
    """The last training step metrics.jsonl holds."""
    try:
        lines = metrics.read_text().splitlines()
    except OSError:
        return 0
    steps = [json.loads(line).get("step", 0) for line in lines if '"train"' in line]
    return max(steps, default=0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-tokens", default="1024,2048", help="comma-separated budgets")
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="a 64-wide model: check the script")
    parser.add_argument("--out", type=Path, default=None, help="default: a temporary directory")
    args = parser.parse_args(argv)
    root = args.out or Path(
        tempfile.mkdtemp(prefix="mtkit-ft-memory-", dir=OUT if OUT.is_dir() else None)
    )
    data, spm = root / "data", root / "spm"
    if not (data / "train.de").is_file():
        prepare_multi30k(data, spm)
    for split in ("valid.de", "valid.en"):  # no validation: the updates and the save alone
        (data / split).unlink(missing_ok=True)
    shape = TINY if args.tiny else NLLB_600M
    if not args.tiny and _available() < NEEDS:
        print(f"skipped: it needs about {NEEDS / GIB:.0f} GiB free, {_available() / GIB:.1f} free")
        return
    ckpt = root / "nllb-shape.pt"
    info = in_fresh_process(nllb_checkpoint, ckpt, spm / "spm.model", shape)
    print_machine(f"threads {args.threads}", f"repo {REPO.name}")
    print(
        f"model: {info['parameters'] / 1e6:.0f} M parameters ({shape}, vocab {NLLB_VOCAB:,}); "
        f"checkpoint {info['bytes'] / GIB:.2f} GiB; fp32 weights + grads + Adam = "
        f"{16 * info['parameters'] / GIB:.1f} GiB"
    )
    print("max_tokens  peak RSS updates  peak RSS save  s/update  exit")
    for max_tokens in (int(x) for x in args.max_tokens.split(",")):
        out = root / f"run-{max_tokens}"
        shutil.rmtree(out, ignore_errors=True)  # a run of an earlier call: start afresh
        peaks, per_update, code, log = run_finetune(
            ckpt, data, out, max_tokens, args.updates, args.threads
        )
        print(
            f"{max_tokens:>10}  {peaks['updates'] / GIB:>13.1f} GiB  "
            f"{peaks['save'] / GIB:>9.1f} GiB  {per_update:>8.1f}  {code}"
            + (f"  (log: {log})" if code else ""),
            flush=True,
        )


if __name__ == "__main__":
    main()
