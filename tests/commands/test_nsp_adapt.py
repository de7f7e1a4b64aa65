"""CLI tests for ``nlptool nsp-adapt``: it trains an NSP head on a synthetic corpus where continuation is learnable
(every document keeps to one topic's words), the result is a checkpoint ``zero-shot --method nsp`` accepts and that
classifies by topic, and bad input is refused."""

from __future__ import annotations

import json
import random

import pytest

from tests.conftest import jsonl, run_nlptool, tiny_bert_config

TOPICS = 4


def _sentence(k: int, rng: random.Random) -> str:
    """Three or four of topic k's two words (w{10k}, w{10k+1})."""
    return " ".join(f"w{10 * k + rng.randrange(2)}" for _ in range(rng.randint(3, 4))) + "."


@pytest.fixture(scope="module")
def topic_corpus(tmp_path_factory):
    """96 documents of 6 sentences; a document keeps to its topic's words (topic k: w{10k}, w{10k+1})."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    docs = []
    for i in range(96):
        k = i % TOPICS
        docs.append("\n".join(_sentence(k, rng) for _ in range(6)))
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def seeded_bare_bert(tmp_path_factory, tiny_bert_dir):
    """A tiny bare BertModel (no pooler, no NSP head) with a seeded initialisation, so the training run below does not
    depend on the random weights of the session's other fixtures."""
    import torch
    from transformers import BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("bare-seeded")
    tok = BertTokenizerFast.from_pretrained(tiny_bert_dir)
    tok.save_pretrained(path)
    torch.manual_seed(0)
    config = tiny_bert_config(tok.vocab_size)
    BertModel(config, add_pooling_layer=False).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def adapted(tmp_path_factory, topic_corpus, seeded_bare_bert):
    """nsp-adapt on the bare tiny BERT (no pooler, no NSP head), run through the CLI."""
    from typer.testing import CliRunner

    from nlptool.cli import app

    out = tmp_path_factory.mktemp("adapted") / "model"
    args = [
        "nsp-adapt", "--corpus", str(topic_corpus), "--model", str(seeded_bare_bert), "--out", str(out),
        "--train-layers", "all", "--epochs", "20", "--lr", "3e-3", "--batch-size", "32", "--eval-fraction", "0.1",
        "--warmup", "0.05",
    ]  # fmt: skip
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from threads, and loses a lot on a busy machine
    try:
        result = CliRunner().invoke(app, args)
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.stderr
    return out, result


def test_adapt_learns_and_saves_a_checkpoint(adapted):
    out, result = adapted
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["documents"] == 96 and metrics["eval_documents"] == 10
    assert metrics["train_pairs"] == 86 * 5 and metrics["eval_pairs"] == 10 * 5
    # a NotNext sentence from another document of the same topic cannot be told apart: about 0.875 at best
    assert metrics["nsp_accuracy"] > 0.8 > metrics["nsp_accuracy_before"]
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForNextSentencePrediction"]
    assert (out / "tokenizer.json").is_file() or (out / "vocab.txt").is_file()
    assert (out / "training" / "train_log.jsonl").is_file() and not (out / "training" / "checkpoint-last").exists()
    assert "held-out NSP accuracy" in result.stderr


def test_adapted_model_works_for_zero_shot(invoke, adapted, tmp_path):
    out, _ = adapted
    rng = random.Random(5)
    f = tmp_path / "texts.jsonl"
    gold = [rng.randrange(TOPICS) for _ in range(60)]
    f.write_text("".join(json.dumps({"text": _sentence(k, rng), "label": f"t{k}"}) + "\n" for k in gold))
    labels = tmp_path / "labels.yaml"
    labels.write_text("".join(f"t{k}: {{prompt: 'w{10 * k} w{10 * k + 1} w{10 * k}.'}}\n" for k in range(TOPICS)))
    metrics = tmp_path / "m.json"
    r = invoke(
        "zero-shot", f, "--labels-file", labels, "--model", out, "--label-col", "label", "--metrics-out", metrics
    )
    assert r.exit_code == 0, r.stderr
    assert len(jsonl(r.stdout)) == 60
    assert json.loads(metrics.read_text())["metrics"]["accuracy"] > 0.7  # chance: 0.25


