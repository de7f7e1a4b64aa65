"""The README's Python examples run as written (on the tiny in-test model), so they cannot rot."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import REPO, SAMPLE_DATA


def readme_example(marker: str) -> str:
    """The fenced ``python`` block right after ``<!-- readme-example: MARKER -->`` in README.md."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    found = re.search(rf"<!-- readme-example: {re.escape(marker)} -->\s*```python\n(.*?)```", text, re.DOTALL)
    assert found, f"README.md has no python block marked {marker!r}"
    return found.group(1)


def test_cosent_from_python(tiny_bert_dir, tmp_path, monkeypatch, capsys):
    """Train and encode as the README shows; the bundled default model is replaced by the tiny BERT."""
    import nlptool.core.models as models

    monkeypatch.setattr(models, "default_model_path", lambda: tiny_bert_dir)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sample_data").symlink_to(SAMPLE_DATA)
    code = readme_example("cosent-from-python")
    namespace: dict = {}
    exec(compile(code, "README.md:cosent-from-python", "exec"), namespace)  # noqa: S102
    result = namespace["result"]
    assert result.model_dir.resolve() == (tmp_path / "demo_out" / "minilm-cosent-py").resolve()
    assert (result.model_dir / "modules.json").is_file() and result.metrics["train_pairs"] == 600
    assert namespace["vectors"].shape == (2, 32)
    before, after, best = capsys.readouterr().out.splitlines()[0].split()
    assert float(after) == pytest.approx(result.metrics["dev_spearman"]) and -1 <= float(before) <= 1


def test_classify_from_python(tiny_bert_dir, tmp_path, monkeypatch, capsys):
    """Train, load, predict and evaluate a classifier as the README shows, on the tiny BERT as the default model."""
    import numpy as np

    import nlptool.core.models as models

    monkeypatch.setattr(models, "default_model_path", lambda: tiny_bert_dir)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sample_data").symlink_to(SAMPLE_DATA)
    code = readme_example("classify-from-python")
    namespace: dict = {}
    exec(compile(code, "README.md:classify-from-python", "exec"), namespace)  # noqa: S102
    result, task, probs = namespace["result"], namespace["task"], namespace["probs"]
    assert result.model_dir.resolve() == (tmp_path / "demo_out" / "clf-py").resolve()
    assert (result.model_dir / "classify_head.safetensors").is_file() and result.metrics["train_texts"] == 200
    assert result.metrics["dev_texts"] == 100 and task.labels == ["negative", "positive"]
    assert probs.shape == (2, 2) and np.allclose(probs.sum(axis=1), 1.0)
    lines = capsys.readouterr().out.splitlines()
    assert float(lines[0].split()[0]) == pytest.approx(result.metrics["dev_accuracy"])
    confusion = json.loads(lines[-1])  # the printed list of lists is JSON
    assert np.trace(confusion) / 100 == pytest.approx(result.metrics["dev_accuracy"])  # the saved model is the best


