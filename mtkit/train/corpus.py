"""The encoded training corpus on disk: written once next to the data, memory-mapped by every start.

`mtkit train` encodes DATA/train.{src,tgt} with the run's SentencePiece
model(s) the first time it meets them and writes the result as flat arrays in
DATA/.encoded/KEY/ (KEY: a checksum of both text files' checksums and both
models' bytes):

    src.ids, tgt.ids          every sentence's piece ids back to back, in the smallest
                              unsigned integer type that holds the vocabulary
    src.offsets, tgt.offsets  int64 [N + 1]: sentence i is ids[offsets[i]:offsets[i+1]]
    meta.json                 what it was made from; written last

Every later start, resume and torchrun process maps those files (np.memmap):
the pages are shared through the page cache, so N processes on a machine hold
one copy, and start-up costs no encoding. A changed text file or model has
another KEY, so it gets a new directory; a build is written under a temporary
name and renamed when complete, so a crash never leaves a directory that looks
finished; an exclusive lock (fcntl.flock on KEY.lock) makes two runs, or the
processes of one torchrun, that start at once build it once: the first takes
the lock and builds, the others wait on the lock and map what it wrote.
When DATA is not writable the corpus goes to RUN/.encoded/ instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from mtkit.errors import DataError, MtkitError
from mtkit.io import atomic_write, open_binary, text_lines, write_error, write_text
from mtkit.train.batching import (
    Batches,
    Pairs,
    Side,
    encode_chunks,
    id_dtype,
    keep_index,
    make_batches,
)

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the layout changes: old directories are then ignored
DIRNAME = ".encoded"
CHECKSUMS = "checksums.json"  # file checksums by (size, mtime, inode): no rehash on every start


def cache_root(data_dir: Path, fallback: Path) -> Path:
    """DATA/.encoded, or `fallback` (RUN/.encoded) when DATA cannot be written."""
    root = Path(data_dir) / DIRNAME
    if root.is_dir() and os.access(root, os.W_OK) or os.access(data_dir, os.W_OK):
        return root
    log.warning("%s is not writable: the encoded corpus goes to %s", data_dir, fallback)
    return Path(fallback)


def open_corpus(paths: dict, toks: dict, root: Path, src_prefix: tuple = ()) -> Pairs:
    """The encoded corpus of the text files paths["src"], paths["tgt"] with tokenizers
    toks["src"], toks["tgt"]: mapped from `root`, built there first when missing.
    `src_prefix`: ids put before every source sentence (a tagged corpus's tag piece)."""
    root.mkdir(parents=True, exist_ok=True)
    key = corpus_key(paths, toks, root, src_prefix)
    final = root / key
    if not (final / "meta.json").is_file():
        with _locked(root / f"{key}.lock"):
            if not (final / "meta.json").is_file():  # another process may have built it meanwhile
                _build(final, paths, toks, src_prefix)
    return map_corpus(final)


def corpus_key(paths: dict, toks: dict, root: Path, src_prefix: tuple = ()) -> str:
    """A name for what the corpus is made from: the texts', the models' and (imported
    models) the vocabulary tables' checksums, and a source prefix (tag) if any."""
    digest = hashlib.sha256(f"mtkit-encoded-{FORMAT}".encode())
    if src_prefix:  # untagged corpora keep the key they always had
        digest.update(f"src-prefix-{list(src_prefix)}".encode())
    for side in ("src", "tgt"):
        digest.update(file_checksum(Path(paths[side]), root).encode())
        digest.update(hashlib.sha256(toks[side].model_bytes).hexdigest().encode())
        if toks[side].vocab is not None:  # a model's own piece->id table maps pieces anew
            digest.update(hashlib.sha256("\n".join(toks[side].vocab).encode()).hexdigest().encode())
    return digest.hexdigest()[:24]


def file_checksum(path: Path, root: Path) -> str:
    """sha256 of the file, remembered in ROOT/checksums.json by size, mtime and inode."""
    stat = path.stat()
    memo_path = root / CHECKSUMS
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    name, seen = str(path.resolve()), [stat.st_size, stat.st_mtime_ns, stat.st_ino]
    if memo.get(name, {}).get("stat") == seen:
        return memo[name]["sha256"]
    with open(path, "rb") as file:
        checksum = hashlib.file_digest(file, "sha256").hexdigest()
    memo[name] = {"stat": seen, "sha256": checksum}
    with contextlib.suppress(OSError):  # only a shortcut: a failed write costs a rehash
        write_text(memo_path, json.dumps(memo, indent=1, sort_keys=True) + "\n")
    return checksum


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive flock on `path`: released by the kernel even when the process dies."""
    with open(path, "a") as file:
        began = time.monotonic()
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process to finish encoding the corpus (%s)", path)
            fcntl.flock(file, fcntl.LOCK_EX)
            log.info("waited %.1f s for the encoded corpus", time.monotonic() - began)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def _build(final: Path, paths: dict, toks: dict, src_prefix: tuple = ()) -> None:
    """Encode both sides into a temporary directory, then rename it to `final`."""
    for stale in final.parent.glob(f".tmp-{final.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)  # a crashed build: we hold the lock
    temp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    temp.mkdir()
    began = time.monotonic()
    try:
        prefix = {"src": tuple(src_prefix), "tgt": ()}
        counts = {
            side: _encode_file(Path(paths[side]), toks[side], temp, side, prefix[side])
            for side in paths
        }
        _check_counts(paths, counts)
        meta = {
            "format": FORMAT,
            "pairs": counts["src"],
            "dtype": {side: np.dtype(id_dtype(toks[side].vocab_size)).str for side in paths},
            "files": {side: str(Path(paths[side]).resolve()) for side in paths},
            "spm": {side: toks[side].name for side in paths},
            "src_prefix": list(src_prefix),
        }
        with atomic_write(temp / "meta.json", "w") as file:
            json.dump(meta, file, indent=2)
        shutil.rmtree(final, ignore_errors=True)  # a directory without meta.json: incomplete
        os.rename(temp, final)
    except OSError as error:
        shutil.rmtree(temp, ignore_errors=True)
        raise write_error(temp, error) from None
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    log.info(
        "encoded %s training pairs once into %s (%.1f s); later starts map it",
        f"{counts['src']:,}",
        final,
        time.monotonic() - began,
    )


def _encode_file(path: Path, tok, directory: Path, side: str, prefix: tuple = ()) -> int:
    """Stream `path` through the tokenizer into directory/SIDE.ids and SIDE.offsets,
    `prefix` before every sentence."""
    dtype = id_dtype(tok.vocab_size)
    lengths = []
    head, encode = list(prefix), tok.encode
    if head:

        def encode(lines, plain=tok.encode):
            return [head + ids for ids in plain(lines)]

    with open_binary(path) as stream, open(directory / f"{side}.ids", "wb") as ids:
        lines = (line.rstrip("\r") for line in text_lines(stream, str(path)))
        for chunk_ids, chunk_lengths in encode_chunks(lines, encode, dtype):
            ids.write(chunk_ids.tobytes())
            lengths.append(chunk_lengths.astype(np.int32))
    total = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int32)
    offsets = np.zeros(len(total) + 1, dtype=np.int64)
    np.cumsum(total, out=offsets[1:])
    offsets.tofile(directory / f"{side}.offsets")
    return len(total)


def _check_counts(paths: dict, counts: dict) -> None:
    if counts["src"] != counts["tgt"]:
        raise DataError(
            f"{paths['src']} has {counts['src']} lines but {paths['tgt']} has "
            f"{counts['tgt']}; the sides of a split must be parallel"
        )
    if not counts["src"]:
        raise DataError(f"{paths['src']} is empty; train needs at least one pair")


def map_corpus(directory: Path) -> Pairs:
    """The corpus in `directory`, memory-mapped read-only (pages load as batches touch them)."""
    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise DataError(f"{directory} is an encoded corpus of another format; delete it")
    sides = {
        side: Side(
            ids=_map(directory / f"{side}.ids", np.dtype(meta["dtype"][side])),
            offsets=_map(directory / f"{side}.offsets", np.dtype(np.int64)),
        )
        for side in ("src", "tgt")
    }
    return Pairs(src=sides["src"], tgt=sides["tgt"], directory=directory)


def run_batches(pairs: Pairs, *, max_len: int, max_tokens: int, seed: int):
    """(Batches, dropped counts) of the pairs the model can take. For a mapped corpus they
    are cut once per (--max-tokens, --seed, max_positions) and kept beside it as .npy
    files that every later start and process maps: no per-pair arrays in memory."""

    def cut():
        index, dropped = keep_index(pairs, max_len=max_len, max_tokens=max_tokens)
        return make_batches(pairs, max_tokens=max_tokens, seed=seed, index=index), dropped

    if pairs.directory is None:
        return cut()
    stem = Path(pairs.directory) / f"batches-t{max_tokens}-s{seed}-p{max_len}"
    meta = Path(f"{stem}.json")
    try:
        if not meta.is_file():
            with _locked(Path(pairs.directory).parent / f"{Path(pairs.directory).name}.lock"):
                if not meta.is_file():
                    _write_batches(stem, pairs, *cut())
        dropped = json.loads(meta.read_text(encoding="utf-8"))["dropped"]
        arrays = {k: np.load(f"{stem}.{k}.npy", mmap_mode="r") for k in BATCH_ARRAYS}
    except (OSError, MtkitError, ValueError) as error:  # a shortcut only: cut them here
        log.warning("could not keep the batches beside the corpus (%s); cutting them", error)
        return cut()
    return Batches(arrays["order"], arrays["bounds"], arrays["tokens"]), dropped


BATCH_ARRAYS = ("order", "bounds", "tokens")


def _write_batches(stem: Path, pairs: Pairs, batches: Batches, dropped: dict) -> None:
    """Each array atomically, then the .json that says they are complete."""
    tokens = batches.target_tokens(pairs)
    for name, array in (("order", batches.order), ("bounds", batches.bounds), ("tokens", tokens)):
        with atomic_write(f"{stem}.{name}.npy", "wb") as file:
            np.save(file, array)
    write_text(f"{stem}.json", json.dumps({"dropped": dropped}) + "\n")


def _map(path: Path, dtype) -> np.ndarray:
    if path.stat().st_size == 0:  # mmap refuses empty files: every sentence empty
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")
