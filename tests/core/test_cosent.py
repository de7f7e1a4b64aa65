import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nlptool.core.cosent import SoftmaxHead, cosent_loss, cosine_mse_loss, pairwise_cosine, softmax_loss
from nlptool.core.errors import NlptoolError


def loop_cosent(cos, labels, scale=20.0):
    """The post's formula, literally: log(1 + sum over (i, j) with y_i > y_j of exp(scale * (cos_j - cos_i)))."""
    c, y = cos.tolist(), labels.tolist()
    total = 0.0
    for i in range(len(c)):
        for j in range(len(c)):
            if y[i] > y[j]:
                total += math.exp(scale * (c[j] - c[i]))
    return math.log1p(total)


def _labels(kind, n, g):
    if kind == "graded":  # STS-like 0-5 scores with ties
        return torch.randint(0, 6, (n,), generator=g).double()
    if kind == "binary":
        return torch.randint(0, 2, (n,), generator=g)
    if kind == "ties":
        return torch.tensor([0.0, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 0.0])[torch.randperm(8, generator=g)][:n]
    return torch.rand(n, generator=g, dtype=torch.float64) * 5  # continuous, no ties


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["graded", "binary", "ties", "continuous"])
def test_matches_double_loop(seed, kind):
    g = torch.Generator().manual_seed(seed)
    n = 8
    cos = torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1
    labels = _labels(kind, n, g)
    for scale in (20.0, 1.0, 5.5):
        got = cosent_loss(cos, labels, scale=scale)
        assert got.dtype == torch.float64
        assert got.item() == pytest.approx(loop_cosent(cos, labels, scale), rel=1e-12, abs=1e-12)


def test_hand_computation():
    ordered = cosent_loss(torch.tensor([0.9, 0.1], dtype=torch.float64), torch.tensor([1, 0]))
    assert ordered.item() == pytest.approx(math.log(1 + math.exp(20 * (0.1 - 0.9))), rel=1e-12)
    swapped = cosent_loss(torch.tensor([0.1, 0.9], dtype=torch.float64), torch.tensor([1, 0]))
    assert swapped.item() == pytest.approx(math.log(1 + math.exp(16)), rel=1e-12)
    assert swapped.item() == pytest.approx(16 + math.exp(-16), abs=1e-12)
    # a tie adds nothing: a third pair with label equal to one of them, placed so that no new y_i > y_j pair is wrong
    three = cosent_loss(torch.tensor([0.9, 0.1, 0.5], dtype=torch.float64), torch.tensor([1, 0, 1]))
    expected = math.log(1 + math.exp(20 * (0.1 - 0.9)) + math.exp(20 * (0.1 - 0.5)))
    assert three.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("labels", [torch.full((5,), 3.0), torch.zeros(5, dtype=torch.long), torch.ones(1)])
def test_all_equal_labels_zero_loss_and_gradient(labels):
    cos = (torch.linspace(-1, 1, len(labels), dtype=torch.float64)).requires_grad_()
    loss = cosent_loss(cos, labels)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(cos.grad).all()
    assert (cos.grad == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [20.0, 1e4])
def test_no_overflow_at_extremes(dtype, scale):
    cos = torch.tensor([-1.0, 1.0, -1.0, 1.0], dtype=dtype, requires_grad=True)
    labels = torch.tensor([3.0, 0.0, 2.0, 1.0])  # badly ordered: largest gap 2 in cosine
    loss = cosent_loss(cos, labels, scale=scale)
    assert loss.dtype == dtype
    assert torch.isfinite(loss)
    # the worst pair dominates: loss is scale * 2 plus at most log(1 + #pairs)
    assert 2 * scale <= loss.item() <= 2 * scale * (1 + 1e-6) + math.log(7)
    loss.backward()
    assert torch.isfinite(cos.grad).all()
    # perfectly ordered at huge scale: loss underflows towards 0, still finite
    good = cosent_loss(torch.tensor([1.0, -1.0], dtype=dtype), torch.tensor([1, 0]), scale=scale)
    assert torch.isfinite(good) and 0 <= good.item() < 1e-8


