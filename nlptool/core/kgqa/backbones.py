"""Backbones of kg-qa: the networks that read a question and score keys, behind one interface, :class:`Backbone`.

- :class:`Seq2SeqBackbone` wraps an encoder-decoder (the offline ``bart-char`` default, or any pretrained
  ``seq2seq`` checkpoint such as T5/BART); decoding is ``generate()``'s beam search.
- :class:`UniLMBackbone` wraps a BERT-family masked LM used UniLM-style, with nlptool's own beam search.
- :func:`copy_bart_class` is the char BART with a pointer-generator output that copies question characters.

Pretrained checkpoints load through :mod:`nlptool.core.models` (:func:`load_pretrained`): its folder checks, its
offline handling and its check that the masked-LM head a UniLM backbone needs is in the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from nlptool.core.batching import pad_ids
from nlptool.core.errors import NlptoolError
from nlptool.core.kgqa.keys import VOCAB_FILE, CharCodec, HFCodec

BACKBONES = ("bart-char", "seq2seq", "unilm")


@runtime_checkable
class Backbone(Protocol):
    """What :class:`~nlptool.core.kgqa.model.KgqaModel` needs from a backbone.

    Attributes:
        model: the ``torch.nn.Module`` that is trained and saved (a transformers model).
        codec: turns questions and keys into token ids (:class:`~nlptool.core.kgqa.keys.CharCodec` or
            :class:`~nlptool.core.kgqa.keys.HFCodec`); its ``start_id`` is the trie's root, ``end_id`` ends keys.
        kind: ``bart-char``, ``seq2seq`` or ``unilm`` (recorded in ``kgqa.json``).
        trie_loss: the weight of the trie loss in :meth:`loss` (:func:`with_trie_loss`; 0: the plain cross-entropy).

    Backbones are made by :func:`char_bart_backbone` (from scratch) and :func:`pretrained_backbone` (a checkpoint),
    written by :meth:`save` and read back by :func:`load_backbone`.
    """

    model: Any
    codec: Any
    kind: str
    trie_loss: float

    def collate(self, examples: Sequence[tuple[list[int], list[int]]]) -> dict:
        """A training batch from ``(question ids, key ids)`` pairs (:func:`~nlptool.core.kgqa.model.training_pairs`)."""
        ...

    def loss(self, model: Any, batch: dict) -> Any:
        """The mean cross-entropy over the key tokens of ``batch`` (``model`` may be the DDP wrapper of
        :attr:`model`), plus :attr:`trie_loss` × the trie loss when the batch carries trie choices; under torchrun
        the means are over the whole global batch, as in one process."""
        ...

    def generate(
        self,
        questions: Sequence[list[int]],
        make_processor: Callable[[Sequence[list[int]], int], Any] | None,
        *,
        num_beams: int,
        num_return: int,
        max_new_tokens: int,
        fast_forward: bool = False,
    ) -> list[list[tuple[list[int], float]]]:
        """Beam search per question: ``num_return`` ``(key ids, root first; score = sum of log-probabilities)`` pairs.
        ``make_processor(questions, num_beams)`` builds the trie's logits processor (``None``: unconstrained);
        ``fast_forward``: append the tokens the trie forces without a decoder step each (same keys and scores)."""
        ...

    def save(self, folder: Path) -> None:
        """Write the network and its codec into ``folder`` (``save_pretrained`` and the codec's files); the folder is
        read back by :func:`load_backbone`."""
        ...


def distributed() -> bool:
    """Whether this process is one of several torchrun ranks in an initialised process group."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def global_token_mean_loss(logits: Any, labels: Any, *, log_probs: bool = False) -> Any:
    """The mean over the labelled tokens (``labels != -100``) of the **whole global batch** of the cross-entropy of
    ``logits`` (``(..., V)``; ``nll_loss`` when they are already log-probabilities), for torchrun.

    Each rank holds a slice of the batch, and the example-weighted mean of each slice's token mean (what the shared
    loop makes of a per-rank mean) is not the token mean of the batch when slices hold different numbers of tokens; so
    every rank's per-token losses are gathered (:func:`nlptool.core.train.all_gather_with_grad`) and averaged
    together: the loss, hence the gradient, of one process on the whole batch. In one process it equals
    ``cross_entropy(..., ignore_index=-100)``; the backbones use their usual loss there (bit-identical numbers).
    """
    import torch.nn.functional as F

    from nlptool.core.train import all_gather_with_grad

    flat, target = logits.float().flatten(0, -2), labels.flatten()
    keep = target != -100
    fn = F.nll_loss if log_probs else F.cross_entropy
    return all_gather_with_grad(fn(flat[keep], target[keep], reduction="none")).mean()


TRIE_KEYS = ("trie_rows", "trie_tokens", "trie_valid")


def trie_tensors(choices: Sequence[Sequence[tuple[int, Any]]], starts: Sequence[int], width: int) -> dict:
    """The batch entries of the trie loss (:func:`trie_loss_per_token`) from each example's
    :func:`~nlptool.core.kgqa.keys.trie_choices`: ``trie_rows`` (P,), the flattened ``(example, column)`` index of
    every choice point, where example ``i``'s key token ``t`` sits in column ``starts[i] + t`` of a ``width``-wide
    label matrix; ``trie_tokens`` (P, A), the tokens allowed there (padded); ``trie_valid`` (P, A), which are real."""
    import torch

    rows = [i * width + start + t for i, (ch, start) in enumerate(zip(choices, starts, strict=True)) for t, _ in ch]
    sets = [allowed for ch in choices for _, allowed in ch]
    a = max((len(x) for x in sets), default=1)
    tokens = torch.zeros((len(sets), a), dtype=torch.long)
    valid = torch.zeros((len(sets), a), dtype=torch.bool)
    for j, allowed in enumerate(sets):
        tokens[j, : len(allowed)] = torch.from_numpy(np.asarray(allowed, dtype=np.int64))
        valid[j, : len(allowed)] = True
    return {"trie_rows": torch.tensor(rows, dtype=torch.long), "trie_tokens": tokens, "trie_valid": valid}


def trie_loss_per_token(logits: Any, labels: Any, batch: dict) -> Any:
    """Per label position (flattened like ``labels``), the negative log-probability of the label among the tokens the
    trie allows there (the renormalised decoding's probability, ``--renormalize``); 0 where the trie leaves one token
    (or where the key has left the trie). ``logits``: ``(..., V)`` scores or log-probabilities (the same result: only
    differences within a row matter). ``batch``: the entries of :func:`trie_tensors`."""
    import torch

    flat = logits.float().flatten(0, -2)
    rows = batch["trie_rows"]
    out = torch.zeros(flat.shape[0], dtype=flat.dtype, device=flat.device)
    if not len(rows):
        return out
    picked = flat[rows]
    allowed = picked.gather(1, batch["trie_tokens"]).masked_fill(~batch["trie_valid"], float("-inf"))
    gold = picked.gather(1, labels.flatten()[rows].unsqueeze(1)).squeeze(1)
    return out.index_put((rows,), torch.logsumexp(allowed, dim=1) - gold)


def with_trie_loss(loss: Any, logits: Any, labels: Any, batch: dict, weight: float) -> Any:
    """``loss + weight ×`` the mean over the labelled tokens of :func:`trie_loss_per_token` (over the whole global
    batch under torchrun, as :func:`global_token_mean_loss`); ``loss`` unchanged when the batch has no trie entries or
    ``weight`` is 0."""
    from nlptool.core.train import all_gather_with_grad

    if not weight or "trie_rows" not in batch:
        return loss
    per_token = trie_loss_per_token(logits, labels, batch)[labels.flatten() != -100]
    term = all_gather_with_grad(per_token).mean() if distributed() else per_token.mean()
    return loss + weight * term


def _without_trie(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k not in TRIE_KEYS}


pad_batch = pad_ids  # the old name, kept importable from nlptool.core.kgqa (it was in __all__)


class Seq2SeqBackbone:
    """An encoder-decoder model (BART, T5, ...): the question is the source, the key the target."""

    def __init__(self, model: Any, codec: Any, kind: str):
        self.model = model
        self.codec = codec
        self.kind = kind
        self.search_stats: dict = {}  # the last fast-forward search's step counts (seq2seq_search's stats)
        self.trie_loss = 0.0  # the weight of with_trie_loss's term (set by kgqa.model.fit)

    def collate(self, examples: Sequence[tuple]) -> dict:
        """A batch from ``(question ids, key ids)`` pairs, or ``(question ids, key ids, trie choices)`` triples
        (:func:`~nlptool.core.kgqa.model.training_pairs` with a trie), whose choices add the trie loss's entries."""
        ids, mask = pad_ids([e[0] for e in examples], self.codec.pad_id)
        labels, lmask = pad_ids([e[1] for e in examples], self.codec.pad_id)
        labels[lmask == 0] = -100
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        if examples and len(examples[0]) > 2:
            batch.update(trie_tensors([e[2] for e in examples], [0] * len(examples), labels.shape[1]))
        return batch

    def loss(self, model: Any, batch: dict) -> Any:
        out = model(**_without_trie(batch), use_cache=False)
        copy = bool(getattr(self.model.config, "kgqa_copy", False))  # the copy model's logits are log-probabilities
        loss = global_token_mean_loss(out.logits, batch["labels"], log_probs=copy) if distributed() else out.loss
        return with_trie_loss(loss, out.logits, batch["labels"], batch, self.trie_loss)

    def generate(
        self,
        questions: Sequence[list[int]],
        make_processor: Callable[[Sequence[list[int]], int], Any] | None,
        *,
        num_beams: int,
        num_return: int,
        max_new_tokens: int,
        fast_forward: bool = False,
    ) -> list[list[tuple[list[int], float]]]:
        """Beam search for each question; per question ``num_return`` ``(ids, score)`` pairs, ids root first.
        ``fast_forward`` (with a processor): :func:`~nlptool.core.kgqa.search.seq2seq_search`, the same search with
        the trie's forced tokens appended without a decoder step each; otherwise ``generate()``."""
        import torch
        from transformers import LogitsProcessorList

        processor = make_processor(questions, num_beams) if make_processor is not None else None

        device = next(self.model.parameters()).device
        ids, mask = pad_ids(questions, self.codec.pad_id)
        copy = bool(getattr(self.model.config, "kgqa_copy", False))
        if processor is not None and fast_forward:
            from nlptool.core.kgqa.search import seq2seq_search

            with torch.no_grad():
                seqs, scores = seq2seq_search(
                    self.model,
                    ids.to(device),
                    mask.to(device),
                    processor,
                    num_beams=num_beams,
                    num_return=num_return,
                    max_new_tokens=max_new_tokens,
                    start_id=self.codec.start_id,
                    end_id=self.codec.end_id,
                    pad_id=self.codec.pad_id,
                    copy=copy,
                    stats=self.search_stats,
                )
            return _group(seqs, scores, num_return, self.codec)
        kwargs: dict[str, Any] = {
            "input_ids": ids.to(device),
            "attention_mask": mask.to(device),
            "num_beams": num_beams,
            "num_return_sequences": num_return,
            "max_new_tokens": max_new_tokens,
            "decoder_start_token_id": self.codec.start_id,
            "eos_token_id": self.codec.end_id,
            "pad_token_id": self.codec.pad_id,
            "do_sample": False,
            "forced_bos_token_id": None,
            "forced_eos_token_id": None,
            "no_repeat_ngram_size": 0,
            "min_length": 0,
            "return_dict_in_generate": True,
            "output_scores": True,
        }
        if copy:
            kwargs["decoder_source_ids"] = kwargs["input_ids"]
        if num_beams > 1:  # rank beams by the key's log-probability (no length normalisation)
            kwargs.update(length_penalty=0.0, early_stopping=False)
        if processor is not None:
            kwargs["logits_processor"] = LogitsProcessorList([processor])
        with torch.no_grad():
            out = self.model.generate(**kwargs)
        seqs = out.sequences.tolist()
        if num_beams > 1:
            scores = out.sequences_scores.tolist()
        else:  # greedy: the sum of the chosen tokens' (processed) log-probabilities
            steps = torch.stack([s.float() for s in out.scores], 1)  # (n, T, V): the processed step scores
            if processor is None:  # raw logits; the trie processor already returns (masked) log-probabilities,
                steps = torch.log_softmax(steps, -1)  # and a second log-softmax would renormalise them
            chosen = out.sequences[:, 1 : 1 + steps.shape[1]]
            lp = steps.gather(2, chosen.unsqueeze(-1)).squeeze(-1)
            lp = torch.where(chosen == self.codec.pad_id, torch.zeros_like(lp), lp)
            scores = lp.sum(1).tolist()
        return _group(seqs, scores, num_return, self.codec)

    def save(self, folder: Path) -> None:
        self.model.save_pretrained(folder)
        self.codec.save(folder)


def _group(seqs: list[list[int]], scores: list[float], k: int, codec: Any) -> list[list[tuple[list[int], float]]]:
    out = []
    for b in range(len(seqs) // k):
        cands = []
        for j in range(b * k, (b + 1) * k):
            s = seqs[j]
            if codec.end_id in s[1:]:
                s = s[: s.index(codec.end_id, 1) + 1]
            else:
                s = [t for t in s if t != codec.pad_id or t == codec.start_id]
            cands.append((s, float(scores[j])))
        out.append(cands)
    return out


class UniLMBackbone:
    """A BERT-family masked LM used UniLM-style (Dong et al., 2019; Su's KgCLUE baseline).

    Input ``[CLS] question [SEP] key`` with token types 0 (question) / 1 (key); the attention mask is 4-D and
    additive (0 / −inf, the form eager attention honours in transformers 5): question positions see the question,
    key positions see the question and the key up to themselves. The MLM head (output embeddings tied to the input
    embeddings) predicts key token ``i+1`` at position ``i``. Keys start at the ``[SEP]`` that ends the question (the
    trie's root) and end with ``[SEP]``.
    """

    kind = "unilm"

    def __init__(self, model: Any, codec: Any):
        self.model = model
        self.codec = codec
        self.trie_loss = 0.0  # the weight of with_trie_loss's term (set by kgqa.model.fit)

    @staticmethod
    def attention_bias(segments: Any, pad_mask: Any, dtype: Any) -> Any:
        """``(n, 1, L, L)`` additive mask: 0 where query ``i`` may attend key ``j``, the dtype's minimum elsewhere."""
        import torch

        n, length = segments.shape
        causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=segments.device))
        see = (segments[:, None, :] == 0) | causal[None]  # every position sees segment 0 and earlier positions
        see = see & (segments[:, :, None] >= segments[:, None, :])  # question positions never see the key
        see = see & pad_mask[:, None, :].bool()
        bias = torch.zeros((n, 1, length, length), dtype=dtype, device=segments.device)
        return bias.masked_fill(~see[:, None], torch.finfo(dtype).min)

    def _inputs(self, qs: Sequence[list[int]], keys: Sequence[list[int]]) -> dict:
        import torch

        seqs = [q + k for q, k in zip(qs, keys, strict=True)]
        ids, mask = pad_ids(seqs, self.codec.pad_id)
        seg = torch.zeros_like(ids)
        for i, q in enumerate(qs):
            seg[i, len(q) : len(seqs[i])] = 1
        seg = seg.masked_fill(mask == 0, 1)
        return {"input_ids": ids, "token_type_ids": seg, "pad": mask}

    def collate(self, examples: Sequence[tuple]) -> dict:
        """As :meth:`Seq2SeqBackbone.collate`: pairs, or triples with the trie loss's choices."""
        import torch

        qs = [e[0][:-1] for e in examples]  # the question's final [SEP] is the key's root
        keys = [[self.codec.start_id, *e[1]] for e in examples]
        batch = self._inputs(qs, keys)
        labels = torch.full_like(batch["input_ids"], -100)
        for i, (q, k) in enumerate(zip(qs, keys, strict=True)):
            start = len(q)
            labels[i, start : start + len(k) - 1] = torch.tensor(k[1:], dtype=torch.long)
        batch["labels"] = labels
        if examples and len(examples[0]) > 2:  # key token t is predicted at column len(q) + t
            batch.update(trie_tensors([e[2] for e in examples], [len(q) for q in qs], labels.shape[1]))
        return batch

    def _logits(self, model: Any, batch: dict) -> Any:
        dtype = next(model.parameters()).dtype
        bias = self.attention_bias(batch["token_type_ids"], batch["pad"], dtype)
        return model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"], attention_mask=bias).logits

    def loss(self, model: Any, batch: dict) -> Any:
        import torch

        logits = self._logits(model, batch)
        if distributed():
            loss = global_token_mean_loss(logits, batch["labels"])
        else:
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
        return with_trie_loss(loss, logits, batch["labels"], batch, self.trie_loss)

    def generate(
        self,
        questions: Sequence[list[int]],
        make_processor: Callable[[Sequence[list[int]], int], Any] | None,
        *,
        num_beams: int,
        num_return: int,
        max_new_tokens: int,
        fast_forward: bool = False,
    ) -> list[list[tuple[list[int], float]]]:
        """Beam search (sum of log-probabilities, as ``generate()`` with ``length_penalty=0``) with ``processor``.
        ``fast_forward``: when every beam has a single allowed continuation, the forced runs are scored in one
        network pass (mask-only) or none (renormalised: a forced token costs 0) instead of one pass per token; the
        selection is the same, so the keys and scores are too (up to float rounding)."""
        import torch

        device = next(self.model.parameters()).device
        end = self.codec.end_id
        results = []
        for q in questions:
            qs = q[:-1]
            # one question per search: every row belongs to batch item 0
            processor = make_processor([q], 1 << 30) if make_processor is not None else None
            if processor is not None:
                processor.scores_are_logprobs = True
            beams: list[tuple[list[int], float]] = [([self.codec.start_id], 0.0)]
            finished: list[tuple[list[int], float]] = []
            vocab: int | None = None
            step = 0
            while step < max_new_tokens and beams:
                rows = [s for s, _ in beams]
                runs = None
                if processor is not None and fast_forward and vocab is not None:
                    allowed = processor.allowed_rows(rows, vocab)
                    if all(len(a) == 1 for a in allowed):  # every beam forced: the runs, scored in one pass
                        runs = [
                            processor.forced_run(r, i, int(a[0]), max_new_tokens - step, vocab)
                            for i, (r, a) in enumerate(zip(rows, allowed, strict=True))
                        ]
                if runs is not None:
                    m = min(len(r) for r in runs)
                    forced = torch.tensor([r[:m] for r in runs], dtype=torch.long, device=device)
                    if processor.renormalize:  # a forced token costs log 1 = 0: no network call
                        forced_lp = torch.zeros(forced.shape, device=device)
                    else:
                        batch = self._inputs(
                            [qs] * len(beams), [r + run[: m - 1] for r, run in zip(rows, runs, strict=True)]
                        )
                        batch = {k: v.to(device) for k, v in batch.items()}
                        with torch.no_grad():
                            logits = self._logits(self.model, batch)
                        pos = torch.tensor([len(qs) + len(r) - 1 for r in rows], device=device)
                        pos = pos[:, None] + torch.arange(m, device=device)[None, :]
                        rows_idx = torch.arange(len(beams), device=device)[:, None]
                        lp_all = torch.log_softmax(logits[rows_idx, pos].float(), -1)
                        forced_lp = lp_all.gather(2, forced.unsqueeze(-1)).squeeze(-1)
                    origin = list(range(len(beams)))
                    for t in range(m):  # the same selection on the rows the processor would have returned
                        lp = torch.full((len(beams), vocab), float("-inf"), device=device)
                        o = torch.tensor(origin, device=device)
                        lp[torch.arange(len(beams), device=device), forced[o, t]] = forced_lp[o, t]
                        step += 1
                        beams, src, stop = self._select(beams, lp, finished, num_beams, end, device)
                        origin = [origin[i] for i in src]
                        if stop or not beams or step >= max_new_tokens:
                            break
                    if stop:
                        break
                    continue
                batch = self._inputs([qs] * len(beams), rows)
                batch = {k: v.to(device) for k, v in batch.items()}
                with torch.no_grad():
                    logits = self._logits(self.model, batch)
                pos = torch.tensor([len(qs) + len(s) - 1 for s in rows], device=device)
                last = logits[torch.arange(len(beams), device=device), pos]
                lp = torch.log_softmax(last.float(), -1)
                vocab = lp.shape[1]
                if processor is not None:
                    lp = processor(torch.tensor(rows, dtype=torch.long), lp)
                step += 1
                beams, _, stop = self._select(beams, lp, finished, num_beams, end, device)
                if stop:
                    break
            finished.sort(key=lambda x: -x[1])
            top = (finished or beams)[:num_return]
            while len(top) < num_return:
                top.append(top[-1] if top else ([self.codec.start_id, end], float("-inf")))
            results.append([(s, sc) for s, sc in top])
        return results

    @staticmethod
    def _select(
        beams: list[tuple[list[int], float]],
        lp: Any,
        finished: list[tuple[list[int], float]],
        num_beams: int,
        end: int,
        device: Any,
    ) -> tuple[list[tuple[list[int], float]], list[int], bool]:
        """One beam-search step from the processed log-probabilities ``lp`` (beams × vocab): the next beams, the beam
        each came from, and whether the search is over (finished keys are appended to ``finished``)."""
        import torch

        total = lp + torch.tensor([sc for _, sc in beams], device=device)[:, None]
        flat = total.flatten()
        k = min(2 * num_beams, int(torch.isfinite(flat).sum()))
        if k == 0:  # nothing can continue: the search ends with these beams
            return beams, list(range(len(beams))), True
        vals, idx = flat.topk(k)
        vocab = lp.shape[1]
        nxt: list[tuple[list[int], float]] = []
        src: list[int] = []
        for v, i in zip(vals.tolist(), idx.tolist(), strict=True):
            s = beams[i // vocab][0] + [i % vocab]
            if i % vocab == end:
                finished.append((s, v))
            elif len(nxt) < num_beams:
                nxt.append((s, v))
                src.append(i // vocab)
        best_running = max((sc for _, sc in nxt), default=float("-inf"))
        # log-probabilities only fall: no running beam can still enter the top num_beams
        stop = len(finished) >= num_beams and best_running <= sorted(sc for _, sc in finished)[-num_beams]
        return nxt, src, stop

    def save(self, folder: Path) -> None:
        self.model.save_pretrained(folder)
        self.codec.save(folder)


def copy_bart_class() -> Any:
    """``CopyBartForConditionalGeneration``: BART with a pointer-generator output (See, Liu and Manning, "Get To The
    Point", ACL 2017), the copy-friendly setup for keys whose subject is written in the question.

    At each target position ``t`` the output distribution mixes generating and copying,

    ``p(y_t) = g_t * softmax(W h_t)[y_t] + (1 - g_t) * sum over source positions s with x_s = y_t of a[t, s]``,
    with the gate ``g_t = sigmoid(w·h_t + b)``, where ``a[t, s]`` is the last decoder layer's cross-attention
    (averaged over heads) on source token ``x_s``. The returned ``logits`` are ``log p`` (already normalised), so
    ``generate()``'s log-softmax leaves them unchanged. The source ids reach the decoder steps of ``generate()`` as
    the ``decoder_source_ids`` keyword (the ``decoder_`` prefix keeps it away from the encoder).
    """
    import torch
    from torch import nn
    from transformers import BartForConditionalGeneration
    from transformers.modeling_outputs import Seq2SeqLMOutput
    from transformers.models.bart.modeling_bart import shift_tokens_right

    class CopyBartForConditionalGeneration(BartForConditionalGeneration):
        def __init__(self, config: Any):
            super().__init__(config)
            self.copy_gate = nn.Linear(config.d_model, 1)

        def forward(  # type: ignore[override]
            self,
            input_ids: Any = None,
            attention_mask: Any = None,
            decoder_input_ids: Any = None,
            encoder_outputs: Any = None,
            cache: Any = None,
            labels: Any = None,
            use_cache: Any = None,
            decoder_source_ids: Any = None,
            **kwargs: Any,
        ) -> Any:
            for k in ("output_attentions", "output_hidden_states", "return_dict"):
                kwargs.pop(k, None)
            if labels is not None and decoder_input_ids is None:
                decoder_input_ids = shift_tokens_right(
                    labels, self.config.pad_token_id, self.config.decoder_start_token_id
                )
            out = super().forward(
                input_ids=input_ids,
                attention_mask=attention_mask,
                decoder_input_ids=decoder_input_ids,
                encoder_outputs=encoder_outputs,
                cache=cache,
                use_cache=use_cache,
                output_attentions=True,
                output_hidden_states=True,
                return_dict=True,
                **kwargs,
            )
            src = decoder_source_ids if decoder_source_ids is not None else input_ids
            if src is None:
                raise NlptoolError("the copy model needs the source ids (decoder_source_ids) to decode")
            attn = out.cross_attentions[-1].float().mean(1)  # (B, T, S)
            gate = torch.sigmoid(self.copy_gate(out.decoder_hidden_states[-1])).float()  # (B, T, 1)
            probs = torch.softmax(out.logits.float(), -1) * gate
            index = src[:, None, :].expand(-1, attn.shape[1], -1)
            probs = probs.scatter_add(2, index, attn * (1 - gate))
            logp = torch.log(probs.clamp_min(1e-12))
            loss = None
            if labels is not None:
                loss = nn.functional.nll_loss(logp.flatten(0, 1), labels.flatten(), ignore_index=-100)
            return Seq2SeqLMOutput(
                loss=loss,
                logits=logp,
                cache=out.cache,
                encoder_last_hidden_state=out.encoder_last_hidden_state,
            )

    return CopyBartForConditionalGeneration


def load_pretrained(name: str, backbone: str | None, *, local: bool = False) -> tuple[Any, Any, str]:
    """A pretrained checkpoint for a kg-qa backbone: ``(network, tokenizer, kind)``.

    ``name`` is a local folder or a hub id, resolved by :func:`nlptool.core.models.resolve_model` (``HF_HUB_OFFLINE``
    honoured, a folder of another nlptool command refused); ``local=True`` loads a kg-qa model folder that
    :meth:`KgqaModel.load <nlptool.core.kgqa.model.KgqaModel.load>` has already checked. ``backbone`` is ``seq2seq``,
    ``unilm`` or ``None`` (chosen from the config: an encoder-decoder is ``seq2seq``). A masked LM whose checkpoint
    lacks the MLM head is refused (:func:`nlptool.core.models.load_model`'s missing-weight check), never given a
    random head."""
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoModelForSeq2SeqLM

    from nlptool.core.errors import ModelNotFoundError
    from nlptool.core.models import ResolvedModel, load_model, load_tokenizer, resolve_model

    if local:
        resolved = ResolvedModel("local", name, name)
    else:
        resolved = resolve_model(name, role="a pretrained seq2seq or masked-LM checkpoint for 'kg-qa train'")
    try:
        cfg = AutoConfig.from_pretrained(resolved.location)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(
            f"cannot load model '{name}' ({str(exc).splitlines()[0]}); give a local folder or a "
            "hub id (with network access)"
        ) from None
    tok = load_tokenizer(resolved, check=False)
    kind = backbone or ("seq2seq" if getattr(cfg, "is_encoder_decoder", False) else "unilm")
    if kind == "seq2seq":
        if not getattr(cfg, "is_encoder_decoder", False):
            raise NlptoolError(f"'{name}' is not an encoder-decoder model; use --backbone unilm for BERT-family models")
        net = load_model(resolved, AutoModelForSeq2SeqLM)
    elif kind == "unilm":
        net = load_model(
            resolved,
            AutoModelForMaskedLM,
            required=_MLM_HEAD,
            head_name="masked-LM head",
            fix_hint="UniLM decoding needs a checkpoint with its MLM head",
        )
        if tok.sep_token_id is None or tok.cls_token_id is None:
            raise NlptoolError(f"the tokenizer of '{name}' has no [CLS]/[SEP] tokens; UniLM needs a BERT-family one")
    else:
        raise NlptoolError(f"unknown backbone '{kind}'; choose one of {', '.join(BACKBONES)}")
    return net, tok, kind


# Weight-name prefixes of a masked-LM head (BERT's cls.predictions, RoBERTa's lm_head): they must come from the
# checkpoint (the output projection itself is tied to the input embeddings, so it is not listed).
_MLM_HEAD = ("cls.predictions.bias", "cls.predictions.transform", "lm_head.bias", "lm_head.dense", "lm_head.layer_norm")


def wrap(net: Any, tok: Any, kind: str) -> Any:
    if kind == "seq2seq":
        start = net.config.decoder_start_token_id
        if start is None:
            start = tok.bos_token_id if tok.bos_token_id is not None else tok.pad_token_id
        end = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
        return Seq2SeqBackbone(net, HFCodec(tok, start_id=start, end_id=end), kind)
    return UniLMBackbone(net, HFCodec(tok, start_id=tok.sep_token_id, end_id=tok.sep_token_id))


# ---------------------------------------------------------------------------------------------------------------------
# Making and loading backbones (what KgqaModel.create and KgqaModel.load call)


def char_bart_backbone(
    codec: CharCodec,
    *,
    d_model: int = 256,
    layers: int = 3,
    heads: int = 4,
    ffn: int = 1024,
    dropout: float = 0.1,
    max_question_tokens: int = 64,
    copy: bool = True,
) -> Seq2SeqBackbone:
    """A randomly initialised char BART (``bart-char``) over ``codec``'s vocabulary, with the copy mechanism of
    :func:`copy_bart_class` unless ``copy=False``."""
    from transformers import BartConfig, BartForConditionalGeneration

    max_pos = max(max_question_tokens, 32) + 512
    cfg = BartConfig(
        vocab_size=len(codec),
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
        max_position_embeddings=max_pos,
        dropout=dropout,
        attention_dropout=0.0,
        activation_dropout=0.0,
        pad_token_id=codec.pad_id,
        bos_token_id=codec.start_id,
        eos_token_id=codec.end_id,
        decoder_start_token_id=codec.start_id,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
        scale_embedding=True,
        tie_word_embeddings=True,
    )
    if copy:
        cfg.kgqa_copy = True
        cfg._attn_implementation = "eager"  # the copy distribution reads the cross-attention weights
        net = copy_bart_class()(cfg)
    else:
        net = BartForConditionalGeneration(cfg)
    return Seq2SeqBackbone(net, codec, "bart-char")


def pretrained_backbone(name: str, backbone: str | None = None) -> Backbone:
    """A backbone over a pretrained checkpoint (:func:`load_pretrained`): ``seq2seq`` or ``unilm``."""
    net, tok, kind = load_pretrained(name, backbone)
    return wrap(net, tok, kind)


def load_backbone(folder: Path, kind: str, *, shown: str | None = None) -> Backbone:
    """The backbone saved in a kg-qa model folder (:meth:`Backbone.save`) as ``kind``; ``shown`` is the folder's name
    in messages. The folder's files must have been checked (:meth:`KgqaModel.load
    <nlptool.core.kgqa.model.KgqaModel.load>` does); a missing or damaged vocabulary or weight file is an error that
    names it."""
    from nlptool.core.models import ResolvedModel, damaged, load_model, read_json_file

    shown = shown or str(folder)
    if kind == "bart-char":
        from transformers import BartForConditionalGeneration

        if not (folder / VOCAB_FILE).is_file():
            raise NlptoolError(
                f"{folder / VOCAB_FILE} is missing, so the kg-qa model folder is incomplete; retrain it with "
                "'nlptool kg-qa train'"
            )
        vocab = read_json_file(folder / VOCAB_FILE)
        chars = vocab.get("chars") if isinstance(vocab, dict) else None
        if not isinstance(chars, list) or not all(isinstance(c, str) for c in chars):
            raise damaged(folder / VOCAB_FILE, "no 'chars' list of strings")
        codec = CharCodec(chars)
        bart_cfg = read_json_file(folder / "config.json")
        model_class = copy_bart_class() if bart_cfg.get("kgqa_copy") else BartForConditionalGeneration
        extra = {"attn_implementation": "eager"} if bart_cfg.get("kgqa_copy") else {}
        net = load_model(ResolvedModel("local", str(folder), shown), model_class, **extra)
        if net.config.vocab_size < len(codec):
            raise damaged(folder / VOCAB_FILE, f"{len(codec)} symbols, more than the model's {net.config.vocab_size}")
        return Seq2SeqBackbone(net, codec, kind)
    from nlptool.core.models import check_folder_files

    check_folder_files(folder, tokenizer=True)
    try:
        net, tok, _ = load_pretrained(str(folder), kind, local=True)
    except NlptoolError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged folder fails deep inside transformers
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise NlptoolError(
            f"could not load the model in {shown} ({type(exc).__name__}: {first}); the folder is damaged: "
            "retrain it with 'nlptool kg-qa train'"
        ) from None
    return wrap(net, tok, kind)
