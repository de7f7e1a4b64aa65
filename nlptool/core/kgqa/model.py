"""The kg-qa model: question answering over a knowledge base with Seq2Seq + prefix-tree constrained decoding.

A seq2seq model reads the question and generates the **key** of a triple,
``base [SEP] predicate [SEP] meaning <end>``, where ``base`` is the subject without its disambiguating meaning (the
text in the final full-width parentheses: ``守望星光（韩玉玲、刘东考演唱歌曲）`` → ``守望星光`` +
``韩玉玲、刘东考演唱歌曲``), which goes last. Beam search runs through ``generate()`` with
:class:`~nlptool.core.kgqa.decoding.TrieLogitsProcessor`, which masks every step to the continuations that a
:class:`~nlptool.core.trie.TokenTrie` of all KB keys allows, so only existing entries can come out;
the object is then looked up in the KB.

References: Su Jianlin, "Seq2Seq+前缀树：检索任务新范式（以KgCLUE为例）", https://kexue.fm/archives/8802; De Cao,
Izacard, Riedel and Petroni, "Autoregressive Entity Retrieval" (GENRE), ICLR 2021. The metric is KgCLUE's
``evaluate_f1_em.py`` (CLUEbenchmark/KgCLUE, baselines/), re-implemented in
:func:`~nlptool.core.kgqa.answers.kgclue_scores`.

Models (one interface, :class:`~nlptool.core.kgqa.backbones.Backbone`):

- ``bart-char``: a small BART trained from scratch with a character vocabulary
  (:class:`~nlptool.core.kgqa.keys.CharCodec`) built from the training questions and every KB string, by default
  with a pointer-generator output that copies question characters
  (:func:`~nlptool.core.kgqa.backbones.copy_bart_class`); the offline default.
- ``seq2seq``: any pretrained Hugging Face seq2seq checkpoint (T5, BART, ...) with its own tokenizer.
- ``unilm``: a BERT-family masked-LM checkpoint used UniLM-style: ``[CLS] question [SEP] key`` with segment ids 0/1
  and a seq2seq attention mask (question tokens see the question; key tokens see the question and the key tokens up
  to themselves), predicting each key token with the tied MLM output embeddings. Decoding is nlptool's own beam search
  (a masked LM has no ``generate()``), with the same logits processor.

This module holds :class:`KgqaModel` (answer, save, load) and training: :func:`fit` (the shared loop on a model) and the
steps of ``nlptool kg-qa train`` (:func:`read_training_data`, :func:`build_model`, :func:`train`, :func:`save_trained`)
so that Python users and the command run the same code.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nlptool.core.errors import NlptoolError
from nlptool.core.kgqa.answers import format_answer, join_subject, kgclue_scores
from nlptool.core.kgqa.backbones import BACKBONES, char_bart_backbone, load_backbone, pretrained_backbone
from nlptool.core.kgqa.data import (
    KnowledgeBase,
    QAExample,
    file_sha256,
    missing_answers_message,
    read_kb,
    read_qa,
    write_kb,
)
from nlptool.core.kgqa.decoding import Candidate, DecodeOptions, TrieLogitsProcessor
from nlptool.core.kgqa.keys import CharCodec, build_trie, key_ids, trie_choices
from nlptool.core.trie import TokenTrie

FORMAT_VERSION = 1
CONFIG_FILE = "kgqa.json"
KB_FILE = "kb.tsv"
TRIE_FILE = "trie.npz"


class KgqaModel:
    """A kg-qa model: a backbone (``bart-char``, ``seq2seq`` or ``unilm``), its codec, the KB and the KB's trie."""

    def __init__(self, backbone: Any, kb: KnowledgeBase, *, config: dict, trie: TokenTrie | None = None):
        self.backbone = backbone
        self.codec = backbone.codec
        self.kb = kb
        self.config = config
        self.max_question = int(config.get("max_question_tokens", 64))
        if trie is None:
            trie, collisions = build_trie(kb, self.codec)
            self.collisions = collisions
        else:
            self.collisions = 0
        self.trie = trie
        self.max_key = int(np.diff(trie.offsets.astype(np.int64)).max()) if len(trie) else 1

    # -- construction -------------------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        kb: KnowledgeBase,
        questions: Iterable[str],
        *,
        model: str | None = None,
        backbone: str | None = None,
        d_model: int = 256,
        layers: int = 3,
        heads: int = 4,
        ffn: int = 1024,
        dropout: float = 0.1,
        max_question_tokens: int = 64,
        copy: bool = True,
    ) -> KgqaModel:
        """A fresh model. ``model=None``: a char BART of the given size, randomly initialised (with the copy
        mechanism of :func:`~nlptool.core.kgqa.backbones.copy_bart_class` unless ``copy=False``;
        :func:`~nlptool.core.kgqa.backbones.char_bart_backbone`); else a pretrained checkpoint (seq2seq, or a
        BERT-family masked LM used UniLM-style; ``backbone`` forces the choice;
        :func:`~nlptool.core.kgqa.backbones.pretrained_backbone`)."""
        if model is None:
            if backbone not in (None, "bart-char"):
                raise NlptoolError(f"--backbone {backbone} needs --model (a pretrained checkpoint)")
            codec = CharCodec.from_kb(kb, questions)
            bb: Any = char_bart_backbone(
                codec,
                d_model=d_model,
                layers=layers,
                heads=heads,
                ffn=ffn,
                dropout=dropout,
                max_question_tokens=max_question_tokens,
                copy=copy,
            )
            kind = "bart-char"
        else:
            bb = pretrained_backbone(model, backbone)
            kind = bb.kind
        config = {
            "format": FORMAT_VERSION,
            "backbone": kind,
            "source_model": model,
            "max_question_tokens": max_question_tokens,
        }
        return cls(bb, kb, config=config)

    def num_parameters(self) -> int:
        """The number of parameters of the network."""
        return sum(p.numel() for p in self.backbone.model.parameters())

    # -- answering ----------------------------------------------------------------------------------------------------
    def encode_questions(self, questions: Sequence[str]) -> list[list[int]]:
        return [self.codec.encode_question(q, self.max_question) for q in questions]

    def answer(
        self,
        questions: Sequence[str],
        options: DecodeOptions | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[list[Candidate]]:
        """The top ``options.top_k`` candidates per question, best first."""
        import torch

        opt = options or DecodeOptions()
        if opt.top_k < 1 or opt.num_beams < opt.top_k:
            raise NlptoolError(f"need 1 <= top_k <= num_beams, got top_k={opt.top_k}, num_beams={opt.num_beams}")
        if (opt.lookahead or opt.subject_in_question or opt.renormalize) and not opt.constrained:
            raise NlptoolError("--lookahead, --subject-in-question and --renormalize work with the trie only")
        sep = self.codec.sep_id
        trie = self.trie

        def make(qs: Sequence[list[int]], beams: int) -> TrieLogitsProcessor:
            return TrieLogitsProcessor(
                trie,
                qs,
                num_beams=beams,
                renormalize=opt.renormalize,
                lookahead=opt.lookahead,
                subject_in_question=opt.subject_in_question,
                sep_id=sep,
            )

        net = self.backbone.model
        was_training = net.training
        net.eval()
        encoded = self.encode_questions(questions)
        fast = opt.fast_forward and opt.constrained
        if fast:  # batches of similar length (less padding); answers go back in input order
            from nlptool.core.batching import length_batches

            batches = length_batches([len(q) for q in encoded], opt.batch_size)
        else:
            batches = [
                list(range(s, min(s + opt.batch_size, len(questions))))
                for s in range(0, len(questions), opt.batch_size)
            ]
        slots: list[list[Candidate] | None] = [None] * len(questions)
        try:
            for batch in batches:
                kwargs = {"fast_forward": True} if fast else {}
                with torch.no_grad():
                    beams = self.backbone.generate(
                        [encoded[i] for i in batch],
                        make if opt.constrained else None,
                        num_beams=opt.num_beams,
                        num_return=opt.num_beams if opt.num_beams > 1 else 1,
                        max_new_tokens=self.max_key + 1,
                        **kwargs,
                    )
                for i, cands in zip(batch, beams, strict=True):
                    slots[i] = self._candidates(cands, opt.top_k, opt.constrained)
                if on_batch is not None:
                    on_batch(len(batch))
        finally:
            net.train(was_training)
        return [c if c is not None else [] for c in slots]

    def _candidates(self, cands: list[tuple[list[int], float]], top_k: int, constrained: bool) -> list[Candidate]:
        seen: set[tuple[str, str, str]] = set()
        res: list[Candidate] = []
        for ids, score in cands:
            if not math.isfinite(score):
                continue  # a beam slot that no allowed continuation could fill
            value = self.trie.get(ids) if ids and ids[-1] == self.trie.end else None
            if value is None and constrained:
                continue  # unfinished at the length limit (beam search returns it when too few keys finish)
            if value is not None:
                s, p, objs = self.kb.entry(value)
                c = Candidate(s, p, objs[0], score, True, list(objs))
            else:
                c = self._unmatched(ids, score)
            key = (c.subject, c.predicate, c.object)
            if key in seen:
                continue
            seen.add(key)
            res.append(c)
            if len(res) == top_k:
                break
        return res

    def _unmatched(self, ids: list[int], score: float) -> Candidate:
        """A key the trie does not hold (unconstrained decoding): split on the separator, no object."""
        body = [t for t in ids[1:] if t not in (self.codec.end_id, self.codec.pad_id)]
        sep = self.codec.sep_ids
        parts: list[list[int]] = [[]]
        i = 0
        while i < len(body):
            if body[i : i + len(sep)] == sep and len(parts) < 3:
                parts.append([])
                i += len(sep)
            else:
                parts[-1].append(body[i])
                i += 1
        while len(parts) < 3:
            parts.append([])
        base, pred, meaning = (self.codec.decode(p) for p in parts)
        return Candidate(join_subject(base, meaning), pred, "", score, False, [])

    # -- files --------------------------------------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike, *, kb_path: str | None, copy_kb: bool = True) -> None:
        """Write the model, codec, trie and config into ``folder``; the KB is copied (``kb.tsv``) or referenced by path
        and SHA-256."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backbone.save(folder)
        cfg = dict(self.config)
        if copy_kb or kb_path is None:
            tmp = folder / f".{KB_FILE}.tmp"
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                write_kb(self.kb, fh)
            os.replace(tmp, folder / KB_FILE)
            cfg["kb"] = {"file": KB_FILE, "sha256": file_sha256(folder / KB_FILE), "source": kb_path}
        else:
            cfg["kb"] = {"path": str(Path(kb_path).resolve()), "sha256": file_sha256(kb_path)}
        cfg["kb"].update(entries=len(self.kb), triples=self.kb.triples)
        self.trie.save(folder / TRIE_FILE, meta={"kb_sha256": cfg["kb"]["sha256"], "codec": self.codec.kind})
        (folder / CONFIG_FILE).write_text(
            json.dumps(cfg, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        self.config = cfg

    @classmethod
    def load(cls, folder: str | os.PathLike, *, kb_path: str | None = None, device: str = "cpu") -> KgqaModel:
        """Load a folder written by :meth:`save`; ``kb_path`` replaces its KB (and the trie is rebuilt).

        A folder of another kind (a sentence encoder, an NER model) is refused with a line that says what it is, and a
        damaged or incomplete folder with a line that names the file (:mod:`nlptool.core.models`)."""
        from nlptool.core.models import (
            KG_QA,
            check_folder_files,
            check_model_folder,
            damaged,
            read_json_file,
        )

        shown = folder
        folder = check_model_folder(
            folder, accept={KG_QA}, role="a kg-qa model folder", hint="train one with 'nlptool kg-qa train'"
        )
        cfg_file = folder / CONFIG_FILE
        if not cfg_file.is_file():
            raise NlptoolError(
                f"{shown} has no {CONFIG_FILE}, so the kg-qa model folder is incomplete; retrain it with "
                "'nlptool kg-qa train'"
            )
        cfg = read_json_file(cfg_file)
        version = cfg.get("format")
        if isinstance(version, bool) or not isinstance(version, int):
            raise damaged(cfg_file, f"'format' is {version!r}, not a format number")
        if version != FORMAT_VERSION:
            raise NlptoolError(f"{shown}: kg-qa format {version}; this nlptool reads {FORMAT_VERSION}")
        kind = cfg.get("backbone")
        if kind not in BACKBONES:
            raise damaged(cfg_file, f"'backbone' is {kind!r}, not one of {', '.join(BACKBONES)}")
        info = cfg.get("kb")
        if kb_path is None and (
            not isinstance(info, dict)
            or not isinstance(info.get("sha256"), str)
            or not isinstance(info.get("file", info.get("path")), str)
        ):
            raise damaged(cfg_file, "'kb' does not give the file and SHA-256 of the knowledge base")
        max_question = cfg.get("max_question_tokens", 64)
        if isinstance(max_question, bool) or not isinstance(max_question, int) or max_question < 1:
            raise damaged(cfg_file, f"'max_question_tokens' is {max_question!r}, not a positive integer")
        trie = None
        if kb_path is not None:
            kb = read_kb(kb_path)
        else:
            assert isinstance(info, dict)
            if "file" in info:
                kb_file = folder / info["file"]
                if not kb_file.is_file():
                    raise NlptoolError(f"{kb_file} is missing, so the kg-qa model folder is incomplete; pass --kb")
            else:
                kb_file = Path(info["path"])
                if not kb_file.is_file():
                    raise NlptoolError(f"the KB this model was trained with, {kb_file}, is gone; pass --kb")
            if file_sha256(kb_file) != info["sha256"]:
                if "file" in info:
                    raise damaged(
                        kb_file,
                        f"its SHA-256 differs from the one {CONFIG_FILE} records",
                        fix="retrain the model, or pass --kb with the knowledge base it was trained on",
                    )
                raise NlptoolError(f"the KB {kb_file} changed since training (SHA-256 differs); pass --kb to use it")
            kb = read_kb(kb_file)
            if (folder / TRIE_FILE).is_file():
                try:
                    trie, meta = TokenTrie.load(folder / TRIE_FILE)
                except NlptoolError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a damaged .npz fails in zipfile, zlib or numpy
                    raise damaged(
                        folder / TRIE_FILE,
                        f"{type(exc).__name__}: {str(exc).strip()[:160]}",
                        fix="rebuild it with 'nlptool kg-qa build-trie', or delete it",
                    ) from None
                if not isinstance(meta, dict) or meta.get("kb_sha256") != info["sha256"]:
                    trie = None
        check_folder_files(folder, weights=True)
        bb = load_backbone(folder, kind, shown=str(shown))
        bb.model.to(device)
        return cls(bb, kb, config=cfg, trie=trie)


def training_pairs(model: KgqaModel, examples: Sequence[QAExample], *, with_choices: bool = False) -> list[tuple]:
    """``(question ids, key ids)`` per example (key ids without the root, ending with the end token); with
    ``with_choices``, ``(question ids, key ids, choices)`` where ``choices`` are the key's choice points in the KB's
    trie (:func:`~nlptool.core.kgqa.keys.trie_choices`), which the trie loss reads."""
    qs = model.encode_questions([e.question for e in examples])
    out: list[tuple] = []
    for q, e in zip(qs, examples, strict=True):
        assert e.answer is not None
        key = key_ids(model.codec, e.answer[0], e.answer[1])
        out.append((q, key, trie_choices(model.trie, key)) if with_choices else (q, key))
    return out


def predictions_of(cands: Sequence[Sequence[Candidate]]) -> list[str]:
    """The top answer per question (``' |||  ||| '`` when there is none)."""
    return [c[0].answer if c else format_answer("", "", "") for c in cands]


def fit(
    model: KgqaModel,
    examples: Sequence[QAExample],
    config: Any,
    *,
    dev: Sequence[QAExample] | None = None,
    eval_options: DecodeOptions | None = None,
    on_progress: Callable[[dict], None] | None = None,
    trie_loss: float = 0.0,
) -> Any:
    """Train ``model`` on ``examples`` with the shared loop (:func:`nlptool.core.train.train`, a ``TrainConfig``).

    The loss is the cross-entropy of the key tokens, plus ``trie_loss`` × the *trie loss*: the mean over key tokens
    of the negative log-probability of each token among the tokens the KB's trie allows at its place (0 where the
    trie leaves one), i.e. the loss of the renormalised decoding (``--renormalize``). The plain cross-entropy
    pushes a key's tokens up against the whole vocabulary; the trie loss pushes them up against the KB's other
    continuations there: the other subjects' names, and after a subject its other predicates, which the plain loss
    never singles out (:func:`~nlptool.core.kgqa.backbones.with_trie_loss`).

    With ``dev``, KgCLUE's Score on ``dev`` (decoded with ``eval_options``, by default :class:`DecodeOptions`'
    defaults: the beam width and mode that prediction uses) is computed every evaluation and the best weights are
    restored at the end. Choose the decoding you will predict with: an undertrained model's flat probabilities can
    score well greedily yet make mask-only beam search prefer short wrong keys. Returns the loop's ``TrainResult``.
    """
    import torch

    from nlptool.core.train import train, unwrap_model

    if trie_loss < 0:
        raise NlptoolError(f"--trie-loss {trie_loss:g}: use 0 (off) or a positive weight")
    pairs = training_pairs(model, examples, with_choices=trie_loss > 0)
    bb = model.backbone
    bb.trie_loss = trie_loss
    evaluate = save_best = None
    if dev:
        opts = eval_options or DecodeOptions()
        questions = [e.question for e in dev]
        refs = [format_answer(*e.answer) for e in dev]  # type: ignore[misc]

        def evaluate(_m: Any) -> dict[str, float]:
            return kgclue_scores(predictions_of(model.answer(questions, opts)), refs)

        def save_best(m: Any, folder: Path) -> None:
            torch.save(unwrap_model(m).state_dict(), Path(folder) / "model.pt")

        config.metric = "Score"
        config.greater_is_better = True
    result = train(
        bb.model,
        pairs,
        bb.collate,
        bb.loss,
        config,
        evaluate=evaluate,
        save_best=save_best,
        lengths=[len(p[0]) + len(p[1]) for p in pairs],
        on_progress=on_progress,
    )
    best = Path(config.output_dir) / "best" / "model.pt" if config.output_dir else None
    if dev and best is not None and best.is_file():
        bb.model.load_state_dict(torch.load(best, map_location="cpu", weights_only=True))
    return result


# ---------------------------------------------------------------------------------------------------------------------
# A training run as 'nlptool kg-qa train' makes it: read the data, build the model, train, save

MIN_STEPS = 200  # fewer optimiser steps than this rarely fit a KB: low_steps_message warns


@dataclass
class TrainingData:
    """The inputs of a training run: the KB, the training questions, the dev questions (``dev``: all of them;
    ``dev_eval``: the first ``eval_limit``, which the evaluations score), the number of training answers that are not
    triples of the KB and the warnings that say which (for the caller to show)."""

    kb: KnowledgeBase
    examples: list[QAExample]
    dev: list[QAExample] | None = None
    dev_eval: list[QAExample] | None = None
    missing: int = 0
    warnings: list[str] = field(default_factory=list)


def read_training_data(
    kb_path: str, train_path: str, dev_path: str | None = None, *, eval_limit: int = 500
) -> TrainingData:
    """Read the KB (TSV), the training questions and the optional dev questions (KgCLUE JSONL); ``eval_limit=0``
    scores every dev question at each evaluation."""
    kb = read_kb(kb_path)
    examples = read_qa(train_path)
    dev = read_qa(dev_path) if dev_path else None
    missing, message = missing_answers_message(kb, examples, train_path)
    warnings = [message] if message else []
    if dev:
        assert dev_path is not None
        message = missing_answers_message(kb, dev, dev_path)[1]
        warnings += [message] if message else []
    dev_eval = dev[:eval_limit] if dev and eval_limit else dev
    return TrainingData(kb, examples, dev, dev_eval, missing, warnings)


@dataclass
class TrainSettings:
    """How a kg-qa model is built and trained (the options of ``nlptool kg-qa train``, with its defaults).

    ``model=None`` builds the char BART (``d_model``, ``layers``, ``heads``, ``ffn``, ``dropout``, ``copy``) from
    scratch; otherwise a pretrained checkpoint, used as ``backbone`` (``seq2seq``, ``unilm``, or ``None``: chosen from
    its config). ``lr=None`` is 1e-3 from scratch and 5e-5 pretrained. ``eval_*`` is the decoding of the dev
    evaluations that choose the best checkpoint (choose the decoding you will predict with). ``device`` is a resolved
    torch device string.
    """

    model: str | None = None
    backbone: str | None = None
    epochs: int = 10
    batch_size: int = 64
    lr: float | None = None
    warmup: float = 0.05
    d_model: int = 128
    layers: int = 3
    heads: int = 4
    ffn: int = 512
    dropout: float = 0.1
    copy: bool = True
    max_question_tokens: int = 64
    eval_beams: int = 5
    eval_renormalize: bool = False
    eval_lookahead: bool = False
    trie_loss: float = 0.0
    seed: int = 0
    device: str = "cpu"
    save_every: int = 0
    resume: bool = False
    report_to: str = "none"

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else (1e-3 if self.model is None else 5e-5)

    def eval_options(self) -> DecodeOptions:
        return DecodeOptions(
            num_beams=self.eval_beams, renormalize=self.eval_renormalize, lookahead=self.eval_lookahead
        )

    def train_config(self, out_dir: str | os.PathLike) -> Any:
        """The shared loop's ``TrainConfig``; checkpoints and the log go to ``out_dir/training``."""
        from nlptool.core.train import TrainConfig

        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.peak_lr,
            warmup_ratio=self.warmup,
            seed=self.seed,
            device=self.device,
            group_by_length=True,
            output_dir=str(Path(out_dir) / "training"),
            log_every=50,
            checkpoint_every=self.save_every,
            resume=self.resume,
            report_to=self.report_to,
        )

    def params(self, backbone: str) -> dict[str, Any]:
        """The settings recorded in ``metrics.json`` (``backbone``: the kind the model was built as)."""
        names = ("epochs", "batch_size", "lr", "warmup", "device", "backbone", "d_model", "layers", "heads", "ffn")
        names += ("dropout", "copy", "max_question_tokens", "eval_beams", "eval_renormalize", "eval_lookahead")
        names += ("trie_loss",)
        values = {**self.__dict__, "lr": self.peak_lr, "backbone": backbone}
        return {name: values[name] for name in names}


