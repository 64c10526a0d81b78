"""`mtkit inspect --verify`: check files mtkit wrote against their checksums, without using them.

It recognizes, by their content:

- a checkpoint (a torch zip with mtkit's header): its content checksum;
- a run directory: each of its checkpoints;
- an encoded corpus (DATA/.encoded/KEY/, or DATA/.encoded itself): every array
  against the size and sha256 its meta.json records;
- a SentencePiece model (.model): that it loads (it carries no checksum);
- prepared data (DATA/ or DATA/manifest.json): every text file against the manifest's
  size and sha256, then the encoded corpora beside it;
- a translate job's progress file (OUT.progress.json, OUT.shard-K-of-N.progress.json):
  its checksum, then the output it describes (OUT.partial, or the finished shard)
  against the bytes it records;
- a finished shard (OUT.shard-K-of-N): through its progress file.

Each file checked gives one `Check`; anything else is a failed check that says so.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from mtkit.errors import MtkitError
from mtkit.io import CHECKSUM, file_checksum


@dataclass
class Check:
    path: Path
    ok: bool
    message: str

    def line(self) -> str:
        return f"{self.path}: {'ok' if self.ok else 'FAILED'}: {self.message}"


def verify_paths(paths: list[Path]) -> list[Check]:
    """One or more Checks for each path, in order."""
    checks: list[Check] = []
    for path in map(Path, paths):
        checks += verify_path(path)
    return checks


def verify_path(path: Path) -> list[Check]:
    if not path.exists():
        return [Check(path, False, "no such file or directory")]
    if path.is_dir():
        return _verify_directory(path)
    if path.name == "manifest.json":
        return _verify_prepared(path.parent)
    if path.name.endswith(".progress.json"):
        return _verify_progress(path)
    if (path.parent / (path.name + ".progress.json")).is_file():  # a shard's output
        return _verify_progress(path.parent / (path.name + ".progress.json"))
    if zipfile.is_zipfile(path):
        return [_verify_checkpoint(path)]
    if path.suffix == ".model":
        return [_verify_spm(path)]
    if (path.parent / "manifest.json").is_file():  # one prepared text file
        checks = [c for c in _verify_prepared(path.parent) if c.path == path]
        if checks:
            return checks
    return [Check(path, False, "not a kind of file mtkit checks (checkpoint, corpus, data)")]


def _verify_directory(path: Path) -> list[Check]:
    from mtkit.checkpoint import numbered_checkpoints
    from mtkit.train.corpus import DIRNAME

    if (path / "meta.json").is_file():
        return [_verify_corpus(path)]
    if (path / "manifest.json").is_file():
        return _verify_prepared(path)
    if path.name == DIRNAME:
        return _verify_encoded_root(path)
    checkpoints = sorted(set(path.glob("checkpoint_*.pt")) | set(numbered_checkpoints(path)))
    if checkpoints:
        return [_verify_checkpoint(p) for p in checkpoints]
    return [Check(path, False, "no checkpoints, manifest.json or encoded corpus in it")]


def _verify_checkpoint(path: Path) -> Check:
    from mtkit.checkpoint import load_checkpoint

    try:
        ckpt = load_checkpoint(path, verify=True, note=False)
    except MtkitError as error:
        return Check(path, False, str(error))
    if "checksum" not in ckpt:
        return Check(path, True, "checkpoint without a checksum (older mtkit): not verified")
    return Check(path, True, f"checkpoint, {CHECKSUM} matches (step {ckpt['step']})")


def _verify_spm(path: Path) -> Check:
    from mtkit.tokenizer import Tokenizer

    try:
        tok = Tokenizer.from_bytes(path.read_bytes(), name=str(path))
    except (MtkitError, RuntimeError, OSError) as error:
        return Check(path, False, f"not a readable SentencePiece model ({error!s:.80})")
    return Check(path, True, f"SentencePiece model, {tok.vocab_size:,} pieces (no checksum)")


def _verify_corpus(path: Path) -> Check:
    from mtkit.train.corpus import corpus_problem

    problem = corpus_problem(path, full=True)
    if problem is not None:
        return Check(path, False, f"{problem}; the next `mtkit train` encodes it again")
    return Check(path, True, f"encoded corpus, {CHECKSUM} of every array matches")


def _verify_encoded_root(root: Path) -> list[Check]:
    return [_verify_corpus(p) for p in sorted(root.iterdir()) if (p / "meta.json").is_file()]


def _verify_prepared(data: Path) -> list[Check]:
    """The prepared text files against manifest.json, then DATA/.encoded's corpora."""
    from mtkit.manifest import MANIFEST, recorded_files
    from mtkit.train.corpus import DIRNAME

    manifest_path = data / MANIFEST
    try:
        files = recorded_files(data)
        if not all({"name", "bytes", "lines", "sha256"} <= f.keys() for f in files):
            raise KeyError("name, bytes, lines, sha256")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return [Check(manifest_path, False, f"not a prepare manifest ({error!r:.80})")]
    checks = [_verify_text(data / f["name"], f) for f in files]
    if (data / DIRNAME).is_dir():
        checks += _verify_encoded_root(data / DIRNAME)
    return checks


def _verify_text(path: Path, want: dict) -> Check:
    if not path.is_file():
        return Check(path, False, "missing (manifest.json lists it)")
    size = path.stat().st_size
    if size != want["bytes"]:
        return Check(path, False, f"{size} bytes, not the {want['bytes']} manifest.json records")
    if file_checksum(path) != want["sha256"]:
        return Check(path, False, "sha256 differs from manifest.json's: the file changed")
    return Check(path, True, f"prepared text, {want['lines']:,} lines, sha256 matches")


def _verify_progress(path: Path) -> list[Check]:
    """A translate job's progress file, then the output it vouches for: a finished shard
    must have exactly the bytes recorded; a running job's OUT.partial at least as many
    (lines past the last commit are cut off when it resumes)."""
    from mtkit.translate.shards import load_state

    try:
        state = load_state(path, "translate again with --restart")
    except MtkitError as error:
        return [Check(path, False, str(error))]
    output = path.with_name(path.name.removesuffix(".progress.json"))
    partial = output.with_name(output.name + ".partial")
    done, want = state.get("lines_done", 0), state.get("output_bytes", 0)
    checks = [Check(path, True, f"translate job progress, {done:,} lines done, {CHECKSUM} matches")]
    if state.get("complete") and output.is_file() and not partial.exists():
        size = output.stat().st_size
        ok = size == want
        what = f"{size:,} bytes" + ("" if ok else f", not the {want:,} its progress file records")
        checks.append(Check(output, ok, f"finished translation, {what}"))
    elif partial.is_file():
        size = partial.stat().st_size
        ok = size >= want
        what = (
            f"{size:,} bytes, {want:,} committed" if ok else f"{size:,} bytes, fewer than {want:,}"
        )
        checks.append(Check(partial, ok, f"partial translation, {what}"))
    else:
        checks.append(Check(output, False, "missing: neither it nor its .partial is there"))
    return checks
