import re

import pytest

from nlptool.core.errors import ModelNotFoundError, NlptoolError
from nlptool.core.models import default_model_path, load_model, load_tokenizer, resolve_model


def test_local_folder(tiny_bert_dir):
    r = resolve_model(str(tiny_bert_dir))
    assert r.source == "local" and r.location == str(tiny_bert_dir.resolve())
    tok = load_tokenizer(r)
    assert tok("w1 w2")["input_ids"][0] == tok.cls_token_id


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelNotFoundError, match="is not a model folder \\(no config.json"):
        resolve_model(str(tmp_path))


def test_missing_path():
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model("./no/such/model")


def test_hub_id_offline_not_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE"):
        resolve_model("some-org/some-model-that-is-not-cached")


def test_hub_id_online_is_passed_through(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    r = resolve_model("bert-base-uncased")
    assert r.source == "hub" and r.location == "bert-base-uncased"


def test_default_model(monkeypatch):
    path = default_model_path()
    if path is None:
        monkeypatch.setattr("nlptool.core.models.DEFAULT_MODEL_PACKAGE", "no_such_package_xyz")
        with pytest.raises(ModelNotFoundError, match="default model is not installed"):
            resolve_model(None)
    else:
        r = resolve_model(None)
        assert r.source == "default" and (path / "config.json").is_file()


def test_missing_default_package_is_clear(monkeypatch):
    monkeypatch.setattr("nlptool.core.models.DEFAULT_MODEL_PACKAGE", "no_such_package_xyz")
    with pytest.raises(ModelNotFoundError, match="pip install"):
        resolve_model(None)


def test_head_check_refuses_random_nsp_head(tiny_bert_dir, tiny_bert_no_heads_dir):
    from transformers import BertForNextSentencePrediction

    ok = load_model(
        resolve_model(str(tiny_bert_dir)), BertForNextSentencePrediction, required=("cls.seq_relationship",)
    )
    assert ok.cls.seq_relationship.weight.shape == (2, 32)
    with pytest.raises(NlptoolError, match=r"no NSP head.*cls\.seq_relationship.*nsp-adapt"):
        load_model(
            resolve_model(str(tiny_bert_no_heads_dir)),
            BertForNextSentencePrediction,
            required=("cls.seq_relationship",),
            head_name="NSP head",
            fix_hint="train one with nlptool nsp-adapt",
        )


# -- folder kinds and damaged files (the checks every loader shares) -------------------------------------------------


def test_folder_kind_reads_the_markers_nlptool_writes(tmp_path, tiny_bert_dir, tiny_bert_no_heads_dir):
    from nlptool.core.models import folder_kind

    assert folder_kind(tiny_bert_dir) == "nsp"  # BertForPreTraining: an NSP head
    assert folder_kind(tiny_bert_no_heads_dir) == "transformers"
    assert folder_kind(tmp_path) is None
    markers = {"kgqa.json": "kg-qa", "ner_config.json": "ner", "nlptool_encoder.json": "sentence-encoder",
               "modules.json": "sentence-encoder"}  # fmt: skip
    for marker, kind in markers.items():
        folder = tmp_path / marker
        folder.mkdir()
        (folder / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
        (folder / marker).write_text("{}", encoding="utf-8")
        assert folder_kind(folder) == kind


def test_resolve_model_refuses_another_kind(tmp_path):
    folder = tmp_path / "kg"
    folder.mkdir()
    (folder / "kgqa.json").write_text("{}", encoding="utf-8")
    expected = "kg is a kg-qa model folder (use it with 'nlptool kg-qa predict|eval|ask'), not a sentence encoder"
    with pytest.raises(NlptoolError, match=re.escape(expected)):
        resolve_model(str(folder), role="a sentence encoder")


def test_damaged_files_are_named(tmp_path):
    import torch
    from safetensors.torch import save_file

    from nlptool.core.models import check_safetensors, load_safetensors, read_json_file

    path = tmp_path / "config.json"
    for text, problem in [("{", "invalid JSON"), ("[]", "a JSON object expected, found list")]:
        path.write_text(text, encoding="utf-8")
        with pytest.raises(NlptoolError, match=f"config.json is damaged \\({problem}"):
            read_json_file(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(NlptoolError, match="config.json is damaged \\(not UTF-8"):
        read_json_file(path)
    weights = tmp_path / "w.safetensors"
    save_file({"a": torch.ones(4, 4)}, str(weights))
    check_safetensors(weights)
    assert load_safetensors(weights)["a"].shape == (4, 4)
    weights.write_bytes(weights.read_bytes()[:-3])
    with pytest.raises(NlptoolError, match="w.safetensors is damaged .*incomplete metadata"):
        load_safetensors(weights)
    with pytest.raises(NlptoolError, match="gone.safetensors is missing"):
        load_safetensors(tmp_path / "gone.safetensors")
