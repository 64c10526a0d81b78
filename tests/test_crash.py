"""A crash test for every stage: killed at a named step, a command leaves nothing half-written
under a final name, runs again to success, and (where it is deterministic) ends with what an
uninterrupted run writes.

Each row of STAGES is one command: its arguments, the files it promises, the crash points
to stop it at (mtkit.crashpoint: MTKIT_CRASH_AT=POINT:COUNT:SIGNAL makes the process send
itself SIGTERM or SIGKILL there) and how its result compares with an uninterrupted run's.
A row runs: the uninterrupted reference (in this process, to spare a torch start-up), each
crash in a subprocess (`python -m mtkit`), one after the other into the same place, with a
check after each, then the same command again (in this process) and the comparison.
A new command is one more row. A longer randomized run: `python -m bench crash`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import call_main
from test_search import tiny_checkpoint
from test_train import TINY_FLAGS, m30k  # noqa: F401 - m30k is a fixture

from mtkit.checkpoint import load_checkpoint, save_checkpoint
from mtkit.train.corpus import CORPUS_FILES

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- how results compare -------------------------------------------------------------


def same_bytes(path: Path, reference: Path) -> bool:
    if path.is_dir():
        names = sorted(p.name for p in path.iterdir())
        if names != sorted(p.name for p in reference.iterdir()):
            return False
        return all(same_bytes(path / name, reference / name) for name in names)
    return path.read_bytes() == reference.read_bytes()


def same_manifest(path: Path, reference: Path) -> bool:
    """prepare's manifest.json: the same but for when it was made."""
    mine, theirs = (json.loads(p.read_text()) for p in (path, reference))
    return {**mine, "created": None} == {**theirs, "created": None}


def verifies(path: Path) -> bool:
    return load_checkpoint(path)["format"] == "mtkit-checkpoint"  # ChecksumError if not


def same_weights(path: Path, reference: Path) -> bool:
    """A checkpoint that verifies and holds the reference's step and weights."""
    mine, theirs = load_checkpoint(path), load_checkpoint(reference)
    weights = all(torch.equal(v, theirs["model"][k]) for k, v in mine["model"].items())
    return mine["step"] == theirs["step"] and weights


# -- the stages ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    name: str
    args: Callable[[dict, Path], list]  # (inputs, a fresh directory) -> the command line
    # The files it promises (glob patterns, expanded in the reference run's directory) ->
    # how one compares with the reference's: after a crash, each is whole or absent.
    outputs: dict[str, Callable[[Path, Path], bool]]
    crashes: tuple[str, ...]  # MTKIT_CRASH_AT values, in order, into the same directory
    # After a crash, what makes a promised file whole when it need not equal the final one
    # (train's checkpoint_last.pt of an earlier update); None: it compares as in `outputs`.
    whole: Callable[[Path], bool] | None = None
    # False: the uninterrupted run and the rerun go through the crash server too (a fork
    # pool forked from this long-lived pytest process could copy a lock held by one of
    # the threads earlier tests left, and hang).
    in_process: bool = True


def prepare_args(inputs: dict, out: Path) -> list:
    raw = inputs["raw"]
    return ["prepare", "--src", "de", "--tgt", "en", "--out", out / "data",
            "--src-file", raw / "train.de", "--tgt-file", raw / "train.en",
            "--valid-src-file", raw / "valid.de", "--valid-tgt-file", raw / "valid.en"]  # fmt: skip


def train_bpe_args(inputs: dict, out: Path) -> list:
    raw = inputs["raw"]
    return ["train-bpe", "-i", raw / "train.de", "-i", raw / "train.en", "--vocab-size", "300",
            "--threads", "1", "-o", out / "spm"]  # fmt: skip


def train_args(inputs: dict, out: Path) -> list:
    """--resume: the same command starts a run and continues it."""
    corpus = inputs["m30k"]
    return ["train", "--data", corpus["data"], "--spm", corpus["spm"], "--out", out / "run",
            *TINY_FLAGS, "--max-tokens", "800", "--max-updates", "4", "--valid-every", "2",
            "--valid-bleu-sentences", "2", "--threads", "1", "--device", "cpu",
            "--resume"]  # fmt: skip


