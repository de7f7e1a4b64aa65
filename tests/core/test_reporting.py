"""Tests for nlptool.core.reporting: the training loop's callbacks and its TensorBoard reporting."""

from __future__ import annotations

import sys

import pytest

from nlptool.core.errors import NlptoolError
from nlptool.core.reporting import TrainCallback, check_report_to, event_files
from nlptool.core.train import train
from tests.core.test_train import StopAt, cfg, collate, make_model, mse, regression_examples


class Recorder(TrainCallback):
    def __init__(self):
        self.calls = []

    def on_begin(self, *, output_dir, step, total_steps, config):
        self.calls.append(("begin", output_dir, step, total_steps, config["report_to"]))

    def on_event(self, event):
        self.calls.append(("event", dict(event)))

    def on_end(self):
        self.calls.append(("end",))


def _scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_callbacks_see_begin_every_logged_event_and_end(tmp_path):
    rec = Recorder()
    config = cfg(epochs=2, log_every=4, output_dir=str(tmp_path))
    result = train(
        make_model(), regression_examples(), collate, mse, config, evaluate=lambda m: {"r": 0.1}, callbacks=[rec]
    )
    assert rec.calls[0] == ("begin", tmp_path, 0, 12, "none")
    assert [c[1] for c in rec.calls[1:-1]] == result.history  # exactly the events of train_log.jsonl
    assert rec.calls[-1] == ("end",)


def test_callbacks_end_after_an_error_too():
    rec = Recorder()
    with pytest.raises(KeyboardInterrupt):
        train(make_model(), regression_examples(24), collate, mse, cfg(), on_progress=StopAt(2), callbacks=[rec])
    assert rec.calls[-1] == ("end",) and rec.calls.count(("end",)) == 1


def test_tensorboard_scalars_match_the_training_log(tmp_path):
    pytest.importorskip("tensorboard")
    config = cfg(epochs=2, log_every=2, eval_every=3, output_dir=str(tmp_path), report_to="tensorboard")
    values = iter([0.25, 0.5, 0.75, 1.0])
    result = train(make_model(), regression_examples(), collate, mse, config, evaluate=lambda m: {"r": next(values)})
    assert len(event_files(tmp_path / "runs")) == 1
    scalars = _scalars(tmp_path / "runs")
    trains = [e for e in result.history if e["event"] == "train"]
    assert scalars["train/loss"] == [(e["step"], pytest.approx(e["loss"], rel=1e-6)) for e in trains]
    assert scalars["train/learning_rate"] == [(e["step"], pytest.approx(e["lr"], rel=1e-6)) for e in trains]
    assert scalars["train/epoch"] == [(e["step"], pytest.approx(e["epoch"])) for e in trains]
    assert scalars["eval/r"] == [(3, 0.25), (6, 0.5), (9, 0.75), (12, 1.0)]


def test_tensorboard_fresh_run_replaces_old_files_and_resume_purges_the_steps_after_the_checkpoint(tmp_path):
    pytest.importorskip("tensorboard")
    data = regression_examples(24)  # 3 steps per epoch
    config = cfg(epochs=2, output_dir=str(tmp_path), report_to="tensorboard")
    train(make_model(), data, collate, mse, config)
    train(make_model(), data, collate, mse, config)  # a fresh run in the same folder starts the curves anew
    assert len(event_files(tmp_path / "runs")) == 1
    with pytest.raises(KeyboardInterrupt):  # checkpoint at step 3, logged steps 4 and 5, then stopped
        train(make_model(), data, collate, mse, config, on_progress=StopAt(5))
    resumed = train(
        make_model(), data, collate, mse, cfg(epochs=2, output_dir=str(tmp_path), report_to="tensorboard", resume=True)
    )
    assert len(event_files(tmp_path / "runs")) == 2
    losses = _scalars(tmp_path / "runs")["train/loss"]
    trains = [e for e in resumed.history if e["event"] == "train"]
    assert losses == [(e["step"], pytest.approx(e["loss"], rel=1e-6)) for e in trains]
    assert [s for s, _ in losses] == [1, 2, 3, 4, 5, 6]


def test_a_fresh_run_stopped_before_its_first_checkpoint_removes_its_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "training"
    with pytest.raises(KeyboardInterrupt):
        train(
            make_model(),
            regression_examples(24),
            collate,
            mse,
            cfg(output_dir=str(out), report_to="tensorboard"),
            on_progress=StopAt(2),
        )
    assert not out.exists()


def test_report_to_errors(tmp_path, monkeypatch):
    with pytest.raises(NlptoolError, match="report_to must be one of none, tensorboard"):
        train(make_model(), regression_examples(), collate, mse, cfg(report_to="wandb"))
    with pytest.raises(NlptoolError, match="needs output_dir"):
        train(make_model(), regression_examples(), collate, mse, cfg(report_to="tensorboard"))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    out = tmp_path / "t"
    with pytest.raises(NlptoolError, match=r"pip install 'nlptool\[tensorboard\]'") as info:
        train(make_model(), regression_examples(), collate, mse, cfg(output_dir=str(out), report_to="tensorboard"))
    assert "\n" not in str(info.value) and not out.exists()
    with pytest.raises(NlptoolError, match="^--report-to tensorboard needs"):
        check_report_to("tensorboard", option="--report-to")
    check_report_to("none")  # needs nothing
