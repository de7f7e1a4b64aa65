"""CLI tests for ``nlptool zero-shot``: output schema, metrics, the pipe into calibrate-can, samples contrast, pair
input, the missing-NSP-head error and bad input. Models: the tiny BERT fixtures (an NSP head with random weights is
enough for the schema; tests/core/test_nsp.py checks that the scores mean something) and, for the embedding method,
the bundled default model."""

from __future__ import annotations

import json

import pytest

from tests.conftest import jsonl

LABELS = "alpha,beta,gamma"


@pytest.fixture
def texts_csv(tmp_path):
    f = tmp_path / "texts.csv"
    rows = ["text,label"] + [f"w{i} w{i + 1} a b,{['alpha', 'beta', 'gamma'][i % 3]}" for i in range(12)]
    f.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return f


def test_nsp_output_schema_and_metrics(invoke, tiny_bert_dir, texts_csv, tmp_path):
    metrics = tmp_path / "m.json"
    r = invoke(
        "zero-shot", texts_csv, "--labels", LABELS, "--template", "w1 {}", "--model", tiny_bert_dir,
        "--label-col", "label", "--metrics-out", metrics,
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    rows = jsonl(r.stdout)
    assert len(rows) == 12
    for row in rows:
        assert list(row["scores"]) == ["alpha", "beta", "gamma"]
        assert all(0 < s < 1 for s in row["scores"].values())
        assert sum(row["probs"]) == pytest.approx(1.0)
        best = max(row["scores"], key=row["scores"].get)
        assert row["pred"] == best
        assert row["probs"][["alpha", "beta", "gamma"].index(best)] == max(row["probs"])
        assert row["text"].startswith("w") and row["label"] in ("alpha", "beta", "gamma")
    doc = json.loads(metrics.read_text())
    m = doc["metrics"]
    gold = [row["label"] for row in rows]
    pred = [row["pred"] for row in rows]
    assert m["accuracy"] == pytest.approx(sum(g == p for g, p in zip(gold, pred, strict=True)) / 12)
    assert sum(map(sum, m["confusion_matrix"])) == 12
    assert m["pairs"] == 36 and m["pairs_per_s"] > 0
    assert doc["params"]["template"] == "w1 {}" and doc["params"]["position"] == "prefix"
    assert "gold \\ pred" in r.stderr and "pairs/s" in r.stderr


def test_nsp_pipe_into_calibrate_can(invoke, tiny_bert_dir, texts_csv, tmp_path):
    out = tmp_path / "zs.jsonl"
    r = invoke("zero-shot", texts_csv, "--labels", LABELS, "--model", tiny_bert_dir, "-o", out)
    assert r.exit_code == 0, r.stderr
    r2 = invoke("calibrate-can", "-", "--labels", LABELS, "--label-col", "label", input=out.read_text())
    assert r2.exit_code == 0, r2.stderr
    rows = jsonl(r2.stdout)
    assert len(rows) == 12 and all(row["pred"] in LABELS.split(",") for row in rows)
    assert all(sum(row["probs"]) == pytest.approx(1.0) for row in rows)


def test_content_free_calibration(invoke, tiny_bert_dir, texts_csv, tmp_path):
    import numpy as np

    from nlptool.core.nsp import NSPScorer, normalise_scores

    plain = invoke("zero-shot", texts_csv, "--labels", LABELS, "--template", "w1 {}", "--model", tiny_bert_dir)
    assert plain.exit_code == 0, plain.stderr
    metrics = tmp_path / "m.json"
    r = invoke(
        "zero-shot", texts_csv, "--labels", LABELS, "--template", "w1 {}", "--model", tiny_bert_dir,
        "--calibrate", "content-free", "--metrics-out", metrics,
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert "content-free calibration" in r.stderr
    # the prior: normalised P(IsNext) of the three content-free texts against the prompts, averaged
    scorer = NSPScorer.load(str(tiny_bert_dir))
    prompts = ["w1 alpha", "w1 beta", "w1 gamma"]
    prior = normalise_scores(scorer.score(["N/A", "", "[MASK]"], prompts)).mean(axis=0)
    doc = json.loads(metrics.read_text())
    assert list(doc["metrics"]["content_free_prior"].values()) == pytest.approx(prior.tolist(), abs=1e-6)
    assert doc["params"]["calibrate"] == "content-free"
    names = LABELS.split(",")
    for before, after in zip(jsonl(plain.stdout), jsonl(r.stdout), strict=True):
        assert after["scores"] == pytest.approx(before["scores"])  # raw scores are kept
        q = np.array(before["probs"]) / prior
        q /= q.sum()
        assert after["probs"] == pytest.approx(q.tolist(), abs=1e-6)
        assert after["pred"] == names[int(q.argmax())]


def test_content_free_calibration_needs_candidates(invoke, tiny_bert_dir, texts_csv):
    r = invoke(
        "zero-shot", texts_csv, "--labels", LABELS, "--model", tiny_bert_dir, "--mapping", "samples",
        "--calibrate", "content-free",
    )  # fmt: skip
    assert r.exit_code == 2 and "--calibrate" in r.stderr


def test_stdin_and_suffix_and_determinism(invoke, tiny_bert_dir, texts_csv):
    args = ["zero-shot", "-", "--labels", LABELS, "--model", tiny_bert_dir, "--position", "suffix", "-q"]
    a = invoke(*args, input=texts_csv.read_text())
    b = invoke(*args, input=texts_csv.read_text())
    assert a.exit_code == 0, a.stderr
    assert a.stdout == b.stdout and a.stderr == ""
    prefix = invoke("zero-shot", texts_csv, "--labels", LABELS, "--model", tiny_bert_dir, "-q")
    assert jsonl(prefix.stdout)[0]["scores"] != jsonl(a.stdout)[0]["scores"]  # the order of segments matters


def test_labels_file_and_csv_output(invoke, tiny_bert_dir, texts_csv, tmp_path):
    labels = tmp_path / "labels.yaml"
    labels.write_text("template: 'w2 {}'\nlabels:\n  alpha: w5\n  beta: {prompt: 'w7 w8'}\n  gamma:\n")
    out = tmp_path / "out.csv"
    metrics = tmp_path / "m.json"
    r = invoke(
        "zero-shot", texts_csv, "--labels-file", labels, "--model", tiny_bert_dir, "-o", out, "--metrics-out", metrics
    )
    assert r.exit_code == 0, r.stderr
    header = out.read_text().splitlines()[0]
    assert header == "text,label,scores,probs,pred"
    assert json.loads(metrics.read_text())["metrics"]["prompts"] == ["w2 w5", "w7 w8", "w2 gamma"]


def test_samples_mapping_bins(invoke, tiny_bert_dir, texts_csv):
    r = invoke(
        "zero-shot", texts_csv, "--labels", LABELS, "--model", tiny_bert_dir, "--mapping", "samples", "-q"
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    rows = jsonl(r.stdout)
    counts = {y: sum(row["pred"] == y for row in rows) for y in LABELS.split(",")}
    assert counts == {"alpha": 4, "beta": 4, "gamma": 4}
    ranked = sorted(rows, key=lambda row: -row["score"])
    assert [row["pred"] for row in ranked] == ["alpha"] * 4 + ["beta"] * 4 + ["gamma"] * 4


def test_pair_task_with_text2(invoke, tiny_bert_dir, tmp_path):
    f = tmp_path / "pairs.jsonl"
    f.write_text("".join(json.dumps({"s1": f"w{i} a", "s2": f"w{i + 3} b", "y": "yes"}) + "\n" for i in range(6)))
    r = invoke(
        "zero-shot", f, "--labels", "yes,no", "--model", tiny_bert_dir, "--mapping", "samples",
        "--text-col", "s1", "--text2-col", "s2", "--label-col", "y",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    rows = jsonl(r.stdout)
    assert sorted(row["pred"] for row in rows) == ["no"] * 3 + ["yes"] * 3
    bad = invoke(
        "zero-shot", f, "--labels", "yes,no", "--model", tiny_bert_dir, "--text-col", "s1", "--text2-col", "s2"
    )
    assert bad.exit_code == 2 and "samples" in bad.stderr


def test_missing_nsp_head_is_an_error(invoke, tiny_bert_no_heads_dir, texts_csv, tmp_path):
    out = tmp_path / "out.jsonl"
    r = invoke("zero-shot", texts_csv, "--labels", LABELS, "--model", tiny_bert_no_heads_dir, "-o", out)
    assert r.exit_code == 1
    assert r.stderr.startswith("Error: ") and "cls.seq_relationship" in r.stderr and "nsp-adapt" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "code", "match"),
    [
        (["--labels", "a,b", "--template", "no slot"], 1, "exactly one {}"),
        (["--labels", "a,b", "--template", "{} {}"], 1, "{} 2 times"),
        (["--labels", "a"], 1, "at least 2"),
        ([], 2, "--labels"),
        (["--labels", "a,b", "--labels-file", "x.yaml"], 2, "--labels"),
        (["--labels", "a,b", "--text-col", "nope"], 1, "no column 'nope'"),
        (["--labels", "a,b", "--label-col", "label"], 1, "texts.csv:2: field 'label': gold label 'alpha' is not one"),
        (["--labels", "a,b", "--method", "embedding", "--mapping", "samples"], 2, "--method nsp"),
    ],
)
def test_bad_input(invoke, tiny_bert_dir, texts_csv, args, code, match):
    r = invoke("zero-shot", texts_csv, "--model", tiny_bert_dir, *args)
    assert r.exit_code == code, r.stderr
    assert match in r.stderr


def test_existing_output_needs_force(invoke, tiny_bert_dir, texts_csv, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("keep\n")
    r = invoke("zero-shot", texts_csv, "--labels", LABELS, "--model", tiny_bert_dir, "-o", out)
    assert r.exit_code == 1 and "--force" in r.stderr and out.read_text() == "keep\n"


def test_empty_text_is_an_error(invoke, tiny_bert_dir, tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text('{"text": "w1"}\n{"text": "  "}\n')
    r = invoke("zero-shot", f, "--labels", LABELS, "--model", tiny_bert_dir)
    assert r.exit_code == 1 and "t.jsonl:2: field 'text': empty text" in r.stderr


def test_embedding_method_default_model(invoke, tmp_path):
    f = tmp_path / "news.jsonl"
    items = [
        ("The striker scored twice as the home team won the cup final.", "sports"),
        ("The tennis champion lost in the first round of the tournament.", "sports"),
        ("Shares fell after the bank reported lower quarterly profits.", "business"),
        ("The company agreed to buy its rival for two billion dollars.", "business"),
    ]
    f.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in items))
    metrics = tmp_path / "m.json"
    r = invoke(
        "zero-shot", f, "--labels", "sports,business", "--template", "This news is about {}.", "--method",
        "embedding", "--label-col", "label", "--metrics-out", metrics,
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    rows = jsonl(r.stdout)
    assert [row["pred"] for row in rows] == [y for _, y in items]
    for row in rows:
        assert all(-1 <= s <= 1 for s in row["scores"].values()) and sum(row["probs"]) == pytest.approx(1.0)
    assert json.loads(metrics.read_text())["metrics"]["accuracy"] == 1.0


def test_embedding_method_content_free_calibration(invoke, tmp_path):
    import numpy as np

    from nlptool.core.encoder import SentenceEncoder

    f = tmp_path / "t.jsonl"
    texts = ["The striker scored twice in the final.", "Shares fell after the bank's profits dropped."]
    f.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    metrics = tmp_path / "m.json"
    r = invoke(
        "zero-shot", f, "--labels", "sports,business", "--template", "This news is about {}.", "--method",
        "embedding", "--calibrate", "content-free", "--metrics-out", metrics,
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    enc = SentenceEncoder.load(None)
    prompts = enc.encode(["This news is about sports.", "This news is about business."], normalize=True)
    cf = enc.encode(["N/A", "", enc.tokenizer.mask_token], normalize=True) @ prompts.T / 0.05
    cf = np.exp(cf - cf.max(axis=1, keepdims=True))
    prior = (cf / cf.sum(axis=1, keepdims=True)).mean(axis=0)
    got = json.loads(metrics.read_text())["metrics"]["content_free_prior"]
    assert [got["sports"], got["business"]] == pytest.approx(prior.tolist(), abs=1e-5)
    assert all(sum(row["probs"]) == pytest.approx(1.0) for row in jsonl(r.stdout))


@pytest.mark.parametrize(
    ("labels", "position"), [("a,,b", "item 2 of 3"), ("a,b,", "item 3 of 3"), (",a,b", "item 1 of 3")]
)
def test_empty_label_in_list_is_a_usage_error(invoke, tiny_bert_dir, texts_csv, labels, position):
    # 'a,,b' used to become the two labels a, b silently
    r = invoke("zero-shot", texts_csv, "--labels", labels, "--model", tiny_bert_dir)
    assert r.exit_code == 2 and position in r.stderr and "is empty" in r.stderr and "--labels" in r.stderr
    r = invoke("calibrate-can", "-", "--labels", labels, input='{"probs": [0.2, 0.3, 0.5]}\n')
    assert r.exit_code == 2 and position in r.stderr


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--position", "suffix", "--calibrate", "content-free"],
        ["--method", "embedding", "--calibrate", "content-free", "--temperature", "0.1"],
    ],
)
def test_cli_gives_the_python_api_probs(invoke, tiny_bert_dir, texts_csv, extra):
    """zero-shot is core.nsp.classify_nsp / classify_embedding: the same scores, probs and preds."""
    from nlptool.core.encoder import SentenceEncoder
    from nlptool.core.nsp import NSPScorer, classify_embedding, classify_nsp, make_prompts

    r = invoke(
        "zero-shot", texts_csv, "--labels", "w5,w9,w30", "--template", "w2 {} w3", "--model", tiny_bert_dir, *extra
    )
    assert r.exit_code == 0, r.stderr
    rows = jsonl(r.stdout)
    texts = [row["text"] for row in rows]
    prompts = make_prompts(["w5", "w9", "w30"], "w2 {} w3")
    calibrate = "content-free" if "content-free" in extra else None
    if "embedding" in extra:
        encoder = SentenceEncoder.load(str(tiny_bert_dir))
        result = classify_embedding(encoder, texts, prompts, temperature=0.1, calibrate=calibrate)
    else:
        position = "suffix" if "suffix" in extra else "prefix"
        result = classify_nsp(
            NSPScorer.load(str(tiny_bert_dir)), texts, prompts, position=position, calibrate=calibrate
        )
    assert [row["probs"] for row in rows] == result.probs.tolist()
    assert [list(row["scores"].values()) for row in rows] == result.scores.tolist()
    assert [row["pred"] for row in rows] == result.pred_labels
    if calibrate is not None:
        assert result.content_free_texts == ["N/A", "", "[MASK]"] and result.content_free_prior.shape == (3,)
