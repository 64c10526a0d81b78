"""Translation jobs (mtkit.translate.shards): resumed after kill -9 = uninterrupted, shards,
workers and torchrun ranks merged = one process, and one-line errors for bad jobs.

Uses the tiny transformer of test_search.py on 120 real lines (with empty ones), in
chunks of 8 lines so a job commits often. Runs that must die (kill -9) or start
processes run `python -m mtkit` in a subprocess; the others call the CLI's entry point
in this process.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import call_main
from test_diskfull import read_only, tmpfs  # noqa: F401 - fixtures
from test_search import tiny_checkpoint

from mtkit.io import json_checksum, with_json_checksum
from mtkit.translate.noise import NoiseOptions, line_random, noise_words
from mtkit.translate.shards import KILL_AFTER_ENV, parse_shard, shard_range
from mtkit.verify import verify_paths

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LINES = 120
EMPTY = range(3, LINES, 17)
CHUNK = ("--chunk-lines", "8", "--threads", "1")
MODES = {
    "greedy": ("--beam", "1"),
    "beam": ("--beam", "3"),
    "sampling": ("--sampling", "--top-p", "0.9", "--nbest", "2", "--seed", "11"),
    "noised": ("--beam", "2", "--noised", "--seed", "5"),
}


@pytest.fixture(scope="module")
def ckpt(multi30k) -> Path:
    return tiny_checkpoint("transformer", multi30k)


@pytest.fixture(scope="module")
def source(multi30k, tmp_path_factory) -> Path:
    """LINES real German lines, some empty, one with a tab, no final newline."""
    with gzip.open(multi30k / "val.de.gz", "rt", encoding="utf-8") as file:
        lines = [next(file).strip() for _ in range(LINES)]
    for i in EMPTY:
        lines[i] = ""
    lines[5] = lines[5].replace(" ", "\t", 1)
    path = tmp_path_factory.mktemp("src") / "mono.de"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture
def mtkit_main(monkeypatch, capsysbinary):
    """`mtkit ARGS` in this process: (exit code, stderr text)."""

    def run(*args):
        code = call_main(monkeypatch, *args)
        _, err = capsysbinary.readouterr()
        return code, err.decode("utf-8")

    return run


def subprocess_mtkit(*args, env: dict | None = None, module: tuple = ("-m", "mtkit")):
    environ = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", **(env or {})}
    command = [sys.executable, *module, *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=environ, timeout=300)


@pytest.fixture(scope="module")
def reference(ckpt, source, tmp_path_factory) -> dict[str, bytes]:
    """Each mode's output of one uninterrupted job (in this process)."""
    import pytest as _pytest

    outputs = {}
    directory = tmp_path_factory.mktemp("reference")
    with _pytest.MonkeyPatch.context() as monkeypatch:
        for mode, flags in MODES.items():
            out = directory / f"{mode}.en"
            assert call_main(monkeypatch, "translate", "-m", ckpt, "-i", source, "-o", out,
                             *CHUNK, *flags) == 0  # fmt: skip
            outputs[mode] = out.read_bytes()
    return outputs


def same_output(got: bytes, want: bytes) -> bool:
    """Equal, but for n-best scores in the last digit: shards batch their lines with other
    neighbours than one process, which moves a float sum by a rounding error."""
    if got == want:
        return True
    got_lines, want_lines = got.split(b"\n"), want.split(b"\n")
    if len(got_lines) != len(want_lines):
        return False
    for a, b in zip(got_lines, want_lines, strict=True):
        *a_head, a_score = a.split(b" ||| ")
        *b_head, b_score = b.split(b" ||| ")
        if a_head != b_head or abs(float(a_score or 0) - float(b_score or 0)) > 2e-4:
            return False
    return True


def job_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# -- resumed = uninterrupted ----------------------------------------------------------

