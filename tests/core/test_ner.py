"""Tests for nlptool.core.ner: validation, offset alignment, windows, collation, saving, overlap resolution."""

from __future__ import annotations

import json

import pytest
import torch

from nlptool.core.errors import InputError, NlptoolError
from nlptool.core.ner import (
    Entity,
    NerExample,
    SpanNerModel,
    collate_windows,
    encode_windows,
    label_set,
    parse_example,
    read_ner_jsonl,
    resolve_overlaps,
    validate_entities,
)

WORDPIECE_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [
    "alice",
    "met",
    "bob",
    "in",
    "new",
    "york",
    "university",
    "washington",
    "##ian",
    "##s",
    "cafe",
    "zoe",
    "at",
    ",",
    ".",
    "東",
    "京",
]


@pytest.fixture(scope="module")
def wp_tokenizer(tmp_path_factory):
    """A fast uncased WordPiece tokenizer with sub-word pieces (##ian, ##s) and two CJK characters."""
    from transformers import BertTokenizerFast

    path = tmp_path_factory.mktemp("wp-tok")
    (path / "vocab.txt").write_text("\n".join(WORDPIECE_VOCAB) + "\n", encoding="utf-8")
    tok = BertTokenizerFast.from_pretrained(path)
    assert tok.is_fast
    return tok


def _tokens(tok, text):
    enc = tok(text, return_offsets_mapping=True)
    names = tok.convert_ids_to_tokens(enc["input_ids"])
    return [(t, text[s:e]) for t, (s, e) in zip(names, enc["offset_mapping"], strict=True)]


# --- validation ---------------------------------------------------------------------------------------------------


def test_validate_nested_ok_and_sorted():
    text = "new york university"
    ents = [Entity(0, 19, "ORG"), Entity(0, 8, "LOC")]
    assert validate_entities(text, ents) == [Entity(0, 8, "LOC"), Entity(0, 19, "ORG")]


@pytest.mark.parametrize(
    "ents, message",
    [
        ([Entity(0, 30, "X")], "out of range"),
        ([Entity(-1, 3, "X")], "out of range"),
        ([Entity(4, 4, "X")], "out of range"),
        ([Entity(5, 3, "X")], "out of range"),
        ([Entity(0, 3, "X"), Entity(0, 3, "X")], "twice"),
        ([Entity(0, 8, "X"), Entity(4, 12, "Y")], "overlap without one containing the other"),
        ([Entity(0, 3, "")], "empty label"),
    ],
)
def test_validate_errors(ents, message):
    with pytest.raises(InputError, match=message) as info:
        validate_entities("new york university", ents, path="d.jsonl", line=7)
    assert "d.jsonl:7" in str(info.value)


def test_parse_example_checks_surface_and_types():
    ok = parse_example(
        {"text": "alice met bob", "entities": [{"start": 0, "end": 5, "label": "PER", "text": "alice"}]},
        path="f",
        line=1,
    )
    assert ok.entities == [Entity(0, 5, "PER")] and ok.line == 1
    with pytest.raises(InputError, match="offsets are off"):
        parse_example(
            {"text": "alice met bob", "entities": [{"start": 1, "end": 6, "label": "PER", "text": "alice"}]},
            path="f",
            line=3,
        )
    with pytest.raises(InputError, match="f:2: field 'entities'"):
        parse_example({"text": "abc", "entities": [{"start": "0", "end": 1, "label": "X"}]}, path="f", line=2)
    with pytest.raises(InputError, match="'start', 'end' and 'label'"):
        parse_example({"text": "abc", "entities": [{"start": 0, "end": 1}]}, path="f", line=2)
    with pytest.raises(InputError, match="field 'text'"):
        parse_example({"entities": []}, path="f", line=2)
    with pytest.raises(InputError, match="missing 'entities'"):
        parse_example({"text": "abc"}, path="f", line=2)
    assert parse_example({"text": "abc"}, path="f", line=2, require_entities=False).entities == []


