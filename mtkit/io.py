"""What every stage shares on disk: atomic writes, and reading plain or gzip text.

Every file mtkit writes goes through `atomic_write`: it is written under a
temporary name beside its destination and renamed into place only when
complete, so a crash, Ctrl-C or a full disk never leaves a file under its final
name that looks finished, and never leaves the temporary file behind. A write
that fails for want of space or permission becomes one `WriteError` line that
names the file and the reason.

Every text file mtkit reads goes through `open_text`/`text_lines`: UTF-8, gzip
recognised by its magic bytes, only LF ending a line (as for `wc -l` and
SentencePiece), and read errors named by file and line.

Every checksum mtkit writes and later checks is made here (`CHECKSUM`): of
bytes as they are written (`HashingWriter`), of a file read once
(`file_checksum`), and of the tensors and values of a checkpoint
(`content_checksum`), and of a JSON object in a "checksum" key of its own
(`with_json_checksum`, `check_json_checksum`); `check_checksum` turns a mismatch into one
`ChecksumError` line. docs/integrity.md says what is checked where.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from mtkit.crashpoint import crash_point
from mtkit.errors import ChecksumError, DataError, WriteError, write_error


def make_directory(path: Path | str) -> Path:
    """`mkdir -p`, with a failure for space or permission as one WriteError line."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(path, error) from None
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class AtomicFile:
    """A file written under a temporary name beside `path`; `commit` renames it into place.

    `mode` is "wb" or "w" (UTF-8 text). `fsync` forces the data to disk before
    the rename, for files whose loss after a power cut would cost work
    (checkpoints). Until `commit`, `path` keeps whatever it held before;
    `discard` (safe to call after `commit`) removes the temporary file.
    """

    def __init__(self, path: Path | str, mode: str = "wb", *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        directory = self.path.parent if str(self.path.parent) else Path(".")
        if not directory.is_dir():
            raise DataError(f"directory {directory} does not exist; create it first")
        try:
            fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        except OSError as error:
            raise write_error(self.path, error) from None
        self.temp = Path(temp)
        self.file = os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8")
        self.committed = False

    def write(self, data) -> None:
        """Write, with a failure for space or permission as one WriteError line."""
        crash_point("write", self.path.name)
        try:
            self.file.write(data)
        except OSError as error:
            self.discard()
            raise write_error(self.path, error) from None

    def commit(self) -> Path:
        try:
            self.file.flush()
            if self.fsync:
                os.fsync(self.file.fileno())
            self.file.close()
            os.chmod(self.temp, 0o666 & ~_umask())  # mkstemp makes 0600; finished files don't
            crash_point("before-rename", self.path.name)
            os.replace(self.temp, self.path)
        except OSError as error:
            self.discard()
            raise write_error(self.path, error) from None
        self.committed = True
        crash_point("after-rename", self.path.name)
        return self.path

    def discard(self) -> None:
        with contextlib.suppress(OSError):  # closing flushes; a full disk fails again: no matter
            self.file.close()
        if not self.committed:
            self.temp.unlink(missing_ok=True)


class _WriteErrors:
    """A file object that remembers the first OSError of its writes, and a Ctrl-C or
    SIGTERM (mtkit.cli's Terminated) that arrived during one.

    Libraries that write through a file object may turn those into their own error:
    torch.save raises "RuntimeError: [enforce fail at inline_container.cc] unexpected
    pos" when the disk fills, or when the signal's exception leaves our write.
    `atomic_write` still names the cause, or re-raises the interruption.
    """

    def __init__(self, file: IO, name: str | None = None) -> None:
        self._file = file
        self._crash_name = name
        self.error: OSError | None = None
        self.interrupted: BaseException | None = None

    def write(self, data):
        try:
            crash_point("write", self._crash_name)
            return self._file.write(data)
        except OSError as error:
            self.error = self.error or error
            raise
        except BaseException as interruption:  # KeyboardInterrupt, Terminated
            self.interrupted = self.interrupted or interruption
            raise

    def __getattr__(self, name: str):
        return getattr(self._file, name)


@contextmanager
def atomic_write(path: Path | str, mode: str = "wb", *, fsync: bool = False) -> Iterator[IO]:
    """A file object whose contents appear at `path` only if the block completes."""
    target = AtomicFile(path, mode, fsync=fsync)
    file = _WriteErrors(target.file, target.path.name)
    try:
        yield file
        target.commit()
    except OSError as error:
        target.discard()
        # Errors of the block's own reads name their file; a failed write to ours names none.
        if error.filename not in (None, str(target.temp)):
            raise
        raise write_error(target.path, error) from None
    except Exception:
        target.discard()
        if file.interrupted is not None:  # what a library's error hid
            raise file.interrupted from None
        if file.error is None:
            raise
        raise write_error(target.path, file.error) from None
    finally:
        target.discard()


@contextmanager
def atomic_directory(path: Path | str, *, replace: bool = False, crash: str = "") -> Iterator[Path]:
    """A directory filled under a temporary sibling name (the block gets it) and renamed to
    `path` when the block ends without error, so an interrupted export never leaves a
    directory that looks finished; `replace` removes what `path` held first. `crash` names
    the crash point just before the rename (tests kill the process there)."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise WriteError(f"output directory {parent} does not exist; create it first")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=parent))
    except OSError as error:
        raise WriteError(f"cannot write in {parent}: {error.strerror}") from None
    try:
        yield tmp
        if crash:
            crash_point(crash)
        if replace and path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    except OSError as error:
        raise WriteError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text(path: Path | str, text: str) -> None:
    """Write a small text file atomically (JSON, manifests, reports)."""
    with atomic_write(path, "w") as file:
        file.write(text)


def check_readable(path: Path | str, what: str = "") -> Path:
    """`path` as a Path, or DataError when it is missing or a directory; `what` names
    the file in the message ("input file": "input file not found: PATH")."""
    path = Path(path)
    if not path.exists():
        missing = f"{what} not found" if what else "no such file"
        raise DataError(f"{missing}: {path} (check the path)")
    if path.is_dir():
        raise DataError(f"{path} is a directory; expected a text file")
    return path


def open_binary(path: Path | str) -> IO[bytes]:
    """A binary stream of the file's text: gunzipped when it starts with gzip's magic bytes."""
    path = check_readable(path)
    raw = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    if raw.read(2) == b"\x1f\x8b":
        raw.close()
        stream = gzip.open(path, "rb")  # noqa: SIM115 - returned to the caller
        try:
            stream.peek(1)  # a broken header or first block fails here, before any work
        except (OSError, EOFError, zlib.error) as error:
            stream.close()
            raise DataError(
                f"cannot read {path} as gzip ({error}); is the file complete?"
            ) from None
        return stream
    if path.suffix == ".gz":
        raw.close()
        raise DataError(
            f"{path} ends in .gz but is not gzip-compressed; rename it or recompress it"
        )
    raw.seek(0)
    return raw


def open_text(path: Path | str) -> IO[str]:
    """A UTF-8 text stream of a plain or gzip file; only LF ends a line (a stray CR stays)."""
    return io.TextIOWrapper(open_binary(path), encoding="utf-8", newline="\n")


@contextmanager
def input_stream(path: Path | str | None) -> Iterator[IO[bytes]]:
    """A binary stream over `path` (plain or gzip), or standard input when it is None."""
    if path is None:
        yield sys.stdin.buffer
        return
    stream = open_binary(path)
    try:
        yield stream
    finally:
        stream.close()


def text_lines(stream: IO[bytes], name: str) -> Iterator[str]:
    """The lines of a binary stream, decoded as UTF-8, without the final LF.

    Only LF ends a line, so a stray CR or U+2028 stays inside it; callers strip
    what their format wants stripped. Bad UTF-8 and truncated gzip become one
    DataError naming `name` and the line.
    """
    number = 0
    try:
        for number, raw in enumerate(stream, 1):  # noqa: B007 - number is used below
            yield raw.decode("utf-8").removesuffix("\n")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{name} line {number} is not valid UTF-8 ({error.reason} at byte {error.start}); "
            "convert it to UTF-8, e.g. with iconv"
        ) from None
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(
            f"cannot read {name} after line {number} ({error}); is it complete?"
        ) from None


def read_text_lines(path: Path | str | None) -> list[str]:
    """Every line of a plain or gzip file (standard input when None), as `text_lines` gives them."""
    name = "standard input" if path is None else str(path)
    with input_stream(path) as stream:
        return list(text_lines(stream, name))


# -- checksums ---------------------------------------------------------------------------

# sha256: what `sha256sum` checks, and hardware-accelerated (SHA-NI) on AMD Zen and on Intel
# since Ice Lake, where it measured 620 MB/s against blake2b's 350 (docs/integrity.md).
CHECKSUM = "sha256"
_CHUNK = 1 << 22


def new_hash():
    return hashlib.new(CHECKSUM)


class HashingWriter:
    """A file object that hashes what is written through it, for a checksum of a file
    taken while it is written (no second read)."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self.hash = new_hash()
        self.size = 0

    def write(self, data) -> int:
        written = self._file.write(data)
        self.hash.update(data)
        self.size += len(memoryview(data).cast("B"))
        return written

    def hexdigest(self) -> str:
        return self.hash.hexdigest()

    def __getattr__(self, name: str):
        return getattr(self._file, name)


def file_checksum(path: Path | str) -> str:
    """The checksum of a file's bytes, read once in chunks (bounded memory)."""
    digest = new_hash()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_checksum(path: Path | str, expected: str, actual: str, advice: str) -> None:
    """ChecksumError naming `path` and what to do when the checksums differ."""
    if expected != actual:
        raise ChecksumError(
            f"{path} is damaged: its {CHECKSUM} checksum is {actual[:16]}..., not the "
            f"{expected[:16]}... it was written with; {advice}"
        )


def json_checksum(value: dict) -> str:
    """The checksum of a JSON object without its "checksum" key, over its canonical form
    (sorted keys, no spaces), so re-indenting the file does not change it."""
    rest = {key: item for key, item in value.items() if key != "checksum"}
    text = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.new(CHECKSUM, text.encode()).hexdigest()


def with_json_checksum(value: dict) -> dict:
    """`value` with a "checksum" key (`json_checksum` of the rest), for a JSON file that is
    read back and trusted (a translate job's progress)."""
    return {**value, "checksum": json_checksum(value)}


def check_json_checksum(path: Path | str, value: dict, advice: str) -> bool:
    """ChecksumError when `value` (read from `path`) has a "checksum" that is not that of
    the rest; False when it has none (an older mtkit wrote it), True when it matches."""
    if "checksum" not in value:
        return False
    expected = value["checksum"]
    check_checksum(path, str(expected), json_checksum(value), advice)
    return True


def content_checksum(value, threads: int = 1) -> str:
    """A checksum of a nested structure of dicts, lists, tensors and plain values.

    It covers every key, value, tensor dtype, shape and byte, so it is the same for a
    structure before torch.save and after torch.load, and differs when any part does.
    Tensors are hashed on `threads` threads (hashlib releases the GIL).
    """
    tensors: list = []
    parts: list = []
    _flatten(value, tensors, parts)
    if threads > 1 and len(tensors) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            digests = list(pool.map(_tensor_digest, tensors))
    else:
        digests = [_tensor_digest(t) for t in tensors]
    total = new_hash()
    found = iter(digests)
    for part in parts:
        total.update(next(found) if part is None else part)
    return total.hexdigest()


def _flatten(value, tensors: list, parts: list) -> None:
    """Describe `value` as byte strings in `parts`; a None part stands for the digest of
    the next tensor in `tensors`."""
    import torch

    if isinstance(value, torch.Tensor):
        parts.append(f"T{value.dtype}{tuple(value.shape)}".encode())
        tensors.append(value)
        parts.append(None)
    elif isinstance(value, dict):
        parts.append(f"D{len(value)}".encode())
        for key, item in value.items():
            _flatten(key, tensors, parts)
            _flatten(item, tensors, parts)
    elif isinstance(value, (list, tuple)):  # torch.load may give a list for a tuple
        parts.append(f"L{len(value)}".encode())
        for item in value:
            _flatten(item, tensors, parts)
    elif isinstance(value, (bytes, bytearray)):
        parts.append(f"B{len(value)}".encode())
        parts.append(hashlib.new(CHECKSUM, value).digest())
    else:  # str, int, float, bool, None: their repr is exact and stable
        text = repr(value).encode()
        parts.append(f"V{type(value).__name__}{len(text)}:".encode() + text)


def _tensor_digest(tensor) -> bytes:
    import torch

    flat = tensor.detach().cpu().contiguous().reshape(-1)
    data = flat.view(torch.uint8) if flat.numel() else flat.new_empty(0, dtype=torch.uint8)
    digest = new_hash()
    view = memoryview(data.numpy())
    for start in range(0, len(view), _CHUNK):
        digest.update(view[start : start + _CHUNK])
    return digest.digest()
