"""The run's directory, RUN/: config.json, metrics.jsonl, checkpoints, and the RNG states saved.

`RunFiles` is the one owner of what a run writes (on rank 0; other ranks write
nothing) and of reading what resume needs. The checkpoint format itself is
`mtkit.checkpoint`'s.

Checkpoints are cheap for the loop: the state is copied to host memory on the
loop's thread (the only part that blocks training; into buffers kept from the
previous save, so no memory is allocated after the first), then written by one
background thread: checkpoint_{step}.pt holds the weights only, checkpoint_last.pt
also the optimiser, scaler, counters and every rank's RNG state (what resume
reads), checkpoint_best.pt is a hard link to the numbered one. Each file is
written atomically; the next save, the end of the run and an error all wait for
the writer, so no thread outlives the run.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
import threading
from pathlib import Path

from mtkit.errors import ConfigError
from mtkit.io import atomic_write, write_error

log = logging.getLogger(__name__)


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
    with atomic_write(path, "w") as file:
        json.dump(values, file, indent=2, sort_keys=True)
        file.write("\n")


def publish(source: Path, target: Path) -> None:
    """Make `target` a complete copy of `source` atomically (a hard link when possible)."""
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.unlink(temp)
    try:
        os.link(source, temp)
        os.replace(temp, target)
    except OSError:  # no hard links on this file system: copy
        Path(temp).unlink(missing_ok=True)
        with open(source, "rb") as src, atomic_write(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 24)


class HostCopy:
    """Copies of tensors (in dicts/lists) in host memory that training cannot change.

    The buffers are kept and reused by the next copy of the same structure, so a save
    after the first is a plain memcpy: no gigabytes allocated (page faults) each time.
    Only one copy may be in use at a time (RunFiles waits for its writer first)."""

    def __init__(self) -> None:
        self.buffers: dict = {}

    def __call__(self, value, path: tuple = ()):
        import torch

        if isinstance(value, torch.Tensor):
            return self._tensor(value.detach(), path)
        if isinstance(value, dict):
            return {k: self(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self(v, (*path, i)) for i, v in enumerate(value))
        return value

    def _tensor(self, tensor, path: tuple):
        import torch

        buffer = self.buffers.get(path)
        if buffer is None or buffer.shape != tensor.shape or buffer.dtype != tensor.dtype:
            pin = tensor.device.type == "cuda"  # page-locked: the copy runs at full speed
            buffer = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=pin)
            self.buffers[path] = buffer
        return buffer.copy_(tensor)


class MetricsLog:
    """RUN/metrics.jsonl: one JSON object per line, appended and flushed as it comes."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        if resume_step is None:
            with atomic_write(path, "w"):
                pass  # a new run starts with an empty log
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
        with atomic_write(self.path, "w") as file:
            file.write("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as error:
            raise write_error(self.path, error) from None

    def close(self) -> None:
        self.file.close()


class RunFiles:
    """RUN/ for one run: resume's checkpoint, config.json, metrics.jsonl, checkpoints.

    `writer` is False on every rank but 0: such a RunFiles reads but writes nothing.
    Use `with files.open(config_values, resume_step):` around the training loop.
    """

    def __init__(self, out: Path, *, writer: bool, keep_last: int) -> None:
        self.out, self.writer, self.keep_last = Path(out), writer, keep_last
        self.metrics: MetricsLog | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._host = HostCopy()

    @property
    def last(self) -> Path:
        return self.out / "checkpoint_last.pt"

    def load_resume(self, resume: bool) -> dict | None:
        """checkpoint_last.pt when resuming; refuse to overwrite a run not asked to resume."""
        from mtkit.checkpoint import load_checkpoint

        if not resume:
            if self.last.exists():
                raise ConfigError(
                    f"{self.out} already holds a run ({self.last.name}); pass --resume to "
                    "continue it or choose another --out"
                )
            return None
        if not self.last.exists():
            log.info("no %s yet: starting a new run", self.last)
            return None
        ckpt = load_checkpoint(self.last)
        if "train_state" not in ckpt:
            raise ConfigError(
                f"{self.last} has no training state (an averaged checkpoint?); cannot resume"
            )
        return ckpt

    def open(self, config_values: dict, resume_step: int | None) -> RunFiles:
        """Write config.json and open metrics.jsonl (truncated past `resume_step`)."""
        if self.writer:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / "config.json", config_values)
            self.metrics = MetricsLog(self.out / "metrics.jsonl", resume_step)
        return self

    def __enter__(self) -> RunFiles:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def log(self, record: dict) -> None:
        if self.metrics:
            self.metrics.write(record)

    def save(self, step: int, weights: dict, train_state: dict, *, numbered: bool, best: bool):
        """Write the checkpoints of `step` in the background (`weights`: the payload without
        train_state). Returns once the state is copied to host memory."""
        if not self.writer:
            return
        self.wait()  # one writer at a time (it reads the host copy); an earlier failure surfaces
        weights = self._host(weights, ("weights",))
        train_state = self._host(train_state, ("train_state",))
        self._thread = threading.Thread(
            target=self._write,
            args=(step, weights, train_state, numbered, best),
            name="mtkit-checkpoint-writer",
        )
        self._thread.start()

    def _write(self, step, weights, train_state, numbered: bool, best: bool) -> None:
        from mtkit.checkpoint import prune_checkpoints, save_checkpoint

        try:
            if numbered:
                path = save_checkpoint(self.out / f"checkpoint_{step}.pt", weights)
                if best:
                    publish(path, self.out / "checkpoint_best.pt")
            elif best:
                save_checkpoint(self.out / "checkpoint_best.pt", weights)
            save_checkpoint(self.last, {**weights, "train_state": train_state})
            if numbered:
                prune_checkpoints(self.out, self.keep_last)
        except BaseException as error:  # raised on the loop's thread by wait()
            self._error = error

    def wait(self) -> None:
        """Wait for the checkpoint being written; raise its error, if any."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def check(self) -> None:
        """Raise the error of a background save that has already failed, without waiting:
        training stops at the update after a failed save, not at the next save."""
        if self._thread is not None and not self._thread.is_alive():
            self.wait()

    def close(self) -> None:
        """Finish the checkpoint being written and close metrics.jsonl."""
        try:
            self.wait()
        finally:
            if self.metrics:
                self.metrics.close()
                self.metrics = None
