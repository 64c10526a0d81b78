"""The checkpoint file: save (atomic), load (checked), rebuild a model, average, summarise.

A checkpoint is one self-contained dict, readable with torch.load(weights_only=True):

    {"format": "mtkit-checkpoint", "format_version": 2, "mtkit_version": str,
     "model_config": dict, "model": state_dict, "spm": {"src": bytes, "tgt": bytes},
     "vocab": {"src": [str], "tgt": [str]} (empty: ids are SentencePiece's own),
     "langs": {"src": "de", "tgt": "en"}, "train_config": dict,
     "train_state": dict (absent in averaged checkpoints), "step": int, "epoch": int,
     "metrics": dict, "checksum": {"algorithm": "sha256", "content": hex}}

"checksum" is `mtkit.io.content_checksum` of everything else in the dict (every key,
value and tensor byte), taken at save and checked at every load: a file changed on
disk since (a bad copy, bit rot) is refused with one line. It sits inside the dict,
so the file stays a plain torch.save zip that torch.load(weights_only=True) reads,
and checking it costs no second read: the loaded tensors are hashed in memory, on a
few threads. Files written before it (no "checksum") load with a note.

This module knows the format; what goes into train_state is the trainer's business.
Version 2 added "vocab", a model's own id -> piece tables (an imported Marian
model's vocab.json); `migrate` brings version 1 files up to date when they load.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from mtkit import __version__
from mtkit.errors import CheckpointError
from mtkit.io import CHECKSUM, atomic_write, check_checksum, content_checksum

log = logging.getLogger(__name__)

FORMAT = "mtkit-checkpoint"
FORMAT_VERSION = 2
REQUIRED = ("model_config", "model", "spm", "langs", "step")
NUMBERED = re.compile(r"^checkpoint_(\d+)\.pt$")
# Wrappers add these to parameter names; a checkpoint holds the plain module's names.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def save_checkpoint(path: Path | str, payload: dict) -> Path:
    """Write `payload` as a checkpoint at `path`, atomically (temporary file, then rename)."""
    import torch

    path = Path(path)
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "mtkit_version": __version__}
    payload = header | {k: v for k, v in payload.items() if k not in header}
    payload["model"] = plain_state_dict(payload["model"])
    payload.pop("checksum", None)  # an averaged or loaded payload's own: no longer its content
    # One thread: saves run beside training (state.RunFiles' writer), which keeps the cores.
    payload["checksum"] = {"algorithm": CHECKSUM, "content": content_checksum(payload)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb", fsync=True) as file:
        torch.save(payload, file)
    return path


def plain_state_dict(state: dict) -> dict:
    """The state dict with DDP's `module.` and torch.compile's `_orig_mod.` prefixes removed."""
    plain = {}
    for key, value in state.items():
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        plain[key] = value
    return plain


def load_checkpoint(
    path: Path | str, map_location: str = "cpu", verify: bool = True, note: bool = True
) -> dict:
    """Read and check a checkpoint; CheckpointError says what is wrong with a bad file,
    ChecksumError that its contents changed since it was written (`verify`). A file
    without a checksum loads with a logged note (unless not `note`)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path} (check the path)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for torn or foreign files
        reason = str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error)
        raise CheckpointError(
            f"{path} is not a readable mtkit checkpoint (truncated, or another kind of file: "
            f"{reason}); use checkpoint_last.pt or another checkpoint of the run"
        ) from None
    return check_checkpoint(ckpt, path, verify=verify, note=note)


def verify_checksum(ckpt: dict, path: Path | str, note: bool = True) -> bool:
    """Check a loaded checkpoint's checksum: True when it matches, False (with a note)
    when the file has none, ChecksumError when it differs."""
    saved = ckpt.get("checksum")
    if saved is None:
        if note:
            log.warning("%s has no checksum (written by an older mtkit): loaded unverified", path)
        return False
    content = {k: v for k, v in ckpt.items() if k != "checksum"}
    if not isinstance(saved, dict) or saved.get("algorithm") != CHECKSUM:
        raise CheckpointError(
            f"{path} has a checksum this mtkit cannot check ({saved!r:.60}); upgrade mtkit"
        )
    check_checksum(
        path,
        str(saved.get("content")),
        content_checksum(content, threads=min(4, os.cpu_count() or 1)),
        "copy it again from where it came from, or use another checkpoint of the run",
    )
    return True


