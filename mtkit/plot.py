"""`mtkit plot`: training curves of one or more runs, from their RUN/metrics.jsonl.

Owns reading the records `mtkit.train` writes (`kind` "train": loss, nll_loss,
lr, elapsed ...; `kind` "valid": valid_nll_loss, valid_bleu, valid_chrf ...) and
drawing them with matplotlib (the `plot` extra, Agg backend, no display needed):
one column per quantity (loss, BLEU, chrF, learning rate), against updates in
the first row and against training minutes in the second, every run in its own
colour under its name. A quantity no run logged gets no column. A multilingual run's
validations (`valid_directions`, mtkit.train.validate) add a BLEU and a chrF column by
direction: each direction a line style and marker of its own, in its run's colour.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mtkit.errors import ConfigError, DataError

METRICS_FILE = "metrics.jsonl"


@dataclass
class Curves:
    """One run's records, as columns: x values (step, minutes) and y values per key."""

    name: str
    train: dict[str, list[float]] = field(default_factory=dict)  # step, minutes, nll, lr
    valid: dict[str, list[float]] = field(default_factory=dict)  # step, minutes, nll, bleu, chrf
    # A multilingual run's validations: direction ("de-en") -> step, minutes, bleu, chrf.
    directions: dict[str, dict[str, list[float]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Panel:
    """One column of the figure: what it shows and where the values come from."""

    title: str
    ylabel: str
    # (records, key, label): records "train", "valid" or "directions" (one line each)
    series: tuple[tuple[str, str, str], ...]


PANELS = (
    Panel(
        "Loss",
        "cross-entropy (nats/token)",
        (("train", "nll", "train"), ("valid", "nll", "valid")),
    ),
    Panel("Validation BLEU", "BLEU", (("valid", "bleu", "valid"),)),
    Panel("Validation chrF", "chrF", (("valid", "chrf", "valid"),)),
    Panel("BLEU by direction", "BLEU", (("directions", "bleu", "valid"),)),
    Panel("chrF by direction", "chrF", (("directions", "chrf", "valid"),)),
    Panel("Learning rate", "learning rate", (("train", "lr", "train"),)),
)
# The line styles and markers that tell directions apart (cycled beyond five).
_DIRECTION_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1, 1, 1)), "v"))
# metrics.jsonl keys behind the short names (the first present wins: NLL, as
# perplexity is exp(NLL); runs without it fall back to the label-smoothed loss).
_KEYS = {
    "train": {"nll": ("nll_loss", "loss"), "lr": ("lr",)},
    "valid": {"nll": ("valid_nll_loss", "valid_loss"), "bleu": ("valid_bleu",),
              "chrf": ("valid_chrf",)},
}  # fmt: skip
_DIRECTION_KEYS = {"bleu": ("valid_bleu",), "chrf": ("valid_chrf",)}


# -- reading ---------------------------------------------------------------------


def read_run(path: Path | str, name: str | None = None) -> Curves:
    """The curves of a run directory (or of a metrics.jsonl file itself)."""
    path = Path(path)
    file = path / METRICS_FILE if path.is_dir() else path
    if not file.is_file():
        where = f"{path} has no {METRICS_FILE}" if path.is_dir() else f"no such run: {path}"
        raise DataError(f"{where}; pass a run directory that `mtkit train` wrote")
    curves = Curves(name or (path if path.is_dir() else path.parent).name)
    for line in file.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a crash; the writer drops it on resume too
        kind = record.get("kind") if isinstance(record, dict) else None
        if kind in _KEYS and "step" in record:
            _add(getattr(curves, kind), record, _KEYS[kind])
        if kind == "valid" and isinstance(record.get("valid_directions"), dict):
            at = {"step": record["step"], "elapsed": record.get("elapsed", "nan")}
            for name, values in record["valid_directions"].items():
                columns = curves.directions.setdefault(name, {})
                _add(columns, {**values, **at}, _DIRECTION_KEYS)
    if not curves.train.get("step") and not curves.valid.get("step"):
        raise DataError(f"{file} holds no training records yet; plot it after the first log")
    return curves


def _add(columns: dict[str, list], record: dict, keys: dict[str, tuple[str, ...]]) -> None:
    """Append one record's values; a value the record lacks is NaN (a gap in its line)."""
    columns.setdefault("step", []).append(float(record["step"]))
    columns.setdefault("minutes", []).append(float(record.get("elapsed", "nan")) / 60)
    for short, names in keys.items():
        value = next((record[n] for n in names if record.get(n) is not None), float("nan"))
        columns.setdefault(short, []).append(float(value))


