"""One training at a time per run directory: an OS lock on RUN/.lock.

`claim_run_dir` takes an exclusive `fcntl.flock` on RUN/.lock for as long as the
training runs, and writes the holder's pid, host and start time into the file
(flushed, for other hosts of a network file system) so a second `mtkit train` on
the same directory can say who holds it and how to check it still runs. The
kernel drops the lock when its process ends, however it ends (exit, crash,
`kill -9`, a power cut), so a claim never outlives its owner and nobody has to
delete a file by hand: the stale pid left in the file after a crash is only a
message, never a lock (a run that ends removes the file). Under torchrun only
rank 0 claims; the other ranks of the same run follow it (they write nothing),
and a second run's rank 0 fails at once.
Readers (`average`, `inspect`, `translate`) take no lock: checkpoints appear
by atomic rename, so a busy directory's finished checkpoints are safe to read.

File systems without flock (some network mounts) get a warning and no lock.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mtkit.errors import MtkitError
from mtkit.io import write_error

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class RunDirBusy(MtkitError):
    """The run directory is held by another training."""


@contextmanager
def claim_run_dir(run_dir: Path | str, dist=None) -> Iterator[None]:
    """Hold RUN/.lock while the block runs; RunDirBusy at once if another process holds it.

    `dist` (mtkit.distributed.Dist) makes every rank but 0 skip the claim.
    The directory is created if missing. At the end the lock file is removed (a
    run directory keeps only the run's files), and so is the directory when the
    claim created it and nothing else was written into it.
    """
    if dist is not None and not dist.is_main:
        yield
        return
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(run_dir, error) from None
    fd, locked = _open_locked(run_dir)
    try:
        if locked:
            _write_holder(fd)
        yield
    finally:
        if locked:  # unlinked while still held: see _open_locked
            with contextlib.suppress(OSError):
                (run_dir / LOCK_NAME).unlink()
            if created:
                with contextlib.suppress(OSError):  # not empty: the run wrote something
                    run_dir.rmdir()
        os.close(fd)  # closing releases the lock


def _open_locked(run_dir: Path) -> tuple[int, bool]:
    """RUN/.lock opened and locked: (fd, whether locked). A holder removes the file while
    it still holds it, so a lock taken on a file that is no longer RUN/.lock is retried."""
    path = run_dir / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise write_error(path, error) from None
        try:
            locked = _lock(fd, run_dir)
            if not locked or os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd, locked
        except FileNotFoundError:
            pass  # removed by the holder that just ended: take the new one
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _lock(fd: int, run_dir: Path) -> bool:
    """Take the lock without waiting; False where the file system has no flock."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunDirBusy(busy_message(run_dir, holder(fd))) from None
    except OSError as error:
        if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        log.warning("cannot lock %s (%s): nothing stops a second training there", run_dir, error)
        return False
    return True


HOLDER = re.compile(r"^pid (\d+) on host (\S+) since (.+)$")


def holder(fd: int) -> str:
    """Who holds the lock, from the file's text: "pid 123 on host h since 02:31 UTC"."""
    # The holder writes its line just after it locks: give it a moment.
    for _ in range(20):
        text = os.pread(fd, 400, 0).decode("utf-8", "replace").strip()
        if text:
            return text
        time.sleep(0.05)
    return ""


def busy_message(run_dir: Path, text: str) -> str:
    """The refusal: who holds the run directory and how to tell whether it still runs."""
    lock = run_dir / LOCK_NAME
    found = HOLDER.match(text)
    if found is None:  # no holder line (yet), or a file an older mtkit wrote
        return (
            f"run directory {run_dir} is in use by another training (a process that has not "
            f"said who it is yet; `fuser -v {lock}` on its host names it); wait for it to end "
            "or stop it, or choose another --out"
        )
    pid, host, since = found.groups()
    who = f"pid {pid} on host {host} since {since}"
    if host == socket.gethostname() and not _alive(int(pid)):
        # flock belongs to the open file: a child forked by the trainer keeps it after a crash.
        return (
            f"run directory {run_dir} is in use by another training ({who}): pid {pid} has "
            f"ended but a process it started still holds {lock} (`fuser -v {lock}` names it); "
            "stop that process, or choose another --out"
        )
    return (
        f"run directory {run_dir} is in use by another training ({who}); `ps -p {pid}` on "
        f"{host} shows it, `kill {pid}` stops it (it saves first); wait for it to end or "
        "stop it, or choose another --out"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _write_holder(fd: int) -> None:
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    text = f"pid {os.getpid()} on host {socket.gethostname()} since {since}\n"
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode("utf-8"), 0)
        # On a network file system (NFS) another host sees the text only once it is flushed
        # to the server; without this a busy run's refusal there named nobody.
        os.fsync(fd)
    except OSError as error:  # the lock holds without the message; a full disk shows elsewhere
        log.warning("could not write who holds %s: %s", LOCK_NAME, error)