def test_gradcheck():
    g = torch.Generator().manual_seed(0)
    cos = (torch.rand(6, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_()
    labels = torch.tensor([0.0, 1.0, 1.0, 2.5, 4.0, 0.0])
    assert torch.autograd.gradcheck(lambda c: cosent_loss(c, labels, scale=3.0), (cos,))
    assert torch.autograd.gradcheck(lambda c: cosent_loss(c, labels), (cos,))


def test_only_label_order_matters():
    g = torch.Generator().manual_seed(1)
    cos = torch.rand(10, generator=g, dtype=torch.float64) * 2 - 1
    labels = torch.randint(0, 6, (10,), generator=g).double()
    base = cosent_loss(cos, labels)
    for transformed in (
        torch.exp(labels),
        labels**3 + 7,
        100 * labels - 50,
        torch.unique(labels, return_inverse=True)[1],
    ):
        assert cosent_loss(cos, transformed).item() == pytest.approx(base.item(), rel=1e-14)
    assert cosent_loss(cos, -labels).item() != pytest.approx(base.item())


def test_cosent_input_errors():
    with pytest.raises(NlptoolError):
        cosent_loss(torch.zeros(3), torch.zeros(4))
    with pytest.raises(NlptoolError):
        cosent_loss(torch.zeros(3), torch.tensor([0.0, float("nan"), 1.0]))
    with pytest.raises(NlptoolError):
        cosent_loss(torch.zeros(3), torch.zeros(3), scale=0.0)


def test_softmax_loss_matches_hand_concatenation():
    torch.manual_seed(0)
    n, d, k = 5, 4, 3
    u, v = torch.randn(n, d, dtype=torch.float64), torch.randn(n, d, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 1, 0])
    head = SoftmaxHead(d, k).double()
    assert head.classifier.in_features == 3 * d and head.classifier.out_features == k
    features = torch.cat([u, v, (u - v).abs()], dim=1)
    expected = F.cross_entropy(features @ head.classifier.weight.T + head.classifier.bias, labels)
    got = softmax_loss(u, v, labels, head.classifier)
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    assert torch.allclose(head(u, v), head.classifier(features), rtol=0, atol=1e-14)
    got.backward()
    assert head.classifier.weight.grad is not None


def test_cosine_mse_loss():
    cos = torch.tensor([0.5, -0.5, 1.0])
    targets = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    loss = cosine_mse_loss(cos, targets)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx((0.25 + 0.25 + 0.0) / 3)
    with pytest.raises(NlptoolError):
        cosine_mse_loss(cos, targets[:2])


def test_pairwise_cosine():
    torch.manual_seed(0)
    u, v = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64)
    assert torch.allclose(pairwise_cosine(u, v), F.cosine_similarity(u, v, dim=-1), rtol=0, atol=1e-12)
    u[2] = 0
    v[4] = 0
    u.requires_grad_()
    v.requires_grad_()
    c = pairwise_cosine(u, v)
    assert c[2].item() == 0.0 and c[4].item() == 0.0
    c.sum().backward()
    assert torch.isfinite(u.grad).all() and torch.isfinite(v.grad).all()
    both_zero = pairwise_cosine(torch.zeros(1, 3, requires_grad=True), torch.zeros(1, 3))
    assert both_zero.item() == 0.0
    with pytest.raises(NlptoolError):
        pairwise_cosine(torch.zeros(2, 3), torch.zeros(2, 4))


# ---------------------------------------------------------------------------------------------------------------------
# The task layer: loss objects, PairTask, fit


class FixedEncoder(torch.nn.Module):
    """A stand-in encoder: text i of a batch embeds as the i-th row of ``table`` (times a trainable scalar)."""

    sentence_model = False
    dim = 2

    def __init__(self, table):
        super().__init__()
        self.table = torch.as_tensor(table, dtype=torch.float64)
        self.gain = torch.nn.Parameter(torch.ones((), dtype=torch.float64))

    def tokenize(self, texts):
        return {"input_ids": torch.tensor([int(t) for t in texts])}

    def forward(self, features):
        return self.gain * self.table[features["input_ids"]]


def _pair_data(labels, label_type="score"):
    from nlptool.core.pairs import PairData

    n = len(labels)
    labels = np.asarray(labels, dtype=np.float64)
    return PairData(
        "pairs.tsv",
        [str(i) for i in range(n)],
        [str(n + i) for i in range(n)],
        labels,
        list(range(n)),
        label_type,
        ("0", "1", "2"),
        (0.0, 5.0) if label_type == "score" else (0.0, 2.0),
    )


