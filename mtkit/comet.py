"""COMET (Rei et al. 2020) for `mtkit score --metrics comet`, through Unbabel's library.

Owns what mtkit asks of unbabel-comet (an optional extra, `pip install 'mtkit[comet]'`):
finding a model by hub name or directory and loading it on a device and precision,
scoring segments in batches with a progress bar on stderr, the signature in
SacreCOMET's style (`Python3.11.8|Comet2.2.7|fp32|Unbabel/wmt22-comet-da|r1`: COMET
#204 shows one model give 0.8618 under COMET 1.1.2 and 0.7982 under 2.2.1, so the
library version and the precision belong with the figure), and the paired comparison
of systems with comet-compare's own functions (bootstrap resampling and the paired
t-test). The reports (text, JSON, beside sacreBLEU's metrics) are mtkit.score's.

Scoring. Segments are sorted and batched exactly as the library's `predict` does
(numpy's argsort of the source lengths, `batch_size` a batch), and each batch goes
through the model's own `prepare_sample` and `predict_step`, so the figures are
`predict`'s (the tests compare them) without a Lightning Trainer for every call; that
leaves the progress bar to mtkit and stdout to the data. Several references: each
segment's score is the mean over them (SacreCOMET's `r2avg`).
"""

from __future__ import annotations

import contextlib
import logging
import platform
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mtkit.errors import ConfigError, DataError

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
INSTALL = "pip install 'mtkit[comet]' (the unbabel-comet library)"
# comet-compare's defaults: 300 bootstrap samples of 40% of the segments each.
COMPARE_SPLITS = 300
COMPARE_SAMPLE_RATIO = 0.4


@dataclass(frozen=True)
class CometOptions:
    """Which COMET model, and how it runs."""

    comet_model: str | None = None  # a hub name (Unbabel/wmt22-comet-da) or a directory
    comet_batch_size: int = 16  # segments a batch (comet-score's default)
    device: str = "auto"  # a CUDA GPU when there is one
    # SacreCOMET's default; the signature names it. comet-score 2.2.7 calls model.half():
    # its figures are fp16's.
    precision: str = "fp32"

    def check(self) -> None:
        if not self.comet_model:
            raise ConfigError(
                "--metrics comet needs a model: --comet-model Unbabel/wmt22-comet-da "
                "(from the hub or its cache) or --comet-model DIR"
            )
        if self.comet_batch_size < 1:
            raise ConfigError(f"--comet-batch-size must be at least 1, got {self.comet_batch_size}")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"COMET runs in {', '.join(PRECISIONS)}; got --precision {self.precision!r}"
            )


@dataclass
class Comet:
    """A loaded COMET model and what its signature says."""

    model: object  # the library's CometModel
    name: str  # as the user gave it
    version: str  # unbabel-comet's
    precision: str
    device: object  # torch.device
    batch_size: int

    @property
    def needs_references(self) -> bool:
        return bool(self.model.requires_references())

    def signature(self, n_refs: int) -> str:
        """SacreCOMET's `Python3.11.8|Comet2.2.7|fp32|MODEL|r1` (r0: a reference-free
        model; r2avg: the mean over two references)."""
        fields = self.signature_fields(n_refs)
        return "|".join(
            [f"Python{fields['python']}", f"Comet{fields['comet']}", fields["precision"],
             fields["model"], f"r{fields['refs']}"]
        )  # fmt: skip

    def signature_fields(self, n_refs: int) -> dict[str, str]:
        """The signature's parts by name, for the JSON report."""
        refs = n_refs if self.needs_references else 0
        return {
            "python": platform.python_version(),
            "comet": self.version,
            "precision": self.precision,
            "model": self.name,
            "refs": f"{refs}avg" if refs > 1 else str(refs),
        }


# -- loading -----------------------------------------------------------------------


def import_comet():
    """The `comet` package, or one ConfigError line saying what to install."""
    try:
        with warnings.catch_warnings():  # torchmetrics 0.10's pkg_resources, deprecated
            warnings.simplefilter("ignore", UserWarning)
            import comet
    except ImportError as error:
        raise ConfigError(f"--metrics comet needs unbabel-comet ({error}); {INSTALL}") from None
    return comet


