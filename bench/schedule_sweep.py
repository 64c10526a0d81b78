"""The CPU recipe's settings under a time budget: lr, warm-up, batch size, averaging.

Each setting trains transformer-small on Multi30k de-en as recipes/multi30k.mk's CPU
model does (cosine decaying over --max-time, --save-at shares near the end), then
averages its last 1, 2, 3 ... numbered checkpoints, translates the validation set
(beam 5, the default search) and scores BLEU and its brevity penalty. The validation
set, not test2016: the settings are chosen here, and test2016 stays unseen.

    python -m bench schedule_sweep --budget 20m --lr 2e-3,1e-3 --warmup 500,250 \\
        --max-tokens 2048,4096 --average 1,2,3 --threads 2 --out sweep/

Defaults are a smoke-sized sweep (`python -m bench` runs every benchmark): 2 settings of
90 seconds each on 1 thread, BLEU on 300 valid lines: about 5 minutes. The figures of
docs/training-budget.md say which budget made them. --out keeps the runs, and a setting
already trained there is scored again, not retrained. MTKIT_MULTI30K: the data.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MULTI30K = Path(os.environ.get("MTKIT_MULTI30K", REPO.parent / "shared" / "data" / "multi30k"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench schedule_sweep")
    parser.add_argument("--budget", default="90s", help="--max-time of each run (20m: the recipe)")
    parser.add_argument("--lr", default="2e-3", help="peak learning rates, comma-separated")
    parser.add_argument("--warmup", default="500,100", help="warm-up updates, comma-separated")
    parser.add_argument("--max-tokens", default="2048", help="batch sizes, comma-separated")
    parser.add_argument("--average", default="1,2", help="checkpoints averaged, comma-separated")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--valid-lines", type=int, default=300, help="0: the whole validation set")
    parser.add_argument("--out", default="", help="keep the runs here (default: a temp dir)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv if argv is not None else sys.argv[1:])
    averages = sorted({int(k) for k in args.average.split(",")})
    settings = list(
        itertools.product(
            [float(x) for x in args.lr.split(",")],
            [int(x) for x in args.warmup.split(",")],
            [int(x) for x in args.max_tokens.split(",")],
        )
    )
    from mtkit.device import describe_cpu

    print(f"CPU: {describe_cpu()}, load average {os.getloadavg()[0]:.1f}")
    print(f"budget {args.budget} of training a setting, {args.threads} thread(s); BLEU on valid")
    print(f"{'lr':>8} {'warmup':>6} {'tokens':>6} {'updates':>7} {'avg':>3} {'BLEU':>5} {'BP':>5}")
    with tempfile.TemporaryDirectory(prefix="mtkit-sweep-") as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        data = prepare(root / "data")
        for lr, warmup, max_tokens in settings:
            run = root / f"lr{lr:g}-w{warmup}-t{max_tokens}"
            updates = train(data, run, args, lr=lr, warmup=warmup, max_tokens=max_tokens)
            for k in averages:
                bleu, bp = evaluate(data, run, k, args)
                print(
                    f"{lr:8.0e} {warmup:6d} {max_tokens:6d} {updates:7d} {k:3d} "
                    f"{bleu:5.1f} {bp:5.3f}",
                    flush=True,
                )
    print(f"load average after: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def mtkit(*args) -> None:
    command = [sys.executable, "-m", "mtkit", *map(str, args)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def prepare(data: Path) -> Path:
    """Multi30k de-en and its 8,000-piece joint BPE, as the recipe makes them (once)."""
    if (data / "spm" / "spm.model").exists():
        return data
    files = []
    for split, name in (("", "train"), ("valid-", "val")):
        for side, lang in (("src", "de"), ("tgt", "en")):
            files += [f"--{split}{side}-file", MULTI30K / f"{name}.{lang}.gz"]
    mtkit("prepare", "--src", "de", "--tgt", "en", "--out", data, *files)
    mtkit("train-bpe", "--input", data / "train.de", "--input", data / "train.en",
          "--vocab-size", "8000", "--out", data / "spm")  # fmt: skip
    return data


def train(data: Path, run: Path, args, *, lr: float, warmup: int, max_tokens: int) -> int:
    """Train one setting (unless done); the updates it made."""
    import torch

    if not (run / "train.done").exists():
        began = time.monotonic()
        mtkit("train", "--data", data, "--spm", data / "spm" / "spm.model", "--out", run,
              "--device", "cpu", "--threads", args.threads, "--max-tokens", max_tokens,
              "--lr", lr, "--warmup", warmup, "--schedule", "cosine", "--max-time", args.budget,
              "--valid-every", 100_000, "--valid-bleu-sentences", 100, "--keep-last", 4,
              "--save-at", "0.7,0.8,0.9", "--resume")  # fmt: skip
        (run / "train.done").write_text(f"{time.monotonic() - began:.0f} s\n")
    ckpt = torch.load(run / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    return int(ckpt["step"])


def evaluate(data: Path, run: Path, k: int, args) -> tuple[float, float]:
    """BLEU and brevity penalty on valid of the average of the last k checkpoints."""
    import sacrebleu

    avg, hyp = run / f"avg{k}.pt", run / f"valid.avg{k}.hyp"
    src, ref = data / "valid.de", data / "valid.en"
    if args.valid_lines:
        src, ref = _head(src, run, args.valid_lines), _head(ref, run, args.valid_lines)
    if not hyp.exists():
        mtkit("average", run, "--last", k, "-o", avg)
        mtkit("translate", "-m", avg, "-i", src, "-o", hyp, "--beam", 5, "--device", "cpu",
              "--threads", args.threads)  # fmt: skip
    refs = ref.read_text(encoding="utf-8").splitlines()
    hyps = hyp.read_text(encoding="utf-8").splitlines()
    bleu = sacrebleu.corpus_bleu(hyps, [refs])
    return bleu.score, bleu.bp


def _head(path: Path, run: Path, n: int) -> Path:
    out = run / f"{path.name}.head{n}"
    with open(path, encoding="utf-8") as file:
        out.write_text("".join(itertools.islice(file, n)), encoding="utf-8")
    return out


if __name__ == "__main__":
    main()
