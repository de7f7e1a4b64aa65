"""Converters to the canonical NER JSONL, on small hand-written files of each format."""

from __future__ import annotations

import json

import pytest

from nlptool.core.errors import InputError, NlptoolError
from nlptool.core.ner_convert import bio_to_spans, convert


def _run(tmp_path, content, fmt, name="in.txt"):
    p = tmp_path / name
    p.write_text(content, encoding="utf-8")
    records, stats = convert(str(p), fmt)
    return list(records), stats


def _surfaces(doc):
    return [(doc["text"][e["start"] : e["end"]], e["label"]) for e in doc["entities"]]


def test_bio_to_spans_iob1_iob2():
    # IOB2
    assert bio_to_spans(["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC"]) == [
        ("PER", 0, 1),
        ("LOC", 3, 3),
        ("LOC", 4, 5),
    ]
    # IOB1: I- starts an entity after O or another type; B- only separates two adjacent same-type entities
    assert bio_to_spans(["I-ORG", "I-ORG", "I-PER", "B-PER", "O", "I-LOC"]) == [
        ("ORG", 0, 1),
        ("PER", 2, 2),
        ("PER", 3, 3),
        ("LOC", 5, 5),
    ]
    with pytest.raises(InputError, match="f:12: tag 'E-PER'"):
        bio_to_spans(["O", "E-PER"], path="f", lines=[11, 12])


CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O
BRUSSELS NNP B-NP I-LOC
"""


def test_conll(tmp_path):
    docs, stats = _run(tmp_path, CONLL, "conll")
    assert [d["text"] for d in docs] == ["EU rejects German call .", "Peter Blackburn", "BRUSSELS"]
    assert _surfaces(docs[0]) == [("EU", "ORG"), ("German", "MISC")]
    assert docs[0]["entities"][0] == {"start": 0, "end": 2, "label": "ORG"}
    assert _surfaces(docs[1]) == [("Peter Blackburn", "PER")]
    assert _surfaces(docs[2]) == [("BRUSSELS", "LOC")]
    assert stats.texts == 3 and stats.entities == 4 and stats.docstarts == 2
    assert dict(stats.labels) == {"ORG": 1, "MISC": 1, "PER": 1, "LOC": 1}


def test_conll_two_columns_and_errors(tmp_path):
    docs, _ = _run(tmp_path, "Alice B-PER\nsmiled O\n", "conll")
    assert _surfaces(docs[0]) == [("Alice", "PER")]
    with pytest.raises(InputError, match=r"in.txt:2: expected a token and its tag"):
        _run(tmp_path, "Alice B-PER\nsmiled\n", "conll")
    with pytest.raises(InputError, match=r"in.txt:3: tag 'PER'"):
        _run(tmp_path, "Alice B-PER\n\nBob PER\n", "conll")


def test_bio_chars(tmp_path):
    docs, stats = _run(tmp_path, "我 O\n在 O\n北 B-LOC\n京 I-LOC\n\n张 B-PER\n三 I-PER\n说 O\n", "bio-chars")
    assert [d["text"] for d in docs] == ["我在北京", "张三说"]
    assert _surfaces(docs[0]) == [("北京", "LOC")]
    assert docs[0]["entities"] == [{"start": 2, "end": 4, "label": "LOC"}]
    assert _surfaces(docs[1]) == [("张三", "PER")]
    assert stats.texts == 2
    with pytest.raises(InputError, match=r"in.txt:2: expected one character and a tag"):
        _run(tmp_path, "我 O\n在 x O\n", "bio-chars")


def test_cluener(tmp_path):
    lines = [
        {
            "text": "浙商银行企业信贷部叶老桂博士",
            "label": {"name": {"叶老桂": [[9, 11]]}, "company": {"浙商银行": [[0, 3]]}},
        },
        {"id": 3, "text": "无实体"},
    ]
    docs, stats = _run(
        tmp_path, "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n", "cluener", "c.json"
    )
    assert _surfaces(docs[0]) == [("浙商银行", "company"), ("叶老桂", "name")]
    assert docs[0]["entities"][1] == {"start": 9, "end": 12, "label": "name"}
    assert docs[1] == {"text": "无实体", "id": 3, "entities": []}
    bad = {"text": "浙商银行", "label": {"company": {"浙商银行": [[0, 4]]}}}
    with pytest.raises(InputError, match=r"c.json:1: field 'label'.*does not match"):
        _run(tmp_path, json.dumps(bad, ensure_ascii=False) + "\n", "cluener", "c.json")
    with pytest.raises(InputError, match=r"c.json:2: invalid JSON"):
        _run(tmp_path, json.dumps(lines[1], ensure_ascii=False) + "\n{oops\n", "cluener", "c.json")


def test_token_spans_nested(tmp_path):
    line = {
        "tokens": ["Expression", "of", "jun", "B", "in", "T", "cells"],
        "doc_id": "D1",
        "sent_id": "D1-0",
        "entity_mentions": [
            {"start": 2, "end": 4, "entity_type": "DNA", "text": "jun B"},
            {"start": 5, "end": 7, "entity_type": "cell_type"},
            {"start": 5, "end": 6, "entity_type": "protein"},
        ],
    }
    docs, stats = _run(tmp_path, json.dumps(line) + "\n", "token-spans", "g.jsonl")
    doc = docs[0]
    assert doc["text"] == "Expression of jun B in T cells"
    assert doc["doc_id"] == "D1" and doc["sent_id"] == "D1-0"
    assert _surfaces(doc) == [("jun B", "DNA"), ("T", "protein"), ("T cells", "cell_type")]
    assert stats.entities == 3
    line["entity_mentions"].append({"start": 6, "end": 9, "entity_type": "X"})
    with pytest.raises(InputError, match=r"g.jsonl:1: field 'entity_mentions': mention 3"):
        _run(tmp_path, json.dumps(line) + "\n", "token-spans", "g.jsonl")
    line["entity_mentions"][-1] = {"start": 3, "end": 6, "entity_type": "X"}  # crosses "T cells"
    with pytest.raises(InputError, match="overlap without one containing the other"):
        _run(tmp_path, json.dumps(line) + "\n", "token-spans", "g.jsonl")


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(NlptoolError, match="unknown format"):
        convert("x", "brat")
    records, _ = convert(str(tmp_path / "missing.txt"), "conll")
    with pytest.raises(NlptoolError, match="does not exist"):
        list(records)