def load_comet(options: CometOptions) -> Comet:
    """The model `options.comet_model` names, on its device, in its precision."""
    import torch

    from mtkit.device import pick_device

    options.check()
    comet = import_comet()
    device = pick_device(options.device)
    path = checkpoint_path(comet, options.comet_model)
    with _quiet("comet", "pytorch_lightning", "lightning_fabric"):
        try:
            model = comet.load_from_checkpoint(str(path))
        except OSError as error:  # the encoder's tokenizer or config is not to be had
            raise ConfigError(_encoder_missing(path, error)) from None
    _three_outputs(model)
    model.eval()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    model.to(device=device, dtype=dtype[options.precision])
    return Comet(
        model=model,
        name=options.comet_model,
        version=comet.__version__,
        precision=options.precision,
        device=device,
        batch_size=options.comet_batch_size,
    )


def checkpoint_path(comet, name: str) -> Path:
    """DIR/checkpoints/model.ckpt of a model directory (or the .ckpt given), else the
    hub's copy of model NAME (its local cache when the hub cannot be reached)."""
    path = Path(name)
    if path.is_dir():
        path = path / "checkpoints" / "model.ckpt"
        if not path.is_file() or not (path.parents[1] / "hparams.yaml").is_file():
            raise DataError(
                f"{name} is not a COMET model directory: it needs hparams.yaml and "
                "checkpoints/model.ckpt (the layout of the hub's Unbabel/* repositories)"
            )
        return path
    if path.suffix == ".ckpt":
        if not path.is_file():
            raise DataError(f"COMET checkpoint not found: {path} (check the path)")
        return path
    with _quiet("comet", "huggingface_hub"):
        try:
            return Path(comet.download_model(name))
        except Exception:  # noqa: BLE001 - the library turns every failure into KeyError
            pass
    raise ConfigError(
        f"COMET model {name!r} is not a directory, and neither the hub nor its local "
        f"cache has it; download it where the hub is reachable (huggingface-cli download "
        f"{name}) and copy the cache here, or pass --comet-model DIR"
    )


def _encoder_missing(path: Path, error: OSError) -> str:
    import yaml

    try:
        hparams = yaml.safe_load((path.parents[1] / "hparams.yaml").read_text("utf-8"))
        encoder = hparams.get("pretrained_model", "?")
    except (OSError, ValueError, AttributeError):
        encoder = "?"
    return (
        f"cannot load the COMET model's encoder {encoder!r} (its tokenizer and config come "
        f"from the hub or its cache: {str(error).splitlines()[0]}); download it "
        f"(huggingface-cli download {encoder}) where the hub is reachable"
    )


def _three_outputs(model) -> None:
    """comet 2.2.7's XLM-R encoder unpacks three outputs of the Hugging Face model
    (hidden states, pooler, all layers) with return_dict=False; transformers 5 leaves the
    absent pooler (add_pooling_layer=False) out of that tuple, so the call fails with
    "not enough values to unpack". Where it does, the pooler's None goes back in; the
    weights and figures are those of transformers 4."""
    encoder = getattr(getattr(model, "encoder", None), "model", None)
    if encoder is None or getattr(encoder, "pooler", 0) is not None:
        return  # a model with a pooler gives three outputs in every version
    forward = encoder.forward

    def with_pooler(*args, **kwargs):
        outputs = forward(*args, **kwargs)
        if isinstance(outputs, tuple) and len(outputs) == 2:
            return outputs[0], None, outputs[1]
        return outputs

    encoder.forward = with_pooler


