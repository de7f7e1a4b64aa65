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
from typer.core import TyperGroup

from nlptool import __version__
from nlptool.commands import (
    calibrate_can,
    encode,
    entropy_normalize,
    eval_sts,
    gradcheck,
    kg_qa,
    nsp_adapt,
    train_cosent,
    zero_shot,
)
from nlptool.commands import ner as ner_commands
from nlptool.commands._common import configure_logging
from nlptool.core.errors import NlptoolError


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


_GLOBAL_FLAGS = {"-q", "--quiet", "-v", "--verbose", "-vv", "-vvv"}


class NlptoolGroup(TyperGroup):
    """Turns :class:`NlptoolError` into ``Error: ...`` on stderr and exit 1, in the shell and under CliRunner.

    The value-less global flags (``-q``, ``-v``) are also accepted after the command name (``nlptool encode -q ...``):
    they are moved in front of it before parsing.
    """

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
        except NlptoolError as exc:
            typer.echo(f"Error: {_one_line(str(exc))}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("Error: interrupted; no output file was written", err=True)
            raise typer.Exit(130) from None


app = typer.Typer(
    name="nlptool",
    cls=NlptoolGroup,
    help="nlptool: techniques from Su Jianlin's 2021-22 research posts as command-line tools for real data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
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
    if hasattr(command, "list_commands"):  # a command group (typer vendors click: duck-type it)
        out = {}
        for sub, sub_options in options.items():
            sub_cmd = command.commands.get(sub)
            if sub_cmd is None or not isinstance(sub_options, dict):
                raise NlptoolError(f"{path}: '{name}' has no subcommand '{sub}'")
            out[sub] = _options_map(path, f"{name} {sub}", sub_cmd, sub_options)
        return out
    params = {p.name: p for p in command.params if p.name}
    out = {}
    for key, value in options.items():
        pname = str(key).replace("-", "_")
        if pname not in params:
            known = ", ".join(sorted(n.replace("_", "-") for n in params))
            raise NlptoolError(f"{path}: '{name}' has no option '{key}'; its options are {known}")
        if isinstance(value, list) and not getattr(params[pname], "multiple", False):
            value = ",".join(str(v) for v in value)
        out[pname] = value
    return out


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
app.command("eval-sts")(eval_sts.eval_sts)
app.command("train-cosent")(train_cosent.train_cosent)
app.command("zero-shot")(zero_shot.zero_shot)
app.command("nsp-adapt")(nsp_adapt.nsp_adapt)
app.add_typer(ner_commands.app, name="ner")
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