def test_pair_task_cosent_loss_on_hand_computed_cosines():
    from nlptool.core.cosent import PairTask
    from nlptool.core.tasks import Task

    # pairs: (e0, e3) cosine 1, (e1, e4) cosine 1/sqrt(2), (e2, e5) cosine 0; labels 0, 5, 2.5
    table = [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 3.0]]
    encoder = FixedEncoder(table)
    task = PairTask(encoder, "score", scale=7.0)
    assert isinstance(task, Task) and task.metric == "spearman" and task.head_parameters() == []
    data = _pair_data([0.0, 5.0, 2.5])
    batch = task.collate(task.examples(data))
    assert batch[0]["input_ids"].tolist() == [0, 1, 2, 3, 4, 5] and batch[1].dtype == torch.float32
    got = task.loss(encoder, batch)
    c = [1.0, 1 / math.sqrt(2), 0.0]  # y1 > y2 > y0
    by_hand = math.log1p(sum(math.exp(7.0 * (c[j] - c[i])) for i, j in [(1, 2), (1, 0), (2, 0)]))
    assert got.item() == pytest.approx(by_hand, rel=1e-12)
    expected = cosent_loss(torch.tensor(c, dtype=torch.float64), torch.tensor([0.0, 5.0, 2.5]), scale=7.0)
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    got.backward()
    assert encoder.gain.grad is not None


def test_pair_task_softmax_and_cosine_mse_match_the_functions():
    from nlptool.core.cosent import CosineMSELoss, PairTask, SoftmaxLoss

    torch.manual_seed(0)
    table = torch.randn(8, 2, dtype=torch.float64)
    encoder = FixedEncoder(table)
    u, v = table[:4], table[4:]
    task = PairTask(encoder, "nli", loss="softmax")
    assert isinstance(task.head, SoftmaxLoss) and task.head.classifier.out_features == 3
    task.head.double()
    data = _pair_data([0.0, 2.0, 1.0, 2.0], "nli")
    batch = task.collate(task.examples(data))
    assert batch[1].dtype == torch.long
    expected = softmax_loss(u, v, torch.tensor([0, 2, 1, 2]), task.head.classifier)
    assert task.loss(encoder, batch).item() == pytest.approx(expected.item(), rel=1e-12)
    assert len(task.head_parameters()) == 2

    task = PairTask(encoder, "score", loss="cosine-mse")
    assert isinstance(task.head, CosineMSELoss)
    data = _pair_data([0.0, 5.0, 2.5, 1.0])
    expected = cosine_mse_loss(pairwise_cosine(u, v), torch.tensor([0.0, 1.0, 0.5, 0.2], dtype=torch.float64))
    got = task.loss(encoder, task.collate(task.examples(data)))
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_pair_task_errors():
    from nlptool.core.cosent import PairTask

    encoder = FixedEncoder(np.eye(2))
    with pytest.raises(NlptoolError, match="unknown pair loss"):
        PairTask(encoder, "score", loss="triplet")
    with pytest.raises(NlptoolError, match="softmax"):
        PairTask(encoder, "score", loss="softmax").examples(_pair_data([0.0, 1.0]))
    with pytest.raises(NlptoolError, match="scale"):
        PairTask(encoder, "score", scale=0.0)


def test_task_model_registers_the_head_once_and_freezes_an_unused_pooler(tiny_bert_dir):
    from nlptool.core.cosent import PairTask
    from nlptool.core.encoder import SentenceEncoder
    from nlptool.core.tasks import TaskModel

    encoder = SentenceEncoder.load(tiny_bert_dir, max_length=16)
    task = PairTask(encoder, "binary", loss="softmax")
    model = TaskModel(encoder, task)
    names = [n for n, _ in model.named_parameters()]
    assert names.count("head.classifier.weight") == 1 and not any(n.startswith("_task") for n in names)
    assert not any(p.requires_grad for p in encoder.model.pooler.parameters())
    assert set(model.state_dict()) == {
        *(f"encoder.{k}" for k in encoder.state_dict()),
        "head.classifier.weight",
        "head.classifier.bias",
    }


