"""The make recipes in recipes/: run end to end on tiny slices with a tiny model.

Each run goes prepare -> train-bpe -> train -> average -> translate -> score
through `make`, as a user types it; a second `make` must do nothing, and a
changed setting must redo only the stages after it. The WMT recipes read
local hub-shaped copies built from Multi30k (this machine reaches no hub).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hubcopy import build_hub_copy, read_split

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the environment running the tests has mtkit installed
LINES = 100  # pairs in each split
PAIRS = {"wmt14-en-de": "de-en", "wmt16-ro-en": "ro-en", "wmt17-zh-en": "zh-en"}  # hub configs
# The training subsets each recipe prepares apart (its CORPORA), as the WMT builders name them.
SUBSETS = {
    "wmt14-en-de": ("europarl_v7", "commoncrawl", "newscommentary_v9"),
    "wmt16-ro-en": ("europarl_v8_16", "setimes_2"),
    "wmt17-zh-en": ("newscommentary_v12", "uncorpus_v1", "casia2015", "casict2011",
                    "casict2015", "datum2015", "datum2017", "neu2017"),
}  # fmt: skip
# A model of a few thousand parameters, a few updates: the pipeline is tested, not BLEU.
TINY = {
    "VOCAB": "150",
    "BEAM": "2",
    "AVERAGE_LAST": "2",
    "MAX_TOKENS": "2048",
    "MODEL_ARGS": "--set d_model=32 --set d_ff=64 --set enc_layers=1 --set dec_layers=1 "
    "--set n_heads=2",
    "TRAIN_ARGS": "--max-updates 4 --warmup 4 --valid-bleu-sentences 10 --threads 1 --keep-last 2",
    "TRANSLATE_ARGS": "--threads 1",
}
BLEU_LINE = re.compile(r"BLEU\|nrefs:1\|case:mixed\|eff:no\|tok:13a\|.*version:\S+ = \d+\.\d")
STAGES = ["prepare", "train-bpe", "train", "average", "translate", "score"]
MULTI30K_STAGES = [*STAGES, "plot"]  # the demo also draws the run's curves
COMMAND = re.compile(rf"^\s*(?:\+ )?(?:[A-Z_]+=\S* )*{re.escape(str(BIN))}/mtkit ([a-z-]+)")

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _without_make_vars(environ) -> dict:
    return {k: v for k, v in environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}


def make(
    recipe: str, tmp_path: Path, *args: str, env: dict | None = None, cwd: Path = REPO, **variables
):
    """`make -f recipes/RECIPE.mk` from the repository root with DATA and RUN under tmp_path
    (a variable given as None is left to the recipe)."""
    settings = {"BIN": str(BIN), "DATA": str(tmp_path / "data"), "RUN": str(tmp_path / "run")}
    settings |= variables
    command = ["make", "-f", str(REPO / "recipes" / f"{recipe}.mk"), *args]
    command += [f"{key}={value}" for key, value in settings.items() if value is not None]
    return subprocess.run(
        command,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream, in order: commands, then what they say
        text=True,
        # A make above the tests (make test) would make this one print "Entering directory".
        env={**_without_make_vars(os.environ), **(env or {})},
    )


def ran(result) -> list[str]:
    """The mtkit stages a make run started (or, with -n, would start), in order."""
    stages: list[str] = []
    for line in result.stdout.splitlines():
        found = COMMAND.match(line)
        if found and (not stages or stages[-1] != found[1]):
            stages.append(found[1])
    return stages


def mtimes(directory: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(directory.rglob("*")) if p.is_file()}


def test_multi30k_end_to_end_then_nothing_to_do(tmp_path, multi30k):
    # HF_HUB_OFFLINE=1 (conftest): the recipe falls back to the local Multi30k files.
    first = make("multi30k", tmp_path, MULTI30K=str(multi30k), LIMIT=str(LINES), **TINY)
    assert first.returncode == 0, first.stdout[-3000:]
    assert f"reading Multi30k from {multi30k}" in first.stdout
    assert ran(first) == MULTI30K_STAGES
    run = tmp_path / "run"
    bleu = (run / "bleu.txt").read_text()
    assert BLEU_LINE.search(bleu), bleu
    assert "chrF2|nrefs:1|" in bleu
    assert bleu.strip() in first.stdout  # printed at the end
    hyp = (run / "test.hyp").read_text().splitlines()
    assert len(hyp) == LINES == len((tmp_path / "data" / "test.en").read_text().splitlines())

    before = mtimes(tmp_path)
    again = make("multi30k", tmp_path, MULTI30K=str(multi30k), LIMIT=str(LINES), **TINY)
    assert again.returncode == 0, again.stdout
    assert "Nothing to be done" in again.stdout
    assert ran(again) == []
    assert mtimes(tmp_path) == before
    up_to_date = make("multi30k", tmp_path, "-q", MULTI30K=str(multi30k), LIMIT=str(LINES), **TINY)
    assert up_to_date.returncode == 0
    shown = make("multi30k", tmp_path, "show", MULTI30K=str(multi30k), LIMIT=str(LINES), **TINY)
    assert shown.stdout.strip() == bleu.strip()  # what `make demo` prints, however often it runs

    # A changed setting redoes the stages after it, and only those (-n: show, do not run).
    beam = make(
        "multi30k", tmp_path, "-n", MULTI30K=str(multi30k), LIMIT=str(LINES), **TINY | {"BEAM": "1"}
    )
    assert ran(beam) == ["translate", "score"]
    vocab = make(
        "multi30k",
        tmp_path,
        "-n",
        MULTI30K=str(multi30k),
        LIMIT=str(LINES),
        **TINY | {"VOCAB": "140"},
    )
    assert ran(vocab) == MULTI30K_STAGES[1:]


def test_interrupted_run_resumes_and_a_stale_run_is_moved_aside(tmp_path, multi30k):
    """No train.done: make continues the run (--resume); older than its inputs: it starts over."""
    variables = dict(MULTI30K=str(multi30k), LIMIT=str(LINES), **TINY)
    # prepare and train-bpe run for real (cheap); train stops at its option check, given an
    # option it does not know, so no model is trained: what is tested is what make does first.
    failing = variables | {"TRAIN_ARGS": "--no-such-option"}
    run = tmp_path / "run"
    run.mkdir(parents=True)
    for name in ("checkpoint_last.pt", "checkpoint_2.pt"):
        (run / name).write_bytes(b"an old run")
    stale = make("multi30k", tmp_path, "train", **failing)
    assert stale.returncode != 0
    assert "moving the old run to" in stale.stdout
    (kept,) = run.glob("replaced-*")
    assert sorted(p.name for p in kept.iterdir()) == ["checkpoint_2.pt", "checkpoint_last.pt"]
    assert not (run / "checkpoint_last.pt").exists()

    (run / "checkpoint_last.pt").write_bytes(b"an interrupted run, newer than its inputs")
    interrupted = make("multi30k", tmp_path, "train", **failing)
    assert ran(interrupted) == ["train"]  # prepare and train-bpe are done
    assert "--resume" in interrupted.stdout
    assert "moving the old run" not in interrupted.stdout
    assert (run / "checkpoint_last.pt").exists()


def test_multi30k_en_de_direction(tmp_path, multi30k):
    result = make("multi30k", tmp_path, "-n", SRC="en", TGT="de", MULTI30K=str(multi30k), HUB="no")
    assert result.returncode == 0, result.stdout
    out = result.stdout
    assert f"--src-file {multi30k}/train.en.gz --tgt-file {multi30k}/train.de.gz" in out
    assert "--src en --tgt de" in out
    assert f"-i {tmp_path}/data/test.en" in out and f"-r {tmp_path}/data/test.de" in out


def test_multi30k_model_follows_the_device(tmp_path):
    """On a GPU epochs bound the run; on a CPU 20 minutes of many small updates."""
    # Run from tmp_path: the default RUN (runs/...) is relative, and make -n still notes settings.
    gpu = make("multi30k", tmp_path, "-n", cwd=tmp_path, RUN=None, DEVICE="cuda").stdout
    assert "--arch transformer-small" in gpu and "--set d_model" not in gpu
    assert "--max-epochs 40 --max-time 15m" in gpu and "--vocab-size 8000" in gpu
    cpu = make("multi30k", tmp_path, "-n", cwd=tmp_path, RUN=None, DEVICE="cpu").stdout
    assert "--arch transformer-small" in cpu and "--max-time 20m" in cpu
    assert "--max-tokens 1024" in cpu and "--warmup 500" in cpu
    assert "--set dropout=0" in cpu and "--set dropout" not in gpu  # the CPU sweep's choice
    assert "--out runs/multi30k-de-en-transformer-small-cpu" in cpu


def test_wmt_settings_and_gpus(tmp_path):
    """Published settings reach the commands; GPUS>1 trains through torchrun."""
    big = make("wmt14-en-de", tmp_path, "-n", ARCH="transformer-big", GPUS="4").stdout
    assert "torchrun --standalone --nproc_per_node 4 -m mtkit train" in big
    assert "--update-freq 2" in big and "--max-tokens 3584" in big  # 8 GPUs' batch on 4
    assert "--max-updates 300000 --lr 5e-4 --warmup 4000" in big
    assert "average" in big and "--last 20" in big
    assert "--beam 4" in big and "--len-penalty 0.6 --max-len-a 1 --max-len-b 50" in big
    assert "--vocab-size 32000" in big and "--pair de-en --src en --tgt de" in big
    base = make("wmt14-en-de", tmp_path, "-n").stdout
    assert "--max-updates 100000 --lr 7e-4" in base and "--last 5" in base
    assert "mtkit train --data" in base  # one GPU: no torchrun
    assert "--set pre_norm=false" in base  # the paper's post-norm layers
    zh = make("wmt17-zh-en", tmp_path, "-n").stdout
    assert "--character-coverage 0.9995" in zh and "--len-unit chars" in zh
    en_zh = make("wmt17-zh-en", tmp_path, "-n", SRC="en", TGT="zh").stdout
    assert "--tokenize zh" in en_zh and "--pair zh-en --src en --tgt zh" in en_zh


def _relabelled_wmt_copy(
    multi30k: Path, out: Path, pair: str, take: dict[str, str], subsets: tuple = ()
) -> Path:
    """A wmt/wmtNN-shaped copy (PAIR/SPLIT-00000-of-00001.parquet, `translation` column)
    whose languages are Multi30k's under other names: take = {new: multi30k language};
    the training rows cut into one PAIR/train-SUBSET-*.parquet file per subset."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (out / pair).mkdir(parents=True)
    for split in ("train", "validation", "test"):
        columns = read_split(multi30k, split, list(take.values()), LINES)
        rows = [
            dict(zip(take, texts, strict=True)) for texts in zip(*columns.values(), strict=True)
        ]
        table = pa.table({"translation": pa.array(rows)})
        if split == "train" and subsets:
            step = -(-table.num_rows // len(subsets))
            for i, name in enumerate(subsets):
                part = table.slice(i * step, step)
                pq.write_table(part, out / pair / f"train-{name}-00000-of-00001.parquet")
        else:
            pq.write_table(table, out / pair / f"{split}-00000-of-00001.parquet")
    return out


@pytest.mark.parametrize("recipe", ["wmt14-en-de", "wmt16-ro-en", "wmt17-zh-en"])
def test_wmt_recipe_reaches_score(tmp_path, multi30k, recipe):
    variables = dict(LIMIT=str(LINES), ARCH="transformer-base", **TINY)
    env = {}
    if recipe == "wmt14-en-de":  # the short name wmt14, found in a local hub (MTKIT_LOCAL_HUB)
        build_hub_copy(
            multi30k,
            tmp_path / "hub" / "wmt" / "wmt14",
            train_lines=LINES,
            eval_lines=LINES,
            subsets=SUBSETS[recipe],
        )
        env["MTKIT_LOCAL_HUB"] = str(tmp_path / "hub")
        src, tgt = "en", "de"
    elif recipe == "wmt16-ro-en":  # a local directory given as DATASET; French plays Romanian
        variables["DATASET"] = str(
            _relabelled_wmt_copy(
                multi30k, tmp_path / "wmt16", "ro-en", {"ro": "fr", "en": "en"}, SUBSETS[recipe]
            )
        )
        src, tgt = "ro", "en"
    else:  # French plays Chinese: characters are what the zh settings change
        variables["DATASET"] = str(
            _relabelled_wmt_copy(
                multi30k, tmp_path / "wmt17", "zh-en", {"zh": "fr", "en": "en"}, SUBSETS[recipe]
            )
        )
        src, tgt = "zh", "en"
    result = make(recipe, tmp_path, env=env, **variables)
    assert result.returncode == 0, result.stdout[-3000:]
    assert ran(result) == STAGES
    assert BLEU_LINE.search((tmp_path / "run" / "bleu.txt").read_text())
    data = tmp_path / "data"
    assert (data / f"test.{src}").read_text() and (data / f"test.{tgt}").read_text()
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "local"  # the copy, found as the hub's would be
    assert manifest["source"]["config"] == PAIRS[recipe]
    assert manifest["langs"] == {"src": src, "tgt": tgt}
    assert manifest["cleaning"]["limit"] == LINES
    if recipe == "wmt17-zh-en":
        assert "--character-coverage 0.9995" in result.stdout
    # Each subset is its own corpus, trained on with the recipe's weights.
    for name in SUBSETS[recipe]:
        subset = json.loads((data / name / "manifest.json").read_text())
        assert subset["source"]["subset"] == name
        assert f"--data {data / name}:1 " in result.stdout
    assert not (data / f"train.{src}").exists()  # DATA/ holds valid and test only
    shares = {row["data"]: row["share"] for row in _last_mix(tmp_path / "run")}
    assert set(shares) == {str(data / name) for name in SUBSETS[recipe]}
    assert abs(sum(shares.values()) - 1) < 1e-3


def _last_mix(run: Path) -> list[dict]:
    """The mix of the run's last train record, with its corpora from the mix record."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    corpora = next(r["corpora"] for r in records if r["kind"] == "mix")
    shares = [r for r in records if r["kind"] == "train"][-1]["mix_share"]
    return [row | {"share": share} for row, share in zip(corpora, shares, strict=True)]
