"""nlptool's own search for the encoder-decoder backbones, with **forced-token fast-forward**.

Under the trie a beam often has a single allowed continuation (once the base name picks one key, the rest of the key
is spelled out token by token). When every live beam of the batch has one, the step needs no decoder to decide
anything: :func:`seq2seq_search` appends the forced tokens without a decoder step per token,

- renormalised (``--renormalize``): a forced token costs log 1 = 0, so no decoder call at all; the tokens skipped
  are fed to the decoder in one pass when a later step needs its output;
- mask-only: the forced tokens' log-probabilities are the model's, computed in ONE teacher-forced decoder pass over
  the whole forced run (its cache is then the cache of the steps it replaces).

Everything else is the algorithm of ``transformers``' beam search (``GenerationMixin._beam_search`` of transformers 5,
with ``length_penalty=0``, ``early_stopping=False``, one end token; greedy search for one beam) step for step on the
same tensors: the top ``2 × num_beams`` continuations, running beams, the finished set and its stopping rule. A
fast-forwarded step builds the same processed log-probability rows (``-inf`` except the forced token) that the
processor would return and goes through the same selection, so beams that finish, are reordered or are dropped do
exactly what they would have done; the keys and scores equal ``generate()``'s up to float rounding (the decoder run
over several positions at once rounds differently from one position at a time). A run stops where any beam has a
choice (fast-forward only what is exact), at the length limit, or when the search ends.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_PENALTY = -1.0e9  # transformers' "very large negative value" for finished/unfillable candidates


def _reorder(model: Any, cache: Any, index: Any) -> Any:
    if cache is None:
        return None
    if hasattr(model, "_reorder_cache"):
        return model._reorder_cache(cache, index)
    cache.reorder_cache(index)
    return cache


class _Decoder:
    """The decoder side of an encoder-decoder model with its cache; ``cached`` tokens of every row are in the cache
    (the same number for all rows)."""

    def __init__(self, model: Any, ids: Any, mask: Any, rows_per_item: int, copy: bool):
        self.model = model
        enc = model.get_encoder()(input_ids=ids, attention_mask=mask, return_dict=True)
        enc.last_hidden_state = enc.last_hidden_state.repeat_interleave(rows_per_item, dim=0)
        self.encoder_outputs = enc
        self.mask = mask.repeat_interleave(rows_per_item, dim=0)
        self.extra = {"decoder_source_ids": ids.repeat_interleave(rows_per_item, dim=0)} if copy else {}
        self.cache: Any = None
        self.cached = 0
        self.steps = 0  # decoder calls
        self.positions = 0  # decoder positions fed per call, summed
        self.row_positions = 0  # rows × positions, summed: the decoder's work

    def logits(self, tokens: Any) -> Any:
        """Feed ``tokens`` (rows × positions, the tokens after the cached ones) and return the float logits at every
        fed position."""
        out = self.model(
            encoder_outputs=self.encoder_outputs,
            attention_mask=self.mask,
            decoder_input_ids=tokens,
            cache=self.cache,
            use_cache=True,
            **self.extra,
        )
        self.cache = out.cache
        self.cached += tokens.shape[1]
        self.steps += 1
        self.positions += tokens.shape[1]
        self.row_positions += tokens.shape[0] * tokens.shape[1]
        return out.logits.float()

    def reorder(self, index: Any) -> None:
        self.cache = _reorder(self.model, self.cache, index)

    def select(self, rows: Any) -> None:
        """Keep only ``rows`` (the rows of the questions still searched), in that order."""
        self.encoder_outputs.last_hidden_state = self.encoder_outputs.last_hidden_state[rows]
        self.mask = self.mask[rows]
        self.extra = {key: value[rows] for key, value in self.extra.items()}
        self.reorder(rows)


class _Stretch:
    """Forced runs being appended: ``tokens[o, t]`` is the ``t``-th forced token of the row that was in slot ``o`` when
    the stretch began, ``logprobs[o, t]`` its processed log-probability; ``origin[slot]`` is where each current slot
    came from."""

    def __init__(self, tokens: Any, logprobs: Any):
        import torch

        self.tokens = tokens
        self.logprobs = logprobs
        self.length = tokens.shape[1]
        self.t = 0
        self.origin = torch.arange(tokens.shape[0], device=tokens.device)

    def rows(self, vocab: int) -> Any:
        """This step's processed log-probabilities: ``-inf`` except each slot's forced token."""
        import torch

        n = self.tokens.shape[0]
        out = torch.full((n, vocab), float("-inf"), device=self.tokens.device)
        tok = self.tokens[self.origin, self.t]
        out[torch.arange(n, device=tok.device), tok] = self.logprobs[self.origin, self.t]
        return out


def _start_stretch(
    processor: Any,
    decoder: _Decoder,
    rows: list[list[int]],
    allowed: list[np.ndarray],
    seqs: Any,
    cur_len: int,
    limit: int,
    vocab: int,
) -> _Stretch:
    """The forced runs of every row (all have one allowed token now), cut to the shortest; under mask-only scoring
    their log-probabilities come from one teacher-forced decoder pass over the runs."""
    import torch

    runs = [
        processor.forced_run(seq, r, int(a[0]), limit, vocab)
        for r, (seq, a) in enumerate(zip(rows, allowed, strict=True))
    ]
    m = min(len(run) for run in runs)
    tokens = torch.tensor([run[:m] for run in runs], dtype=torch.long, device=seqs.device)
    if processor.renormalize:  # a forced token costs log 1 = 0; the decoder catches up when it is next needed
        return _Stretch(tokens, torch.zeros(tokens.shape, dtype=torch.float32, device=seqs.device))
    feed = torch.cat([seqs[:, decoder.cached : cur_len], tokens[:, :-1]], dim=1)
    logits = decoder.logits(feed)[:, -m:]
    logprobs = torch.log_softmax(logits, dim=-1).gather(2, tokens.unsqueeze(-1)).squeeze(-1)
    return _Stretch(tokens, logprobs)


def seq2seq_search(
    model: Any,
    ids: Any,
    mask: Any,
    processor: Any,
    *,
    num_beams: int,
    num_return: int,
    max_new_tokens: int,
    start_id: int,
    end_id: int,
    pad_id: int,
    copy: bool = False,
    fast_forward: bool = True,
    run_chunk: int = 4,
    stats: dict | None = None,
) -> tuple[list[list[int]], list[float]]:
    """Beam search (greedy for ``num_beams=1``) of an encoder-decoder ``model`` under the trie ``processor``
    (:class:`~nlptool.core.kgqa.decoding.TrieLogitsProcessor`), as ``generate()`` runs it, with forced tokens
    appended without per-token decoder steps when ``fast_forward`` (see the module docstring).

    Forced runs are appended ``run_chunk`` tokens at a time: a mask-only teacher-forced pass costs about what the
    steps it replaces cost per position, so longer passes save little, and between chunks the questions that are
    settled leave the search (on KgCLUE most are, long before the longest key is spelled out).

    Returns ``num_return`` sequences per question (batch-major, decoder start first) and their scores (sums of
    processed log-probabilities). ``stats`` (a dict), when given, receives ``steps`` (search steps), ``decoder_calls``,
    ``decoder_positions`` (positions fed, summed over calls) and ``decoder_row_positions`` (rows × positions: the
    decoder's work; questions that are settled are dropped from the search).
    """
    import torch

    batch = ids.shape[0]
    k = num_beams
    n = batch * k
    max_length = 1 + max_new_tokens
    decoder = _Decoder(model, ids, mask, k, copy)
    fill = pad_id if pad_id else end_id  # transformers: `pad_token_id or eos_token_id`
    dev = ids.device
    seqs = torch.full((n, max_length), fill, dtype=torch.long, device=dev)
    seqs[:, 0] = start_id
    greedy = k == 1
    if greedy:
        unfinished = torch.ones(n, dtype=torch.bool, device=dev)
        scores = torch.zeros(n, dtype=torch.float32, device=dev)
    else:
        running_scores = torch.zeros((batch, k), dtype=torch.float32, device=dev)
        running_scores[:, 1:] = _PENALTY
        finished_seqs = seqs.view(batch, k, max_length).clone()
        beam_scores = torch.full((batch, k), _PENALTY, dtype=torch.float32, device=dev)
        is_finished = torch.zeros((batch, k), dtype=torch.bool, device=dev)
        unsatisfied = torch.ones((batch, 1), dtype=torch.bool, device=dev)
        top_mask = torch.arange(2 * k, device=dev) < k
        item_offset = torch.arange(batch, device=dev).view(-1, 1) * k
    stretch: _Stretch | None = None
    vocab: int | None = None
    cur_len = 1
    search_steps = 0
    active = list(range(batch))  # the questions still searched (original positions)
    results: dict[int, tuple[Any, Any]] = {}  # finished questions: (sequences, scores)
    while True:
        search_steps += 1
        # a. the processed log-probabilities of this step: from the decoder, or from a forced run
        if stretch is None:
            rows = seqs[:, :cur_len].tolist()
            allowed = processor.allowed_rows(rows, vocab) if vocab is not None else None
            # a beam at -inf (only where fewer continuations exist than beams) has no one continuation to follow;
            # a finished greedy row takes pad whatever it is offered, so it never blocks
            live = greedy or bool(torch.isfinite(running_scores).all())
            if fast_forward and allowed is not None and live and all(len(a) == 1 for a in allowed):
                limit = min(max_length - cur_len, run_chunk)
                stretch = _start_stretch(processor, decoder, rows, allowed, seqs, cur_len, limit, vocab)
        if stretch is not None:
            assert vocab is not None
            processed = stretch.rows(vocab)
        else:
            logits = decoder.logits(seqs[:, decoder.cached : cur_len])[:, -1]
            if vocab is None:
                vocab = logits.shape[1]
                allowed = processor.allowed_rows(rows, vocab)
            if greedy:
                processed = processor.process(rows, logits, allowed)
            else:
                processed = processor.process(rows, torch.log_softmax(logits, dim=-1), allowed)
        # b. select (transformers' algorithm)
        if greedy:
            nxt = processed.argmax(-1)
            lp = processed.gather(1, nxt[:, None]).squeeze(1)
            nxt = torch.where(unfinished, nxt, torch.full_like(nxt, pad_id))
            scores += torch.where(nxt == pad_id, torch.zeros_like(lp), lp)
            seqs[:, cur_len] = nxt
            unfinished &= ~((nxt == end_id) | (cur_len + 1 >= max_length))
            if stretch is not None:
                stretch.t += 1
            cur_len += 1
            if stretch is not None and stretch.t == stretch.length:
                stretch = _end_stretch(stretch, decoder)
            if not unfinished.any():
                break
            if stretch is None and not unfinished.all():  # a finished row only takes pad from now on: drop it
                keep = torch.nonzero(unfinished).flatten()
                for i in torch.nonzero(~unfinished).flatten().tolist():
                    results[active[i]] = (seqs[i : i + 1], scores[i : i + 1])
                active = [active[i] for i in keep.tolist()]
                seqs, scores, unfinished = seqs[keep], scores[keep], unfinished[keep]
                decoder.select(keep)
                processor.select_items(keep.tolist())
                batch = n = len(active)
            continue
        log_probs = processed.view(batch, k, -1) + running_scores[:, :, None]
        log_probs = log_probs.reshape(batch, -1)
        vsize = processed.shape[1]
        top_scores, top_index = torch.topk(log_probs, k=2 * k)
        src = top_index // vsize
        top_tokens = top_index % vsize
        cand = torch.take_along_dim(seqs.view(batch, k, max_length), src[:, :, None], dim=1)
        cand[:, :, cur_len] = top_tokens
        hits = (top_tokens == end_id) | (cur_len + 1 >= max_length)
        cand_running = top_scores + hits.to(torch.float32) * _PENALTY
        keep = torch.topk(cand_running, k=k)[1]
        new_seqs = torch.take_along_dim(cand, keep[:, :, None], dim=1)
        running_scores = torch.take_along_dim(cand_running, keep, dim=1)
        beam_src = torch.take_along_dim(src, keep, dim=1)
        just = hits & top_mask[None, :]
        fin = top_scores / (float(cur_len + 1 - 1) ** 0.0)
        fin = fin + (~unsatisfied).to(torch.float32) * _PENALTY
        fin = fin + (~just) * _PENALTY
        merged_scores = torch.cat((beam_scores, fin), dim=1)
        best = torch.topk(merged_scores, k=k)[1]
        finished_seqs = torch.take_along_dim(torch.cat((finished_seqs, cand), dim=1), best[:, :, None], dim=1)
        beam_scores = torch.take_along_dim(merged_scores, best, dim=1)
        is_finished = torch.take_along_dim(torch.cat((is_finished, just), dim=1), best, dim=1)
        seqs = new_seqs.reshape(n, max_length)
        flat_src = (beam_src + item_offset).flatten()
        if stretch is not None:
            stretch.origin = stretch.origin[flat_src]
            stretch.t += 1
        else:
            decoder.reorder(flat_src)
        cur_len += 1
        worst = torch.where(is_finished, torch.min(beam_scores, dim=1, keepdim=True)[0], _PENALTY)
        unsatisfied = unsatisfied & torch.any(running_scores[:, :1] > worst, dim=-1, keepdim=True)
        done = not (bool(unsatisfied.any()) and not bool(hits.all()))
        if stretch is not None and (stretch.t == stretch.length or done):
            stretch = _end_stretch(stretch, decoder)
        if done:
            break
        if stretch is None and not unsatisfied.all():
            # a question whose finished keys no running beam can beat is settled: every later candidate of it is
            # pushed 1e9 below them, and the search only ends at the length limit or when all are settled (its
            # candidates cannot all be end tokens: one per beam), so dropping it changes nothing for the others
            keep = torch.nonzero(unsatisfied.flatten()).flatten()
            for i in torch.nonzero(~unsatisfied.flatten()).flatten().tolist():
                results[active[i]] = (finished_seqs[i, :num_return], beam_scores[i, :num_return])
            active = [active[i] for i in keep.tolist()]
            rows = (keep[:, None] * k + torch.arange(k, device=dev)[None, :]).flatten()
            seqs = seqs[rows]
            running_scores, finished_seqs = running_scores[keep], finished_seqs[keep]
            beam_scores, is_finished, unsatisfied = beam_scores[keep], is_finished[keep], unsatisfied[keep]
            decoder.select(rows)
            processor.select_items(keep.tolist())
            batch = len(active)
            n = batch * k
            item_offset = torch.arange(batch, device=dev).view(-1, 1) * k
    if stats is not None:
        stats.update(
            steps=search_steps,
            decoder_calls=decoder.steps,
            decoder_positions=decoder.positions,
            decoder_row_positions=decoder.row_positions,
        )
    for i, item in enumerate(active):
        if greedy:
            results[item] = (seqs[i : i + 1], scores[i : i + 1])
        else:
            results[item] = (finished_seqs[i, :num_return], beam_scores[i, :num_return])
    out_seqs: list[list[int]] = []
    out_scores: list[float] = []
    for item in range(len(results)):
        item_seqs, item_scores = results[item]
        out_seqs += item_seqs.tolist()
        out_scores += item_scores.tolist()
    return out_seqs, out_scores


def _end_stretch(stretch: _Stretch, decoder: _Decoder) -> None:
    """Put the cache rows in the order of the current slots; under mask-only scoring the teacher-forced pass left the
    cache one token behind the sequences, as after a decoder step."""
    decoder.reorder(stretch.origin)
    return None
