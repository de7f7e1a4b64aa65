"""The one definition of ``--device``: the accepted values and how they resolve to a torch device name.

Every command takes the same values: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:N`` (GPU
number N) and ``mps`` (Apple silicon). :func:`parse_device` checks a value without importing torch (the command line
calls it while parsing); :func:`resolve_device` turns it into a device name for ``tensor.to(...)``.
"""

from __future__ import annotations

import os
import re
from enum import Enum

from nlptool.core.errors import NlptoolError


class Device(str, Enum):
    """The named device choices; ``cuda:N`` (a GPU number) is accepted besides these."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


#: How ``--help`` shows the accepted values.
DEVICE_CHOICES = "auto|cpu|cuda|cuda:N|mps"

_CUDA_N = re.compile(r"cuda:(\d+)")


def parse_device(value: Device | str | None) -> str:
    """Normalise a ``--device`` value (``' CUDA:0 '`` → ``'cuda:0'``); ``ValueError`` for anything else."""
    if value is None:
        return Device.auto.value
    text = (value.value if isinstance(value, Device) else str(value)).strip().lower()
    if text in {d.value for d in Device} or _CUDA_N.fullmatch(text):
        return text
    raise ValueError(f"'{value}' is not a device; use one of {DEVICE_CHOICES.replace('|', ', ')}")


def resolve_device(device: Device | str | None = "auto") -> str:
    """The torch device name for a ``--device`` value.

    ``auto`` → ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda``/``cuda:N``/``mps`` → themselves, or an
    :class:`NlptoolError` when the machine lacks them. Under torchrun (``WORLD_SIZE > 1``) a CUDA device is
    ``cuda:LOCAL_RANK``, one GPU per process.
    """
    try:
        spec = parse_device(device)
    except ValueError as exc:
        raise NlptoolError(f"--device: {exc}") from None
    import torch

    if spec == "cpu":
        return "cpu"
    if spec == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise NlptoolError("--device mps was given but torch sees no MPS device; use --device cpu or auto")
        return "mps"
    if spec == "auto" and not torch.cuda.is_available():
        return "cpu"
    if not torch.cuda.is_available():
        raise NlptoolError(f"--device {spec} was given but torch sees no CUDA device; use --device cpu or auto")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun: one GPU per process
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    if spec.startswith("cuda:"):
        index = int(spec.split(":", 1)[1])
        if index >= torch.cuda.device_count():
            raise NlptoolError(
                f"--device {spec}: torch sees {torch.cuda.device_count()} CUDA device(s) (cuda:0 ...); pick one of them"
            )
        return spec
    return "cuda"
