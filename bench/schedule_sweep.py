"""The CPU recipe's settings under a time budget: lr, warm-up, batch size, averaging.

Each setting trains transformer-small on Multi30k de-en as recipes/multi30k.mk's CPU
model does (cosine decaying over --max-time, warm-up ending after --warmup updates or
--warmup-share of the budget, --save-at shares near the end), then averages its last
1, 2, 3 ... numbered checkpoints, translates the validation set (beam 5, the default
search) and scores BLEU and its brevity penalty. The validation set, not test2016: the
settings are chosen here, and test2016 stays unseen.

    python -m bench schedule_sweep --budget 20m --lr 2e-3,1e-3 --warmup 500,250 \\
        --max-tokens 2048,4096 --average 1,2,3 --threads 2 --out sweep/

The settings are the product of the lists, or, with --try (repeatable), exactly the
ones named: --try lr=2e-3,tokens=1024,share=0.15 (keys lr, warmup, share, tokens,
dropout; what a --try leaves out is the first value of its list).

--per-core trains one setting on each core at once, each pinned to its core on one
thread: every setting gets one core's work in its budget, as the recipe does on a
2-core machine with one core busy (train's thread tuner then runs one thread).

Defaults are a smoke-sized sweep (`python -m bench` runs every benchmark): 2 settings of
90 seconds each on 1 thread, BLEU on 300 valid lines: about 5 minutes. The figures of
docs/training-budget.md say which budget made them. --out keeps the runs, and a setting
already trained there is scored again, not retrained. MTKIT_MULTI30K: the data.
"""

from __future__ import annotations

import argparse
import itertools
import os
import queue
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from pathlib import Path

from bench.common import load_line, prepare_multi30k, print_machine, run_mtkit


@dataclass(frozen=True)
class Setting:
    lr: float
    warmup: int
    share: float
    tokens: int
    dropout: float

    @property
    def name(self) -> str:
        return f"lr{self.lr:g}-w{self.warmup}-s{self.share:g}-t{self.tokens}-d{self.dropout:g}"


_PARSE = {"lr": float, "warmup": int, "share": float, "tokens": int, "dropout": float}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench schedule_sweep")
    parser.add_argument("--budget", default="90s", help="--max-time of each run (20m: the recipe)")
    parser.add_argument("--lr", default="2e-3", help="peak learning rates, comma-separated")
    parser.add_argument("--warmup", default="500,100", help="warm-up updates, comma-separated")
    parser.add_argument("--warmup-share", default="0.35", help="warm-up's most of the budget")
    parser.add_argument("--max-tokens", default="2048", help="batch sizes, comma-separated")
    parser.add_argument("--dropout", default="0.1", help="dropout, comma-separated")
    parser.add_argument("--try", dest="tries", action="append", default=[],
                        help="one setting, e.g. lr=2e-3,tokens=1024 (repeat)")  # fmt: skip
    parser.add_argument("--average", default="1,2", help="checkpoints averaged, comma-separated")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--per-core", action="store_true",
                        help="one setting on each core at once, one thread each")  # fmt: skip
    parser.add_argument("--valid-lines", type=int, default=300, help="0: the whole validation set")
    parser.add_argument("--out", default="", help="keep the runs here (default: a temp dir)")
    return parser.parse_args(argv)


