"""A longer, randomized crash run: real `python -m mtkit` processes killed at random moments.

tests/test_crash.py stops each command at named steps; this kills whole pipelines'
commands by time, as a cluster's scheduler or a power cut would: a seeded random stage,
a random moment within its uninterrupted duration (a little past it too), SIGKILL or
SIGTERM, then the promise is checked (every promised file is whole or absent) and, every
other round, the same command runs again to success and must equal the uninterrupted
run's result (train: the same step and weights, through exact resume). Crashes
accumulate in one directory per stage, so reruns meet what earlier crashes left.

    python -m bench crash                          # 24 rounds, seed 0
    python -m bench.crash --rounds 100 --seed 7 --lines 3000
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.common import MULTI30K, TINY, Child, print_machine, read_lines

TINY_SETS = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]


def mtkit(args: list, log: Path) -> Child:
    return Child(args, threads=1, log=log, env={"COLUMNS": "200", "MTKIT_CRASH_AT": None})


def stages(inputs: Path) -> dict:
    """name -> (command for an output directory OUT, promised files under OUT)."""
    raw, ref = inputs / "raw", inputs / "reference"
    spm, run = ref / "train-bpe" / "spm" / "spm.model", ref / "train" / "run"
    return {
        "prepare": (lambda out: ["prepare", "--src", "de", "--tgt", "en", "--out", out / "data",
                                 "--src-file", raw / "train.de", "--tgt-file", raw / "train.en",
                                 "--valid-src-file", raw / "valid.de",
                                 "--valid-tgt-file", raw / "valid.en"],
                    ["data/train.de", "data/train.en", "data/valid.de", "data/valid.en",
                     "data/manifest.json"]),
        "train-bpe": (lambda out: ["train-bpe", "-i", raw / "train.de", "-i", raw / "train.en",
                                   "--vocab-size", "500", "--threads", "1", "-o", out / "spm"],
                      ["spm/spm.vocab", "spm/spm.model"]),
        "train": (lambda out: ["train", "--data", ref / "prepare" / "data", "--spm", spm,
                               "--out", out / "run", *TINY_SETS, "--max-tokens", "800",
                               "--max-updates", "30", "--valid-every", "10", "--keep-last", "3",
                               "--valid-bleu-sentences", "4", "--threads", "1", "--device",
                               "cpu", "--resume"],
                  ["run/checkpoint_last.pt"]),
        "translate": (lambda out: ["translate", "-m", run / "checkpoint_last.pt", "-i",
                                   raw / "valid.de", "-o", out / "out.en", "--beam", "2",
                                   "--chunk-lines", "50", "--threads", "1"],
                      ["out.en"]),
        "average": (lambda out: ["average", run, "--last", "3", "-o", out / "avg.pt"],
                    ["avg.pt"]),
        "export": (lambda out: ["export", "-m", run / "checkpoint_last.pt", "-o", out / "ct2",
                                "--force"],
                   ["ct2"]),
    }  # fmt: skip


def same(path: Path, reference: Path) -> bool:
    """Whole and equal to the uninterrupted run's (a checkpoint: step and weights)."""
    if path.is_dir():
        names = sorted(p.name for p in path.iterdir())
        return names == sorted(p.name for p in reference.iterdir()) and all(
            same(path / n, reference / n) for n in names
        )
    if path.name == "manifest.json":
        mine, theirs = (json.loads(p.read_text()) for p in (path, reference))
        return {**mine, "created": None} == {**theirs, "created": None}
    if path.suffix == ".pt" and path.name.startswith("checkpoint"):
        return same_checkpoint(path, reference)
    return path.read_bytes() == reference.read_bytes()


def same_checkpoint(path: Path, reference: Path) -> bool:
    import torch

    from mtkit.checkpoint import load_checkpoint

    mine, theirs = load_checkpoint(path), load_checkpoint(reference)
    return mine["step"] == theirs["step"] and all(
        torch.equal(v, theirs["model"][k]) for k, v in mine["model"].items()
    )


