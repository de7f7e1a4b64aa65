"""kg-qa's own encoder-decoder search with forced-token fast-forward (nlptool.core.kgqa.search) against the reference,
transformers' ``generate()`` beam search (``DecodeOptions(fast_forward=False)``): same keys in the same order, same
scores, on every decoding setting; and the fast path really skips decoder work. The distractor KB of the benchmark
script is checked at the end."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from nlptool.core import kgqa
from tests.conftest import SAMPLE_DATA

KB_FILE = SAMPLE_DATA / "kgqa_kb.tsv"
TRAIN_FILE = SAMPLE_DATA / "kgqa_train.jsonl"
# several predicates per subject, bases shared by two subjects: beams diverge after forced stretches, and some beams
# of a question are forced while others choose
EXTRA = "白鹭（林晓雨演唱歌曲）\t作曲\t林晓雨\n白鹭\t别名\t鹭鸶\n白鹭（2021年悬疑电影）\t编剧\t许青禾\n"


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Random tiny char BARTs (with and without the copy output) over the sample KB plus a few more keys."""
    kb_file = tmp_path_factory.mktemp("search") / "kb.tsv"
    kb_file.write_text(KB_FILE.read_text(encoding="utf-8") + EXTRA, encoding="utf-8")
    kb = kgqa.read_kb(kb_file)
    rows = kgqa.read_qa(str(TRAIN_FILE))
    questions = [r.question for r in rows] + ["白鹭的别名", "白鹭", "？"]
    models = {}
    for copy in (True, False):
        torch.manual_seed(3)
        models[copy] = kgqa.KgqaModel.create(
            kb, questions, d_model=32, layers=1, heads=2, ffn=64, dropout=0.0, copy=copy
        )
        models[copy].backbone.model.eval()
    return models, questions


def _same(old, new):
    """Same keys in the same order and scores equal up to float32 rounding of the sums (relative 1e-6, 1e-5 at
    least: a random model's scores reach -100, where one float32 ulp is 7.6e-6)."""
    assert len(old) == len(new)
    for a, b in zip(old, new, strict=True):
        assert [c.answer for c in a] == [c.answer for c in b]
        for c, d in zip(a, b, strict=True):
            assert d.score == pytest.approx(c.score, rel=1e-6, abs=1e-5), c.answer
            assert d.objects == c.objects and d.in_kb == c.in_kb


MODES = [
    {},
    {"renormalize": True},
    {"lookahead": True},
    {"renormalize": True, "lookahead": True},
    {"subject_in_question": True},
    {"subject_in_question": True, "lookahead": True},
]


@pytest.mark.parametrize("copy", [True, False])
@pytest.mark.parametrize("num_beams", [1, 2, 5])
@pytest.mark.parametrize("mode", MODES)
def test_fast_forward_equals_generate(tiny, copy, num_beams, mode):
    models, questions = tiny
    model = models[copy]
    # batches of 7 questions: the fast path reorders them by length, the reference keeps input order
    old = model.answer(questions, kgqa.DecodeOptions(num_beams, num_beams, batch_size=7, fast_forward=False, **mode))
    new = model.answer(questions, kgqa.DecodeOptions(num_beams, num_beams, batch_size=7, **mode))
    _same(old, new)


def test_fast_forward_equals_generate_pretrained_seq2seq(tiny_seq2seq_dir, tmp_path):
    """A pretrained seq2seq checkpoint (BERT wordpieces, not the char codec) through the same comparison."""
    kb_file = tmp_path / "kb.tsv"
    kb_file.write_text(
        "w1 w2\ta\tw5\nw1 w2（w3）\tb\tw6\nw4\ta b\tw7\nw4\tc\tw8\nw9 w10\ta\tw11\nw9 w10（w12）\tc\tw13\n",
        encoding="utf-8",
    )
    model = kgqa.KgqaModel.create(kgqa.read_kb(kb_file), [], model=str(tiny_seq2seq_dir))
    model.backbone.model.eval()
    questions = ["w1 w2 a", "w9 w10 w12 c", "w4 a b", "w4"]
    for num_beams in (1, 3, 5):
        for mode in MODES[:4]:
            old = model.answer(questions, kgqa.DecodeOptions(num_beams, num_beams, fast_forward=False, **mode))
            new = model.answer(questions, kgqa.DecodeOptions(num_beams, num_beams, **mode))
            _same(old, new)


def test_fast_forward_skips_decoder_steps(tiny):
    """Renormalised, a forced token needs no decoder at all; mask-only, a forced run is one decoder call."""
    models, questions = tiny
    model = models[True]
    stats = model.backbone.search_stats
    model.answer(questions, kgqa.DecodeOptions(5, 5, batch_size=64, renormalize=True))
    renorm = dict(stats)
    model.answer(questions, kgqa.DecodeOptions(5, 5, batch_size=64))
    masked = dict(stats)
    assert renorm["decoder_calls"] < renorm["steps"] and renorm["decoder_positions"] < renorm["steps"]
    assert masked["decoder_calls"] < masked["steps"]
    # mask-only still scores every forced token: the teacher-forced passes cover every search step
    assert masked["decoder_positions"] >= masked["steps"]