def settings(args: argparse.Namespace) -> list[Setting]:
    """The product of the lists, or the --try settings over the lists' first values."""
    lists = {
        "lr": args.lr, "warmup": args.warmup, "share": args.warmup_share,
        "tokens": args.max_tokens, "dropout": args.dropout,
    }  # fmt: skip
    values = {key: [_PARSE[key](x) for x in text.split(",")] for key, text in lists.items()}
    if not args.tries:
        return [Setting(*combo) for combo in itertools.product(*values.values())]
    base = Setting(**{key: vals[0] for key, vals in values.items()})
    chosen = []
    for text in args.tries:
        changes = dict(item.split("=", 1) for item in text.split(",") if item)
        unknown = set(changes) - {f.name for f in fields(Setting)}
        if unknown:
            raise SystemExit(f"--try {text}: unknown key(s) {', '.join(sorted(unknown))}")
        chosen.append(replace(base, **{k: _PARSE[k](v) for k, v in changes.items()}))
    return chosen


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv if argv is not None else sys.argv[1:])
    averages = sorted({int(k) for k in args.average.split(",")})
    chosen = settings(args)
    threads = 1 if args.per_core else args.threads
    layout = "one setting per core at once" if args.per_core else "one setting at a time"
    print_machine(f"load average {os.getloadavg()[0]:.1f}")
    print(f"budget {args.budget} of training a setting, {threads} thread(s), {layout}; "
          "BLEU on valid")  # fmt: skip
    print(
        f"{'lr':>8} {'warmup':>6} {'share':>5} {'tokens':>6} {'drop':>4} {'updates':>7} "
        f"{'avg':>3} {'BLEU':>5} {'BP':>5}"
    )
    printing = threading.Lock()

    def one(setting: Setting, pin: list[str]) -> None:
        run = root / setting.name
        updates = train(data, run, setting, args.budget, threads, pin)
        for k in averages:
            bleu, bp = evaluate(data, run, k, args.valid_lines, threads, pin)
            with printing:
                print(
                    f"{setting.lr:8.1e} {setting.warmup:6d} {setting.share:5.2f} "
                    f"{setting.tokens:6d} {setting.dropout:4.2f} {updates:7d} {k:3d} "
                    f"{bleu:5.1f} {bp:5.3f}",
                    flush=True,
                )

    with tempfile.TemporaryDirectory(prefix="mtkit-sweep-") as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        data = prepare(root / "data")
        if args.per_core:
            run_per_core(chosen, one)
        else:
            for setting in chosen:
                one(setting, [])
    print(load_line("after"))


def run_per_core(chosen: list[Setting], one) -> None:
    """one(setting, pin) for each setting, as many at once as there are cores, each
    pinned (taskset) to a core of its own."""
    cores: queue.Queue[int] = queue.Queue()
    for core in sorted(os.sched_getaffinity(0)):
        cores.put(core)

    def pinned(setting: Setting) -> None:
        core = cores.get()
        try:
            one(setting, ["taskset", "-c", str(core)])
        finally:
            cores.put(core)

    with ThreadPoolExecutor(max_workers=cores.qsize()) as pool:
        for future in [pool.submit(pinned, setting) for setting in chosen]:
            future.result()


def prepare(data: Path) -> Path:
    """Multi30k de-en and its 8,000-piece joint BPE, as the recipe makes them (once)."""
    if not (data / "spm" / "spm.model").exists():
        prepare_multi30k(data, data / "spm")
    return data


def train(data: Path, run: Path, setting: Setting, budget: str, threads: int, pin) -> int:
    """Train one setting (unless done); the updates it made."""
    import torch

    if not (run / "train.done").exists():
        done = run_mtkit(["train", "--data", data, "--spm", data / "spm" / "spm.model",
                          "--out", run, "--device", "cpu", "--threads", threads,
                          "--max-tokens", setting.tokens, "--lr", setting.lr,
                          "--warmup", setting.warmup, "--warmup-share", setting.share,
                          "--set", f"dropout={setting.dropout}",
                          "--schedule", "cosine", "--max-time", budget,
                          "--valid-every", 100_000, "--valid-bleu-sentences", 100,
                          "--keep-last", 4, "--save-at", "0.7,0.8,0.9", "--resume"],
                         pin=pin)  # fmt: skip
        (run / "train.done").write_text(f"{done.seconds:.0f} s\n")
    ckpt = torch.load(run / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    return int(ckpt["step"])


def evaluate(data: Path, run: Path, k: int, lines: int, threads: int, pin) -> tuple[float, float]:
    """BLEU and brevity penalty on valid of the average of the last k checkpoints."""
    import sacrebleu

    avg, hyp = run / f"avg{k}.pt", run / f"valid{lines or ''}.avg{k}.hyp"
    src, ref = data / "valid.de", data / "valid.en"
    if lines:
        src, ref = _head(src, run, lines), _head(ref, run, lines)
    if not hyp.exists():
        run_mtkit(["average", run, "--last", k, "-o", avg], pin=pin)
        run_mtkit(["translate", "-m", avg, "-i", src, "-o", hyp, "--beam", 5, "--device", "cpu",
                   "--threads", threads], pin=pin)  # fmt: skip
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
