"""The encoded training corpus on disk: written once next to the data, memory-mapped by every start.

`mtkit train` encodes DATA/train.{src,tgt} with the run's SentencePiece
model(s) the first time it meets them and writes the result as flat arrays in
DATA/.encoded/KEY/ (KEY: a checksum of both text files' checksums and both
models' bytes):

    src.ids, tgt.ids          every sentence's piece ids back to back, in the smallest
                              unsigned integer type that holds the vocabulary
    src.offsets, tgt.offsets  int64 [N + 1]: sentence i is ids[offsets[i]:offsets[i+1]]
    meta.json                 what it was made from, and each file's size and sha256
                              (taken while writing it); written last
    batches-*.{npy,json}      the batches cut for one --max-tokens/--seed (run_batches),
                              with their own sizes and sha256 in the .json

Every later start, resume and torchrun process maps those files (np.memmap):
the pages are shared through the page cache, so N processes on a machine hold
one copy, and start-up costs no encoding. A changed text file or model has
another KEY, so it gets a new directory; a build is written under a temporary
name and renamed when complete, so a crash never leaves a directory that looks
finished; an exclusive lock (fcntl.flock on KEY.lock) makes two runs, or the
processes of one torchrun, that start at once build it once: the first takes
the lock and builds, the others wait on the lock and map what it wrote.
When DATA is not writable the corpus goes to RUN/.encoded/ instead.

Every start checks the files against meta.json before mapping them: sizes always,
checksums when a file's mtime or inode is not the one the build recorded (a file
written since, or a copy), so an unchanged corpus costs no reread; `mtkit inspect
--verify` hashes them all. A corpus that fails is derived data, so it is encoded
again from the text, with a warning, rather than refused.
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

from mtkit.crashpoint import crash_point
from mtkit.errors import ChecksumError, DataError, MtkitError
from mtkit.io import (
    CHECKSUM,
    HashingWriter,
    atomic_write,
    check_checksum,
    open_binary,
    text_lines,
    write_error,
    write_text,
)
from mtkit.io import file_checksum as checksum_of
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


def open_corpus(
    paths: dict, toks: dict, root: Path, src_prefix: tuple = (), tgt_prefix: tuple = ()
) -> Pairs:
    """The encoded corpus of the text files paths["src"], paths["tgt"] with tokenizers
    toks["src"], toks["tgt"]: mapped from `root`, built there first when missing.
    `src_prefix`: ids put before every source sentence (a tagged corpus's tag piece);
    `tgt_prefix`: before every target (a fine-tuned NLLB's target-language token)."""
    root.mkdir(parents=True, exist_ok=True)
    key = corpus_key(paths, toks, root, src_prefix, tgt_prefix)
    final = root / key
    if not _usable(final):
        with _locked(root / f"{key}.lock"):
            if not _usable(final):  # another process may have built it meanwhile
                _build(final, paths, toks, src_prefix, tgt_prefix)
    return map_corpus(final)


def _usable(directory: Path) -> bool:
    """A complete build whose files are what it wrote (a damaged one is logged)."""
    if not (directory / "meta.json").is_file():
        return False
    problem = corpus_problem(directory)
    if problem is not None:
        log.warning("%s; encoding the corpus again", problem)
        return False
    return True


def corpus_problem(directory: Path, full: bool = False) -> str | None:
    """What is wrong with the encoded corpus in `directory`, or None when its files are
    what its build wrote. Files whose mtime and inode are the build's are taken on their
    size alone, unless `full`; the others are hashed (and, when they pass, remembered).
    With `full`, the batches kept beside it are checked too."""
    meta_path = directory / "meta.json"
    problem = _files_problem(meta_path, CORPUS_FILES, full)
    if problem is None and full:
        for batches in sorted(directory.glob("batches-*.json")):
            names = [f"{batches.stem}.{k}.npy" for k in BATCH_ARRAYS]
            problem = problem or _files_problem(batches, names, full)
    return problem


def _files_problem(meta_path: Path, names, full: bool) -> str | None:
    """What is wrong with the files `names` beside the JSON file `meta_path`, whose
    "checksums" records each one's bytes, sha256 and stat when it was written."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return f"{meta_path} cannot be read ({error})"
    sums = meta.get("checksums") if isinstance(meta, dict) else None
    if not isinstance(sums, dict) or set(sums) != set(names):
        return f"{meta_path} records no checksums (written by an older mtkit)"
    if not all(isinstance(w, dict) and {"bytes", CHECKSUM} <= w.keys() for w in sums.values()):
        return f"{meta_path} has checksums this mtkit cannot read"
    rehashed = False
    for name, want in sums.items():
        path = meta_path.parent / name
        try:
            stat = path.stat()
        except OSError:
            return f"{path} is missing"
        if stat.st_size != want["bytes"]:
            return f"{path} has {stat.st_size} bytes, not the {want['bytes']} it was written with"
        if not full and want.get("stat") == [stat.st_mtime_ns, stat.st_ino]:
            continue
        try:
            check_checksum(path, want[CHECKSUM], checksum_of(path), "")
        except ChecksumError as error:
            return str(error).rsplit(";", 1)[0]
        want["stat"], rehashed = _stat(path), True
    if rehashed:  # a copy, or a file touched since: hash it once, not at every start
        with contextlib.suppress(OSError):
            write_text(meta_path, json.dumps(meta, indent=2))
    return None


def _stat(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_mtime_ns, stat.st_ino]


def _file_sum(path: Path, writer: HashingWriter) -> dict:
    """The record of a file just written through `writer` (renames keep mtime and inode)."""
    return {"bytes": path.stat().st_size, CHECKSUM: writer.hexdigest(), "stat": _stat(path)}


def corpus_key(
    paths: dict, toks: dict, root: Path, src_prefix: tuple = (), tgt_prefix: tuple = ()
) -> str:
    """A name for what the corpus is made from: the texts', the models' and (imported
    models) the vocabulary tables' checksums, and source and target prefixes if any."""
    digest = hashlib.sha256(f"mtkit-encoded-{FORMAT}".encode())
    if src_prefix:  # untagged corpora keep the key they always had
        digest.update(f"src-prefix-{list(src_prefix)}".encode())
    if tgt_prefix:
        digest.update(f"tgt-prefix-{list(tgt_prefix)}".encode())
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
    checksum = checksum_of(path)  # mtkit.io's (sha256, as the memo's key says)
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


def _build(
    final: Path, paths: dict, toks: dict, src_prefix: tuple = (), tgt_prefix: tuple = ()
) -> None:
    """Encode both sides into a temporary directory, then rename it to `final`."""
    for stale in final.parent.glob(f".tmp-{final.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)  # a crashed build: we hold the lock
    temp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    temp.mkdir()
    began = time.monotonic()
    try:
        sums: dict = {}
        prefix = {"src": tuple(src_prefix), "tgt": tuple(tgt_prefix)}
        counts = {
            side: _encode_file(Path(paths[side]), toks[side], temp, side, sums, prefix[side])
            for side in paths
        }
        _check_counts(paths, counts)
        meta = {
            "format": FORMAT,
            "pairs": counts["src"],
            "dtype": {side: np.dtype(id_dtype(toks[side].vocab_size)).str for side in paths},
            "files": {side: str(Path(paths[side]).resolve()) for side in paths},
            "spm": {side: toks[side].name for side in paths},
            "checksums": sums,
            "src_prefix": list(src_prefix),
            **({"tgt_prefix": list(tgt_prefix)} if tgt_prefix else {}),
        }
        with atomic_write(temp / "meta.json", "w") as file:
            json.dump(meta, file, indent=2)
        shutil.rmtree(final, ignore_errors=True)  # incomplete or damaged: we hold the lock
        crash_point("encoded-before-rename")
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


CORPUS_FILES = ("src.ids", "src.offsets", "tgt.ids", "tgt.offsets")


def _encode_file(
    path: Path, tok, directory: Path, side: str, sums: dict, prefix: tuple = ()
) -> int:
    """Stream `path` through the tokenizer into directory/SIDE.ids and SIDE.offsets,
    `prefix` before every sentence; each file's size, checksum and stat go into `sums`."""
    dtype = id_dtype(tok.vocab_size)
    lengths = []
    head, encode = list(prefix), tok.encode
    if head:

        def encode(lines, plain=tok.encode):
            return [head + ids for ids in plain(lines)]

    with open_binary(path) as stream, open(directory / f"{side}.ids", "wb") as raw:
        ids = HashingWriter(raw)
        lines = (line.rstrip("\r") for line in text_lines(stream, str(path)))
        for chunk_ids, chunk_lengths in encode_chunks(lines, encode, dtype):
            ids.write(chunk_ids.tobytes())
            lengths.append(chunk_lengths.astype(np.int32))
            crash_point("mid-encode")
    total = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int32)
    offsets = np.zeros(len(total) + 1, dtype=np.int64)
    np.cumsum(total, out=offsets[1:])
    with open(directory / f"{side}.offsets", "wb") as raw:
        ends = HashingWriter(raw)
        ends.write(offsets.data)
    for name, writer in ((f"{side}.ids", ids), (f"{side}.offsets", ends)):
        sums[name] = _file_sum(directory / name, writer)
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
        if not _batches_usable(meta, stem):
            with _locked(Path(pairs.directory).parent / f"{Path(pairs.directory).name}.lock"):
                if not _batches_usable(meta, stem):
                    _write_batches(stem, pairs, *cut())
        dropped = json.loads(meta.read_text(encoding="utf-8"))["dropped"]
        arrays = {k: np.load(f"{stem}.{k}.npy", mmap_mode="r") for k in BATCH_ARRAYS}
    except (OSError, MtkitError, ValueError) as error:  # a shortcut only: cut them here
        log.warning("could not keep the batches beside the corpus (%s); cutting them", error)
        return cut()
    return Batches(arrays["order"], arrays["bounds"], arrays["tokens"]), dropped


BATCH_ARRAYS = ("order", "bounds", "tokens")


def _batches_usable(meta: Path, stem: Path) -> bool:
    """Batches kept beside the corpus, complete and as written (a damaged set is logged)."""
    if not meta.is_file():
        return False
    problem = _files_problem(meta, [f"{stem.name}.{k}.npy" for k in BATCH_ARRAYS], full=False)
    if problem is not None:
        log.warning("%s; cutting the batches again", problem)
        return False
    return True


def _write_batches(stem: Path, pairs: Pairs, batches: Batches, dropped: dict) -> None:
    """Each array atomically, then the .json that says they are complete (and their sums)."""
    tokens = batches.target_tokens(pairs)
    sums = {}
    for name, array in (("order", batches.order), ("bounds", batches.bounds), ("tokens", tokens)):
        path = Path(f"{stem}.{name}.npy")
        with atomic_write(path, "wb") as file:
            writer = HashingWriter(file)
            np.save(writer, array)
        sums[path.name] = _file_sum(path, writer)
    write_text(f"{stem}.json", json.dumps({"dropped": dropped, "checksums": sums}) + "\n")


def _map(path: Path, dtype) -> np.ndarray:
    if path.stat().st_size == 0:  # mmap refuses empty files: every sentence empty
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")
