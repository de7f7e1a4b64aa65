"""Tests for nlptool.core.card: the model card's text, from hand-made inputs."""

from __future__ import annotations

import hashlib

import yaml

from nlptool.core.card import MAX_LOG_ROWS, CardInfo, command_line, describe_file, dev_metrics, model_card

INFO = CardInfo(
    command="train-cosent",
    technique="CoSENT loss, λ = 20.",
    reference="Su Jianlin, CoSENT, https://kexue.fm/archives/8847",
    usage="sentence-transformers",
    library_name="sentence-transformers",
    pipeline_tag="sentence-similarity",
    tags=("sentence-transformers", "cosent"),
    nlptool_usage=("nlptool encode in.txt --model {path}",),
)
METRICS = {"dev_spearman_before": 0.5, "dev_spearman": 0.75, "dev_pairs": 10, "best_step": 4, "steps": 6}


def split(text):
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def test_front_matter_is_hub_metadata():
    meta, _ = split(model_card(INFO, name="m", base_model="sentence-transformers/all-MiniLM-L6-v2", metrics=METRICS))
    assert meta["library_name"] == "sentence-transformers" and meta["pipeline_tag"] == "sentence-similarity"
    assert meta["tags"] == ["sentence-transformers", "cosent", "nlptool", "train-cosent"]  # no duplicates
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["metrics"] == ["spearman"]
    result = meta["model-index"][0]["results"][0]
    assert result["metrics"] == [{"type": "spearman", "value": 0.75, "name": "dev spearman"}]
    assert "datasets" not in meta
    meta, _ = split(model_card(CardInfo("x", "t", datasets=("mteb/stsbenchmark-sts",)), name="m", base_model=None))
    assert meta == {"library_name": "transformers", "tags": ["nlptool", "x"], "datasets": ["mteb/stsbenchmark-sts"]}


def test_local_paths_are_not_base_models_and_nan_is_null():
    for local in ("/models/tiny", "./tiny", "~/m", "a/b/c"):
        meta, body = split(model_card(INFO, name="m", base_model=local, metrics={"dev_spearman": float("nan")}))
        assert "base_model" not in meta and f"`{local}`" in body
    assert meta["model-index"][0]["results"][0]["metrics"][0]["value"] is None


def test_body_sections():
    data = [describe_file("-", role="train", rows=3)]
    history = [
        {"event": "train", "step": 2, "epoch": 1.0, "loss": 0.9, "lr": 1e-5},
        {"event": "eval", "step": 2, "epoch": 1.0, "metrics": {"spearman": 0.7}, "is_best": True},
        {"event": "eval", "step": 4, "epoch": 2.0, "metrics": {"spearman": 0.6}, "is_best": False},
    ]
    text = model_card(
        INFO,
        name="my model",
        base_model="bert-base-uncased",
        data=data,
        params={"lr": 2e-05, "loss": "cosent", "group_by_length": True},
        metrics=METRICS,
        history=history,
        command="nlptool train-cosent --out 'my model'",
        versions={"nlptool": "0.1.0", "torch": "2.13.0"},
        date="2026-12-07T00:00:00+00:00",
        path="out/my model",
    )
    _, body = split(text)
    assert body.startswith("\n# my model\n")
    assert (
        "from `bert-base-uncased`" in body and "Reference: Su Jianlin, CoSENT, https://kexue.fm/archives/8847" in body
    )
    assert "SentenceTransformer('out/my model')" in body and "nlptool encode in.txt --model 'out/my model'" in body
    assert "| train | `<stdin>` | 3 |  |  |" in body
    assert "| spearman | 0.5000 | 0.7500 |" in body and "step 4 of 6" in body
    assert "| 2 (best) | 1.0000 | 0.9000 | 0.7000 |" in body and "| 4 | 2.0000 | 0.9000 | 0.6000 |" in body
    assert "| lr | 2e-05 |" in body and "| group_by_length | true |" in body
    assert "```bash\nnlptool train-cosent --out 'my model'\n```" in body
    assert "- date: 2026-12-07T00:00:00+00:00\n- nlptool: 0.1.0\n- torch: 2.13.0\n" in body


def test_long_logs_are_shortened_and_other_usages():
    history = [{"event": "train", "step": i, "epoch": i / 10, "loss": 1.0 / i} for i in range(1, 200)]
    _, body = split(
        model_card(CardInfo("ner train", "t", usage="token-classification"), name="m", base_model=None, history=history)
    )
    rows = [line for line in body.split("## Training log")[1].split("##")[0].splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + MAX_LOG_ROWS + 1  # header, the first and last rows, the gap
    assert rows[1].startswith("| 1 |") and rows[-1].startswith("| 199 |")
    assert "AutoModelForTokenClassification.from_pretrained('m')" in body and "an untrained model" in body
    _, body = split(model_card(CardInfo("x", "t"), name="m", base_model="b"))
    assert "AutoModel.from_pretrained('m')" in body and "Not recorded." in body and "## Evaluation" not in body


def test_describe_file_and_dev_metrics(tmp_path):
    f = tmp_path / "d.csv"
    f.write_bytes(b"a,b,1\n" * 1000)
    d = describe_file(str(f), role="dev", rows=1000)
    assert (d.role, d.rows, d.bytes, d.sha256) == ("dev", 1000, 6000, hashlib.sha256(f.read_bytes()).hexdigest())
    assert describe_file(str(tmp_path / "missing"), role="train").bytes is None
    assert dev_metrics({"dev_f1": 0.5, "dev_f1_before": 0.1, "dev_pairs": 3, "train_loss": 0.2}) == {"f1": 0.5}


def test_command_line_is_shell_quoted():
    assert (
        command_line(["/venv/bin/nlptool", "train-cosent", "--out", "my model"])
        == "nlptool train-cosent --out 'my model'"
    )
    assert command_line(["/x/nlptool/__main__.py", "encode", "a'b"]) == "nlptool encode 'a'\"'\"'b'"
    assert command_line(["script.py", "-v"]) == "script.py -v"