def whole(path: Path, reference: Path) -> bool:
    """After a kill: train's checkpoint may be an earlier one that must verify; the rest
    must equal the reference."""
    if path.name == "checkpoint_last.pt":
        from mtkit.checkpoint import load_checkpoint

        return load_checkpoint(path)["format"] == "mtkit-checkpoint"  # ChecksumError if not
    return same(path, reference)


def make_inputs(root: Path, lines: int) -> None:
    raw = root / "raw"
    raw.mkdir(parents=True)
    for name, split, n in (("train", "train", lines), ("valid", "val", 200)):
        for lang in ("de", "en"):
            head = read_lines(MULTI30K / f"{split}.{lang}.gz", n)
            (raw / f"{name}.{lang}").write_text("".join(line + "\n" for line in head))


def run_reference(root: Path, table: dict) -> dict:
    """Every stage once, uninterrupted, in pipeline order; returns its durations."""
    durations = {}
    for name, (command, promised) in table.items():
        out = root / "reference" / name
        out.mkdir(parents=True)
        run = mtkit(command(out), out / "log").wait()
        if run.code != 0:
            raise SystemExit(f"the uninterrupted {name} failed: {run.stderr[-2000:]}")
        durations[name] = run.seconds
        missing = [p for p in promised if not (out / p).exists()]
        if missing:
            raise SystemExit(f"the uninterrupted {name} wrote no {missing}")
    return durations


def crash_round(round_, rng, root: Path, table: dict, durations: dict, counts: Counter) -> list:
    """One seeded stage killed at a seeded moment (every other round run again to the
    end); the promises it broke."""
    name = rng.choice(sorted(table))
    command, promised = table[name]
    out, reference = root / "crashed" / name, root / "reference" / name
    out.mkdir(parents=True, exist_ok=True)
    signum = rng.choice([signal.SIGKILL, signal.SIGTERM])
    delay = rng.uniform(0.0, 1.1 * durations[name])
    process = mtkit(command(out), out / "log")
    time.sleep(delay)
    finished = not process.running()
    if not finished:
        process.send_signal(signum)
    code = process.wait().code
    counts[name, "finished first" if finished else signal.Signals(signum).name] += 1
    broken = []
    for path in promised:
        if (out / path).exists() and not whole(out / path, reference / path):
            broken.append(f"round {round_}: {name} {path} not whole after a kill")
    if "Traceback" in (out / "log").read_text(errors="replace"):
        broken.append(f"round {round_}: {name} printed a traceback (exit {code})")
    if round_ % 2 == 1:  # the same command again, to the end
        again = mtkit(command(out), out / "log.rerun").wait().code
        counts[name, "reruns"] += 1
        if again != 0 or not all(same(out / p, reference / p) for p in promised):
            broken.append(f"round {round_}: {name} run again: exit {again} or differs")
    return broken


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench crash")
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lines", type=int, default=3000, help="training pairs")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args()
    print_machine()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="mtkit-crash-"))
    try:
        make_inputs(root, args.lines)
        table = stages(root)
        durations = run_reference(root, table)
        print("uninterrupted: " + ", ".join(f"{k} {v:.1f} s" for k, v in durations.items()))
        counts: Counter = Counter()
        broken = []
        for round_ in range(args.rounds):
            broken += crash_round(round_, rng, root, table, durations, counts)
        print(f"{'stage':<10} {'SIGKILL':>8} {'SIGTERM':>8} {'finished':>9} {'reruns':>7}")
        for name in sorted(table):
            row = [counts[name, key] for key in ("SIGKILL", "SIGTERM", "finished first", "reruns")]
            print(f"{name:<10} {row[0]:>8} {row[1]:>8} {row[2]:>9} {row[3]:>7}")
        if broken:
            raise SystemExit("broken promises:\n" + "\n".join(broken))
        print(f"{args.rounds} rounds (seed {args.seed}): every promise kept")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
