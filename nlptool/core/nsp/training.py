"""Training an NSP head (``nlptool nsp-adapt``): :func:`nsp_data`, :func:`load_nsp_model`, :func:`set_trainable`,
:class:`NspTask` and :func:`fit`. See :mod:`nlptool.core.nsp`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlptool.core.errors import NlptoolError
from nlptool.core.nsp.corpus import NSPPair, build_nsp_pairs, split_documents
from nlptool.core.nsp.scoring import IS_NEXT, NSPScorer, nsp_model_class


@dataclass
class NspData:
    """A corpus split for NSP training: whole documents held out, and the pairs of each side.

    Attributes:
        documents: documents read; sentences: their sentences.
        train_docs, eval_docs: the documents of each side (:func:`split_documents`).
        pairs: training pairs (:func:`build_nsp_pairs` with the seed, at most ``max_pairs``).
        eval_pairs: held-out pairs (seed + 1; empty without held-out documents).
    """

    documents: int
    sentences: int
    train_docs: list[list[str]]
    eval_docs: list[list[str]]
    pairs: list[NSPPair]
    eval_pairs: list[NSPPair]


def nsp_data(
    docs: Sequence[list[str]], *, eval_fraction: float = 0.05, seed: int = 0, max_pairs: int | None = None
) -> NspData:
    """Hold out ``eval_fraction`` of the documents (:func:`split_documents`) and build the NSP pairs of both sides
    (:func:`build_nsp_pairs`, seeds ``seed`` and ``seed + 1``) from documents as :func:`read_corpus` gives them.

    Raises:
        NlptoolError: no documents, too few documents to hold some out, no document with two sentences.
    """
    if not docs:
        raise NlptoolError("no documents; give a corpus with text")
    train_docs, eval_docs = split_documents(docs, eval_fraction, seed=seed)
    pairs = build_nsp_pairs(train_docs, seed=seed, max_pairs=max_pairs)
    eval_pairs = build_nsp_pairs(eval_docs, seed=seed + 1) if eval_docs else []
    return NspData(len(docs), sum(len(d) for d in docs), train_docs, eval_docs, pairs, eval_pairs)


def load_nsp_model(spec: str | None, *, seed: int | None = None) -> tuple[Any, Any, str]:
    """A BERT-family model with an NSP head, for training one: ``(model, tokenizer, name)``.

    Unlike :meth:`NSPScorer.load`, a checkpoint without a pooler or NSP head is accepted: the missing weights are
    initialised at random (from ``seed`` when given, as ``nsp-adapt --seed`` does), to be trained by :func:`fit`.
    """
    from nlptool.core.models import load_model, load_tokenizer, resolve_model

    resolved = resolve_model(spec, role="a BERT-family model for 'nsp-adapt'")
    model_class = nsp_model_class(resolved)
    tokenizer = load_tokenizer(resolved)
    if seed is not None:
        from nlptool.core.seeding import seed_everything

        seed_everything(seed)
    return load_model(resolved, model_class), tokenizer, resolved.name


def set_trainable(model: Any, train_layers: int | str | None) -> int:
    """Choose what trains: the NSP head (pooler + classifier) and the top ``train_layers`` encoder layers (``0``: the
    head alone), or everything (``"all"`` or ``None``, embeddings included). Frozen layers need no backward pass.

    Returns:
        The number of trainable parameters.

    Raises:
        NlptoolError: a count that is not ``all`` or ``>= 0``, more layers than the model has, a model whose layers
            or pooler cannot be found.
    """
    top = parse_train_layers(train_layers)
    if top is None:
        model.requires_grad_(True)
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    base = getattr(model, model.base_model_prefix, None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if base is None or layers is None:
        raise NlptoolError(
            f"cannot find the encoder layers of {type(model).__name__} to train only the top ones; "
            "use --train-layers all"
        )
    if top > len(layers):
        raise NlptoolError(f"--train-layers {top}: the model has only {len(layers)} layers; use 'all'")
    model.requires_grad_(False)
    for layer in list(layers)[len(layers) - top :]:
        layer.requires_grad_(True)
    pooler = getattr(base, "pooler", None)
    if pooler is None:
        raise NlptoolError(f"{type(model).__name__} has no pooler layer; the NSP head needs one")
    pooler.requires_grad_(True)
    for name, module in model.named_children():
        if name != model.base_model_prefix:
            module.requires_grad_(True)  # the classifier (cls.seq_relationship)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parse_train_layers(value: int | str | None) -> int | None:
    """``"all"`` (or ``None``) → ``None`` (everything trains); an integer ``>= 0`` (or its string) → that many top
    layers. Raises :class:`NlptoolError` otherwise."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text == "all":
        return None
    try:
        n = int(text)
    except ValueError:
        raise NlptoolError(f"'{value}' is neither 'all' nor a number of layers") from None
    if n < 0:
        raise NlptoolError("must be 'all' or >= 0")  # nsp-adapt --train-layers shows it as is
    return n


