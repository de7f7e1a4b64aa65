import pytest

from nlptool.core.errors import ModelNotFoundError, NlptoolError
from nlptool.core.models import default_model_path, load_model, load_tokenizer, resolve_model


def test_local_folder(tiny_bert_dir):
    r = resolve_model(str(tiny_bert_dir))
    assert r.source == "local" and r.location == str(tiny_bert_dir.resolve())
    tok = load_tokenizer(r)
    assert tok("w1 w2")["input_ids"][0] == tok.cls_token_id


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
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
