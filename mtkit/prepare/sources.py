"""Where a parallel corpus comes from: the hub, a local copy of a hub dataset, or text files.

Owns turning the user's source options into a `Source`: for each output split
(train, valid, test) an iterator of batches `(src_lines, tgt_lines)` in the
direction the user chose, plus a description for the manifest. Every
`datasets` source (hub, local hub-shaped directory, `save_to_disk`) goes through
`dataset_batches`, which reads Arrow batches and takes either WMT's
`translation` dict column or one column per language. Plain text and TSV files
are read line by line into the same batches (datasets' Python-generator path
costs 3-140 µs a pair, 10-100 times the reading itself). Cleaning is
`mtkit.prepare.cleaning`; writing is `mtkit.prepare.pipeline`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from itertools import chain, islice
from pathlib import Path
from typing import Any

from mtkit.errors import ConfigError, DataError
from mtkit.io import open_binary, text_lines

log = logging.getLogger(__name__)

LineBatch = tuple[list[str], list[str]]
SPLITS = ("train", "valid", "test")
BATCH_SIZE = 1000

_WMT_EN = ("cs-en", "de-en", "fi-en", "fr-en", "hi-en", "ro-en", "ru-en", "tr-en")
# Short names -> (hub id, the configs it offers). Configs are named "xx-en"
# whichever way one translates; --pair en-de finds de-en.
SHORT_NAMES: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "wmt14": ("wmt/wmt14", ("cs-en", "de-en", "fr-en", "hi-en", "ru-en")),
    "wmt15": ("wmt/wmt15", ("cs-en", "de-en", "fi-en", "fr-en", "ru-en")),
    "wmt16": ("wmt/wmt16", ("cs-en", "de-en", "fi-en", "ro-en", "ru-en", "tr-en")),
    "wmt17": ("wmt/wmt17", ("cs-en", "de-en", "fi-en", "lv-en", "ru-en", "tr-en", "zh-en")),
    "wmt18": (
        "wmt/wmt18",
        ("cs-en", "de-en", "et-en", "fi-en", "kk-en", "ru-en", "tr-en", "zh-en"),
    ),
    "wmt19": (
        "wmt/wmt19",
        ("cs-en", "de-en", "fi-en", "gu-en", "kk-en", "lt-en", "ru-en", "zh-en", "fr-de"),
    ),
    "multi30k": ("bentrevett/multi30k", None),  # columns "en" and "de"
}
# The training subsets the hub's WMT builder scripts (wmt_utils.py) name per pair: WMT
# systems weight them apart, so `prepare --subset NAME` writes each as its own corpus.
WMT_SUBSETS: dict[tuple[str, str], tuple[str, ...]] = {
    ("wmt14", "de-en"): ("europarl_v7", "commoncrawl", "newscommentary_v9"),
    ("wmt14", "fr-en"): ("europarl_v7", "commoncrawl", "multiun", "newscommentary_v9", "gigafren"),
    ("wmt14", "cs-en"): ("europarl_v7", "commoncrawl", "newscommentary_v9", "czeng_10"),
    ("wmt14", "ru-en"): ("commoncrawl", "newscommentary_v9", "yandexcorpus", "wikiheadlines_ru"),
    ("wmt14", "hi-en"): ("hindencorp_01",),
    ("wmt16", "de-en"): ("europarl_v7", "commoncrawl", "newscommentary_v11"),
    ("wmt16", "ro-en"): ("europarl_v8_16", "setimes_2"),
    ("wmt17", "de-en"): ("europarl_v7", "commoncrawl", "newscommentary_v12", "rapid_2016"),
    ("wmt17", "zh-en"): (
        "newscommentary_v12", "uncorpus_v1", "casia2015", "casict2011", "casict2015",
        "datum2015", "datum2017", "neu2017",
    ),
}  # fmt: skip
# Source split names that become valid and test on disk unless --valid-split/--test-split say.
SPLIT_ALIASES = {
    "train": ("train",),
    "valid": ("validation", "valid", "dev", "val", "development"),
    "test": ("test",),
}
_OFFLINE_HINT = (
    "on an offline machine use a local copy with --dataset PATH (or --local-hub DIR), "
    "or text files with --src-file/--tgt-file"
)
_PAIR_DIR = re.compile(r"^[A-Za-z]{2,3}(?:[_-][A-Za-z]+)?-[A-Za-z]{2,3}(?:[_-][A-Za-z]+)?$")


@dataclass
class SplitStream:
    """One split ready to read: batches of (src, tgt) lines, and how many pairs if known."""

    source_split: str
    batches: Iterator[LineBatch]
    total: int | None = None


@dataclass
class Source:
    """A corpus opened for reading, in the user's direction (src -> tgt)."""

    src: str
    tgt: str
    description: dict[str, Any]
    splits: dict[str, SplitStream] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceOptions:
    """Where `mtkit prepare` reads from: exactly one of a dataset, text files or TSV files."""

    src: str | None = None  # default: the first language of `pair`
    tgt: str | None = None
    pair: str | None = None  # de-en: picks the hub config in either order
    dataset: str | None = None  # short name, hub id or local directory
    config: str | None = None
    revision: str | None = None
    local_hub: Path | None = None
    streaming: bool = True
    train_split: str | None = None  # None: the usual names; "-" skips the split
    valid_split: str | None = None
    test_split: str | None = None
    src_file: Path | None = None
    tgt_file: Path | None = None
    valid_src_file: Path | None = None
    valid_tgt_file: Path | None = None
    test_src_file: Path | None = None
    test_tgt_file: Path | None = None
    tsv: Path | None = None
    valid_tsv: Path | None = None
    test_tsv: Path | None = None
    subset: str | None = None  # one training subset of a dataset (WMT_SUBSETS)

    def as_dict(self) -> dict[str, Any]:
        """The options as plain JSON values, for the manifest."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def from_options(options: SourceOptions) -> Source:
    """Open the one source the options name, in the direction they give."""
    src, tgt = resolve_langs(options.src, options.tgt, options.pair)
    files = _split_files(
        train=(options.src_file, options.tgt_file),
        valid=(options.valid_src_file, options.valid_tgt_file),
        test=(options.test_src_file, options.test_tgt_file),
    )
    tsvs = {"train": options.tsv, "valid": options.valid_tsv, "test": options.test_tsv}
    tsvs = {split: path for split, path in tsvs.items() if path}
    if options.dataset is None:
        if options.subset:
            raise ConfigError("--subset picks part of a --dataset; give --dataset too")
        order = parse_pair(options.pair)
        return from_text_files(src=src, tgt=tgt, files=files, tsv=tsvs, tsv_order=order)
    if files or tsvs:
        raise ConfigError("give either --dataset or text files (--src-file/--tsv ...), not both")
    splits = {
        "train": options.train_split,
        "valid": options.valid_split,
        "test": options.test_split,
    }
    return from_dataset(
        options.dataset,
        src=src,
        tgt=tgt,
        pair=options.pair,
        config=options.config,
        revision=options.revision,
        local_hub=options.local_hub,
        streaming=options.streaming,
        split_names={k: v for k, v in splits.items() if v is not None},
        subset=options.subset,
    )


def _split_files(**splits: tuple[Path | None, Path | None]) -> dict[str, tuple[Path, Path]]:
    """The text-file pairs given per split; one side without the other is an error."""
    chosen = {}
    for split, (src_path, tgt_path) in splits.items():
        if (src_path is None) != (tgt_path is None):
            flag = "" if split == "train" else f"{split}-"
            raise ConfigError(
                f"give both --{flag}src-file and --{flag}tgt-file for the {split} split"
            )
        if src_path is not None:
            chosen[split] = (src_path, tgt_path)
    return chosen


def parse_pair(pair: str | None) -> tuple[str, str] | None:
    """'de-en' -> ('de', 'en'); a clear error for anything else."""
    if pair is None:
        return None
    parts = pair.split("-")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--pair {pair!r} is not a language pair; write it like de-en")
    return parts[0], parts[1]


def resolve_langs(src: str | None, tgt: str | None, pair: str | None) -> tuple[str, str]:
    """The direction: --src/--tgt, or else --pair read in the order written."""
    langs = parse_pair(pair)
    if langs is not None:  # --pair de-en --src en means en -> de
        if src in langs and not tgt:
            tgt = langs[1 - langs.index(src)]
        elif tgt in langs and not src:
            src = langs[1 - langs.index(tgt)]
        src, tgt = src or langs[0], tgt or langs[1]
    if not src or not tgt:
        raise ConfigError("give the languages with --src and --tgt (e.g. --src de --tgt en)")
    if src == tgt:
        raise ConfigError(f"--src and --tgt are both {src!r}; give two different languages")
    if langs is not None and {src, tgt} != set(langs):
        raise ConfigError(f"--src {src} --tgt {tgt} do not match --pair {pair}; use the same two")
    return src, tgt


# ---------------------------------------------------------------- datasets sources


def from_dataset(
    dataset: str,
    *,
    src: str,
    tgt: str,
    pair: str | None = None,
    config: str | None = None,
    revision: str | None = None,
    local_hub: Path | None = None,
    streaming: bool = True,
    split_names: dict[str, str | None] | None = None,
    subset: str | None = None,
) -> Source:
    """Open a hub dataset (short name or id) or a local hub-shaped / save_to_disk directory;
    `subset`: its training split only from the data files named for that subset."""
    hub_id, known_configs = SHORT_NAMES.get(dataset, (dataset, None))
    path = _local_path(dataset, hub_id, local_hub)
    if path is None and hub_id == dataset and "/" not in dataset:
        raise DataError(
            f"unknown dataset {dataset!r}: give a short name ({', '.join(SHORT_NAMES)}), "
            "a hub id like owner/name, or a local directory"
        )
    where = str(path) if path else hub_id
    if path is None and known_configs is not None:  # fail fast, before the hub is asked
        _choose_config(where, known_configs, config, pair)
    _quiet_datasets()
    description: dict[str, Any] = {"kind": "local" if path else "hub", "dataset": where}
    if dataset in SHORT_NAMES:
        description["short_name"] = dataset
        description["hub_id"] = hub_id
    if path is not None and _is_saved(path, config):
        if subset:
            raise DataError(f"{where} is a save_to_disk copy without subsets; drop --subset")
        splits, chosen = _load_saved(path, config), config
    else:
        splits, chosen = _load(where, path, known_configs, config, pair, revision, streaming)
    if subset:
        _check_subset(dataset, chosen, subset)
        splits["train"] = _load_subset(where, chosen, subset, revision, streaming)
        description["subset"] = subset
    description.update(
        config=chosen, revision=revision, streaming=streaming and not _is_saved(path, config)
    )
    mapping = _map_splits(where, list(splits), split_names or {})
    description["splits"] = mapping
    try:  # each split's first batch is read now: the hub may fail here too
        streams = {
            out: SplitStream(
                name, dataset_batches(splits[name], src, tgt, where), _size(splits[name], name)
            )
            for out, name in mapping.items()
        }
    except (ConnectionError, TimeoutError) as error:
        raise DataError(
            f"could not read {where!r} from the hub ({error}); {_OFFLINE_HINT}"
        ) from None
    return Source(src=src, tgt=tgt, description=description, splits=streams)


def _check_subset(dataset: str, config: str | None, subset: str) -> None:
    """A subset the WMT builder does not name for this pair is a typo: list the names."""
    known = WMT_SUBSETS.get((dataset, config or ""))
    if known is not None and subset not in known:
        raise DataError(
            f"{dataset} {config} has no training subset {subset!r}; its builder names: "
            f"{', '.join(known)}"
        )


def _load_subset(where: str, config: str | None, subset: str, revision, streaming):
    """The training rows of one subset: the files CONFIG/train-SUBSET-*.parquet (one set of
    files per subset, as the WMT builders wrote them and `tests/hubcopy.py` copies them)."""
    import datasets

    pattern = f"{config + '/' if config else ''}train-{subset}-*"
    try:
        loaded = datasets.load_dataset(
            where, data_files={"train": pattern}, revision=revision, streaming=streaming
        )
    except (FileNotFoundError, datasets.data_files.EmptyDatasetError):
        raise DataError(
            f"{where} has no files {pattern} for --subset {subset}: this copy keeps its "
            "subsets merged; prepare the whole training split without --subset (recipes: "
            "make CORPORA=)"
        ) from None
    except (ConnectionError, TimeoutError) as error:
        raise DataError(
            f"could not reach the Hugging Face hub for {where!r} ({error}); {_OFFLINE_HINT}"
        ) from None
    return loaded["train"]


def _quiet_datasets() -> None:
    import datasets

    # mtkit draws its own progress bars; datasets' tqdm bars would interleave with them.
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


def _local_path(dataset: str, hub_id: str, local_hub: Path | None) -> Path | None:
    path = Path(dataset).expanduser()
    if path.is_dir():
        return path
    if dataset.startswith((".", "/", "~")):
        raise DataError(f"no such dataset directory: {dataset} (check the path)")
    if local_hub is not None and (local_hub / hub_id).is_dir():
        log.info("using the local copy %s of %s", local_hub / hub_id, hub_id)
        return local_hub / hub_id
    return None


def _is_saved(path: Path | None, config: str | None) -> bool:
    if path is None:
        return False
    roots = [path] + ([path / config] if config else [])
    return any(
        (root / "dataset_dict.json").exists() or (root / "state.json").exists() for root in roots
    )


def _load_saved(path: Path, config: str | None) -> dict[str, Any]:
    """A `save_to_disk` directory: a DatasetDict, or one Dataset taken as its split."""
    import datasets

    if config and (path / config).is_dir():
        path = path / config
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        return dict(loaded)
    return {str(loaded.split or "train"): loaded}


def _load(where, path, known_configs, config, pair, revision, streaming) -> tuple[dict, str | None]:
    """load_dataset on a hub id or local directory, turning hub failures into one line."""
    import datasets

    try:
        target, configs = _configs(where, path, known_configs, revision)
        chosen = _choose_config(where, configs, config, pair)
        if chosen in configs and isinstance(configs, dict):
            target, name = configs[chosen]
        else:
            name = chosen
        loaded = datasets.load_dataset(target, name, revision=revision, streaming=streaming)
    except (ConnectionError, TimeoutError) as error:
        raise DataError(
            f"could not reach the Hugging Face hub for {where!r} ({error}); {_OFFLINE_HINT}"
        ) from None
    except datasets.exceptions.DatasetNotFoundError:
        raise DataError(
            f"dataset {where!r} was not found on the hub (check the id, or give a local directory)"
        ) from None
    except datasets.data_files.EmptyDatasetError:
        raise DataError(f"{where} holds no data files (parquet, arrow, json, csv)") from None
    return dict(loaded), chosen


def _configs(where, path, known_configs, revision) -> tuple[str, Any]:
    """The configs on offer: the short-name table, the dataset card, or pair subdirectories."""
    import datasets

    if known_configs is not None and path is None:
        return where, list(known_configs)
    configs = datasets.get_dataset_config_names(where, revision=revision)
    if path is not None and configs == ["default"]:
        subdirs = sorted(d.name for d in path.iterdir() if d.is_dir() and _PAIR_DIR.match(d.name))
        if subdirs:  # no dataset card: de-en/, fr-en/ ... are the configs
            return where, {name: (str(path / name), None) for name in subdirs}
    return where, configs


def _choose_config(where, configs, config, pair) -> str | None:
    names = list(configs)
    if config is not None:
        if config not in names:
            raise DataError(f"{where} has no config {config!r}; it has: {', '.join(names)}")
        return config
    if len(names) == 1:
        return None if names == ["default"] else names[0]
    langs = parse_pair(pair)
    if langs is not None:
        for candidate in (f"{langs[0]}-{langs[1]}", f"{langs[1]}-{langs[0]}"):
            if candidate in names:
                return candidate
        raise DataError(f"{where} has no pair {pair}; it has: {', '.join(names)}")
    raise DataError(
        f"{where} has several configs ({', '.join(names)}); choose one with --pair or --config"
    )


def _map_splits(
    where: str, available: list[str], explicit: dict[str, str | None]
) -> dict[str, str]:
    """Output split name -> source split name."""
    mapping: dict[str, str] = {}
    for out in SPLITS:
        if out in explicit:
            name = explicit[out]
            if name in (None, "", "-"):
                continue
            if name not in available:
                raise DataError(
                    f"{where} has no split {name!r} (--{out}-split); it has: {', '.join(available)}"
                )
            mapping[out] = name
            continue
        found = [name for name in SPLIT_ALIASES[out] if name in available]
        if found:
            mapping[out] = found[0]
    unused = sorted(set(available) - set(mapping.values()))
    if unused:
        log.info(
            "not used from %s: split(s) %s (pick them with --valid-split/--test-split)",
            where,
            ", ".join(unused),
        )
    if not mapping:
        raise DataError(
            f"{where} has no train, validation or test split (it has: {', '.join(available)}); "
            "choose them with --train-split/--valid-split/--test-split"
        )
    return mapping


def _size(dataset: Any, split: str) -> int | None:
    try:
        return len(dataset)
    except TypeError:  # an IterableDataset: the card may know
        splits = getattr(dataset.info, "splits", None) or {}
        info = splits.get(split) if hasattr(splits, "get") else None
        return getattr(info, "num_examples", None) or None


def dataset_batches(dataset: Any, src: str, tgt: str, where: str) -> Iterator[LineBatch]:
    """The one reader for every datasets source: Arrow batches -> (src, tgt) line lists.

    The first batch is read now, so a dataset without the languages fails
    before anything is written.
    """
    tables = iter(dataset.with_format("arrow").iter(batch_size=BATCH_SIZE))
    first = next(tables, None)
    if first is None:
        return iter(())
    extract = _extractor(first.schema, src, tgt, where)
    return (extract(table) for table in chain([first], tables))


def _extractor(schema, src: str, tgt: str, where: str):
    import pyarrow as pa
    import pyarrow.compute as pc

    if "translation" in schema.names and pa.types.is_struct(schema.field("translation").type):
        kind = schema.field("translation").type
        langs = [kind.field(i).name for i in range(kind.num_fields)]

        def column(table, lang):
            return pc.struct_field(table.column("translation"), lang).to_pylist()
    else:
        langs = [
            f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
        ]

        def column(table, lang):
            return table.column(lang).to_pylist()

    for side, lang in (("--src", src), ("--tgt", tgt)):
        if lang not in langs:
            raise DataError(
                f"{where} has languages {', '.join(langs) or '(none)'}; {side} {lang} is not "
                "one of them (choose --src/--tgt among them, or another --pair/--config)"
            )
    return lambda table: (column(table, src), column(table, tgt))


# ---------------------------------------------------------------- text files


def from_text_files(
    *,
    src: str,
    tgt: str,
    files: dict[str, tuple[Path, Path]],
    tsv: dict[str, Path],
    tsv_order: tuple[str, str] | None = None,
) -> Source:
    """Parallel text files (one per language) or TSV files, per output split; gzip allowed."""
    both = sorted(set(files) & set(tsv))
    if both:
        raise ConfigError(f"the {both[0]} split is given both as text files and as TSV; give one")
    splits: dict[str, SplitStream] = {}
    description: dict[str, Any] = {"kind": "text", "splits": {}}
    for out in SPLITS:
        if out in files:
            src_path, tgt_path = files[out]
            splits[out] = SplitStream(out, _pair_batches(src_path, tgt_path))
            description["splits"][out] = {"src": str(src_path), "tgt": str(tgt_path)}
        elif out in tsv:
            order = tsv_order or (src, tgt)
            splits[out] = SplitStream(out, _tsv_batches(tsv[out], order, src, tgt))
            description["splits"][out] = {"tsv": str(tsv[out]), "columns": list(order)}
    if not splits:
        raise ConfigError("no input: give --dataset, or --src-file/--tgt-file, or --tsv")
    return Source(src=src, tgt=tgt, description=description, splits=splits)


def _pair_batches(src_path: Path, tgt_path: Path) -> Iterator[LineBatch]:
    src_file, tgt_file = open_binary(src_path), open_binary(tgt_path)
    return _zip_files(src_path, src_file, tgt_path, tgt_file)


def _zip_files(src_path, src_file, tgt_path, tgt_file) -> Iterator[LineBatch]:
    with src_file, tgt_file:
        src_lines = text_lines(src_file, str(src_path))
        tgt_lines = text_lines(tgt_file, str(tgt_path))
        done = 0
        while True:
            src_batch = list(islice(src_lines, BATCH_SIZE))
            tgt_batch = list(islice(tgt_lines, BATCH_SIZE))
            if len(src_batch) != len(tgt_batch):
                n_src = done + len(src_batch) + sum(1 for _ in src_lines)
                n_tgt = done + len(tgt_batch) + sum(1 for _ in tgt_lines)
                raise DataError(
                    f"{src_path} has {n_src} lines but {tgt_path} has {n_tgt}; "
                    "parallel files need one line per sentence in both"
                )
            if not src_batch:
                return
            done += len(src_batch)
            yield src_batch, tgt_batch


def _tsv_batches(path: Path, order: tuple[str, str], src: str, tgt: str) -> Iterator[LineBatch]:
    if {src, tgt} != set(order):
        raise ConfigError(
            f"TSV columns are {order[0]}, {order[1]} but --src/--tgt are {src}, {tgt}"
        )
    handle = open_binary(path)
    swap = order != (src, tgt)
    return _read_tsv(path, handle, swap)


def _read_tsv(path: Path, handle, swap: bool) -> Iterator[LineBatch]:
    with handle:
        lines = text_lines(handle, str(path))
        number = 0
        while batch := list(islice(lines, BATCH_SIZE)):
            first, second = [], []
            for line in batch:
                number += 1
                fields = line.split("\t")
                if len(fields) != 2:
                    raise DataError(
                        f"line {number} of {path} has {len(fields)} tab-separated fields; "
                        "TSV input needs exactly two (src<TAB>tgt)"
                    )
                first.append(fields[0])
                second.append(fields[1])
            yield (second, first) if swap else (first, second)
