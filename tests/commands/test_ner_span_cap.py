"""``ner predict/eval --max-span-tokens``: the default cap is the training data's longest entity (stored in
ner_config.json by ``ner train``); 0 lifts it; folders written before the setting existed have no cap.

A threshold far below every real score makes the model "predict" every span of a text, so the tests see exactly
which span lengths the cap lets through, independently of what the tiny model learnt.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.commands.test_ner import GOLD, _write_jsonl
from tests.conftest import jsonl


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_bert_no_heads_dir):
    from typer.testing import CliRunner

    from nlptool.cli import app

    tmp = tmp_path_factory.mktemp("ner-cap")
    train = _write_jsonl(tmp / "train.jsonl", GOLD)  # longest entity: "w30 w31 w32", 3 tokens
    out = tmp / "model"
    args = ["ner", "train", "--train", train, "--out", out, "--model", tiny_bert_no_heads_dir, "--epochs", "1"]
    args += ["--batch-size", "6", "--head-size", "8", "--max-length", "32", "--metrics-out", tmp / "m.json"]
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.stderr
    return out


def _token_lengths(rows):
    return sorted({len(e["text"].split()) for r in rows for e in r["entities"]})


def test_train_stores_the_longest_entity(model_dir):
    cfg = json.loads((model_dir / "ner_config.json").read_text())
    assert cfg["max_span_tokens"] == 3
    metrics = json.loads((model_dir.parent / "m.json").read_text())
    assert metrics["params"]["max_span_tokens"] == 3


def test_predict_caps_span_length(invoke, model_dir, tmp_path):
    texts = tmp_path / "t.txt"
    texts.write_text("w1 w1 w1 w1 w1 w1 w1 w1\nw2 w3\n", encoding="utf-8")
    low = ("--threshold", "-1e9")
    r = invoke("ner", "predict", model_dir, texts, *low)
    assert r.exit_code == 0, r.stderr
    rows = jsonl(r.stdout)
    assert _token_lengths(rows) == [1, 2, 3]  # the stored cap
    # 8 one-token words: 8 + 7 + 6 spans of length 1..3, for each of the 3 types
    assert len(rows[0]["entities"]) == 3 * (8 + 7 + 6)
    r = invoke("ner", "predict", model_dir, texts, *low, "--max-span-tokens", "0")
    assert r.exit_code == 0 and _token_lengths(jsonl(r.stdout)) == list(range(1, 9))
    r = invoke("ner", "predict", model_dir, texts, *low, "--max-span-tokens", "1")
    assert r.exit_code == 0 and _token_lengths(jsonl(r.stdout)) == [1]
    r = invoke("ner", "predict", model_dir, texts, "--max-span-tokens", "-1")
    assert r.exit_code == 2


def test_eval_uses_the_same_cap(invoke, model_dir, tmp_path):
    gold = _write_jsonl(tmp_path / "gold.jsonl", GOLD)
    out = tmp_path / "preds.jsonl"
    r = invoke("ner", "eval", model_dir, gold, "--threshold", "-1e9", "-o", out, "--metrics-out", tmp_path / "m.json")
    assert r.exit_code == 0, r.stderr
    assert _token_lengths(jsonl(out.read_text())) == [1, 2, 3]
    assert json.loads((tmp_path / "m.json").read_text())["params"]["max_span_tokens"] == 3


def test_older_folders_without_the_setting_have_no_cap(invoke, model_dir, tmp_path):
    old = tmp_path / "old-model"
    shutil.copytree(model_dir, old)
    cfg = json.loads((old / "ner_config.json").read_text())
    del cfg["max_span_tokens"]
    (old / "ner_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    texts = tmp_path / "t.txt"
    texts.write_text("w1 w1 w1 w1 w1\n", encoding="utf-8")
    r = invoke("ner", "predict", old, texts, "--threshold", "-1e9")
    assert r.exit_code == 0, r.stderr
    assert _token_lengths(jsonl(r.stdout)) == [1, 2, 3, 4, 5]
    r = invoke("ner", "predict", old, texts, "--threshold", "-1e9", "--max-span-tokens", "2")
    assert r.exit_code == 0 and _token_lengths(jsonl(r.stdout)) == [1, 2]
