"""Helper for ``test_train.py``'s distributed test: train tiny models and save their final weights.

Run as ``python _ddp_script.py OUT.pt`` (one process) or ``python -m torch.distributed.run --nproc_per_node 2
--standalone _ddp_script.py OUT.pt`` (two CPU processes, gloo). Rank 0 writes ``{"world_size", "runs": {name:
{"state", "losses", "grad_norms"}}}`` to ``OUT.pt`` (the gradient norms before clipping catch a wrong gradient scale,
which AdamW's updates would hide). The variants cover a batch-coupled CoSENT-style loss through
:func:`all_gather_with_grad` and a mean MSE loss, with uneven rank slices (a final batch of 3 over 2 ranks), a rank
with an empty slice (a final batch of 1) and gradient accumulation.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch import nn

from nlptool.core.train import TrainConfig, all_gather_with_grad, train, world_info


def cosent_style_loss(scores: torch.Tensor, labels: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """``log(1 + sum over pairs with y_i > y_j of exp(scale * (s_j - s_i)))``: logsumexp with a 0 added."""
    diff = scale * (scores[None, :] - scores[:, None])  # diff[i, j] = scale * (s_j - s_i)
    terms = diff[labels[:, None] > labels[None, :]]
    return torch.logsumexp(torch.cat([scores.new_zeros(1), terms]), dim=0)


def make_examples(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(n, 8, generator=gen)
    y = torch.round(2.0 + 1.5 * x[:, 0] - x[:, 1] + 0.3 * torch.randn(n, generator=gen)).clamp(0, 4)
    return [(x[i], y[i]) for i in range(n)]


def collate(items):
    return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


def cosent_loss_fn(model, batch):
    x, y = batch
    scores = all_gather_with_grad(model(x).squeeze(-1))
    labels = all_gather_with_grad(y)
    return cosent_style_loss(scores, labels)


def mse_loss_fn(model, batch):
    x, y = batch
    return nn.functional.mse_loss(model(x).squeeze(-1), y)


VARIANTS = {
    # name: (loss, n examples, batch_size, grad_accum, epochs)
    "cosent_uneven_accum": (cosent_loss_fn, 21, 6, 2, 2),  # batches 6,6,6,3: last split 2/1
    "cosent_empty_slice": (cosent_loss_fn, 19, 6, 1, 1),  # batches 6,6,6,1: rank 1 has no example
    "mse_empty_slice_accum": (mse_loss_fn, 19, 6, 2, 2),
}


def run_all() -> dict:
    """Train every variant. train() creates and destroys the process group itself for all but the last, for which
    the script initialises it (train() must then leave it alone)."""
    runs = {}
    distributed = world_info()[1] > 1
    for i, (name, (loss_fn, n, batch_size, grad_accum, epochs)) in enumerate(VARIANTS.items()):
        own_group = distributed and i == len(VARIANTS) - 1
        if own_group:
            dist.init_process_group("gloo")
        torch.manual_seed(0)
        # CoSENT depends only on score differences, so a final bias has an exactly-zero gradient whose rounding noise
        # AdamW would blow up to steps of ~lr (differently in one and two processes): leave it out for that loss.
        model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1, bias=loss_fn is mse_loss_fn))
        config = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            grad_accum=grad_accum,
            lr=0.01,
            warmup_steps=1,
            device="cpu",
            log_every=1,
        )
        grad_norms: list[float] = []
        result = train(
            model,
            make_examples(n),
            collate,
            loss_fn,
            config,
            on_progress=lambda e, norms=grad_norms: e.get("event") != "eval" and norms.append(e["grad_norm"]),
        )
        if distributed:
            assert dist.is_initialized() == own_group, "train() must destroy only a process group it created"
        if own_group:
            dist.barrier()
            dist.destroy_process_group()
        losses = [e["loss"] for e in result.history if e["event"] == "train"]
        runs[name] = {
            "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "losses": losses,
            "grad_norms": grad_norms,
        }
    return runs


def main(out: str) -> None:
    torch.set_num_threads(1)
    runs = run_all()
    rank, world = world_info()
    if rank == 0:
        torch.save({"world_size": world, "runs": runs}, out)


if __name__ == "__main__":
    main(sys.argv[1])
