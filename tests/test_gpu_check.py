"""bench/gpu.sh --dry-run: the GPU check's every part, on the CPU at tiny sizes, so the
script cannot rot before a GPU runs it. One part fails on purpose (GPU_CHECK_FAIL): it is
reported with its last lines and the parts after it still run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PARTS = [
    "install",
    "cuda tests",
    "data",
    "train transformer-base",
    "train transformer-big",
    "multi30k",
    "decode",
    "train transformer-big --compile",
    "train transformer-base --compile",
]
FAILING = "train transformer-big"


def table_rows(output: str) -> list[tuple[str, str, str]]:
    """(part, status, result) of each row of the final table."""
    table = output[output.rindex("== mtkit GPU check (DRY RUN") :].splitlines()
    start = next(i for i, line in enumerate(table) if line.startswith("| part"))
    rows = []
    for line in table[start + 2 :]:
        if not line.startswith("| "):
            break
        name, status, result = (cell.strip() for cell in line.strip("| \n").split(" | ", 2))
        rows.append((name, status, result))
    return rows


def test_dry_run_reports_every_part_and_goes_on_after_a_failure(tmp_path, multi30k):
    env = {
        **os.environ,
        "OUT": str(tmp_path / "out"),
        "GPU_CHECK_WORK": str(tmp_path / "work"),
        "GPU_CHECK_BIN": str(Path(sys.executable).parent),  # this interpreter's mtkit
        "GPU_CHECK_FAIL": FAILING,
        "MTKIT_MULTI30K": str(multi30k),
    }
    run = subprocess.run(
        [str(REPO / "bench" / "gpu.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]  # one part failed
    rows = table_rows(run.stdout)
    names = [name for name, _, _ in rows]
    assert names == PARTS[:6] + ["decode", "decode"] + PARTS[7:]  # beam 5 and greedy
    statuses = {name: status for name, status, _ in rows}
    assert statuses.pop(FAILING) == "FAILED (exit 3)"
    assert all(status.startswith("ok (") for status in statuses.values()), rows
    assert f"-- {FAILING}: FAILED (exit 3); its last lines:" in run.stdout
    assert f"{FAILING}: failing on purpose (GPU_CHECK_FAIL)" in run.stdout
    results = {(name, result.split(":")[0]) for name, _, result in rows}
    assert {("decode", "beam 5"), ("decode", "greedy")} <= results
    by_name = {name: result for name, _, result in rows}
    assert "would run: pip install" in by_name["install"]
    assert "skipped" in by_name["cuda tests"]  # no CUDA here: the tests are collected, skipped
    assert "training pairs and a 1000-piece BPE" in by_name["data"]
    assert by_name["multi30k"].startswith("test2016 BLEU ")
    assert "tgt tok/s" in by_name["train transformer-base --compile"]
    # Everything printed is also in $OUT's one file.
    assert (tmp_path / "out" / "gpu-check.log").read_text() == run.stdout