def encode_args(inputs: dict, out: Path) -> list:
    """train's first start in a fresh copy of DATA: it encodes the corpus, then 1 update."""
    corpus, data = inputs["m30k"], out / "data"
    if not data.exists():
        shutil.copytree(corpus["data"], data, ignore=shutil.ignore_patterns(".*"))
    return ["train", "--data", data, "--spm", corpus["spm"], "--out", out / "run", *TINY_FLAGS,
            "--max-tokens", "800", "--max-updates", "1", "--valid-every", "1",
            "--valid-bleu-sentences", "1", "--threads", "1", "--device", "cpu",
            "--resume"]  # fmt: skip


def translate_args(inputs: dict, out: Path) -> list:
    source = inputs["raw"] / "valid.de"
    return ["translate", "-m", inputs["checkpoint"], "-i", source, "-o", out / "out.en",
            "--beam", "1", "--chunk-lines", "10", "--threads", "1"]  # fmt: skip


def merge_args(inputs: dict, out: Path) -> list:
    """translate-merge of two finished shards of valid.de (copied in, unless already merged
    or there from a crashed merge)."""
    shards = inputs["root"] / "shards"
    if not shards.exists():
        shards.mkdir()
        with pytest.MonkeyPatch.context() as monkeypatch:
            for k in (1, 2):
                args = translate_args(inputs, shards)[:-2]  # without --threads: one already
                assert call_main(monkeypatch, *args, "--shard", f"{k}/2") == 0
    if not (out / "out.en").exists() and not list(out.glob("out.en.shard-*")):
        for path in shards.glob("out.en.shard-*"):
            shutil.copy(path, out / path.name)
    return ["translate-merge", "-o", out / "out.en"]


def langid_args(inputs: dict, out: Path) -> list:
    """prepare with its language-identification worker pool (two forked workers)."""
    return [*prepare_args(inputs, out), "--langid", "--langid-workers", "2"]


def mix_args(inputs: dict, out: Path) -> list:
    """train's first start on two corpora (the second tagged): it encodes both."""
    corpus = inputs["m30k"]
    for name in ("a", "b"):
        if not (out / name).exists():
            shutil.copytree(corpus["data"], out / name, ignore=shutil.ignore_patterns(".*"))
    return ["train", "--data", out / "a", "--data", f"{out / 'b'}:1:tag", "--spm",
            corpus["spm"], "--out", out / "run", *TINY_FLAGS, "--max-tokens", "800",
            "--max-updates", "1", "--valid-every", "1", "--valid-bleu-sentences", "1",
            "--threads", "1", "--device", "cpu", "--resume"]  # fmt: skip


def average_args(inputs: dict, out: Path) -> list:
    return ["average", inputs["checkpoint"], inputs["other"], "-o", out / "avg.pt"]


def export_args(inputs: dict, out: Path) -> list:
    return ["export", "-m", inputs["checkpoint"], "-o", out / "ct2", "--force"]


def import_args(inputs: dict, out: Path) -> list:
    return ["import", inputs["marian"], "-o", out / "m.pt"]


STAGES = [
    Stage("prepare", prepare_args,
          {"data/train.de": same_bytes, "data/train.en": same_bytes, "data/valid.de": same_bytes,
           "data/valid.en": same_bytes, "data/manifest.json": same_manifest},
          ("write@train.en:2:TERM", "after-rename@train.de:1:KILL",
           "before-rename@manifest.json:1:KILL")),
    Stage("train-bpe", train_bpe_args, {"spm/spm.vocab": same_bytes, "spm/spm.model": same_bytes},
          ("after-rename@spm.vocab:1:TERM", "before-rename@spm.model:1:KILL")),
    # The corpus directory's arrays; its meta.json names its own DATA, so it differs.
    Stage("encoded-corpus", encode_args,
          {f"data/.encoded/*/{name}": same_bytes for name in CORPUS_FILES},
          ("mid-encode:1:TERM", "encoded-before-rename:1:KILL")),
    Stage("train", train_args, {"run/checkpoint_last.pt": same_weights},
          ("update:3:TERM", "before-rename@checkpoint_last.pt:1:KILL"), whole=verifies),
    # A resumable job: killed between a chunk's fsync and its progress commit, in the
    # progress file's rename, and complete but not yet renamed to its final name.
    Stage("translate", translate_args, {"out.en": same_bytes},
          ("job-after-fsync:2:TERM", "before-rename@out.en.progress.json:3:KILL",
           "job-after-fsync:3:KILL", "job-before-finish:1:KILL")),
    Stage("translate-merge", merge_args, {"out.en": same_bytes},
          ("write@out.en:2:TERM", "before-rename@out.en:1:KILL", "after-rename@out.en:1:KILL")),
    Stage("prepare-langid", langid_args,
          {"data/train.de": same_bytes, "data/train.en": same_bytes,
           "data/manifest.json": same_manifest},
          ("write@train.de:2:KILL", "write@train.en:1:TERM"), in_process=False),
    # Killed while it encodes the second corpus (after the first's two files, then, the
    # first kept, after the second's first file).
    Stage("encoded-mix", mix_args,
          {f"{name}/.encoded/*/{file}": same_bytes for name in "ab" for file in CORPUS_FILES},
          ("mid-encode:3:KILL", "mid-encode:1:TERM")),
    Stage("average", average_args, {"avg.pt": same_bytes},
          ("write@avg.pt:3:TERM", "before-rename@avg.pt:1:KILL")),
    Stage("export", export_args, {"ct2": same_bytes},
          ("export-before-rename:1:TERM", "export-before-rename:1:KILL")),
    Stage("import", import_args, {"m.pt": same_bytes},
          ("write@m.pt:2:TERM", "before-rename@m.pt:1:KILL")),
]  # fmt: skip


