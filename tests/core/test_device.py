"""``--device`` parsing and resolution, defined once in nlptool.core.device."""

import pytest

from nlptool.core.device import Device, parse_device, resolve_device
from nlptool.core.errors import NlptoolError


@pytest.mark.parametrize(
    ("value", "expected"),
    [("auto", "auto"), ("cpu", "cpu"), ("cuda", "cuda"), ("cuda:3", "cuda:3"), (" MPS ", "mps"), (Device.cpu, "cpu")],
)
def test_parse_device_accepts(value, expected):
    assert parse_device(value) == expected


@pytest.mark.parametrize("value", ["gpu", "cuda:", "cuda:x", "cuda:-1", "tpu", ""])
def test_parse_device_rejects(value):
    with pytest.raises(ValueError, match="auto, cpu, cuda, cuda:N, mps"):
        parse_device(value)


def test_resolve_device_cpu_and_auto():
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_resolve_device_missing_hardware_is_an_expected_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(NlptoolError, match="no CUDA device"):
            resolve_device(spec)
    with pytest.raises(NlptoolError, match="not a device"):
        resolve_device("gpu")


def test_commands_import_device_from_core():
    from nlptool.commands import encode

    assert encode.resolve_device is resolve_device  # the old import path keeps working
