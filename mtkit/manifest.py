"""Reading what `mtkit prepare` wrote: DATA/manifest.json and the text files beside it.

Owns the readers that training (mtkit.train.data) and the shortlist builder
(mtkit.shortlist) share: the pair's languages from the options or the manifest, the
files the manifest records (name, bytes, lines, sha256), and the lines of a prepared
text file. It stands below both, so neither imports the other. Writing the manifest is
mtkit.prepare.pipeline's; checking files against it, mtkit.verify's.
"""

from __future__ import annotations

import json
from pathlib import Path

from mtkit.errors import DataError

MANIFEST = "manifest.json"


def pair_langs(data_dir: Path, src: str | None, tgt: str | None) -> dict:
    """The source and target languages: the options, else DATA/manifest.json."""
    if src and tgt:
        return {"src": src, "tgt": tgt}
    manifest = Path(data_dir) / MANIFEST
    if not manifest.is_file():
        raise DataError(
            f"no {manifest} to read the languages from; pass --src and --tgt "
            "(or prepare the data with `mtkit prepare`)"
        )
    try:
        values = json.loads(manifest.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{manifest} is not valid JSON ({error}); pass --src and --tgt") from None
    found = manifest_langs(values)
    if found is None:
        raise DataError(f"{manifest} names no src/tgt languages; pass --src and --tgt")
    return {"src": src or found[0], "tgt": tgt or found[1]}


def manifest_langs(values: dict) -> tuple[str, str] | None:
    """("de", "en") from {"src": "de", "tgt": "en"}, or the same under "langs" or "pair"."""
    for holder in (values, values.get("langs"), values.get("pair")):
        if isinstance(holder, dict) and all(isinstance(holder.get(k), str) for k in ("src", "tgt")):
            return holder["src"], holder["tgt"]
    return None


def recorded_files(data_dir: Path) -> list[dict]:
    """The text files DATA/manifest.json records, each a dict with its name, bytes, lines
    and sha256. Raises what reading and indexing raise (OSError, ValueError, KeyError,
    TypeError, AttributeError): callers decide whether a missing manifest matters."""
    manifest = json.loads((Path(data_dir) / MANIFEST).read_text(encoding="utf-8"))
    return [f for split in manifest["splits"].values() for f in split["files"].values()]


def read_lines(path: Path) -> list[str]:
    """The lines of a prepared text file (UTF-8, one sentence a line, CR/LF stripped)."""
    from mtkit.io import read_text_lines

    if not path.is_file():
        raise DataError(f"data file not found: {path}; run `mtkit prepare` or check --data")
    return [line.rstrip("\r") for line in read_text_lines(path)]


def head_lines(path: Path, n: int) -> list[str]:
    """The first `n` lines of a prepared text file."""
    from mtkit.io import open_binary, text_lines

    if not path.is_file():
        raise DataError(f"data file not found: {path}; run `mtkit prepare` or check --data")
    with open_binary(path) as stream:
        lines = text_lines(stream, str(path))
        return [line.rstrip("\r") for _, line in zip(range(n), lines, strict=False)]
