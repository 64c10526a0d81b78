"""recipes/backtranslate.mk and recipes/distill.mk end to end on tiny slices of Multi30k
with tiny models: every stage runs through `make` as a user types it, the files between
the stages hold what the next stage needs, the comparison is written, and a second
`make` does nothing. The quality is not tested here (docs/pipelines.md has the figures).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_recipes import make, mtimes, ran

pytestmark = pytest.mark.skipif(
    subprocess.run(["make", "--version"], capture_output=True).returncode != 0,
    reason="needs GNU make",
)

TINY_MODEL = "--set d_model=32 --set d_ff=64 --set enc_layers=1 --set dec_layers=1 --set n_heads=2"
# A few updates with the recipes' own option set (recipes/models.mk builds TRAIN_ARGS).
TINY = {
    "VOCAB": "150",
    "BEAM": "2",
    "MODEL_ARGS": TINY_MODEL,
    "MAX_UPDATES": "4",
    "WARMUP": "2",
    "VALID_EVERY": "0",
    "VALID_SENTENCES": "10",
    "SAVE_AT": "",
    "AVERAGE_LAST": "2",
    "THREADS": "1",
    "DEVICE": "cpu",
}
SCORE_ROW = re.compile(r"│\s+(?:Baseline: )?(\S+\.hyp) │\s+\d+\.\d \(")


def _head(source: Path, out: Path, lines: int) -> Path:
    import gzip

    with gzip.open(source, "rt", encoding="utf-8") as file:
        out.write_text("".join(next(file) for _ in range(lines)), encoding="utf-8")
    return out


def _inspect(checkpoint: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "mtkit", "inspect", str(checkpoint)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_backtranslate_recipe_end_to_end(tmp_path, multi30k):
    test_de = _head(multi30k / "test_2016_flickr.de.gz", tmp_path / "test.de", 50)
    test_en = _head(multi30k / "test_2016_flickr.en.gz", tmp_path / "test.en", 50)
    variables = TINY | {
        "MULTI30K": str(multi30k),
        "PARALLEL_LINES": "200",
        "MONO_LINES": "60",
        "TEST_SRC": str(test_de),
        "TEST_TGT": str(test_en),
    }
    first = make("backtranslate", tmp_path, **variables)
    assert first.returncode == 0, first.stdout[-3000:]
    assert ran(first) == [
        "prepare", "train-bpe",
        "train", "average", "translate",  # the baseline and its test translation
        "train", "average", "translate",  # the reverse model and the back-translation
        "prepare", "train", "average", "translate",  # the synthetic corpus, the BT model
        "score",
    ]  # fmt: skip
    data, run = tmp_path / "data", tmp_path / "run"
    # The split: the first 200 pairs are parallel, the next 60 English lines monolingual.
    assert len((data / "split" / "parallel.de").read_text().splitlines()) == 200
    mono = (data / "split" / "mono.en").read_text().splitlines()
    assert mono == _lines(multi30k / "train.en.gz")[200:260]
    # The reverse model translated English into German: the TSV is English<TAB>German.
    rows = [line.split("\t") for line in (run / "bt.tsv").read_text().splitlines()]
    assert [row[0] for row in rows] == mono and all(len(row) == 2 for row in rows)
    assert "--noised --noise-filler '<blank>' --seed 1" in first.stdout  # the default BT_MODE
    # prepare read it the other way round: train.en holds monolingual lines.
    kept = (run / "bt-data" / "train.en").read_text().splitlines()
    assert kept and set(kept) <= set(mono)
    # The BT model trained on both corpora, the synthetic one tagged.
    shown = _inspect(run / "bt" / "checkpoint_avg.pt").splitlines()
    mix = [line for line in shown if line.startswith("mix:")]
    assert len(mix) == 2 and "<BT>" in mix[1] and "<BT>" not in mix[0], mix
    assert "--arch transformer-small" in first.stdout

    compare = (run / "compare.txt").read_text()
    assert SCORE_ROW.findall(compare) == [str(run / "baseline.hyp"), str(run / "bt.hyp")]
    assert re.search(r"\(p = 0\.\d+\)", compare), compare
    assert compare in first.stdout
    for name in ("baseline", "bt"):
        assert len((run / f"{name}.hyp").read_text().splitlines()) == 50

    before = mtimes(tmp_path)
    again = make("backtranslate", tmp_path, **variables)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout, again.stdout
    assert mtimes(tmp_path) == before
    # Another BT mode redoes the back-translation and what follows it, not the others.
    sample = make("backtranslate", tmp_path, "-n", **variables | {"BT_MODE": "sample"})
    assert ran(sample) == ["translate", "prepare", "train", "average", "translate", "score"]
    assert "--beam 1 --sampling --seed 1" in sample.stdout


def test_the_backtranslation_simulation_takes_the_settings_that_gained(tmp_path):
    """`simulate` (docs/pipelines.md): plain beam and 1,600 updates a model on the CPU;
    any of them given on the command line still wins."""
    simulate = make("backtranslate", tmp_path, "-n", "simulate", DEVICE="cpu").stdout
    assert "--beam 5 --workers" in simulate and "--noised" not in simulate
    assert simulate.count("--max-updates 1600 ") == 3  # reverse, baseline, BT model
    given = make("backtranslate", tmp_path, "-n", "simulate", DEVICE="cpu", BT_MODE="noised",
                 MAX_UPDATES="800").stdout  # fmt: skip
    assert "--noised" in given and given.count("--max-updates 800 ") == 3
    plain = make("backtranslate", tmp_path, "-n", DEVICE="cpu").stdout
    assert "--noised" in plain and plain.count("--max-updates 800 ") == 3


def test_backtranslate_recipe_refuses_an_unknown_mode(tmp_path):
    result = make("backtranslate", tmp_path, "-n", BT_MODE="greedy")
    assert result.returncode != 0
    assert "BT_MODE=greedy is not one of noised, sample, beam" in result.stdout


def test_a_models_own_train_options_override_the_shared_ones(tmp_path):
    """STUDENT_ARGS come after recipes/models.mk's TRAIN_ARGS, so the last --max-updates,
    the one the student was given, is the one train takes."""
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(b"")  # -n: make only needs it to exist
    result = make("distill", tmp_path, "-n", TEACHER=str(teacher), STUDENT_ARGS="--max-updates 9",
                  MAX_UPDATES="800", DEVICE="cpu")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (train,) = [
        line for line in result.stdout.splitlines() if " train " in line and "student" in line
    ]
    assert re.findall(r"--max-updates (\d+)", train)[-1] == "9"


def test_distill_recipe_end_to_end(tmp_path, multi30k):
    """The teacher comes from the demo's recipe (made here on 100 pairs), the student is the
    transformer-student-narrow preset with three times the teacher's updates, and the
    comparison times all four decoders."""
    variables = TINY | {
        "MULTI30K": str(multi30k),
        "LIMIT": "100",
        "TEACHER_RUN": str(tmp_path / "teacher"),
        "JOB_ARGS": "--workers 2",
        # The teacher's recipe (multi30k.mk) reads its own budget: a few updates too.
        "MAX_TIME": "1m",
    }
    first = make("distill", tmp_path, **variables)
    assert first.returncode == 0, first.stdout[-3000:]
    stages = ran(first)
    assert stages[:4] == ["prepare", "train-bpe", "train", "average"]  # the demo's teacher
    # Then: the distilled data and the student; the timed decoders (teacher, student),
    # the shortlist, the decoders with it (ran() counts a run of one stage once).
    assert stages[4:] == [
        "translate", "prepare", "train", "average", "translate", "shortlist", "translate",
        "score",
    ], stages  # fmt: skip
    run, data = tmp_path / "run", tmp_path / "data"
    teacher_out = (run / "teacher-train.en").read_text().splitlines()
    assert len(teacher_out) == len((data / "train.de").read_text().splitlines()) == 100
    assert "2 workers" in first.stdout  # the training source is a --workers job
    config = json.loads((run / "student" / "config.json").read_text())
    assert config["train"]["arch"] == "transformer-student-narrow"
    assert config["train"]["max_updates"] == 3 * int(TINY["MAX_UPDATES"])
    assert (run / "shortlist.npz").is_file()

    compare = (run / "compare.txt").read_text()
    systems = ["teacher", "student", "student-shortlist", "student-shortlist-int8"]
    assert SCORE_ROW.findall(compare) == [str(run / f"{s}.hyp") for s in systems]
    speeds = re.findall(r"^(\S+)\s+translated 100 lines \(\d+ words out\) in [\d.]+ s: "
                        r"([\d.]+) lines/s  \(([\d.]+)x the teacher\)$", compare, re.M)  # fmt: skip
    assert [s[0] for s in speeds] == systems, compare
    teacher_rate = float(speeds[0][1])
    for _, rate, ratio in speeds:
        assert float(ratio) == pytest.approx(float(rate) / teacher_rate, abs=0.006)
    assert "--shortlist" in first.stdout and "--quantize int8" in first.stdout

    before = mtimes(tmp_path)
    again = make("distill", tmp_path, **variables)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout, again.stdout
    assert mtimes(tmp_path) == before


def _lines(path: Path) -> list[str]:
    import gzip

    with gzip.open(path, "rt", encoding="utf-8") as file:
        return file.read().splitlines()
