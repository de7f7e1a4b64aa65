import json
import random

import numpy as np
import pytest

from nlptool.core.encoder import SentenceEncoder
from nlptool.core.models import default_model_path
from tests.conftest import SAMPLE_DATA


def make_pairs(path, n=24, seed=0, kind="score", max_overlap=4):
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(40)]
    lines = []
    for _ in range(n):
        a = rng.sample(words, 4)
        overlap = rng.randint(0, max_overlap)
        b = a[:overlap] + rng.sample([w for w in words if w not in a], 4 - overlap)
        if kind == "score":
            label = f"{overlap * 1.25:.2f}"
        elif kind == "binary":
            label = str(int(overlap >= 2))
        else:
            label = ["contradiction", "neutral", "entailment"][min(overlap, 2)]
        lines.append(f"{' '.join(a)}\t{' '.join(b)}\t{label}\n")
    header = "s1\ts2\tlabel\n" if kind == "nli" else ""
    path.write_text(header + "".join(lines), encoding="utf-8")
    return path


@pytest.fixture
def pairs(tmp_path):
    return make_pairs(tmp_path / "train.tsv"), make_pairs(tmp_path / "dev.tsv", n=12, seed=1)


def train_args(model, train, out, *extra):
    return (
        "train-cosent",
        "--model",
        model,
        "--train",
        train,
        "--out",
        out,
        "--batch-size",
        "8",
        "--lr",
        "1e-3",
        "--max-length",
        "16",
        *extra,
    )


