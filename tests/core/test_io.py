import io
import json
import os

import pytest

from nlptool.core.errors import InputError, NlptoolError
from nlptool.core.io import (
    RecordWriter,
    atomic_output,
    check_output_path,
    chunked,
    format_from_path,
    open_writer,
    read_records,
    to_float,
    to_float_list,
)


def records(path, **kw):
    with read_records(path, **kw) as r:
        return [(rec.line, rec.data) for rec in r], r


def test_format_from_extension_and_override():
    assert format_from_path("a.jsonl") == "jsonl"
    assert format_from_path("a.JSON") == "jsonl"
    assert format_from_path("a.csv") == "csv"
    assert format_from_path("a.tsv") == "tsv"
    assert format_from_path("a.txt") is None
    assert format_from_path("a.txt", "tsv") == "tsv"
    assert format_from_path("-", None, default="jsonl") == "jsonl"
    with pytest.raises(NlptoolError, match="unknown format"):
        format_from_path("a.csv", "xml")


def test_jsonl_lines_and_blank_lines(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2, "t": "中文"}\n', encoding="utf-8")
    rows, _ = records(p)
    assert rows == [(1, {"a": 1}), (3, {"a": 2, "t": "中文"})]


def test_jsonl_bad_json_names_line(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"a": 1}\n{"a": \n', encoding="utf-8")
    with pytest.raises(InputError) as e:
        records(p)
    assert e.value.line == 2 and str(p) in str(e.value) and "invalid JSON" in str(e.value)


def test_jsonl_non_object(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(InputError, match=r":1: expected a JSON object"):
        records(p)


def test_csv_header_detected(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text('text,label\nhello,1\n"multi\nline",0\n', encoding="utf-8")
    rows, r = records(p)
    assert r.fieldnames == ["text", "label"]
    assert rows == [(2, {"text": "hello", "label": "1"}), (4, {"text": "multi\nline", "label": "0"})]


def test_csv_headerless_numeric_first_row(tmp_path):
    # the STS-B layout: sentence1,sentence2,score with no header
    p = tmp_path / "sts.csv"
    p.write_text("A plane is taking off.,An air plane is taking off.,5.000\nA man.,A dog.,0.5\n", encoding="utf-8")
    rows, r = records(p)
    assert r.fieldnames == ["0", "1", "2"]
    assert rows[0] == (1, {"0": "A plane is taking off.", "1": "An air plane is taking off.", "2": "5.000"})


def test_tsv_headerless_and_forced_header(tmp_path):
    p = tmp_path / "a.tsv"
    p.write_text("x\ty\t1\nz\tw\t0\n", encoding="utf-8")
    rows, r = records(p)
    assert r.fieldnames == ["0", "1", "2"] and len(rows) == 2
    rows, r = records(p, header=True)
    assert r.fieldnames == ["x", "y", "1"] and len(rows) == 1
    rows, r = records(p, header=False, names=["a", "b", "c"])
    assert rows[1] == (2, {"a": "z", "b": "w", "c": "0"})


def test_csv_wrong_field_count(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("a,b\n1,2\n3\n", encoding="utf-8")
    with pytest.raises(InputError) as e:
        records(p)
    assert e.value.line == 3 and "expected 2 fields" in str(e.value)


def test_csv_duplicate_header(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("a,a\nx,y\n", encoding="utf-8")
    with pytest.raises(InputError, match="duplicate column"):
        records(p)


def test_stdin_sniffing():
    for text, fmt in [('{"a": 1}\n', "jsonl"), ("a\tb\n1\t2\n", "tsv"), ("a,b\n1,2\n", "csv")]:
        with read_records("-", stdin=io.StringIO(text)) as r:
            rows = list(r)
        assert r.fmt == fmt and len(rows) == 1


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(NlptoolError, match="does not exist"):
        read_records(tmp_path / "nope.csv")
    with pytest.raises(NlptoolError, match="is a folder"):
        read_records(tmp_path)


def test_not_utf8(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"a": "\xff"}\n')
    with pytest.raises(InputError, match="UTF-8"):
        records(p)


def test_streaming_does_not_read_ahead(tmp_path):
    p = tmp_path / "big.jsonl"
    with open(p, "w") as fh:
        for i in range(10000):
            fh.write(json.dumps({"i": i}) + "\n")
    with read_records(p) as r:
        it = iter(r)
        first = next(it)
        # the file position is far from the end: records are parsed lazily, not slurped
        assert first.data == {"i": 0}
        assert r._fh.raw.tell() < os.path.getsize(p) // 2
        assert [c[-1].data["i"] for c in chunked(it, 4000)] == [4000, 8000, 9999]


def test_number_parsing_errors():
    assert to_float("1.5", path="f", line=3, field="x") == 1.5
    with pytest.raises(InputError, match=r"f:3: field 'x': expected a number, found 'abc'"):
        to_float("abc", path="f", line=3, field="x")
    with pytest.raises(InputError, match="expected a number"):
        to_float(True, path="f", line=3, field="x")
    assert to_float_list("[0.5, 0.5]", path="f", line=1, field="p") == [0.5, 0.5]
    with pytest.raises(InputError, match="item 1 is not a number"):
        to_float_list([1, "a"], path="f", line=1, field="p")
    with pytest.raises(InputError, match="non-empty"):
        to_float_list([], path="f", line=1, field="p")


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError), atomic_output(target) as fh:
        fh.write("partial\n")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_refuses_overwrite_without_force(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("keep me\n")
    with pytest.raises(NlptoolError, match="--force"):
        check_output_path(target)
    with pytest.raises(NlptoolError, match="--force"), atomic_output(target) as fh:
        fh.write("x")
    assert target.read_text() == "keep me\n"
    with atomic_output(target, force=True) as fh:
        fh.write("new\n")
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_check_output_missing_folder(tmp_path):
    with pytest.raises(NlptoolError, match="does not exist"):
        check_output_path(tmp_path / "no" / "out.csv")


def test_writer_formats(tmp_path):
    buf = io.StringIO()
    w = RecordWriter(buf, "jsonl")
    w.write({"t": "中文", "x": float("inf"), "l": [1.0, float("nan")]})
    assert json.loads(buf.getvalue()) == {"t": "中文", "x": None, "l": [1.0, None]}
    assert "中文" in buf.getvalue()  # ensure_ascii=False
    buf = io.StringIO()
    w = RecordWriter(buf, "tsv")
    w.write({"a": "x", "b": [1, 2], "c": True, "d": None})
    assert buf.getvalue() == "a\tb\tc\td\nx\t[1, 2]\ttrue\t\n"
    target = tmp_path / "o.csv"
    with open_writer(target) as w:
        w.write({"a": 1, "b": "q,r"})
    assert target.read_text() == 'a,b\n1,"q,r"\n'


# -- one reader path: strict UTF-8 with file:line, texts, replayable stdin --------------------------------------------
def test_text_lines_name_the_line_of_a_bad_byte(tmp_path):
    from nlptool.core.io import open_lines

    p = tmp_path / "a.txt"
    p.write_bytes(b"\xef\xbb\xbfok\r\n" + "é\n".encode() * 3 + b"caf\xe9\n")
    with open_lines(p) as lines:
        it = iter(lines)
        assert next(it) == "ok\r\n"  # BOM dropped, CRLF kept for the caller
        with pytest.raises(InputError) as e:
            list(it)
    # line 5; the offset counts the BOM: 3 + 4 + 3*3 + 3
    assert e.value.line == 5 and "byte 0xe9 at byte offset 19" in str(e.value) and str(e.value).startswith(f"{p}:5:")
    with (
        pytest.raises(InputError, match=r"^<stdin>:2: not valid UTF-8"),
        open_lines("-", stdin=io.BytesIO(b"a\n\xff\n")) as s,
    ):
        list(s)


def test_table_reader_utf8_error_has_a_line_and_stdin_bytes(tmp_path):
    p = tmp_path / "a.csv"
    p.write_bytes(b"text,label\nok,1\nbad\xff,0\n")
    with pytest.raises(InputError, match=r"a.csv:3: not valid UTF-8"):
        records(p)

    class Stdin(io.TextIOWrapper):  # like sys.stdin: a text wrapper over bytes
        pass

    with pytest.raises(InputError, match=r"^<stdin>:1: not valid UTF-8"):
        with read_records("-", stdin=Stdin(io.BytesIO(b'{"a": "\xff"}\n'), encoding="utf-8")) as r:
            list(r)


def test_text_reader_formats_and_blank_lines(tmp_path):
    from nlptool.core.io import TextReader, iter_texts

    t = tmp_path / "x.txt"
    t.write_text("alice met bob\n\nbob\n\n\n", encoding="utf-8")
    assert list(iter_texts(t)) == [(1, "alice met bob"), (3, "bob")]
    with TextReader(t, keep_blank=True) as r:  # inner blank lines kept (aligned output), trailing ones dropped
        assert [(x.line, x.text) for x in r] == [(1, "alice met bob"), (2, ""), (3, "bob")]
    j = tmp_path / "x.jsonl"
    j.write_text('{"text": "a", "id": 7}\n{"id": 8}\n', encoding="utf-8")
    it = iter(TextReader(j))
    assert next(it).data == {"text": "a", "id": 7}
    with pytest.raises(InputError, match=r"x.jsonl:2: field 'text': missing text"):
        next(it)
    c = tmp_path / "x.csv"
    c.write_text("id,sentence\n1,hello\n", encoding="utf-8")
    assert list(iter_texts(c)) == [(2, "hello")]
    with pytest.raises(InputError, match=r"x.csv:1: no column 'q'"):
        list(iter_texts(c, text_col="q"))
    with pytest.raises(NlptoolError, match="read as plain text"):
        list(iter_texts(t, text_col="q"))


def test_text_reader_sniffs_stdin():
    from nlptool.core.io import TextReader

    cases = [
        ('\n{"text": "a"}\n', {}, "jsonl", [(2, "a")]),
        ("q,text\n1,a\n", {}, "text", [(1, "q,text"), (2, "1,a")]),  # text commands: lines
        ("q,text\n1,a\n", {"text_col": "text"}, "csv", [(2, "a")]),
        ("q\ttext\n1\ta\n", {"table": True}, "tsv", [(2, "a")]),
    ]
    for data, kw, fmt, expected in cases:
        with TextReader("-", stdin=io.BytesIO(data.encode()), **kw) as r:
            assert r.fmt == fmt and [(x.line, x.text) for x in r] == expected, data


def test_replayable_copies_stdin_and_always_removes_it(tmp_path, monkeypatch):
    import tempfile

    from nlptool.core.io import replayable

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with replayable("-", stdin=io.BytesIO(b"a\n\xff\n")) as src:
        assert open(src, "rb").read() == b"a\n\xff\n"  # bytes as they came: decoding errors come when read
        with pytest.raises(InputError, match=r"^<stdin>:2:"), read_records(src, "csv", name="-") as r:
            list(r)
    assert not list(tmp_path.iterdir())
    with pytest.raises(KeyboardInterrupt), replayable("-", stdin=io.BytesIO(b"x\n")):
        raise KeyboardInterrupt
    assert not list(tmp_path.iterdir())
    with replayable("some.csv") as src:
        assert src == "some.csv"
