"""Where the shared training loop reports to, besides ``train_log.jsonl``: hook objects called on rank 0.

:func:`nlptool.core.train.train` calls a :class:`TrainCallback`'s hooks on rank 0: :meth:`~TrainCallback.on_begin`
once the loop is set up (after a resume, with the step it resumes from), :meth:`~TrainCallback.on_event` with every
event it records in the training log (``train``: the mean loss since the previous one, the learning rate, epoch and
speed; ``eval``: the dev metrics), and :meth:`~TrainCallback.on_end` when the loop stops, normally or not. The loop
builds the callbacks named by ``TrainConfig.report_to`` (:func:`callbacks_for`), the way the Hugging Face Trainer's
``report_to`` picks its integrations; a caller may also pass its own (``train(callbacks=[...])``).

``tensorboard`` (:class:`TensorBoardCallback`) writes TensorBoard event files to ``output_dir/runs/`` (the Trainer's
layout) with the Trainer's scalar names: ``train/loss``, ``train/learning_rate``, ``train/epoch``,
``train/examples_per_s`` and ``eval/<metric>``, at the optimizer step of the event. It needs the ``tensorboard``
package (the extra ``nlptool[tensorboard]``); :func:`check_report_to` says so before anything is trained.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nlptool.core.errors import NlptoolError

__all__ = ["REPORT_TO", "RUNS_DIR", "TrainCallback", "TensorBoardCallback", "check_report_to", "callbacks_for"]

#: The values of ``TrainConfig.report_to`` (the CLI's ``--report-to``).
REPORT_TO = ("none", "tensorboard")
#: The folder, inside the loop's ``output_dir``, that holds the TensorBoard event files.
RUNS_DIR = "runs"
_EVENTS_PREFIX = "events.out.tfevents."


class TrainCallback:
    """Hooks of the training loop (rank 0 only); the base class does nothing. Hooks must not print."""

    def on_begin(self, *, output_dir: Path | None, step: int, total_steps: int, config: Mapping[str, Any]) -> None:
        """The loop is set up; ``step`` is 0 for a fresh run, the checkpoint's step after a resume."""

    def on_event(self, event: Mapping[str, Any]) -> None:
        """An event the loop records in ``train_log.jsonl`` (``{"event": "train" | "eval", "step", ...}``)."""

    def on_end(self) -> None:
        """The loop stopped (finished, failed or interrupted); release files. Called once, even after an error."""


def check_report_to(report_to: str, *, option: str = "report_to") -> None:
    """Raise :class:`NlptoolError` when ``report_to`` is unknown or its package is missing (``option``: how the
    caller spells the setting in the message, e.g. ``--report-to``)."""
    if report_to not in REPORT_TO:
        raise NlptoolError(f"{option} must be one of {', '.join(REPORT_TO)}, got {report_to!r}")
    if report_to == "tensorboard":
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (needs the tensorboard package)
        except ImportError:
            raise NlptoolError(
                f"{option} tensorboard needs the 'tensorboard' package, which is not installed; "
                "install it with: pip install 'nlptool[tensorboard]'"
            ) from None


def callbacks_for(report_to: str) -> list[TrainCallback]:
    """The callbacks ``TrainConfig.report_to`` names (checked with :func:`check_report_to`)."""
    check_report_to(report_to)
    return [TensorBoardCallback()] if report_to == "tensorboard" else []


class TensorBoardCallback(TrainCallback):
    """Write the loop's events as TensorBoard scalars to ``output_dir/runs/`` (or ``log_dir``).

    A fresh run first removes the event files an earlier run left there (as ``train_log.jsonl`` is started anew); a
    resumed run appends a new event file whose ``purge_step`` makes TensorBoard drop the events the interrupted run
    wrote after its checkpoint, so the curves show each step once. The run's settings go in as the text ``args``
    (the Trainer does the same).
    """

    def __init__(self, log_dir: str | Path | None = None) -> None:
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.writer: Any = None

    def on_begin(self, *, output_dir: Path | None, step: int, total_steps: int, config: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        log_dir = self.log_dir or (Path(output_dir) / RUNS_DIR if output_dir is not None else None)
        if log_dir is None:
            raise NlptoolError("report_to tensorboard needs an output folder (TrainConfig.output_dir) for its files")
        self.log_dir = log_dir
        if step == 0 and log_dir.is_dir():
            for old in log_dir.glob(f"{_EVENTS_PREFIX}*"):
                old.unlink(missing_ok=True)
        if step > 0:
            _wait_past_event_files(log_dir)
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=step + 1 if step > 0 else None)
        if step == 0:
            text = json.dumps(dict(config), indent=2, sort_keys=True, default=str)
            self.writer.add_text("args", f"```json\n{text}\n```", 0)

    def on_event(self, event: Mapping[str, Any]) -> None:
        if self.writer is None:
            return
        step = int(event.get("step", 0))
        kind = event.get("event")
        if kind == "train":
            for key, tag in (
                ("loss", "train/loss"),
                ("lr", "train/learning_rate"),
                ("epoch", "train/epoch"),
                ("examples_per_s", "train/examples_per_s"),
            ):
                self._scalar(tag, event.get(key), step)
        elif kind == "eval":
            for name, value in sorted((event.get("metrics") or {}).items()):
                self._scalar(f"eval/{name}", value, step)
            self.writer.flush()  # evaluations are rare and what people watch: show them at once

    def _scalar(self, tag: str, value: Any, step: int) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            self.writer.add_scalar(tag, float(value), step)

    def on_end(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def event_files(log_dir: str | Path) -> Sequence[Path]:
    """The TensorBoard event files in ``log_dir`` (sorted), for tests and tools."""
    return sorted(Path(log_dir).glob(f"{_EVENTS_PREFIX}*"))


def _wait_past_event_files(log_dir: Path) -> None:
    """Wait until the clock's second is past every event file's in ``log_dir``.

    TensorBoard reads a folder's event files in name order, and a name is ``events.out.tfevents.<unix second>.<host>.
    <pid>.<counter>``: a resumed run's file must sort after the interrupted run's for its ``purge_step`` to drop the
    steps logged after the checkpoint. Within one second (and one process, e.g. a resume in the same Python session)
    the counter decides, and ``...9`` sorts after ``...10``; a new second never does (at most a second's wait)."""
    import time

    seconds = []
    for f in log_dir.glob(f"{_EVENTS_PREFIX}*"):
        head = f.name[len(_EVENTS_PREFIX) :].split(".", 1)[0]
        if head.isdigit():
            seconds.append(int(head))
    latest = max(seconds, default=0)
    while int(time.time()) <= latest:
        time.sleep(0.05)
