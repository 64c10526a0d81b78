"""Hugging Face model directories in: which importer reads one, by config.json's model_type.

`mtkit import` and `translate -m DIR` come here; mtkit.interop.marian reads "marian"
(OPUS-MT), mtkit.interop.m2m100 reads "m2m_100" (NLLB-200 dense, M2M-100). A hub id is
fetched once with the files either importer reads, then dispatched the same way.
"""

from __future__ import annotations

from pathlib import Path

from mtkit.errors import ConfigError

MODEL_TYPES = ("marian", "m2m_100")


def is_hf_dir(path: Path | str) -> bool:
    """Whether `path` is a Hugging Face directory of a model type mtkit imports."""
    from mtkit.interop.m2m100 import hf_model_type

    return Path(path).is_dir() and hf_model_type(path) in MODEL_TYPES


def hf_checkpoint(directory: Path | str, origin: str | None = None) -> dict:
    """The checkpoint dict (in memory) of a Hugging Face model directory."""
    from mtkit.interop.m2m100 import hf_model_type, m2m100_checkpoint
    from mtkit.interop.marian import marian_checkpoint

    kind = hf_model_type(directory)
    if kind == "marian":
        return marian_checkpoint(directory, origin=origin)
    if kind == "m2m_100":
        return m2m100_checkpoint(directory, origin=origin)
    if kind is None and not (Path(directory) / "config.json").is_file():
        raise ConfigError(f"{directory} has no config.json; is it a Hugging Face model directory?")
    raise ConfigError(
        f"{directory}/config.json has model_type {kind!r}; mtkit imports "
        "marian (OPUS-MT) and m2m_100 (NLLB-200 dense, M2M-100) models"
    )


def import_hf(source: str | Path, out: Path | str) -> Path:
    """`mtkit import`: a local directory or a hub id -> the checkpoint file `out`."""
    from mtkit.checkpoint import save_checkpoint
    from mtkit.interop.m2m100 import M2M100_FILES
    from mtkit.interop.marian import MARIAN_FILES, resolve_source

    files = tuple(dict.fromkeys((*MARIAN_FILES, *M2M100_FILES)))
    directory = resolve_source(str(source), files=files)
    return save_checkpoint(out, hf_checkpoint(directory, origin=str(source)))
