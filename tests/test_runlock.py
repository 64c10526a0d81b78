"""A run directory is held by one training at a time, and the hold dies with its holder."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest
import torch
from test_train import TINY_FLAGS, m30k  # noqa: F401 - m30k is a fixture

from mtkit.runlock import LOCK_NAME, RunDirBusy, busy_message, claim_run_dir

HOLD = """
import sys, time
from mtkit.runlock import claim_run_dir
with claim_run_dir(sys.argv[1]):
    open(sys.argv[1] + "/work", "w").close()
    print("holding", flush=True)
    time.sleep(600)
"""


@dataclass
class Rank:
    rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def test_second_claim_refused_naming_directory_and_holder(tmp_path):
    run = tmp_path / "run"
    with claim_run_dir(run):
        with pytest.raises(RunDirBusy) as caught:  # noqa: PT012, SIM117
            with claim_run_dir(run):
                pass
        message = str(caught.value)
        assert message.startswith(f"run directory {run} is in use by another training (pid ")
        assert f"pid {os.getpid()} on host " in message and "\n" not in message
        assert "choose another --out" in message
        host = socket.gethostname()
        assert f"`ps -p {os.getpid()}` on {host} shows it, `kill {os.getpid()}` stops it" in message
        (run / "checkpoint_last.pt").write_bytes(b"x")
    with claim_run_dir(run):  # released at the end of the block
        assert (run / LOCK_NAME).exists()
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint_last.pt"]  # only the run's


def test_a_released_lock_file_cannot_be_taken_by_a_late_opener(tmp_path, monkeypatch):
    """The holder removes .lock while it holds it; a claim that opened the old file before
    that, and locks it after, must take the new RUN/.lock instead."""
    import fcntl

    from mtkit import runlock

    run = tmp_path / "run"
    with claim_run_dir(run):
        late = os.open(run / LOCK_NAME, os.O_RDWR)  # opened while the first run holds it
    real_open, opened = os.open, []

    def open_late_first(path, *args):  # the claim's first open returns the old file
        opened.append(path)
        return os.dup(late) if len(opened) == 1 else real_open(path, *args)

    monkeypatch.setattr(runlock.os, "open", open_late_first)
    try:
        with claim_run_dir(run):
            assert len(opened) == 2  # the old file was locked, seen to be stale, and left
            other = real_open(run / LOCK_NAME, os.O_RDWR)
            try:
                with pytest.raises(BlockingIOError):  # the live RUN/.lock is held
                    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(other)
    finally:
        os.close(late)


def test_claim_dies_with_a_killed_holder(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "holding"
        busy = f"in use by another training \\(pid {holder.pid} "
        with pytest.raises(RunDirBusy, match=busy), claim_run_dir(run):
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        with claim_run_dir(run):  # nobody deleted anything
            assert (run / LOCK_NAME).read_text().startswith(f"pid {os.getpid()} ")
    finally:
        holder.kill()
        holder.wait()


def test_refusal_says_how_to_tell_whether_the_holder_runs(tmp_path):
    """The holder's line names a pid and a host: on another host, `ps -p` there; on this
    host a pid that has ended while the lock is held means a child of it holds the lock."""
    run = tmp_path / "run"
    other = busy_message(run, "pid 4242 on host gpu-node-7 since 2026-01-01 10:00:00 UTC")
    assert other.startswith(f"run directory {run} is in use by another training (pid 4242 on ")
    assert "`ps -p 4242` on gpu-node-7 shows it" in other and "\n" not in other
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(ended.stdout)
    line = f"pid {pid} on host {socket.gethostname()} since 2026-01-01 10:00:00 UTC"
    orphan = busy_message(run, line)
    assert f"pid {pid} has ended but a process it started still holds {run}/{LOCK_NAME}" in orphan
    assert f"`fuser -v {run}/{LOCK_NAME}`" in orphan
    unknown = busy_message(run, "")
    assert "a process that has not said who it is yet" in unknown and "fuser -v" in unknown


def test_other_ranks_follow_rank_0(tmp_path):
    run = tmp_path / "run"
    with claim_run_dir(run, Rank(0)):
        with claim_run_dir(run, Rank(1)):  # the same run's rank 1: no claim, no refusal
            pass
        with pytest.raises(RunDirBusy):  # noqa: SIM117
            with claim_run_dir(run, Rank(0)):  # another run's rank 0
                pass


def test_a_run_that_wrote_nothing_leaves_no_directory(tmp_path):
    run = tmp_path / "runs" / "new"
    with pytest.raises(ValueError, match="bad option"):  # noqa: SIM117
        with claim_run_dir(run):
            assert run.is_dir()
            raise ValueError("bad option")
    assert not run.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with claim_run_dir(existing):
        pass
    assert existing.is_dir()  # a directory the user made stays


def test_lock_file_without_holder_text_waits_briefly(tmp_path):
    """A lock taken but not yet described still gives a one-line message."""
    import fcntl

    run = tmp_path / "run"
    run.mkdir()
    fd = os.open(run / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        began = time.monotonic()
        with pytest.raises(RunDirBusy, match="a process that has not said who it is yet"):  # noqa: SIM117
            with claim_run_dir(run):
                pass
        assert time.monotonic() - began < 30
    finally:
        os.close(fd)


def test_unwritable_place_is_one_line(tmp_path, monkeypatch):
    import errno

    from mtkit import runlock
    from mtkit.errors import WriteError

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(runlock.os, "open", read_only)
    with pytest.raises(WriteError, match=f"could not write {tmp_path}/{LOCK_NAME}: read-only"):  # noqa: SIM117
        with claim_run_dir(tmp_path):
            pass


def test_second_train_refused_then_resume_after_kill_9(m30k, tmp_path):  # noqa: F811
    """`mtkit train` twice on one --out: the second stops at once with one line naming the
    directory and the first's pid; after `kill -9` of the first, --resume goes on."""
    run = tmp_path / "run"
    args = [sys.executable, "-m", "mtkit", "train", "--data", m30k["data"], "--spm",
            m30k["spm"], "--out", run, *TINY_FLAGS, "--max-tokens", "800", "--threads", "1",
            "--device", "cpu", "--valid-every", "3", "--valid-bleu-sentences", "2",
            "--log-every", "1"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    log = open(tmp_path / "first.log", "w")  # noqa: SIM115 - a pipe could fill and stall it
    first = subprocess.Popen([*map(str, args), "--max-updates", "100000"], env=env,
                             stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not (run / "checkpoint_last.pt").exists():  # a checkpoint to resume from
            alive = first.poll() is None and time.monotonic() < deadline
            assert alive, (tmp_path / "first.log").read_text()[-2000:]
            time.sleep(0.2)
        second = subprocess.run([*map(str, args), "--resume", "--max-updates", "100000"],
                                env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert second.returncode == 1 and "Traceback" not in second.stderr
        errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert errors == [
            f"error: run directory {run} is in use by another training (pid {first.pid} on host "
            f"{socket.gethostname()} since {errors[0].split(' since ')[1]}"
        ]
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        step = torch.load(run / "checkpoint_last.pt", weights_only=True)["step"]
        resumed = subprocess.run([*map(str, args), "--resume", "--max-updates", str(step + 1)],
                                 env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert torch.load(run / "checkpoint_last.pt", weights_only=True)["step"] == step + 1
        assert not (run / LOCK_NAME).exists()  # the run ended: its claim file is gone
    finally:
        first.kill()
        first.wait()
        log.close()
