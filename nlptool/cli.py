"""The ``nlptool`` command line: a Typer app with one thin module per subcommand (``nlptool/commands``).

Global options come before the subcommand: ``nlptool -q --config run.yaml entropy-normalize ...``.
Exit codes: 0 ok, 1 expected failure (``Error: ...`` on stderr), 2 usage error; a closed pipe exits quietly.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer._click.exceptions import UsageError  # typer vendors click: its own exception classes
from typer.core import TyperArgument, TyperGroup, TyperOption

from nlptool import __version__
from nlptool.commands import (
    calibrate_can,
    encode,
    entropy_normalize,
    eval_sts,
    gradcheck,
    kg_qa,
    merge_shards,
    nsp_adapt,
    train_cosent,
    train_multitask,
    zero_shot,
)
from nlptool.commands import classify as classify_commands
from nlptool.commands import ner as ner_commands
from nlptool.commands._common import HIDDEN_OPTION_NAMES, configure_logging
from nlptool.core.errors import NlptoolError


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


_GLOBAL_FLAGS = {"-q", "--quiet", "-v", "--verbose", "-vv", "-vvv"}


class _Option(TyperOption):
    """Help as Click prints it: ``--force, -f`` (a flag takes no value), ``--output, -o TEXT``; hidden old spellings
    (:func:`nlptool.commands._common.hidden_alias`) are left out."""

    def get_help_record(self, ctx: Any) -> tuple[str, str] | None:
        record = super().get_help_record(ctx)
        if record is None:
            return None
        shown = [o for o in self.opts if o not in HIDDEN_OPTION_NAMES]
        names = ", ".join(sorted(shown, key=lambda o: not o.startswith("--")))  # long names first
        if not self.is_flag and not self.count:
            names += f" {self.value_metavar(ctx)}"
        secondary = [o for o in self.secondary_opts if o not in HIDDEN_OPTION_NAMES]
        if secondary:
            names += " / " + ", ".join(secondary)
        return names, record[1]

    def value_metavar(self, ctx: Any) -> str:
        """``TEXT``, ``INTEGER``, ``FLOAT``, ``INTEGER RANGE``, ``[a|b|c]`` for choices, or the declared metavar."""
        if self.metavar is not None:
            return self.metavar
        return _click_type_name(self.display_type(ctx), self.type_descriptor.is_choice)


def _click_type_name(typer_label: str, is_choice: bool) -> str:
    """Typer's ``<int range>`` / ``<a|b>`` → Click's ``INTEGER RANGE`` / ``[a|b]``."""
    label = typer_label.strip("<>")
    if is_choice:
        return f"[{label}]"
    words = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "bool": "BOOLEAN"}
    return " ".join(words.get(w, w.upper()) for w in label.split())


class _Argument(TyperArgument):
    """Arguments as Click names them: ``INPUT`` (usage line and help), ``[INPUT]`` when optional; hidden ones
    (the deprecated positional model) appear nowhere."""

    def get_help_record(self, ctx: Any) -> tuple[str, str] | None:
        record = super().get_help_record(ctx)
        if record is None:
            return None
        return self._plain_name(), record[1]

    def _plain_name(self) -> str:
        name = self.metavar if self.metavar is not None else (self.name or "").upper()
        return f"{name}..." if self.nargs != 1 and self.metavar is None else name

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        if self.hidden:
            return []
        name = self._plain_name()
        return [name if self.required else f"[{name}]"]

    def get_error_hint(self) -> str:
        return f"'{self._plain_name()}'"


def _plain_help(command: Any) -> None:
    """Render ``command`` (and its subcommands) with Click's plain help formatter and Click's names for
    parameters: typer's rich help shows every flag as ``--force -f <bool>`` and arguments as ``{input}``."""
    command.rich_markup_mode = None
    for param in command.params:
        if type(param) is TyperOption:
            param.__class__ = _Option
        elif type(param) is TyperArgument:
            param.__class__ = _Argument
    for sub in getattr(command, "commands", {}).values():
        _plain_help(sub)


def _command_path(ctx: Any) -> str:
    """``nlptool encode`` / ``nlptool ner predict`` for a context (whatever the program was called)."""
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(["nlptool", *reversed(names)])


def _usage_error(exc: Any) -> typer.Exit:
    """A usage error as one line on stderr, ``Error: <message> (see 'nlptool CMD --help')``; exit 2."""
    typer.echo(f"Error: {_one_line(exc.format_message())} (see '{_command_path(exc.ctx)} --help')", err=True)
    return typer.Exit(2)


