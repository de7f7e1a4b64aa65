"""Span P/R/F1 (nlptool.core.metrics.span_prf) against seqeval on BIO data, and nested recall by hand."""

from __future__ import annotations

import random

import pytest
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

from nlptool.core.metrics import nested_recall, span_prf
from nlptool.core.ner_convert import bio_to_spans, convert
from tests.conftest import SHARED_DATA

TYPES = ["PER", "LOC", "ORG"]


def _random_tags(rng: random.Random, n: int) -> list[str]:
    tags = []
    for _ in range(n):
        r = rng.random()
        if r < 0.5:
            tags.append("O")
        else:
            tags.append(f"{'B' if rng.random() < 0.6 else 'I'}-{rng.choice(TYPES)}")
    return tags


def _spans(seqs):
    return [[(i, j + 1, lab) for lab, i, j in bio_to_spans(tags)] for tags in seqs]


def _check_against_seqeval(gold_tags, pred_tags):
    ours = span_prf(_spans(gold_tags), _spans(pred_tags))
    assert ours["micro"]["f1"] == pytest.approx(f1_score(gold_tags, pred_tags), abs=1e-12)
    assert ours["micro"]["precision"] == pytest.approx(precision_score(gold_tags, pred_tags), abs=1e-12)
    assert ours["micro"]["recall"] == pytest.approx(recall_score(gold_tags, pred_tags), abs=1e-12)
    report = classification_report(gold_tags, pred_tags, output_dict=True, zero_division=0)
    for label, m in ours["per_type"].items():
        assert m["f1"] == pytest.approx(report[label]["f1-score"], abs=1e-12)
        assert m["support"] == report[label]["support"]
    assert ours["macro"]["f1"] == pytest.approx(report["macro avg"]["f1-score"], abs=1e-12)
    return ours


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_span_prf_matches_seqeval_on_random_bio(seed):
    rng = random.Random(seed)
    gold, pred = [], []
    for _ in range(60):
        n = rng.randint(1, 15)
        g = _random_tags(rng, n)
        # predictions: gold with some tags changed, so there are hits, misses and false alarms
        p = [t if rng.random() < 0.7 else _random_tags(rng, 1)[0] for t in g]
        gold.append(g)
        pred.append(p)
    ours = _check_against_seqeval(gold, pred)
    assert 0 < ours["micro"]["f1"] < 1


@pytest.mark.skipif(not (SHARED_DATA / "ner" / "conll2003" / "dev.txt").is_file(), reason="shared CoNLL data absent")
def test_span_prf_matches_seqeval_on_conll_dev_perturbed():
    path = SHARED_DATA / "ner" / "conll2003" / "dev.txt"
    sentences, tags = [], []
    for line in path.read_text(encoding="utf-8").splitlines()[:3000]:
        if not line.strip():
            if tags:
                sentences.append(tags)
                tags = []
            continue
        tags.append(line.split()[-1])
    rng = random.Random(3)
    pred = []
    for g in sentences:
        p = list(g)
        for k in range(len(p)):
            if rng.random() < 0.08:
                p[k] = rng.choice(["O", "B-PER", "I-PER", "B-LOC", "I-ORG", "B-MISC"])
        pred.append(p)
    _check_against_seqeval(sentences, pred)
    # and the converter's char spans give the same counts as token spans
    docs = list(convert(str(path), "conll")[0])[: len(sentences)]
    char_gold = [[(e["start"], e["end"], e["label"]) for e in d["entities"]] for d in docs]
    assert (
        span_prf(char_gold, char_gold)["micro"]["support"]
        == span_prf(_spans(sentences), _spans(sentences))["micro"]["support"]
    )


def test_span_prf_by_hand():
    gold = [[(0, 2, "A"), (3, 4, "B")], [(1, 2, "A")]]
    pred = [[(0, 2, "A"), (3, 4, "A")], []]
    m = span_prf(gold, pred)
    assert m["micro"] == {"precision": 0.5, "recall": 1 / 3, "f1": 0.4, "support": 3, "predicted": 2, "correct": 1}
    assert m["per_type"]["A"]["precision"] == 0.5 and m["per_type"]["A"]["recall"] == 0.5
    assert m["per_type"]["B"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 1,
        "predicted": 0,
        "correct": 0,
    }
    assert m["macro"]["f1"] == pytest.approx(0.25)
    assert span_prf([], [])["micro"]["f1"] == 0.0


def test_nested_recall_by_hand():
    gold = [[(0, 10, "ORG"), (0, 4, "LOC"), (6, 10, "LOC"), (12, 14, "PER")], [(0, 3, "X"), (0, 3, "Y")]]
    pred = [[(0, 10, "ORG"), (0, 4, "LOC")], [(0, 3, "Y")]]
    r = nested_recall(gold, pred)
    # nested: (0,4) and (6,10) inside (0,10); the same boundaries with another type are not nesting
    assert r == {"nested_gold": 2, "nested_found": 1, "nested_recall": 0.5}