def test_read_ner_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "gold.jsonl"
    p.write_text(
        '{"text": "alice", "entities": [{"start": 0, "end": 5, "label": "PER"}]}\n\n{"text": "bob", "entities": [\n',
        encoding="utf-8",
    )
    with pytest.raises(InputError, match=r"gold.jsonl:3: invalid JSON"):
        read_ner_jsonl(str(p))
    p.write_text('{"text": "alice", "entities": [{"start": 0, "end": 9, "label": "PER"}]}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"gold.jsonl:1: field 'entities': entity \[0, 9\)"):
        read_ner_jsonl(str(p))


# --- alignment ----------------------------------------------------------------------------------------------------


def test_offsets_subwords_unicode_and_spaces(wp_tokenizer):
    # extra spaces, a sub-word split (washington ##ian), an accented letter (Café → cafe) and CJK characters
    text = "Alice  met Bob in   Washingtonian Café, 東京."
    assert ("##ian", "ian") in _tokens(wp_tokenizer, text)
    ents = [
        Entity(0, 5, "PER"),  # Alice
        Entity(11, 14, "PER"),  # Bob
        Entity(20, 33, "MISC"),  # Washingtonian (two tokens)
        Entity(34, 38, "LOC"),  # Café (accent stripped by the tokenizer, offsets still on the original)
        Entity(40, 42, "LOC"),  # 東京 (one token per character)
    ]
    for e, surface in zip(ents, ["Alice", "Bob", "Washingtonian", "Café", "東京"], strict=True):
        assert text[e.start : e.end] == surface
    ex = NerExample(text, validate_entities(text, ents), line=1)
    label2id = {"LOC": 0, "MISC": 1, "PER": 2}
    windows, stats = encode_windows(wp_tokenizer, [ex], max_length=64, stride=8, label2id=label2id)
    assert len(windows) == 1 and stats.misaligned == 0 and stats.unrepresentable == 0
    w = windows[0]
    got = sorted((t, text[w.offsets[i][0] : w.offsets[j][1]]) for t, i, j in w.spans)
    assert got == sorted([(2, "Alice"), (2, "Bob"), (1, "Washingtonian"), (0, "Café"), (0, "東京")])
    assert w.offsets[0] is None and w.offsets[-1] is None  # [CLS] and [SEP]


def test_boundary_inside_token_is_counted_not_shifted(wp_tokenizer):
    text = "washingtonian met zoe"
    # "washington" ends on the token boundary washington|##ian (fine); "ashington" starts inside the token
    # "washington" and " met" starts on a space: both are counted and left out, not moved to a nearby token
    ents = [Entity(0, 10, "A"), Entity(1, 10, "B"), Entity(13, 17, "C")]
    ex = NerExample(text, validate_entities(text, ents), line=4)
    windows, stats = encode_windows(wp_tokenizer, [ex], max_length=32, stride=4, label2id={"A": 0, "B": 1, "C": 2})
    assert stats.entities == 3 and stats.misaligned == 2
    assert [t for t, _, _ in windows[0].spans] == [0]
    assert {x[1] for x in stats.examples} == {"ashington", " met"}
    assert all(x[0] == 4 for x in stats.examples)


def test_unknown_label_in_alignment(wp_tokenizer):
    ex = NerExample("alice", [Entity(0, 5, "PER")], line=9)
    with pytest.raises(InputError, match="line 9.*'PER' is not one of the model's labels"):
        encode_windows(wp_tokenizer, [ex], max_length=16, stride=2, label2id={"LOC": 0})


def test_unk_rate(wp_tokenizer):
    _, stats = encode_windows(wp_tokenizer, ["alice 北海道 met bob"], max_length=32, stride=4)
    # 北 海 道 are three unknown characters among 6 tokens
    assert stats.unk_tokens == 3 and stats.content_tokens == 6
    assert stats.unk_rate == pytest.approx(0.5)


def test_sliding_windows(wp_tokenizer):
    # 14 content tokens, windows of 6 text tokens (max length 8) overlapping by 2
    text = "alice met bob in new york , alice met bob at new york ."
    words = text.split(" ")
    starts = [sum(len(w) + 1 for w in words[:k]) for k in range(len(words))]

    def span(a, b, label):  # words a..b inclusive
        return Entity(starts[a], starts[b] + len(words[b]), label)

    ents = [span(4, 5, "LOC"), span(11, 12, "LOC"), span(0, 12, "LONG"), span(2, 2, "PER")]
    ex = NerExample(text, validate_entities(text, ents), line=1)
    label2id = {"LOC": 0, "LONG": 1, "PER": 2}
    windows, stats = encode_windows(wp_tokenizer, [ex], max_length=8, stride=2, label2id=label2id)
    assert stats.split_texts == 1 and stats.windows == len(windows) == 3
    assert [w.at_text_start for w in windows] == [True, False, False]
    assert [w.at_text_end for w in windows] == [False, False, True]
    assert all(len(w) <= 8 for w in windows)
    # consecutive windows share exactly `stride` text tokens
    firsts = [[o for o in w.offsets if o is not None] for w in windows]
    assert firsts[0][-2:] == firsts[1][:2] and firsts[1][-2:] == firsts[2][:2]
    assert stats.unrepresentable == 1  # the 13-word LONG entity fits in no window
    # (type, first token, last token, window): the first "new york" lies in windows 0 and 1, the second in window 2
    found = [
        (t, text[w.offsets[i][0] : w.offsets[j][1]], starts_of(w, i), k)
        for k, w in enumerate(windows)
        for t, i, j in w.spans
    ]
    assert sorted(found) == [(0, "new york", 17, 0), (0, "new york", 17, 1), (0, "new york", 45, 2), (2, "bob", 10, 0)]


def starts_of(window, i):
    return window.offsets[i][0]


def test_stride_and_length_checks(wp_tokenizer):
    with pytest.raises(NlptoolError, match="stride 6 must be smaller"):
        encode_windows(wp_tokenizer, ["alice"], max_length=8, stride=6)
    with pytest.raises(NlptoolError, match="max length 3"):
        encode_windows(wp_tokenizer, ["alice"], max_length=3, stride=0)


def test_collate_builds_labels_per_batch(wp_tokenizer):
    exs = [
        NerExample("alice met bob", [Entity(0, 5, "PER"), Entity(10, 13, "PER")]),
        NerExample("new york", [Entity(0, 8, "LOC"), Entity(0, 3, "X")]),
    ]
    label2id = {"LOC": 0, "PER": 1, "X": 2}
    windows, _ = encode_windows(wp_tokenizer, exs, max_length=16, stride=2, label2id=label2id)
    batch = collate_windows(windows, 3, pad_id=0)
    assert batch["input_ids"].shape == (2, 5) and batch["labels"].shape == (2, 3, 5, 5)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert batch["input_ids"][1, 4].item() == 0
    pos = {tuple(x) for x in batch["labels"].nonzero().tolist()}
    assert pos == {(0, 1, 1, 1), (0, 1, 3, 3), (1, 0, 1, 2), (1, 2, 1, 1)}
    assert "labels" not in collate_windows(windows, 3, pad_id=0, with_labels=False)


def test_label_set_and_resolve_overlaps():
    assert label_set([NerExample("ab", [Entity(0, 1, "b"), Entity(1, 2, "a")])]) == ["a", "b"]
    ents = [
        {"start": 0, "end": 8, "label": "ORG", "score": 1.0},
        {"start": 0, "end": 3, "label": "LOC", "score": 3.0},
        {"start": 4, "end": 8, "label": "LOC", "score": 0.5},
        {"start": 9, "end": 12, "label": "PER", "score": 0.1},
    ]
    assert [(e["start"], e["end"]) for e in resolve_overlaps(ents)] == [(0, 3), (4, 8), (9, 12)]


# --- model save / load --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["egp", "gp"])
def test_model_save_load_roundtrip(tmp_path, tiny_bert_no_heads_dir, head):
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_bert_no_heads_dir)
    model = SpanNerModel(
        AutoModel.from_pretrained(tiny_bert_no_heads_dir), ["A", "B"], head=head, head_size=8, max_length=32
    )
    model.eval()
    model.save(tmp_path / "m", tok, {"base_model": "tiny"})
    cfg = json.loads((tmp_path / "m" / "ner_config.json").read_text())
    assert cfg["labels"] == ["A", "B"] and cfg["head"] == head and cfg["max_length"] == 32 and cfg["stride"] == 8
    loaded, tok2, _ = SpanNerModel.load(tmp_path / "m")
    ids = torch.tensor([tok("w1 w2 a b")["input_ids"]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        assert torch.equal(model(ids, mask), loaded(ids, mask))
    assert tok2("w1 w2")["input_ids"] == tok("w1 w2")["input_ids"]


def test_model_load_errors(tmp_path):
    with pytest.raises(NlptoolError, match="is not a model folder .* so it is not an NER model folder"):
        SpanNerModel.load(tmp_path)
    with pytest.raises(NlptoolError, match="does not exist"):
        SpanNerModel.load(tmp_path / "gone")
    (tmp_path / "ner_config.json").write_text("{bad", encoding="utf-8")
    with pytest.raises(NlptoolError, match=r"ner_config.json is damaged \(invalid JSON"):
        SpanNerModel.load(tmp_path)


def test_train_lr_scale_splits_groups():
    """TrainConfig.lr_scale (ner train --head-lr-scale): the head's parameters get lr × factor, the rest lr."""
    from nlptool.core.train import _scale_lr, weight_decay_groups

    model = torch.nn.ModuleDict({"encoder": torch.nn.Linear(3, 3), "head": torch.nn.Linear(3, 2)})
    groups = _scale_lr(weight_decay_groups(model, 0.01), model, 1e-4, {"head.": 10.0})
    by_lr = {}
    for g in groups:
        for p in g["params"]:
            by_lr.setdefault(g["lr"], set()).add(id(p))
    assert by_lr[1e-4] == {id(model["encoder"].weight), id(model["encoder"].bias)}
    assert by_lr[1e-4 * 10.0] == {id(model["head"].weight), id(model["head"].bias)}
    assert {g["weight_decay"] for g in groups if any(p is model["head"].bias for p in g["params"])} == {0.0}


# --------------------------------------------------------------------------------------------------------------------
# The task layer: NerTask, TokenEncoder, AlignmentStats.merge


@pytest.fixture
def ner_task(tiny_bert_no_heads_dir):
    from nlptool.core.ner import NerTask, TokenEncoder

    torch.manual_seed(0)
    encoder = TokenEncoder.load(tiny_bert_no_heads_dir)
    encoder.eval()  # no dropout: the loss is compared with a second forward pass
    return encoder, NerTask(encoder, ["LOC", "PER"], head_size=8, max_length=16, stride=4)


def test_ner_task_is_a_task_and_collates_windows(ner_task):
    from nlptool.core.tasks import Task

    encoder, task = ner_task
    assert isinstance(task, Task) and task.name == "ner" and task.metric == "f1" and task.greater_is_better
    assert task.head_parameters() == list(task.head.parameters()) and task.head_parameters()
    examples = [
        NerExample("w1 w2 w3", [Entity(3, 5, "PER")]),
        NerExample("w4 a", [Entity(0, 2, "LOC"), Entity(0, 4, "PER")]),
    ]
    windows, stats = task.windows(examples)
    assert len(windows) == 2 and stats.entities == 3 and stats.dropped == 0
    batch = task.collate(windows)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, 5)  # [CLS] w1 w2 w3 [SEP]
    assert batch["labels"].shape == (2, 2, 5, 5) and batch["labels"].dtype == torch.uint8
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 1, 0]
    assert {tuple(x) for x in batch["labels"].nonzero().tolist()} == {(0, 1, 2, 2), (1, 0, 1, 1), (1, 1, 1, 2)}
    assert task.lengths(windows) == [5, 4]