def run_names(paths: list[Path]) -> list[str]:
    """Short names that tell runs apart: the directory name, with parents where it repeats."""
    parts = [Path(p).resolve().parts for p in paths]
    parts = [p[:-1] if p[-1] == METRICS_FILE else p for p in parts]
    for depth in range(1, max(map(len, parts)) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


# -- drawing ---------------------------------------------------------------------


def plot_runs(runs: list[Path | str], out: Path | str, title: str | None = None) -> Path:
    """Draw the runs' curves into `out` (.png, .pdf or .svg, by its suffix); returns `out`."""
    if not runs:
        raise ConfigError("no run given; pass one or more run directories (RUN/metrics.jsonl)")
    out = Path(out)
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in ("png", "pdf", "svg"):
        raise ConfigError(f"cannot tell the image format of {out}; name it .png, .pdf or .svg")
    names = run_names([Path(r) for r in runs])
    curves = [read_run(run, name) for run, name in zip(runs, names, strict=True)]
    figure = draw(curves, title)
    from mtkit.io import atomic_write

    with atomic_write(out) as file:
        figure.savefig(file, format=fmt, dpi=200, bbox_inches="tight")
    return out


def draw(curves: list[Curves], title: str | None = None):
    """A matplotlib Figure: a column per logged quantity, rows against updates and minutes."""
    plt = _pyplot()
    panels = [p for p in PANELS if any(_has(c, p) for c in curves)]
    with plt.rc_context(_STYLE):
        figure, axes = plt.subplots(
            2, len(panels), figsize=(2.6 * len(panels) + 0.6, 4.6), squeeze=False,
            sharex="row", layout="constrained",
        )  # fmt: skip
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        styles = _direction_styles(curves)
        for column, panel in enumerate(panels):
            for row, x in enumerate(("step", "minutes")):
                ax = axes[row][column]
                for i, run in enumerate(curves):
                    _draw_series(ax, run, panel, x, colours[i % len(colours)], styles)
                _label(ax, panel, x, row, column)
        _legend(figure, curves, colours, styles)
        if title:
            figure.suptitle(title)
    plt.close(figure)
    return figure


def _has(run: Curves, panel: Panel) -> bool:
    import math

    return any(
        any(not math.isnan(v) for v in columns.get(key, []))
        for records, key, _ in panel.series
        for columns in _columns(run, records)
    )


def _columns(run: Curves, records: str) -> list[dict[str, list[float]]]:
    """The column sets a series reads: the run's train or valid records, or each
    direction's validations."""
    return list(run.directions.values()) if records == "directions" else [getattr(run, records)]


def _direction_styles(curves: list[Curves]) -> dict[str, tuple]:
    """direction -> (line style, marker): the same in every run that has it."""
    names = dict.fromkeys(name for run in curves for name in run.directions)
    return {name: _DIRECTION_STYLES[i % len(_DIRECTION_STYLES)] for i, name in enumerate(names)}


def _draw_series(ax, run: Curves, panel: Panel, x: str, colour: str, styles: dict) -> None:
    """Training values as a thin line, validation values as a line with dots; directions
    as a line each in `styles`' style."""
    for records, key, _ in panel.series:
        if records == "directions":
            for name, columns in run.directions.items():
                style, marker = styles[name]
                xs, ys = _finite(columns[x], columns[key])
                ax.plot(xs, ys, color=colour, linewidth=1.1, linestyle=style, marker=marker,
                        markersize=2.5)  # fmt: skip
            continue
        columns = getattr(run, records)
        if key not in columns:
            continue
        xs, ys = _finite(columns[x], columns[key])
        if records == "train":
            ax.plot(xs, ys, color=colour, linewidth=0.9, alpha=0.85)
        else:
            dashed = len(panel.series) > 1  # beside training values, validation is dashed
            ax.plot(xs, ys, color=colour, linewidth=1.2, marker="o", markersize=2.5,
                    linestyle="--" if dashed else "-")  # fmt: skip


def _finite(xs: list[float], ys: list[float]) -> tuple[list[float], list[float]]:
    import math

    kept = [(x, y) for x, y in zip(xs, ys, strict=True) if not (math.isnan(x) or math.isnan(y))]
    return [x for x, _ in kept], [y for _, y in kept]


def _label(ax, panel: Panel, x: str, row: int, column: int) -> None:
    if row == 0:
        ax.set_title(panel.title)
    ax.set_xlabel("updates" if x == "step" else "wall-clock time (minutes)")
    if column == 0 or panel.ylabel != "cross-entropy (nats/token)":
        ax.set_ylabel(panel.ylabel)
    if panel.title == "Learning rate":
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax.ticklabel_format(axis="x", style="plain")
    ax.grid(True, linewidth=0.4, alpha=0.5)


def _legend(figure, curves: list[Curves], colours, styles: dict) -> None:
    """Runs by colour; solid = train, dashed = valid; each direction's style."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colours[i % len(colours)], linewidth=1.5, label=run.name)
               for i, run in enumerate(curves)]  # fmt: skip
    handles += [
        Line2D([], [], color="0.3", linewidth=0.9, label="train"),
        Line2D([], [], color="0.3", linewidth=1.2, linestyle="--", marker="o", markersize=2.5,
               label="validation"),
    ]  # fmt: skip
    for name, (style, marker) in styles.items():
        handles.append(Line2D([], [], color="0.3", linewidth=1.1, linestyle=style,
                              marker=marker, markersize=2.5, label=name))  # fmt: skip
    figure.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6),
                  frameon=False)  # fmt: skip


# A figure for a paper: small serif-free type, no top/right frame, light grid.
_STYLE = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "legend.fontsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "savefig.facecolor": "white",
}


def _pyplot():
    """matplotlib's pyplot on the Agg backend (files only), or a one-line error."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(
            "mtkit plot needs matplotlib; install it with: pip install 'mtkit[plot]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