def build_model(data: TrainingData, settings: TrainSettings) -> KgqaModel:
    """A fresh :class:`KgqaModel` for ``data`` (its char vocabulary covers the training questions and the KB)."""
    return KgqaModel.create(
        data.kb,
        [e.question for e in data.examples],
        model=settings.model,
        backbone=settings.backbone,
        d_model=settings.d_model,
        layers=settings.layers,
        heads=settings.heads,
        ffn=settings.ffn,
        dropout=settings.dropout,
        max_question_tokens=settings.max_question_tokens,
        copy=settings.copy,
    )


def low_steps_message(examples: int, epochs: int, batch_size: int, min_steps: int = MIN_STEPS) -> str | None:
    """A warning when ``epochs`` over ``examples`` in batches of ``batch_size`` make fewer than ``min_steps`` optimiser
    steps (a model needs a few hundred to fit its KB), saying how many epochs would make enough; else ``None``."""
    from nlptool.core.train import steps_per_epoch

    per_epoch = steps_per_epoch(examples, batch_size)
    if per_epoch * epochs >= min_steps:
        return None
    return (
        f"kg-qa train will make only {per_epoch * epochs} optimiser steps ({epochs} epochs × {per_epoch} batches of "
        f"--batch-size {batch_size}); a model needs a few hundred to fit its KB: raise --epochs (to "
        f"{math.ceil(min_steps / per_epoch)} for {min_steps} steps) or lower --batch-size"
    )


