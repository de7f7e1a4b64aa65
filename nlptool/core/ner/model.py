"""The NER model: :class:`TokenEncoder` (the shared encoder), the span heads and :class:`SpanNerModel` (save, load).

:func:`make_head` builds a GlobalPointer / Efficient GlobalPointer head (:mod:`nlptool.core.globalpointer`) over an
encoder's hidden size; :func:`token_states` runs an encoder's transformer; :func:`head_settings`,
:func:`save_transformer` and :func:`write_head` write the parts of an NER model folder (``save_pretrained`` files,
``ner_head.safetensors`` and ``ner_config.json``) that :meth:`SpanNerModel.load` reads back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nlptool.core.errors import NlptoolError
from nlptool.core.ner.data import default_stride

NER_CONFIG = "ner_config.json"
NER_HEAD_WEIGHTS = "ner_head.safetensors"
HEADS = ("egp", "gp")
_FORMAT = "nlptool-ner"
_FORMAT_VERSION = 1


def make_head(kind: str, encoder: Any, num_types: int, head_size: int) -> torch.nn.Module:
    """A fresh :class:`~nlptool.core.globalpointer.EfficientGlobalPointer` (``egp``) or
    :class:`~nlptool.core.globalpointer.GlobalPointer` (``gp``) over ``encoder``'s hidden size (its
    ``config.hidden_size``; a :class:`TokenEncoder` or sentence encoder: its transformer's)."""
    from nlptool.core.globalpointer import EfficientGlobalPointer, GlobalPointer

    if kind not in HEADS:
        raise NlptoolError(f"unknown head '{kind}'; choose one of {', '.join(HEADS)}")
    hidden = int(_transformer(encoder).config.hidden_size)
    cls = EfficientGlobalPointer if kind == "egp" else GlobalPointer
    return cls(hidden, num_types, head_size)


def _freeze_pooler(transformer: Any) -> None:
    pooler = getattr(transformer, "pooler", None)
    if pooler is not None:
        pooler.requires_grad_(False)  # unused: no gradient (DDP insists), no weight decay


def head_settings(labels: Sequence[str], head: str, head_size: int, max_length: int, stride: int) -> dict[str, Any]:
    """The settings part of ``ner_config.json`` (format, labels, head kind and size, window length and stride)."""
    return {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "labels": list(labels),
        "head": head,
        "head_size": head_size,
        "max_length": max_length,
        "stride": stride,
        "rope": True,
    }


def save_transformer(model: Any, tokenizer: Any, path: str | os.PathLike) -> None:
    """``save_pretrained`` of a transformer and its tokenizer into ``path`` (created), without progress bars."""
    from transformers.utils import logging as hf_logging

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Writing model shards" bars: core code does not print
    try:
        model.save_pretrained(out)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(out)


