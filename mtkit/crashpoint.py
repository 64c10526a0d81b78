"""Named crash points, for the crash tests: MTKIT_CRASH_AT makes a process kill itself there.

Stage code calls `crash_point(NAME)` at the moments where a crash tests its promise
that nothing half-written appears under a final name:

    write@FILE          each write into an atomic file (mtkit.io), FILE its final name
    before-rename@FILE  an atomic file complete under its temporary name
    after-rename@FILE   just after it took its final name
    mid-encode          the encoded corpus: after each chunk written (train/corpus.py)
    encoded-before-rename  the encoded corpus complete in its temporary directory
    export-before-rename   the export (CTranslate2, transformers) complete in its temporary dir
    update              train: after each update (train/loop.py)
    job-after-fsync     a translate job: a chunk fsync'd into OUT.partial, its progress
                        not yet committed (translate/shards.py)
    job-before-finish   a translate job: complete in its progress file, OUT.partial not
                        yet renamed to OUT

Unset, which is always the case for users, it costs one
dictionary look-up. Set, `MTKIT_CRASH_AT=NAME[:COUNT][:SIGNAL]` sends SIGNAL (KILL or
TERM; default KILL) to this very process the COUNT-th time (default 1) the point
NAME is reached, so a test can stop a command at a chosen step, as `kill` would;
NAME@FILE picks the point of one file ("before-rename@checkpoint_last.pt").
tests/test_crash.py drives it; docs/integrity.md lists the points.
"""

from __future__ import annotations

import os
import signal

ENV = "MTKIT_CRASH_AT"
_seen: dict[str, int] = {}


def crash_point(name: str, target: str | None = None) -> None:
    """Kill this process here if MTKIT_CRASH_AT names this point (and this is its count).

    `target` (a file name) lets a test pick one file's point: "before-rename@spm.model"
    matches only there, "before-rename" at every file.
    """
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    point, _, rest = wanted.partition(":")
    if point != name and point != f"{name}@{target}":
        return
    count, _, sig = rest.partition(":")
    if not (count or "1").isdigit() or sig.upper() not in ("", "KILL", "TERM"):
        from mtkit.errors import ConfigError

        raise ConfigError(
            f"{ENV}={wanted} is not NAME[:COUNT][:SIGNAL] with a whole COUNT and SIGNAL "
            "KILL or TERM, e.g. before-rename:2:TERM; unset it outside the crash tests"
        )
    _seen[point] = _seen.get(point, 0) + 1
    if _seen[point] != int(count or 1):
        return
    os.environ.pop(ENV)  # once: a handler that saves on SIGTERM must not crash again
    os.kill(os.getpid(), signal.SIGTERM if sig.upper() == "TERM" else signal.SIGKILL)