def test_trains_saves_and_loads_three_ways(invoke, tiny_bert_dir, pairs, tmp_path):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    train, dev = pairs
    out = tmp_path / "model"
    r = invoke(*train_args(tiny_bert_dir, train, out, "--dev", dev, "--epochs", "2"))
    assert r.exit_code == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["steps"] == 6 and metrics["train_pairs"] == 24 and -1 <= metrics["dev_spearman"] <= 1
    log = [json.loads(line) for line in (out / "training" / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if e["event"] == "eval"] == [3, 6]
    assert not (out / "training" / "checkpoint-last").exists()

    texts = ["w1 w2 w3", "w4 w5", "w6"]
    ours = SentenceEncoder.load(str(out)).encode(texts)
    tok = AutoTokenizer.from_pretrained(out)
    hf = AutoModel.from_pretrained(out)
    feats = tok(texts, padding=True, return_tensors="pt")
    import torch

    with torch.no_grad():
        hidden = hf(**feats).last_hidden_state
    mask = feats["attention_mask"].unsqueeze(-1).float()
    by_hand = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    st = SentenceTransformer(str(out)).encode(texts)
    assert np.abs(ours - by_hand).max() < 1e-5 and np.abs(ours - st).max() < 1e-5
    # training changed the weights
    base = SentenceEncoder.load(str(tiny_bert_dir)).encode(texts)
    assert np.abs(base - ours).max() > 1e-4


def test_same_seed_same_model(invoke, tiny_bert_dir, pairs, tmp_path):
    train, _ = pairs
    embs = []
    for name in ("a", "b"):
        r = invoke(*train_args(tiny_bert_dir, train, tmp_path / name, "--seed", "3"))
        assert r.exit_code == 0, r.stderr
        embs.append(SentenceEncoder.load(str(tmp_path / name)).encode(["w1 w2", "w3"]))
    assert np.array_equal(embs[0], embs[1])


@pytest.mark.parametrize(
    ("loss", "kind"),
    [("softmax", "binary"), ("softmax", "nli"), ("cosine-mse", "score"), ("cosent", "nli"), ("cosent", "binary")],
)
def test_losses_and_label_types(invoke, tiny_bert_dir, tmp_path, loss, kind):
    train = make_pairs(tmp_path / f"train.{'tsv'}", kind=kind)
    r = invoke(*train_args(tiny_bert_dir, train, tmp_path / "m", "--loss", loss))
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["metrics"]["label_type"] == kind


def test_softmax_on_scores_is_an_error(invoke, tiny_bert_dir, pairs, tmp_path):
    train, _ = pairs
    r = invoke(*train_args(tiny_bert_dir, train, tmp_path / "m", "--loss", "softmax"))
    assert r.exit_code == 1 and "softmax" in r.stderr and not (tmp_path / "m").exists()


def test_bad_rows_leave_no_folder(invoke, tiny_bert_dir, tmp_path):
    train = tmp_path / "bad.csv"
    train.write_text("w1 w2,w3,4.0\nw1,,2.0\n", encoding="utf-8")
    r = invoke(*train_args(tiny_bert_dir, train, tmp_path / "m"))
    assert r.exit_code == 1
    assert r.stderr.strip() == f"Error: {train}:2: field '1': empty text; remove the row or fill it in"
    assert not (tmp_path / "m").exists()


def test_output_folder_rules(invoke, tiny_bert_dir, pairs, tmp_path):
    train, _ = pairs
    out = tmp_path / "m"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    r = invoke(*train_args(tiny_bert_dir, train, out))
    assert r.exit_code == 1 and "--force" in r.stderr
    r = invoke(*train_args(tiny_bert_dir, train, tmp_path / "fresh", "--resume"))
    assert r.exit_code == 1 and "nothing to resume" in r.stderr
    r = invoke(*train_args(tiny_bert_dir, train, out, "--force"))
    assert r.exit_code == 0 and (out / "mine.txt").read_text() == "keep" and (out / "config.json").exists()


@pytest.mark.slow
@pytest.mark.skipif(default_model_path() is None, reason="default model package not installed")
def test_default_model_on_sample_data(invoke, tmp_path):
    """The README's job: the bundled MiniLM trained on the STS-B sample; it must stay a good STS model."""
    out = tmp_path / "minilm-cosent"
    r = invoke(
        "train-cosent",
        "--train",
        SAMPLE_DATA / "stsb_train_sample.csv",
        "--dev",
        SAMPLE_DATA / "stsb_dev_sample.csv",
        "--out",
        out,
    )
    assert r.exit_code == 0, r.stderr
    m = json.loads((out / "metrics.json").read_text())["metrics"]
    assert m["dev_spearman_before"] > 0.85 and m["dev_spearman"] > 0.85


@pytest.fixture(scope="module")
def tiny_bert_no_dropout(tmp_path_factory, tiny_bert_dir):
    """The tiny BERT without dropout, so one process and torchrun's two see the same computation."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert-nodrop")
    config = BertConfig.from_pretrained(tiny_bert_dir)
    config.hidden_dropout_prob = 0.0
    config.attention_probs_dropout_prob = 0.0
    BertModel.from_pretrained(tiny_bert_dir, config=config).save_pretrained(path)
    BertTokenizerFast.from_pretrained(tiny_bert_dir).save_pretrained(path)
    return path


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tiny_bert_no_dropout, tmp_path):
    """torchrun --nproc_per_node 2 on CPU (gloo) follows the same global batches as one process: same weights."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    # 21 pairs, batch 8: a last batch of 5 split 3/2. No identical pairs: their cosine is at its maximum, so the
    # tokens only they contain get gradients that are 0 up to rounding, which Adam would blow up to ±lr per step.
    train = make_pairs(tmp_path / "train.tsv", n=21, max_overlap=3)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    common = [
        "-q",
        "train-cosent",
        "--model",
        str(tiny_bert_no_dropout),
        "--train",
        str(train),
        "--batch-size",
        "8",
        "--lr",
        "1e-3",
        "--max-length",
        "16",
        "--epochs",
        "2",
    ]
    single = subprocess.run(
        [sys.executable, "-m", "nlptool", *common, "--out", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr
    multi = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "nlptool",
            *common,
            "--out",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert multi.returncode == 0, multi.stderr[-3000:]
    a = load_file(tmp_path / "one" / "model.safetensors")
    b = load_file(tmp_path / "two" / "model.safetensors")
    base = load_file(tiny_bert_no_dropout / "model.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert max((a[k] - base[k]).abs().max().item() for k in a) > 1e-4  # and training did move the weights
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["params"]["world_size"] == 2


def test_default_scale_depends_on_the_model(invoke, tiny_bert_dir, pairs, tmp_path):
    """λ defaults to Su's 20 for a raw encoder and to 5 for a model that is already a sentence encoder."""
    train, _ = pairs
    r = invoke(*train_args(tiny_bert_dir, train, tmp_path / "first"))
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "first" / "metrics.json").read_text())["params"]["scale"] == 20.0
    r = invoke(*train_args(tmp_path / "first", train, tmp_path / "second"))
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "second" / "metrics.json").read_text())["params"]["scale"] == 5.0
    r = invoke(*train_args(tmp_path / "first", train, tmp_path / "third", "--scale", "0"))
    assert r.exit_code == 2


def test_constant_dev_labels_warn_and_train_without_dev(invoke, tiny_bert_dir, pairs, tmp_path):
    train, _ = pairs
    dev = tmp_path / "dev_const.tsv"
    dev.write_text("w1 w2\tw1 w3\t2.5\nw4 w5\tw6\t2.5\nw7\tw8 w9\t2.5\n", encoding="utf-8")
    out = tmp_path / "model"
    m = tmp_path / "m.json"
    r = invoke(*train_args(tiny_bert_dir, train, out, "--dev", dev, "--metrics-out", m))
    assert r.exit_code == 0, r.stderr
    assert "one label value for every pair (2.5)" in r.stderr and "dev set is not used" in r.stderr
    assert (out / "config.json").exists()
    assert "dev_spearman" not in json.loads(m.read_text())["metrics"]