def check_checkpoint(
    ckpt: object, path: Path | str, verify: bool = True, note: bool = True
) -> dict:
    """Check the header, the checksum (`verify`) and the required keys of a loaded
    checkpoint dict."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an mtkit checkpoint (no 'format': '{FORMAT}' entry); "
            "pass a file written by `mtkit train` or `mtkit average`"
        )
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format_version {version!r}, newer than this mtkit "
            f"{__version__} reads (up to {FORMAT_VERSION}); upgrade mtkit"
        )
    if verify:
        verify_checksum(ckpt, path, note=note)
    missing = [key for key in REQUIRED if key not in ckpt]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}; the file is incomplete")
    return migrate(ckpt)


def migrate(ckpt: dict) -> dict:
    """An older format's dict brought up to FORMAT_VERSION, in place."""
    import dataclasses

    from mtkit.models.config import ModelConfig

    if ckpt["format_version"] < 2:
        # Version 1 had no vocabulary tables: its ids are SentencePiece's own.
        ckpt.setdefault("vocab", {})
        ckpt["format_version"] = 2
    # Model settings added since (activation, positions ...) default to what mtkit did
    # before them, so an older run rebuilds, and resumes, with the values it trained with.
    if isinstance(ckpt["model_config"], dict):
        ckpt["model_config"] = dataclasses.asdict(ModelConfig()) | ckpt["model_config"]
    return ckpt


def checkpoint_tokenizers(ckpt: dict, name: str = "checkpoint") -> tuple:
    """The (source, target) Tokenizers of a checkpoint: its SentencePiece models, with its
    vocabulary tables where it has them (imported models)."""
    from mtkit.tokenizer import Tokenizer

    tables = ckpt.get("vocab") or {}
    return tuple(
        Tokenizer.from_bytes(ckpt["spm"][side], name=f"{name} ({side})", vocab=tables.get(side))
        for side in ("src", "tgt")
    )


def model_from_checkpoint(ckpt: dict, device: str = "cpu"):
    """The checkpoint's model with its weights, on `device`, in eval mode."""
    from mtkit.models import build_model

    model = build_model(ckpt["model_config"])
    try:
        model.load_state_dict(plain_state_dict(ckpt["model"]))
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise CheckpointError(f"the checkpoint's weights do not fit its config: {first}") from None
    return model.to(device).eval()


def numbered_checkpoints(run_dir: Path | str) -> list[Path]:
    """The run's checkpoint_{step}.pt files, oldest step first."""
    found = [
        (int(m.group(1)), p)
        for p in Path(run_dir).glob("checkpoint_*.pt")
        if (m := NUMBERED.match(p.name))
    ]
    return [path for _, path in sorted(found)]


