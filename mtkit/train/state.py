"""What a run writes to RUN/ besides the weights' format: RNG states, config.json, metrics.jsonl.

The checkpoint format itself is `mtkit.checkpoint`'s; this module owns the parts
only training needs: capturing and restoring random-number generators so a
resumed run continues exactly, the run's JSON files, and publishing one saved
checkpoint under several names.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path


def rng_state(device) -> dict:
    """This process's generators, in types torch.load(weights_only=True) accepts."""
    import torch

    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),  # a ByteTensor
        "python": [version, list(internal), gauss],  # tuples become lists; restored below
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device) -> None:
    """Restore what `rng_state` captured."""
    import torch

    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def write_json(path: Path, values: dict) -> None:
    """Write a JSON file atomically."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(values, file, indent=2, sort_keys=True)
            file.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish(source: Path, target: Path) -> None:
    """Make `target` a complete copy of `source` atomically (a hard link when possible)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        try:
            os.unlink(tmp)
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class MetricsLog:
    """RUN/metrics.jsonl: one JSON object per line, appended and flushed as it comes."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        if resume_step is None:
            path.write_text("", encoding="utf-8")
        elif path.exists():
            self._drop_after(resume_step)
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def _drop_after(self, step: int) -> None:
        """Forget records past the resumed step: they were written after the checkpoint."""
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line torn by a crash
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()