def test_head_only_training_leaves_the_encoder(invoke, topic_corpus, tiny_bert_dir, tmp_path):
    import torch
    from transformers import BertForNextSentencePrediction

    out = tmp_path / "head-only"
    r = invoke(
        "nsp-adapt", "--corpus", topic_corpus, "--model", tiny_bert_dir, "--out", out, "--train-layers", "0",
        "--max-pairs", "64", "--lr", "1e-2",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    before = BertForNextSentencePrediction.from_pretrained(tiny_bert_dir).state_dict()
    after = BertForNextSentencePrediction.from_pretrained(out).state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("bert.pooler", "cls.seq_relationship")) for k in changed)
    assert json.loads((out / "metrics.json").read_text())["metrics"]["train_pairs"] == 64


def test_jsonl_corpus(invoke, tiny_bert_dir, tmp_path):
    rng = random.Random(1)
    f = tmp_path / "c.jsonl"
    f.write_text(
        "".join(json.dumps({"body": "\n".join(_sentence(i % 4, rng) for _ in range(3))}) + "\n" for i in range(8))
    )
    out = tmp_path / "m"
    r = invoke(
        "nsp-adapt", "--corpus", f, "--text-field", "body", "--model", tiny_bert_dir, "--out", out,
        "--eval-fraction", "0.25", "--train-layers", "0",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    m = json.loads((out / "metrics.json").read_text())["metrics"]
    assert m["documents"] == 8 and m["sentences"] == 24 and m["train_pairs"] == 6 * 2


@pytest.mark.parametrize(
    ("corpus", "extra", "code", "match"),
    [
        ("One doc. Only this one.\nStill it.\n", [], 1, "fewer than 2"),
        ("a.\n\nb.\n\nc.\n\nd.\n\ne.\n", ["--eval-fraction", "0"], 1, "no document has two sentences"),
        (None, [], 1, "does not exist"),
        ("w1. w2.\n\nw3. w4.\n", ["--train-layers", "x"], 2, "neither 'all' nor"),
        ("w1.\nw2.\n\nw3.\nw4.\n", ["--train-layers", "9", "--eval-fraction", "0"], 1, "only 2 layers"),
    ],
)
def test_bad_input(invoke, tiny_bert_dir, tmp_path, corpus, extra, code, match):
    f = tmp_path / "corpus.txt"
    if corpus is not None:
        f.write_text(corpus)
    out = tmp_path / "out"
    r = invoke("nsp-adapt", "--corpus", f, "--model", tiny_bert_dir, "--out", out, *extra)
    assert r.exit_code == code, r.stderr
    assert match in r.stderr
    if code == 1:
        assert not (out / "config.json").exists()


def test_non_empty_out_needs_force(invoke, tiny_bert_dir, topic_corpus, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    r = invoke("nsp-adapt", "--corpus", topic_corpus, "--model", tiny_bert_dir, "--out", out)
    assert r.exit_code == 1 and "--force" in r.stderr


@pytest.mark.slow
def test_torchrun_two_processes_match_one(topic_corpus, tiny_bert_dir, tmp_path):
    """nsp-adapt under torchrun --nproc_per_node 2 (gloo, CPU) follows the single-process run: same weights; only
    rank 0 writes (one model folder, one metrics file, the resume state removed)."""

    from safetensors.torch import load_file
    from transformers import BertConfig, BertForPreTraining, BertTokenizerFast

    nodrop = tmp_path / "nodrop"
    config = BertConfig.from_pretrained(tiny_bert_dir)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    BertForPreTraining.from_pretrained(tiny_bert_dir, config=config).save_pretrained(nodrop)
    BertTokenizerFast.from_pretrained(tiny_bert_dir).save_pretrained(nodrop)
    common = ["-q", "nsp-adapt", "--corpus", str(topic_corpus), "--model", str(nodrop), "--train-layers", "all"]
    common += ["--max-pairs", "61", "--batch-size", "8", "--epochs", "2", "--lr", "1e-3", "--max-length", "24"]
    common += ["--eval-fraction", "0.1", "--device", "cpu"]  # 61 pairs, batch 8: the last batch (5) splits 3/2
    single = run_nlptool([*common, "--out", tmp_path / "one"])
    assert single.returncode == 0, single.stderr
    multi = run_nlptool([*common, "--out", str(tmp_path / "two"), "--metrics-out", str(tmp_path / "two.json")], nproc=2)
    assert multi.returncode == 0, multi.stderr[-3000:]
    a = load_file(tmp_path / "one" / "model.safetensors")
    b = load_file(tmp_path / "two" / "model.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())["metrics"]
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())["metrics"]
    assert two == json.loads((tmp_path / "two.json").read_text())["metrics"]
    for key in ("train_pairs", "eval_pairs", "steps", "nsp_accuracy_before", "nsp_accuracy"):
        assert two[key] == one[key], key
    assert not (tmp_path / "two" / "training" / "checkpoint-last").exists()
