"""Every model loader refuses a folder it cannot really use, with one line that says what the folder is: a kg-qa
folder is no sentence encoder (its char BART has no tokenizer, and transformers would build an empty one that maps
every text to [CLS] [SEP]), an encoder folder is no NER or kg-qa model, a missing folder does not exist, a damaged
file is named. Also gradcheck's --checkpoint and --layers."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import SAMPLE_DATA, TINY_VOCAB

KGQA_USE = "is a kg-qa model folder (use it with 'nlptool kg-qa predict|eval|ask')"
NER_USE = "is an NER model folder (use it with 'nlptool ner predict|eval')"
ENCODER_USE = "is a sentence-encoder folder (use it with 'nlptool encode|eval-sts|zero-shot --method embedding')"
NSP_USE = "is a next-sentence-prediction model folder (use it with 'nlptool zero-shot --method nsp')"


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def kinds(tmp_path_factory, tiny_bert_dir, tiny_bert_no_heads_dir) -> dict[str, Path]:
    """One folder of each kind that nlptool saves, built in-test: kg-qa (char BART), NER, sentence encoder, NSP."""
    from transformers import AutoModel, AutoTokenizer

    from nlptool.core.encoder import SentenceEncoder
    from nlptool.core.kgqa import KgqaModel, read_kb, read_qa
    from nlptool.core.ner import SpanNerModel

    base = tmp_path_factory.mktemp("kinds")
    SentenceEncoder.load(tiny_bert_no_heads_dir).save(base / "encoder")
    bert = AutoModel.from_pretrained(tiny_bert_no_heads_dir, add_pooling_layer=False)
    SpanNerModel(bert, ["PER"], head_size=8, max_length=32).save(
        base / "ner", AutoTokenizer.from_pretrained(tiny_bert_no_heads_dir)
    )
    kb = SAMPLE_DATA / "kgqa_kb.tsv"
    questions = [e.question for e in read_qa(str(SAMPLE_DATA / "kgqa_train.jsonl"))]
    KgqaModel.create(read_kb(kb), questions, d_model=16, layers=1, heads=2, ffn=16).save(base / "kgqa", kb_path=str(kb))
    return {"encoder": base / "encoder", "ner": base / "ner", "kgqa": base / "kgqa", "nsp": tiny_bert_dir}


@pytest.fixture
def texts(tmp_path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("w1 a b\nw2 c d\n", encoding="utf-8")
    return path


def one_line_error(result, *parts: str, code: int = 1) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout[:200], result.stderr, result.exception)
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])
    assert not result.stdout.strip()
    return lines[0]


# -- a kg-qa folder (and an NER folder) is no sentence encoder -------------------------------------------------------


def test_kgqa_folder_is_refused_by_every_encoder_loader(invoke, kinds, texts, tmp_path):
    kg = str(kinds["kgqa"])
    pairs = SAMPLE_DATA / "stsb_dev_sample.csv"
    out = tmp_path / "out"
    out.mkdir()
    cases = [
        (("encode", texts, "-m", kg, "-o", out / "e.npy"), "not a sentence encoder"),
        (("eval-sts", pairs, "-m", kg, "-o", out / "p.jsonl"), "not a sentence encoder"),
        (("zero-shot", texts, "--labels", "w3,w4", "--method", "embedding", "--model", kg, "-o", out / "z.jsonl"),
         "not a sentence encoder"),
        (("train-cosent", "--model", kg, "--train", SAMPLE_DATA / "stsb_train_sample.csv", "--out", out / "cosent"),
         "not a sentence encoder"),
        (("ner", "train", "--model", kg, "--train", SAMPLE_DATA / "ner_dev.jsonl", "--out", out / "ner"),
         "not a base encoder for 'ner train'"),
        (("zero-shot", texts, "--labels", "w3,w4", "--method", "nsp", "--model", kg, "-o", out / "n.jsonl"),
         "not a next-sentence-prediction model"),
        (("nsp-adapt", "--corpus", SAMPLE_DATA / "nsp_corpus.txt", "--model", kg, "--out", out / "nsp"),
         "not a BERT-family model for 'nsp-adapt'"),
    ]  # fmt: skip
    for args, role in cases:
        one_line_error(invoke(*args), f"{kg} {KGQA_USE}, {role}")
    assert not list(out.iterdir())


def test_ner_folder_is_no_sentence_encoder(invoke, kinds, texts):
    one_line_error(invoke("encode", texts, "-m", kinds["ner"]), f"{kinds['ner']} {NER_USE}, not a sentence encoder")


def test_folder_without_tokenizer_files_is_refused(invoke, kinds, texts, tmp_path):
    """A plain Hugging Face folder (no nlptool marker) whose tokenizer files are missing."""
    bare = tmp_path / "bart"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(kinds["kgqa"] / name, bare / name)
    one_line_error(invoke("encode", texts, "-m", bare), f"model folder {bare} has no tokenizer files")


def test_tokenizer_of_special_tokens_only_is_refused(invoke, tiny_bert_no_heads_dir, texts, tmp_path):
    """A vocabulary without ordinary tokens: every text would become [CLS] [UNK]... [SEP], i.e. the same embedding."""
    from transformers import BertTokenizerFast

    folder = tmp_path / "specials"
    shutil.copytree(tiny_bert_no_heads_dir, folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (folder / name).unlink(missing_ok=True)
    (folder / "vocab.txt").write_text("\n".join(TINY_VOCAB[:5]) + "\n", encoding="utf-8")
    BertTokenizerFast.from_pretrained(folder).save_pretrained(folder)
    one_line_error(invoke("encode", texts, "-m", folder), "turns the text", "into special tokens only")


# -- NER and kg-qa loaders name what they were given -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"), [("encoder", ENCODER_USE), ("kgqa", KGQA_USE), ("nsp", NSP_USE)], ids=["enc", "kgqa", "nsp"]
)
def test_ner_loader_names_the_kind(invoke, kinds, texts, kind, expected):
    for sub in ("predict", "eval"):
        data = texts if sub == "predict" else SAMPLE_DATA / "ner_dev.jsonl"
        one_line_error(
            invoke("ner", sub, data, "-m", kinds[kind]), f"{kinds[kind]} {expected}, not an NER model folder"
        )


@pytest.mark.parametrize(
    ("kind", "expected"), [("encoder", ENCODER_USE), ("ner", NER_USE), ("nsp", NSP_USE)], ids=["enc", "ner", "nsp"]
)
def test_kgqa_loader_names_the_kind(invoke, kinds, kind, expected):
    res = invoke("kg-qa", "predict", SAMPLE_DATA / "kgqa_dev.jsonl", "-m", kinds[kind], "--device", "cpu")
    one_line_error(res, f"{kinds[kind]} {expected}, not a kg-qa model folder")


def test_missing_model_folder_does_not_exist(invoke, texts, tmp_path):
    gone = tmp_path / "gone"
    one_line_error(invoke("ner", "predict", texts, "-m", gone), f"model folder {gone} does not exist")
    one_line_error(invoke("kg-qa", "ask", "q?", "-m", gone, "--device", "cpu"), f"model folder {gone} does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(invoke("ner", "predict", texts, "-m", empty), f"{empty} is not a model folder")


# -- damaged folders name the file -----------------------------------------------------------------------------------


def test_garbage_ner_head_and_truncated_weights(invoke, kinds, texts, tmp_path):
    ner = tmp_path / "ner"
    shutil.copytree(kinds["ner"], ner)
    (ner / "ner_head.safetensors").write_bytes(b"not a safetensors file at all")
    one_line_error(invoke("ner", "predict", texts, "-m", ner), f"{ner / 'ner_head.safetensors'} is damaged", "retrain")

    enc = tmp_path / "enc"
    shutil.copytree(kinds["encoder"], enc)
    weights = enc / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    one_line_error(invoke("encode", texts, "-m", enc), f"{weights} is damaged", "retrain")
    weights.unlink()
    one_line_error(invoke("encode", texts, "-m", enc), f"model folder {enc} has no weights file")


def test_invalid_config_json(invoke, kinds, texts, tmp_path):
    ner = tmp_path / "ner"
    shutil.copytree(kinds["ner"], ner)
    (ner / "config.json").write_text('{"model_type": "bert", ', encoding="utf-8")
    one_line_error(invoke("ner", "predict", texts, "-m", ner), f"{ner / 'config.json'} is damaged (invalid JSON")
    (ner / "config.json").write_text("[1, 2]", encoding="utf-8")
    one_line_error(
        invoke("ner", "predict", texts, "-m", ner), f"{ner / 'config.json'} is damaged (a JSON object expected"
    )


# -- gradcheck --checkpoint ------------------------------------------------------------------------------------------


@pytest.fixture
def mlp_file(tmp_path) -> Path:
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
    path = tmp_path / "mlp.pt"
    torch.save(mlp.state_dict(), path)
    return path


def test_gradcheck_checkpoint_folder_and_garbage(invoke, tmp_path, mlp_file):
    one_line_error(invoke("gradcheck", "--checkpoint", tmp_path), f"checkpoint {tmp_path} is a folder", "state_dict")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x02garbage" * 10)
    for extra in ((), ("--unsafe-load",)):
        line = one_line_error(invoke("gradcheck", "--checkpoint", garbage, *extra), f"checkpoint {garbage} is not")
        assert "damaged" in line and "pass --unsafe-load" not in line
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(mlp_file.read_bytes()[:200])
    one_line_error(invoke("gradcheck", "--checkpoint", truncated), f"checkpoint {truncated} is not", "damaged")


def test_gradcheck_layers_must_agree_with_the_checkpoint(invoke, mlp_file):
    ok = invoke("gradcheck", "--checkpoint", mlp_file, "--inputs", "2")
    assert ok.exit_code == 0, ok.stderr
    same = invoke("gradcheck", "--checkpoint", mlp_file, "--layers", "3,5,1", "--inputs", "2")
    assert same.exit_code == 0 and same.stdout == ok.stdout
    bad = invoke("gradcheck", "--checkpoint", mlp_file, "--layers", "4,16,16,1", "--inputs", "2")
    message = re.sub(r"[│╭╮╰╯─\s]+", " ", bad.stderr)  # Typer draws usage errors in a box
    assert bad.exit_code == 2 and "disagrees with the layer sizes of --checkpoint" in message
    assert "'3,5,1'" in message and not bad.stdout


def test_kgqa_unilm_folder_is_refused_though_its_tokenizer_works(invoke, tiny_bert_dir, texts, tmp_path):
    """A kg-qa folder on a BERT backbone has a real tokenizer and BERT weights; its marker still says what it is."""
    from nlptool.core.kgqa import KgqaModel, read_kb, read_qa

    kb = SAMPLE_DATA / "kgqa_kb.tsv"
    questions = [e.question for e in read_qa(str(SAMPLE_DATA / "kgqa_train.jsonl"))]
    folder = tmp_path / "kgqa-unilm"
    KgqaModel.create(read_kb(kb), questions, model=str(tiny_bert_dir), backbone="unilm").save(folder, kb_path=str(kb))
    one_line_error(invoke("encode", texts, "-m", folder), f"{folder} {KGQA_USE}, not a sentence encoder")
    dev = SAMPLE_DATA / "kgqa_dev.jsonl"
    res = invoke("kg-qa", "predict", dev, "-m", folder, "--device", "cpu", "--num-beams", "2", "--top-k", "1")
    assert res.exit_code == 0, res.stderr
