"""nlptool.core.classify: the loss against torch's cross-entropy and a hand computation, metrics against scikit-learn,
the save/load round trip, a tiny BERT that learns a separable toy set, and bad input named by file, line and field."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from nlptool.core.errors import InputError, NlptoolError

# A separable toy set on the tiny vocabulary: class "pos" texts contain the token "a", class "neg" the token "b".
TOY = [(f"w{i} a w{i + 1}", "pos") for i in range(12)] + [(f"w{i + 40} b w{i + 41}", "neg") for i in range(12)]


def write_jsonl(path, rows, text="text", label="label"):
    path.write_text("".join(json.dumps({text: t, label: y}) + "\n" for t, y in rows), encoding="utf-8")
    return path


@pytest.fixture
def encoder(tiny_bert_no_heads_dir):
    from nlptool.core.encoder import SentenceEncoder

    torch.manual_seed(0)
    return SentenceEncoder.load(str(tiny_bert_no_heads_dir))


@pytest.fixture
def toy(tmp_path):
    from nlptool.core.classify import read_classify

    return read_classify(write_jsonl(tmp_path / "toy.jsonl", TOY))


@pytest.fixture(scope="module")
def trained(tiny_bert_no_heads_dir, tmp_path_factory):
    """A tiny BERT classifier fitted on the toy set and saved: (result, folder, data)."""
    from nlptool.core.classify import fit, read_classify
    from nlptool.core.encoder import SentenceEncoder
    from nlptool.core.seeding import seed_everything
    from nlptool.core.train import TrainConfig

    base = tmp_path_factory.mktemp("clf")
    data = read_classify(write_jsonl(base / "toy.jsonl", TOY))
    seed_everything(0)
    encoder = SentenceEncoder.load(str(tiny_bert_no_heads_dir))
    config = TrainConfig(epochs=8, batch_size=8, lr=2e-3, warmup_ratio=0.0, device="cpu", seed=0)
    result = fit(encoder, data, base / "model", dev=data, config=config, head_lr_scale=5.0)
    return result, base / "model", data


# -- the loss ---------------------------------------------------------------------------------------------------------


def test_loss_equals_torch_cross_entropy_and_the_hand_value():
    from nlptool.core.classify import classification_loss

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    labels = torch.tensor([0, 1])
    # by hand: row 0: log(e^2 + 1 + e^-1) - 2; row 1: log(2 e^0.5 + e^3) - 0.5
    hand = ((math.log(math.exp(2) + 1 + math.exp(-1)) - 2) + (math.log(2 * math.exp(0.5) + math.exp(3)) - 0.5)) / 2
    got = classification_loss(logits, labels)
    assert got.item() == pytest.approx(hand, rel=1e-6)
    assert torch.allclose(got, torch.nn.functional.cross_entropy(logits, labels))
    gen = torch.Generator().manual_seed(0)
    big = torch.randn(17, 5, generator=gen) * 10
    ys = torch.randint(0, 5, (17,), generator=gen)
    assert torch.allclose(classification_loss(big, ys), torch.nn.functional.cross_entropy(big, ys), atol=1e-6)


def test_loss_gradient_is_softmax_minus_one_hot():
    from nlptool.core.classify import classification_loss

    logits = torch.tensor([[1.0, -2.0, 0.3], [0.0, 0.0, 0.0]], requires_grad=True)
    labels = torch.tensor([2, 0])
    classification_loss(logits, labels).backward()
    expected = (torch.softmax(logits.detach(), -1) - torch.nn.functional.one_hot(labels, 3)) / 2
    assert torch.allclose(logits.grad, expected, atol=1e-7)


# -- metrics ----------------------------------------------------------------------------------------------------------


def test_metrics_match_sklearn():
    from sklearn import metrics as sk

    from nlptool.core.metrics import accuracy, confusion_matrix, macro_f1

    rng = np.random.default_rng(0)
    for k in (2, 4, 5):
        gold = rng.integers(0, k, 60)
        pred = np.where(rng.random(60) < 0.6, gold, rng.integers(0, k - 1, 60))  # class k-1 rarely predicted
        assert accuracy(gold, pred) == pytest.approx(sk.accuracy_score(gold, pred))
        labels = list(range(k))
        assert macro_f1(gold, pred, k) == pytest.approx(
            sk.f1_score(gold, pred, average="macro", labels=labels, zero_division=0)
        )
        assert confusion_matrix(gold, pred, k).tolist() == sk.confusion_matrix(gold, pred, labels=labels).tolist()


def test_evaluate_classifier_per_class_matches_sklearn(trained):
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    from nlptool.core.classify import evaluate_classifier, load_classifier

    _, folder, data = trained
    encoder, task = load_classifier(folder)
    out = evaluate_classifier(encoder, task, data)
    m = out["metrics"]
    gold = [task.labels.index(y) for y in data.labels]
    pred = out["probs"].argmax(axis=1)
    p, r, f, s = precision_recall_fscore_support(gold, pred, labels=[0, 1], zero_division=0)
    for i, label in enumerate(task.labels):
        assert m["per_class"][label]["precision"] == pytest.approx(p[i])
        assert m["per_class"][label]["recall"] == pytest.approx(r[i])
        assert m["per_class"][label]["f1"] == pytest.approx(f[i])
        assert m["per_class"][label]["support"] == s[i]
    assert m["confusion"] == confusion_matrix(gold, pred, labels=[0, 1]).tolist()
    assert m["labels"] == ["neg", "pos"] and m["texts"] == len(TOY)


# -- the task ---------------------------------------------------------------------------------------------------------


def test_task_follows_the_protocol(encoder, toy):
    from nlptool.core.classify import ClassifyTask
    from nlptool.core.tasks import Task

    task = ClassifyTask(encoder, toy.label_set())
    assert isinstance(task, Task)
    assert (task.name, task.metric, task.greater_is_better) == ("classify", "accuracy", True)
    assert task.labels == ["neg", "pos"]
    examples = task.examples(toy)
    assert examples[0] == (TOY[0][0], 1) and examples[-1] == (TOY[-1][0], 0)
    assert task.lengths(examples) == [len(t) for t, _ in TOY]
    features, labels = task.collate(examples[:3])
    assert labels.dtype == torch.long and labels.tolist() == [1, 1, 1]
    assert features["input_ids"].shape[0] == 3
    head = task.head.linear
    assert (head.in_features, head.out_features) == (encoder.dim, 2)
    assert {id(p) for p in task.head_parameters()} == {id(head.weight), id(head.bias)}
    # the loss is the cross-entropy of the head's logits on the pooled embeddings (dropout off in eval mode)
    task.head.eval()
    encoder.eval()
    with torch.no_grad():
        loss = task.loss(encoder, (features, labels))
        logits = task.head.linear(encoder(features))
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits, labels))


def test_task_refuses_one_class_and_duplicates(encoder):
    from nlptool.core.classify import ClassifyTask

    with pytest.raises(NlptoolError, match="at least 2 classes"):
        ClassifyTask(encoder, ["only"])
    with pytest.raises(NlptoolError, match="duplicate"):
        ClassifyTask(encoder, ["a", "a", "b"])


def test_tiny_bert_learns_the_toy_set(trained):
    result, folder, data = trained
    m = result.metrics
    assert m["dev_accuracy"] == 1.0 and m["dev_macro_f1"] == 1.0
    assert m["labels"] == ["neg", "pos"] and m["label_counts"] == [12, 12] and m["train_texts"] == 24
    assert m["steps"] == 8 * 3 and m["best_step"] is not None
    assert 0.0 <= m["dev_accuracy_before"] <= 1.0
    cfg = json.loads((folder / "classify_config.json").read_text(encoding="utf-8"))
    assert cfg["labels"] == ["neg", "pos"] and cfg["format"] == "nlptool-classify" and cfg["dropout"] == 0.1
    assert json.loads((folder / "nlptool_encoder.json").read_text(encoding="utf-8"))["pooling"] == "mean"


def test_save_load_round_trip_gives_identical_probabilities(trained):
    from nlptool.core.classify import load_classifier, predict_proba

    result, folder, data = trained
    texts = [t for t, _ in TOY]
    encoder, task = load_classifier(folder)
    again = predict_proba(encoder, task, texts)
    assert again.dtype == np.float64 and again.shape == (len(TOY), 2)
    np.testing.assert_allclose(again.sum(axis=1), 1.0, atol=1e-12)
    encoder2, task2 = load_classifier(folder)
    np.testing.assert_array_equal(predict_proba(encoder2, task2.head, texts), again)
    # the folder holds the best checkpoint, whose accuracy fit reported
    acc = float((again.argmax(axis=1) == [task.labels.index(y) for _, y in TOY]).mean())
    assert acc == result.metrics["dev_accuracy"] == 1.0
    # input order is kept whatever the length-sorted batching does
    order = np.random.default_rng(1).permutation(len(texts))
    np.testing.assert_allclose(predict_proba(encoder, task, [texts[i] for i in order]), again[order], atol=1e-6)
    assert predict_proba(encoder, task, []).shape == (0, 2)


def test_load_classifier_refuses_other_folders(tiny_bert_no_heads_dir, trained, tmp_path):
    import shutil

    from nlptool.core.classify import load_classifier

    with pytest.raises(NlptoolError, match=r"is a Hugging Face model folder .*, not a classifier folder; train one"):
        load_classifier(tiny_bert_no_heads_dir)
    broken = tmp_path / "broken"
    shutil.copytree(trained[1], broken)
    (broken / "classify_head.safetensors").write_bytes(b"garbage")
    with pytest.raises(NlptoolError, match="classify_head.safetensors is damaged"):
        load_classifier(broken)
    (broken / "classify_head.safetensors").unlink()
    (broken / "classify_config.json").write_text('{"format": "nlptool-classify", "labels": ["x"]}', encoding="utf-8")
    with pytest.raises(NlptoolError, match="'labels' is not a list of at least 2 strings"):
        load_classifier(broken)


def test_fit_refuses_a_dev_label_the_training_data_lacks(encoder, toy, tmp_path):
    from nlptool.core.classify import fit, read_classify

    dev = read_classify(write_jsonl(tmp_path / "dev.jsonl", [("w1 a", "pos"), ("w2 b", "other")]))
    with pytest.raises(InputError, match=re.escape("dev.jsonl:2: field 'label': label 'other' is unknown")):
        fit(encoder, toy, None, dev=dev)


# -- reading ----------------------------------------------------------------------------------------------------------


def test_read_classify_formats_and_stdin(tmp_path, monkeypatch):
    import io
    import sys

    from nlptool.core.classify import read_classify

    (tmp_path / "d.csv").write_text('sentence,y\n"hello, world",1\nbye,0\n', encoding="utf-8")
    d = read_classify(tmp_path / "d.csv", text_col="sentence", label_col="y")
    assert d.texts == ["hello, world", "bye"] and d.labels == ["1", "0"] and d.lines == [2, 3]
    assert d.label_set() == ["0", "1"] and d.counts(["0", "1"]).tolist() == [1, 1]
    (tmp_path / "d.tsv").write_text("text\tlabel\nx y\tWorld\n", encoding="utf-8")
    assert read_classify(tmp_path / "d.tsv").labels == ["World"]
    (tmp_path / "d.jsonl").write_text('{"text": "a", "label": 3}\n\n{"text": "b", "label": " B "}\n', encoding="utf-8")
    d = read_classify(tmp_path / "d.jsonl")
    assert d.labels == ["3", "B"] and d.lines == [1, 3]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"text": "s", "label": "x"}\n')))
    assert read_classify("-").texts == ["s"]


@pytest.mark.parametrize(
    ("content", "name", "where"),
    [
        ('{"text": "ok", "label": "a"}\n{"txt": "no", "label": "a"}\n', "bad.jsonl", "bad.jsonl:2: field 'text'"),
        ('{"text": "ok", "label": "a"}\n{"text": "  ", "label": "a"}\n', "bad.jsonl", "bad.jsonl:2: field 'text'"),
        ('{"text": "ok", "label": "a"}\n{"text": "x"}\n', "bad.jsonl", "bad.jsonl:2: field 'label'"),
        ('{"text": "ok", "label": null}\n', "bad.jsonl", "bad.jsonl:1: field 'label'"),
        ('{"text": "ok", "label": [1]}\n', "bad.jsonl", "bad.jsonl:1: field 'label'"),
        ('{"text": 5, "label": "a"}\n', "bad.jsonl", "bad.jsonl:1: field 'text'"),
        ("text,label\nfine,a\n,b\n", "bad.csv", "bad.csv:3: field 'text'"),
        ("text,label\nfine,a\nother,\n", "bad.csv", "bad.csv:3: field 'label'"),
    ],
    ids=["no-text-col", "empty-text", "no-label", "null-label", "list-label", "number-text", "csv-empty", "csv-nolab"],
)
def test_bad_input_names_file_line_and_field(tmp_path, content, name, where):
    from nlptool.core.classify import read_classify

    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_classify(path)
    assert where in str(err.value) and "\n" not in str(err.value)