class NspTask:
    """Next-sentence prediction as a :class:`nlptool.core.tasks.Task`: BERT's pooler + 2-way classifier trained with
    cross-entropy on :class:`NSPPair` examples; the main metric is the NSP accuracy on held-out pairs.

    The "encoder" this task trains is the transformers NSP model itself (``BertForNextSentencePrediction``, from
    :func:`load_nsp_model`): its NSP head is part of it, so :attr:`head` is ``None`` and :meth:`head_parameters` is
    empty; the loss is the model's own (``model(**batch, labels=...).loss``, mean cross-entropy over the batch).

    Args:
        model: the NSP model (sets the max length's cap, ``max_position_embeddings``).
        tokenizer: its tokenizer; pairs are encoded ``[CLS] A [SEP] B [SEP]``, cut from the longer side.
        max_length: tokens per pair.
        eval_batch_size: pairs per forward pass in :meth:`evaluate`.
    """

    name = "nsp"
    metric = "nsp_accuracy"
    greater_is_better = True
    head = None

    def __init__(self, model: Any, tokenizer: Any, *, max_length: int = 128, eval_batch_size: int = 64) -> None:
        self.tokenizer = tokenizer
        self._encoder = NSPScorer(model, tokenizer, max_length=max_length)  # pair encoding (capped max length)
        self.max_length = self._encoder.max_length
        self.eval_batch_size = eval_batch_size
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def _scorer(self, model: Any) -> NSPScorer:
        return NSPScorer(model, self.tokenizer, max_length=self.max_length)

    def examples(self, pairs: Sequence[NSPPair]) -> list[tuple[list[int], list[int], int]]:
        """``(input_ids, token_type_ids, label)`` per pair, unpadded (cut from the longer segment)."""
        encoded = self._encoder.encode_pairs([p.a for p in pairs], [p.b for p in pairs], shorten="longest")
        return [(ids, types, p.label) for (ids, types), p in zip(encoded, pairs, strict=True)]

    @staticmethod
    def lengths(examples: Sequence[tuple[list[int], list[int], int]]) -> list[int]:
        """Tokens per example, for the loop's ``group_by_length``."""
        return [len(e[0]) for e in examples]

    def collate(self, examples: list[tuple[list[int], list[int], int]]) -> dict[str, Any]:
        """``input_ids``, ``token_type_ids``, ``attention_mask`` (padded to the longest) and ``labels``."""
        import torch

        width = max(len(e[0]) for e in examples)
        ids = torch.full((len(examples), width), self._pad_id, dtype=torch.long)
        types = torch.zeros((len(examples), width), dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, (e_ids, e_types, _) in enumerate(examples):
            k = len(e_ids)
            ids[row, :k] = torch.tensor(e_ids)
            types[row, :k] = torch.tensor(e_types)
            mask[row, :k] = 1
        labels = torch.tensor([e[2] for e in examples], dtype=torch.long)
        return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "labels": labels}

    def loss(self, encoder: Any, batch: dict[str, Any]) -> Any:
        """The model's NSP cross-entropy on ``batch`` (a mean over its pairs)."""
        return encoder(**batch).loss

    def evaluate(self, encoder: Any, dev: Sequence[NSPPair]) -> dict[str, float]:
        """``{"nsp_accuracy"}``: the share of ``dev`` pairs where P(IsNext) > 0.5 agrees with the label; ``{}`` when
        ``dev`` is empty."""
        if not dev:
            return {}
        from nlptool.core.train import unwrap_model

        p = self._scorer(unwrap_model(encoder)).score_pairs(
            [e.a for e in dev], [e.b for e in dev], shorten="longest", batch_size=self.eval_batch_size
        )
        gold = [e.label == IS_NEXT for e in dev]
        correct = sum((pi > 0.5) == g for pi, g in zip(p, gold, strict=True))
        return {"nsp_accuracy": correct / len(dev)}

    def head_parameters(self) -> list[Any]:
        return []

    def save(self, folder: Path) -> None:
        """The tokenizer (the caller saves the model with ``save_pretrained``)."""
        self.tokenizer.save_pretrained(folder)


@dataclass
class NspFitResult:
    """What :func:`fit` did.

    Attributes:
        metrics: ``nsp-adapt``'s metrics.json: ``documents``, ``sentences``, ``train_documents``, ``train_pairs``,
            ``eval_documents``, ``eval_pairs``, ``steps``, ``train_seconds``, ``wall_seconds``, ``pairs_per_s``,
            ``trainable_parameters``, ``nsp_accuracy_before`` and ``nsp_accuracy`` (``None`` without held-out pairs).
        before: held-out metrics before training (``{}`` without held-out pairs, or off rank 0); on ``resume``, those
            the interrupted run measured (kept with its checkpoints).
        after: held-out metrics of the final weights (``{}`` likewise).
        train_result: the shared loop's :class:`~nlptool.core.train.TrainResult`.
        model_dir: the saved model folder, or ``None`` (no ``out_dir``, or not rank 0).
        main: whether this process wrote the files (rank 0; always without torchrun).
    """

    metrics: dict[str, Any]
    before: dict[str, float]
    after: dict[str, float]
    train_result: Any
    model_dir: Path | None
    main: bool


