"""Bad input to the options of the corpora, langid and translate-job wave: each is one line
`error: ...`, exit 1, no traceback, nothing written (issue 24).

Cases tested elsewhere are left out: bad weights and tags of `--data` (test_mix.py),
--shard 0/3, 4/3, 3, a/b, 1/0, -1/2, split jobs on a pipe, missing, unfinished, damaged
and foreign shards (test_shards.py), an unknown --langid language (test_langid.py),
an unknown --subset (test_prepare.py). docs/integrity.md lists them all.
"""

from __future__ import annotations

import gzip

import pytest
from conftest import call_main
from test_search import tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def files(multi30k, tmp_path_factory) -> dict:
    """Two small de-en corpora, a joint BPE, a tiny checkpoint and a source file."""
    from mtkit.tokenizer import SpmOptions, train_spm

    root = tmp_path_factory.mktemp("bad-options")
    lines = {}
    for lang in ("de", "en"):
        with gzip.open(multi30k / f"train.{lang}.gz", "rt", encoding="utf-8") as file:
            lines[lang] = "".join(next(file) for _ in range(200))
    for name in ("a", "b"):
        (root / name).mkdir()
        for lang, text in lines.items():
            (root / name / f"train.{lang}").write_text(text, encoding="utf-8")
    corpus = root / "a"
    (spm,) = train_spm(
        [corpus / "train.de", corpus / "train.en"], root / "spm", SpmOptions(vocab_size=300)
    )
    (root / "in.de").write_text(lines["de"], encoding="utf-8")
    return {"R": root, "spm": spm, "ckpt": tiny_checkpoint("transformer", multi30k)}


def _train(*data: str) -> list[str]:
    flags = [f for d in data for f in ("--data", d)]
    return ["train", *flags, "--spm", "{spm}", "--out", "{R}/run", "--max-updates", "1",
            "--device", "cpu", "--threads", "1"]  # fmt: skip


PREPARE = ["prepare", "--src", "de", "--tgt", "en", "--src-file", "{R}/a/train.de",
           "--tgt-file", "{R}/a/train.en", "--out", "{R}/p"]  # fmt: skip
TRANSLATE = ["translate", "-m", "{ckpt}", "-i", "{R}/in.de", "-o", "{R}/o", "--threads", "1"]

# (id, arguments, stdin, what the line says)
CASES = [
    ("data-empty", _train(""), None, "no training data; pass --data DIR"),
    ("data-no-dir", _train(":1"), None, "--data ':1' is not DIR[:WEIGHT[:TAG]]"),
    ("data-four-parts", _train("{R}/a:1:tag:x"), None, "is not DIR[:WEIGHT[:TAG]]"),
    ("data-missing", _train("{R}/nope"), None, "data directory not found: {R}/nope"),
    ("data-a-file", _train("{R}/in.de"), None, "data directory not found: {R}/in.de"),
    ("data-inf-weight", _train("{R}/a:inf"), None, "the weight 'inf' is not a positive number"),
    ("data-twice", _train("{R}/a", "{R}/b", "{R}/a:2"), None, "--data {R}/a is given twice"),
    ("langid-min-prob-high", [*PREPARE, "--langid", "--langid-min-prob", "1.5"], None,
     "--langid-min-prob 1.5 is out of range"),
    ("langid-min-prob-negative", [*PREPARE, "--langid", "--langid-min-prob", "-0.1"], None,
     "--langid-min-prob -0.1 is out of range"),
    ("langid-min-prob-nan", [*PREPARE, "--langid", "--langid-min-prob", "nan"], None,
     "--langid-min-prob nan is out of range"),
    ("langid-workers-negative", [*PREPARE, "--langid", "--langid-workers", "-1"], None,
     "--langid-workers -1 is negative"),
    ("subset-without-dataset", [*PREPARE, "--subset", "europarl_v7"], None,
     "--subset picks part of a --dataset"),
    ("shard-empty", [*TRANSLATE, "--shard", ""], None, "--shard takes K/N"),
    ("shard-three-parts", [*TRANSLATE, "--shard", "1/2/3"], None, "--shard takes K/N"),
    ("workers-negative", [*TRANSLATE, "--workers", "-1"], None, "--workers must be 0 or more"),
    ("shard-and-workers", [*TRANSLATE, "--shard", "1/2", "--workers", "2"], None,
     "use one of --shard, --workers and torchrun"),
    ("restart-on-a-pipe", ["translate", "-m", "{ckpt}", "--restart"], b"Ein Hund.\n",
     "--restart needs files"),
    ("chunk-lines-zero", [*TRANSLATE, "--chunk-lines", "0"], None,
     "--chunk-lines must be at least 1, got 0"),
    ("output-format-unknown", [*TRANSLATE, "--output-format", "xml"], None,
     "unknown --output-format 'xml'"),
    ("merge-shards-zero", ["translate-merge", "-o", "{R}/o", "--shards", "0"], None,
     "--shards 0: give the N"),
    ("merge-shards-negative", ["translate-merge", "-o", "{R}/o", "--shards", "-2"], None,
     "--shards -2: give the N"),
    ("merge-into-a-directory", ["translate-merge", "-o", "{R}/a"], None,
     "-o {R}/a is a directory"),
]  # fmt: skip


@pytest.mark.parametrize("args, stdin, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_option_is_one_line(args, stdin, message, files, monkeypatch, capsysbinary):
    def fill(text: str) -> str:
        return text.format(**{key: str(value) for key, value in files.items()})

    before = sorted(files["R"].rglob("*"))
    code = call_main(monkeypatch, *map(fill, args), stdin=stdin)
    out, err = (stream.decode("utf-8") for stream in capsysbinary.readouterr())
    assert code == 1 and out == "", err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and fill(message) in err, err
    assert sorted(files["R"].rglob("*")) == before  # nothing written, nothing left
