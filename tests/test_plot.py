"""`mtkit plot`: a PNG of real (tiny) runs' curves, and one clear line when it cannot draw."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import call_main
from test_train import m30k, tiny_config  # noqa: F401 - m30k is a fixture

from mtkit.errors import ConfigError, DataError
from mtkit.plot import read_run, run_names


@pytest.fixture(scope="module")
def runs(m30k, tmp_path_factory) -> list[Path]:  # noqa: F811 - the imported fixture
    """Two short real runs with validation (BLEU, chrF) every 4 updates, other learning rates."""
    from mtkit.train import train

    root = tmp_path_factory.mktemp("plot")
    made = []
    for name, lr in (("base", 3e-3), ("fast", 1e-2)):
        config = tiny_config(m30k, root / name, max_updates=12, valid_every=4, lr=lr)
        train(config)
        made.append(root / name)
    return made


def test_png_of_real_runs(runs, tmp_path, monkeypatch, capsys):
    import matplotlib.image

    out = tmp_path / "curves.png"
    assert call_main(monkeypatch, "plot", *runs, "-o", out, "--title", "tiny runs") == 0
    assert capsys.readouterr().err.strip() == f"wrote {out}"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(out)  # [H,W,channels], floats in 0..1
    height, width = pixels.shape[:2]
    assert width > 1.5 * height > 600  # two rows of panels, wide
    assert (pixels[..., :3] < 0.5).any() and pixels[..., :3].std() > 0.05  # something drawn
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # no temporary file left


def test_reads_what_training_writes(runs):
    curves = read_run(runs[0])
    assert curves.name == "base"
    assert curves.train["step"] == [float(s) for s in range(1, 13)]
    assert curves.valid["step"] == [4.0, 8.0, 12.0]
    assert all(0 <= b <= 100 for b in curves.valid["bleu"])
    assert all(lr > 0 for lr in curves.train["lr"])
    assert curves.train["minutes"] == sorted(curves.train["minutes"])


def test_refuses_what_it_cannot_plot(runs, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "metrics.jsonl").write_text("")
    cases = [
        ([empty], f"error: {empty} has no metrics.jsonl; pass a run directory that `mtkit train`"),
        ([fresh], "holds no training records yet"),
        ([tmp_path / "nope"], "error: no such run:"),
        ([runs[0], "-o", tmp_path / "curves.jpeg"], "name it .png, .pdf or .svg"),
    ]
    for args, message in cases:
        assert call_main(monkeypatch, "plot", *args) == 1
        captured = capsys.readouterr()
        assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
        assert message in captured.err, captured.err
    assert not list(Path.cwd().glob("curves.jpeg"))


def test_without_matplotlib_one_line(runs, tmp_path, monkeypatch, capsys):
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    assert call_main(monkeypatch, "plot", runs[0], "-o", tmp_path / "c.png") == 1
    err = capsys.readouterr().err
    assert err == "error: mtkit plot needs matplotlib; install it with: pip install 'mtkit[plot]'\n"
    assert not (tmp_path / "c.png").exists()


def test_names_and_torn_lines(tmp_path):
    for parent in ("a", "b"):
        run = tmp_path / parent / "run"
        run.mkdir(parents=True)
        record = {"kind": "train", "step": 1, "nll_loss": 2.0, "lr": 1e-4, "elapsed": 6.0}
        (run / "metrics.jsonl").write_text(json.dumps(record) + '\n{"kind": "tra')
    assert run_names([tmp_path / "a" / "run", tmp_path / "b" / "run"]) == ["a/run", "b/run"]
    curves = read_run(tmp_path / "a" / "run")
    assert curves.train["minutes"] == [0.1] and curves.valid == {}
    with pytest.raises(ConfigError, match="no run given"):
        from mtkit.plot import plot_runs

        plot_runs([], tmp_path / "x.png")
    with pytest.raises(DataError):
        read_run(tmp_path)