@dataclass
class TrainRun:
    """What :func:`train` did: the loop's ``TrainResult``, the wall-clock seconds, the parameter count and KgCLUE's
    scores of the final model on the dev questions (``None`` without dev questions, and on ranks other than 0)."""

    result: Any
    seconds: float
    parameters: int
    dev_scores: dict[str, float] | None = None

    def eval_scores(self) -> list[tuple[int, float]]:
        """``(step, dev Score)`` of every evaluation during training."""
        evals = (e for e in self.result.history if e.get("event") == "eval")
        return [(e["step"], e["metrics"].get("Score", float("nan"))) for e in evals]

    def metrics(self, data: TrainingData) -> dict[str, Any]:
        """The run's metrics (``metrics.json``): sizes, steps, speed, the final loss and the ``dev_*`` scores."""
        history = self.result.history
        out: dict[str, Any] = {
            "train_questions": len(data.examples),
            "train_answers_not_in_kb": data.missing,
            "kb_keys": len(data.kb),
            "parameters": self.parameters,
            "steps": self.result.steps,
            "train_seconds": self.result.train_seconds,
            "questions_per_s": self.result.examples_per_s,
            "final_loss": next((e["loss"] for e in reversed(history) if e.get("event") == "train"), None),
        }
        if self.dev_scores is not None and data.dev_eval:
            out.update({f"dev_{k}": v for k, v in self.dev_scores.items()}, dev_questions=len(data.dev_eval))
        return out