def write_head(path: str | os.PathLike, head: torch.nn.Module, config: dict[str, Any]) -> None:
    """Write a span head's weights (``ner_head.safetensors``) and ``config`` (``ner_config.json``) into ``path``."""
    from safetensors.torch import save_file

    out = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(out / NER_HEAD_WEIGHTS))
    (out / NER_CONFIG).write_text(json.dumps(config, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


class TokenEncoder(torch.nn.Module):
    """A transformer and its tokenizer as the shared encoder of token-level tasks (:class:`NerTask`): token states
    out, ``save(folder)`` as ``save_pretrained`` folders (what an NER model folder holds besides its head).

    Attributes:
        model: the transformer (``AutoModel``); its pooler, unused by span heads, is frozen.
        tokenizer: its fast tokenizer.
        name: what logs and ``ner_config.json``'s ``base_model`` call it (the model id or folder for :meth:`load`).

    Parameters are named ``model.*``, as in :class:`~nlptool.core.encoder.SentenceEncoder`, whose ``model`` and
    ``tokenizer`` :class:`NerTask` uses the same way.
    """

    def __init__(self, model: Any, tokenizer: Any, name: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        config = getattr(model, "config", None)
        self.name: str = name or str(getattr(config, "_name_or_path", "") or type(model).__name__)
        _freeze_pooler(model)

    @classmethod
    def load(cls, spec: str | os.PathLike | None, *, role: str = "a base encoder for NER") -> TokenEncoder:
        """Load a model folder, hub id or (``None``) the bundled default (:func:`nlptool.core.models.resolve_model`;
        ``role`` names it in errors)."""
        from transformers import AutoModel

        from nlptool.core.models import load_model, load_tokenizer, resolve_model

        resolved = resolve_model(None if spec is None else str(spec), role=role)
        tokenizer = load_tokenizer(resolved)
        return cls(load_model(resolved, AutoModel), tokenizer, resolved.name)

    def forward(self, input_ids: Any, attention_mask: Any) -> Any:
        """``(B, L)`` ids and mask → ``(B, L, hidden)`` last hidden states."""
        return token_states(self, input_ids, attention_mask)

    def save(self, path: str | os.PathLike) -> None:
        """The transformer and tokenizer, ``save_pretrained`` into ``path``."""
        save_transformer(self.model, self.tokenizer, path)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # Checkpoints of ``ner train`` before the task layer held a SpanNerModel, whose transformer parameters are
        # ``encoder.*`` where this module has ``encoder.model.*``: rename them, so --resume continues those runs.
        for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(prefix + "model.")]:
            state_dict[prefix + "model." + key[len(prefix) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args)


def token_states(encoder: Any, input_ids: Any, attention_mask: Any) -> Any:
    """The last hidden states of ``encoder``'s transformer: its ``model`` (a :class:`TokenEncoder` or a
    :class:`~nlptool.core.encoder.SentenceEncoder`), else ``encoder`` itself (a plain ``AutoModel``)."""
    return _transformer(encoder)(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _transformer(encoder: Any) -> Any:
    return encoder if hasattr(encoder, "config") else encoder.model


class SpanNerModel(torch.nn.Module):
    """An encoder (any transformers ``AutoModel``) and a GlobalPointer or Efficient GlobalPointer head.

    ``forward(input_ids, attention_mask) -> (B, H, L, L)`` span logits. Saved as a ``save_pretrained`` folder of the
    encoder and tokenizer plus ``ner_head.safetensors`` (the head) and ``ner_config.json`` (labels and settings).

    Args:
        encoder: the transformer (hidden states from ``last_hidden_state``).
        labels: entity types, in head order.
        head: ``egp`` (Efficient GlobalPointer) or ``gp`` (GlobalPointer).
        head_size: the query/key size ``d`` (64 in Su's posts).
        max_length: tokens per window that prediction uses (the training setting).
        stride: window overlap for long texts.
        head_module: an existing head to use (e.g. :attr:`NerTask.head`, shared, not copied) instead of a new one.
    """

    def __init__(
        self,
        encoder: Any,
        labels: Sequence[str],
        *,
        head: str = "egp",
        head_size: int = 64,
        max_length: int = 128,
        stride: int | None = None,
        head_module: torch.nn.Module | None = None,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise NlptoolError(f"unknown head '{head}'; choose one of {', '.join(HEADS)}")
        if not labels:
            raise NlptoolError("no entity labels: the training data has no entities")
        self.encoder = encoder
        self.labels = list(labels)
        self.head_kind = head
        self.head_size = head_size
        self.max_length = max_length
        self.stride = default_stride(max_length) if stride is None else stride
        self.head = head_module if head_module is not None else make_head(head, encoder, len(self.labels), head_size)
        _freeze_pooler(encoder)

    @property
    def num_types(self) -> int:
        return len(self.labels)

    def forward(self, input_ids: Any, attention_mask: Any) -> Any:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(hidden, attention_mask)

    def settings(self) -> dict[str, Any]:
        return head_settings(self.labels, self.head_kind, self.head_size, self.max_length, self.stride)

    def save(self, path: str | os.PathLike, tokenizer: Any, extra: dict[str, Any] | None = None) -> None:
        """Write the encoder and tokenizer (``save_pretrained``), the head weights and ``ner_config.json``."""
        save_transformer(self.encoder, tokenizer, path)
        write_head(path, self.head, {**self.settings(), **(extra or {})})

    @classmethod
    def load(cls, path: str | os.PathLike) -> tuple[SpanNerModel, Any, dict[str, Any]]:
        """Load a folder written by :meth:`save`; returns ``(model, tokenizer, config)``.

        A folder of another kind (a sentence encoder, a kg-qa model) is refused with a line that says what it is, and
        a damaged or incomplete folder with a line that names the file (:mod:`nlptool.core.models`)."""
        from transformers import AutoModel

        from nlptool.core.models import (
            NER,
            ResolvedModel,
            check_model_folder,
            damaged,
            load_model,
            load_safetensors,
            load_tokenizer,
            read_json_file,
        )

        folder = check_model_folder(
            path, accept={NER}, role="an NER model folder", hint="train one with 'nlptool ner train'"
        )
        cfg_path = folder / NER_CONFIG
        if not cfg_path.is_file():
            raise NlptoolError(
                f"{folder} has no {NER_CONFIG}, so the NER model folder is incomplete; retrain it with 'nlptool ner "
                "train'"
            )
        cfg = read_json_file(cfg_path)
        if cfg.get("format") != _FORMAT:
            raise damaged(cfg_path, f"format {cfg.get('format')!r}, not '{_FORMAT}'")
        labels, head = cfg.get("labels"), cfg.get("head")
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise damaged(cfg_path, "'labels' is not a non-empty list of strings")
        if head not in HEADS:
            raise damaged(cfg_path, f"'head' is {head!r}, not one of {', '.join(HEADS)}")
        for key in ("head_size", "max_length", "stride"):
            value = cfg.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise damaged(cfg_path, f"'{key}' is {value!r}, not a positive integer")
        weights = folder / NER_HEAD_WEIGHTS
        head_state = load_safetensors(weights)  # before the encoder: a damaged folder fails fast
        resolved = ResolvedModel("local", str(folder.resolve()), str(path))
        tokenizer = load_tokenizer(resolved)
        encoder = load_model(resolved, AutoModel)
        model = cls(
            encoder, labels, head=head, head_size=cfg["head_size"], max_length=cfg["max_length"], stride=cfg["stride"]
        )
        try:
            missing, unexpected = model.head.load_state_dict(head_state, strict=False)
        except RuntimeError as exc:  # tensor shapes that do not fit the head
            raise damaged(weights, f"{str(exc).strip().splitlines()[-1].strip()[:160]}") from None
        if missing or unexpected:
            raise damaged(
                weights,
                f"it does not match a '{head}' head with {len(labels)} types: missing {missing}, unexpected "
                f"{unexpected}",
            )
        model.eval()
        return model, tokenizer, cfg
