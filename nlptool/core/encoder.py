"""Sentence embeddings from any Hugging Face encoder, saved in a form the ecosystem loads.

:class:`SentenceEncoder` wraps an ``AutoModel`` and its tokenizer and pools the token states of each text into one
vector. With ``H`` the last hidden state (batch, tokens, dim), ``m`` the attention mask, and ``H_k`` the output of
transformer layer ``k`` (``hidden_states[k]``; ``hidden_states[0]`` is the embedding layer, ``L`` the last layer):

- ``cls``: ``H[:, 0]``, the first token's state ([CLS] for BERT, <s> for RoBERTa);
- ``mean``: ``sum_t m_t H_t / sum_t m_t``, Sentence-BERT's default (Reimers & Gurevych 2019, arXiv:1908.10084);
- ``first-last-avg``: the masked mean over tokens of ``(H_1 + H_L) / 2``, the first and the last transformer layer,
  which Su Jianlin's BERT-whitening post (https://kexue.fm/archives/8069) found better than the last layer alone
  for BERT that was not trained for sentence similarity;
- ``pooler``: the model's ``pooler_output``, ``tanh(W H[:, 0] + b)``, BERT's pooler (trained with the NSP task). It
  needs the checkpoint's pooler weights: a checkpoint without them is an error, never a randomly initialised pooler.

The encoder is the model that the CoSENT loss (:mod:`nlptool.core.cosent`) trains and that ``encode`` and
``eval-sts`` run; :meth:`SentenceEncoder.save` writes a folder that loads three ways with the same embeddings:

1. ``SentenceEncoder.load(folder)``: the pooling and ``max_length`` are read back from ``nlptool_encoder.json``;
2. ``transformers.AutoModel.from_pretrained(folder)`` plus the same pooling by hand: the folder is a plain
   ``save_pretrained`` folder (model and tokenizer);
3. ``sentence_transformers.SentenceTransformer(folder)``: ``modules.json`` lists the sentence-transformers pipeline
   (module types under their long-standing ``sentence_transformers.models.*`` names, which every release since 2.0
   resolves; 6.x maps them to its new module paths):

   - ``cls`` / ``mean``: Transformer (folder root) + Pooling (``1_Pooling``);
   - ``pooler``: Transformer + CLS Pooling (``1_Pooling``) + Dense (``2_Dense``: dim -> dim with bias and
     ``torch.nn.Tanh``, its weights copied from the model's pooler), which computes exactly ``tanh(W H[:, 0] + b)``;
   - ``first-last-avg``: Transformer (with ``config_args: {output_hidden_states: true}`` in
     ``sentence_bert_config.json``, so it hands all layers on) + WeightedLayerPooling (``1_WeightedLayerPooling``:
     ``layer_start=1`` and weight 1 on the first and the last transformer layer, 0 on the rest, i.e. ``(H_1 + H_L)/2``)
     + mean Pooling (``2_Pooling``).

   Only if a model's pooler is not a linear layer plus tanh (so no Dense module reproduces it), or its config does
   not give ``num_hidden_layers`` for first-last-avg, is ``modules.json`` left out; sentence-transformers then falls
   back to mean pooling on such a folder, so load it with ``SentenceEncoder.load``.

A sentence-transformers folder written by others loads with the pooling its ``1_Pooling/config.json`` names (cls or
mean); a pipeline with modules nlptool does not apply (Dense, another pooling) is an error unless a pooling is given
explicitly, since the embeddings would otherwise differ from what the model was trained to produce. A ``Normalize``
module is accepted but not applied by default: pass ``normalize=True`` to :meth:`SentenceEncoder.encode` to get the
unit vectors ``SentenceTransformer.encode`` returns (cosines are the same either way).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nlptool.core.batching import length_batches
from nlptool.core.errors import NlptoolError, RowError
from nlptool.core.models import (
    NLPTOOL_CONFIG,
    POOLING_MODES,  # noqa: F401 - re-exported: the pooling modes belong to the encoder's API
    load_model,
    load_tokenizer,
    resolve_encoder,
)
from nlptool.core.models import check_pooling as _check_pooling

DEFAULT_MAX_LENGTH_CAP = 512

# What save() writes besides the save_pretrained files: an older save's leftovers under these names are removed.
_OWNED = (
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    NLPTOOL_CONFIG,
    "1_Pooling",
    "2_Pooling",
    "2_Dense",
    "1_WeightedLayerPooling",
    "2_Normalize",
    "3_Normalize",
)
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class SentenceEncoder(torch.nn.Module):
    """A Hugging Face encoder plus a pooling: texts in, one vector per text out.

    Args:
        model: a transformers base model (``AutoModel``), e.g. ``BertModel``.
        tokenizer: its tokenizer; it must have a padding token.
        pooling: one of :data:`POOLING_MODES` (see the module docstring for the formulas).
        max_length: texts are truncated to this many tokens (special tokens included).

    Attributes:
        model, tokenizer, pooling, max_length: as given.
        name: what logs and metrics call the model (the model id or folder for :meth:`load`).
    """

    def __init__(self, model: Any, tokenizer: Any, pooling: str = "mean", max_length: int = 128) -> None:
        super().__init__()
        _check_pooling(pooling, "the pooling argument")
        if pooling == "pooler" and getattr(model, "pooler", None) is None:
            raise NlptoolError(
                f"pooling 'pooler' needs a pooler layer, and {type(model).__name__} has none; "
                "choose pooling cls, mean or first-last-avg"
            )
        if getattr(tokenizer, "pad_token", None) is None:
            raise NlptoolError(
                f"the tokenizer of {type(model).__name__} has no padding token, so texts cannot be batched; "
                "set tokenizer.pad_token (e.g. to its [SEP] or </s> token) before building the encoder"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = _check_max_length(max_length, model, "the max_length argument")
        config = getattr(model, "config", None)
        self.name: str = str(getattr(config, "_name_or_path", "") or type(model).__name__)
        # Pooler weights that the checkpoint lacked (initialised at random, unused by this pooling): save() leaves
        # them out so that the saved folder still has no pooler and pooling="pooler" on it is still refused.
        self._untrained_pooler_keys: frozenset[str] = frozenset()
        #: whether the model's own pipeline ends in L2 normalisation (a sentence-transformers ``Normalize`` module,
        #: as in all-MiniLM-L6-v2): ``encode(normalize=None)`` then normalises, like ``SentenceTransformer.encode``,
        #: and :meth:`save` keeps the module.
        self.normalizes: bool = False
        #: whether the checkpoint is already a trained sentence encoder (it has a sentence-transformers pipeline,
        #: ``modules.json``), as opposed to a raw pre-trained encoder such as bert-base
        self.sentence_model: bool = False

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(
        cls, spec: str | os.PathLike | None, *, pooling: str | None = None, max_length: int | None = None
    ) -> SentenceEncoder:
        """Load a model folder, hub id or (``None``) the bundled default as a sentence encoder.

        Args:
            spec: what :func:`nlptool.core.models.resolve_model` accepts; the model and its saved settings are
                found by :func:`nlptool.core.models.resolve_encoder`.
            pooling: overrides the folder's; otherwise the pooling it was saved or trained with
                (``nlptool_encoder.json``, else sentence-transformers' ``modules.json`` and ``1_Pooling``), else mean.
            max_length: overrides the folder's; otherwise ``nlptool_encoder.json``'s, else
                ``sentence_bert_config.json``'s ``max_seq_length``, else the tokenizer's ``model_max_length`` capped at
                512 and at the model's ``max_position_embeddings`` (tokenizers without a limit report 1e30).

        Raises:
            NlptoolError: unknown pooling, ``pooler`` on a checkpoint without pooler weights, a folder whose
                sentence-transformers pipeline nlptool cannot reproduce, a missing model (ModelNotFoundError).
        """
        resolved, settings = resolve_encoder(spec, pooling=pooling, max_length=max_length)
        chosen = settings.pooling
        tokenizer = load_tokenizer(resolved)
        recorder = _AutoModelWithLoadingInfo()
        model = load_model(
            resolved,
            recorder,
            required=("pooler",) if chosen == "pooler" else (),
            head_name="pooler (the dense+tanh layer over the first token)",
            fix_hint="choose pooling cls, mean or first-last-avg, or a checkpoint saved with its pooler",
        )
        length = settings.max_length if settings.max_length is not None else _default_max_length(tokenizer, model)
        encoder = cls(model, tokenizer, pooling=chosen, max_length=length)
        encoder.name = resolved.name
        encoder.sentence_model = settings.sentence_model
        encoder.normalizes = settings.normalizes
        if chosen != "pooler":
            encoder._untrained_pooler_keys = frozenset(k for k in recorder.missing if "pooler" in k.split("."))
        return encoder

    # ------------------------------------------------------------------ the model

    @property
    def dim(self) -> int:
        """The embedding size (the model's hidden size; the pooler keeps it)."""
        config = self.model.config
        size = getattr(config, "hidden_size", None) or getattr(config, "dim", None) or getattr(config, "d_model", None)
        if size is None:
            size = self.model.get_input_embeddings().embedding_dim
        return int(size)

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        """Tokenize a batch: padded to its longest text, truncated to ``max_length`` tokens, as PyTorch tensors."""
        batch = self.tokenizer(
            list(texts), padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return dict(batch)

    def _batches(
        self, items: list[str], batch_size: int, sort_by_length: bool, block: int = 8192
    ) -> Iterator[tuple[list[int], dict[str, Tensor]]]:
        """``(indices into items, padded features)`` per batch. Sorted: each block of ``block`` texts is tokenized
        once and cut into batches by token count (:func:`length_batches`); the block bounds the memory of the
        tokenized texts. Unsorted: batches in input order, tokenized per batch."""
        if not sort_by_length:
            for start in range(0, len(items), batch_size):
                idx = list(range(start, min(start + batch_size, len(items))))
                yield idx, self.tokenize([items[i] for i in idx])
            return
        for base in range(0, len(items), block):
            enc = self.tokenizer(items[base : base + block], truncation=True, max_length=self.max_length)
            keys = list(enc.keys())
            feats = [{k: enc[k][i] for k in keys} for i in range(len(enc["input_ids"]))]
            for idx in length_batches([len(f["input_ids"]) for f in feats], batch_size):
                padded = self.tokenizer.pad([feats[i] for i in idx], padding="longest", return_tensors="pt")
                yield [base + i for i in idx], dict(padded)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """Pooled embeddings (batch, dim) of tokenized texts (from :meth:`tokenize`); not normalised.

        The features are moved to the model's device. Gradients flow unless the caller disables them, so training
        code calls this directly; :meth:`encode` is the inference entry point.
        """
        device = _device_of(self.model)
        inputs = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in features.items()}
        first_last = self.pooling == "first-last-avg"
        out = self.model(**inputs, output_hidden_states=first_last, return_dict=True)
        mask = inputs.get("attention_mask")
        if self.pooling == "cls":
            return out.last_hidden_state[:, 0]
        if self.pooling == "pooler":
            pooled = getattr(out, "pooler_output", None)
            if pooled is None:
                raise NlptoolError(
                    f"model '{self.name}' returned no pooler output; choose pooling cls, mean or first-last-avg"
                )
            return pooled
        if self.pooling == "mean":
            return masked_mean(out.last_hidden_state, mask)
        if self.pooling == "first-last-avg":
            hidden = out.hidden_states
            if hidden is None or len(hidden) < 2:
                raise NlptoolError(
                    f"model '{self.name}' returned no per-layer hidden states, which first-last-avg needs; "
                    "choose pooling cls or mean"
                )
            return masked_mean((hidden[1] + hidden[-1]) / 2, mask)
        _check_pooling(self.pooling, "the encoder's pooling attribute")
        raise AssertionError("unreachable")  # pragma: no cover

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 64,
        normalize: bool = False,
        device: str | torch.device | None = None,
        progress: Callable[[int], None] | None = None,
        sort_by_length: bool = True,
    ) -> np.ndarray:
        """Embed texts: a float32 array (len(texts), dim) in the order of ``texts``.

        Runs without gradients and with dropout off; the model's train/eval mode is restored afterwards. With
        ``sort_by_length`` the texts are tokenized first (in blocks of 8,192) and batched by their *token* count,
        longest first (:func:`nlptool.core.batching.length_batches`), so a batch pads to nearly its own length:
        sorting by characters, as sentence-transformers does, left 20,161 padding tokens per 47,757 real ones on
        STS-B dev in batches of 64, sorting by tokens 1,925. Results go back to input order. An empty string is
        allowed (it embeds the special tokens alone); an empty input gives shape (0, dim).

        Args:
            texts: the texts.
            batch_size: texts per forward pass.
            normalize: scale each vector to unit L2 norm (a zero vector stays zero).
            device: run there; the model is moved to it and stays there. ``None``: where the model is.
            progress: called after each batch with the number of texts it held.
            sort_by_length: batch texts of similar length together (off: batches in input order).
        """
        if isinstance(texts, str):
            raise NlptoolError("encode expects a sequence of texts, not a single string; wrap it in a list")
        items = list(texts)
        for row, text in enumerate(items):
            if not isinstance(text, str):
                raise RowError(f"expected a text (str), got {type(text).__name__}", row=row)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise NlptoolError(f"batch size must be a positive integer, got {batch_size!r}")
        if device is not None:
            self.to(device)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        if not items:
            return out
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            with torch.inference_mode():
                for idx, features in self._batches(items, batch_size, sort_by_length):
                    emb = self.forward(features).float()
                    if normalize:
                        emb = torch.nn.functional.normalize(emb, p=2, dim=1)
                    out[idx] = emb.cpu().numpy()
                    if progress is not None:
                        progress(len(idx))
        finally:
            for module, mode in modes:
                module.training = mode
        return out

    # ------------------------------------------------------------------ saving

    def save(self, path: str | os.PathLike) -> None:
        """Write the encoder to folder ``path`` so that nlptool, transformers and sentence-transformers load it.

        The folder holds the ``save_pretrained`` model and tokenizer, ``nlptool_encoder.json`` (pooling,
        max_length, nlptool version), ``sentence_bert_config.json`` (``max_seq_length``, ``do_lower_case``),
        ``config_sentence_transformers.json`` (versions, cosine similarity) and the sentence-transformers modules
        described in the module docstring. Everything is first written to a hidden folder inside ``path`` and then
        moved into place, so a failed save does not leave a half-written model over a good one; other files in
        ``path`` are kept, except leftovers of an earlier save (module folders, weight files) that this save does
        not write.
        """
        target = Path(path).expanduser()
        if target.exists() and not target.is_dir():
            raise NlptoolError(f"cannot save the encoder to {target}: it is a file; give a folder path")
        stage = target / f".nlptool-save-{uuid.uuid4().hex[:12]}"
        try:
            stage.mkdir(parents=True)
        except OSError as exc:
            raise NlptoolError(f"cannot create the model folder {target} ({exc.strerror}); check the path") from None
        try:
            self._write_folder(stage)
            _replace_contents(stage, target)
        except OSError as exc:
            raise NlptoolError(
                f"could not save the encoder to {target} ({exc}); check free space and permissions"
            ) from None
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    def _write_folder(self, folder: Path) -> None:
        import transformers

        from nlptool import __version__ as nlptool_version

        state_dict = None
        if self._untrained_pooler_keys:
            state_dict = {k: v for k, v in self.model.state_dict().items() if k not in self._untrained_pooler_keys}
        self.model.save_pretrained(folder, state_dict=state_dict)
        self.tokenizer.save_pretrained(folder)
        dim = self.dim
        _write_json(
            folder / NLPTOOL_CONFIG,
            {"pooling": self.pooling, "max_length": self.max_length, "nlptool_version": nlptool_version},
        )
        sbert: dict[str, Any] = {"max_seq_length": self.max_length, "do_lower_case": False}
        versions = {"transformers": transformers.__version__, "pytorch": torch.__version__}
        st_version = _installed_version("sentence-transformers")
        if st_version is not None:
            versions["sentence_transformers"] = st_version
        _write_json(
            folder / "config_sentence_transformers.json",
            {
                "__version__": versions,
                "model_type": "SentenceTransformer",
                "prompts": {},
                "default_prompt_name": None,
                "similarity_fn_name": "cosine",
            },
        )
        modules = [_st_module(0, "", "Transformer")]
        if self.pooling in ("cls", "mean"):
            _write_st_pooling(folder / "1_Pooling", dim, self.pooling)
            modules.append(_st_module(1, "1_Pooling", "Pooling"))
        elif self.pooling == "pooler":
            linear = _pooler_linear(self.model)
            if linear is None:
                modules = []
            else:
                _write_st_pooling(folder / "1_Pooling", dim, "cls")
                _write_st_dense(folder / "2_Dense", linear)
                modules += [_st_module(1, "1_Pooling", "Pooling"), _st_module(2, "2_Dense", "Dense")]
        else:  # first-last-avg
            layers = getattr(self.model.config, "num_hidden_layers", None)
            if not isinstance(layers, int) or layers < 1:
                modules = []
            else:
                sbert["config_args"] = {"output_hidden_states": True}
                _write_st_layer_pooling(folder / "1_WeightedLayerPooling", dim, layers)
                _write_st_pooling(folder / "2_Pooling", dim, "mean")
                modules += [
                    _st_module(1, "1_WeightedLayerPooling", "WeightedLayerPooling"),
                    _st_module(2, "2_Pooling", "Pooling"),
                ]
        _write_json(folder / "sentence_bert_config.json", sbert)
        if modules:
            if self.normalizes:
                idx = len(modules)
                (folder / f"{idx}_Normalize").mkdir()
                modules.append(_st_module(idx, f"{idx}_Normalize", "Normalize"))
            _write_json(folder / "modules.json", modules)


# ---------------------------------------------------------------------- pooling math


def masked_mean(tokens: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over the token axis of ``tokens`` (batch, tokens, dim), counting only positions where ``mask`` is 1.

    ``sum_t m_t x_t / max(sum_t m_t, 1e-9)``; with no mask, the plain mean.
    """
    if mask is None:
        return tokens.mean(dim=1)
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


# ---------------------------------------------------------------------- helpers


class _AutoModelWithLoadingInfo:
    """``AutoModel`` for :func:`load_model` that remembers which weights the checkpoint lacked."""

    def __init__(self) -> None:
        self.missing: set[str] = set()

    def from_pretrained(self, location: str, **kwargs: Any) -> Any:
        from transformers import AutoModel

        result = AutoModel.from_pretrained(location, **kwargs)
        if isinstance(result, tuple):
            self.missing = set(result[1].get("missing_keys", ()))
        return result


def _positions(model: Any) -> int | None:
    value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


def _check_max_length(max_length: Any, model: Any, where: str) -> int:
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < 1:
        raise NlptoolError(f"max_length must be a positive integer, got {max_length!r} from {where}")
    positions = _positions(model)
    if positions is not None and max_length > positions:
        raise NlptoolError(
            f"max_length {max_length} (from {where}) exceeds the model's {positions} position embeddings; "
            f"use at most {positions}"
        )
    return int(max_length)


def _default_max_length(tokenizer: Any, model: Any) -> int:
    limits = [DEFAULT_MAX_LENGTH_CAP]
    reported = getattr(tokenizer, "model_max_length", None)
    if isinstance(reported, int) and 0 < reported < 1_000_000:
        limits.append(reported)
    positions = _positions(model)
    if positions is not None:
        limits.append(positions)
    return min(limits)


def _device_of(model: torch.nn.Module) -> torch.device:
    for param in model.parameters():
        return param.device
    return torch.device("cpu")  # pragma: no cover - a model without parameters


def _pooler_linear(model: Any) -> torch.nn.Linear | None:
    """The linear layer of a ``tanh(linear(first token))`` pooler (BERT, RoBERTa, ALBERT ...), else ``None``."""
    pooler = getattr(model, "pooler", None)
    dense = getattr(pooler, "dense", None)
    if isinstance(dense, torch.nn.Linear) and isinstance(getattr(pooler, "activation", None), torch.nn.Tanh):
        return dense
    if isinstance(pooler, torch.nn.Linear) and isinstance(getattr(model, "pooler_activation", None), torch.nn.Tanh):
        return pooler
    return None


def _st_module(idx: int, path: str, kind: str) -> dict[str, Any]:
    return {"idx": idx, "name": str(idx), "path": path, "type": f"sentence_transformers.models.{kind}"}


def _write_st_pooling(folder: Path, dim: int, mode: str) -> None:
    folder.mkdir()
    # The four flags that every sentence-transformers release accepts (2.x passes the file's keys to Pooling(...)).
    config = {
        "word_embedding_dimension": dim,
        "pooling_mode_cls_token": mode == "cls",
        "pooling_mode_mean_tokens": mode == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    _write_json(folder / "config.json", config)


def _write_st_dense(folder: Path, linear: torch.nn.Linear) -> None:
    from safetensors.torch import save_file

    folder.mkdir()
    _write_json(
        folder / "config.json",
        {
            "in_features": linear.in_features,
            "out_features": linear.out_features,
            "bias": linear.bias is not None,
            "activation_function": "torch.nn.modules.activation.Tanh",
        },
    )
    weights = {"linear.weight": linear.weight.detach().float().cpu().contiguous().clone()}
    if linear.bias is not None:
        weights["linear.bias"] = linear.bias.detach().float().cpu().contiguous().clone()
    save_file(weights, str(folder / "model.safetensors"))


def _write_st_layer_pooling(folder: Path, dim: int, layers: int) -> None:
    from safetensors.torch import save_file

    folder.mkdir()
    _write_json(
        folder / "config.json", {"word_embedding_dimension": dim, "layer_start": 1, "num_hidden_layers": layers}
    )
    weights = torch.zeros(layers, dtype=torch.float32)  # layers 1..L: weight 1 on the first and on the last
    weights[0] += 1.0
    weights[-1] += 1.0
    save_file({"layer_weights": weights}, str(folder / "model.safetensors"))


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _installed_version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _replace_contents(stage: Path, target: Path) -> None:
    """Move everything in ``stage`` into ``target``, replacing same-named entries; drop stale owned leftovers."""
    written = {item.name for item in stage.iterdir()}
    stale = [name for name in _OWNED + _WEIGHT_FILES if name not in written]
    stale += [p.name for p in target.glob("model-*-of-*.safetensors") if p.name not in written]
    stale += [p.name for p in target.glob("pytorch_model-*-of-*.bin") if p.name not in written]
    for name in stale:
        _remove(target / name)
    for item in stage.iterdir():
        dest = target / item.name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(item, dest)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