def fit(
    model: Any,
    tokenizer: Any,
    data: NspData,
    out_dir: str | Path | None = None,
    *,
    train_layers: int | str | None = 2,
    max_length: int = 128,
    config: Any = None,
    on_progress: Callable[[dict], None] | None = None,
) -> NspFitResult:
    """Train ``model``'s NSP head (and its top ``train_layers`` layers) on ``data``'s pairs; save it into ``out_dir``.

    :func:`set_trainable`, then the held-out NSP accuracy (reported to ``on_progress`` as ``{"event": "before",
    "step": 0, "metrics": ...}``; kept with the checkpoints through the loop's ``extra_state``, so a resumed run
    reports the first run's), then :func:`nlptool.core.train.train` with :class:`NspTask` (evaluation each epoch on
    the held-out pairs; the *final* weights are the model, no best-checkpoint selection), then the accuracy after.
    ``nsp-adapt`` is this function plus option parsing and output; with the same seed it gives the same weights.

    Args:
        model: a transformers NSP model (:func:`load_nsp_model`), trained in place and left on the CPU when saved.
        tokenizer: its tokenizer (saved with it).
        data: :func:`nsp_data`.
        out_dir: the model folder (a ``BertForNextSentencePrediction`` folder, plus ``training/`` with the log and
            checkpoints; created when missing), or ``None`` to write nothing.
        train_layers: :func:`set_trainable`'s.
        max_length: tokens per pair.
        config: the loop's :class:`~nlptool.core.train.TrainConfig` (default: ``TrainConfig(group_by_length=True)``;
            ``nsp-adapt``'s defaults are ``batch_size=32, lr=5e-5``); ``metric`` is set here (``nsp_accuracy`` with
            held-out pairs) and ``output_dir`` to ``out_dir/training`` unless it is given. The model is moved to
            ``config.device``.
        on_progress: the loop's progress callback (rank 0), plus the ``before`` event.

    Returns:
        An :class:`NspFitResult`. Under torchrun every rank trains; only rank 0 evaluates and writes.
    """
    import dataclasses

    from nlptool.core.device import resolve_device
    from nlptool.core.tasks import TRAINING_DIR
    from nlptool.core.train import TrainConfig, is_main_process, train

    main = is_main_process()
    trainable = set_trainable(model, train_layers)
    task = NspTask(model, tokenizer, max_length=max_length)
    config = config if config is not None else TrainConfig(group_by_length=True)
    out = Path(out_dir) if out_dir is not None else None
    dev = data.eval_pairs
    config = dataclasses.replace(
        config,
        output_dir=config.output_dir or (str(out / TRAINING_DIR) if out is not None else None),
        metric=task.metric if dev else None,
    )
    model.to(resolve_device(config.device))
    resume = bool(config.resume)
    before = task.evaluate(model, dev) if main and not resume else {}
    if before and on_progress is not None:
        on_progress({"event": "before", "step": 0, "metrics": before})
    examples = task.examples(data.pairs)
    t0 = time.perf_counter()
    result = train(
        model,
        examples,
        task.collate,
        task.loss,
        config,
        evaluate=(lambda m: task.evaluate(m, dev)) if dev else None,
        lengths=task.lengths(examples),
        on_progress=on_progress,
        extra_state=None if resume else {"before": before},
    )
    if resume:  # measured by the run that started it, kept with its checkpoints
        before = dict(result.extra_state.get("before") or {})
    wall = time.perf_counter() - t0
    after = task.evaluate(model, dev) if main else {}
    model_dir = None
    if main and out is not None:
        model.to("cpu")
        model.save_pretrained(out)
        task.save(out)
        model_dir = out
    metrics: dict[str, Any] = {
        "documents": data.documents,
        "sentences": data.sentences,
        "train_documents": len(data.train_docs),
        "train_pairs": len(data.pairs),
        "eval_documents": len(data.eval_docs),
        "eval_pairs": len(dev),
        "steps": result.steps,
        "train_seconds": result.train_seconds,
        "wall_seconds": wall,
        "pairs_per_s": result.examples_per_s,
        "trainable_parameters": trainable,
        "nsp_accuracy_before": before.get("nsp_accuracy"),
        "nsp_accuracy": after.get("nsp_accuracy"),
    }
    return NspFitResult(metrics, before, after, result, model_dir, main)
