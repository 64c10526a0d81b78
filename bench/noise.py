"""Noise in Multi30k's training pairs, and what `mtkit filter` makes of it.

`make_noisy` replaces a share (30%) of Multi30k's training pairs with noise, seeded, in
four kinds, equally often, and records which lines it changed (noise.tsv: line, kind):

    misaligned      the target of another noisy line of this kind (a rotation)
    copy            the German source copied as the target
    wrong_language  the French of the same caption as the target (train.fr)
    truncated       the target cut to the first half of its words

`main` is the simulation of docs/filter.md: the noisy corpus prepared as it is (no
dedup, no ratio filter, so its lines stay the lines noise.tsv numbers), one joint BPE
on it; de-en trained on the noisy corpus (the "noisy" model, also the filter's forward
model) and en-de on it (the backward model); `mtkit filter --keep` the clean share; de-en
trained on the filtered corpus and on the clean one. Every model gets the same budget
with the CPU recipe's settings (recipes/multi30k.mk: 1024-token batches, no dropout,
cosine over --max-time, the last two checkpoints averaged). Printed: test2016 BLEU of
each, sacreBLEU's paired bootstrap of filtered and clean against noisy, and the
filter's precision and recall on the injected noise, overall and by kind.

    python -m bench noise --budget 20m --pairs 0 --test-lines 0 --threads 2 --out bench/out/noise
    python -m bench noise          # smoke: 60 s a model, 5,000 pairs, 200 test lines
    python -m bench noise --memory 20000,200000    # only filter's peak RSS (docs/filter.md)

The full run needs the machine to itself for about an hour and a half (four trainings
of --budget, the scoring of 29,000 pairs twice, three test translations). --out keeps
everything, and a step whose output is there is not run again. MTKIT_MULTI30K: the data.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
from collections import Counter
from pathlib import Path

from bench.common import MULTI30K, load_line, print_machine, read_lines, run_mtkit

KINDS = ("misaligned", "copy", "wrong_language", "truncated")
SEED = 1


def make_noisy(
    out: Path, share: float = 0.3, seed: int = SEED, pairs: int | None = None
) -> dict[int, str]:
    """out/train.de, out/train.en (noisy) and out/noise.tsv (`line<TAB>kind`, lines from
    1) from Multi30k's first `pairs` training pairs (all: None); returns {line: kind}."""
    de = read_lines(MULTI30K / "train.de.gz", pairs)
    en = read_lines(MULTI30K / "train.en.gz", pairs)
    fr = read_lines(MULTI30K / "train.fr.gz", pairs)
    rng = random.Random(seed)
    noisy = rng.sample(range(len(de)), round(share * len(de)))
    kinds = {i: KINDS[n % len(KINDS)] for n, i in enumerate(noisy)}
    targets = list(en)
    misaligned = [i for i in noisy if kinds[i] == "misaligned"]
    for i, other in zip(misaligned, misaligned[1:] + misaligned[:1], strict=True):
        targets[i] = en[other]
    for i, kind in kinds.items():
        if kind == "copy":
            targets[i] = de[i]
        elif kind == "wrong_language":
            targets[i] = fr[i]
        elif kind == "truncated":
            words = en[i].split()
            targets[i] = " ".join(words[: max(1, len(words) // 2)])
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.de").write_text("".join(line + "\n" for line in de), encoding="utf-8")
    (out / "train.en").write_text("".join(line + "\n" for line in targets), encoding="utf-8")
    rows = sorted((i + 1, kind) for i, kind in kinds.items())
    (out / "noise.tsv").write_text("".join(f"{n}\t{k}\n" for n, k in rows), encoding="utf-8")
    return {n: k for n, k in rows}


def precision_recall(kept: list[bool], noise: dict[int, str]) -> dict:
    """The filter's precision and recall on the injected noise (a dropped line is a
    positive), overall and the recall of each kind."""
    dropped = {n for n, keep in enumerate(kept, 1) if not keep}
    caught = dropped & set(noise)
    by_kind = Counter(noise.values())
    caught_by_kind = Counter(noise[n] for n in caught)
    return {
        "dropped": len(dropped),
        "precision": len(caught) / len(dropped) if dropped else 0.0,
        "recall": len(caught) / len(noise) if noise else 0.0,
        "recall_by_kind": {k: caught_by_kind[k] / by_kind[k] for k in KINDS if by_kind[k]},
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench noise", description=__doc__)
    parser.add_argument("--budget", default="60s", help="training time of each model")
    parser.add_argument("--pairs", type=int, default=5000, help="training pairs; 0: all")
    parser.add_argument("--share", type=float, default=0.3, help="share of noisy pairs")
    parser.add_argument("--test-lines", type=int, default=200, help="test2016 lines; 0: all")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here")
    parser.add_argument(
        "--memory", default="", help="only measure filter's peak RSS on these pair counts: "
        "100000,1000000 (Multi30k repeated, tiny random models, one thread)",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import tempfile

    args = parse_args(argv if argv is not None else sys.argv[1:])
    out = args.out or Path(tempfile.mkdtemp(prefix="mtkit-bench-noise-"))
    print_machine(load_line("at the start"))
    if args.memory:
        filter_memory(out, [int(n) for n in args.memory.split(",")])
        return
    noise = make_noisy(out / "text", args.share, SEED, args.pairs or None)
    data = _prepare(out)
    runs = {
        "noisy": _train(data["noisy"], data["spm"], out / "noisy", "de", "en", args),
        "backward": _train(data["noisy"], data["spm"], out / "backward", "en", "de", args),
    }
    keep = round(1 - args.share, 6)
    filtered = out / "data-filtered"
    if not (filtered / "manifest.json").exists():
        run_mtkit(["filter", "--data", data["noisy"], "-f", runs["noisy"], "-b",
                   runs["backward"], "--keep", keep, "-o", filtered, "--threads", args.threads],
                  echo=True)  # fmt: skip
    runs["filtered"] = _train(filtered, data["spm"], out / "filtered", "de", "en", args)
    runs["clean"] = _train(data["clean"], data["spm"], out / "clean", "de", "en", args)
    print(f"budget {args.budget} a model, {args.threads} threads, {len(noise):,} noisy pairs "
          f"of {args.pairs or 29000:,} ({args.share:.0%}), filter --keep {keep}")  # fmt: skip
    _report(out, data["noisy"], runs, noise, keep, args.test_lines)
    print(load_line("at the end"))


def filter_memory(out: Path, sizes: list[int]) -> None:
    """For each n, `mtkit filter --keep 0.8` of n pairs (Multi30k's repeated) with tiny
    random de-en and en-de models (bench.common's TINY, 500 pieces) on one thread: its
    peak RSS and time. The pairs stream in chunks; a share holds 4 bytes a pair."""
    import torch

    from bench.common import TINY, multi30k_spm, random_checkpoint, repeat_lines
    from mtkit.checkpoint import save_checkpoint

    spm = multi30k_spm(out / "tiny-spm", vocab_size=500)
    sizes_500 = {**TINY, "src_vocab_size": 500, "tgt_vocab_size": 500}
    forward = random_checkpoint(out / "de-en.pt", spm, "transformer-small", **sizes_500)
    payload = torch.load(forward, map_location="cpu", weights_only=True)
    payload["langs"] = {"src": "en", "tgt": "de"}
    backward = save_checkpoint(out / "en-de.pt", payload)
    de, en = read_lines(MULTI30K / "train.de.gz"), read_lines(MULTI30K / "train.en.gz")
    for n in sizes:
        text, data, filtered = out / f"text-{n}", out / f"data-{n}", out / f"filtered-{n}"
        text.mkdir(exist_ok=True)
        repeat_lines(text / "train.de", de, n)
        repeat_lines(text / "train.en", en, n)
        run_mtkit(["prepare", "--src", "de", "--tgt", "en", "--out", data, "--no-dedup",
                   "--max-ratio", 0, "--src-file", text / "train.de", "--tgt-file",
                   text / "train.en"])  # fmt: skip
        run = run_mtkit(["filter", "--data", data, "-f", forward, "-b", backward, "--keep", 0.8,
                         "-o", filtered, "--threads", 1, "--device", "cpu"], threads=1)  # fmt: skip
        rate = n / run.seconds
        print(f"memory: filter of {n:,} pairs, peak RSS {run.peak_mb:.0f} MiB, "
              f"{run.seconds:.0f} s ({rate:,.0f} pairs/s; tiny random models, one thread)",
              flush=True)  # fmt: skip


def _head(path: Path, out: Path, n: int) -> Path:
    """The first n lines of `path` (all: 0), as a file in `out`."""
    if not n:
        return path
    head = out / f"{path.name}.head{n}"
    with open(path, encoding="utf-8") as file:
        head.write_text("".join(itertools.islice(file, n)), encoding="utf-8")
    return head


def _count(path: Path) -> int:
    with open(path, "rb") as file:
        return sum(1 for _ in file)


def _prepare(out: Path) -> dict[str, Path]:
    """The noisy and the clean corpus (valid: val, test: test2016) and one BPE on the noisy."""
    pairs = _count(out / "text" / "train.de")
    clean_text = out / "text-clean"
    clean_text.mkdir(exist_ok=True)
    for lang in ("de", "en"):
        lines = read_lines(MULTI30K / f"train.{lang}.gz", pairs)
        (clean_text / f"train.{lang}").write_text("".join(x + "\n" for x in lines), "utf-8")
    corpora = {"noisy": out / "text", "clean": clean_text}
    data = {}
    for name, text in corpora.items():
        data[name] = out / f"data-{name}"
        if (data[name] / "manifest.json").exists():
            continue
        files = ["--src-file", text / "train.de", "--tgt-file", text / "train.en"]
        for split, stem in (("valid", "val"), ("test", "test_2016_flickr")):
            files += [f"--{split}-src-file", MULTI30K / f"{stem}.de.gz",
                      f"--{split}-tgt-file", MULTI30K / f"{stem}.en.gz"]  # fmt: skip
        run_mtkit(["prepare", "--src", "de", "--tgt", "en", "--out", data[name], "--no-dedup",
                   "--max-ratio", 0, *files], echo=True)  # fmt: skip
    data["spm"] = out / "spm" / "spm.model"
    if not data["spm"].exists():
        run_mtkit(["train-bpe", "--input", data["noisy"] / "train.de", "--input",
                   data["noisy"] / "train.en", "--vocab-size", 8000, "--out", out / "spm"],
                  echo=True)  # fmt: skip
    return data


def _train(data: Path, spm: Path, run: Path, src: str, tgt: str, args) -> Path:
    """The CPU recipe's model on `data` for --budget, its last two checkpoints averaged."""
    average = run / "checkpoint_avg.pt"
    if average.exists():
        return average
    run_mtkit(["train", "--data", data, "--spm", spm, "--src", src, "--tgt", tgt, "--out", run,
               "--device", "cpu", "--threads", args.threads, "--arch", "transformer-small",
               "--max-tokens", 1024, "--set", "dropout=0", "--lr", "2e-3", "--warmup", 500,
               "--warmup-share", 0.35, "--schedule", "cosine", "--max-time", args.budget,
               "--max-epochs", 1000, "--valid-every", 100_000, "--valid-bleu-sentences", 100,
               "--keep-last", 2, "--save-at", 0.9, "--resume"], echo=True)  # fmt: skip
    run_mtkit(["average", run, "--last", 2, "-o", average], echo=True)
    return average


def _report(out: Path, noisy: Path, runs: dict, noise: dict[int, str], keep, test_lines) -> None:
    from mtkit.filter.select import Selection, kept_lines
    from mtkit.score import ReportOptions, SignificanceOptions, score_files

    as_json = ReportOptions(as_json=True)

    source, ref = (_head(noisy / f"test.{lang}", out, test_lines) for lang in ("de", "en"))
    hyps = {}
    for name in ("noisy", "filtered", "clean"):
        hyps[name] = out / f"test{test_lines or ''}.{name}.en"
        if not hyps[name].exists():
            run_mtkit(["translate", "-m", runs[name], "-i", source, "-o", hyps[name],
                       "--beam", 5, "--device", "cpu"], echo=True)  # fmt: skip
    systems = [hyps[name] for name in ("noisy", "filtered", "clean")]
    tests = SignificanceOptions(paired_bs=True)
    table = json.loads(score_files([ref], systems, tests=tests, report=as_json))
    print(f"{'model':>9} {'BLEU':>5} {'p vs noisy':>10}  (sacreBLEU's paired bootstrap)")
    for name, row in zip(("noisy", "filtered", "clean"), table, strict=True):
        bleu = row["BLEU"]
        p = "" if bleu["p_value"] is None else f"{bleu['p_value']:.4f}"
        print(f"{name:>9} {bleu['score']:5.1f} {p:>10}")
    lines = _count(noisy / "train.de")
    kept = list(kept_lines(out / "data-filtered" / "train.scores", lines, Selection(keep=keep)))
    figures = precision_recall(kept, noise)
    print(f"filter: dropped {figures['dropped']:,}, precision {figures['precision']:.3f}, "
          f"recall {figures['recall']:.3f}; recall by kind: "
          + ", ".join(f"{k} {v:.3f}" for k, v in figures["recall_by_kind"].items()))  # fmt: skip


if __name__ == "__main__":
    main()
