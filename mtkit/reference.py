"""The option reference in docs/reference/, written from the command line itself.

`python -m mtkit.reference [DIR]` (or `make docs`) walks the click tree that Typer
builds from `mtkit.cli.app` and writes one Markdown page per command, plus an index:
every argument and option with its type, default and help, in the order `--help`
shows them. The text comes from the parameters, not from click's help formatter, so
it does not depend on the terminal's width or on rich. tests/test_docs.py fails when
the checked-in pages differ from what this writes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mtkit.errors import MtkitError

DEFAULT_DIR = Path("docs/reference")
REGENERATE = "make docs (or: python -m mtkit.reference docs/reference)"


def cli_group() -> Any:
    """The `mtkit` command group that Typer builds (its own click-like tree)."""
    import typer

    from mtkit.cli import app

    return typer.main.get_command(app)


def render(group: Any = None) -> dict[str, str]:
    """File name -> Markdown text: README.md (the index) and COMMAND.md for each command."""
    group = group or cli_group()
    ctx = group.context_class(group, info_name="mtkit")
    names = group.list_commands(ctx)
    pages = {"README.md": _index(group, ctx, names)}
    for name in names:
        pages[f"{name}.md"] = _command_page(name, group.get_command(ctx, name))
    return pages


def write(directory: Path = DEFAULT_DIR) -> list[Path]:
    """Write the pages (only those whose text changed) and remove stale ones."""
    from mtkit.io import write_text

    directory.mkdir(parents=True, exist_ok=True)
    pages = render()
    written = []
    for name, text in pages.items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            write_text(path, text)
            written.append(path)
    for path in sorted(directory.glob("*.md")):
        if path.name not in pages:
            path.unlink()
            written.append(path)
    return written


def stale(directory: Path = DEFAULT_DIR) -> list[str]:
    """Names of pages that differ from what the CLI says, are missing or are left over."""
    pages = render()
    found = {path.name for path in directory.glob("*.md")} if directory.is_dir() else set()
    differ = [
        name
        for name, text in pages.items()
        if name not in found or (directory / name).read_text(encoding="utf-8") != text
    ]
    return sorted(differ + [name for name in found if name not in pages])


# -- pages ---------------------------------------------------------------------------


def _index(group: Any, ctx: Any, names: list[str]) -> str:
    lines = [
        "# mtkit option reference",
        "",
        _GENERATED,
        "",
        "Usage: `mtkit [OPTIONS] COMMAND [ARGS]...`",
        "",
        _escape(_clean(group.help or "")),
        "",
        "| command | what it does |",
        "| --- | --- |",
    ]
    for name in names:
        command = group.get_command(ctx, name)
        summary = _cell(command.get_short_help_str(limit=1000))
        lines.append(f"| [{name}]({name}.md) | {summary} |")
    lines += ["", "Options of `mtkit` itself:", "", *_param_table(group.params), ""]
    return "\n".join(lines)


def _command_page(name: str, command: Any) -> str:
    arguments = [p for p in command.params if _is_argument(p)]
    usage = " ".join(["mtkit", name, "[OPTIONS]", *(_argument_usage(a) for a in arguments)])
    lines = [f"# mtkit {name}", "", _GENERATED, "", f"Usage: `{usage}`", ""]
    lines += [_escape(_clean(command.help or "")), ""]
    if command.epilog:
        epilog = _clean(command.epilog)
        label, _, example = epilog.partition(": ")
        shown = f"{label}: `{example}`" if example.startswith("mtkit ") else _escape(epilog)
        lines += [shown, ""]
    lines += [*_param_table(command.params), ""]
    return "\n".join(lines)


_GENERATED = (
    "Generated from the command line by `python -m mtkit.reference`; do not edit. "
    f"After changing an option, run `{REGENERATE.split(' (')[0]}`."
)


def _param_table(params: list[Any]) -> list[str]:
    rows = ["| argument or option | type | default | meaning |", "| --- | --- | --- | --- |"]
    for param in params:
        if getattr(param, "hidden", False):
            continue
        rows.append(
            f"| {_names(param)} | {_type(param)} | {_default(param)} | {_cell(_help(param))} |"
        )
    rows.append("| `--help` | flag | | Show the help and exit. |")
    return rows


def _is_argument(param: Any) -> bool:
    return param.param_type_name == "argument"


def _is_flag(param: Any) -> bool:
    return not _is_argument(param) and bool(getattr(param, "is_flag", False))


def _names(param: Any) -> str:
    if _is_argument(param):
        return f"`{_argument_usage(param)}`"
    names = ", ".join(f"`{opt}`" for opt in sorted(param.opts, key=_long_first))
    if param.secondary_opts:
        names += " / " + " ".join(f"`{opt}`" for opt in param.secondary_opts)
    return names


def _long_first(opt: str) -> tuple[bool, str]:
    return (not opt.startswith("--"), opt)


def _argument_usage(argument: Any) -> str:
    metavar = argument.metavar or argument.name.upper()
    if argument.nargs != 1:
        metavar += "..."
    return metavar if argument.required else f"[{metavar}]"


_TYPES = {"int": "integer", "float": "number", "str": "text", "Path": "path", "bool": "boolean"}


def _type(param: Any) -> str:
    if _is_flag(param):
        return "flag"
    # Typer's parameters name their Python annotation (int, list[Path]); click's their type.
    bare = param.bare_type() if hasattr(param, "bare_type") else param.type.name
    repeatable = bare.startswith("list[")
    if repeatable:
        bare = bare[len("list[") : -1]
    text = _TYPES.get(bare, bare)
    if not _is_argument(param) and param.metavar:
        text = f"{text} ({param.metavar})"
    if repeatable or getattr(param, "multiple", False) or param.nargs == -1:
        text += ", repeatable"
    return _cell(text)


def _default(param: Any) -> str:
    if param.required:
        return "required"
    value = param.default
    if callable(value):  # a factory: show nothing rather than call it
        return ""
    if _is_flag(param):
        if value:
            return f"`{param.opts[0]}`"
        return f"`{param.secondary_opts[0]}`" if param.secondary_opts else "off"
    if value is None or value == [] or value == ():
        return ""
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    return f"`{value}`"


def _help(param: Any) -> str:
    text = _clean(getattr(param, "help", None) or "")
    envvar = getattr(param, "envvar", None)
    if envvar:
        text = f"{text} Environment: `{envvar}`.".strip()
    return text


def _clean(text: str) -> str:
    """Help text as one paragraph per blank-line-separated block, lines joined."""
    import inspect

    blocks = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(block.split()) for block in blocks)


def _escape(text: str) -> str:
    """Help text shown as Markdown: '<TAB>' is text, not an HTML tag."""
    return text.replace("<", "\\<")


def _cell(text: str) -> str:
    """Text that stays in one Markdown table cell."""
    return _escape(" ".join(text.split()).replace("|", "\\|"))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0].startswith("-")):
        print("usage: python -m mtkit.reference [DIR]  (default: docs/reference)", file=sys.stderr)
        return 2
    directory = Path(args[0]) if args else DEFAULT_DIR
    try:
        changed = write(directory)
    except MtkitError as error:  # a full or read-only disk (mtkit.io's own line)
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # the directory itself could not be made
        reason = error.strerror or str(error)
        print(f"error: could not write {directory}: {reason}; choose another DIR", file=sys.stderr)
        return 1
    for path in changed:
        print(f"wrote {path}" if path.exists() else f"removed {path}", file=sys.stderr)
    print(f"{directory}: {len(changed)} page(s) changed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