def train(
    model: KgqaModel,
    data: TrainingData,
    settings: TrainSettings,
    out_dir: str | os.PathLike,
    *,
    on_progress: Callable[[dict], None] | None = None,
) -> TrainRun:
    """Train ``model`` on ``data`` (:func:`fit`, checkpoints in ``out_dir/training``), keeping the weights of the best
    dev evaluation when there are dev questions, then score the final model on them (rank 0 only under torchrun).
    Nothing is saved: see :func:`save_trained`."""
    from nlptool.core.train import is_main_process

    eval_options = settings.eval_options()
    parameters = model.num_parameters()
    started = time.perf_counter()
    result = fit(
        model,
        data.examples,
        settings.train_config(out_dir),
        dev=data.dev_eval,
        eval_options=eval_options,
        on_progress=on_progress,
        trie_loss=settings.trie_loss,
    )
    seconds = time.perf_counter() - started
    scores = None
    if data.dev_eval and is_main_process():
        refs = [format_answer(*e.answer) for e in data.dev_eval]  # type: ignore[misc]
        scores = kgclue_scores(predictions_of(model.answer([e.question for e in data.dev_eval], eval_options)), refs)
    return TrainRun(result, seconds, parameters, scores)


def save_trained(
    model: KgqaModel, run: TrainRun, out_dir: str | os.PathLike, *, kb_path: str, epochs: int, kb_link: bool = False
) -> None:
    """Save a trained model into ``out_dir`` (:meth:`KgqaModel.save`: the KB copied, or referenced with
    ``kb_link``) with a record of its training, and remove the resume checkpoint and the best-weights copy from
    ``out_dir/training`` (``train_log.jsonl`` stays). Call it on rank 0 only."""
    model.config["training"] = {
        "epochs": epochs,
        "steps": run.result.steps,
        "seconds": run.seconds,
        "parameters": run.parameters,
    }
    model.save(out_dir, kb_path=kb_path, copy_kb=not kb_link)
    for sub in ("checkpoint-last", "best"):
        shutil.rmtree(Path(out_dir) / "training" / sub, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------------
# The KB's trie as a file ('nlptool kg-qa build-trie')


def load_codec(spec: str, kb_path: str | os.PathLike, *, kb_name: str | None = None) -> Any:
    """The codec that turns keys into token ids for a trie: ``'char'`` (a character vocabulary of the KB file itself),
    a kg-qa model folder (its codec), or a Hugging Face tokenizer folder or hub id (keys start with its bos, cls or
    pad token and end with its eos or sep token)."""
    from nlptool.core.kgqa.data import iter_kb_file
    from nlptool.core.kgqa.keys import HFCodec

    if spec == "char":
        triples = iter_kb_file(kb_path, name=kb_name, report_header=False)
        return CharCodec.from_texts(t for _, s, p, o in triples for t in (s, p, o))
    folder = Path(spec)
    if (folder / CONFIG_FILE).is_file():
        cfg = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        if cfg.get("backbone") == "bart-char":
            return CharCodec.load(folder)
        return KgqaModel.load(folder).codec
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(spec)
    except (OSError, ValueError) as exc:
        raise NlptoolError(f"cannot load tokenizer '{spec}' ({str(exc).splitlines()[0]})") from None
    start = next((t for t in (tok.bos_token_id, tok.cls_token_id, tok.pad_token_id) if t is not None), None)
    end = next((t for t in (tok.eos_token_id, tok.sep_token_id) if t is not None), None)
    if start is None or end is None:
        raise NlptoolError(f"tokenizer '{spec}' has no start (bos/cls/pad) or end (eos/sep) token")
    return HFCodec(tok, start_id=start, end_id=end)


@dataclass
class TrieBuild:
    """A trie built from a KB file (:func:`build_trie_file`): the trie, the metadata to store with it and the
    build's figures (triples, keys, duplicate keys, collisions, bytes, bytes per key, seconds)."""

    trie: TokenTrie
    meta: dict[str, Any]
    metrics: dict[str, Any]


def build_trie_file(
    kb_path: str | os.PathLike, tokenizer: str, *, kb_name: str | None = None, chunk_size: int = 1_000_000
) -> TrieBuild:
    """Stream a KB file into the trie of its keys (:func:`~nlptool.core.kgqa.keys.build_trie_from_file`, values: the
    line of each key's first triple) with the codec of ``tokenizer`` (:func:`load_codec`); ``kb_name`` is the KB's
    name in messages and in the metadata's place of ``kb_path`` (e.g. ``<stdin>`` for a spooled copy)."""
    from nlptool.core.kgqa.keys import build_trie_from_file

    codec = load_codec(tokenizer, kb_path, kb_name=kb_name or str(kb_path))
    stats: dict[str, int] = {}
    start = time.perf_counter()
    trie, duplicates, triples = build_trie_from_file(
        str(kb_path), codec, chunk_size=chunk_size, name=kb_name or str(kb_path), stats=stats
    )
    seconds = time.perf_counter() - start
    meta = {"kb_sha256": file_sha256(kb_path), "codec": codec.kind, "values": "kb_line"}
    metrics = {
        "triples": triples,
        "keys": len(trie),
        "duplicate_keys": duplicates,
        "collisions": stats["collisions"],
        "bytes": trie.nbytes,
        "bytes_per_key": trie.nbytes / max(len(trie), 1),
        "build_seconds": seconds,
    }
    return TrieBuild(trie, meta, metrics)
