"""Local copies of Multi30k laid out like hub datasets, for tests and offline recipe runs.

`build_hub_copy` writes a directory that `datasets.load_dataset` reads the way it
reads the hub repository it imitates:

- layout "wmt": like wmt/wmt14 -- PAIR/{train,validation,test}-00000-of-00001.parquet
  with a `translation` struct column {lang: text} and a README.md dataset card
  whose YAML names each pair as a config (card=False leaves the card out); with
  `subsets`, the training rows are cut into one file per subset, named as the WMT
  builders name them, PAIR/train-SUBSET-00000-of-00001.parquet (`prepare --subset`);
- layout "columns": like bentrevett/multi30k -- {train,val,test}.jsonl with one
  column per language;
- layout "saved": a `DatasetDict.save_to_disk` directory with a `translation` column.

From the shell (the WMT recipes then read it through --local-hub / MTKIT_LOCAL_HUB):

    python tests/hubcopy.py --out /tmp/hub --name wmt/wmt14 --pairs de-en,fr-en
    MTKIT_LOCAL_HUB=/tmp/hub make -f recipes/wmt14-en-de.mk SRC=en TGT=de ...
"""

from __future__ import annotations

import argparse
import gzip
import json
from itertools import islice
from pathlib import Path

# Multi30k's file stems for each split, under the split names the hub uses.
SPLIT_FILES = {"train": "train", "validation": "val", "test": "test_2016_flickr"}
COLUMN_FILES = {"train": "train", "validation": "val", "test": "test"}


def read_split(multi30k: Path, split: str, langs: list[str], limit: int | None) -> dict:
    """{lang: [lines]} for one Multi30k split, the first `limit` lines of each."""
    columns = {}
    for lang in langs:
        with gzip.open(multi30k / f"{SPLIT_FILES[split]}.{lang}.gz", "rt", encoding="utf-8") as f:
            columns[lang] = [line.rstrip("\n") for line in islice(f, limit)]
    return columns


def build_hub_copy(
    multi30k: Path,
    out: Path,
    *,
    layout: str = "wmt",
    pairs: tuple[str, ...] = ("de-en",),
    train_lines: int | None = 2000,
    eval_lines: int | None = None,
    card: bool = True,
    subsets: tuple[str, ...] = (),
) -> Path:
    """Write a hub-shaped copy of Multi30k to `out` and return `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    limits = {"train": train_lines, "validation": eval_lines, "test": eval_lines}
    if layout == "wmt":
        _write_wmt(multi30k, out, pairs, limits, card, subsets)
    elif layout == "columns":
        langs = sorted({lang for pair in pairs for lang in pair.split("-")})
        _write_columns(multi30k, out, langs, limits)
    elif layout == "saved":
        _write_saved(multi30k, out, pairs[0].split("-"), limits)
    else:
        raise ValueError(f"unknown layout {layout!r}: wmt, columns or saved")
    return out


def _translation_table(columns: dict):
    import pyarrow as pa

    langs = list(columns)
    rows = [dict(zip(langs, texts, strict=True)) for texts in zip(*columns.values(), strict=True)]
    kind = pa.struct([(lang, pa.string()) for lang in langs])
    return pa.table({"translation": pa.array(rows, type=kind)})


def _write_wmt(multi30k, out, pairs, limits, card, subsets=()) -> None:
    import pyarrow.parquet as pq

    infos, configs = [], []
    for pair in pairs:
        (out / pair).mkdir(exist_ok=True)
        splits = []
        for split, limit in limits.items():
            table = _translation_table(read_split(multi30k, split, pair.split("-"), limit))
            if split == "train" and subsets:  # contiguous parts, one file each
                bounds = [table.num_rows * i // len(subsets) for i in range(len(subsets) + 1)]
                for name, start, end in zip(subsets, bounds, bounds[1:], strict=False):
                    part = table.slice(start, end - start)
                    pq.write_table(part, out / pair / f"train-{name}-00000-of-00001.parquet")
            else:
                pq.write_table(table, out / pair / f"{split}-00000-of-00001.parquet")
            splits.append((split, table.num_rows))
        infos.append(_card_info(pair, splits))
        configs.append(_card_config(pair, [split for split, _ in splits]))
    if card:
        text = "---\ndataset_info:\n" + "".join(infos) + "configs:\n" + "".join(configs) + "---\n"
        (out / "README.md").write_text(text + "\nMulti30k laid out like wmt/wmt14.\n")


def _card_info(pair: str, splits: list[tuple[str, int]]) -> str:
    langs = "".join(f"        - {lang}\n" for lang in pair.split("-"))
    rows = "".join(f"  - name: {name}\n    num_examples: {n}\n" for name, n in splits)
    return (
        f"- config_name: {pair}\n  features:\n  - name: translation\n    dtype:\n"
        f"      translation:\n        languages:\n{langs}  splits:\n{rows}"
    )


def _card_config(pair: str, splits: list[str]) -> str:
    files = "".join(f"  - split: {s}\n    path: {pair}/{s}-*\n" for s in splits)
    return f"- config_name: {pair}\n  data_files:\n{files}"


def _write_columns(multi30k, out, langs, limits) -> None:
    for split, limit in limits.items():
        columns = read_split(multi30k, split, langs, limit)
        with open(out / f"{COLUMN_FILES[split]}.jsonl", "w", encoding="utf-8") as f:
            for texts in zip(*columns.values(), strict=True):
                f.write(json.dumps(dict(zip(langs, texts, strict=True)), ensure_ascii=False) + "\n")


def _write_saved(multi30k, out, langs, limits) -> None:
    import datasets

    datasets.disable_progress_bars()
    parts = {}
    for split, limit in limits.items():
        table = _translation_table(read_split(multi30k, split, langs, limit))
        parts[split] = datasets.Dataset(table)
    datasets.DatasetDict(parts).save_to_disk(str(out))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--multi30k", type=Path, default=Path(__file__).parents[2] / "shared/data/multi30k"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="where to write (OUT/NAME with --name)"
    )
    parser.add_argument(
        "--name", default="", help="hub id to imitate, e.g. wmt/wmt14 (a subdirectory)"
    )
    parser.add_argument("--layout", default="wmt", choices=["wmt", "columns", "saved"])
    parser.add_argument(
        "--pairs", default="de-en", help="comma-separated configs, e.g. de-en,fr-en"
    )
    parser.add_argument("--train-lines", type=int, default=0, help="first N training pairs; 0: all")
    parser.add_argument(
        "--subsets", default="", help="comma-separated training subsets (one file each)"
    )
    args = parser.parse_args(argv)
    target = args.out / args.name if args.name else args.out
    build_hub_copy(
        args.multi30k,
        target,
        layout=args.layout,
        pairs=tuple(args.pairs.split(",")),
        train_lines=args.train_lines or None,
        subsets=tuple(s for s in args.subsets.split(",") if s),
    )
    print(target)


if __name__ == "__main__":
    main()