# Where each mode's runs kill themselves (lines written, not all committed): random
# points, drawn once so a failure can be rerun; sampling's first dies before any commit.
_RNG = random.Random(22)
KILLS = {
    "greedy": [_RNG.randrange(9, LINES)],
    "beam": sorted(_RNG.sample(range(9, LINES), 2)),
    "sampling": [5, _RNG.randrange(9, LINES)],
    "noised": [_RNG.randrange(9, LINES)],
}


@pytest.mark.parametrize("mode", list(MODES))
def test_kill_9_then_resume_gives_the_uninterrupted_output(
    mode, ckpt, source, reference, mtkit_main, tmp_path
):
    out = tmp_path / "out.en"
    if mode == "noised":  # and from gzip: resumed by decompressing up to the offset
        packed = tmp_path / "in.de.gz"
        packed.write_bytes(gzip.compress(source.read_bytes()))
        source = packed
    args = ("translate", "-m", ckpt, "-i", source, "-o", out, *CHUNK, *MODES[mode])
    done_before = 0
    for kill_at in KILLS[mode]:
        killed = subprocess_mtkit(*args, env={KILL_AFTER_ENV: str(kill_at)})
        assert killed.returncode == -9, killed.stderr[-2000:]
        assert not out.exists()  # never under its final name before the end
        state = json.loads((tmp_path / "out.en.progress.json").read_text())
        assert done_before <= state["lines_done"] <= kill_at
        assert state["lines_done"] % 8 == 0  # commits at chunk ends only
        partial = (tmp_path / "out.en.partial").stat().st_size
        assert partial >= state["output_bytes"]  # written past the commit, to be cut back
        done_before = state["lines_done"]
    code, err = mtkit_main(*args)
    assert code == 0, err
    assert f"{LINES}/" in err  # one bar for the whole job, from the lines done before (of ?: gzip)
    assert out.read_bytes() == reference[mode]  # gzip or not: the same keys
    assert job_files(tmp_path) == (["in.de.gz"] if mode == "noised" else []) + ["out.en"]


# -- changed jobs are refused, or restarted on request ---------------------------------


def _killed_job(ckpt, source, out: Path, *flags) -> tuple:
    args = ("translate", "-m", ckpt, "-i", source, "-o", out, *CHUNK, *flags)
    killed = subprocess_mtkit(*args, env={KILL_AFTER_ENV: "30"})
    assert killed.returncode == -9
    return args


def test_changed_option_input_or_model_is_refused_and_restart_starts_over(
    ckpt, source, reference, mtkit_main, tmp_path
):
    out = tmp_path / "out.en"
    args = ("translate", "-m", ckpt, "-i", source, "-o", out, *CHUNK)
    killed = subprocess_mtkit(*args, "--beam", "3", env={KILL_AFTER_ENV: "30"})
    assert killed.returncode == -9
    code, err = mtkit_main(*args, "--beam", "1")
    assert code == 1 and "Traceback" not in err
    assert "the option --beam changed (3 -> 1)" in err and "--restart" in err

    changed = tmp_path / "changed.de"
    changed.write_bytes(source.read_bytes() + b"\nnoch eine Zeile")
    code, err = mtkit_main(*[changed if a == source else a for a in args], "--beam", "3")
    assert code == 1 and "the input changed" in err, err

    other = tmp_path / "other.pt"
    other.write_bytes(ckpt.read_bytes() + b"\0")
    code, err = mtkit_main(*[other if a == ckpt else a for a in args], "--beam", "3")
    assert code == 1 and f"the model changed ({other} is not" in err, err

    code, err = mtkit_main(*args, "--beam", "1", "--restart")
    assert code == 0, err
    assert out.read_bytes() == reference["greedy"]
    assert job_files(tmp_path) == ["changed.de", "other.pt", "out.en"]


