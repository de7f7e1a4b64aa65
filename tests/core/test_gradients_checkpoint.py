"""core.gradients.load_checkpoint and random_inputs, the pieces nlptool gradcheck uses, called from Python."""

import pytest
import torch
from torch import nn

from nlptool.core.errors import NlptoolError
from nlptool.core.gradients import build_mlp, check_inequality, load_checkpoint, random_inputs


def test_state_dict_round_trip(tmp_path):
    net = build_mlp([3, 5, 2], "relu", seed=4)
    path = tmp_path / "mlp.pt"
    torch.save(net.state_dict(), path)
    loaded = load_checkpoint(path, "relu")
    assert [type(m) for m in loaded] == [nn.Linear, nn.ReLU, nn.Linear] and not loaded.training
    x = random_inputs(4, 3, seed=1)
    assert torch.equal(loaded(x), net[:3](x))
    assert all(row["holds"] for row in check_inequality(loaded, x, f="sqnorm"))


def test_pickled_module_needs_unsafe(tmp_path):
    path = tmp_path / "full.pt"
    torch.save(build_mlp([2, 3, 1]), path)
    with pytest.raises(NlptoolError, match="pass --unsafe-load if you trust the file"):
        load_checkpoint(path)
    assert isinstance(load_checkpoint(path, unsafe=True), nn.Sequential)


def test_missing_and_damaged_files(tmp_path):
    with pytest.raises(NlptoolError, match=r"checkpoint .*nope.pt does not exist; check the path"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(NlptoolError, match="is not a PyTorch file that torch.load can read"):
        load_checkpoint(bad)
    with pytest.raises(NlptoolError, match="unknown activation 'swish'"):
        load_checkpoint(bad, "swish")


def test_random_inputs_are_seeded_per_trial():
    a = random_inputs(3, 4, seed=2, trial=1, scale=0.5)
    assert a.shape == (3, 4) and a.dtype == torch.float64
    assert torch.equal(a, random_inputs(3, 4, seed=2, trial=1, scale=0.5))
    assert not torch.equal(a, random_inputs(3, 4, seed=2, trial=2, scale=0.5))
    assert torch.equal(random_inputs(3, 4, seed=2, trial=1, dtype=torch.float32), a.float() * 2)
