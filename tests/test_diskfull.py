"""A full disk or a read-only destination: one error line, nothing partial, no temporary file.

A full disk is made two ways: a file-size limit (`resource.setrlimit(RLIMIT_FSIZE)` in a
subprocess, SIGXFSZ ignored, so a write past it fails with EFBIG), which works for any
user; and, where mounting is allowed (root), a small tmpfs filled to the brim, which
fails with ENOSPC as a real disk does. Read-only is a tmpfs remounted read-only (root
ignores file modes), or a chmod 0o555 directory for other users.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_search import tiny_checkpoint
from test_train import TINY_FLAGS, m30k  # noqa: F401 - m30k is a fixture

from mtkit.errors import WriteError
from mtkit.io import atomic_write

LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
limit = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from mtkit.cli import main
sys.argv[0] = "mtkit"
main()
"""
FILE_SIZE_LIMIT = "file too large (file-size limit); raise the limit or write elsewhere"
NO_SPACE = "no space left on the device; free some space or write elsewhere"
READ_ONLY = "read-only file system; write somewhere writable"
PERMISSION = "permission denied; check the directory's permissions or write elsewhere"


def mtkit(*args, limit: int | None = None) -> subprocess.CompletedProcess:
    """`mtkit ARGS` in a subprocess, under a file-size limit of `limit` bytes if given."""
    command = [sys.executable, "-m", "mtkit"] if limit is None else [sys.executable, "-c", LIMITED]
    command += [] if limit is None else [str(limit)]
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, env=env)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one `error:` line of a failed command; its stderr holds no traceback."""
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def leftovers(directory: Path) -> list[str]:
    """Temporary files (and directories) left in `directory`."""
    return sorted(p.name for p in directory.rglob("*") if ".tmp" in p.name)


# -- where a write fails -----------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size, free=None, readonly=False) -> a directory on a fresh tmpfs; skips where
    mounting is not allowed. `free` bytes are left free by a filler file."""
    mounted = []

    def mount(size: int, free: int | None = None, readonly: bool = False) -> Path:
        point = tmp_path / f"fs{len(mounted)}"
        point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", point],
                                capture_output=True, text=True)  # fmt: skip
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}); needs root")
        mounted.append(point)
        if free is not None:
            _fill(point, free)
        if readonly:
            subprocess.run(["mount", "-o", "remount,ro", point], check=True)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", point], check=False)


def _fill(point: Path, free: int) -> None:
    """Leave about `free` bytes free on the file system at `point`."""
    stats = os.statvfs(point)
    available = stats.f_bavail * stats.f_frsize
    with open(point / "filler", "wb") as file:
        file.write(b"\0" * max(available - free, 0))


@pytest.fixture
def read_only(tmp_path, tmpfs):
    """A directory nobody can write into: chmod 0o555, or (root ignores modes) a tmpfs
    remounted read-only."""
    if os.geteuid() != 0:
        directory = tmp_path / "ro"
        directory.mkdir(mode=0o555)
        yield directory, PERMISSION
        directory.chmod(0o755)
        return
    yield tmpfs(1 << 20, readonly=True), READ_ONLY


# -- translate -o ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source(multi30k, tmp_path_factory) -> Path:
    """300 German lines: their translations are well over 4 KB."""
    with gzip.open(multi30k / "val.de.gz", "rt", encoding="utf-8") as file:
        lines = [next(file) for _ in range(300)]
    path = tmp_path_factory.mktemp("src") / "val.de"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def translate_args(multi30k, source: Path, out: Path) -> list:
    ckpt = tiny_checkpoint("transformer", multi30k)
    return ["translate", "-m", ckpt, "-i", source, "-o", out, "--beam", "1", "--threads", "1"]


def test_translate_output_past_a_file_size_limit(multi30k, source, tmp_path):
    out = tmp_path / "out" / "val.en"
    out.parent.mkdir()
    result = mtkit(*translate_args(multi30k, source, out), limit=4096)
    assert error_line(result) == f"error: could not write {out}: {FILE_SIZE_LIMIT}"
    assert list(out.parent.iterdir()) == []  # neither the output nor its temporary file


def test_translate_output_on_a_full_disk(multi30k, source, tmpfs):
    disk = tmpfs(256 << 10, free=4096)
    out = disk / "val.en"
    result = mtkit(*translate_args(multi30k, source, out))
    assert error_line(result) == f"error: could not write {out}: {NO_SPACE}"
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]


def test_translate_output_read_only(multi30k, source, read_only):
    directory, reason = read_only
    out = directory / "val.en"
    result = mtkit(*translate_args(multi30k, source, out))
    assert error_line(result) == f"error: could not write {out}: {reason}"
    assert list(directory.iterdir()) == []


# -- prepare ----------------------------------------------------------------------------


def prepare_args(multi30k, out: Path) -> list:
    return ["prepare", "--src", "de", "--tgt", "en", "--out", out,
            "--src-file", multi30k / "val.de.gz", "--tgt-file", multi30k / "val.en.gz"]  # fmt: skip


