"""Helper for ``test_multitask_trainer.py``'s torchrun test: 3 multi-task steps (CoSENT pairs + NER, exact MGDA) on
the tiny BERT, in one process or under ``torchrun --nproc_per_node 2``.

Run as ``python _mtl_ddp_script.py MODEL_DIR OUT_DIR``; every rank writes ``OUT_DIR/rank{r}.pt`` with the weights it
applied at each step and its final parameters.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from nlptool.core.multitask import GradientCombiner, fit_multitask
from nlptool.core.train import TrainConfig, world_info
from tests.core.test_multitask_trainer import build


def main() -> None:
    model_dir, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    applied: list[list[float]] = []
    original = GradientCombiner._record

    def record(self, gram, losses, weights):
        applied.append([float(w) for w in weights])
        original(self, gram, losses, weights)

    GradientCombiner._record = record  # type: ignore[method-assign]
    encoder, tasks, examples = build(model_dir)
    # batches of 5 over 2 ranks: slices of 3 and 2 (CoSENT gathers the whole batch, NER averages over windows)
    config = TrainConfig(batch_size=5, lr=1e-3, warmup_steps=0, device="cpu", max_steps=3, log_every=1)
    fit_multitask(encoder, tasks, examples, config, out_dir=None, combine="mgda")
    params = torch.cat(
        [p.detach().flatten() for p in encoder.parameters()]
        + [p.detach().flatten() for t in tasks for p in t.head.parameters()]
    )
    rank = world_info()[0]
    torch.save({"weights": applied, "params": params}, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
