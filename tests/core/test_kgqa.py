"""kg-qa core: subject splitting, the KgCLUE metric, KB/QA reading, the trie logits processor, constrained decoding
with random models (every output must be a KB key), a tiny model that learns a 35-triple KB, and UniLM masks."""

from __future__ import annotations

import functools
import math
import random

import pytest
import torch

from nlptool.core import kgqa
from nlptool.core.errors import InputError, NlptoolError
from nlptool.core.trie import TokenTrie
from tests.conftest import SAMPLE_DATA, save_tiny_bart

KB_FILE = SAMPLE_DATA / "kgqa_kb.tsv"
TRAIN_FILE = SAMPLE_DATA / "kgqa_train.jsonl"


@pytest.fixture(autouse=True)
def one_thread():
    # tiny models: one thread is faster, and immune to other processes on a small machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- subjects and answers ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("subject", "base", "meaning"),
    [
        ("守望星光（韩玉玲、刘东考演唱歌曲）", "守望星光", "韩玉玲、刘东考演唱歌曲"),
        ("武汉交通职业学院计算机协会", "武汉交通职业学院计算机协会", ""),
        ("星河纪元（科幻小说（第二部））", "星河纪元", "科幻小说（第二部）"),  # nested: the outer pair
        ("A（x）B（y）", "A（x）B", "y"),  # only the final parenthesised part
        ("A（B（C）", "A（B", "C"),  # the final balanced group
        ("AB）", "AB）", ""),  # unbalanced: not split
        ("A（B）C", "A（B）C", ""),  # parentheses not at the end
        ("（仅括号）", "（仅括号）", ""),  # nothing before them
        ("A(B)", "A(B)", ""),  # ASCII parentheses are part of the name
    ],
)
def test_split_subject(subject, base, meaning):
    assert kgqa.split_subject(subject) == (base, meaning)
    if meaning:
        assert kgqa.join_subject(base, meaning) == subject


def test_parse_answer():
    assert kgqa.parse_answer("a ||| b ||| c") == ("a", "b", "c")
    assert kgqa.parse_answer("a |||  ||| ") == ("a", "", "")
    with pytest.raises(InputError, match=r"qa.jsonl:7: field 'answer'.*found 2 part"):
        kgqa.parse_answer("a ||| b", path="qa.jsonl", line=7)
    with pytest.raises(InputError, match="found 4 part"):
        kgqa.parse_answer("a ||| b ||| c ||| d")
    with pytest.raises(InputError, match="found int"):
        kgqa.parse_answer(3)


# -- the KgCLUE metric ---------------------------------------------------------------------------------------------
def _lcs_oracle(a: str, b: str) -> int:
    @functools.cache
    def go(i: int, j: int) -> int:
        if i == len(a) or j == len(b):
            return 0
        if a[i] == b[j]:
            return 1 + go(i + 1, j + 1)
        return max(go(i + 1, j), go(i, j + 1))

    return go(0, 0)


def test_lcs_against_recursive_oracle():
    rng = random.Random(0)
    for _ in range(300):
        a = "".join(rng.choices("abcd", k=rng.randint(0, 9)))
        b = "".join(rng.choices("abcd", k=rng.randint(0, 9)))
        assert kgqa.lcs_length(a, b) == _lcs_oracle(a, b)
    assert kgqa.lcs_length("abcbdab", "bdcaba") == 4  # CLRS's example


def test_kgclue_scores_hand_computed():
    preds = ["Ab  C ||| 出品 ||| 韩玉玲原创音乐", "x ||| 作者 ||| 张三", "y ||| p ||| "]
    golds = ["ab c ||| 出品公司 ||| 韩玉玲原创音乐", "x ||| 作者 ||| 张四", "z ||| p ||| "]
    s = kgqa.kgclue_scores(preds, golds)  # fractions, not percentages
    # row 1: S equal after lower-casing and whitespace collapsing; P "出品" vs "出品公司": F1 = 2·2/6; O equal
    # row 2: S, P equal; O "张三" vs "张四": LCS 1 → F1 = 2·1/4 = 0.5
    # row 3: S differs (F1 0); P equal; O both empty → EM 1 but F1 0 (the script's rule for two empty strings)
    assert s["EM_S"] == pytest.approx(2 / 3)
    assert s["EM_P"] == pytest.approx(2 / 3)
    assert s["EM_O"] == pytest.approx(2 / 3)
    assert s["EM_All"] == pytest.approx(0.0)
    assert s["F1_S"] == pytest.approx((1 + 1 + 0) / 3)
    assert s["F1_P"] == pytest.approx((4 / 6 + 1 + 1) / 3)
    assert s["F1_O"] == pytest.approx((1 + 0.5 + 0) / 3)
    # All: concatenations "ab c出品韩玉玲原创音乐" (13 chars) vs "ab c出品公司韩玉玲原创音乐" (15), LCS 13 → 26/28
    f1_all_1 = 26 / 28
    f1_all_2 = 2 * 4 / 10  # "x作者张三" vs "x作者张四": LCS 4
    f1_all_3 = 2 * 1 / 4  # "yp" vs "zp"
    assert s["F1_All"] == pytest.approx((f1_all_1 + f1_all_2 + f1_all_3) / 3)
    assert s["Score"] == pytest.approx(0.5 * s["EM_O"] + 0.5 * s["F1_O"])
    with pytest.raises(NlptoolError, match="pair by position"):
        kgqa.kgclue_scores(preds[:2], golds)