def test_prepare_past_a_file_size_limit(multi30k, tmp_path):
    out = tmp_path / "data"
    result = mtkit(*prepare_args(multi30k, out), limit=20_000)  # each side is ~70 KB
    line = error_line(result)
    assert line.startswith(f"error: could not write {out}/train.") and FILE_SIZE_LIMIT in line
    assert not out.exists() or list(out.iterdir()) == []


def test_prepare_manifest_fails_last_and_alone(multi30k, tmp_path, monkeypatch):
    """The text files are written, then the manifest fails: no manifest, one line."""
    from mtkit import io as mtkit_io

    real = mtkit_io.AtomicFile.__init__

    def read_only_manifest(self, path, *args, **kwargs):
        if Path(path).name == "manifest.json":
            raise mtkit_io.write_error(path, OSError(30, "Read-only file system"))
        real(self, path, *args, **kwargs)

    monkeypatch.setattr(mtkit_io.AtomicFile, "__init__", read_only_manifest)
    from conftest import call_main

    out = tmp_path / "data"
    assert call_main(monkeypatch, *prepare_args(multi30k, out)) == 1
    assert not (out / "manifest.json").exists() and leftovers(out) == []


def test_prepare_into_a_read_only_directory(multi30k, read_only):
    directory, reason = read_only
    line = error_line(mtkit(*prepare_args(multi30k, directory)))
    assert line.startswith(f"error: could not write {directory}/") and line.endswith(reason)
    assert list(directory.iterdir()) == []


def test_prepare_creating_its_directory_read_only(multi30k, read_only):
    directory, reason = read_only
    line = error_line(mtkit(*prepare_args(multi30k, directory / "data")))
    assert line.startswith("error: could not ") and line.endswith(reason)


# -- train-bpe ----------------------------------------------------------------------------


def test_train_bpe_past_a_file_size_limit(multi30k, tmp_path):
    text = tmp_path / "train.de"
    with gzip.open(multi30k / "train.de.gz", "rt", encoding="utf-8") as file:
        text.write_text("".join(next(file) for _ in range(3000)), encoding="utf-8")
    out = tmp_path / "spm"
    out.mkdir()
    result = mtkit("train-bpe", "-i", text, "-o", out, "--vocab-size", "500", limit=2_000)
    line = error_line(result)
    assert line.startswith(f"error: could not write {out}") and FILE_SIZE_LIMIT in line
    assert list(out.iterdir()) == []


# -- a checkpoint save during training -----------------------------------------------------


def test_checkpoint_save_that_fails_stops_training(m30k, tmp_path):  # noqa: F811
    """A run saves at update 2; resumed under a limit smaller than a checkpoint, its next
    save fails: training stops with one line, checkpoint_last.pt is the one of update 2."""
    run = tmp_path / "run"
    args = ["train", "--data", m30k["data"], "--spm", m30k["spm"], "--out", run, *TINY_FLAGS,
            "--max-tokens", "800", "--valid-every", "2", "--valid-bleu-sentences", "4",
            "--threads", "1", "--device", "cpu"]  # fmt: skip
    assert mtkit(*args, "--max-updates", "2").returncode == 0
    last = (run / "checkpoint_last.pt").read_bytes()
    limit = len(last) // 2
    result = mtkit(*args, "--max-updates", "6", "--resume", limit=limit)
    line = error_line(result)
    assert line.startswith(f"error: could not write {run}/checkpoint_") and FILE_SIZE_LIMIT in line
    assert (run / "checkpoint_last.pt").read_bytes() == last
    assert leftovers(run) == []


def test_library_error_during_a_write_is_named(tmp_path, monkeypatch):
    """torch.save turns a failed write into its own RuntimeError ("unexpected pos");
    atomic_write still names the cause, and leaves nothing behind."""
    import errno

    import torch

    from mtkit import io as mtkit_io

    class Full:  # a file on a full disk: every write fails with ENOSPC
        def __init__(self, file):
            self.file = file

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.file, name)

    real_fdopen = os.fdopen
    monkeypatch.setattr(mtkit_io.os, "fdopen", lambda *a, **k: Full(real_fdopen(*a, **k)))
    target = tmp_path / "x.pt"
    with pytest.raises(WriteError, match=f"could not write {target}: no space left"):  # noqa: SIM117
        with atomic_write(target) as file:
            torch.save({"w": torch.zeros(1000)}, file)
    assert list(tmp_path.iterdir()) == []


def test_encoded_corpus_past_a_file_size_limit(m30k, tmp_path):  # noqa: F811
    """train's first start encodes the corpus beside the data: a failed write is one line,
    and no encoding (finished-looking or half-written) is left for the next start."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(m30k["data"], data, ignore=shutil.ignore_patterns(".*"))
    args = ["train", "--data", data, "--spm", m30k["spm"], "--out", tmp_path / "run",
            *TINY_FLAGS, "--max-updates", "1", "--threads", "1", "--device", "cpu"]  # fmt: skip
    line = error_line(mtkit(*args, limit=20_000))  # each side encodes to ~100 KB
    assert line.startswith(f"error: could not write {data}/.encoded/") and FILE_SIZE_LIMIT in line
    # No encoding, finished-looking or temporary: only the flock and checksum files.
    assert [p.name for p in (data / ".encoded").iterdir() if p.is_dir()] == []
    assert not (tmp_path / "run").exists()