# -- inputs ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(multi30k, m30k, tmp_path_factory) -> dict:  # noqa: F811
    import gzip

    root = tmp_path_factory.mktemp("crash-inputs")
    raw = root / "raw"
    raw.mkdir()
    for name, split, n in (("train", "train", 1500), ("valid", "val", 60)):
        for lang in ("de", "en"):
            with gzip.open(multi30k / f"{split}.{lang}.gz", "rt", encoding="utf-8") as file:
                (raw / f"{name}.{lang}").write_text("".join(next(file) for _ in range(n)))
    checkpoint = tiny_checkpoint("transformer", multi30k)
    ckpt = load_checkpoint(checkpoint)
    torch.manual_seed(1)
    ckpt["model"] = {k: v + 0.01 * torch.randn_like(v) for k, v in ckpt["model"].items()}
    other = save_checkpoint(root / "other.pt", ckpt)
    return {"raw": raw, "m30k": m30k, "checkpoint": checkpoint, "other": other,
            "root": root}  # fmt: skip


def marian_directory(inputs: dict, multi30k: Path) -> Path:
    """A tiny Hugging Face Marian model saved with save_pretrained (test_import builds it)."""
    if "marian" not in inputs:
        from test_import import SHAPES, _build

        pytest.importorskip("transformers")
        with pytest.warns(UserWarning, match="sacremoses"):
            directory, _, _ = _build(inputs["root"], multi30k, "relu", SHAPES["shared-relu"])
        inputs["marian"] = directory
    return inputs["marian"]


# -- the test ----------------------------------------------------------------------------


# Each crash runs mtkit's entry point (what `python -m mtkit` runs) in a child forked from
# one server process that imported torch once: a fresh `python -m mtkit` pays torch's 2-5 s
# start-up on a busy machine, and a module of ~20 crashes would spend minutes on that alone.
# The server runs no torch op before it forks, so the children start with no threads.
SERVER = r"""
import json, os, signal, sys
from mtkit.device import set_native_defaults
set_native_defaults()
import torch  # noqa: F401 - imported once, before any fork
import mtkit.cli
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)  # its workers join this group: the test looks for orphans by it
        signal.alarm(300)  # a command that never reaches its crash point fails, not hangs
        os.environ.update(request["env"])
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        sys.argv = ["mtkit", *request["args"]]
        code = 0
        try:
            mtkit.cli.main()
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), pid, flush=True)
"""


@dataclass
class Crashed:
    returncode: int  # negative: killed by that signal, as subprocess gives it
    stderr: str
    pid: int  # also its process group's id


@pytest.fixture(scope="module")
def crash_server():
    """run(args, crash_at, log) -> Crashed: one mtkit command in a forked child."""
    if not hasattr(os, "fork"):
        pytest.skip("the crash tests fork their commands (POSIX only)")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip

    def run(args: list, crash_at: str, log: Path) -> Crashed:
        request = {"args": [str(a) for a in args], "env": {"MTKIT_CRASH_AT": crash_at},
                   "log": str(log)}  # fmt: skip
        server.stdin.write(json.dumps(request) + "\n")
        server.stdin.flush()
        line = server.stdout.readline()
        assert line, "the crash server died"
        code, pid = line.split()
        return Crashed(int(code), log.read_text(errors="replace"), int(pid))

    yield run
    server.stdin.close()
    server.wait(timeout=60)