def test_ner_task_loss_is_multilabel_categorical_crossentropy_of_the_head(ner_task):
    """The loss equals Su's MCCE, per (window, type) over the spans i <= j, of the head on the encoder's token states,
    with the gold spans set by hand."""
    from nlptool.core.globalpointer import multilabel_categorical_crossentropy

    encoder, task = ner_task
    windows, _ = task.windows([NerExample("w1 w2 w3"), NerExample("w4 a")])
    windows[0].spans = [(1, 2, 3)]  # PER = tokens 2..3 ("w2 w3")
    windows[1].spans = [(0, 1, 1), (1, 1, 2)]  # LOC "w4", PER "w4 a"
    batch = task.collate(windows)
    loss = task.loss(encoder, batch)
    with torch.no_grad():
        hidden = encoder.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        logits = task.head(hidden, batch["attention_mask"])
    expected = []
    for b, gold in enumerate([{(1, 2, 3)}, {(0, 1, 1), (1, 1, 2)}]):
        for t in range(2):
            cells = [(i, j) for i in range(5) for j in range(i, 5)]
            y_true = torch.tensor([[float((t, i, j) in gold) for i, j in cells]])
            y_pred = torch.stack([logits[b, t, i, j] for i, j in cells]).unsqueeze(0)
            expected.append(multilabel_categorical_crossentropy(y_true, y_pred)[0])
    assert loss.requires_grad
    assert loss.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-6, abs=1e-6)


