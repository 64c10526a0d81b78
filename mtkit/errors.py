"""The exceptions mtkit raises for mistakes a user can make.

The library raises these with a message that says what is wrong, shows the value
and says what to do; the CLI prints the message as one line and exits 1. Anything
else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
from pathlib import Path


class MtkitError(Exception):
    """A problem the user can fix: bad input, a missing file, an option out of range."""


class DataError(MtkitError):
    """A corpus, dataset or text file that cannot be read or does not fit."""


class ConfigError(MtkitError):
    """An option or configuration value that is not valid."""


class CheckpointError(MtkitError):
    """A file that is not a usable mtkit checkpoint."""


class WriteError(MtkitError):
    """A file that could not be written: no space, a read-only disk, no permission."""


class ChecksumError(MtkitError):
    """A file whose contents differ from what mtkit wrote: its checksum does not match."""


def one_line(error: BaseException) -> str | None:
    """The one-line message for an error a user can cause, or None for a bug.

    The one table of them: the CLI and translate's worker processes both print it.
    """
    if isinstance(error, MtkitError):
        return str(error)
    if isinstance(error, FileNotFoundError):
        return f"no such file: {error.filename} (check the path)"
    if isinstance(error, IsADirectoryError):
        return f"expected a file but found a directory: {error.filename}"
    if isinstance(error, PermissionError):
        return f"permission denied: {error.filename}"
    if isinstance(error, OSError) and error.filename:
        known = write_error(error.filename, error)  # no space, read-only, permission ...
        if known is not error:
            return str(known)
    return None


# errno -> (what happened, what to do): the failures a user can cause and fix.
_WRITE_FAILURES = {
    errno.ENOSPC: ("no space left on the device", "free some space or write elsewhere"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write elsewhere"),
    errno.EFBIG: ("file too large (file-size limit)", "raise the limit or write elsewhere"),
    errno.EROFS: ("read-only file system", "write somewhere writable"),
    errno.EACCES: ("permission denied", "check the directory's permissions or write elsewhere"),
    errno.EPERM: ("operation not permitted", "check the permissions or write elsewhere"),
}


def write_error(path: Path | str, error: OSError) -> Exception:
    """The one-line WriteError for a failed write of `path`, or `error` itself when unknown."""
    what = _WRITE_FAILURES.get(error.errno)
    if what is None:
        return error
    reason, advice = what
    return WriteError(f"could not write {path}: {reason}; {advice}")
