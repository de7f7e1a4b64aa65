"""P(IsNext) from a model with a next-sentence-prediction head (:class:`NSPScorer`). See :mod:`nlptool.core.nsp`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nlptool.core.batching import pad_ids
from nlptool.core.errors import NlptoolError
from nlptool.core.nsp.prompts import pair_order

IS_NEXT = 0  # index of "B follows A" among BERT's two NSP logits (labels=0 in BertForNextSentencePrediction)
NOT_NEXT = 1
NSP_WEIGHTS = ("cls.seq_relationship", "pooler")  # what a checkpoint must hold for NSP scoring


class NSPScorer:
    """P(IsNext) for sentence pairs from a model with an NSP head (``BertForNextSentencePrediction`` and kin).

    Args:
        model: a transformers model whose forward takes ``input_ids``, ``token_type_ids``, ``attention_mask`` and
            returns ``logits`` of shape (batch, 2) with IsNext at index :data:`IS_NEXT`.
        tokenizer: its tokenizer (pair encoding: ``[CLS] A [SEP] B [SEP]`` with token types 0/1).
        max_length: pairs are cut to this many tokens; only the text side is shortened, never the prompt.
    """

    def __init__(self, model: Any, tokenizer: Any, max_length: int = 256) -> None:
        if max_length < 8:
            raise NlptoolError(f"max length {max_length} is too short for a sentence pair; use at least 8")
        limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = min(max_length, limit) if isinstance(limit, int) else max_length
        self.name = str(getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__)

    @classmethod
    def load(cls, spec: str | None, *, max_length: int = 256) -> NSPScorer:
        """Load a model folder or hub id that has an NSP head; a checkpoint without one is an error.

        ``from_pretrained`` would initialise a missing ``cls.seq_relationship`` (or pooler) at random and score
        with it; :func:`nlptool.core.models.load_model` reports the missing weights instead.
        """
        from nlptool.core.models import load_model, load_tokenizer, resolve_model

        resolved = resolve_model(spec, role="a next-sentence-prediction model")
        model_class = nsp_model_class(resolved)
        tokenizer = load_tokenizer(resolved)  # first: a broken folder fails before its weights load
        model = load_model(
            resolved,
            model_class,
            required=NSP_WEIGHTS,
            head_name="next-sentence-prediction (NSP) head",
            fix_hint="train one on unlabelled text with `nlptool nsp-adapt --corpus TEXT --model "
            f"{spec or 'default'} --out DIR` and pass --model DIR, or use --method embedding",
        )
        scorer = cls(model, tokenizer, max_length=max_length)
        scorer.name = resolved.name
        return scorer

    def encode_pairs(self, firsts: Sequence[str], seconds: Sequence[str], *, shorten: str) -> list[list[int]]:
        """Token ids and token types of each pair, unpadded: a list of ``[input_ids, token_type_ids]``.

        ``shorten`` is ``first`` or ``second`` (the segment cut when a pair exceeds ``max_length``; the prompt is never
        cut) or ``longest`` (tokens come off the longer segment first: training pairs, pairs of two texts).
        """
        strategies = {"first": "only_first", "second": "only_second", "longest": "longest_first"}
        if shorten not in strategies:
            raise NlptoolError(f"shorten must be first, second or longest, got '{shorten}'")
        strategy = strategies[shorten]
        out: list[list[int]] = []
        step = 4096
        for start in range(0, len(firsts), step):
            a = list(firsts[start : start + step])
            b = list(seconds[start : start + step])
            try:
                enc = self.tokenizer(a, b, truncation=strategy, max_length=self.max_length)
            except Exception as exc:  # tokenizers raise when the kept segment alone is too long
                raise NlptoolError(
                    f"a prompt does not fit into --max-length {self.max_length} tokens with any text ({exc}); "
                    "shorten the prompt or raise --max-length"
                ) from None
            types = enc.get("token_type_ids")
            if types is None:
                raise NlptoolError(
                    f"the tokenizer of '{self.name}' gives no token type ids; NSP needs segment A/B types (BERT)"
                )
            out += [[ids, tt] for ids, tt in zip(enc["input_ids"], types, strict=True)]
        return out

    def score_pairs(
        self,
        firsts: Sequence[str],
        seconds: Sequence[str],
        *,
        shorten: str = "second",
        batch_size: int = 64,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """P(IsNext) for each pair (A = ``firsts[i]``, B = ``seconds[i]``), float64 (n,), in input order.

        Pairs are tokenised once, sorted by length (longest first) and batched, so padding stays small; the model
        runs under ``torch.inference_mode`` in eval mode (its mode is restored).
        """
        import torch

        if len(firsts) != len(seconds):
            raise NlptoolError(f"{len(firsts)} first segments but {len(seconds)} second segments")
        if batch_size < 1:
            raise NlptoolError(f"batch size must be positive, got {batch_size}")
        encoded = self.encode_pairs(firsts, seconds, shorten=shorten)
        n = len(encoded)
        out = np.zeros(n, dtype=np.float64)
        if n == 0:
            return out
        lengths = np.array([len(e[0]) for e in encoded])
        order = np.argsort(-lengths, kind="stable")
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, n, batch_size):
                    idx = order[start : start + batch_size]
                    ids, mask = pad_ids([encoded[i][0] for i in idx], pad_id)
                    types = pad_ids([encoded[i][1] for i in idx], 0)[0]
                    logits = self.model(
                        input_ids=ids.to(device), token_type_ids=types.to(device), attention_mask=mask.to(device)
                    ).logits
                    out[idx] = torch.softmax(logits.float(), dim=-1)[:, IS_NEXT].cpu().numpy()
                    if progress is not None:
                        progress(len(idx))
        finally:
            self.model.train(was_training)
        return out

    def score(
        self,
        texts: Sequence[str],
        prompts: Sequence[str],
        *,
        position: str = "prefix",
        batch_size: int = 64,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Candidates contrast: P(IsNext) of every (text, prompt) pair as an array (len(texts), len(prompts)).

        All ``N x L`` pairs go through :meth:`score_pairs` together (length-sorted batches across texts and labels).
        """
        firsts: list[str] = []
        seconds: list[str] = []
        for text in texts:
            for prompt in prompts:
                a, b = pair_order(prompt, text, position)
                firsts.append(a)
                seconds.append(b)
        flat = self.score_pairs(
            firsts,
            seconds,
            shorten="second" if position == "prefix" else "first",
            batch_size=batch_size,
            progress=progress,
        )
        return flat.reshape(len(texts), len(prompts))


def nsp_model_class(resolved: Any) -> Any:
    """The transformers NSP class for a model's config (BERT-family only); a clear error for other architectures."""
    from transformers import AutoConfig, AutoModelForNextSentencePrediction
    from transformers.models.auto.modeling_auto import MODEL_FOR_NEXT_SENTENCE_PREDICTION_MAPPING_NAMES as NAMES

    from nlptool.core.models import check_folder_files

    if resolved.source != "hub":
        check_folder_files(resolved.location)  # a damaged config.json is named as such
    try:
        config = AutoConfig.from_pretrained(resolved.location)
    except Exception as exc:  # noqa: BLE001 - transformers fails in many ways on a bad config
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NlptoolError(f"could not read the config of model '{resolved.name}' ({first})") from None
    if config.model_type not in NAMES:
        raise NlptoolError(
            f"model '{resolved.name}' is a {config.model_type} model; transformers has a next-sentence-prediction "
            f"head only for {', '.join(sorted(NAMES))}; use one of those, or --method embedding"
        )
    return AutoModelForNextSentencePrediction