def test_progress_files_carry_a_checksum_checked_on_resume_merge_and_verify(
    ckpt, source, reference, mtkit_main, tmp_path
):
    out = tmp_path / "out.en"
    args = _killed_job(ckpt, source, out, "--beam", "1")
    progress = tmp_path / "out.en.progress.json"
    written = progress.read_text()
    state = json.loads(written)
    assert state["checksum"] == json_checksum(state)
    checks = verify_paths([progress])
    assert [c.ok for c in checks] == [True, True], checks
    assert checks[1].path == tmp_path / "out.en.partial"

    progress.write_text(written.replace('"lines_done": ', '"lines_done": 1'))  # a bit flip
    code, err = mtkit_main(*args)
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"{progress} is damaged" in err and "--restart" in err, err
    assert not verify_paths([progress])[0].ok

    del state["checksum"]  # written by an mtkit before checksums: resumes, with a note
    progress.write_text(json.dumps(state))
    code, err = mtkit_main(*args)
    assert code == 0 and "no checksum" in err, err
    assert out.read_bytes() == reference["greedy"]

    code, err = mtkit_main(*args[:5], "-o", tmp_path / "s.en", *CHUNK, "--shard", "1/1")
    assert code == 0, err
    shard = tmp_path / "s.en.shard-1-of-1"
    checks = verify_paths([shard])
    assert [(c.path, c.ok) for c in checks] == [
        (tmp_path / "s.en.shard-1-of-1.progress.json", True),
        (shard, True),
    ], checks
    with open(shard, "ab") as file:
        file.write(b"x")
    assert [c.ok for c in verify_paths([shard])] == [True, False]


# -- shards, workers, torchrun --------------------------------------------------------


