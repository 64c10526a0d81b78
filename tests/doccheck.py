"""Checking the shell examples in README.md and docs/ against what they name.

A ```sh block is read as a shell script: lines joined at a trailing backslash,
comments dropped, split into simple commands at pipes, `&&`, `||` and `;`. Then:

- `mtkit COMMAND --option ...` (also `python -m mtkit`, `torchrun ... -m mtkit`, a path
  ending in /mtkit): the command must exist and every option must be one of its own;
- `make [-f FILE] [VAR=VALUE ...] [TARGET ...]`: FILE must exist, each TARGET must be a
  target of it (or of a file it includes), each VAR must appear in one of them;
- `python -m bench NAME ...`: NAME must be a benchmark in bench/; `python FILE.py`: the
  file must exist.

A block right after a `<!-- runnable -->` line is also run by tests/test_docs.py.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

RUNNABLE = "<!-- runnable -->"
_FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
_SEPARATORS = {"|", "||", "&&", ";", "&", "(", ")", "|&"}
_REDIRECTS = {">", ">>", "<", "2>", "2>>", "&>"}
_PREFIXES = {"time", "env", "nohup", "sudo", "exec", "command"}
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Block:
    """One fenced ```sh block: where it is, its text, whether it is marked runnable."""

    path: Path
    line: int  # of the opening fence, from 1
    text: str
    runnable: bool

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


def sh_blocks(path: Path) -> list[Block]:
    """The ```sh blocks of a Markdown file, in order."""
    blocks, lines = [], path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start, fence_lang = i, match.group(2)
        i += 1
        body = []
        while i < len(lines) and not _FENCE.match(lines[i]):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        if fence_lang == "sh":
            marked = start > 0 and lines[start - 1].strip() == RUNNABLE
            blocks.append(Block(path, start + 1, "\n".join(body) + "\n", marked))
    return blocks


def simple_commands(script: str) -> list[list[str]]:
    """The words of each simple command in a shell script (no expansion)."""
    joined = re.sub(r"\\\n", " ", script)
    commands: list[list[str]] = []
    for line in joined.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;()<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current: list[str] = []
        skip_next = False
        for word in lexer:
            if skip_next:
                skip_next = False
            elif word in _SEPARATORS:
                commands.append(current)
                current = []
            elif word in _REDIRECTS or re.fullmatch(r"\d?[<>]+&?\d*", word):
                skip_next = not re.fullmatch(r".*&\d", word)
            else:
                current.append(word)
        commands.append(current)
    return [words for words in commands if words]


@dataclass
class Cli:
    """What the command line accepts: its own options, and each command's."""

    root_options: set[str]
    commands: dict[str, set[str]]

    @classmethod
    def from_app(cls) -> Cli:
        from mtkit.reference import cli_group

        group = cli_group()
        ctx = group.context_class(group, info_name="mtkit")
        commands = {
            name: _options(group.get_command(ctx, name).params) for name in group.list_commands(ctx)
        }
        return cls(_options(group.params), commands)


def _options(params) -> set[str]:
    names = {"--help"}
    for param in params:
        if param.param_type_name == "option":
            names.update(param.opts, param.secondary_opts)
    return names


def check_script(script: str, cli: Cli, repo: Path) -> list[str]:
    """Problems with the commands of a shell script; empty when every name exists."""
    problems = []
    for words in simple_commands(script):
        problems += check_command(words, cli, repo)
    return problems


def check_command(words: list[str], cli: Cli, repo: Path) -> list[str]:
    while words and (_ASSIGNMENT.match(words[0]) or words[0] in _PREFIXES):
        words = words[1:]
    if not words:
        return []
    program = words[0].rsplit("/", 1)[-1]
    if program == "mtkit":
        return check_mtkit(words[1:], cli)
    if program == "make":
        return check_make(words[1:], repo)
    if program == "torchrun":
        module = _module_args(words)
        return check_mtkit(module[1:], cli) if module and module[0] == "mtkit" else []
    if re.fullmatch(r"python3?(\.\d+)?", program):
        return _check_python(words[1:], cli, repo)
    return []


