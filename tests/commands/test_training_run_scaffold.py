"""``nlptool.commands._common.TrainingRun``: the scaffold around a training command's call into core."""

from __future__ import annotations

import json

import pytest

from nlptool.commands._common import TrainingRun
from nlptool.core.errors import NlptoolError


def test_guards_the_output_folder_and_metrics_file(tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(NlptoolError, match="--force"):
        TrainingRun(str(out), force=False, resume=False, seed=0)
    with pytest.raises(NlptoolError, match="nothing to resume"):
        TrainingRun(str(tmp_path / "new"), force=False, resume=True, seed=0)
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(NlptoolError):
        TrainingRun(
            str(tmp_path / "new"), force=False, resume=False, seed=0, metrics_out=str(tmp_path / "metrics.json")
        )
    assert not (tmp_path / "new").exists()


def test_config_promote_and_finish(tmp_path):
    out = tmp_path / "m"
    metrics_out = tmp_path / "metrics-copy.json"
    run = TrainingRun(str(out), force=False, resume=False, seed=7, save_every=3, metrics_out=str(metrics_out))
    assert run.main and run.world == 1 and not out.exists()
    run.make_out_dir()
    config = run.config(epochs=2, batch_size=4)
    assert (config.seed, config.output_dir, config.resume, config.checkpoint_every) == (
        7,
        str(out / "training"),
        False,
        3,
    )
    assert (config.epochs, config.batch_size) == (2, 4)

    assert run.promote_best() is False
    (out / "training" / "best").mkdir(parents=True)
    (out / "training" / "best" / "model.safetensors").write_text("best")
    (out / "training" / "checkpoint-last").mkdir()
    (out / "training" / "train_log.jsonl").write_text("")
    assert run.promote_best() is True and (out / "model.safetensors").read_text() == "best"

    written = []

    def write(path, metrics, **kwargs):
        written.append(path)
        from nlptool.commands._common import write_metrics

        write_metrics(path, metrics, **kwargs)

    run.finish({"steps": 2}, inputs=["train.csv"], model="tiny", params={"lr": 0.1}, write=write)
    assert written == [str(out / "metrics.json"), str(metrics_out)]
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["metrics"] == {"steps": 2} and doc["seed"] == 7 and doc["params"] == {"lr": 0.1}
    assert json.loads(metrics_out.read_text())["metrics"] == {"steps": 2}
    assert not (out / "training" / "checkpoint-last").exists() and (out / "training" / "train_log.jsonl").exists()


def test_only_rank_zero_checks_and_writes(tmp_path, monkeypatch):
    out = tmp_path / "m"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    run = TrainingRun(str(out), force=False, resume=False, seed=0)  # rank 1 leaves the folder checks to rank 0
    assert not run.main and run.world == 2
    run.finish({"steps": 1}, inputs=[], model=None, params={})
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
