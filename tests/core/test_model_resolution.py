"""core.models.resolve_encoder: one call finds the model (folder, bundled default, hub id) and reads its settings."""

import json
import shutil

import pytest

from nlptool.core import models
from nlptool.core.errors import ModelNotFoundError, NlptoolError
from nlptool.core.models import ModelSettings, model_spec, resolve_encoder


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


@pytest.fixture
def st_folder(tmp_path, tiny_bert_dir):
    """A sentence-transformers folder as its library writes it: Transformer + CLS Pooling + Normalize."""
    folder = tmp_path / "st"
    shutil.copytree(tiny_bert_dir, folder)
    prefix = "sentence_transformers.models."
    _write(
        folder / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": prefix + "Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": prefix + "Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": prefix + "Normalize"},
        ],
    )
    _write(folder / "1_Pooling" / "config.json", {"word_embedding_dimension": 32, "pooling_mode_cls_token": True})
    (folder / "2_Normalize").mkdir()
    _write(folder / "sentence_bert_config.json", {"max_seq_length": 24, "do_lower_case": False})
    return folder


def test_plain_local_folder(tiny_bert_dir):
    resolved, settings = resolve_encoder(tiny_bert_dir)
    assert (resolved.source, resolved.location) == ("local", str(tiny_bert_dir.resolve()))
    assert settings == ModelSettings(pooling="mean", max_length=None, sentence_model=False, normalizes=False)


def test_sentence_transformers_folder(st_folder):
    resolved, settings = resolve_encoder(str(st_folder))
    assert resolved.source == "local"
    assert settings == ModelSettings(pooling="cls", max_length=24, sentence_model=True, normalizes=True)


def test_arguments_override_the_saved_settings(st_folder):
    _, settings = resolve_encoder(st_folder, pooling="first-last-avg", max_length=8)
    assert (settings.pooling, settings.max_length, settings.normalizes) == ("first-last-avg", 8, True)


def test_nlptool_settings_come_first(st_folder):
    _write(st_folder / "nlptool_encoder.json", {"pooling": "pooler", "max_length": 16})
    _, settings = resolve_encoder(st_folder)
    assert (settings.pooling, settings.max_length) == ("pooler", 16)


def test_foreign_pipeline_is_refused_unless_pooling_is_given(st_folder):
    _write(st_folder / "1_Pooling" / "config.json", {"pooling_mode_max_tokens": True})
    with pytest.raises(NlptoolError, match="pooling max"):
        resolve_encoder(st_folder)
    assert resolve_encoder(st_folder, pooling="mean")[1].pooling == "mean"


def test_unknown_pooling(tiny_bert_dir):
    with pytest.raises(NlptoolError, match="unknown pooling 'max' in the pooling argument"):
        resolve_encoder(tiny_bert_dir, pooling="max")


@pytest.mark.parametrize("spec", [None, "", "default", " DEFAULT "])
def test_bundled_default(monkeypatch, tiny_bert_dir, spec):
    monkeypatch.setattr(models, "default_model_path", lambda: tiny_bert_dir)
    assert model_spec(spec) is None
    resolved, settings = resolve_encoder(spec)
    assert (resolved.source, resolved.location, resolved.name) == (
        "default",
        str(tiny_bert_dir),
        models.DEFAULT_MODEL_NAME,
    )
    assert settings.pooling == "mean"


def test_default_not_installed(monkeypatch):
    monkeypatch.setattr(models, "DEFAULT_MODEL_PACKAGE", "no_such_package_xyz")
    with pytest.raises(ModelNotFoundError, match="default model is not installed"):
        resolve_encoder("default")


def test_hub_id_offline_not_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE is set"):
        resolve_encoder("some-org/some-model-that-is-not-cached")


def test_model_spec_keeps_other_values(tmp_path):
    assert model_spec("org/name") == "org/name"
    assert model_spec(tmp_path) == str(tmp_path)