def test_shard_ranges_cover_every_line_once(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes(b"a\n\nbbbbbbbbbbbbbbbbbbbb\nc\nd\n" * 3 + b"tail")
    for n in (1, 2, 3, 7, 40):
        ranges = [shard_range(path, k, n) for k in range(1, n + 1)]
        assert ranges[0][0] == 0 and ranges[-1][1] == path.stat().st_size
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
        data = path.read_bytes()
        assert all(s in (0, len(data)) or data[s - 1 : s] == b"\n" for s, _ in ranges)


@pytest.mark.parametrize("mode", ["beam", "sampling"])
def test_shards_merged_equal_one_process(mode, ckpt, source, reference, mtkit_main, tmp_path):
    out = tmp_path / "out.en"
    for k in (3, 1, 2):  # in any order, as a job array runs them
        code, err = mtkit_main("translate", "-m", ckpt, "-i", source, "-o", out, *CHUNK,
                               *MODES[mode], "--shard", f"{k}/3")  # fmt: skip
        assert code == 0, err
    assert not out.exists()
    assert len(list(tmp_path.glob("out.en.shard-*-of-3"))) == 3
    code, err = mtkit_main("translate-merge", "-o", out)
    assert code == 0, err
    assert same_output(out.read_bytes(), reference[mode])  # n-best LINE numbers renumbered
    assert job_files(tmp_path) == ["out.en"]


def test_workers_equal_one_process(ckpt, source, reference, tmp_path):
    out = tmp_path / "out.en"
    run = subprocess_mtkit("translate", "-m", ckpt, "-i", source, "-o", out, *CHUNK,
                           *MODES["beam"], "--workers", "2")  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert out.read_bytes() == reference["beam"]
    assert job_files(tmp_path) == ["out.en"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_torchrun_two_gloo_ranks_equal_one_process(ckpt, source, reference, tmp_path):
    out = tmp_path / "out.en"
    torchrun = ("-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", str(_free_port()), "-m", "mtkit")  # fmt: skip
    run = subprocess_mtkit("translate", "-m", ckpt, "-i", source, "-o", out, *CHUNK,
                           *MODES["sampling"], "--device", "cpu", module=torchrun)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "terminate called" not in run.stderr
    assert same_output(out.read_bytes(), reference["sampling"])
    assert job_files(tmp_path) == ["out.en"]


# -- side by side ----------------------------------------------------------------------


def test_tsv_output_is_what_prepare_reads(ckpt, source, mtkit_main, tmp_path):
    out = tmp_path / "bt.tsv"
    code, err = mtkit_main("translate", "-m", ckpt, "-i", source, "-o", out, *CHUNK,
                           "--beam", "1", "--output-format", "tsv")  # fmt: skip
    assert code == 0, err
    rows = out.read_text(encoding="utf-8").split("\n")[:-1]
    sources = source.read_text(encoding="utf-8").split("\n")
    assert len(rows) == LINES
    assert [r.split("\t")[0] for r in rows] == [s.replace("\t", " ") for s in sources]
    code, err = mtkit_main("prepare", "--src", "de", "--tgt", "en", "--pair", "de-en",
                           "--tsv", out, "--out", tmp_path / "data")  # fmt: skip
    assert code == 0, err
    kept = (tmp_path / "data" / "train.de").read_text(encoding="utf-8").splitlines()
    assert 0 < len(kept) <= LINES - len(EMPTY)  # empty sides dropped


# -- noise ----------------------------------------------------------------------------


def test_a_noise_filler_the_model_cannot_encode_is_one_warning(ckpt, source, mtkit_main, tmp_path):
    """This model's SentencePiece model is not from train-bpe (which reserves <blank>,
    tests/test_tokenizer.py), so the default filler would encode to <unk>s: one warning,
    with --workers too.
    A filler of letters it knows gives none, and synthetic sources free of <unk>."""
    from mtkit.translate.stream import RuntimeOptions, load_translator

    code, err = mtkit_main("translate", "-m", ckpt, "-i", source, "-o", tmp_path / "blank.en",
                           *MODES["noised"])  # fmt: skip
    assert code == 0 and err.count("--noise-filler '<blank>' holds characters") == 1, err
    run = subprocess_mtkit("translate", "-m", ckpt, "-i", source, "-o", tmp_path / "w.en",
                           *MODES["noised"], "--workers", "2")  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.count("holds characters") == 1, run.stderr  # not once per worker
    out = tmp_path / "letters.en"
    code, err = mtkit_main("translate", "-m", ckpt, "-i", source, "-o", out, *MODES["noised"],
                           "--noise-filler", "BLANK")  # fmt: skip
    assert code == 0 and "--noise-filler" not in err, err
    text = out.read_text(encoding="utf-8")
    assert "BLANK" in text
    tokenizer = load_translator([ckpt], RuntimeOptions(device="cpu", threads=1)).tgt_tokenizer
    assert not any(tokenizer.unk_id in row for row in tokenizer.encode(text.splitlines()))


def test_noise_is_local_seeded_per_line_and_off_at_zero():
    words = [f"w{i}" for i in range(40)]
    text = " ".join(words)
    shuffle_only = NoiseOptions(noised=True, noise_delete=0.0, noise_blank=0.0)
    for key in range(50):
        moved = noise_words(text, shuffle_only, line_random(1, key)).split()
        assert sorted(moved) == sorted(words)
        assert all(abs(moved.index(w) - i) < 3 for i, w in enumerate(words))  # k = 3
    noised = NoiseOptions(noised=True)
    assert noise_words(text, noised, line_random(1, 7)) == noise_words(
        text, noised, line_random(1, 7)
    )
    assert noise_words(text, noised, line_random(1, 7)) != noise_words(
        text, noised, line_random(2, 7)
    )
    many = [noise_words(text, noised, line_random(3, key)).split() for key in range(200)]
    kept = sum(len(m) for m in many) / (200 * len(words))
    blanks = sum(m.count("<blank>") for m in many) / sum(len(m) for m in many)
    assert 0.85 < kept < 0.95 and 0.07 < blanks < 0.13  # 0.1 deleted, 0.1 blanked
    off = NoiseOptions(noised=True, noise_delete=0.0, noise_blank=0.0, noise_shuffle=0.0)
    assert noise_words(text, off, line_random(1, 7)) == text
    assert noise_words("einziges", NoiseOptions(noise_delete=0.99), line_random(0, 0)) == "einziges"


# -- bad jobs: one line, exit 1, nothing left --------------------------------------------


@pytest.mark.parametrize("shard", ["0/3", "4/3", "3", "a/b", "1/0", "-1/2"])
def test_bad_shard(shard, ckpt, source, mtkit_main, tmp_path):
    code, err = mtkit_main(
        "translate", "-m", ckpt, "-i", source, "-o", tmp_path / "o", "--shard", shard
    )
    assert code == 1 and "Traceback" not in err and "--shard" in err, err
    assert job_files(tmp_path) == []


def test_split_jobs_need_files(ckpt, source, mtkit_main, monkeypatch, capsysbinary):
    for flags in (("--shard", "1/2"), ("--workers", "2")):
        code, err = mtkit_main("translate", "-m", ckpt, "-i", source, *flags)  # to stdout
        assert code == 1 and "need files" in err, err
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, err = mtkit_main("translate", "-m", ckpt, "-i", source)
    assert code == 1 and "need files" in err, err


def test_sharded_sampling_needs_a_seed_and_gzip_is_refused(ckpt, source, mtkit_main, tmp_path):
    code, err = mtkit_main("translate", "-m", ckpt, "-i", source, "-o", tmp_path / "o",
                           "--sampling", "--shard", "1/2")  # fmt: skip
    assert code == 1 and "--seed" in err, err
    packed = tmp_path / "in.de.gz"
    packed.write_bytes(gzip.compress(source.read_bytes()))
    code, err = mtkit_main("translate", "-m", ckpt, "-i", packed, "-o", tmp_path / "o",
                           "--shard", "1/2")  # fmt: skip
    assert code == 1 and "gunzip" in err, err
    assert job_files(tmp_path) == ["in.de.gz"]


def test_merge_refuses_missing_unfinished_and_foreign_shards(ckpt, source, mtkit_main, tmp_path):
    out = tmp_path / "out.en"
    code, err = mtkit_main("translate-merge", "-o", out)
    assert code == 1 and "no shards" in err, err

    def shard(k, *flags):
        code, err = mtkit_main("translate", "-m", ckpt, "-i", source, "-o", out, *CHUNK,
                               "--beam", "1", "--shard", f"{k}/3", *flags)  # fmt: skip
        assert code == 0, err

    shard(1)
    shard(3, "--len-penalty", "0.5")
    code, err = mtkit_main("translate-merge", "-o", out)
    assert code == 1 and "shard 2 of 3 is missing" in err and "--shard 2/3" in err, err
    shard(2)
    code, err = mtkit_main("translate-merge", "-o", out)
    assert code == 1 and "shard 3 of 3 comes from another run" in err and "len-penalty" in err
    shard(3, "--restart")
    progress = tmp_path / "out.en.shard-3-of-3.progress.json"
    finished = progress.read_text()
    edited = finished.replace('"complete": true', '"complete": false')
    progress.write_text(edited)  # by hand: its checksum no longer matches
    code, err = mtkit_main("translate-merge", "-o", out)
    assert code == 1 and f"{progress} is damaged" in err and "--shard 3/3 --restart" in err, err
    state = json.loads(edited)
    progress.write_text(json.dumps(with_json_checksum(state)))  # as mtkit would write it
    code, err = mtkit_main("translate-merge", "-o", out)
    assert code == 1 and "shard 3 of 3 is not finished" in err, err
    progress.write_text(finished)
    (tmp_path / "out.en.shard-1-of-2.progress.json").write_text("{}")
    code, err = mtkit_main("translate-merge", "-o", out)
    assert code == 1 and "different splits" in err, err
    assert not out.exists()
    code, err = mtkit_main("translate-merge", "-o", out, "--shards", "3")
    assert code == 0, err
    assert len(out.read_text(encoding="utf-8").split("\n")) == LINES + 1


def test_output_directory_not_writable(ckpt, source, mtkit_main, read_only):  # noqa: F811
    directory, reason = read_only
    out = directory / "out.en"
    code, err = mtkit_main("translate", "-m", ckpt, "-i", source, "-o", out)
    assert code == 1 and f"could not write {out}: {reason}" in err, err
    assert list(directory.iterdir()) == []


def test_parse_shard():
    assert parse_shard("3/8") == (3, 8)
    assert parse_shard("1/1") == (1, 1)