def test_forced_run_follows_single_continuations():
    trie = kgqa.KgqaModel.create(kgqa.read_kb(KB_FILE), ["x"], d_model=16, layers=1, heads=2, ffn=16).trie
    proc = kgqa.TrieLogitsProcessor(trie, num_beams=1)
    key = trie.key(0)  # root first, end last
    # walk from the root until the first single-continuation node: the run spells the rest of the key up to a branch
    for depth in range(1, len(key)):
        allowed = proc.allowed_tokens(key[:depth], 0)
        if len(allowed) == 1:
            run = proc.forced_run(key[:depth], 0, int(allowed[0]), 100, 10**6)
            assert run == key[depth : depth + len(run)]
            nxt = key[: depth + len(run)]
            assert nxt[-1] == trie.end or len(proc.allowed_tokens(nxt, 0)) > 1  # ends at the end or at a choice
            assert proc.forced_run(key[:depth], 0, int(allowed[0]), 2, 10**6) == run[:2]  # the limit cuts it
            break
    else:
        pytest.fail("no forced token in the sample KB's first key")


# -- the distractor KB of benchmarks/bench_kgqa.py ---------------------------------------------------------------------
def _bench():
    spec = importlib.util.spec_from_file_location("bench_kgqa", SAMPLE_DATA.parent / "benchmarks" / "bench_kgqa.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_kgqa", module)
    spec.loader.exec_module(module)
    return module


def test_distractor_kb():
    bench = _bench()
    kb = kgqa.KnowledgeBase()
    films = [f"电影{i}（2020年电影）" for i in range(4)]
    songs = [f"歌{i}（某人演唱歌曲）" for i in range(3)]
    for i, s in enumerate(films):
        kb.add(s, f"导演{i % 2}", f"d{i}")  # films 0/2 and 1/3 share a predicate
    for i, s in enumerate(songs):
        kb.add(s, f"作词{i}", f"w{i}")
    kb.add("无义词", "拼音", "wu")
    kb.add("另一词", "释义", "yi")
    out, info = bench.add_distractors(kb, 2, seed=0)
    again, _ = bench.add_distractors(kb, 2, seed=0)
    assert list(zip(out.subjects, out.predicates, out.objects, strict=True)) == list(
        zip(again.subjects, again.predicates, again.objects, strict=True)
    )  # seeded
    for i in range(len(kb)):  # every gold triple kept, the only object of its (subject, predicate)
        j = out.index[(kb.subjects[i], kb.predicates[i])]
        assert out.objects[j] == kb.objects[i]
    assert len(set(zip(out.subjects, out.predicates, strict=True))) == len(out)
    by_subject: dict[str, set[str]] = {}
    for s, p in zip(out.subjects, out.predicates, strict=True):
        by_subject.setdefault(s, set()).add(p)
    # a film's donors are films (4 of the same meaning: enough), so it only ever gets directors
    for s in films:
        assert by_subject[s] <= {"导演0", "导演1"}
    # a song has 2 other songs: exactly their predicates, and no film's
    for s in songs:
        assert by_subject[s] == {f"作词{j}" for j in range(3)}
    # subjects without a meaning are one kind: the two of them give each other their predicate, and the kind being
    # too small for K = 2, each takes one donor of another kind
    for s in ("无义词", "另一词"):
        assert by_subject[s] > {"拼音", "释义"} and len(by_subject[s]) == 3
    assert info["subjects"] == 9 and info["similar_meaning_donors"] == 2
    # a kind too small: the rest comes from the most similar meanings (the longest common suffix)
    kb2 = kgqa.KnowledgeBase()
    kb2.add("甲（2020年电影）", "导演", "a")
    kb2.add("乙（2021年电影）", "主演", "b")
    kb2.add("丙（歌曲）", "作词", "c")
    out2, info2 = bench.add_distractors(kb2, 1, seed=0)
    assert ("甲（2020年电影）", "主演") in out2.index and ("乙（2021年电影）", "导演") in out2.index
    assert info2["similar_meaning_donors"] == 3


@pytest.mark.parametrize("num_beams", [1, 2, 5])
@pytest.mark.parametrize("mode", MODES[:4])
def test_unilm_fast_forward_equals_its_step_by_step_search(tiny_bert_dir, tmp_path, monkeypatch, num_beams, mode):
    """UniLM's own beam search: forced runs scored in one network pass (or none, renormalised) give the keys and
    scores of one pass per token."""
    kb_file = tmp_path / "kb.tsv"
    kb_file.write_text(
        "w1 w2\ta\tw5\nw1 w2（w3）\tb\tw6\nw4\ta b\tw7\nw4\tc\tw8\nw9 w10\ta\tw11\nw9 w10（w12）\tc\tw13\n",
        encoding="utf-8",
    )
    torch.manual_seed(0)
    model = kgqa.KgqaModel.create(kgqa.read_kb(kb_file), [], model=str(tiny_bert_dir), backbone="unilm")
    model.backbone.model.eval()
    questions = ["w1 w2 a", "w9 w10 w12 c", "w4 a b", "w4"]
    old = model.answer(questions, kgqa.DecodeOptions(num_beams, num_beams, fast_forward=False, **mode))
    runs = []
    plain = kgqa.TrieLogitsProcessor.forced_run

    def counted(self, *args):
        runs.append(plain(self, *args))
        return runs[-1]

    monkeypatch.setattr(kgqa.TrieLogitsProcessor, "forced_run", counted)
    new = model.answer(questions, kgqa.DecodeOptions(num_beams, num_beams, **mode))
    assert any(len(r) > 1 for r in runs)  # the fast path ran, over several tokens at once
    _same(old, new)