def live_processes(group: int) -> list[int]:
    """Processes of a process group that still run (zombies aside: whether the container's
    init reaps orphans is not mtkit's to test)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended while we looked
        if int(fields[2]) == group and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def no_orphans(group: int) -> bool:
    """No process of the killed command's group left after a few seconds (a worker of a
    SIGKILLed parent notices it at its next read)."""
    import time

    for _ in range(100):
        if not live_processes(group):
            return True
        time.sleep(0.1)
    return False


def temporary_files(directory: Path) -> set[Path]:
    """Files and directories under temporary names (a leading dot): atomic writes' own."""
    return {p for p in directory.rglob(".*") if p.name not in (".encoded", ".lock")}


@pytest.mark.parametrize("stage", STAGES, ids=[stage.name for stage in STAGES])
def test_a_killed_command_leaves_whole_files_and_runs_again(
    stage, inputs, crash_server, multi30k, tmp_path, monkeypatch
):
    if stage.name == "export":
        pytest.importorskip("ctranslate2")
    if stage.name == "import":
        marian_directory(inputs, multi30k)
    reference, out = tmp_path / "reference", tmp_path / "out"
    reference.mkdir()
    out.mkdir()

    def run(directory: Path, log: str) -> int:
        if stage.in_process:
            return call_main(monkeypatch, *stage.args(inputs, directory))
        done = crash_server(stage.args(inputs, directory), "", tmp_path / log)
        assert done.returncode == 0, done.stderr[-3000:]
        return 0

    assert run(reference, "reference.log") == 0
    promised = {
        path.relative_to(reference): same
        for pattern, same in stage.outputs.items()
        for path in sorted(reference.glob(pattern))
    }
    assert len(promised) >= len(stage.outputs), f"the uninterrupted {stage.name} wrote too little"
    for number, crash_at in enumerate(stage.crashes):
        before = temporary_files(out)
        result = crash_server(stage.args(inputs, out), crash_at, tmp_path / f"crash{number}.log")
        killed = crash_at.endswith("KILL")
        expected = -signal.SIGKILL if killed else 128 + signal.SIGTERM
        assert result.returncode == expected, f"{crash_at}: {result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        if Path("/proc/self/stat").exists():
            assert no_orphans(result.pid), f"{crash_at} left processes {live_processes(result.pid)}"
        for name, same in promised.items():  # whole, or not there at all
            path = out / name
            if path.exists():
                whole = stage.whole(path) if stage.whole else same(path, reference / name)
                assert whole, f"{name} is not whole after {crash_at}"
        if not killed:  # SIGTERM unwinds: what it was writing is discarded
            assert temporary_files(out) <= before, f"{crash_at} left {temporary_files(out)}"
    assert run(out, "again.log") == 0  # the same command again
    for name, same in promised.items():
        assert same(out / name, reference / name), f"{stage.name}: {name} differs"


def test_crash_point_counts_matches_and_refuses_a_bad_value(monkeypatch):
    from mtkit import crashpoint
    from mtkit.errors import ConfigError

    sent = []
    monkeypatch.setattr(crashpoint.os, "kill", lambda pid, signum: sent.append(signum))
    monkeypatch.setattr(crashpoint, "_seen", {})
    monkeypatch.setenv(crashpoint.ENV, "write@a.txt:2:TERM")
    crashpoint.crash_point("write", "b.txt")  # another file's point
    crashpoint.crash_point("before-rename", "a.txt")  # another point
    crashpoint.crash_point("write", "a.txt")  # the first time: not yet
    assert sent == []
    crashpoint.crash_point("write", "a.txt")
    assert sent == [signal.SIGTERM] and crashpoint.ENV not in os.environ  # once only
    monkeypatch.setenv(crashpoint.ENV, "mid-encode")
    crashpoint.crash_point("mid-encode")
    assert sent == [signal.SIGTERM, signal.SIGKILL]  # default: the first time, SIGKILL
    monkeypatch.setenv(crashpoint.ENV, "write:twice")
    with pytest.raises(ConfigError, match="MTKIT_CRASH_AT=write:twice is not NAME"):
        crashpoint.crash_point("write")
