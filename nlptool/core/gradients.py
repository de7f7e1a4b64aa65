r"""The input-gradient vs parameter-gradient inequality for MLPs.

For an ``l``-layer MLP

    h⁽¹⁾ = x,    z⁽ᵗ⁾ = W⁽ᵗ⁾ h⁽ᵗ⁾ + b⁽ᵗ⁾,    h⁽ᵗ⁺¹⁾ = g⁽ᵗ⁾(z⁽ᵗ⁾),    t = 1..l,

with elementwise activations ``g⁽ᵗ⁾`` and any scalar ``f`` of the output ``h⁽ˡ⁺¹⁾``:

    ‖∇ₓf‖² · Σₜ (1 + ‖h⁽ᵗ⁾‖²) / (‖W⁽ᵗ⁾‖₂² ‖J⁽ᵗ⁾‖₂²)  ≤  ‖∇_θ f‖²,

where ``J⁽ᵗ⁾ = ∂h⁽ᵗ⁾/∂x`` (so ``J⁽¹⁾ = I``), ``‖·‖₂`` is the spectral norm of a matrix and every other norm is
Euclidean (Frobenius for the gradient of a matrix).

Derivation. Let ``δₜ = ∂f/∂z⁽ᵗ⁾``. Then ``∇_{W⁽ᵗ⁾} f = δₜ h⁽ᵗ⁾ᵀ`` and ``∇_{b⁽ᵗ⁾} f = δₜ``, so

    ‖∇_θ f‖² = Σₜ ‖δₜ‖² (1 + ‖h⁽ᵗ⁾‖²).

Because ``z⁽ᵗ⁾`` depends on ``x`` only through ``h⁽ᵗ⁾``, ``∇ₓf = J⁽ᵗ⁾ᵀ W⁽ᵗ⁾ᵀ δₜ`` for every ``t``, hence
``‖∇ₓf‖ ≤ ‖J⁽ᵗ⁾‖₂ ‖W⁽ᵗ⁾‖₂ ‖δₜ‖``. Per layer, separately,

    weight part:  ‖∇ₓf‖² ‖h⁽ᵗ⁾‖² / (‖W⁽ᵗ⁾‖₂² ‖J⁽ᵗ⁾‖₂²)  ≤  ‖δₜ‖² ‖h⁽ᵗ⁾‖² = ‖∇_{W⁽ᵗ⁾} f‖²_F,
    bias part:    ‖∇ₓf‖²            / (‖W⁽ᵗ⁾‖₂² ‖J⁽ᵗ⁾‖₂²)  ≤  ‖δₜ‖²          = ‖∇_{b⁽ᵗ⁾} f‖²,

and summing over both parts and all layers gives the inequality. Equality needs, in every layer, ``δₜ`` along the
top left singular vector of ``W⁽ᵗ⁾`` and ``W⁽ᵗ⁾ᵀδₜ`` along the top left singular vector of ``J⁽ᵗ⁾``; a single
linear layer with ``f = uᵀz`` (``u`` the top left singular vector of ``W``) attains it.

A Linear layer without bias has no bias part: its term is ``‖∇ₓf‖² ‖h⁽ᵗ⁾‖² / (‖W⁽ᵗ⁾‖₂² ‖J⁽ᵗ⁾‖₂²)`` and ``∇_θ f``
has no bias entry for it, so the inequality still holds term by term.

The 0/0 rule. If ``‖W⁽ᵗ⁾‖₂ ‖J⁽ᵗ⁾‖₂ = 0`` (a zero weight matrix, or a layer whose Jacobian vanishes, e.g. a hidden
ReLU layer that is dead for this input) then ``∇ₓf = J⁽ᵗ⁾ᵀ W⁽ᵗ⁾ᵀ δₜ = 0`` as well, and the term ``0/0`` is defined
as 0 (never NaN); likewise a layer ratio ``0/0`` (``δₜ = 0`` forces ``∇ₓf = 0``) and a row ratio ``0/0`` are 0.
A positive number over zero cannot arise in exact arithmetic. To keep roundoff from manufacturing one, each term is
evaluated as ``(‖∇ₓf‖ / ‖W⁽ᵗ⁾‖₂ / ‖J⁽ᵗ⁾‖₂)²`` (no squaring of tiny or huge factors before dividing); if a positive
numerator still meets an exactly zero denominator, the term is reported as ``+inf`` and the row as not holding, so a
numerical breakdown is shown rather than hidden.

Overflow. Large inputs (or float32) can push ``h⁽ᵗ⁾``, a gradient, or a product such as ``q²‖h⁽ᵗ⁾‖²`` past the
largest number of the dtype. Such a row has status ``"overflow"`` (``holds`` None): an infinite or NaN term says
nothing about the inequality, so it is neither counted as holding nor as a violation. Use float64 or smaller inputs.

Spectral norms. ``‖W⁽ᵗ⁾‖₂`` is computed exactly (``torch.linalg.matrix_norm(ord=2)``). ``‖J⁽ᵗ⁾‖₂`` is computed
exactly from the full Jacobian (forward-mode ``torch.func.jacfwd``) or, for wide inputs, by Jacobian-free power
iteration on ``J⁽ᵗ⁾ᵀJ⁽ᵗ⁾`` with ``torch.func`` JVPs and VJPs. Power iteration approaches ``‖J⁽ᵗ⁾‖₂`` from below, so
an unconverged estimate can only make the left side larger (a conservative check); ``jac_converged`` says whether
it met its tolerance.

Use float64 models (the default of :func:`build_mlp`): the ``holds`` test allows a relative slack of only 1e-9.

Reference:
    Su Jianlin, "输入梯度惩罚与参数梯度惩罚的一个不等式" (An inequality between input-gradient and
    parameter-gradient penalties), https://kexue.fm/archives/8796 (2021); after B. Dherin, M. Munn and D. G. T.
    Barrett, "The Geometric Occam's Razor Implicit in Deep Learning", arXiv:2111.15090.

Neighbours: this module only evaluates the inequality; a command (``nlptool gradcheck``) wraps it for files.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import grad, jacfwd, jvp, vjp, vmap

from nlptool.core.errors import NlptoolError, RowError, plain

__all__ = [
    "ACTIVATIONS",
    "build_mlp",
    "load_checkpoint",
    "mlp_layers",
    "random_inputs",
    "check_inequality",
    "summarize",
]

#: Activation names accepted by :func:`build_mlp`, each mapped to a factory of a parameter-free elementwise module.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "linear": nn.Identity,
}

# Elementwise, parameter-free activation modules that :func:`mlp_layers` accepts in a user's model.
_ELEMENTWISE = (nn.Tanh, nn.ReLU, nn.GELU, nn.Sigmoid, nn.Identity, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.Softplus)

_F_CHOICES = ("output", "sqnorm", "sum")
_SPECTRAL_CHOICES = ("auto", "exact", "power")
_HOLDS_RTOL = 1e-9
_HOLDS_ATOL = 1e-300
_CHUNK = 64  # rows per vmap chunk (bounds the memory of per-sample parameter gradients and Jacobians)

# One layer as used internally: weight, bias (or None), activation.
_Layer = tuple[torch.Tensor, torch.Tensor | None, nn.Module]


def _activation(name: str, role: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise NlptoolError(f"unknown {role} {name!r}; choose one of {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]()


def build_mlp(
    layers: list[int],
    activation: str = "tanh",
    *,
    output_activation: str = "linear",
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> nn.Sequential:
    """Build a random MLP ``Linear, act, Linear, act, ..., Linear, output_act``.

    Weights and biases are drawn from ``U(-1/√fan_in, 1/√fan_in)`` (PyTorch's default ``nn.Linear`` scale) with a
    local ``torch.Generator`` seeded by ``seed``; the global RNG is neither used nor advanced.

    Args:
        layers: sizes ``[d_in, width_1, ..., d_out]``; at least two positive integers.
        activation: activation after every hidden Linear, one of :data:`ACTIVATIONS`.
        output_activation: activation after the last Linear (``"linear"``: none).
        seed: seed of the local generator; equal seeds give identical models.
        dtype: parameter dtype (float64 by default, which :func:`check_inequality` expects for tight checks).

    Returns:
        An ``nn.Sequential`` that :func:`mlp_layers` accepts.
    """
    sizes = list(layers)
    if len(sizes) < 2:
        raise NlptoolError(f"an MLP needs at least 2 layer sizes (input and output), got {sizes}; pass e.g. [4, 8, 1]")
    for i, size in enumerate(sizes):
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise NlptoolError(
                f"layer size {i} is {plain(size)!r} in {plain(sizes)}; every size must be a positive integer"
            )
    _activation(activation, "activation")  # validate both names; fresh modules are made per layer below
    _activation(output_activation, "output activation")

    gen = torch.Generator().manual_seed(int(seed))
    modules: list[nn.Module] = []
    for t, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        linear = nn.utils.skip_init(nn.Linear, d_in, d_out, dtype=dtype)
        bound = 1.0 / math.sqrt(d_in)
        with torch.no_grad():
            weight = torch.rand(d_out, d_in, generator=gen, dtype=torch.float64) * (2 * bound) - bound
            bias = torch.rand(d_out, generator=gen, dtype=torch.float64) * (2 * bound) - bound
            linear.weight.copy_(weight.to(dtype))
            linear.bias.copy_(bias.to(dtype))
        modules.append(linear)
        last = t == len(sizes) - 2
        modules.append(ACTIVATIONS[output_activation if last else activation]())
    return nn.Sequential(*modules)


def load_checkpoint(path: str | os.PathLike, activation: str = "tanh", *, unsafe: bool = False) -> nn.Sequential:
    """The MLP saved in ``path``, in eval mode, for :func:`check_inequality`.

    Args:
        path: a file written by ``torch.save(model.state_dict(), path)`` from an ``nn.Sequential`` of Linear layers
            (keys ``'0.weight'``, ``'0.bias'``, ``'2.weight'``, ...), or by ``torch.save(model, path)``.
        activation: the activation put between the Linear layers of a state_dict (one of :data:`ACTIVATIONS`);
            a state_dict holds no activations, and none goes after the last layer.
        unsafe: allow unpickling a whole module (``weights_only=False``), which runs code from the file; without
            it such a file is refused (the CLI's ``--unsafe-load``).

    Raises:
        NlptoolError: the file is missing, a folder, damaged, a pickled module without ``unsafe``, not a Sequential,
            or a state_dict whose tensors do not chain into Linear layers (each message names the file).
    """
    import pickle

    _activation(activation, "activation")
    path = str(path)
    expected = (
        "a file saved with torch.save(model.state_dict(), PATH) from an nn.Sequential of Linear layers "
        "(or, with --unsafe-load, torch.save(model, PATH))"
    )
    p = Path(path)
    if p.is_dir():
        raise NlptoolError(f"checkpoint {path} is a folder; --checkpoint expects {expected}")
    if not p.is_file():
        raise NlptoolError(f"checkpoint {path} does not exist; check the path (--checkpoint expects {expected})")

    def damaged(exc: BaseException) -> NlptoolError:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        return NlptoolError(
            f"checkpoint {path} is not a PyTorch file that torch.load can read ({type(exc).__name__}: {first}); "
            f"it is damaged or of another format: re-save it as {expected}"
        )

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses a pickle of arbitrary objects (a whole module) with its own message; anything else
        # (garbage, a truncated file) is a damaged file that --unsafe-load would not help
        if "unsupported global" not in str(exc).lower():
            raise damaged(exc) from None
        if not unsafe:
            raise NlptoolError(
                f"checkpoint {path} is not a plain state_dict ({str(exc).splitlines()[0][:120]}); "
                "a pickled module runs code when loaded: pass --unsafe-load if you trust the file, "
                "or save model.state_dict() instead"
            ) from None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc2:  # noqa: BLE001 - unpickling fails in arbitrary ways
            raise damaged(exc2) from None
    except Exception as exc:  # noqa: BLE001 - truncated zip, bad magic number, EOF ...
        raise damaged(exc) from None
    if isinstance(obj, nn.Module):
        if not isinstance(obj, nn.Sequential):
            raise NlptoolError(f"checkpoint {path} holds a {type(obj).__name__}; gradcheck needs an nn.Sequential")
        return obj.eval()
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise NlptoolError(
            f"checkpoint {path} holds neither an nn.Sequential nor a state_dict (names to tensors); "
            f"--checkpoint expects {expected}"
        )
    linear_ids = sorted({int(k.split(".")[0]) for k in obj if k.split(".")[0].isdigit() and k.endswith(".weight")})
    if not linear_ids or len(linear_ids) * 2 < sum(1 for k in obj if k.endswith((".weight", ".bias"))) - len(
        linear_ids
    ):
        raise NlptoolError(
            f"state_dict in {path} does not look like a Sequential of Linear layers (keys like '0.weight', '0.bias')"
        )
    modules: list[nn.Module] = []
    prev_out: int | None = None
    for n, idx in enumerate(linear_ids):
        w = obj[f"{idx}.weight"]
        if w.ndim != 2 or not w.is_floating_point():
            raise NlptoolError(
                f"state_dict in {path}: '{idx}.weight' is a {w.dtype} tensor of shape {tuple(w.shape)}, not a "
                "Linear weight"
            )
        b = obj.get(f"{idx}.bias")
        if b is not None and tuple(b.shape) != (w.shape[0],):
            raise NlptoolError(
                f"state_dict in {path}: '{idx}.bias' has shape {tuple(b.shape)}, but '{idx}.weight' has "
                f"{w.shape[0]} outputs"
            )
        if prev_out is not None and prev_out != w.shape[1]:
            raise NlptoolError(
                f"state_dict in {path}: '{idx}.weight' takes {w.shape[1]} inputs, but the layer before gives {prev_out}"
            )
        prev_out = int(w.shape[0])
        lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, dtype=w.dtype)
        with torch.no_grad():
            lin.weight.copy_(w)
            if b is not None:
                lin.bias.copy_(b)
        modules.append(lin)
        if n < len(linear_ids) - 1:
            modules.append(ACTIVATIONS[activation]())
    return nn.Sequential(*modules).eval()


def random_inputs(
    n: int, dim: int, *, seed: int = 0, trial: int = 0, scale: float = 1.0, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """``n`` Gaussian inputs of size ``dim`` with standard deviation ``scale``, as ``nlptool gradcheck`` draws them
    for network ``trial`` (a local generator seeded with ``seed * 1_000_003 + trial``; drawn in float64, then cast to
    ``dtype``, so float32 runs see the same numbers rounded). May hold infinities if ``scale`` overflows ``dtype``."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + trial)
    return torch.randn(n, dim, generator=gen, dtype=torch.float64).to(dtype) * scale


def mlp_layers(model: nn.Sequential) -> list[tuple[nn.Linear, nn.Module]]:
    """Parse a Sequential of Linear layers and elementwise activations into ``(linear, activation)`` pairs.

    Accepted activations: Tanh, ReLU, GELU, Sigmoid, Identity, LeakyReLU, ELU, SiLU, Softplus. Several activations in
    a row are composed (into an ``nn.Sequential``); a Linear with no activation after it gets ``nn.Identity``. Linear
    layers without bias are allowed (their bias part is absent). Anything else (convolutions, normalisation,
    dropout, attention, a nested Sequential, ...) is rejected, because the inequality is stated for
    ``h⁽ᵗ⁺¹⁾ = g⁽ᵗ⁾(W⁽ᵗ⁾h⁽ᵗ⁾ + b⁽ᵗ⁾)`` with elementwise ``g⁽ᵗ⁾``.

    Args:
        model: the network; must start with an ``nn.Linear``; consecutive Linear shapes must chain and all
            parameters must share one dtype.

    Returns:
        One ``(linear, activation)`` pair per layer, in order.

    Raises:
        NlptoolError: for an unsupported module (naming its index and type), a model that does not start with a
            Linear, shapes that do not chain, mixed dtypes, or an empty model.
    """
    if not isinstance(model, nn.Sequential):
        raise NlptoolError(
            f"expected an nn.Sequential of nn.Linear and elementwise activations, got {type(model).__name__}; "
            "wrap the layers in nn.Sequential(...)"
        )
    pairs: list[tuple[nn.Linear, list[nn.Module]]] = []
    for index, module in enumerate(model):
        if isinstance(module, nn.Linear):
            if pairs and pairs[-1][0].out_features != module.in_features:
                prev = pairs[-1][0]
                raise NlptoolError(
                    f"module {index} (Linear {module.in_features}->{module.out_features}) does not chain with the "
                    f"previous Linear ({prev.in_features}->{prev.out_features}): expected in_features "
                    f"{prev.out_features}; fix the layer sizes"
                )
            pairs.append((module, []))
        elif isinstance(module, _ELEMENTWISE):
            if not pairs:
                raise NlptoolError(
                    f"module {index} ({type(module).__name__}) comes before the first nn.Linear; the MLP must start "
                    "with a Linear layer (h⁽¹⁾ = x)"
                )
            pairs[-1][1].append(module)
        else:
            allowed = ", ".join(["Linear"] + [cls.__name__ for cls in _ELEMENTWISE])
            raise NlptoolError(
                f"module {index} is {type(module).__name__}, which is not supported; the inequality applies to MLPs "
                f"made only of {allowed}; remove or replace that module"
            )
    if not pairs:
        raise NlptoolError("the model has no nn.Linear layer; pass a Sequential such as Linear, Tanh, Linear")
    dtypes = {p.dtype for linear, _ in pairs for p in linear.parameters()}
    if len(dtypes) > 1:
        raise NlptoolError(
            f"the model mixes parameter dtypes {sorted(str(d) for d in dtypes)}; convert it with model.double()"
        )
    out: list[tuple[nn.Linear, nn.Module]] = []
    for linear, acts in pairs:
        if not acts:
            act: nn.Module = nn.Identity()
        elif len(acts) == 1:
            act = acts[0]
        else:
            act = nn.Sequential(*acts)
        out.append((linear, act))
    return out


# --------------------------------------------------------------------------------------------------------------------
# internals


def _hiddens(layers: Sequence[_Layer], x: torch.Tensor) -> list[torch.Tensor]:
    """Return ``[h⁽¹⁾, ..., h⁽ˡ⁺¹⁾]`` for ``x`` of shape ``(..., d_in)``."""
    hs = [x]
    h = x
    for weight, bias, act in layers:
        z = h @ weight.T
        if bias is not None:
            z = z + bias
        h = act(z)
        hs.append(h)
    return hs


def _scalar_fn(f: str | Callable[[torch.Tensor], torch.Tensor], d_out: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Turn the ``f`` option into a function of one sample's output vector ``h⁽ˡ⁺¹⁾`` returning a 0-dim tensor."""
    if callable(f):
        user = f

        def wrapped(h: torch.Tensor) -> torch.Tensor:
            value = user(h)
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise NlptoolError(
                    f"the f callable must return a scalar tensor for one sample's output vector, got {shape}; "
                    "reduce the output to a single number (e.g. h.sum())"
                )
            return value.reshape(())

        return wrapped
    if f == "output":
        if d_out != 1:
            raise NlptoolError(
                f"f='output' needs a scalar network output, but the last layer has {d_out} outputs; "
                "use f='sqnorm' (squared norm of the output) or f='sum', or pass a callable"
            )
        return lambda h: h[0]
    if f == "sqnorm":
        return lambda h: (h * h).sum()
    if f == "sum":
        return lambda h: h.sum()
    raise NlptoolError(f"unknown f {f!r}; choose one of {', '.join(_F_CHOICES)} or pass a callable")


def _param_dict(layers: Sequence[_Layer]) -> dict[str, torch.Tensor]:
    params: dict[str, torch.Tensor] = {}
    for t, (weight, bias, _) in enumerate(layers):
        params[f"W{t}"] = weight
        if bias is not None:
            params[f"b{t}"] = bias
    return params


def _grad_norms(
    layers: Sequence[_Layer], scalar: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, vectorize: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample ``‖∇ₓf‖²`` (n,), ``‖∇_{W⁽ᵗ⁾} f‖²_F`` (n, l) and ``‖∇_{b⁽ᵗ⁾} f‖²`` (n, l) by autograd."""
    acts = [act for _, _, act in layers]
    has_bias = [bias is not None for _, bias, _ in layers]
    params = _param_dict(layers)

    def f_of(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        rebuilt = [(p[f"W{t}"], p.get(f"b{t}"), act) for t, act in enumerate(acts)]
        return scalar(_hiddens(rebuilt, xi)[-1])

    both = grad(f_of, argnums=(0, 1))

    def norms(gp: dict[str, torch.Tensor], gx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        lead = gx.shape[:-1]
        gw = torch.stack([gp[f"W{t}"].pow(2).sum(dim=(-2, -1)) for t in range(len(acts))], dim=-1)
        gb = torch.stack(
            [gp[f"b{t}"].pow(2).sum(dim=-1) if has_bias[t] else gx.new_zeros(lead) for t in range(len(acts))], dim=-1
        )
        return gx.pow(2).sum(dim=-1), gw, gb

    out_x, out_w, out_b = [], [], []
    for start in range(0, x.shape[0], _CHUNK):
        chunk = x[start : start + _CHUNK]
        if vectorize:
            gp, gx = vmap(both, in_dims=(None, 0))(params, chunk)
            nx, nw, nb = norms(gp, gx)
        else:
            per = [norms(*both(params, xi)) for xi in chunk]
            nx, nw, nb = (torch.stack(parts) for parts in zip(*per, strict=True))
        out_x.append(nx)
        out_w.append(nw)
        out_b.append(nb)
    return torch.cat(out_x), torch.cat(out_w), torch.cat(out_b)


def _jac_spec_exact(layers: Sequence[_Layer], x: torch.Tensor) -> torch.Tensor:
    """``‖∂h⁽ᵗ⁾/∂x‖₂`` for t = 2..l as an (n, l-1) tensor, from full per-sample Jacobians."""
    inner = list(layers[:-1])

    def hidden_tail(xi: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(_hiddens(inner, xi)[1:])

    jac = vmap(jacfwd(hidden_tail))
    parts = []
    for start in range(0, x.shape[0], _CHUNK):
        jacs = jac(x[start : start + _CHUNK])
        parts.append(torch.stack([torch.linalg.matrix_norm(j, ord=2) for j in jacs], dim=-1))
    return torch.cat(parts)


def _jac_spec_power(
    layers: Sequence[_Layer], x: torch.Tensor, iters: int, tol: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Power-iteration ``‖∂h⁽ᵗ⁾/∂x‖₂`` for t = 2..l, (n, l-1), and a matching bool tensor of convergence flags.

    The MLP acts on rows independently, so the Jacobian of the batched map ``X ↦ H⁽ᵗ⁾`` is block diagonal: one JVP
    with a tangent of shape (n, d_in) gives every row's ``J v``, and one VJP every row's ``Jᵀ u``.
    """
    n, d_in = x.shape
    sigmas = torch.zeros(n, len(layers) - 1, dtype=x.dtype, device=x.device)
    converged = torch.zeros(n, len(layers) - 1, dtype=torch.bool, device=x.device)
    for k in range(1, len(layers)):
        prefix = list(layers[:k])

        def h_t(xb: torch.Tensor, prefix: list[_Layer] = prefix) -> torch.Tensor:
            return _hiddens(prefix, xb)[-1]

        for start in range(0, n, _CHUNK):
            xb = x[start : start + _CHUNK]
            rows = xb.shape[0]
            _, vjp_fn = vjp(h_t, xb)
            v = torch.randn(rows, d_in, generator=gen, dtype=torch.float64).to(dtype=x.dtype, device=x.device)
            v = v / v.norm(dim=1, keepdim=True)
            rq = torch.zeros(rows, dtype=x.dtype, device=x.device)
            done = torch.zeros(rows, dtype=torch.bool, device=x.device)
            for it in range(iters):
                u = jvp(h_t, (xb,), (v,))[1]
                rq_new = u.pow(2).sum(dim=1)  # Rayleigh quotient vᵀJᵀJv of the unit vector v
                w = vjp_fn(u)[0]
                w_norm = w.norm(dim=1)
                if it > 0:
                    now = (rq_new - rq).abs() <= tol * rq_new
                else:
                    now = torch.zeros_like(done)
                now = now | (rq_new == 0) | (w_norm == 0)
                rq = torch.where(done, rq, rq_new)
                step = ~done & (w_norm > 0)
                v = torch.where(step.unsqueeze(1), w / w_norm.clamp_min(torch.finfo(x.dtype).tiny).unsqueeze(1), v)
                done = done | now
                if bool(done.all()):
                    break
            sigmas[start : start + rows, k - 1] = rq.clamp_min(0).sqrt()
            converged[start : start + rows, k - 1] = done
    return sigmas, converged


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` with ``0/0 = 0`` and ``positive/0 = +inf`` (never NaN) for non-negative inputs."""
    zero_den = den == 0
    quotient = num / torch.where(zero_den, torch.ones_like(den), den)
    return torch.where(zero_den, torch.where(num == 0, torch.zeros_like(num), torch.full_like(num, math.inf)), quotient)


# --------------------------------------------------------------------------------------------------------------------
# public check


def check_inequality(
    model: nn.Sequential,
    x: Any,
    *,
    f: str | Callable[[torch.Tensor], torch.Tensor] = "output",
    spectral: str = "auto",
    power_iters: int = 200,
    power_tol: float = 1e-10,
    exact_max_dim: int = 256,
    seed: int = 0,
) -> list[dict]:
    r"""Evaluate ``‖∇ₓf‖² Σₜ (1 + ‖h⁽ᵗ⁾‖²)/(‖W⁽ᵗ⁾‖₂² ‖J⁽ᵗ⁾‖₂²) ≤ ‖∇_θ f‖²`` for every input row.

    All gradients are per-sample autograd gradients (``torch.func.grad`` under ``vmap``); ``∇_θ f`` covers every
    Linear weight and bias of the model. See the module docstring for the derivation, the per-layer split
    (``lhs_weight ≤ grad_w_sq`` and ``lhs_bias ≤ grad_b_sq`` each hold) and the 0/0 rule.

    Args:
        model: an ``nn.Sequential`` of Linear layers and elementwise activations (see :func:`mlp_layers`).
        x: inputs of shape (n, d_in) (a 1-D tensor is one row); cast to the model's dtype and device.
        f: the scalar of the output ``h⁽ˡ⁺¹⁾``: ``"output"`` (the output itself; needs one output unit),
            ``"sqnorm"`` (``‖h⁽ˡ⁺¹⁾‖²``), ``"sum"`` (sum of the outputs), or a callable mapping one sample's output
            vector (shape (d_out,)) to a scalar tensor. A callable should use torch operations only (it runs under
            ``torch.func.vmap``); if vmap fails on it, rows are processed one at a time instead.
        spectral: how ``‖J⁽ᵗ⁾‖₂`` is computed: ``"exact"`` (full Jacobian, ``matrix_norm(ord=2)``), ``"power"``
            (Jacobian-free power iteration on ``JᵀJ`` with JVPs/VJPs), ``"auto"`` (exact when
            ``d_in ≤ exact_max_dim``, else power).
        power_iters: maximum power iterations per layer.
        power_tol: stop when the Rayleigh quotient changes by at most ``power_tol`` relative to itself.
        exact_max_dim: the largest ``d_in`` for which ``"auto"`` builds full Jacobians.
        seed: seed of the power-iteration start vectors.

    Returns:
        One dict per row with ``lhs``, ``rhs`` (= ``grad_theta_sq``), ``ratio`` (``lhs/rhs``, 0.0 when both are 0),
        ``holds`` (``lhs ≤ rhs·(1+1e-9) + 1e-300``; None for an overflow row), ``status`` (``"holds"``,
        ``"fails"`` or ``"overflow"``: some term is not finite in the model's dtype — an ``h⁽ᵗ⁾``, gradient or
        product overflowed — so the row is no verdict on the inequality), ``grad_x_sq`` (``‖∇ₓf‖²``),
        ``grad_theta_sq`` (``‖∇_θ f‖²``), ``tightest_layer`` (1-based layer with the largest layer ratio; None for an
        overflow row) and ``layers``: one dict per layer ``t``
        with ``h_sq`` (``‖h⁽ᵗ⁾‖²``), ``w_spec`` (``‖W⁽ᵗ⁾‖₂``), ``jac_spec`` (``‖J⁽ᵗ⁾‖₂``), ``lhs_weight``
        (``‖∇ₓf‖²‖h⁽ᵗ⁾‖²/(‖W⁽ᵗ⁾‖₂²‖J⁽ᵗ⁾‖₂²)``), ``lhs_bias`` (``‖∇ₓf‖²/(‖W⁽ᵗ⁾‖₂²‖J⁽ᵗ⁾‖₂²)``, 0 without bias),
        ``lhs_term`` (their sum), ``grad_w_sq`` (``‖∇_{W⁽ᵗ⁾} f‖²_F``), ``grad_b_sq`` (``‖∇_{b⁽ᵗ⁾} f‖²``, 0 without
        bias), ``ratio`` (``lhs_term/(grad_w_sq + grad_b_sq)``), ``has_bias`` and ``jac_converged`` (False only when
        power iteration hit ``power_iters`` before ``power_tol``; the estimate is then a lower bound, which makes the
        check conservative).

    Raises:
        NlptoolError: for an unsupported model, non-finite parameters, a wrong input shape or unknown options;
            :class:`RowError` (naming the first such row) for non-finite inputs.
    """
    pairs = mlp_layers(model)
    first = pairs[0][0].weight
    dtype, device = first.dtype, first.device
    if spectral not in _SPECTRAL_CHOICES:
        raise NlptoolError(f"unknown spectral {spectral!r}; choose one of {', '.join(_SPECTRAL_CHOICES)}")
    if int(power_iters) < 1:
        raise NlptoolError(f"power_iters is {power_iters}; it must be at least 1")
    if not power_tol > 0:
        raise NlptoolError(f"power_tol is {power_tol}; it must be positive")

    try:
        xt = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise NlptoolError(f"x could not be turned into a tensor ({exc}); pass an (n, d_in) array of numbers") from exc
    xt = xt.detach().to(dtype=dtype, device=device)
    if xt.dim() == 1:
        xt = xt.unsqueeze(0)
    d_in = pairs[0][0].in_features
    if xt.dim() != 2 or xt.shape[1] != d_in:
        raise NlptoolError(
            f"x has shape {tuple(xt.shape)}, but the model expects (n, {d_in}); "
            f"pass one row of {d_in} numbers per input"
        )
    finite_rows = torch.isfinite(xt).all(dim=1)
    if not bool(finite_rows.all()):
        bad = int((~finite_rows).nonzero()[0, 0])
        raise RowError("x contains NaN or infinite values; clean the input rows", row=bad)
    for t, (lin, _) in enumerate(pairs):
        for name, param in lin.named_parameters():
            if not bool(torch.isfinite(param).all()):
                raise NlptoolError(
                    f"the {name} of Linear layer {t + 1} contains NaN or infinite values; check the model's parameters"
                )
    if xt.shape[0] == 0:
        return []

    layers: list[_Layer] = [
        (lin.weight.detach(), lin.bias.detach() if lin.bias is not None else None, act) for lin, act in pairs
    ]
    scalar = _scalar_fn(f, pairs[-1][0].out_features)
    n, n_layers = xt.shape[0], len(layers)

    with torch.no_grad():
        hs = _hiddens(layers, xt)
    h_sq = torch.stack([h.pow(2).sum(dim=1) for h in hs[:-1]], dim=1)  # (n, l)
    w_spec = torch.stack([torch.linalg.matrix_norm(w, ord=2) for w, _, _ in layers]).to(dtype)  # (l,)

    if callable(f):
        try:
            gx_sq, gw_sq, gb_sq = _grad_norms(layers, scalar, xt, vectorize=True)
        except RuntimeError:
            gx_sq, gw_sq, gb_sq = _grad_norms(layers, scalar, xt, vectorize=False)
    else:
        gx_sq, gw_sq, gb_sq = _grad_norms(layers, scalar, xt, vectorize=True)

    jac_spec = torch.ones(n, n_layers, dtype=dtype, device=device)  # J⁽¹⁾ = I
    jac_ok = torch.ones(n, n_layers, dtype=torch.bool, device=device)
    if n_layers > 1:
        use_exact = spectral == "exact" or (spectral == "auto" and d_in <= exact_max_dim)
        if use_exact:
            jac_spec[:, 1:] = _jac_spec_exact(layers, xt)
        else:
            gen = torch.Generator().manual_seed(int(seed))
            jac_spec[:, 1:], jac_ok[:, 1:] = _jac_spec_power(layers, xt, int(power_iters), float(power_tol), gen)

    # q = ‖∇ₓf‖ / (‖W‖₂ ‖J‖₂), divided step by step; 0/0 -> 0, positive/0 -> inf.
    gx = gx_sq.sqrt().unsqueeze(1).expand(n, n_layers)
    w_full = w_spec.unsqueeze(0).expand(n, n_layers)
    q1 = _safe_div(gx, w_full)
    q = _safe_div(q1, jac_spec)
    # A positive number over an exact zero (roundoff; see the module docstring): lhs is +inf and the row fails.
    breakdown = (((w_full == 0) & (gx > 0)) | ((jac_spec == 0) & (q1 > 0))).any(dim=1)
    q_sq = q * q
    has_bias = torch.tensor([b is not None for _, b, _ in layers], device=device)
    lhs_bias = torch.where(has_bias.unsqueeze(0), q_sq, torch.zeros_like(q_sq))
    lhs_weight = torch.where(h_sq == 0, torch.zeros_like(q_sq), q_sq * h_sq)
    lhs_term = lhs_weight + lhs_bias
    layer_rhs = gw_sq + gb_sq
    layer_ratio = _safe_div(lhs_term, layer_rhs)
    lhs = lhs_term.sum(dim=1)
    rhs = layer_rhs.sum(dim=1)
    ratio = _safe_div(lhs, rhs)
    # Overflow: a quantity the check is built from is not finite (h⁽ᵗ⁾ or a gradient overflowed the dtype, or a
    # product of finite factors did). Such a row is neither a pass nor a failure of the inequality.
    inputs_finite = (
        torch.isfinite(h_sq).all(dim=1)
        & torch.isfinite(jac_spec).all(dim=1)
        & torch.isfinite(gw_sq).all(dim=1)
        & torch.isfinite(gb_sq).all(dim=1)
        & torch.isfinite(gx_sq)
        & bool(torch.isfinite(w_spec).all())
    )
    overflow = ~inputs_finite | torch.isnan(lhs) | torch.isnan(rhs) | torch.isinf(rhs)
    overflow = overflow | (torch.isinf(lhs) & ~breakdown) | torch.isnan(layer_ratio).any(dim=1)
    holds = lhs <= rhs * (1 + _HOLDS_RTOL) + _HOLDS_ATOL
    tightest = layer_ratio.nan_to_num(nan=-1.0).argmax(dim=1) + 1

    columns = {
        "h_sq": h_sq,
        "w_spec": w_spec.unsqueeze(0).expand(n, n_layers),
        "jac_spec": jac_spec,
        "lhs_term": lhs_term,
        "lhs_weight": lhs_weight,
        "lhs_bias": lhs_bias,
        "grad_w_sq": gw_sq,
        "grad_b_sq": gb_sq,
        "ratio": layer_ratio,
    }
    as_lists = {key: value.detach().to(torch.float64).cpu().tolist() for key, value in columns.items()}
    bias_list = has_bias.cpu().tolist()
    ok_list = jac_ok.cpu().tolist()
    lhs_l, rhs_l, ratio_l = lhs.tolist(), rhs.tolist(), ratio.tolist()
    holds_l, gx_l, tight_l = holds.tolist(), gx_sq.tolist(), tightest.tolist()
    overflow_l = overflow.tolist()

    rows: list[dict] = []
    for i in range(n):
        per_layer = []
        for t in range(n_layers):
            entry = {key: float(as_lists[key][i][t]) for key in columns}
            entry["has_bias"] = bool(bias_list[t])
            entry["jac_converged"] = bool(ok_list[i][t])
            per_layer.append(entry)
        over = bool(overflow_l[i])
        status = "overflow" if over else ("holds" if holds_l[i] else "fails")
        rows.append(
            {
                "lhs": float(lhs_l[i]),
                "rhs": float(rhs_l[i]),
                "ratio": float(ratio_l[i]),
                "holds": None if over else bool(holds_l[i]),
                "status": status,
                "grad_x_sq": float(gx_l[i]),
                "grad_theta_sq": float(rhs_l[i]),
                "tightest_layer": None if over else int(tight_l[i]),
                "layers": per_layer,
            }
        )
    return rows


def summarize(rows: list[dict]) -> dict:
    """Aggregate the rows of :func:`check_inequality`.

    Rows whose ``status`` is ``"overflow"`` are counted in ``overflow`` and left out of every other statistic: they
    are neither holding nor violations. (A row without ``status`` is read from its ``holds``.)

    Args:
        rows: the list returned by :func:`check_inequality`.

    Returns:
        ``total`` (all rows), ``holding``, ``violations``, ``overflow`` (counts), ``max_ratio``, ``min_ratio``,
        ``median_ratio`` (over the rows that are not overflow; None when there are none), ``tightest_layer`` (the
        1-based layer most often tightest among those rows; ties go to the lower index; None without such rows) and
        ``tightest_layer_counts`` (list, entry ``t-1`` counts the rows whose tightest layer is ``t``).
    """
    checked = [row for row in rows if _status(row) != "overflow"]
    ratios = [float(row["ratio"]) for row in checked]
    holding = sum(1 for row in checked if _status(row) == "holds")
    n_layers = max((len(row["layers"]) for row in rows), default=0)
    counts = [0] * n_layers
    for row in checked:
        counts[int(row["tightest_layer"]) - 1] += 1
    return {
        "total": len(rows),
        "holding": holding,
        "violations": len(checked) - holding,
        "overflow": len(rows) - len(checked),
        "max_ratio": max(ratios) if ratios else None,
        "min_ratio": min(ratios) if ratios else None,
        "median_ratio": float(statistics.median(ratios)) if ratios else None,
        "tightest_layer": counts.index(max(counts)) + 1 if checked else None,
        "tightest_layer_counts": counts,
    }


def _status(row: dict) -> str:
    status = row.get("status")
    if status is not None:
        return str(status)
    return "holds" if row["holds"] else "fails"
