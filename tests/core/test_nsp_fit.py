"""nlptool.core.nsp's training pieces: nsp_data, set_trainable, NspTask (the Task interface) and fit, on the tiny BERT;
and that fit from Python gives the weights ``nsp-adapt`` gives with the same seed."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from nlptool.core.errors import NlptoolError
from nlptool.core.nsp import (
    IS_NEXT,
    NspData,
    NspTask,
    fit,
    load_nsp_model,
    nsp_data,
    parse_train_layers,
    read_corpus,
    set_trainable,
)


def _docs(n: int = 24, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    return [
        [" ".join(f"w{10 * (i % 3) + rng.randrange(3)}" for _ in range(3)) + "." for _ in range(4)] for i in range(n)
    ]


def test_nsp_data_splits_documents_and_pairs():
    data = nsp_data(_docs(), eval_fraction=0.25, seed=3, max_pairs=30)
    assert isinstance(data, NspData)
    assert (data.documents, data.sentences, len(data.train_docs), len(data.eval_docs)) == (24, 96, 18, 6)
    assert len(data.pairs) == 30 and len(data.eval_pairs) == 6 * 3
    assert nsp_data(_docs(), eval_fraction=0.25, seed=3, max_pairs=30) == data  # seeded
    assert nsp_data(_docs(), eval_fraction=0, seed=3).eval_pairs == []
    with pytest.raises(NlptoolError, match="no documents"):
        nsp_data([])


def test_parse_and_set_trainable(tiny_bert_dir):
    assert parse_train_layers("all") is None and parse_train_layers(" 2 ") == 2 and parse_train_layers(0) == 0
    for bad, match in (("x", "neither 'all' nor"), ("-1", ">= 0")):
        with pytest.raises(NlptoolError, match=match):
            parse_train_layers(bad)
    model, _, _ = load_nsp_model(str(tiny_bert_dir), seed=0)
    total = sum(p.numel() for p in model.parameters())
    head = set_trainable(model, 0)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(n.startswith(("bert.pooler", "cls.")) for n in names)
    one = set_trainable(model, 1)
    assert head < one < total and any(
        n.startswith("bert.encoder.layer.1.") for n, p in model.named_parameters() if p.requires_grad
    )
    assert set_trainable(model, "all") == total  # everything again, after a freeze
    with pytest.raises(NlptoolError, match="only 2 layers"):
        set_trainable(model, 3)


def test_nsp_task_is_a_task(tiny_bert_dir, tmp_path):
    import torch

    from nlptool.core.tasks import Task

    model, tokenizer, _ = load_nsp_model(str(tiny_bert_dir), seed=0)
    task = NspTask(model, tokenizer, max_length=12)
    assert isinstance(task, Task) and task.metric == "nsp_accuracy" and task.head_parameters() == []
    data = nsp_data(_docs(8), eval_fraction=0.25)
    examples = task.examples(data.pairs[:5])
    assert task.lengths(examples) == [len(e[0]) for e in examples] and max(task.lengths(examples)) <= 12
    batch = task.collate(examples)
    width = max(task.lengths(examples))
    assert batch["input_ids"].shape == (5, width) and batch["attention_mask"].sum().item() == sum(
        task.lengths(examples)
    )
    assert batch["labels"].tolist() == [p.label for p in data.pairs[:5]]
    model.eval()
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        want = torch.nn.functional.cross_entropy(logits, batch["labels"])  # the NSP loss, by hand
        assert task.loss(model, batch).item() == pytest.approx(want.item(), abs=1e-6)
    acc = task.evaluate(model, data.eval_pairs)["nsp_accuracy"]
    probs = task._scorer(model).score_pairs(
        [p.a for p in data.eval_pairs], [p.b for p in data.eval_pairs], shorten="longest"
    )
    assert acc == np.mean([(q > 0.5) == (p.label == IS_NEXT) for q, p in zip(probs, data.eval_pairs, strict=True)])
    assert task.evaluate(model, []) == {}
    task.save(tmp_path)
    assert (tmp_path / "tokenizer_config.json").is_file()


def test_fit_without_out_dir_writes_nothing(tiny_bert_dir, tmp_path, monkeypatch):
    from nlptool.core.train import TrainConfig

    monkeypatch.chdir(tmp_path)
    model, tokenizer, _ = load_nsp_model(str(tiny_bert_dir), seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    events = []
    data = nsp_data(_docs(12), eval_fraction=0.25, seed=0)
    config = TrainConfig(epochs=1, batch_size=8, lr=1e-3, device="cpu")
    result = fit(model, tokenizer, data, train_layers=0, max_length=16, config=config, on_progress=events.append)
    assert list(tmp_path.iterdir()) == [] and result.model_dir is None and result.main
    assert events[0]["event"] == "before" and result.before == events[0]["metrics"]
    assert (
        result.metrics["nsp_accuracy"] == result.after["nsp_accuracy"] and result.metrics["steps"] == 4
    )  # 27 pairs, batch 8
    changed = {k for k, v in model.state_dict().items() if not (v == before[k]).all()}
    assert changed and all(k.startswith(("bert.pooler", "cls.")) for k in changed)


def test_fit_from_python_matches_the_cli(invoke, tiny_bert_no_heads_dir, tmp_path):
    """The same seed and options give the same weights and metrics from Python as from nsp-adapt (a bare BERT: the
    NSP head is initialised from the seed)."""
    from safetensors.torch import load_file

    from nlptool.core.train import TrainConfig

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join("\n".join(doc) for doc in _docs(30, seed=4)) + "\n", encoding="utf-8")
    r = invoke(
        "nsp-adapt", "--corpus", corpus, "--model", tiny_bert_no_heads_dir, "--out", tmp_path / "cli", "--seed", "3",
        "--train-layers", "1", "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--max-length", "20",
        "--max-pairs", "50", "--eval-fraction", "0.2",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    data = nsp_data(read_corpus(corpus), eval_fraction=0.2, seed=3, max_pairs=50)
    model, tokenizer, _ = load_nsp_model(str(tiny_bert_no_heads_dir), seed=3)
    config = TrainConfig(epochs=2, batch_size=8, lr=1e-3, warmup_ratio=0.1, group_by_length=True, seed=3)
    result = fit(model, tokenizer, data, tmp_path / "py", train_layers=1, max_length=20, config=config)
    assert result.model_dir == tmp_path / "py" and (result.model_dir / "tokenizer_config.json").is_file()
    a, b = load_file(tmp_path / "cli" / "model.safetensors"), load_file(tmp_path / "py" / "model.safetensors")
    assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    cli = json.loads((tmp_path / "cli" / "metrics.json").read_text())["metrics"]
    timing = {"train_seconds", "wall_seconds", "pairs_per_s"}
    assert {k: v for k, v in cli.items() if k not in timing} == {
        k: v for k, v in result.metrics.items() if k not in timing
    }
