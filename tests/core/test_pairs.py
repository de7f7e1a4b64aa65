import numpy as np
import pytest

from nlptool.core.errors import InputError, NlptoolError
from nlptool.core.pairs import read_pairs
from tests.conftest import SAMPLE_DATA, SHARED_DATA


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def test_headerless_stsb_sample():
    d = read_pairs(str(SAMPLE_DATA / "stsb_train_sample.csv"))
    assert len(d) == 600 and d.label_type == "score" and d.columns == ("0", "1", "2")
    assert d.label_range == (0.0, 5.0) and d.labels.min() >= 0 and d.labels.max() <= 5
    assert d.text1[0] == "A plane is taking off." and d.lines[0] == 1
    assert d.unit_targets().max() <= 1


def test_senteval_tsv_binary(tmp_path):
    p = write(tmp_path, "LCQMC.valid.data", "今天天气好\t天气不错\t1\n我饿了\t明天下雨\t0\n")
    d = read_pairs(p)
    assert d.label_type == "binary" and list(d.labels) == [1.0, 0.0] and d.class_ids().dtype == np.int64


def test_header_names_and_nli_jsonl(tmp_path):
    p = write(
        tmp_path,
        "nli.jsonl",
        '{"premise": "a", "hypothesis": "b", "label": "entailment"}\n'
        '{"premise": "c", "hypothesis": "d", "label": "Contradiction"}\n'
        '{"premise": "e", "hypothesis": "f", "label": "neutral"}\n',
    )
    d = read_pairs(p)
    assert (
        d.label_type == "nli" and list(d.labels) == [2.0, 0.0, 1.0] and d.columns == ("premise", "hypothesis", "label")
    )


def test_explicit_columns(tmp_path):
    p = write(tmp_path, "p.csv", "id,q,d,rel\n1,x,y,0.5\n2,z,w,0.1\n")
    d = read_pairs(p, text1_col="q", text2_col="d", label_col="rel")
    assert d.text2 == ["y", "w"] and d.label_type == "score"
    with pytest.raises(InputError, match="no column 'nope'"):
        read_pairs(p, text1_col="nope", text2_col="d", label_col="rel")
    with pytest.raises(InputError, match="cannot tell which column"):
        read_pairs(p)


@pytest.mark.parametrize(
    ("content", "kw", "line", "message"),
    [
        ("a,b,1\n,c,0\n", {}, 2, "empty text"),
        ("a,b,1\nc,d,x\n", {}, 2, "is not a number"),
        ("a,b,1\nc,d,\n", {}, 2, "missing label"),
        ("a,b,1\nc,d,2\n", {"label_type": "binary"}, 2, "must be 0 or 1"),
        ("s1,s2,label\na,b,entailment\nc,d,maybe\n", {"label_type": "nli"}, 3, "not one of"),
    ],
)
def test_bad_rows(tmp_path, content, kw, line, message):
    p = write(tmp_path, "bad.csv", content)
    with pytest.raises(InputError) as e:
        read_pairs(p, **kw)
    assert e.value.line == line and message in str(e.value) and p in str(e.value)


def test_softmax_needs_classes_and_empty_file(tmp_path):
    d = read_pairs(str(SAMPLE_DATA / "stsb_dev_sample.csv"))
    with pytest.raises(NlptoolError, match="softmax"):
        d.class_ids()
    with pytest.raises(NlptoolError, match="no rows"):
        read_pairs(write(tmp_path, "e.csv", ""))


@pytest.mark.skipif(not (SHARED_DATA / "sts").is_dir(), reason="../shared/data not available")
def test_shared_files_load_without_flags():
    assert len(read_pairs(str(SHARED_DATA / "sts/stsb-en/stsb-en-train.csv"))) == 5749
    d = read_pairs(str(SHARED_DATA / "sts/senteval_cn/STS-B/STS-B.valid.data"))
    assert len(d) == 1458 and d.label_type == "score"


def test_stray_nli_label_is_reported_on_its_own_line(tmp_path):
    # 'maybe' on line 5 used to be reported as "line 2: label 'entailment' is not a number"
    p = tmp_path / "nli.csv"
    p.write_text("s1,s2,label\na,b,entailment\nc,d,neutral\ne,f,Contradiction\ng,h,maybe\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_pairs(str(p))
    assert info.value.line == 5 and "'maybe'" in str(info.value) and "entailment" not in str(info.value).split(":")[2]
    # numbers and NLI names mixed: the first label that does not fit is named
    p.write_text("s1,s2,label\na,b,entailment\nc,d,3.5\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_pairs(str(p))
    assert info.value.line == 3 and "'3.5'" in str(info.value)
    # plain numbers with one bad value still name that value's line
    p.write_text("s1,s2,label\na,b,1.5\nc,d,2\ne,f,high\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_pairs(str(p))
    assert info.value.line == 4 and "'high' is not a number" in str(info.value)
