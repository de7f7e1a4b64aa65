"""Tests for nlptool.core.train's ``max_steps`` and ``gradient_hook`` (tiny models built in-test; fast)."""

from __future__ import annotations

import json

import pytest
import torch

from nlptool.core.errors import NlptoolError
from nlptool.core.train import GradientHook, TrainConfig, train
from tests.core.test_train import collate, flat, make_model, mse, regression_examples


def cfg(**kw) -> TrainConfig:
    base = {"epochs": 1, "batch_size": 8, "lr": 0.01, "warmup_steps": 1, "device": "cpu", "log_every": 0}
    return TrainConfig(**{**base, **kw})


def test_max_steps_stops_mid_epoch_and_evaluates_logs_and_checkpoints_there(tmp_path):
    calls = []

    def evaluate(model):
        calls.append(1)
        return {"m": float(len(calls))}

    result = train(
        make_model(), regression_examples(48), collate, mse, cfg(max_steps=4, output_dir=str(tmp_path), metric="m"),
        evaluate=evaluate,
    )  # fmt: skip
    assert result.steps == result.total_steps == 4 and result.epochs_done == pytest.approx(4 / 6)
    assert [e["step"] for e in result.history if e["event"] == "eval"] == [4]
    assert [e["step"] for e in result.history if e["event"] == "train"] == [4]
    state = json.loads((tmp_path / "checkpoint-last" / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["batch_in_epoch"] == 4


def test_max_steps_beyond_an_epoch_continues_with_the_next_epochs_batches():
    """14 steps of 6 per epoch = the first 14 steps of 3 epochs: the same weights as 3 epochs stopped there."""
    a, b = make_model(), make_model()
    train(a, regression_examples(48), collate, mse, cfg(max_steps=14, scheduler="constant"))
    seen = []

    def stop_at_14(event):
        seen.append(event["step"])
        if event["step"] == 14:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(b, regression_examples(48), collate, mse, cfg(epochs=3, scheduler="constant"), on_progress=stop_at_14)
    assert torch.equal(flat(a), flat(b))


def test_max_steps_must_be_positive():
    with pytest.raises(NlptoolError, match="max_steps"):
        train(make_model(), regression_examples(8), collate, mse, cfg(max_steps=0))


class PlainHook:
    """The loop's own forward/backward as a hook: must give the loop's result exactly."""

    def __init__(self):
        self.backwards = 0
        self.steps = 0

    def backward(self, model, batch, weight, standin):
        self.backwards += 1
        loss = mse(model, batch)
        (loss * weight).backward()
        return loss.detach() * weight

    def before_step(self):
        self.steps += 1

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state.get("steps", 0)


def test_a_hook_doing_the_loops_own_backward_gives_identical_weights_and_is_called_per_micro_batch():
    hook = PlainHook()
    assert isinstance(hook, GradientHook)
    a, b = make_model(), make_model()
    ra = train(a, regression_examples(48), collate, mse, cfg(epochs=2, grad_accum=2))
    rb = train(b, regression_examples(48), collate, mse, cfg(epochs=2, grad_accum=2), gradient_hook=hook)
    assert torch.equal(flat(a), flat(b))
    assert [e["loss"] for e in ra.history] == [e["loss"] for e in rb.history]
    assert hook.steps == rb.steps == 6 and hook.backwards == 12


def test_the_hook_state_is_kept_with_the_checkpoints_and_restored_on_resume(tmp_path):
    hook = PlainHook()
    train(make_model(), regression_examples(48), collate, mse, cfg(output_dir=str(tmp_path)), gradient_hook=hook)
    state = json.loads((tmp_path / "checkpoint-last" / "trainer_state.json").read_text())
    assert state["hook"] == {"steps": 6}
    resumed = PlainHook()
    config = cfg(epochs=2, output_dir=str(tmp_path), resume=True)
    with pytest.raises(NlptoolError, match="epochs"):  # a resume must keep the trajectory: epochs differ
        train(make_model(), regression_examples(48), collate, mse, config, gradient_hook=resumed)
    train(make_model(), regression_examples(48), collate, mse, cfg(output_dir=str(tmp_path), resume=True),
          gradient_hook=resumed)  # fmt: skip
    assert resumed.steps == 6  # restored, nothing left to do


def test_fp16_is_refused_with_a_hook():
    with pytest.raises(NlptoolError, match="fp16 cannot be combined with per-task gradients"):
        train(make_model(), regression_examples(8), collate, mse, cfg(precision="fp16"), gradient_hook=PlainHook())