def prune_checkpoints(run_dir: Path | str, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` numbered checkpoints (0 or less keeps all)."""
    if keep_last <= 0:
        return []
    old = numbered_checkpoints(run_dir)[:-keep_last]
    for path in old:
        path.unlink(missing_ok=True)
    return old


def average_checkpoints(paths: Sequence[Path | str]) -> dict:
    """The mean of the checkpoints' parameters (fairseq's average_checkpoints), as a payload.

    Floating-point tensors are summed in float64 and cast back; other tensors (counters,
    integer buffers) come from the last checkpoint. The result has no train_state:
    it is for translating, not for resuming.
    """
    import torch

    if not paths:
        raise CheckpointError("no checkpoints to average; give files or a run with checkpoints")
    total, last = None, None
    for path in paths:
        ckpt = load_checkpoint(path)
        if last is not None and ckpt["model_config"] != last["model_config"]:
            raise CheckpointError(
                f"{path} has a different model config from {paths[0]}; "
                "average checkpoints of one run only"
            )
        state = plain_state_dict(ckpt["model"])
        if total is None:
            total = {
                k: v.to(torch.float64) if v.is_floating_point() else v for k, v in state.items()
            }
        else:
            for key, value in state.items():
                total[key] = total[key] + value if value.is_floating_point() else value
        last = ckpt
    model = {
        key: (value / len(paths)).to(last["model"][key].dtype)
        if value.is_floating_point()
        else value
        for key, value in total.items()
    }
    payload = {k: v for k, v in last.items() if k != "train_state"}
    payload["model"] = model
    payload["metrics"] = {"averaged": [str(p) for p in paths]}
    return payload


def summary(ckpt: dict) -> dict:
    """What a person wants to know about a checkpoint, as a JSON-ready dict."""
    n_params = sum(v.numel() for v in ckpt["model"].values() if v.is_floating_point())
    return {
        "format_version": ckpt["format_version"],
        "mtkit_version": ckpt.get("mtkit_version"),
        "langs": ckpt["langs"],
        "step": ckpt["step"],
        "epoch": ckpt.get("epoch"),
        "parameters": n_params,
        "metrics": ckpt.get("metrics", {}),
        "resumable": "train_state" in ckpt,
        "checksum": (ckpt.get("checksum") or {}).get("algorithm", "none"),
        "spm_bytes": {side: len(data) for side, data in ckpt["spm"].items()},
        "vocab_table": {side: len(table) for side, table in (ckpt.get("vocab") or {}).items()},
        **({"languages": _languages_line(ckpt)} if ckpt.get("languages") else {}),
        "model_config": ckpt["model_config"],
        "train_config": ckpt.get("train_config", {}),
        **({"mix": ckpt["mix"]} if ckpt.get("mix") else {}),
    }


def average_inputs(inputs: Sequence[Path | str], last: int) -> list[Path]:
    """The files to average: the last `last` numbered checkpoints of a run directory,
    or the files given."""
    paths = [Path(p) for p in inputs]
    if len(paths) == 1 and paths[0].is_dir():
        found = numbered_checkpoints(paths[0])
        if not found:
            raise CheckpointError(
                f"no checkpoint_STEP.pt files in {paths[0]}; train with --keep-last > 0 "
                "or pass checkpoint files"
            )
        if last < 1:
            raise CheckpointError(f"--last must be at least 1, got {last}")
        if len(found) < last:
            log.warning(
                "%s has %d numbered checkpoints; averaging all of them", paths[0], len(found)
            )
        return found[-last:]
    for path in paths:
        if path.is_dir():
            raise CheckpointError(
                f"{path} is a directory; pass one run directory or checkpoint files"
            )
    return paths


def average_into(inputs: Sequence[Path | str], out: Path | str, last: int = 5) -> list[Path]:
    """`mtkit average`: average a run's last `last` checkpoints (or the files given) into `out`."""
    paths = average_inputs(inputs, last)
    save_checkpoint(out, average_checkpoints(paths))
    return paths


def describe(path: Path | str, as_json: bool = False, langs: bool = False) -> str:
    """`mtkit inspect`: a checkpoint's summary as `key: value` lines, or as JSON; with
    `langs`, a multilingual model's language codes, one a line (for scripts)."""
    import json

    ckpt = load_checkpoint(path)
    if langs:
        return "\n".join(_codes(ckpt))
    info = summary(ckpt)
    if as_json:
        return json.dumps(info, indent=2, sort_keys=True)
    lines = []
    for key, value in info.items():
        if key == "mix":  # one line per corpus of a data mix
            lines += [f"mix: {_mix_line(row)}" for row in value]
            continue
        if isinstance(value, dict):
            value = " ".join(f"{k}={v}" for k, v in value.items())
        lines.append(f"{key}: {value}")
    return "\n".join(lines)


def _codes(ckpt: dict) -> list[str]:
    """A multilingual model's language codes; a bilingual one's pair."""
    from mtkit.languages import languages_of

    languages = languages_of(ckpt)
    if languages is None:
        return list(dict.fromkeys(ckpt["langs"].values()))
    return languages.codes


def _languages_line(ckpt: dict) -> dict:
    """What the summary shows of a multilingual model's languages (the codes: --langs)."""
    from mtkit.languages import describe_languages

    return describe_languages(ckpt) | {"list": ",".join(_codes(ckpt))}


def _mix_line(row: dict) -> str:
    """One corpus of the mix a checkpoint was trained on, as `inspect` prints it."""
    text = f"{row['data']} pairs={row['pairs']} weight={row['weight']:g}"
    if row.get("tag"):
        text += f" tag={row['tag']}"
    if "share" in row:
        text += f" target_tokens={row['target_tokens']} share={100 * row['share']:.1f}%"
    return text + (" (valid)" if row.get("valid") else "")