@contextlib.contextmanager
def _quiet(*names: str):
    """The library's info lines ("Encoder model frozen.") off while it loads."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


# -- scoring -----------------------------------------------------------------------


def segment_scores(
    comet: Comet,
    sources: Sequence[str],
    hyps: Sequence[str],
    refs: Sequence[Sequence[str]] = (),
    show_progress: bool = True,
    description: str = "COMET",
) -> list[float]:
    """One score per segment (the mean over `refs` when there are several; reference-free
    models take none)."""
    if comet.needs_references and not refs:
        raise ConfigError(f"COMET model {comet.name} compares with references; pass -r REF")
    streams = [list(ref) for ref in refs] if comet.needs_references else [None]
    total = len(hyps) * len(streams)
    with _bar(show_progress, description, total) as advance:
        per_ref = [_score(comet, sources, hyps, ref, advance) for ref in streams]
    return [sum(values) / len(values) for values in zip(*per_ref, strict=True)]


def _score(comet: Comet, sources, hyps, ref, advance) -> list[float]:
    """The library's predict, batch for batch: same order, same batches, same figures."""
    import numpy as np
    import torch

    samples = [{"src": s, "mt": h} for s, h in zip(sources, hyps, strict=True)]
    if ref is not None:
        for sample, r in zip(samples, ref, strict=True):
            sample["ref"] = r
    if not samples:
        return []
    # predict()'s length batching: ascending source length (numpy's default argsort).
    order = np.argsort([len(sample["src"]) for sample in samples]).tolist()
    scores = [0.0] * len(samples)
    model, size = comet.model, comet.batch_size
    for start in range(0, len(order), size):
        ids = order[start : start + size]
        batch = model.prepare_sample([samples[i] for i in ids], stage="predict")
        with torch.inference_mode(), _autocast(comet):
            values = model.predict_step(_to_device(batch, comet.device)).scores
        for i, value in zip(ids, values.float().cpu().tolist(), strict=True):
            scores[i] = value
        advance(len(ids))
    return scores


def _to_device(batch, device):
    """A batch of prepare_sample (tensors in dicts, lists and tuples) on `device`."""
    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(value, device) for value in batch)
    return batch.to(device) if hasattr(batch, "to") else batch


def _autocast(comet: Comet):
    """The weights are cast to bf16/fp16 (comet-score's model.half()), but the library's
    average pooling divides by a float32 count and hands float32 to the bf16 estimator:
    autocast makes those matmuls run in the model's precision too."""
    import torch

    if comet.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if comet.precision == "bf16" else torch.float16
    return torch.autocast(comet.device.type, dtype=dtype)


@contextlib.contextmanager
def _bar(show: bool, description: str, total: int):
    if not show:
        yield lambda n: None
        return
    from mtkit.console import progress

    with progress() as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


# -- comparing systems -------------------------------------------------------------


def compare_systems(
    names: Sequence[str],
    scores: Sequence[Sequence[float]],
    seed: int,
    num_splits: int = COMPARE_SPLITS,
    sample_ratio: float = COMPARE_SAMPLE_RATIO,
) -> list[dict]:
    """comet-compare's statistics of every system against the first (the baseline): its
    bootstrap resampling (`num_splits` samples of `sample_ratio` of the segments, numpy
    seeded with `seed`; comet-compare seeds 1) and scipy's paired t-test (two-sided) of
    the segment scores. One dict a system, the baseline's without a test."""
    import numpy as np

    bootstrap_resampling, pairwise_bootstrap = _compare_functions()
    from scipy import stats

    matrix = np.array(scores, dtype="float32")  # [systems, segments], as comet-compare
    np.random.seed(seed)
    size = max(int(matrix.shape[1] * sample_ratio), 1)
    resampled = bootstrap_resampling(matrix, sample_size=size, num_splits=num_splits)
    baseline = names[0]
    pairs = {
        result["y_name"]: result["bootstrap_resampling"]
        for result in pairwise_bootstrap(resampled, list(names))
        if result["x_name"] == baseline
    }
    results = [{"system": baseline, "score": float(matrix[0].mean())}]
    for i, name in enumerate(names[1:], 1):
        test = stats.ttest_rel(matrix[0], matrix[i], alternative="two-sided")
        boot = pairs[name]
        results.append(
            {
                "system": name,
                "score": float(matrix[i].mean()),
                "p_value": float(test.pvalue),
                "t_statistic": float(test.statistic),
                "bootstrap": {
                    "baseline_mean": boot["x-mean"],
                    "mean": boot["y-mean"],
                    "wins": boot["y_wins (%)"],
                    "ties": boot["ties (%)"],
                    "losses": boot["x_wins (%)"],
                },
            }
        )
    return results


def _compare_functions():
    """comet-compare's bootstrap functions. Importing its module sets torch's float32
    matmul precision to "high" (TF32 on GPUs), which would change later fp32 figures:
    the setting is put back."""
    import torch

    before = torch.get_float32_matmul_precision()
    try:
        from comet.cli.compare import bootstrap_resampling, pairwise_bootstrap
    finally:
        torch.set_float32_matmul_precision(before)
    return bootstrap_resampling, pairwise_bootstrap
