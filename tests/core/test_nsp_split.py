"""nsp-adapt's sentence splitter: the linear-time :func:`split_sentences` gives exactly the output of the original
(quadratic) implementation, kept here as the oracle, on hand-picked edge cases and on random text built from the
characters and words its rules look at; and a long one-line document splits in linear time."""

from __future__ import annotations

import random
import re
import time

import pytest

from nlptool.core.nsp import _ABBREVIATIONS, _BOUNDARY, _CJK_CHAR, _CJK_END, split_sentences


def split_sentences_reference(text: str) -> list[str]:
    """The splitter as it was before it was made linear (copies ``line[end:]`` and searches everything before each
    boundary): the oracle."""
    sentences: list[str] = []
    for line in str(text).splitlines():
        start = 0
        for m in _BOUNDARY.finditer(line):
            end = m.end()
            rest = line[end:]
            if not rest.strip():
                continue
            punct = m.group(1)
            if not any(c in _CJK_END for c in punct):
                stripped = rest.lstrip()
                spaced = len(stripped) < len(rest)
                nxt = stripped[:1]
                cjk_next = bool(_CJK_CHAR.match(nxt))
                if not (cjk_next or (spaced and (nxt.isupper() or nxt.isdigit() or nxt in "\"'“‘([「『"))):
                    continue
                if punct == ".":
                    word = re.search(r"(\S+)$", line[: m.start(1)])
                    token = word.group(1).lower().lstrip("(\"'“‘") if word else ""
                    if token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha()):
                        continue
            piece = line[start:end].strip()
            if piece:
                sentences.append(piece)
            start = end
        piece = line[start:].strip()
        if piece:
            sentences.append(piece)
    return sentences


EDGE_CASES = [
    "",
    "   ",
    'One. Two! Three? four. 5 apples. "Quoted." (Bracket.) [x]',
    "Mr. Smith met Dr. Who at 5 p.m. Then he left. J. R. R. Tolkien wrote. U.S. Army. e.g. This. i.e. That.",
    "He said \"stop.\" Then 'go.' Next “Yes.” ‘No.’ And (so.) Done",
    '(Mr. Jones) arrived. ((Dr. Who)) too. "Inc. Co. Ltd. Approx. Sept. Fig. A. B."',
    'Approx. 5. approx.5 approx.X approx. X ((((approx. X (((((((((approx. X """""""""sept. Y',
    "xxxxxxxxxxxxxxxxxxxxxxxxx. Yes. ((((((((((((((((((((xx. Y (((((((((((((((((((mr. Z a(((((((dr. Z",
    "今天天气很好。我们去公园吧！你去吗？好；走…… 他说：“好。”然后走了。",
    "English then Chinese.中文句子。 Mixed! 中文 again? 英文. Ok",
    "Tabs\tand\u00a0non-breaking\u2003spaces. Next\u3000one. 第二。\u00a0 ",
    "Wait... What?! Really?? Yes!!! No.\" Yes.' (Ok.) [Fine.] 「好。」『是。』 end",
    "Line one. Line\ntwo. Three\r\nfour.\n\nFive. Six\u2028seven.",
    "a.b.c. d.e. F.G. h. I. 1. 2. 3.14 is pi. ...",
    "Trailing punctuation only....   ",
    "İstanbul. İ. Next. ΣΑΣ. Σ. Ω.",
    ".Leading dot. .. . . A",
    "x.中x.中x.中" * 20,
    "(" * 30 + "approx. Next. " + "(" * 30 + "abc. Next.",
]

_PIECES = (
    [" ", " ", " ", "  ", "\t", "\u00a0", "\u3000", "\n"]
    + list(".!?。！？；…") * 2
    + list("\"'”’」』）)]“‘([「『")
    + ["A", "B", "Z", "a", "b", "x", "1", "7", "中", "文", "İ", "Σ", "é"]
    + ["word", "Word", "sentence", "x" * 12, "(" * 9]
    + sorted(_ABBREVIATIONS)
    + [a.capitalize() for a in sorted(_ABBREVIATIONS)]
    + ["...", "?!", '."', ".)", "。”", "U.S.", "e.g.", "p.m."]
)


def _random_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(_PIECES) for _ in range(n))


@pytest.mark.parametrize("text", EDGE_CASES)
def test_linear_splitter_equals_the_reference_on_edge_cases(text):
    assert split_sentences(text) == split_sentences_reference(text)


def test_linear_splitter_equals_the_reference_on_random_text():
    rng = random.Random(0)
    for trial in range(3000):
        text = _random_text(rng, rng.randint(1, 60))
        assert split_sentences(text) == split_sentences_reference(text), (trial, text)


def test_linear_splitter_equals_the_reference_on_random_text_with_long_words():
    # few spaces: long runs without white space before the periods (the bounded look-behind of the linear splitter)
    rng = random.Random(1)
    dense = [p for p in _PIECES if not p.isspace()]
    for trial in range(3000):
        text = "".join(rng.choice(dense) if rng.random() < 0.95 else " " for _ in range(rng.randint(1, 80)))
        assert split_sentences(text) == split_sentences_reference(text), (trial, text)


def test_a_long_one_line_document_splits_in_linear_time():
    sentence = "The quick brown fox jumps over the lazy dog near Mr. Smith's house. "
    line = sentence * 16000  # about 1 MB on one line
    t0 = time.perf_counter()
    out = split_sentences(line)
    seconds = time.perf_counter() - t0
    assert len(out) == 16000 and out[0] == sentence.strip()
    assert seconds < 10  # the quadratic splitter did not finish in 100 s; the linear one takes about a second


def test_read_corpus_reports_progress_in_bytes(tmp_path):
    from nlptool.core.nsp import read_corpus

    text = "Erste Zeile. Zweite Zeile.\n\n中文句子。第二句。\nLast one.\n"
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    seen: list[int] = []
    docs = read_corpus(path, on_progress=seen.append)
    assert docs == [["Erste Zeile.", "Zweite Zeile."], ["中文句子。", "第二句。", "Last one."]]
    assert sum(seen) == path.stat().st_size and len(seen) == 4
    jl = tmp_path / "c.jsonl"
    jl.write_text('{"text": "Ab cd. Ef gh."}\n{"text": "中文。"}\n', encoding="utf-8")
    seen.clear()
    assert read_corpus(jl, on_progress=seen.append) == [["Ab cd.", "Ef gh."], ["中文。"]]
    assert seen == [len(b"Ab cd. Ef gh."), len("中文。".encode())]