def test_ner_task_save_and_evaluate(ner_task, tmp_path):
    """save() writes the head and ner_config.json; with the encoder's save() the folder loads as a SpanNerModel that
    scores as task.model(encoder) does, and evaluate() is evaluate_examples' micro P/R/F1."""
    from nlptool.core.ner import SpanNerModel, evaluate_examples

    encoder, task = ner_task
    task.max_span_tokens = 3
    encoder.save(tmp_path)
    task.save(tmp_path)
    cfg = json.loads((tmp_path / "ner_config.json").read_text())
    assert cfg["labels"] == ["LOC", "PER"] and cfg["max_span_tokens"] == 3 and cfg["base_model"] == encoder.name
    loaded, tok, _ = SpanNerModel.load(tmp_path)
    ids = torch.tensor([tok("w1 w2 a")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(loaded(ids, torch.ones_like(ids)), task.model(encoder)(ids, torch.ones_like(ids)))
    dev = [NerExample("w1 w2 w3", [Entity(3, 5, "PER")])]
    micro = evaluate_examples(task.model(encoder), task.tokenizer, dev, max_span_tokens=3)["metrics"]["micro"]
    assert task.evaluate(encoder, dev) == {k: micro[k] for k in ("f1", "precision", "recall")}


def test_ner_task_argument_errors(ner_task):
    from nlptool.core.ner import NerTask

    encoder, _ = ner_task
    with pytest.raises(NlptoolError, match="unknown head 'crf'"):
        NerTask(encoder, ["A"], head="crf")
    with pytest.raises(NlptoolError, match="no entity labels"):
        NerTask(encoder, [])
    with pytest.raises(NlptoolError, match="must be even"):
        NerTask(encoder, ["A"], head_size=7)


def test_alignment_stats_merge_adds_counts_and_keeps_five_samples():
    from nlptool.core.ner import AlignmentStats

    total = AlignmentStats(texts=1, windows=2, entities=3, misaligned=1, examples=[(1, "a", "boundary")] * 4)
    other = AlignmentStats(texts=2, windows=2, split_texts=1, unrepresentable=2, content_tokens=9, unk_tokens=1)
    other.examples = [(7, "b", "longer than a window")] * 3
    assert total.merge(other) is total
    assert (total.texts, total.windows, total.split_texts, total.entities) == (3, 4, 1, 3)
    assert (total.misaligned, total.unrepresentable, total.content_tokens, total.unk_tokens) == (1, 2, 9, 1)
    assert total.examples == [(1, "a", "boundary")] * 4 + [(7, "b", "longer than a window")]


def test_task_model_loads_a_checkpoint_of_the_span_ner_model(ner_task):
    """Checkpoints written before the task layer (a SpanNerModel: ``encoder.*``, ``head.*``) load into the TaskModel
    that ner train now checkpoints (``encoder.model.*``), so --resume continues them."""
    import copy

    from nlptool.core.tasks import TaskModel

    encoder, task = ner_task
    old = SpanNerModel(copy.deepcopy(encoder.model), task.labels, head_size=8, max_length=16)
    with torch.no_grad():
        for p in old.parameters():
            p.normal_()
    model = TaskModel(encoder, task)
    state = {k: v.clone() for k, v in old.state_dict().items()}
    assert any(k.startswith("encoder.embeddings.") for k in state)
    model.load_state_dict(state)  # strict
    assert all(
        torch.equal(model.state_dict()["encoder.model." + k[8:]], v) for k, v in state.items() if k[:8] == "encoder."
    )
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items() if k.startswith("head."))