# -- reading -------------------------------------------------------------------------------------------------------
def test_read_kb_groups_objects_and_reports_bad_lines(tmp_path):
    kb = kgqa.read_kb(KB_FILE)
    assert kb.triples == 35 and len(kb) == 34
    i = kb.index[("陆远舟", "代表作品")]
    assert kb.objects[i] == ["星河纪元", "云海行记"]
    bad = tmp_path / "kb.tsv"
    bad.write_text("a\tb\tc\n\nd\te\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"kb.tsv:3: expected 3 tab-separated fields.*found 2"):
        kgqa.read_kb(bad)
    bad.write_text("a\t\tc\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"kb.tsv:1: field 'predicate': empty predicate"):
        kgqa.read_kb(bad)
    with pytest.raises(NlptoolError, match="does not exist"):
        kgqa.read_kb(tmp_path / "missing.tsv")


def test_read_qa_and_answers_not_in_kb(tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text(
        '{"question": "陆远舟是做什么的？", "answer": "陆远舟 ||| 职业 ||| 作家"}\n'
        '{"question": "q2", "answer": "无此人 ||| 职业 ||| 作家"}\n',
        encoding="utf-8",
    )
    rows = kgqa.read_qa(str(qa))
    missing = kgqa.answers_not_in_kb(kgqa.read_kb(KB_FILE), rows)
    assert [m.line for m in missing] == [2]
    qa.write_text('{"question": "q", "answer": "a ||| b"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"qa.jsonl:1: field 'answer'"):
        kgqa.read_qa(str(qa))
    qa.write_text('{"question": ""}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"qa.jsonl:1: field 'question'"):
        kgqa.read_qa(str(qa), require_answer=False)


def test_char_codec_key_ids():
    codec = kgqa.CharCodec.from_texts(["守望星光（韩玉玲）", "出品公司", "a  b"])
    ids = kgqa.key_ids(codec, "守望星光（韩玉玲）", "出品公司")
    sep, end = codec.sep_id, codec.end_id
    assert ids == [*codec.encode("守望星光"), sep, *codec.encode("出品公司"), sep, *codec.encode("韩玉玲"), end]
    assert codec.decode(codec.encode("守望星光")) == "守望星光"
    assert codec.encode("a \t b") == codec.encode("a b")  # whitespace runs are one space
    assert codec.encode("未见")[0] == codec.unk_id


# -- the logits processor --------------------------------------------------------------------------------------------
def _toy_trie() -> TokenTrie:
    # vocab 0..9; root 1, end 2, sep 3; keys "5 3 6 3 2", "5 3 7 3 2", "8 3 6 3 2"
    trie, _ = TokenTrie.build([([5, 3, 6, 3], 0), ([5, 3, 7, 3], 1), ([8, 3, 6, 3], 2)], root=1, end=2)
    return trie


def test_processor_masks_and_renormalises():
    trie = _toy_trie()
    scores = torch.log_softmax(torch.randn(2, 10), -1)
    ids = torch.tensor([[1, 5, 3], [1, 9, 9]])  # a valid prefix; one that left the trie
    out = kgqa.TrieLogitsProcessor(trie, num_beams=2)(ids, scores.clone())
    finite = [torch.isfinite(out[r]).nonzero().flatten().tolist() for r in range(2)]
    assert finite == [[6, 7], [2]]
    assert torch.allclose(out[0, [6, 7]], scores[0, [6, 7]])  # mask-only keeps the model's log-probs
    ren = kgqa.TrieLogitsProcessor(trie, num_beams=2, renormalize=True)(ids, scores.clone())
    assert torch.exp(ren[0]).sum().item() == pytest.approx(1.0)
    p = torch.exp(scores[0, [6, 7]])
    assert torch.allclose(torch.exp(ren[0, [6, 7]]), p / p.sum())


def test_processor_subject_in_question_and_lookahead():
    trie = _toy_trie()
    scores = torch.log_softmax(torch.zeros(1, 10), -1)
    root = torch.tensor([[1]])
    plain = kgqa.TrieLogitsProcessor(trie, [[4, 8, 6]], num_beams=1)(root, scores.clone())
    assert torch.isfinite(plain[0]).nonzero().flatten().tolist() == [5, 8]
    proc = kgqa.TrieLogitsProcessor(trie, [[4, 8, 6]], num_beams=1, subject_in_question=True, sep_id=3)
    proc.scores_are_logprobs = True
    out = proc(root, scores.clone())
    assert torch.isfinite(out[0]).nonzero().flatten().tolist() == [8]  # only "8" occurs in the question
    # no KB subject in the question: fall back to the trie alone
    proc = kgqa.TrieLogitsProcessor(trie, [[9, 9]], num_beams=1, subject_in_question=True, sep_id=3)
    proc.scores_are_logprobs = True
    assert torch.isfinite(proc(root, scores.clone())[0]).nonzero().flatten().tolist() == [5, 8]
    # look-ahead after the subject "5": the question holds 7, so "7" covers one more question token than "6"
    proc = kgqa.TrieLogitsProcessor(trie, [[5, 7]], num_beams=1, lookahead=True, sep_id=3)
    proc.scores_are_logprobs = True
    prefix = torch.tensor([[1, 5, 3]])
    out = proc(prefix, scores.clone())
    # weights: w(7) = 1 + (LCS([5,3,7,3,2],[5,7]) - LCS([5,3],[5,7])) = 1 + (2 - 1) = 2, w(6) = 1 + 0 = 1
    assert out[0, 7].item() == pytest.approx(scores[0, 7].item() / 2)
    assert out[0, 6].item() == pytest.approx(scores[0, 6].item())
    assert out[0, 7] > out[0, 6]


def test_token_lcs():
    assert kgqa.token_lcs([1, 2, 3, 4], [2, 4, 9]) == 2
    assert kgqa.token_lcs([], [1]) == 0


# -- decoding with models --------------------------------------------------------------------------------------------
def _tiny_bart(kb, questions, seed=0, **size):
    torch.manual_seed(seed)
    args = {"d_model": 32, "layers": 1, "heads": 2, "ffn": 64, "dropout": 0.0, **size}
    return kgqa.KgqaModel.create(kb, questions, **args)


@pytest.mark.parametrize(
    "options",
    [
        kgqa.DecodeOptions(num_beams=4, top_k=4),
        kgqa.DecodeOptions(num_beams=4, top_k=4, renormalize=True, lookahead=True),
        kgqa.DecodeOptions(num_beams=3, top_k=3, subject_in_question=True),
        kgqa.DecodeOptions(num_beams=1, top_k=1),
    ],
)
def test_random_model_outputs_are_all_kb_keys(options):
    kb = kgqa.read_kb(KB_FILE)
    rows = kgqa.read_qa(str(TRAIN_FILE))
    model = _tiny_bart(kb, [r.question for r in rows], seed=3)
    cands = model.answer([r.question for r in rows], options)
    assert len(cands) == len(rows)
    for cs in cands:
        assert 1 <= len(cs) <= options.top_k
        for c in cs:
            assert c.in_kb and kb.has_triple(c.subject, c.predicate, c.object)
            assert math.isfinite(c.score) and c.score <= 1e-6
        assert [c.score for c in cs] == sorted((c.score for c in cs), reverse=True)


def test_unconstrained_outputs_are_flagged():
    kb = kgqa.read_kb(KB_FILE)
    rows = kgqa.read_qa(str(TRAIN_FILE))[:4]
    model = _tiny_bart(kb, [r.question for r in rows], seed=3)
    cands = model.answer([r.question for r in rows], kgqa.DecodeOptions(num_beams=2, constrained=False))
    for cs in cands:  # a random model's free output is (almost surely) no key; it then has no object
        c = cs[0]
        assert c.in_kb == kb.has_triple(c.subject, c.predicate, c.object) or (not c.in_kb and c.object == "")
    with pytest.raises(NlptoolError, match="trie only"):
        model.answer(["q"], kgqa.DecodeOptions(constrained=False, lookahead=True))
    with pytest.raises(NlptoolError, match="top_k"):
        model.answer(["q"], kgqa.DecodeOptions(num_beams=2, top_k=3))


def test_tiny_model_learns_the_sample_kb(tmp_path):
    """A 35-triple KB: a small char BART overfits its training questions in seconds and then answers them exactly."""
    from nlptool.core.train import TrainConfig

    kb = kgqa.read_kb(KB_FILE)
    rows = kgqa.read_qa(str(TRAIN_FILE))
    model = _tiny_bart(kb, [r.question for r in rows], seed=0, d_model=64, layers=2, heads=4, ffn=128)
    config = TrainConfig(epochs=60, batch_size=8, lr=3e-3, warmup_ratio=0.05, device="cpu", log_every=0, seed=0)
    kgqa.fit(model, rows, config)
    cands = model.answer([r.question for r in rows], kgqa.DecodeOptions(num_beams=3, subject_in_question=True))
    scores = kgqa.kgclue_scores(kgqa.predictions_of(cands), [kgqa.format_answer(*r.answer) for r in rows])
    assert scores["EM_All"] == 1.0
    # saved and loaded, it answers the same; the KB travels with the folder
    model.save(tmp_path / "m", kb_path=str(KB_FILE))
    again = kgqa.KgqaModel.load(tmp_path / "m")
    cands2 = again.answer([r.question for r in rows], kgqa.DecodeOptions(num_beams=3, subject_in_question=True))
    assert kgqa.predictions_of(cands2) == kgqa.predictions_of(cands)


# -- UniLM -----------------------------------------------------------------------------------------------------------
def test_unilm_attention_bias_pattern():
    seg = torch.tensor([[0, 0, 1, 1, 1]])
    pad = torch.tensor([[1, 1, 1, 1, 0]])
    bias = kgqa.UniLMBackbone.attention_bias(seg, pad, torch.float32)
    assert bias.shape == (1, 1, 5, 5) and bias.dtype == torch.float32
    see = (bias[0, 0] == 0).int().tolist()
    assert see == [
        [1, 1, 0, 0, 0],  # question tokens see the question only
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],  # key tokens see the question and the key up to themselves
        [1, 1, 1, 1, 0],
        [1, 1, 1, 1, 0],  # never the padding
    ]


def test_unilm_random_model_outputs_are_kb_keys(tiny_bert_dir, tmp_path):
    kb_file = tmp_path / "kb.tsv"
    kb_file.write_text("w1 w2\ta\tw5\nw1 w2（w3）\tb\tw6\nw4\ta b\tw7\nw4\tc\tw8\n", encoding="utf-8")
    kb = kgqa.read_kb(kb_file)
    model = kgqa.KgqaModel.create(kb, [], model=str(tiny_bert_dir))
    assert model.config["backbone"] == "unilm"
    cands = model.answer(["w1 w2 a", "w4 c"], kgqa.DecodeOptions(num_beams=3, top_k=3, lookahead=True))
    for cs in cands:
        assert cs and all(c.in_kb and kb.has_triple(c.subject, c.predicate, c.object) for c in cs)
    # training loss runs through the 4-D float mask, and the mask matters: key tokens cannot see the future
    pairs = kgqa.training_pairs(
        model, [kgqa.QAExample(1, "w1 w2 a", ("w1 w2", "a", "w5"), {}), kgqa.QAExample(2, "w4", ("w4", "c", "w8"), {})]
    )
    batch = model.backbone.collate(pairs)
    loss = model.backbone.loss(model.backbone.model, batch)
    assert torch.isfinite(loss)
    logits = model.backbone._logits(model.backbone.model, batch)
    changed = {k: v.clone() for k, v in batch.items()}
    last = int(batch["pad"][0].sum()) - 1
    changed["input_ids"][0, last] = 7  # change the final key token: earlier positions must not move
    logits2 = model.backbone._logits(model.backbone.model, changed)
    assert torch.allclose(logits[0, :last], logits2[0, :last], atol=1e-5)
    assert not torch.allclose(logits[0, last], logits2[0, last])


W_KB = "w1 w2\ta\tw5\nw1 w2（w3）\tb\tw6\nw4\ta b\tw7\nw4\tc\tw8\n"


@pytest.mark.parametrize("copy", [True, False])
def test_copy_and_plain_bart_outputs_are_kb_keys(copy):
    kb = kgqa.read_kb(KB_FILE)
    rows = kgqa.read_qa(str(TRAIN_FILE))[:6]
    model = _tiny_bart(kb, [r.question for r in rows], seed=1, copy=copy)
    assert getattr(model.backbone.model.config, "kgqa_copy", False) == copy
    cands = model.answer([r.question for r in rows], kgqa.DecodeOptions(num_beams=3, top_k=3))
    assert all(c.in_kb for cs in cands for c in cs)
    if copy:  # the pointer-generator returns normalised log-probabilities
        batch = model.backbone.collate(kgqa.training_pairs(model, kgqa.read_qa(str(TRAIN_FILE))[:2]))
        logits = model.backbone.model(**batch).logits
        assert torch.allclose(logits.exp().sum(-1), torch.ones(logits.shape[:2]), atol=1e-4)


def test_pretrained_seq2seq_backbone_round_trip(tiny_seq2seq_dir, tmp_path):
    kb_file = tmp_path / "kb.tsv"
    kb_file.write_text(W_KB, encoding="utf-8")
    kb = kgqa.read_kb(kb_file)
    model = kgqa.KgqaModel.create(kb, [], model=str(tiny_seq2seq_dir))
    assert model.config["backbone"] == "seq2seq"
    assert model.codec.start_id == 2 and model.codec.end_id == 3  # [CLS] starts, [SEP] ends every key
    opts = kgqa.DecodeOptions(num_beams=3, top_k=3, renormalize=True)
    cands = model.answer(["w1 w2 a", "w4 c"], opts)
    assert all(cs and all(c.in_kb for c in cs) for cs in cands)
    model.save(tmp_path / "m", kb_path=str(kb_file))
    again = kgqa.KgqaModel.load(tmp_path / "m")
    assert again.config["backbone"] == "seq2seq"
    assert kgqa.predictions_of(again.answer(["w1 w2 a", "w4 c"], opts)) == kgqa.predictions_of(cands)


def test_unilm_learns_a_tiny_kb(tiny_bert_dir, tmp_path):
    """UniLM training through the shared loop: a 4-key KB, questions made of the key's own tokens."""
    from nlptool.core.train import TrainConfig

    kb_file = tmp_path / "kb.tsv"
    kb_file.write_text(W_KB, encoding="utf-8")
    kb = kgqa.read_kb(kb_file)
    torch.manual_seed(0)
    model = kgqa.KgqaModel.create(kb, [], model=str(tiny_bert_dir), backbone="unilm")
    rows = [
        kgqa.QAExample(i + 1, q, t, {})
        for i, (q, t) in enumerate(
            [
                ("w1 w2 a", ("w1 w2", "a", "w5")),
                ("w1 w2 w3 b", ("w1 w2（w3）", "b", "w6")),
                ("w4 a b", ("w4", "a b", "w7")),
                ("w4 c", ("w4", "c", "w8")),
            ]
        )
    ]
    # 120 epochs: at 80, 3 of 8 random tiny BERTs had not yet separated the keys, so the outcome hung on the fixture's
    # random init and on CPU rounding (it failed in one test order); at 120 all of 16 do
    kgqa.fit(model, rows, TrainConfig(epochs=120, batch_size=4, lr=3e-3, warmup_ratio=0.0, device="cpu", log_every=0))
    cands = model.answer([r.question for r in rows], kgqa.DecodeOptions(num_beams=2))
    assert kgqa.predictions_of(cands) == [kgqa.format_answer(*r.answer) for r in rows]
    model.save(tmp_path / "m", kb_path=str(kb_file))
    again = kgqa.KgqaModel.load(tmp_path / "m")
    assert again.config["backbone"] == "unilm"
    assert kgqa.predictions_of(again.answer([r.question for r in rows], kgqa.DecodeOptions(num_beams=2))) == [
        kgqa.format_answer(*r.answer) for r in rows
    ]


# -- reported scores equal teacher-forced log-probabilities -----------------------------------------------------------
def _teacher_forced_score(model, question: str, cand, opts) -> float:
    """The key's score recomputed by teacher forcing: one forward pass over the whole key, then per step the model's
    log-probability of the key's token among the trie's allowed tokens (mask-only), divided by Su's look-ahead weight
    (``lookahead``) and renormalised over the allowed tokens (``renormalize``)."""
    bb = model.backbone
    key = kgqa.key_ids(model.codec, cand.subject, cand.predicate)
    q = model.encode_questions([question])[0]
    with torch.no_grad():
        batch = bb.collate([(q, key)])
        if isinstance(bb, kgqa.UniLMBackbone):
            start = len(q) - 1  # the position of the root ([SEP] ending the question) predicts the first key token
            logits = bb._logits(bb.model, batch)[0, start : start + len(key)]
        else:
            out = bb.model(**batch)  # labels → decoder inputs [root, key[:-1]]
            logits = out.logits[0, : len(key)]
    lp = torch.log_softmax(logits.double(), -1)
    trie = model.trie
    path = [trie.root, *key]
    sep = model.codec.sep_id
    total = 0.0
    for i, tok in enumerate(key):
        prefix = path[: i + 1]
        allowed = trie.allowed(trie.walk(prefix)).tolist()
        values = {t: lp[i, t].item() for t in allowed}
        if opts.lookahead and sep in prefix[1:] and len(allowed) > 1:
            done = kgqa.token_lcs(prefix[1:], q)
            for t in allowed:
                gains = [kgqa.token_lcs(k[1:], q) - done for k, _ in trie.complete([*prefix, t])]
                values[t] /= max(1, 1 + max(gains))
        if opts.renormalize:
            norm = torch.logsumexp(torch.tensor(list(values.values()), dtype=torch.float64), 0).item()
            values = {t: v - norm for t, v in values.items()}
        total += values[tok]
    return total


@pytest.fixture(scope="module")
def score_models(tmp_path_factory, tiny_bert_dir):
    tmp = tmp_path_factory.mktemp("score-models")
    kb_file = tmp / "kb.tsv"
    kb_file.write_text(W_KB + "w9 w10\ta\tw11\nw9 w10（w12）\tc\tw13\n", encoding="utf-8")
    kb = kgqa.read_kb(kb_file)
    save_tiny_bart(tiny_bert_dir, tmp / "bart")
    torch.manual_seed(0)
    models = {
        "bart-char": _tiny_bart(kb, ["w1 w2 a", "w9 w10 c"], seed=5),
        "seq2seq": kgqa.KgqaModel.create(kb, [], model=str(tmp / "bart")),
        "unilm": kgqa.KgqaModel.create(kb, [], model=str(tiny_bert_dir), backbone="unilm"),
    }
    for m in models.values():
        m.backbone.model.eval()
    return models


@pytest.mark.parametrize("backbone", ["bart-char", "seq2seq", "unilm"])
@pytest.mark.parametrize("num_beams", [1, 2, 5])
@pytest.mark.parametrize(
    "mode", [{}, {"renormalize": True}, {"lookahead": True}, {"renormalize": True, "lookahead": True}]
)
def test_reported_score_is_the_teacher_forced_log_probability(score_models, backbone, num_beams, mode):
    """Greedy search used to apply log-softmax a second time to the trie processor's masked log-probabilities, so with
    --num-beams 1 it reported renormalised scores even without --renormalize."""
    model = score_models[backbone]
    opts = kgqa.DecodeOptions(num_beams=num_beams, top_k=num_beams, **mode)
    questions = ["w1 w2 a", "w9 w10 w12 c", "w4 a b"]
    for question, cands in zip(questions, model.answer(questions, opts), strict=True):
        assert cands
        for c in cands:
            expected = _teacher_forced_score(model, question, c, opts)
            assert c.score == pytest.approx(expected, abs=1e-3), (question, c.answer)


# -- the trie loss (kg-qa train --trie-loss) --------------------------------------------------------------------------
def test_trie_choices_hand_computed():
    trie = _toy_trie()  # keys (root 1) 5 3 6 3 2 / 5 3 7 3 2 / 8 3 6 3 2
    got = kgqa.trie_choices(trie, [5, 3, 6, 3, 2])
    assert [(t, a.tolist()) for t, a in got] == [(0, [5, 8]), (2, [6, 7])]
    assert [(t, a.tolist()) for t, a in kgqa.trie_choices(trie, [8, 3, 6, 3, 2])] == [(0, [5, 8])]
    # a key that leaves the trie (an answer missing from the KB) stops before the token the trie does not allow
    assert [(t, a.tolist()) for t, a in kgqa.trie_choices(trie, [5, 3, 9, 3, 2])] == [(0, [5, 8])]
    assert kgqa.trie_choices(trie, [9, 3, 6, 3, 2]) == []


def test_trie_loss_per_token_against_a_masked_softmax():
    """Oracle: a dense (B, T, V) mask of the trie's allowed tokens, log-softmax over it, the label's entry."""
    trie = _toy_trie()
    keys = [[5, 3, 7, 3, 2], [8, 3, 6, 3, 2], [5, 3, 9, 3, 2]]
    labels = torch.tensor([k + [-100] for k in keys[:2]] + [keys[2] + [-100]])
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 10, requires_grad=True)
    choices = [kgqa.trie_choices(trie, k) for k in keys]
    batch = kgqa.trie_tensors(choices, [0, 0, 0], 6)
    got = kgqa.trie_loss_per_token(logits, labels, batch).view(3, 6)
    expected = torch.zeros(3, 6)
    for i, ch in enumerate(choices):
        for t, allowed in ch:
            mask = torch.full((10,), float("-inf"))
            mask[torch.as_tensor(allowed)] = 0.0
            expected[i, t] = -torch.log_softmax(logits[i, t].detach() + mask, -1)[labels[i, t]]
    assert torch.allclose(got.detach(), expected, atol=1e-6)
    assert expected[0, 2] > 0 and expected[0, 1] == 0 and expected[2, 2] == 0  # forced and off-trie tokens: 0
    # log-probabilities in place of logits give the same loss (the copy model's output)
    again = kgqa.trie_loss_per_token(torch.log_softmax(logits, -1), labels, batch).view(3, 6)
    assert torch.allclose(again, got, atol=1e-5)
    got.sum().backward()  # differentiable
    assert logits.grad is not None and logits.grad[0, 1].abs().sum() == 0  # a forced token gets no gradient


@pytest.mark.parametrize("backbone", ["bart-char", "seq2seq", "unilm"])
def test_trie_loss_is_the_renormalised_key_score(score_models, backbone):
    """Summed over a key, the trie loss is minus the key's renormalised score, which the decoder reports (checked
    above against teacher forcing): the loss trains exactly what --renormalize decodes. Each backbone puts key token
    t in its own column (seq2seq: t; UniLM: after the question); the loss adds weight × the token mean."""
    model = score_models[backbone]
    bb = model.backbone
    opts = kgqa.DecodeOptions(num_beams=2, top_k=2, renormalize=True)
    questions = ["w1 w2 a", "w9 w10 w12 c"]
    for question, cands in zip(questions, model.answer(questions, opts), strict=True):
        for c in cands:
            key = kgqa.key_ids(model.codec, c.subject, c.predicate)
            q = model.encode_questions([question])[0]
            batch = bb.collate([(q, key, kgqa.trie_choices(model.trie, key))])
            with torch.no_grad():
                if isinstance(bb, kgqa.UniLMBackbone):
                    logits = bb._logits(bb.model, batch)
                else:
                    inputs = {k: v for k, v in batch.items() if not k.startswith("trie_")}
                    logits = bb.model(**inputs).logits
                per_token = kgqa.trie_loss_per_token(logits, batch["labels"], batch)
                assert -per_token.sum().item() == pytest.approx(c.score, abs=1e-3), (question, c.answer)
                bb.trie_loss = 0.0
                plain = bb.loss(bb.model, batch).item()
                bb.trie_loss = 0.5
                both = bb.loss(bb.model, batch).item()
                bb.trie_loss = 0.0
            assert both == pytest.approx(plain + 0.5 * per_token.sum().item() / len(key), abs=1e-5)


def test_fit_with_the_trie_loss_trains_and_refuses_a_negative_weight():
    """A few steps with --trie-loss: the pairs carry their choices, the loss is finite and falls; a negative weight
    is refused before training."""
    from nlptool.core.train import TrainConfig

    kb = kgqa.read_kb(KB_FILE)
    rows = kgqa.read_qa(str(TRAIN_FILE))
    model = _tiny_bart(kb, [r.question for r in rows], seed=0)
    pairs = kgqa.training_pairs(model, rows, with_choices=True)
    assert all(len(p) == 3 and p[2] and p[2][0][0] == 0 for p in pairs)  # every key chooses its first token
    config = TrainConfig(epochs=6, batch_size=8, lr=3e-3, device="cpu", log_every=1, seed=0)
    result = kgqa.fit(model, rows, config, trie_loss=1.0)
    losses = [e["loss"] for e in result.history if e.get("event") == "train"]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert model.backbone.trie_loss == 1.0
    with pytest.raises(NlptoolError, match="--trie-loss -1"):
        kgqa.fit(model, rows, config, trie_loss=-1.0)


# -- the package layout and the training steps of 'kg-qa train' -----------------------------------------------------
def test_package_exports_every_public_name_and_backbones_follow_the_protocol(tiny_bert_dir):
    """``nlptool.core.kgqa`` re-exports the public names of its modules, and both backbones satisfy ``Backbone``."""
    import importlib

    for name in kgqa.__all__:
        assert hasattr(kgqa, name), name
    for module in ("answers", "data", "keys", "decoding", "backbones", "model"):
        importlib.import_module(f"nlptool.core.kgqa.{module}")
    assert kgqa.KgqaModel is importlib.import_module("nlptool.core.kgqa.model").KgqaModel
    kb = kgqa.read_kb(KB_FILE)
    char = kgqa.KgqaModel.create(kb, [], d_model=16, layers=1, heads=2, ffn=16)
    unilm = kgqa.KgqaModel.create(kgqa.read_kb(KB_FILE), [], model=str(tiny_bert_dir))
    assert isinstance(char.backbone, kgqa.Backbone) and isinstance(unilm.backbone, kgqa.Backbone)
    assert isinstance(unilm.backbone, kgqa.UniLMBackbone)


def test_pretrained_masked_lm_without_its_head_is_refused(tiny_bert_no_heads_dir, tmp_path):
    """A BERT checkpoint without the MLM head is an error naming the head (core/models' missing-weight check), never a
    randomly initialised head; a kg-qa model folder is not a checkpoint to train from."""
    kb = kgqa.read_kb(KB_FILE)
    with pytest.raises(NlptoolError, match="has no masked-LM head: its checkpoint lacks cls.predictions"):
        kgqa.KgqaModel.create(kb, [], model=str(tiny_bert_no_heads_dir), backbone="unilm")
    with pytest.raises(NlptoolError, match="is not an encoder-decoder model"):
        kgqa.KgqaModel.create(kb, [], model=str(tiny_bert_no_heads_dir), backbone="seq2seq")
    folder = tmp_path / "kgqa"
    kgqa.KgqaModel.create(kb, [], d_model=16, layers=1, heads=2, ffn=16).save(folder, kb_path=str(KB_FILE))
    with pytest.raises(NlptoolError, match="is a kg-qa model folder"):
        kgqa.KgqaModel.create(kb, [], model=str(folder))


def test_training_steps_helpers():
    """read_training_data, low_steps_message and TrainSettings as 'kg-qa train' uses them."""
    data = kgqa.read_training_data(str(KB_FILE), str(TRAIN_FILE), str(TRAIN_FILE), eval_limit=5)
    assert len(data.examples) == 34 and len(data.dev) == 34 and len(data.dev_eval) == 5
    assert data.missing == 0 and data.warnings == []
    message = kgqa.low_steps_message(34, 2, 8)  # 5 batches per epoch
    assert "only 10 optimiser steps (2 epochs × 5 batches of --batch-size 8)" in message
    assert "raise --epochs (to 40 for 200 steps)" in message
    assert kgqa.low_steps_message(34, 40, 8) is None
    settings = kgqa.TrainSettings(epochs=3, batch_size=8)
    assert settings.peak_lr == 1e-3 and kgqa.TrainSettings(model="x").peak_lr == 5e-5
    config = settings.train_config("out")
    assert config.lr == 1e-3 and config.output_dir.endswith("training") and config.group_by_length
    params = settings.params("bart-char")
    assert params["backbone"] == "bart-char" and params["lr"] == 1e-3 and "seed" not in params


def test_paired_answers_checks_rows_and_ids(tmp_path):
    gold = [kgqa.QAExample(1, "q", ("A", "p", "o"), {"id": 1}), kgqa.QAExample(2, "q", ("B", "p", "o"), {"id": 2})]
    pred = [kgqa.QAExample(1, "", ("A", "p", "o"), {"id": 1}), kgqa.QAExample(2, "", ("B", "p", "x"), {})]
    assert kgqa.paired_answers(pred, gold, predictions_path="p", gold_path="g") == ["A ||| p ||| o", "B ||| p ||| x"]
    with pytest.raises(NlptoolError, match="pair by position"):
        kgqa.paired_answers(pred[:1], gold, predictions_path="p", gold_path="g")
    pred[1].record["id"] = 3
    with pytest.raises(InputError, match="id 3 where g line 2 has id 2"):
        kgqa.paired_answers(pred, gold, predictions_path="p", gold_path="g")