def _shows_help(exc: Exception) -> bool:
    return type(exc).__name__ == "NoArgsIsHelpError"  # a bare group name: Click prints the help itself


class NlptoolGroup(TyperGroup):
    """The ``nlptool`` group: one contract for every command.

    - :class:`NlptoolError` becomes ``Error: ...`` on stderr and exit 1, in the shell and under CliRunner;
    - a usage error (unknown option, missing argument, bad choice) is one line, ``Error: No such option: --bogus
      (see 'nlptool encode --help')``, and exit 2;
    - ``--help`` is Click's plain layout (``--force, -f``, ``INPUT``) for the group and every subcommand.

    The value-less global flags (``-q``, ``-v``) are also accepted after the command name (``nlptool encode -q ...``):
    they are moved in front of it before parsing.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_help(self)

    def make_context(self, info_name: Any, args: Any, parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except UsageError as exc:
            if _shows_help(exc):
                raise
            raise _usage_error(exc) from None

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        names = set(self.list_commands(ctx))
        position = next((i for i, a in enumerate(args) if a in names), None)
        if position is not None:
            head, tail = args[:position], args[position:]
            stop = tail.index("--") if "--" in tail else len(tail)
            moved = [a for a in tail[:stop] if a in _GLOBAL_FLAGS]
            if moved:
                args = moved + head + [a for a in tail[:stop] if a not in _GLOBAL_FLAGS] + tail[stop:]
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            if _shows_help(exc):
                raise
            raise _usage_error(exc) from None
        except NlptoolError as exc:
            typer.echo(f"Error: {_one_line(str(exc))}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt as exc:
            # training commands say whether they kept a checkpoint for --resume or removed their partial output
            message = getattr(exc, "nlptool_message", None) or "interrupted; no output file was written"
            typer.echo(f"Error: {_one_line(message)}", err=True)
            raise typer.Exit(130) from None


app = typer.Typer(
    name="nlptool",
    cls=NlptoolGroup,
    help="nlptool: techniques from Su Jianlin's 2021-22 research posts as command-line tools for real data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nlptool {__version__}")
        raise typer.Exit()


def _load_config(path: str, ctx: Any) -> dict[str, Any]:
    """Read ``--config FILE.yaml`` into a Click ``default_map``.

    The YAML holds either options for the invoked command at top level (``target_ratio: 0.5``) or sections keyed by
    command name (``entropy-normalize: {target_ratio: 0.5}``). Keys may use dashes or underscores.
    """
    import yaml

    from nlptool.core.io import read_text

    p = Path(path)
    if not p.is_file():
        raise NlptoolError(f"config file {path} does not exist; check the path")
    try:
        doc = yaml.safe_load(read_text(p)) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise NlptoolError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from None
    if not isinstance(doc, dict):
        raise NlptoolError(f"{path}: expected a mapping of option names to values at the top level")
    group = ctx.command
    sub = ctx.invoked_subcommand
    commands = set(group.list_commands(ctx))
    if any(k in commands for k in doc):
        sections = doc
    else:
        sections = {sub: doc} if sub else {}
    default_map: dict[str, Any] = {}
    for name, options in sections.items():
        if name not in commands:
            raise NlptoolError(f"{path}: unknown command section '{name}'; commands are {', '.join(sorted(commands))}")
        if not isinstance(options, dict):
            raise NlptoolError(f"{path}: section '{name}' must be a mapping of option names to values")
        command = group.get_command(ctx, name)
        assert command is not None
        default_map[name] = _options_map(path, name, command, options)
    return default_map


def _options_map(path: str, name: str, command: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Turn a config section into Click's ``default_map`` for ``command`` (parameter name -> value).

    Keys are the names ``--help`` shows: an option's long spellings without ``--`` (``input-scale`` or
    ``input_scale`` for ``--input-scale``; ``f`` for ``--f``; ``no-header: true`` for ``--no-header``) and an
    argument's name (``input`` for ``INPUT``). Internal parameter names that differ from every shown name (such as
    gradcheck's ``objective`` behind ``--f``) are refused, so a config file reads like the command line.
    """
    if hasattr(command, "list_commands"):  # a command group (typer vendors click: duck-type it)
        out = {}
        for sub, sub_options in options.items():
            sub_cmd = command.commands.get(sub)
            if sub_cmd is None or not isinstance(sub_options, dict):
                raise NlptoolError(f"{path}: '{name}' has no subcommand '{sub}'")
            out[sub] = _options_map(path, f"{name} {sub}", sub_cmd, sub_options)
        return out
    keys = _config_keys(command)
    out: dict[str, Any] = {}
    given: dict[str, str] = {}
    for key, value in options.items():
        entry = keys.get(str(key))
        if entry is None:
            shown = sorted({spelling for spelling, (_, _, canonical) in keys.items() if spelling == canonical})
            raise NlptoolError(f"{path}: '{name}' has no option '{key}'; its options are {', '.join(shown)}")
        param, negate, canonical = entry
        if param.name in given:
            raise NlptoolError(
                f"{path}: '{name}' gets option '{canonical}' twice ('{given[param.name]}' and '{key}'); keep one"
            )
        given[param.name] = str(key)
        if negate:
            if not isinstance(value, bool):
                raise NlptoolError(f"{path}: '{name}' option '{key}' takes true or false, got {value!r}")
            value = not value
        if isinstance(value, list) and not getattr(param, "multiple", False):
            value = ",".join(str(v) for v in value)
        out[param.name] = value
    return out


