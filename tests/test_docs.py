"""The manual stays true: the generated option reference matches the CLI, every shell
example names commands, options, make targets and files that exist, the runnable
examples run, links between pages resolve, and `mtkit --help` reads in pipeline order
with an example for every command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MULTI30K, REPO
from doccheck import Cli, check_script, sh_blocks

from mtkit.reference import REGENERATE, render, stale

PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
PIPELINE = ["prepare", "train-bpe", "train", "translate", "score"]
OTHERS = ["average", "inspect", "logprob", "plot", "import", "export"]


@pytest.fixture(scope="module")
def cli_tree() -> Cli:
    return Cli.from_app()


# -- the option reference -------------------------------------------------------------


def test_reference_matches_the_cli():
    differ = stale(REPO / "docs" / "reference")
    assert not differ, (
        f"docs/reference/ differs from the CLI in {', '.join(differ)}; regenerate it: {REGENERATE}"
    )


def test_reference_lists_every_option(cli_tree):
    pages = render()
    for command, options in cli_tree.commands.items():
        page = pages[f"{command}.md"]
        for option in options:
            assert f"`{option}`" in page, f"{option} of {command} missing from its page"


def test_reference_does_not_depend_on_the_terminal(monkeypatch):
    before = render()
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setenv("TERM", "dumb")
    assert render() == before


# -- the shell examples ---------------------------------------------------------------


def _all_blocks():
    return [block for page in PAGES for block in sh_blocks(page)]


def test_pages_have_shell_examples():
    blocks = _all_blocks()
    assert len(blocks) > 20
    assert any(block.runnable for block in blocks)
    assert (REPO / "README.md").read_text().count("\n") <= 250


@pytest.mark.parametrize("block", _all_blocks(), ids=lambda block: block.where)
def test_example_names_what_exists(block, cli_tree):
    problems = check_script(block.text, cli_tree, REPO)
    assert not problems, f"{block.where}: " + "; ".join(problems)


BAD_EXAMPLES = {
    "mtkit score -r ref.en --no-such-option": "mtkit score has no option --no-such-option",
    "cat x | mtkit translate -m m.pt --beam-size 5 > y": (
        "mtkit translate has no option --beam-size"
    ),
    "mtkit trian --data d": "mtkit has no command 'trian'",
    "mtkit --verbose prepare": "mtkit has no option --verbose",
    "mtkit prepare --src de \\\n    --tgt en --limt 5": "mtkit prepare has no option --limt",
    "make -f recipes/multi30k.mk showw": "multi30k.mk has no target 'showw'",
    "make -f recipes/multi30k.mk VOCABB=4": "multi30k.mk does not use variable VOCABB",
    "make -f recipes/nope.mk": "no such makefile: recipes/nope.mk",
    "make demoo": "Makefile has no target 'demoo'",
    "python -m bench nosuch": "no such benchmark: bench.nosuch",
    "torchrun --nproc_per_node 2 -m mtkit train --gpus 2": "mtkit train has no option --gpus",
    "python tests/nosuch.py --out x": "no such file: tests/nosuch.py",
}


@pytest.mark.parametrize("script", BAD_EXAMPLES)
def test_checker_finds_a_bad_example(script, cli_tree):
    problems = check_script(script, cli_tree, REPO)
    assert len(problems) == 1 and problems[0].startswith(BAD_EXAMPLES[script]), problems


def test_checker_accepts_good_examples(cli_tree):
    script = """
    M=../shared/data/multi30k   # a comment --not-an-option
    zcat $M/val.en.gz | head -3 | mtkit score -r ref.en --metrics=bleu,chrf -tok 13a [--json]
    MTKIT_LOCAL_HUB=/tmp/hub mtkit prepare --dataset wmt14 --no-dedup --out d 2>/dev/null
    mtkit --version && mtkit translate -m a.pt --len-penalty -1 >&2
    mtkit logprob -m a.pt --nbest-input - -i s.de
    make -f recipes/multi30k.mk SRC=en TGT=de show; make demo MULTI30K=x; make -q test
    python -m bench decode && python -m bench scale --pairs 500000 && python -m mtkit.reference
    """
    assert check_script(script, cli_tree, REPO) == []


def _runnable_pages():
    pages = {}
    for block in _all_blocks():
        if block.runnable:
            pages.setdefault(block.path, []).append(block)
    return sorted(pages.items())


@pytest.mark.parametrize("page,blocks", _runnable_pages(), ids=lambda x: getattr(x, "name", ""))
def test_runnable_examples_run(page, blocks, tmp_path):
    """A page's runnable blocks run in order, in one fresh directory, with `mtkit` this
    checkout's and `M` Multi30k's directory."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "mtkit"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m mtkit "$@"\n')
    shim.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "M": str(MULTI30K),
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "100",
    }
    for block in blocks:
        result = subprocess.run(
            ["bash", "-e", "-u", "-c", block.text],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, (
            f"{block.where} exited {result.returncode}:\n{block.text}\n{result.stderr[-2000:]}"
        )


# -- links ----------------------------------------------------------------------------

_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _slugs(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown page."""
    slugs = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slugs.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return slugs


def test_links_resolve():
    pages = [*PAGES, *(REPO / "docs" / "reference").glob("*.md")]
    broken = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in _LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            if not path.exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
            elif anchor and path.suffix == ".md" and anchor not in _slugs(path):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "broken links: " + ", ".join(broken)


# -- mtkit --help ---------------------------------------------------------------------


def test_help_lists_commands_in_pipeline_order():
    result = subprocess.run(
        [sys.executable, "-m", "mtkit", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert result.returncode == 0
    listing = result.stdout.split("Commands:", 1)[1].strip().splitlines()
    rows = [line.split(None, 1) for line in listing]
    names = [row[0] for row in rows]
    assert names[: len(PIPELINE) + len(OTHERS)] == PIPELINE + OTHERS
    for name, row in zip(names, rows, strict=True):
        # one line each: a help of its own, not wrapped onto a second line or cut with "..."
        assert len(row) == 2 and not row[1].endswith("..."), f"{name}: {row}"
    assert len(listing) == len(names)


def test_every_command_has_a_one_line_help_and_an_example(cli_tree):
    from mtkit.reference import cli_group

    group = cli_group()
    ctx = group.context_class(group, info_name="mtkit")
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command.short_help and "\n" not in command.short_help, name
        epilog = command.epilog or ""
        assert epilog.startswith(f"Example: mtkit {name} "), f"{name}: {epilog!r}"
        assert "\n" not in epilog.strip(), name
        example = epilog.removeprefix("Example: ")
        assert check_script(example, cli_tree, REPO) == [], f"{name}: {example}"