def run_example(marker: str, tmp_path, monkeypatch) -> dict:
    """Run the block marked ``marker`` in ``tmp_path`` (where it may write files); its globals afterwards."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_example(marker), f"README.md:{marker}", "exec"), namespace)  # noqa: S102
    return namespace


def test_entropy_normalize_from_python(tmp_path, monkeypatch):
    import numpy as np

    ns = run_example("entropy-normalize-from-python", tmp_path, monkeypatch)
    assert ns["entropy"](ns["flat"]) == pytest.approx([0.5 * np.log(3)] * 2, abs=1e-8)
    assert ns["gamma"].shape == (2,) and (np.argmax(ns["flat"], axis=1) == [0, 0]).all()


def test_calibrate_can_from_python(tmp_path, monkeypatch):
    ns = run_example("calibrate-can-from-python", tmp_path, monkeypatch)
    assert ns["mask"].tolist() == [False, False, False, True]
    assert ns["adjusted"][:3].tolist() == ns["probs"][:3].tolist()
    assert ns["adjusted"][3].argmax() == 2 and ns["adjusted"][3, 2] > ns["probs"][3, 2]


def test_gradcheck_from_python(tmp_path, monkeypatch):
    ns = run_example("gradcheck-from-python", tmp_path, monkeypatch)
    assert (tmp_path / "mlp.pt").is_file() and len(ns["rows"]) == 8
    assert ns["summarize"](ns["rows"])["violations"] == 0 and all(row["holds"] for row in ns["rows"])


def test_zero_shot_from_python(tiny_bert_dir, tmp_path, monkeypatch, capsys):
    """Classify as the README shows: "minilm-nsp" is the tiny BERT (it has an NSP head), and so is the default model."""
    import nlptool.core.models as models

    monkeypatch.setattr(models, "default_model_path", lambda: tiny_bert_dir)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "minilm-nsp").symlink_to(tiny_bert_dir)
    code = readme_example("zero-shot-from-python")
    namespace: dict = {}
    exec(compile(code, "README.md:zero-shot-from-python", "exec"), namespace)  # noqa: S102
    result, baseline = namespace["result"], namespace["baseline"]
    assert result.labels == baseline.labels == ["Sports", "Business"]
    assert result.probs.shape == baseline.probs.shape == (2, 2) and result.content_free_prior.shape == (2,)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and float(lines[1]) == result.metrics([0, 1])["accuracy"]


def test_ner_from_python(tiny_bert_dir, tmp_path, monkeypatch, capsys):
    """Train, load and predict as the README shows (NER); the bundled default model is replaced by the tiny BERT."""
    import nlptool.core.models as models

    monkeypatch.setattr(models, "default_model_path", lambda: tiny_bert_dir)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sample_data").symlink_to(SAMPLE_DATA)
    code = readme_example("ner-from-python")
    namespace: dict = {}
    exec(compile(code, "README.md:ner-from-python", "exec"), namespace)  # noqa: S102
    result = namespace["result"]
    assert result.model_dir.resolve() == (tmp_path / "demo_out" / "ner-py").resolve()
    assert (result.model_dir / "ner_head.safetensors").is_file() and result.metrics["train_texts"] == 45
    assert result.metrics["dev_texts"] == 15 and result.metrics["labels"] == ["LOC", "ORG", "PER"]
    assert namespace["cfg"]["max_span_tokens"] == result.task.max_span_tokens >= 1
    assert isinstance(namespace["entities"], list) and len(namespace["entities"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert float(lines[0].split()[0]) == pytest.approx(result.metrics["dev_f1"])
    assert float(lines[-1]) == pytest.approx(result.metrics["dev_f1"])  # the saved model is the best checkpoint


def test_multitask_from_python(tiny_bert_dir, tmp_path, monkeypatch, capsys):
    """Train two tasks on one encoder as the README shows; the bundled default model is replaced by the tiny BERT."""
    import math

    import nlptool.core.models as models

    monkeypatch.setattr(models, "default_model_path", lambda: tiny_bert_dir)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sample_data").symlink_to(SAMPLE_DATA)
    code = readme_example("multitask-from-python")
    namespace: dict = {}
    exec(compile(code, "README.md:multitask-from-python", "exec"), namespace)  # noqa: S102
    result = namespace["result"]
    out = tmp_path / "demo_out" / "mtl-py"
    assert (out / "encoder" / "modules.json").is_file() and (out / "tasks" / "ner" / "ner_head.safetensors").is_file()
    assert result.metrics["steps"] == 4 and len((out / "mtl_log.jsonl").read_text().splitlines()) == 4
    assert set(result.last_step["weights"]) == {"pairs", "ner"}
    assert all(math.isfinite(w) for w in result.last_step["weights"].values())
    printed = capsys.readouterr().out.splitlines()[0].split()[0]
    assert float(printed) == pytest.approx(result.metrics["dev"]["mean_main"])
