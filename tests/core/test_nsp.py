"""nlptool.core.nsp: prompts, labels files, samples contrast, sentence splitting, NSP pairs, the NSP scorer and the
zero-shot classifiers (``classify_nsp``, ``classify_embedding``: one ``ZeroShotResult``).

The scorer is checked end to end on a tiny BERT whose NSP head is trained here, with plain transformers calls and
the Hugging Face convention (``labels=0``: B follows A), on a corpus where continuation is learnable and asymmetric:
each document is one sentence of "cue" words of topic k followed by one sentence of "body" words of topic k. Zero-shot
with the cue words as prompts (prefix) must then find the topic of body texts; a swapped segment order or IsNext
index would fail.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from nlptool.core.errors import InputError, NlptoolError
from nlptool.core.nsp import (
    IS_NEXT,
    NOT_NEXT,
    LabelPrompt,
    NSPScorer,
    ZeroShotResult,
    build_nsp_pairs,
    calibrate_content_free,
    check_template,
    classify_embedding,
    classify_nsp,
    fill_template,
    make_prompts,
    normalise_scores,
    pair_order,
    read_corpus,
    read_labels_file,
    samples_contrast,
    split_documents,
    split_sentences,
)
from tests.conftest import tiny_bert_config

# ------------------------------------------------------------------------------------------------ templates, labels


def test_fill_template():
    assert fill_template("The above news is about {}.", "sports") == "The above news is about sports."
    assert fill_template("{}", "x") == "x"


@pytest.mark.parametrize("template", ["no placeholder", "{} and {}", "{label} here", ""])
def test_template_needs_exactly_one_placeholder(template):
    with pytest.raises(NlptoolError, match="exactly one"):
        check_template(template)


def test_make_prompts_words_and_errors():
    prompts = make_prompts(["pos", "neg"], "It was {}.", {"pos": "great"})
    assert prompts == [LabelPrompt("pos", "It was great."), LabelPrompt("neg", "It was neg.")]
    with pytest.raises(NlptoolError, match="at least 2"):
        make_prompts(["only"], "{}")
    with pytest.raises(NlptoolError, match="twice"):
        make_prompts(["a", "a"], "{}")
    with pytest.raises(NlptoolError, match="exactly one"):
        make_prompts(["a", "b"], "It was {} {}.")


def test_labels_file_mapping_words_and_prompts(tmp_path):
    f = tmp_path / "labels.yaml"
    f.write_text(
        "template: 'The above news is about {}.'\n"
        "labels:\n"
        "  World: world\n"
        "  Sci/Tech: {word: science and technology}\n"
        "  Sports: {prompt: 'A game was played.'}\n"
        "  Business:\n",
        encoding="utf-8",
    )
    prompts, template = read_labels_file(f)
    assert template == "The above news is about {}."
    assert prompts == [
        LabelPrompt("World", "The above news is about world."),
        LabelPrompt("Sci/Tech", "The above news is about science and technology."),
        LabelPrompt("Sports", "A game was played."),
        LabelPrompt("Business", "The above news is about Business."),
    ]
    # a --template flag wins over the file's
    prompts, template = read_labels_file(f, "That is {}.")
    assert prompts[0].prompt == "That is world." and template == "That is {}."


def test_labels_file_list_and_json(tmp_path):
    f = tmp_path / "labels.json"
    f.write_text(json.dumps(["positive", {"label": "negative", "word": "bad"}, {"label": 3, "prompt": "Three."}]))
    prompts, _ = read_labels_file(f, "It is {}.")
    assert [(p.label, p.prompt) for p in prompts] == [
        ("positive", "It is positive."),
        ("negative", "It is bad."),
        ("3", "Three."),
    ]
    # SST-2 style: label names are the gold values 0/1
    g = tmp_path / "sst.yaml"
    g.write_text("'0': terrible\n'1': great\n")
    prompts, template = read_labels_file(g, "It was {}.")
    assert [p.label for p in prompts] == ["0", "1"] and prompts[1].prompt == "It was great."


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("a: [1, 2]\nb: x\n", "give a word"),
        ("just a string\n", "expected a mapping"),
        ("", "empty file"),
        ("a: {word: x, prompt: y}\nb: c\n", "give a word"),
        ("- {word: x}\n- b\n", "list item 1"),
        ("template: 'no slot'\nlabels: {a: x, b: y}\n", "exactly one"),
        ("a: x\n", "at least 2"),
        ("a: {prompt: ''}\nb: c\n", "empty prompt"),
        ("a: [unclosed\n", "invalid YAML"),
    ],
)
def test_labels_file_errors(tmp_path, text, match):
    f = tmp_path / "labels.yaml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(NlptoolError, match=match) as info:
        read_labels_file(f)
    assert str(f) in str(info.value)


def test_labels_file_missing(tmp_path):
    with pytest.raises(NlptoolError, match="does not exist"):
        read_labels_file(tmp_path / "nope.yaml")


def test_pair_order():
    assert pair_order("P", "T", "prefix") == ("P", "T")
    assert pair_order("P", "T", "suffix") == ("T", "P")
    with pytest.raises(NlptoolError, match="prefix or suffix"):
        pair_order("P", "T", "middle")


# ----------------------------------------------------------------------------------------------- scores and bins


def test_normalise_scores():
    out = normalise_scores(np.array([[0.2, 0.6], [0.0, 0.0], [1.0, 3.0]]))
    np.testing.assert_allclose(out, [[0.25, 0.75], [0.5, 0.5], [0.25, 0.75]])


def test_calibrate_content_free_by_hand():
    # prior = mean of the content-free rows = [0.75, 0.25]; row 1: [0.6/0.75, 0.4/0.25] = [0.8, 1.6] -> [1/3, 2/3]
    probs = np.array([[0.6, 0.4], [0.9, 0.1]])
    cf = np.array([[0.8, 0.2], [0.7, 0.3]])
    q, prior = calibrate_content_free(probs, cf)
    assert prior == pytest.approx([0.75, 0.25])
    assert q[0] == pytest.approx([1 / 3, 2 / 3])
    assert q[1] == pytest.approx([1.2 / 1.6, 0.4 / 1.6])  # [0.9/0.75, 0.1/0.25] = [1.2, 0.4]
    # a uniform prior changes nothing
    q2, _ = calibrate_content_free(probs, np.array([[0.5, 0.5]]))
    assert q2 == pytest.approx(probs)


def test_calibrate_content_free_errors():
    with pytest.raises(NlptoolError, match="same L"):
        calibrate_content_free(np.ones((2, 3)) / 3, np.ones((1, 2)) / 2)
    with pytest.raises(NlptoolError, match="probability 0"):
        calibrate_content_free(np.ones((2, 2)) / 2, np.array([[1.0, 0.0]]))


def test_samples_contrast_fixed_scores():
    # ranks (highest first): 0.9, 0.7, 0.5, 0.1 -> top half is bin 0
    assert samples_contrast([0.9, 0.1, 0.5, 0.7], 2).tolist() == [0, 1, 1, 0]
    # 7 samples, 3 bins: rank r -> floor(3r/7): sizes 3, 2, 2
    scores = [0.1, 0.7, 0.3, 0.9, 0.5, 0.2, 0.8]
    assert samples_contrast(scores, 3).tolist() == [2, 0, 1, 0, 1, 2, 0]
    # ties: input order decides (stable)
    assert samples_contrast([0.5, 0.5, 0.5, 0.5], 2).tolist() == [0, 0, 1, 1]
    assert samples_contrast([], 2).tolist() == []


def test_samples_contrast_bin_sizes_balanced():
    rng = np.random.default_rng(0)
    for n, k in [(10, 3), (101, 4), (5, 5), (3, 5)]:
        bins = samples_contrast(rng.random(n), k)
        sizes = np.bincount(bins, minlength=k)
        assert sizes.sum() == n and sizes.max() - sizes.min() <= 1


def test_samples_contrast_errors():
    with pytest.raises(NlptoolError, match="1-d"):
        samples_contrast(np.zeros((2, 2)), 2)
    with pytest.raises(NlptoolError, match="NaN"):
        samples_contrast([0.1, float("nan")], 2)
    with pytest.raises(NlptoolError, match="at least one bin"):
        samples_contrast([0.1], 0)


# --------------------------------------------------------------------------------------------- sentence splitting


def test_split_sentences_english():
    text = (
        "Mr. Smith went to Washington. He arrived at 3 p.m. on Monday! Did he? Yes. "
        'J. R. Tolkien wrote it. The U.S. economy grew 3.5 percent. "Quoted." (Bracketed.) 12 men came.'
    )
    assert split_sentences(text) == [
        "Mr. Smith went to Washington.",
        "He arrived at 3 p.m. on Monday!",
        "Did he?",
        "Yes.",
        "J. R. Tolkien wrote it.",
        "The U.S. economy grew 3.5 percent.",
        '"Quoted."',
        "(Bracketed.)",
        "12 men came.",
    ]


def test_split_sentences_chinese_and_mixed():
    assert split_sentences("今天天气很好。我们去公园吧！你觉得呢？“好啊。”他说。") == [
        "今天天气很好。",
        "我们去公园吧！",
        "你觉得呢？",
        "“好啊。”",
        "他说。",
    ]
    assert split_sentences("太好了!真的吗?是的；走吧…好") == ["太好了!", "真的吗?", "是的；", "走吧…", "好"]
    assert split_sentences("It works. 中文句子。Then English.") == ["It works.", "中文句子。", "Then English."]


def test_split_sentences_lines_and_blanks():
    assert split_sentences("Headline without stop\nBody one. Body two.\n\n") == [
        "Headline without stop",
        "Body one.",
        "Body two.",
    ]
    assert split_sentences("   ") == []
    assert split_sentences("no capital after. so no split") == ["no capital after. so no split"]


# ----------------------------------------------------------------------------------------------------- corpus


def test_read_corpus_text_and_jsonl(tmp_path):
    t = tmp_path / "c.txt"
    t.write_text("First doc. Second sentence.\nThird line\n\n\nOther doc. 其它。\n", encoding="utf-8")
    assert read_corpus(t) == [["First doc.", "Second sentence.", "Third line"], ["Other doc.", "其它。"]]
    j = tmp_path / "c.jsonl"
    j.write_text(
        json.dumps({"body": "A one. A two."}) + "\n\n" + json.dumps({"body": "B."}) + "\n" + json.dumps({"body": ""})
    )
    assert read_corpus(j, text_field="body") == [["A one.", "A two."], ["B."]]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"text": "ok"}\n{"txt": "x"}\n', r"c\.jsonl:2: field 'text': missing"),
        ('{"text": "ok"}\nnot json\n', r"c\.jsonl:2: invalid JSON"),
        ('{"text": 3}\n', r"c\.jsonl:1: field 'text': expected a string"),
        ("[1]\n", r"c\.jsonl:1: expected a JSON object"),
    ],
)
def test_read_corpus_errors(tmp_path, content, match):
    j = tmp_path / "c.jsonl"
    j.write_text(content)
    with pytest.raises(InputError, match=match):
        read_corpus(j)


def test_read_corpus_missing_and_binary(tmp_path):
    with pytest.raises(NlptoolError, match="does not exist"):
        read_corpus(tmp_path / "none.txt")
    b = tmp_path / "b.txt"
    b.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(NlptoolError, match="UTF-8"):
        read_corpus(b)


def test_build_nsp_pairs():
    docs = [[f"d{d}s{i}" for i in range(30)] for d in range(5)]
    pairs = build_nsp_pairs(docs, seed=3)
    assert len(pairs) == 5 * 29
    owner = {s: d for d, doc in enumerate(docs) for s in doc}
    for p in pairs:
        d, i = owner[p.a], docs[owner[p.a]].index(p.a)
        if p.label == IS_NEXT:
            assert p.b == docs[d][i + 1]
        else:
            assert p.label == NOT_NEXT and owner[p.b] != d
    share = sum(p.label == IS_NEXT for p in pairs) / len(pairs)
    assert 0.38 < share < 0.62
    assert build_nsp_pairs(docs, seed=3) == pairs
    assert build_nsp_pairs(docs, seed=4) != pairs
    sub = build_nsp_pairs(docs, seed=3, max_pairs=10)
    assert len(sub) == 10


def test_build_nsp_pairs_errors():
    with pytest.raises(NlptoolError, match="two sentences"):
        build_nsp_pairs([["a"], ["b"]])
    with pytest.raises(NlptoolError, match="at least 2 documents"):
        build_nsp_pairs([["a", "b", "c"]])


def test_split_documents():
    docs = [[f"d{i}"] for i in range(40)]
    train, held = split_documents(docs, 0.1, seed=0)
    assert len(held) == 4 and len(train) == 36
    assert sorted(map(tuple, train + held)) == sorted(map(tuple, docs))
    assert split_documents(docs, 0.1, seed=0) == (train, held)
    assert split_documents(docs, 0.0)[1] == []
    with pytest.raises(NlptoolError, match="fewer than 2"):
        split_documents(docs[:3], 0.5)


# ------------------------------------------------------------------------------------------- the scorer, end to end

TOPICS = 4


def _cue(k: int, rng: random.Random) -> str:
    """1-3 "cue" words of topic k (w0-w3 for topic 0, w16-w19 for topic 1, ...)."""
    return " ".join(f"w{16 * k + rng.randrange(4)}" for _ in range(rng.randint(1, 3)))


def _body(k: int, rng: random.Random) -> str:
    """2-5 "body" words of topic k (w8-w15 for topic 0, ...)."""
    return " ".join(f"w{16 * k + 8 + rng.randrange(8)}" for _ in range(rng.randint(2, 5)))


@pytest.fixture(scope="module")
def trained_nsp(tiny_bert_dir):
    """Tiny BERT whose NSP head learned that a body sentence follows a cue sentence of the same topic.

    Batches: half (cue_k, body_k) IsNext; NotNext: (cue_k, body_j) with j != k, and reversed (body_k, cue_k), so
    continuation depends on both the topic and the segment order. Trained with plain transformers calls and the
    Hugging Face label convention (0 = IsNext), independently of NSPScorer.
    """
    import torch
    from transformers import BertForNextSentencePrediction, BertTokenizerFast

    torch.manual_seed(0)
    rng = random.Random(0)
    tok = BertTokenizerFast.from_pretrained(tiny_bert_dir)
    config = tiny_bert_config(tok.vocab_size)
    model = BertForNextSentencePrediction(config)  # seeded init: the fit does not depend on other tests
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.eval()  # no dropout: a faster, steadier fit; gradients flow all the same
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from threads, and loses a lot on a busy machine
    try:
        _fit(model, tok, opt, rng)
    finally:
        torch.set_num_threads(threads)
    return NSPScorer(model, tok, max_length=64)


def _fit(model, tok, opt, rng) -> None:
    import torch

    for _step in range(200):
        batch = []
        for _ in range(32):
            k, u = rng.randrange(TOPICS), rng.random()
            if u < 0.5:
                batch.append((_cue(k, rng), _body(k, rng), IS_NEXT))
            elif u < 0.85:
                batch.append((_cue(k, rng), _body((k + rng.randrange(1, TOPICS)) % TOPICS, rng), NOT_NEXT))
            else:
                batch.append((_body(k, rng), _cue(k, rng), NOT_NEXT))
        enc = tok([a for a, _, _ in batch], [b for _, b, _ in batch], padding=True, return_tensors="pt")
        loss = model(**enc, labels=torch.tensor([y for _, _, y in batch])).loss  # HF: labels 0 = B follows A
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_zero_shot_nsp_finds_the_topic(trained_nsp):
    rng = random.Random(1)
    gold = [rng.randrange(TOPICS) for _ in range(120)]
    texts = [_body(k, rng) for k in gold]
    prompts = [f"w{16 * k} w{16 * k + 1}" for k in range(TOPICS)]  # cue words of each topic
    scores = trained_nsp.score(texts, prompts, position="prefix", batch_size=16)
    assert scores.shape == (120, TOPICS) and ((scores > 0) & (scores < 1)).all()
    acc = float((scores.argmax(axis=1) == np.array(gold)).mean())
    assert acc > 0.85, acc  # chance is 0.25
    # the segment order matters: the same pairs reversed (text first) look like NotNext
    reversed_scores = trained_nsp.score(texts, prompts, position="suffix")
    own = scores[np.arange(120), gold]
    assert own.mean() > 0.7 and reversed_scores[np.arange(120), gold].mean() < 0.3


def test_scorer_matches_plain_calls_and_order(trained_nsp):
    import torch

    texts = ["w8 w9 w10", "w24 w25", "w40 w41 w42 w43 w44 w45 w46 w47", "w56"]
    prompts = ["w0 w1", "w16", "w32 w33 w34"]
    got = trained_nsp.score(texts, prompts, position="suffix", batch_size=3)
    model, tok = trained_nsp.model, trained_nsp.tokenizer
    for i, t in enumerate(texts):
        for j, p in enumerate(prompts):
            enc = tok(t, p, return_tensors="pt")  # suffix: text is A, prompt is B
            assert enc["token_type_ids"][0].tolist() == [0] * (len(t.split()) + 2) + [1] * (len(p.split()) + 1)
            with torch.no_grad():
                want = torch.softmax(model(**enc).logits, -1)[0, 0].item()
            assert got[i, j] == pytest.approx(want, abs=1e-5)
    flat = trained_nsp.score_pairs([t for t in texts for _ in prompts], [p for _ in texts for p in prompts])
    np.testing.assert_allclose(flat.reshape(4, 3), got, atol=1e-6)


def test_scorer_truncates_the_text_not_the_prompt(trained_nsp):
    scorer = NSPScorer(trained_nsp.model, trained_nsp.tokenizer, max_length=10)
    ids = scorer.encode_pairs(["w0 w1 w2"], [" ".join(["w9"] * 30)], shorten="second")
    assert len(ids[0][0]) == 10 and ids[0][0][1:4] == trained_nsp.tokenizer("w0 w1 w2")["input_ids"][1:4]
    long_prompt = " ".join(["w3"] * 30)
    with pytest.raises(NlptoolError, match="does not fit"):
        scorer.encode_pairs(["w1"], [long_prompt], shorten="first")


def test_missing_nsp_head_is_an_error(tiny_bert_no_heads_dir):
    with pytest.raises(NlptoolError, match=r"no next-sentence-prediction \(NSP\) head.*nsp-adapt"):
        NSPScorer.load(str(tiny_bert_no_heads_dir))


def test_load_with_head(tiny_bert_dir):
    scorer = NSPScorer.load(str(tiny_bert_dir))
    assert scorer.score(["w1 w2"], ["a", "b"]).shape == (1, 2)


# ------------------------------------------------------------------------------ classify_nsp / classify_embedding


def _topic_texts(n: int = 60, seed: int = 1) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    gold = [rng.randrange(TOPICS) for _ in range(n)]
    return [_body(k, rng) for k in gold], gold


TOPIC_PROMPTS = [LabelPrompt(f"t{k}", f"w{16 * k} w{16 * k + 1}") for k in range(TOPICS)]


def test_classify_nsp_candidates_result(trained_nsp):
    texts, gold = _topic_texts()
    seen = []
    result = classify_nsp(trained_nsp, texts, TOPIC_PROMPTS, batch_size=16, progress=seen.append)
    assert isinstance(result, ZeroShotResult)
    assert (result.method, result.mapping, result.labels) == ("nsp", "candidates", ["t0", "t1", "t2", "t3"])
    assert result.prompts == [p.prompt for p in TOPIC_PROMPTS] and result.model == trained_nsp.name
    np.testing.assert_array_equal(result.scores, trained_nsp.score(texts, result.prompts, batch_size=16))
    np.testing.assert_array_equal(result.probs, result.scores / result.scores.sum(axis=1, keepdims=True))
    np.testing.assert_array_equal(result.pred, result.scores.argmax(axis=1))
    assert result.pred_labels == [f"t{k}" for k in result.pred]
    assert result.pairs == sum(seen) == 60 * TOPICS and result.seconds > 0
    assert result.content_free_prior is None and result.content_free_texts is None
    row = result.row(3)
    assert list(row) == ["scores", "probs", "pred"] and list(row["scores"]) == result.labels
    assert row["probs"] == result.probs[3].tolist() and row["pred"] == result.pred_labels[3]
    m = result.metrics(gold)
    assert m["accuracy"] > 0.85 and m["accuracy"] == np.mean(result.pred == np.array(gold))  # chance: 0.25
    cm = np.array(m["confusion_matrix"])
    assert cm.sum() == 60 and cm.trace() == round(60 * m["accuracy"])
    assert sum(m["predicted_counts"].values()) == 60 and m["rows"] == 60 and m["pairs"] == 240
    assert m["majority_accuracy"] == max(gold.count(k) for k in range(TOPICS)) / 60
    assert set(result.metrics()) == {"rows", "labels", "prompts", "pairs", "seconds", "pairs_per_s", "predicted_counts"}


def test_classify_nsp_content_free_calibration(trained_nsp):
    texts, _ = _topic_texts(20)
    plain = classify_nsp(trained_nsp, texts, TOPIC_PROMPTS, position="suffix")
    result = classify_nsp(trained_nsp, texts, TOPIC_PROMPTS, position="suffix", calibrate="content-free")
    assert result.content_free_texts == ["N/A", "", "[MASK]"]
    cf = normalise_scores(trained_nsp.score(result.content_free_texts, result.prompts, position="suffix"))
    want, prior = calibrate_content_free(plain.probs, cf)
    np.testing.assert_allclose(result.content_free_prior, cf.mean(axis=0), atol=1e-15)
    np.testing.assert_array_equal(result.content_free_prior, prior)
    np.testing.assert_array_equal(result.probs, want)
    np.testing.assert_array_equal(result.scores, plain.scores)  # the scores stay raw
    np.testing.assert_array_equal(result.pred, want.argmax(axis=1))
    assert list(result.metrics()["content_free_prior"]) == result.labels


def test_classify_nsp_samples_mapping(trained_nsp):
    texts, _ = _topic_texts(9)
    result = classify_nsp(trained_nsp, texts, TOPIC_PROMPTS[:3], mapping="samples")
    want = trained_nsp.score_pairs([TOPIC_PROMPTS[0].prompt] * 9, texts)
    np.testing.assert_array_equal(result.scores, want)
    np.testing.assert_array_equal(result.pred, samples_contrast(want, 3))
    assert result.probs is None and result.pairs == 9 and np.bincount(result.pred).tolist() == [3, 3, 3]
    assert list(result.row(0)) == ["score", "pred"]
    pair = classify_nsp(trained_nsp, texts, TOPIC_PROMPTS[:2], mapping="samples", texts2=texts[::-1])
    np.testing.assert_array_equal(pair.scores, trained_nsp.score_pairs(texts, texts[::-1], shorten="longest"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mapping": "samples", "calibrate": "content-free"}, "candidates mapping"),
        ({"texts2": ["w1"]}, "samples mapping"),
        ({"mapping": "ranks"}, "unknown mapping"),
        ({"calibrate": "platt"}, "unknown calibration"),
        ({"position": "middle"}, "unknown prompt position"),
    ],
)
def test_classify_nsp_errors(trained_nsp, kwargs, match):
    with pytest.raises(NlptoolError, match=match):
        classify_nsp(trained_nsp, ["w8 w9"], TOPIC_PROMPTS, **kwargs)


def test_classify_needs_texts_and_two_labels(trained_nsp):
    with pytest.raises(NlptoolError, match="no texts"):
        classify_nsp(trained_nsp, [], TOPIC_PROMPTS)
    with pytest.raises(NlptoolError, match="at least 2"):
        classify_nsp(trained_nsp, ["w8"], TOPIC_PROMPTS[:1])


def test_classify_embedding_result(tiny_bert_dir):
    from scipy.special import softmax

    from nlptool.core.encoder import SentenceEncoder

    encoder = SentenceEncoder.load(str(tiny_bert_dir))
    texts = ["w8 w9 w10", "w24 w25", "w40 w41 w42", "w56"]
    prompts = make_prompts(["w3", "w19", "w35"], "about {} .")
    seen = []
    result = classify_embedding(encoder, texts, prompts, temperature=0.1, device="cpu", progress=seen.append)
    a = encoder.encode(texts, normalize=True).astype(np.float64)
    b = encoder.encode([p.prompt for p in prompts], normalize=True).astype(np.float64)
    np.testing.assert_allclose(result.scores, a @ b.T, atol=1e-12)
    np.testing.assert_allclose(result.probs, softmax(result.scores / 0.1, axis=1), atol=1e-12)
    np.testing.assert_array_equal(result.pred, result.scores.argmax(axis=1))
    assert (result.method, result.mapping, result.pairs, sum(seen)) == ("embedding", "candidates", 12, 7)
    calibrated = classify_embedding(encoder, texts, prompts, temperature=0.1, calibrate="content-free")
    cf = encoder.encode(calibrated.content_free_texts, normalize=True).astype(np.float64)
    want, prior = calibrate_content_free(result.probs, softmax(cf @ b.T / 0.1, axis=1))
    np.testing.assert_allclose(calibrated.probs, want, atol=1e-12)
    np.testing.assert_allclose(calibrated.content_free_prior, prior, atol=1e-12)
    with pytest.raises(NlptoolError, match="temperature"):
        classify_embedding(encoder, texts, prompts, temperature=0)
