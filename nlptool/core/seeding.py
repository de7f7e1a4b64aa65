"""Seeding for reproducible runs."""

from __future__ import annotations

import os
import random
import sys

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and CUDA) with ``seed``.

    torch is seeded only if it is already imported or importable; the hash seed is recorded in the environment for
    subprocesses (it cannot change the running interpreter's).
    """
    if seed < 0 or seed >= 2**32:
        from nlptool.core.errors import NlptoolError

        raise NlptoolError(f"seed {seed} is out of range; use an integer in [0, 2**32)")
    random.seed(seed)
    np.random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            import torch  # noqa: F811
        except ImportError:  # pragma: no cover - torch is a dependency
            return
    torch.manual_seed(seed)
