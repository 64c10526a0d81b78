"""The model card (README.md) of a transformers export, from the run's own records.

Owns reading what a checkpoint and its run recorded and writing it as a card: the
YAML front matter the Hugging Face hub reads (language, license, pipeline_tag, tags,
datasets, metrics, model-index with the test scores), then how to use the model,
its scores with their sacreBLEU signatures, how it was trained and on what data, and
how transformers' decoding relates to mtkit's. The records:

    the checkpoint              languages, model settings, step, validation metrics at
                                that step, the training options (the command is rebuilt
                                from them), where an imported model came from
    RUN/bleu.txt                the recipes' `mtkit score` report of DATA/test: scores
                                with signatures (read for RUN/checkpoint_avg.pt, the
                                checkpoint the recipes translate; other reports by name)
    DATA/manifest.json          each training corpus: its source, line counts, cleaning

Nothing is invented: what the records lack is left out. Leaves the files beside it to
mtkit.interop.hf_export.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# The recipes' test-set report (recipes/common.mk) and the checkpoint it scores.
RECIPE_SCORES, RECIPE_CHECKPOINT = "bleu.txt", "checkpoint_avg.pt"
# Training options never part of the command a user types (set by the launcher).
_NOT_OPTIONS = ("world_size", "resume")
# sacreBLEU's text report: "BLEU|nrefs:1|...|version:2.6.0 = 39.4 70.1/45.3/... (BP = ...)".
_TEXT_SCORE = re.compile(r"^\s*(?P<name>[^|=\s]+)\|(?P<signature>\S+)\s+=\s+(?P<score>-?[\d.]+)")


@dataclass(frozen=True)
class Score:
    """One corpus-level score of a sacreBLEU report."""

    name: str  # BLEU, chrF2, TER ...
    value: float
    signature: str
    source: str  # the report file it was read from


def model_card(
    ckpt: dict,
    model_path: Path,
    kind: str,
    name: str,
    license: str | None = None,
    scores: Sequence[Path] | None = None,
) -> str:
    """README.md for the export `name` of `ckpt` (read from `model_path`) as class `kind`.

    `scores`: sacreBLEU reports of the test set (`mtkit score`, text or --json); None:
    RUN/bleu.txt when `model_path` is RUN/checkpoint_avg.pt, as the recipes make them.
    """
    model_path = Path(model_path)
    train = ckpt.get("train_config") or {}
    langs = _pair(ckpt)
    found = [s for path in _score_files(model_path, scores) for s in read_scores(path)]
    corpora = _corpora(ckpt)
    header = _header(
        name, langs, license or train.get("license") or "unknown", kind, found, corpora
    )
    yaml = _yaml(header)
    sections = [
        f"# {name}: {langs.get('src') or 'multilingual'} → {langs.get('tgt') or 'multilingual'}",
        _about(ckpt, kind),
        _use(name, ckpt),
        _scores_section(ckpt, found),
        _training(ckpt, corpora),
        _decoding(),
    ]
    return f"---\n{yaml}---\n\n" + "\n\n".join(s for s in sections if s) + "\n"


# -- the records -------------------------------------------------------------------


def _pair(ckpt: dict) -> dict:
    """The language pair the card names: a bilingual model's, a multilingual one's default
    (fine-tuned on one pair), else none ("mul", ISO 639's many languages, is no pair)."""
    languages = ckpt.get("languages") or {}
    pair = languages.get("default") or ckpt.get("langs") or {}
    return {side: code for side, code in pair.items() if code and code != "mul"}


def _score_files(model_path: Path, scores: Sequence[Path] | None) -> list[Path]:
    if scores is not None:
        return [Path(p) for p in scores]
    recipe = model_path.parent / RECIPE_SCORES
    return [recipe] if model_path.name == RECIPE_CHECKPOINT and recipe.is_file() else []


def read_scores(path: Path) -> list[Score]:
    """The scores of a sacreBLEU report (text or JSON, one metric or several)."""
    from mtkit.errors import DataError

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise DataError(f"cannot read the scores in {path}: {error.strerror}") from None
    if text.lstrip().startswith(("{", "[")):
        try:
            values = json.loads(text)
        except ValueError as error:
            raise DataError(f"{path} is not valid JSON ({error})") from None
        rows = values if isinstance(values, list) else [values]
        found = [
            Score(r["name"], float(r["score"]), r.get("signature", ""), str(path))
            for r in rows
            if isinstance(r, dict) and "name" in r and "score" in r
        ]
    else:
        matches = (_TEXT_SCORE.match(line) for line in text.splitlines())
        found = [
            Score(m["name"], float(m["score"]), m["signature"], str(path)) for m in matches if m
        ]
    if not found:
        raise DataError(
            f"{path} holds no sacreBLEU scores; pass the output of `mtkit score` (text or --json)"
        )
    return found


@dataclass(frozen=True)
class Corpus:
    """A training corpus: its directory, weight and tag in the mix, and its manifest."""

    path: str
    weight: float
    tag: str | None
    manifest: dict | None


def _corpora(ckpt: dict) -> list[Corpus]:
    """The corpora the run trained on (its mix's rows, else --data), with their manifests."""
    rows = ckpt.get("mix") or []
    if rows:
        specs = [(r["data"], r.get("weight", 1.0), r.get("tag")) for r in rows]
    else:
        data = (ckpt.get("train_config") or {}).get("data") or []
        specs = [(str(d), 1.0, None) for d in ([data] if isinstance(data, str) else data)]
    return [Corpus(path, weight, tag, _manifest(path)) for path, weight, tag in specs if path]


def _manifest(path: str) -> dict | None:
    try:
        return json.loads((Path(path) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # gone, or not from `mtkit prepare`: the card says less
        return None


def _dataset_id(manifest: dict | None) -> str | None:
    """The hub dataset a corpus was prepared from, or None (local files)."""
    source = (manifest or {}).get("source") or {}
    if source.get("kind") == "hub":
        return source.get("hub_id") or source.get("dataset")
    return None


def _source_text(manifest: dict | None) -> str:
    """Where a corpus came from, in words."""
    source = (manifest or {}).get("source") or {}
    if source.get("kind") in ("hub", "local"):
        where = source.get("hub_id") or source.get("dataset")
        config = f", config {source['config']}" if source.get("config") else ""
        return f"dataset `{where}`{config}" + (
            " (a local copy)" if source["kind"] == "local" else ""
        )
    files = [
        Path(side).name
        for split in (source.get("splits") or {}).values()
        for side in split.values()
        if side
    ]
    return "text files " + ", ".join(f"`{f}`" for f in files) if files else "unrecorded"


# -- the YAML header -----------------------------------------------------------------


def _header(name, langs, license, kind, scores, corpora) -> dict:
    datasets = sorted({d for c in corpora if (d := _dataset_id(c.manifest))})
    header = {
        "language": [code for code in (langs.get("src"), langs.get("tgt")) if code]
        or ["multilingual"],
        "license": license,
        "library_name": "transformers",
        "pipeline_tag": "translation",
        "tags": ["translation", "mtkit", kind],
    }
    if datasets:
        header["datasets"] = datasets
    if scores:
        header["metrics"] = list(dict.fromkeys(_metric_id(s.name) for s in scores))
        test = _test_dataset(corpora)
        pair = f"{langs.get('src', '?')}-{langs.get('tgt', '?')}"
        header["model-index"] = [
            {
                "name": name,
                "results": [
                    {
                        "task": {"type": "translation", "name": f"Translation {pair}"},
                        "dataset": test,
                        "metrics": [
                            {
                                "type": _metric_id(s.name),
                                "value": round(s.value, 2),
                                "name": s.name,
                                "args": s.signature,
                            }
                            for s in scores
                        ],
                    }
                ],
            }
        ]
    return header


def _metric_id(name: str) -> str:
    """The hub's metric id of a sacreBLEU score name (chrF2++ -> chrf)."""
    lower = name.lower()
    return "chrf" if lower.startswith("chrf") else lower


def _test_dataset(corpora: list[Corpus]) -> dict:
    """model-index's dataset: the test split of the first corpus (what `mtkit train` and
    the recipes translate and score)."""
    manifest = corpora[0].manifest if corpora else None
    hub = _dataset_id(manifest)
    if hub:
        return {"name": hub, "type": hub, "split": "test"}
    test = (((manifest or {}).get("source") or {}).get("splits") or {}).get("test") or {}
    file = re.sub(r"\.gz$", "", Path(test.get("src") or "test").name)
    return {"name": Path(file).stem, "type": "local", "split": "test"}


def _yaml(header: dict) -> str:
    import yaml  # PyYAML, which datasets brings

    return yaml.safe_dump(header, sort_keys=False, allow_unicode=True)


# -- the prose -----------------------------------------------------------------------


def _about(ckpt: dict, kind: str) -> str:
    config = ckpt["model_config"]
    train = ckpt.get("train_config") or {}
    norm = "pre-norm" if config["pre_norm"] else "post-norm"
    shape = (
        f"{config['enc_layers']}+{config['dec_layers']} layers, d_model {config['d_model']}, "
        f"{config['n_heads']} heads, feed-forward {config['d_ff']}"
    )
    made = "trained with mtkit"
    if train.get("imported_from"):
        made = f"imported from `{train['imported_from']}` by `mtkit import`"
    elif train.get("init_from"):
        made = f"fine-tuned with mtkit from `{train['init_from']}`"
    cls = {"m2m_100": "M2M100ForConditionalGeneration", "marian": "MarianMTModel"}[kind]
    scheme = (ckpt.get("languages") or {}).get("scheme")
    tokenizer = {"nllb": "NllbTokenizer", "m2m100": "M2M100Tokenizer"}.get(
        scheme, "MarianTokenizer"
    )
    return (
        f"A {norm} Transformer ({shape}; {config['activation']}), {made}, and exported "
        f"with `mtkit export --format transformers` as `{cls}`, whose computation is "
        f"mtkit's: greedy decoding gives the same tokens. The tokenizer is `{tokenizer}` "
        "over the model's own SentencePiece model(s), with its ids."
    )


def _use(name: str, ckpt: dict) -> str:
    languages = ckpt.get("languages") or {}
    scheme, tokens = languages.get("scheme"), languages.get("tokens") or {}
    default = languages.get("default") or {}
    codes = list(tokens)
    src = default.get("src") or _example(codes, ("eng_Latn", "en"), 0)
    tgt = default.get("tgt") or _example(codes, ("fra_Latn", "fr"), -1)
    load, text, generate = "", '["..."]', "model.generate(**batch)"
    if scheme in ("nllb", "m2m100"):
        load = f', src_lang="{src}"'
        generate = (
            "model.generate(**batch, forced_bos_token_id="
            f'tokenizer.convert_tokens_to_ids("{tokens[tgt]}"))'
        )
    elif scheme == "tag":
        text = f'["{tokens[tgt]} ..."]  # the target language\'s tag, then a space'
    lines = [
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer",
        "",
        f'model_id = "{name}"  # this directory, or its hub id (OWNER/{name})',
        f"tokenizer = AutoTokenizer.from_pretrained(model_id{load})",
        "model = AutoModelForSeq2SeqLM.from_pretrained(model_id)",
        f'batch = tokenizer({text}, return_tensors="pt", padding=True)',
        f"print(tokenizer.batch_decode({generate}, skip_special_tokens=True))",
        "```",
        "",
        'With transformers 4.x, `pipeline("translation", model=model_id'
        + (f', src_lang="{src}", tgt_lang="{tgt}"' if load else "")
        + ")` does the same (transformers 5 has no translation pipeline).",
    ]
    return "\n".join(lines)


def _example(codes: list[str], known: tuple[str, ...], fallback: int) -> str:
    """A code for the card's example: a well-known one the model has, else its first/last."""
    return next((c for c in known if c in codes), codes[fallback] if codes else "")


def _scores_section(ckpt: dict, scores: list[Score]) -> str:
    rows = [
        f"| test | {s.name} | {s.value:.1f} | `{_cell(s.signature)}` | `{Path(s.source).name}` |"
        for s in scores
    ]
    metrics = ckpt.get("metrics") or {}
    sentences = (ckpt.get("train_config") or {}).get("valid_bleu_sentences")
    which = f"first {sentences} sentences" if sentences else "all sentences"
    for key, label in (("valid_bleu", "BLEU"), ("valid_chrf", "chrF2")):
        if key in metrics:
            rows.append(
                f"| valid ({which}, greedy) | {label} | {metrics[key]:.1f} | sacreBLEU defaults "
                f"| the checkpoint, step {ckpt.get('step', '?')} |"
            )
    if not rows:
        return ""
    return (
        "## Scores\n\n"
        "| set | metric | score | sacreBLEU signature | from |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
    )


def _cell(text: str) -> str:
    """Text for a Markdown table cell: a signature's | would end the cell."""
    return text.replace("|", "\\|")


def _training(ckpt: dict, corpora: list[Corpus]) -> str:
    train = ckpt.get("train_config") or {}
    if train.get("imported_from") and not train.get("data"):
        return ""
    lines = ["## Training", ""]
    for c in corpora:
        lines.append(f"- `{c.path}`: {_corpus_text(c)}")
    command = train_command(train)
    if command:
        lines += ["", "```sh", command, "```"]
    steps = f"{ckpt.get('step', '?')} updates, epoch {ckpt.get('epoch', '?')}"
    version = ckpt.get("mtkit_version")
    lines += ["", f"Saved after {steps}" + (f" by mtkit {version}." if version else ".")]
    averaged = (ckpt.get("metrics") or {}).get("averaged")
    if averaged:
        lines.append(f"The weights average {len(averaged)} checkpoints (`mtkit average`).")
    return "\n".join(lines)


def _corpus_text(corpus: Corpus) -> str:
    manifest = corpus.manifest
    if manifest is None:
        return "no manifest.json found"
    splits = manifest.get("splits") or {}
    counts = ", ".join(f"{s} {r.get('pairs', '?'):,} pairs" for s, r in splits.items())
    cleaning = manifest.get("cleaning") or {}
    kept = [
        f"{k} {cleaning[k]}"
        for k in ("max_len", "max_ratio", "dedup", "langid", "limit")
        if cleaning.get(k) not in (None, False)
    ]
    mix = f"; weight {corpus.weight:g}" + (f", tag {corpus.tag}" if corpus.tag else "")
    return (
        f"{_source_text(manifest)}; {counts}"
        + (f"; training pairs cleaned with {', '.join(kept)}" if kept else "")
        + (mix if corpus.weight != 1.0 or corpus.tag else "")
    )


def train_command(train: dict) -> str:
    """`mtkit train ...` with the options that differ from their defaults (the model's
    overrides as --set), rebuilt from a checkpoint's training options."""
    import dataclasses

    from mtkit.train.config import TrainConfig

    if not train or "data" not in train:
        return ""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.init}
    words = ["mtkit", "train"]
    for name, value in train.items():
        if name in _NOT_OPTIONS or name not in defaults:
            continue
        words += _flag(name, value, defaults[name])
    return " ".join(shlex.quote(w) if not w.startswith("--") else w for w in words)


def _flag(name: str, value, default) -> list[str]:
    """The command-line words of one training option (none for a default value)."""
    flag = "--" + name.replace("_", "-")
    if name == "model_overrides":
        return [w for k, v in sorted((value or {}).items()) for w in ("--set", f"{k}={v}")]
    if name == "data" and isinstance(value, list):
        return [w for d in value for w in ("--data", str(d))]
    if value == default or value in (None, (), []) or (isinstance(default, bool) and not value):
        return []
    if isinstance(value, bool):
        return [flag]
    if name == "max_time":
        return [flag, f"{value:g}s"]
    if isinstance(value, (list, tuple)):
        return [flag, ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)]
    return [flag, f"{value:g}" if isinstance(value, float) else str(value)]


def _decoding() -> str:
    return (
        "## Decoding\n\n"
        "`generation_config.json` asks for beam 5, `length_penalty=1.0` and "
        "`early_stopping=True`: the same search as `mtkit translate --beam 5 --len-norm "
        "--stop count` (a hypothesis is ranked by its log-probability over its length "
        "counting </s>; a sentence is done when 5 hypotheses have ended). mtkit's own "
        "default ranks with GNMT's length penalty and stops by a bound, which transformers "
        "does not have. mtkit also limits each output to 1.2 × the source's pieces + 10; "
        "`generate` takes one `max_new_tokens` for a batch (the file holds the model's "
        "`max_position_embeddings`). The ids mtkit never produces (pad, the decoder's start "
        "unless it is </s>, source-side tags) are `suppress_tokens`."
    )