def test_promote_best(tmp_path):
    from nlptool.core.tasks import promote_best

    assert promote_best(tmp_path) is False
    best = tmp_path / "training" / "best"
    (best / "1_Pooling").mkdir(parents=True)
    (best / "model.safetensors").write_text("best")
    (best / "1_Pooling" / "config.json").write_text("{}")
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "stale.json").write_text("old")
    (tmp_path / "model.safetensors").write_text("final")
    assert promote_best(tmp_path) is True
    assert (tmp_path / "model.safetensors").read_text() == "best" and not best.exists()
    assert sorted(p.name for p in (tmp_path / "1_Pooling").iterdir()) == ["config.json"]


def test_fit_from_python_matches_the_cli(invoke, tiny_bert_dir, tmp_path):
    """fit() with the command's options gives the command's weights and metrics (same seed)."""
    import json

    from safetensors.torch import load_file

    from nlptool.core.cosent import fit
    from nlptool.core.encoder import SentenceEncoder
    from nlptool.core.pairs import read_pairs
    from nlptool.core.seeding import seed_everything
    from nlptool.core.train import TrainConfig
    from tests.commands.test_train_cosent import make_pairs, train_args

    train = make_pairs(tmp_path / "train.tsv")
    dev = make_pairs(tmp_path / "dev.tsv", n=12, seed=1)
    r = invoke(*train_args(tiny_bert_dir, train, tmp_path / "cli", "--dev", dev, "--epochs", "2", "--seed", "3"))
    assert r.exit_code == 0, r.stderr

    seed_everything(3)
    encoder = SentenceEncoder.load(tiny_bert_dir, max_length=16)
    config = TrainConfig(epochs=2, batch_size=8, lr=1e-3, group_by_length=True, seed=3, device="cpu")
    events = []
    result = fit(
        encoder, read_pairs(train), tmp_path / "py", dev=read_pairs(dev), config=config, on_progress=events.append
    )
    assert result.model_dir == tmp_path / "py" and result.fit.from_best
    a, b = load_file(tmp_path / "cli" / "model.safetensors"), load_file(tmp_path / "py" / "model.safetensors")
    assert a.keys() == b.keys() and max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6
    cli = json.loads((tmp_path / "cli" / "metrics.json").read_text())["metrics"]
    assert cli.keys() == result.metrics.keys()
    for key in ("steps", "train_pairs", "dev_pairs", "best_step", "dev_spearman", "dev_spearman_before"):
        assert result.metrics[key] == pytest.approx(cli[key], abs=1e-9), key
    assert result.best_step == cli["best_step"]
    assert events[0]["event"] == "before" and events[0]["metrics"]["spearman"] == result.metrics["dev_spearman_before"]
    # without --dev and without an output folder: nothing is written, the encoder holds the final weights
    seed_everything(3)
    encoder = SentenceEncoder.load(tiny_bert_dir, max_length=16)
    plain_run = fit(encoder, read_pairs(train), config=config)
    assert plain_run.model_dir is None and plain_run.metrics["steps"] == 6 and "dev_spearman" not in plain_run.metrics


def test_fit_refuses_an_unusable_dev_set_and_mixed_arguments(tiny_bert_dir, tmp_path):
    from nlptool.core.cosent import PairTask, fit
    from nlptool.core.encoder import SentenceEncoder

    encoder = SentenceEncoder.load(tiny_bert_dir, max_length=16)
    train = _pair_data([0.0, 1.0, 2.0])
    with pytest.raises(NlptoolError, match="one label value for every pair"):
        fit(encoder, train, dev=_pair_data([2.0, 2.0]))
    with pytest.raises(NlptoolError, match="either task= or loss="):
        fit(encoder, train, task=PairTask(encoder, "score"), loss="softmax")
    assert not any(tmp_path.iterdir())


def test_evaluate_pairs_still_imports_from_eval_sts():
    import nlptool.commands.eval_sts as eval_sts
    from nlptool.core import cosent

    assert eval_sts.evaluate_pairs is cosent.evaluate_pairs and eval_sts.constant_value is cosent.constant_value
    with pytest.raises(AttributeError):
        eval_sts.no_such_name  # noqa: B018
