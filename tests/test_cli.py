"""The command line as a whole: help, version, and how errors reach the user."""

from mtkit import __version__


def test_version(cli):
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"mtkit {__version__}"


def test_help_lists_commands(cli):
    result = cli("--help")
    assert result.returncode == 0
    assert "Usage" in result.stdout


def test_unknown_command_fails(cli):
    result = cli("no-such-command")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr


# -- every option default comes from the library ------------------------------------

# Where each command's option defaults live: the option dataclasses it builds, and
# the keyword defaults of the one library function it calls.
DEFAULT_SOURCES = {
    "translate": ("mtkit.search:SearchOptions", "mtkit.translate.stream:BatchOptions",
                  "mtkit.translate.stream:RuntimeOptions", "mtkit.translate.noise:NoiseOptions",
                  "mtkit.translate.command:JobOptions", "mtkit.translate.stream:Decoding",
                  # after Decoding, whose `constraints` field holds these options
                  "mtkit.translate.terms:ConstraintOptions"),
    "translate-merge": ("mtkit.translate.shards:merge_shards",),
    "train-bpe": ("mtkit.tokenizer:SpmOptions", "mtkit.tokenizer:train_spm"),
    "prepare": ("mtkit.prepare.sources:SourceOptions", "mtkit.prepare.cleaning:CleanOptions",
                "mtkit.prepare.pipeline:prepare_corpus"),
    "average": ("mtkit.checkpoint:average_into",),
    "train": ("mtkit.train.config:TrainConfig",),
    "score": ("mtkit.score:ScoreOptions", "mtkit.score:SignificanceOptions",
              "mtkit.score:ReportOptions", "mtkit.comet:CometOptions"),
    "logprob": ("mtkit.translate.logprob:LogprobOptions", "mtkit.translate.stream:BatchOptions",
                "mtkit.translate.stream:RuntimeOptions"),
    "export": ("mtkit.interop.ctranslate2:ExportOptions",
               "mtkit.interop.hf_export:export_transformers"),
    "shortlist": ("mtkit.shortlist:ShortlistOptions",
                  "mtkit.shortlist:build_shortlist_file"),
}  # fmt: skip
# Flags that are not a library field, and flags the CLI reads in another form.
CLI_ONLY = {
    "translate": {"models", "input", "out"},
    "train": {"set_", "config"},
    "score": {"inputs", "source"},
    "logprob": {"models", "input", "ref", "out", "nbest_input"},
    "export": {"model", "model_file", "scores"},
}
CLI_FORM = {
    ("train", "max_time"): "mtkit.train.config:parse_duration",
    ("train", "save_at"): "mtkit.train.config:parse_fractions",
    ("score", "metrics"): "mtkit.score:parse_metrics",
}


def _library_defaults(names: tuple[str, ...]) -> dict[str, object]:
    import dataclasses
    import importlib
    import inspect

    defaults: dict[str, object] = {}
    for name in names:
        module, attr = name.split(":")
        thing = getattr(importlib.import_module(module), attr)
        if dataclasses.is_dataclass(thing):
            for field in dataclasses.fields(thing):
                if field.default is not dataclasses.MISSING:
                    defaults[field.name] = field.default
        else:
            for param in inspect.signature(thing).parameters.values():
                if param.default is not inspect.Parameter.empty:
                    defaults[param.name] = param.default
    return defaults


def _cli_defaults(command: str) -> dict[str, object]:
    import typer

    from mtkit.cli import app

    group = typer.main.get_command(app)
    params = group.commands[command].params
    options = [p for p in params if p.param_type_name == "option" and not p.required]
    assert options, f"found no options of mtkit {command}"
    return {p.name: p.default for p in options}


def _same(cli_value, library_value) -> bool:
    # typer keeps multi-value options as lists; the dataclasses keep tuples (frozen).
    if isinstance(library_value, tuple):
        return list(library_value) == list(cli_value or [])
    return cli_value == library_value


def test_cli_defaults_are_the_library_defaults():
    """Each optional flag with a library counterpart has its default; none goes unchecked."""
    import importlib

    for command, sources in DEFAULT_SOURCES.items():
        library = _library_defaults(sources)
        for name, value in _cli_defaults(command).items():
            if name in CLI_ONLY.get(command, set()):
                continue
            if (command, name) in CLI_FORM:
                module, attr = CLI_FORM[command, name].split(":")
                value = getattr(importlib.import_module(module), attr)(value)
            assert name in library, f"mtkit {command} --{name}: no library default to follow"
            assert _same(value, library[name]), (
                f"mtkit {command} --{name} defaults to {value!r}, the library to {library[name]!r}"
            )