def _config_keys(command: Any) -> dict[str, tuple[Any, bool, str]]:
    """Config key -> (parameter, negated flag, the canonical dashed spelling) for every name ``--help`` shows."""
    keys: dict[str, tuple[Any, bool, str]] = {}
    for param in command.params:
        if not param.name or getattr(param, "hidden", False):
            continue
        if getattr(param, "param_type_name", "") == "argument":
            spellings = [(param.name.replace("_", "-"), False)]
        else:
            spellings = [(o[2:], False) for o in param.opts if o.startswith("--")]
            spellings += [(o[2:], True) for o in param.secondary_opts if o.startswith("--")]
        for spelling, negate in spellings:
            for key in (spelling, spelling.replace("-", "_")):
                keys.setdefault(key, (param, negate, spelling))
    return keys


def _default_seed(section: dict[str, Any], command: Any, seed: int) -> None:
    """Put the global ``--seed`` into a command's default map; for a group (ner, kg-qa), into each subcommand."""
    if hasattr(command, "list_commands"):  # typer vendors click: duck-type groups
        for name, sub in command.commands.items():
            _default_seed(section.setdefault(name, {}), sub, seed)
    elif any(p.name == "seed" for p in command.params):
        section["seed"] = seed


@app.callback()
def main_callback(
    ctx: typer.Context,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output (-vv for debug).")] = 0,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Errors only: no progress, tables or transformers logging.")
    ] = False,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Default --seed for the command (seeds random, numpy, torch).")
    ] = None,
    config: Annotated[
        str | None,
        typer.Option("--config", help="YAML file supplying any option of the command; flags given on the line win."),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """nlptool: techniques from Su Jianlin's 2021-22 research posts as command-line tools for real data.

    Data goes to stdout (JSONL by default), logs, progress and tables to stderr. Exit 0 ok, 1 error, 2 usage.
    """
    configure_logging(verbose, quiet)
    default_map: dict[str, Any] = {}
    if config:
        default_map = _load_config(config, ctx)
    if seed is not None and ctx.invoked_subcommand:
        sub = ctx.command.get_command(ctx, ctx.invoked_subcommand)  # type: ignore[attr-defined]
        if sub is not None:
            _default_seed(default_map.setdefault(ctx.invoked_subcommand, {}), sub, seed)
    if default_map:
        ctx.default_map = {**(ctx.default_map or {}), **default_map}


app.command("entropy-normalize")(entropy_normalize.entropy_normalize)
app.command("calibrate-can")(calibrate_can.calibrate_can)
app.command("gradcheck")(gradcheck.gradcheck)
app.command("encode")(encode.encode)
app.command("merge-shards")(merge_shards.merge_shards)
app.command("eval-sts")(eval_sts.eval_sts)
app.command("train-cosent")(train_cosent.train_cosent)
app.command("train-multitask")(train_multitask.train_multitask)
app.command("zero-shot")(zero_shot.zero_shot)
app.command("nsp-adapt")(nsp_adapt.nsp_adapt)
app.add_typer(ner_commands.app, name="ner")
app.add_typer(classify_commands.app, name="classify")
app.add_typer(kg_qa.app, name="kg-qa")


def main() -> None:
    """Console entry point: runs the app; a closed stdout pipe (``| head``) ends quietly."""
    try:
        app()
    except BrokenPipeError:
        # Python flushes stdout at exit; point it at devnull so that flush cannot raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)


if __name__ == "__main__":
    main()
