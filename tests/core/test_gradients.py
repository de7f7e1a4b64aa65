"""Tests for nlptool.core.gradients: the input-gradient vs parameter-gradient inequality (kexue.fm/archives/8796)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from torch import nn

from nlptool.core.errors import NlptoolError, RowError
from nlptool.core.gradients import ACTIVATIONS, build_mlp, check_inequality, mlp_layers, summarize

LAYER_KEYS = {
    "h_sq",
    "w_spec",
    "jac_spec",
    "lhs_term",
    "lhs_weight",
    "lhs_bias",
    "grad_w_sq",
    "grad_b_sq",
    "ratio",
    "has_bias",
    "jac_converged",
}
ROW_KEYS = {"lhs", "rhs", "ratio", "holds", "status", "grad_x_sq", "grad_theta_sq", "tightest_layer", "layers"}


def _inputs(n: int, d: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _all_finite(rows: list[dict]) -> bool:
    values = []
    for row in rows:
        values += [row[k] for k in ("lhs", "rhs", "ratio", "grad_x_sq", "grad_theta_sq")]
        for layer in row["layers"]:
            values += [layer[k] for k in LAYER_KEYS - {"has_bias", "jac_converged"}]
    return all(math.isfinite(v) for v in values)


# ---------------------------------------------------------------------------------------------------- the inequality


CONFIGS = [
    (activation, depth, seed)
    for activation in ("tanh", "relu", "gelu", "sigmoid", "linear")
    for depth in (1, 2, 3, 4)
    for seed in (0, 1)
]


@pytest.mark.parametrize("f", ["output", "sqnorm"])
@pytest.mark.parametrize(("activation", "depth", "seed"), CONFIGS)
def test_inequality_holds_on_random_nets(activation: str, depth: int, seed: int, f: str) -> None:
    rng = np.random.default_rng(seed * 100 + depth)
    d_in = int(rng.integers(1, 9))
    widths = [int(w) for w in rng.integers(1, 12, size=depth - 1)]
    d_out = 1 if f == "output" else int(rng.integers(1, 5))
    model = build_mlp([d_in, *widths, d_out], activation, seed=seed)
    rows = check_inequality(model, _inputs(6, d_in, seed=seed, scale=2.0), f=f)
    assert len(rows) == 6
    for row in rows:
        assert set(row) == ROW_KEYS
        assert len(row["layers"]) == depth
        assert row["holds"]
        assert 0.0 <= row["ratio"] <= 1.0 + 1e-9
        assert row["rhs"] == row["grad_theta_sq"]
        assert row["lhs"] == pytest.approx(sum(layer["lhs_term"] for layer in row["layers"]), rel=1e-12)
        assert row["rhs"] == pytest.approx(sum(lr["grad_w_sq"] + lr["grad_b_sq"] for lr in row["layers"]), rel=1e-12)
        ratios = [layer["ratio"] for layer in row["layers"]]
        assert row["tightest_layer"] == int(np.argmax(ratios)) + 1
        for layer in row["layers"]:
            assert set(layer) == LAYER_KEYS
            # each part holds separately
            assert layer["lhs_weight"] <= layer["grad_w_sq"] * (1 + 1e-9) + 1e-300
            assert layer["lhs_bias"] <= layer["grad_b_sq"] * (1 + 1e-9) + 1e-300
            assert layer["ratio"] <= 1 + 1e-9
        assert row["layers"][0]["jac_spec"] == 1.0
    assert _all_finite(rows)


def test_leaky_elu_silu_softplus_user_model() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Linear(4, 6),
        nn.LeakyReLU(0.1),
        nn.Linear(6, 5),
        nn.ELU(),
        nn.Linear(5, 5),
        nn.SiLU(),
        nn.Softplus(),
        nn.Linear(5, 2),
    ).double()
    rows = check_inequality(model, _inputs(5, 4, scale=3.0), f="sum")
    assert all(row["holds"] and row["ratio"] <= 1 for row in rows)
    assert len(rows[0]["layers"]) == 4


def test_equality_single_linear_layer_top_singular_vector() -> None:
    d, m = 5, 3
    model = build_mlp([d, m], "linear", seed=7)
    weight = model[0].weight.detach()
    u = torch.linalg.svd(weight).U[:, 0]
    rows = check_inequality(model, _inputs(4, d, seed=2), f=lambda h: u @ h)
    for row in rows:
        assert row["ratio"] == pytest.approx(1.0, abs=1e-9)
        assert row["holds"]
        layer = row["layers"][0]
        assert layer["lhs_weight"] == pytest.approx(layer["grad_w_sq"], rel=1e-9)
        assert layer["lhs_bias"] == pytest.approx(layer["grad_b_sq"], rel=1e-9)
        assert layer["grad_b_sq"] == pytest.approx(1.0, rel=1e-12)  # δ = u, a unit vector


def test_f_sum_matches_callable() -> None:
    model = build_mlp([3, 4, 2], "tanh", seed=4)
    x = _inputs(3, 3)
    named = check_inequality(model, x, f="sum")
    custom = check_inequality(model, x, f=lambda h: h.sum())
    for a, b in zip(named, custom, strict=True):
        assert a["lhs"] == pytest.approx(b["lhs"], rel=1e-14)
        assert a["rhs"] == pytest.approx(b["rhs"], rel=1e-14)


def test_non_vmappable_callable_falls_back_to_rows() -> None:
    model = build_mlp([3, 4, 2], "tanh", seed=4)
    x = _inputs(3, 3)
    data_dependent = check_inequality(model, x, f=lambda h: h[0] if h[0].item() > -1e9 else h[1])
    plain = check_inequality(model, x, f=lambda h: h[0])
    for a, b in zip(data_dependent, plain, strict=True):
        assert a["lhs"] == pytest.approx(b["lhs"], rel=1e-14)
        assert a["rhs"] == pytest.approx(b["rhs"], rel=1e-14)


# ------------------------------------------------------------------------------------------------ hand-checked terms


def test_hand_checked_tiny_tanh_net() -> None:
    w1 = np.array([[0.5, -1.2], [0.8, 0.3]])
    b1 = np.array([0.1, -0.4])
    w2 = np.array([[1.5, -0.7]])
    b2 = np.array([0.2])
    x = np.array([0.6, -0.9])
    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 1)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(w1))
        model[0].bias.copy_(torch.tensor(b1))
        model[2].weight.copy_(torch.tensor(w2))
        model[2].bias.copy_(torch.tensor(b2))
    (row,) = check_inequality(model, torch.tensor(x).unsqueeze(0), f="output")

    # forward and backward by hand: f = W2 tanh(W1 x + b1) + b2
    h1 = x
    h2 = np.tanh(w1 @ x + b1)
    delta2 = np.array([1.0])
    delta1 = (1 - h2**2) * (w2.T @ delta2)
    grad_x = w1.T @ delta1
    jac1 = np.eye(2)
    jac2 = np.diag(1 - h2**2) @ w1
    gx_sq = grad_x @ grad_x
    expected = []
    for h, w, jac, delta in ((h1, w1, jac1, delta1), (h2, w2, jac2, delta2)):
        w_spec = np.linalg.svd(w, compute_uv=False)[0]
        jac_spec = np.linalg.svd(jac, compute_uv=False)[0]
        denom = w_spec**2 * jac_spec**2
        grad_w_sq = np.sum(np.outer(delta, h) ** 2)
        grad_b_sq = delta @ delta
        lhs_weight = gx_sq * (h @ h) / denom
        lhs_bias = gx_sq / denom
        expected.append(
            {
                "h_sq": h @ h,
                "w_spec": w_spec,
                "jac_spec": jac_spec,
                "lhs_weight": lhs_weight,
                "lhs_bias": lhs_bias,
                "lhs_term": lhs_weight + lhs_bias,
                "grad_w_sq": grad_w_sq,
                "grad_b_sq": grad_b_sq,
                "ratio": (lhs_weight + lhs_bias) / (grad_w_sq + grad_b_sq),
            }
        )
    for got, want in zip(row["layers"], expected, strict=True):
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
    lhs = sum(e["lhs_term"] for e in expected)
    rhs = sum(e["grad_w_sq"] + e["grad_b_sq"] for e in expected)
    assert row["grad_x_sq"] == pytest.approx(gx_sq, rel=1e-12)
    assert row["lhs"] == pytest.approx(lhs, rel=1e-12)
    assert row["rhs"] == pytest.approx(rhs, rel=1e-12)
    assert row["ratio"] == pytest.approx(lhs / rhs, rel=1e-12)
    assert row["tightest_layer"] == int(np.argmax([e["ratio"] for e in expected])) + 1


def _f_value(model: nn.Sequential, x: torch.Tensor, f: str) -> float:
    out = model(x)
    return float(out[0] if f == "output" else (out * out).sum())


@pytest.mark.parametrize("f", ["output", "sqnorm"])
def test_gradients_match_central_differences(f: str) -> None:
    d_out = 1 if f == "output" else 3
    model = build_mlp([3, 4, 3, d_out], "tanh", seed=5)
    x = _inputs(1, 3, seed=9)[0]
    (row,) = check_inequality(model, x, f=f)
    step = 1e-6
    with torch.no_grad():
        grad_x = np.zeros(3)
        for i in range(3):
            e = torch.zeros(3, dtype=torch.float64)
            e[i] = step
            grad_x[i] = (_f_value(model, x + e, f) - _f_value(model, x - e, f)) / (2 * step)
        per_param = {}
        for name, param in model.named_parameters():
            flat = param.view(-1)
            g = np.zeros(flat.numel())
            for k in range(flat.numel()):
                old = flat[k].item()
                flat[k] = old + step
                up = _f_value(model, x, f)
                flat[k] = old - step
                down = _f_value(model, x, f)
                flat[k] = old
                g[k] = (up - down) / (2 * step)
            per_param[name] = float(g @ g)
    assert row["grad_x_sq"] == pytest.approx(grad_x @ grad_x, rel=1e-7)
    assert row["grad_theta_sq"] == pytest.approx(sum(per_param.values()), rel=1e-7)
    for t, layer in enumerate(row["layers"]):
        assert layer["grad_w_sq"] == pytest.approx(per_param[f"{2 * t}.weight"], rel=1e-7)
        assert layer["grad_b_sq"] == pytest.approx(per_param[f"{2 * t}.bias"], rel=1e-7)


def test_layers_without_bias() -> None:
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Tanh(), nn.Linear(4, 1, bias=False)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.3, -0.5, 0.9], [1.1, 0.2, -0.4], [-0.6, 0.8, 0.1], [0.5, 0.5, 0.5]]))
        model[2].weight.copy_(torch.tensor([[0.7, -1.3, 0.4, 0.9]]))
    x = _inputs(4, 3, seed=1)
    rows = check_inequality(model, x)
    for i, row in enumerate(rows):
        assert row["holds"] and row["ratio"] <= 1
        xi = x[i].clone().requires_grad_(True)
        model.zero_grad()
        model(xi)[0].backward()
        theta_sq = sum(float(p.grad.pow(2).sum()) for p in model.parameters())
        assert row["grad_theta_sq"] == pytest.approx(theta_sq, rel=1e-12)
        for layer in row["layers"]:
            assert layer["has_bias"] is False
            assert layer["grad_b_sq"] == 0.0 and layer["lhs_bias"] == 0.0
            assert layer["lhs_term"] == layer["lhs_weight"]


# --------------------------------------------------------------------------------------------------- spectral norms


def test_exact_and_power_spectral_norms_agree() -> None:
    model = build_mlp([64, 48, 32, 1], "tanh", seed=2)
    x = _inputs(5, 64, seed=3)
    exact = check_inequality(model, x, spectral="exact")
    power = check_inequality(model, x, spectral="power", power_iters=5000, power_tol=1e-13)
    for a, b in zip(exact, power, strict=True):
        for la, lb in zip(a["layers"], b["layers"], strict=True):
            assert lb["jac_converged"]
            assert lb["jac_spec"] == pytest.approx(la["jac_spec"], rel=1e-8)
        assert b["lhs"] == pytest.approx(a["lhs"], rel=1e-7)
    auto = check_inequality(model, x)  # d_in = 64 <= exact_max_dim: exact
    assert [r["lhs"] for r in auto] == [r["lhs"] for r in exact]
    auto_power = check_inequality(model, x, exact_max_dim=10, power_iters=5000, power_tol=1e-13)
    assert [r["lhs"] for r in auto_power] == [r["lhs"] for r in power]


def test_power_route_scales_to_wide_inputs() -> None:
    model = build_mlp([2000, 64, 32, 1], "gelu", seed=1)
    x = _inputs(8, 2000, seed=4)
    start = time.perf_counter()
    power = check_inequality(model, x)  # d_in > exact_max_dim: power
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0
    assert all(row["holds"] for row in power)
    exact = check_inequality(model, x, spectral="exact")
    for a, b in zip(exact, power, strict=True):
        for la, lb in zip(a["layers"], b["layers"], strict=True):
            # power iteration approaches the spectral norm from below
            assert lb["jac_spec"] <= la["jac_spec"] * (1 + 1e-12)
            assert lb["jac_spec"] == pytest.approx(la["jac_spec"], rel=1e-3)
    # seeded start vectors: identical reruns
    first = check_inequality(model, x[:2], seed=5)
    assert [r["lhs"] for r in check_inequality(model, x[:2], seed=5)] == [r["lhs"] for r in first]


# --------------------------------------------------------------------------------------------------- degenerate cases


def test_dead_relu_layer_gives_zero_terms_not_nan() -> None:
    model = build_mlp([3, 5, 1], "relu", seed=0)
    with torch.no_grad():
        model[0].bias.fill_(-100.0)
    rows = check_inequality(model, _inputs(4, 3))
    assert _all_finite(rows)
    for row in rows:
        assert row["grad_x_sq"] == 0.0
        assert row["lhs"] == 0.0 and row["ratio"] == 0.0 and row["holds"]
        hidden = row["layers"][1]
        assert hidden["jac_spec"] == 0.0 and hidden["h_sq"] == 0.0
        assert hidden["lhs_term"] == 0.0 and hidden["grad_b_sq"] == 1.0
    # also through the power route
    rows = check_inequality(model, _inputs(4, 3), spectral="power")
    assert _all_finite(rows) and all(r["holds"] for r in rows)
    assert rows[0]["layers"][1]["jac_spec"] == 0.0


def test_all_zero_network_ratio_is_zero() -> None:
    model = build_mlp([3, 4, 2], "tanh", seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    rows = check_inequality(model, _inputs(2, 3), f="sqnorm")
    assert _all_finite(rows)
    for row in rows:
        assert row["lhs"] == 0.0 and row["rhs"] == 0.0 and row["ratio"] == 0.0 and row["holds"]
        assert all(layer["w_spec"] == 0.0 and layer["ratio"] == 0.0 for layer in row["layers"])


# ----------------------------------------------------------------------------------------------- parsing and building


def test_mlp_layers_pairs() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.ReLU(), nn.Linear(4, 2), nn.Linear(2, 1), nn.Sigmoid())
    pairs = mlp_layers(model)
    assert [lin.out_features for lin, _ in pairs] == [4, 2, 1]
    assert isinstance(pairs[0][1], nn.Sequential) and len(pairs[0][1]) == 2
    assert isinstance(pairs[1][1], nn.Identity)
    assert isinstance(pairs[2][1], nn.Sigmoid)


@pytest.mark.parametrize(
    ("bad", "name"), [(nn.Conv1d(4, 4, 1), "Conv1d"), (nn.BatchNorm1d(4), "BatchNorm1d"), (nn.Dropout(0.1), "Dropout")]
)
def test_mlp_layers_rejects_non_mlp_modules(bad: nn.Module, name: str) -> None:
    model = nn.Sequential(nn.Linear(3, 4), bad, nn.Linear(4, 1))
    with pytest.raises(NlptoolError, match=rf"module 1 is {name}.*not supported"):
        mlp_layers(model)


def test_mlp_layers_shape_and_structure_errors() -> None:
    with pytest.raises(NlptoolError, match=r"module 2 .*does not chain.*expected in_features 4"):
        mlp_layers(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(5, 1)))
    with pytest.raises(NlptoolError, match="before the first nn.Linear"):
        mlp_layers(nn.Sequential(nn.Tanh(), nn.Linear(3, 1)))
    with pytest.raises(NlptoolError, match="no nn.Linear"):
        mlp_layers(nn.Sequential())
    with pytest.raises(NlptoolError, match="nn.Sequential"):
        mlp_layers(nn.Linear(3, 1))  # type: ignore[arg-type]
    with pytest.raises(NlptoolError, match="mixes parameter dtypes"):
        mlp_layers(nn.Sequential(nn.Linear(3, 4).double(), nn.Linear(4, 1)))


def test_build_mlp_deterministic_and_local_rng() -> None:
    state = torch.get_rng_state()
    a = build_mlp([4, 6, 1], "relu", seed=11)
    b = build_mlp([4, 6, 1], "relu", seed=11)
    c = build_mlp([4, 6, 1], "relu", seed=12)
    assert torch.equal(torch.get_rng_state(), state)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(a[0].weight, c[0].weight)
    assert a[0].weight.dtype == torch.float64
    assert isinstance(a[1], nn.ReLU) and isinstance(a[3], nn.Identity)
    assert float(a[0].weight.detach().abs().max()) <= 0.5  # U(-1/sqrt(4), 1/sqrt(4))
    assert set(ACTIVATIONS) == {"tanh", "relu", "gelu", "sigmoid", "linear"}
    assert build_mlp([2, 3], dtype=torch.float32)[0].weight.dtype == torch.float32


def test_build_mlp_errors() -> None:
    with pytest.raises(NlptoolError, match="at least 2 layer sizes"):
        build_mlp([4])
    with pytest.raises(NlptoolError, match="positive integer"):
        build_mlp([4, 0, 1])
    with pytest.raises(NlptoolError, match="gelu, linear, relu, sigmoid, tanh"):
        build_mlp([4, 1], "swish")
    with pytest.raises(NlptoolError, match="output activation"):
        build_mlp([4, 1], output_activation="softmax")


def test_check_inequality_errors() -> None:
    model = build_mlp([3, 4, 2], "tanh")
    with pytest.raises(NlptoolError, match="sqnorm"):
        check_inequality(model, _inputs(2, 3), f="output")
    with pytest.raises(NlptoolError, match=r"expects \(n, 3\)"):
        check_inequality(model, _inputs(2, 5), f="sum")
    with pytest.raises(NlptoolError, match="unknown spectral"):
        check_inequality(model, _inputs(2, 3), f="sum", spectral="svd")
    with pytest.raises(NlptoolError, match="unknown f"):
        check_inequality(model, _inputs(2, 3), f="max")
    with pytest.raises(NlptoolError, match="scalar tensor"):
        check_inequality(model, _inputs(2, 3), f=lambda h: h)
    with pytest.raises(NlptoolError, match="NaN"):
        check_inequality(model, torch.tensor([[0.0, math.nan, 1.0]]), f="sum")
    assert check_inequality(model, torch.zeros(0, 3), f="sum") == []


def test_inputs_cast_to_model_dtype() -> None:
    model = build_mlp([3, 4, 1], "tanh", seed=1)
    as_list = check_inequality(model, [[0.1, 0.2, 0.3]])
    as_float32 = check_inequality(model, torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float32).double())
    assert as_list[0]["lhs"] == as_float32[0]["lhs"]


# ------------------------------------------------------------------------------------------------------- summarize


def test_summarize() -> None:
    rows = [
        {"ratio": 0.2, "holds": True, "tightest_layer": 2, "layers": [{}, {}, {}]},
        {"ratio": 0.9, "holds": True, "tightest_layer": 2, "layers": [{}, {}, {}]},
        {"ratio": 1.5, "holds": False, "tightest_layer": 1, "layers": [{}, {}, {}]},
        {"ratio": 0.4, "holds": True, "tightest_layer": 3, "layers": [{}, {}, {}]},
    ]
    summary = summarize(rows)
    assert summary == {
        "total": 4,
        "holding": 3,
        "violations": 1,
        "overflow": 0,
        "max_ratio": 1.5,
        "min_ratio": 0.2,
        "median_ratio": 0.65,
        "tightest_layer": 2,
        "tightest_layer_counts": [1, 2, 1],
    }
    empty = summarize([])
    assert empty["total"] == 0 and empty["max_ratio"] is None and empty["tightest_layer"] is None
    real = summarize(check_inequality(build_mlp([3, 5, 1], seed=0), _inputs(7, 3)))
    assert real["total"] == 7 and real["violations"] == 0 and real["max_ratio"] <= 1


# --------------------------------------------------------------------------------------------------------- overflow


def test_float32_overflow_is_no_verdict() -> None:
    # tanh saturates, so ∇ₓf = 0 exactly, but ‖h⁽¹⁾‖² = ‖x‖² ≈ 1.6e41 is inf in float32: the row is overflow,
    # neither holding nor failing (it used to be a violation with ratio NaN).
    model = build_mlp([4, 8, 1], "tanh", seed=0, dtype=torch.float32)
    x = torch.full((3, 4), 1e20, dtype=torch.float32)
    rows = check_inequality(model, x)
    assert [r["status"] for r in rows] == ["overflow"] * 3
    assert all(r["holds"] is None and r["tightest_layer"] is None for r in rows)
    summary = summarize(rows)
    assert summary["overflow"] == 3 and summary["violations"] == 0 and summary["holding"] == 0
    assert summary["max_ratio"] is None and summary["tightest_layer"] is None
    # the same inputs in float64 are an ordinary check that holds
    rows64 = check_inequality(build_mlp([4, 8, 1], "tanh", seed=0), x.double())
    assert [r["status"] for r in rows64] == ["holds"] * 3 and _all_finite(rows64)


def test_float64_overflow_of_gradients_is_not_holding() -> None:
    # ReLU is positively homogeneous: with x ~ 1e160, ‖h⁽ᵗ⁾‖² and ‖∇_W f‖² overflow float64 (lhs and rhs both inf,
    # which used to count as holding because inf <= inf).
    model = build_mlp([4, 8, 8, 1], "relu", seed=0)
    x = _inputs(4, 4, scale=1e160)
    rows = check_inequality(model, x)
    assert rows and all(r["status"] == "overflow" and r["holds"] is None for r in rows)
    assert not math.isfinite(rows[0]["rhs"])
    # scaling down by 1e150 gives finite terms and a verdict
    assert all(r["status"] == "holds" and r["holds"] for r in check_inequality(model, x / 1e150))


def test_summarize_counts_overflow_apart() -> None:
    rows = [
        {"ratio": 0.5, "holds": True, "status": "holds", "tightest_layer": 1, "layers": [{}, {}]},
        {"ratio": 1.5, "holds": False, "status": "fails", "tightest_layer": 2, "layers": [{}, {}]},
        {"ratio": math.nan, "holds": None, "status": "overflow", "tightest_layer": None, "layers": [{}, {}]},
    ]
    summary = summarize(rows)
    assert (summary["total"], summary["holding"], summary["violations"], summary["overflow"]) == (3, 1, 1, 1)
    assert summary["max_ratio"] == 1.5 and summary["median_ratio"] == 1.0
    assert summary["tightest_layer_counts"] == [1, 1]


def test_nonfinite_input_row_and_parameters_are_errors() -> None:
    model = build_mlp([3, 4, 1], seed=0)
    x = _inputs(3, 3)
    x[2, 1] = math.inf
    with pytest.raises(RowError, match="NaN or infinite") as info:
        check_inequality(model, x)
    assert info.value.row == 2
    with torch.no_grad():
        model[2].weight[0, 0] = math.nan
    with pytest.raises(NlptoolError, match="weight of Linear layer 2"):
        check_inequality(model, _inputs(2, 3))