def _module_args(words: list[str]) -> list[str] | None:
    """What follows `-m` in a python or torchrun command line, or None."""
    for i, word in enumerate(words[:-1]):
        if word == "-m":
            return words[i + 1 :]
    return None


def _check_python(args: list[str], cli: Cli, repo: Path) -> list[str]:
    module = _module_args(args)
    if module is None:
        script = next((a for a in args if not a.startswith("-")), None)
        if script and script.endswith(".py") and not (repo / script).exists():
            return [f"no such file: {script}"]
        return []
    name, rest = module[0], module[1:]
    if name == "mtkit":
        return check_mtkit(rest, cli)
    if name == "bench" or name.startswith("bench."):
        names = [name.split(".", 1)[1]] if "." in name else _leading_words(rest)
        have = {p.stem for p in (repo / "bench").glob("*.py") if not p.name.startswith("_")}
        return [f"no such benchmark: bench.{n}" for n in names if n not in have]
    if name.startswith("mtkit."):
        path = repo / (name.replace(".", "/") + ".py")
        return [] if path.exists() else [f"no such module: {name}"]
    return []


def _leading_words(args: list[str]) -> list[str]:
    words = []
    for arg in args:
        if arg.startswith("-"):
            break
        words.append(arg)
    return words


def check_mtkit(args: list[str], cli: Cli) -> list[str]:
    """`mtkit [ROOT OPTIONS] COMMAND [ARGS]`: the command and its options must exist."""
    args = [_unbracket(a) for a in args]
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if _option_name(args[i]) not in cli.root_options:
            return [f"mtkit has no option {args[i]}"]
        i += 1
    if i == len(args):
        return []
    command = args[i]
    if command not in cli.commands:
        return [f"mtkit has no command {command!r} (have: {', '.join(cli.commands)})"]
    known = cli.commands[command]
    return [
        f"mtkit {command} has no option {_option_name(arg)}"
        for arg in args[i + 1 :]
        if _is_option(arg) and _option_name(arg) not in known
    ]


def _unbracket(word: str) -> str:
    """`[--json]` in a usage line is `--json`."""
    return word.strip("[]") if word.startswith("[") else word


def _is_option(word: str) -> bool:
    return word.startswith("-") and word != "-" and not re.fullmatch(r"-[\d.]+", word)


def _option_name(word: str) -> str:
    return word.split("=", 1)[0]


# -- make ----------------------------------------------------------------------------

_RULE = re.compile(r"^([^\s:#=][^:#=]*?)\s*::?(?!=)")
_INCLUDE = re.compile(r"^-?include\s+(.+)$")


def check_make(args: list[str], repo: Path) -> list[str]:
    makefile, targets, variables = repo / "Makefile", [], []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-f" and i + 1 < len(args):
            makefile = repo / args[i + 1]
            i += 1
        elif arg.startswith("-"):
            pass  # -q, -n, -j4 ...
        elif "=" in arg:
            variables.append(arg.split("=", 1)[0])
        else:
            targets.append(arg)
        i += 1
    if not makefile.exists():
        return [f"no such makefile: {makefile.relative_to(repo)}"]
    texts = _makefile_texts(makefile)
    defined = {t for text in texts for t in _targets(text)}
    problems = [f"{makefile.name} has no target {t!r}" for t in targets if t not in defined]
    everything = "\n".join(texts)
    problems += [
        f"{makefile.name} does not use variable {v}"
        for v in variables
        if not re.search(rf"\b{re.escape(v)}\b", everything)
    ]
    return problems


def _makefile_texts(makefile: Path) -> list[str]:
    text = makefile.read_text(encoding="utf-8")
    texts = [text]
    for line in text.splitlines():
        match = _INCLUDE.match(line)
        if match:
            # `include $(dir $(lastword $(MAKEFILE_LIST)))common.mk`: the file's own name
            name = re.sub(r"\$\(.*\)", "", match.group(1)).strip()
            included = makefile.parent / name
            if name and included.exists():
                texts += _makefile_texts(included)
    return texts


def _targets(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        match = _RULE.match(line)
        if match and not line.startswith("\t"):
            names.update(w for w in match.group(1).split() if "$" not in w)
    return names
