"""``nlptool gradcheck``: check the input-gradient / parameter-gradient inequality of MLPs numerically."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

import typer

from nlptool.commands._common import (
    ForceOpt,
    Format,
    FormatOpt,
    HeaderOpt,
    MetricsOutOpt,
    OutputFormatOpt,
    OutputOpt,
    SeedOpt,
    fmt_value,
    print_table,
    progress,
    seed_everything,
    write_metrics,
)
from nlptool.core.errors import InputError, NlptoolError


class Activation(str, Enum):
    tanh = "tanh"
    relu = "relu"
    gelu = "gelu"
    sigmoid = "sigmoid"
    linear = "linear"


class Objective(str, Enum):
    auto = "auto"
    output = "output"
    sqnorm = "sqnorm"
    sum = "sum"


class Spectral(str, Enum):
    auto = "auto"
    exact = "exact"
    power = "power"


class DType(str, Enum):
    float64 = "float64"
    float32 = "float32"


_DEFAULT_LAYERS = "4,16,16,1"


def gradcheck(
    layers: Annotated[
        str | None,
        typer.Option(
            "--layers",
            help="MLP sizes, input first. With --checkpoint the saved shapes are used; a --layers that disagrees "
            "with them is an error.",
            show_default=_DEFAULT_LAYERS,
        ),
    ] = None,
    activation: Annotated[
        Activation, typer.Option("--activation", help="Hidden-layer activation g.")
    ] = Activation.tanh,
    output_activation: Annotated[
        Activation, typer.Option("--output-activation", help="Activation after the last layer.")
    ] = Activation.linear,
    trials: Annotated[
        int, typer.Option("--trials", help="Random networks to build (seeds seed..seed+N-1).", min=1)
    ] = 10,
    inputs: Annotated[
        int, typer.Option("--inputs", help="Random Gaussian inputs per network (without --input).", min=1)
    ] = 8,
    input_scale: Annotated[float, typer.Option("--input-scale", help="Std of the random inputs.", min=0.0)] = 1.0,
    input_file: Annotated[
        str | None,
        typer.Option("--input", "-i", help="Inputs from a CSV/TSV/JSONL file ('-' for stdin) instead of random ones."),
    ] = None,
    field: Annotated[str, typer.Option("--field", help="Field holding each input vector (list).")] = "x",
    columns: Annotated[
        str | None, typer.Option("--columns", help="Input columns instead of a list field: 'x0,x1' or 'x*'.")
    ] = None,
    checkpoint: Annotated[
        str | None,
        typer.Option(
            "--checkpoint",
            help="A torch.save'd nn.Sequential of Linear/activation layers, or its state_dict (uses --activation).",
        ),
    ] = None,
    unsafe_load: Annotated[
        bool,
        typer.Option("--unsafe-load", help="Allow unpickling a whole module from --checkpoint (runs its code)."),
    ] = False,
    objective: Annotated[
        Objective,
        typer.Option(
            "--f",
            help="Scalar f: the output (scalar nets), its squared norm, or its sum. auto: output "
            "for one output, else sqnorm.",
        ),
    ] = Objective.auto,
    spectral: Annotated[
        Spectral,
        typer.Option("--spectral", help="‖∂h/∂x‖₂: exact Jacobian, power iteration (JVP/VJP), or auto by input size."),
    ] = Spectral.auto,
    dtype: Annotated[DType, typer.Option("--dtype", help="Floating-point precision.")] = DType.float64,
    output: OutputOpt = "-",
    output_format: OutputFormatOpt = Format.auto,
    format: FormatOpt = Format.auto,
    header: HeaderOpt = None,
    metrics_out: MetricsOutOpt = None,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
) -> None:
    """Check ‖∇ₓf‖²·Σₜ(1+‖h⁽ᵗ⁾‖²)/(‖W⁽ᵗ⁾‖²‖∂h⁽ᵗ⁾/∂x‖²) ≤ ‖∇_θf‖² on MLPs.

    One output row per (trial, input): lhs, rhs, ratio = lhs/rhs, holds, status, and each layer's terms (weight and
    bias parts). A summary table goes to stderr. Exit 0 when every case holds; 1 when a violation is found, or when
    a case overflowed (status "overflow": a term is not finite in --dtype, so no verdict; the rows are still
    written; use --dtype float64 or smaller inputs).

    Example: nlptool gradcheck --layers 8,32,32,1 --activation relu --trials 20 -o checks.jsonl

    References: Su Jianlin, "输入梯度惩罚与参数梯度惩罚的一个不等式", https://kexue.fm/archives/8796;
    Dherin, Munn and Barrett, "The Geometric Occam's Razor Implicit in Deep Learning", arXiv 2111.15090
    """
    import torch

    from nlptool.core.gradients import build_mlp, check_inequality, mlp_layers, summarize
    from nlptool.core.io import check_output_path, open_writer

    check_output_path(output, force)
    check_output_path(metrics_out, force)
    seed_everything(seed)
    torch_dtype = torch.float64 if dtype == DType.float64 else torch.float32
    sizes = _parse_layers(layers or _DEFAULT_LAYERS)

    if checkpoint is not None:
        model = _load_checkpoint(checkpoint, activation.value, unsafe_load).to(torch_dtype)
        pairs = mlp_layers(model)
        d_in = pairs[0][0].in_features
        d_out = pairs[-1][0].out_features
        saved = [d_in] + [lin.out_features for lin, _ in pairs]
        if layers is not None and sizes != saved:
            raise typer.BadParameter(
                f"'{layers}' disagrees with the layer sizes of --checkpoint {checkpoint}, "
                f"'{','.join(map(str, saved))}'; leave --layers out (the checkpoint gives the shapes) or match them",
                param_hint="--layers",
            )
        models = [model]
    else:
        d_in, d_out = sizes[0], sizes[-1]
        models = [
            build_mlp(
                sizes, activation.value, output_activation=output_activation.value, seed=seed + t, dtype=torch_dtype
            )
            for t in range(trials)
        ]
    if input_file is not None:
        x_all, lines = _read_inputs(input_file, field, columns, fmt_value(format), header, d_in)
        x_all = x_all.to(torch_dtype)
    else:
        lines = None
    f_name = objective.value
    if f_name == "auto":
        f_name = "output" if d_out == 1 else "sqnorm"

    all_rows: list[dict[str, Any]] = []
    with open_writer(output, fmt_value(output_format), force=force) as writer:
        with progress("gradcheck", total=len(models), unit="nets") as advance:
            for t, model in enumerate(models):
                if input_file is None:
                    gen = torch.Generator().manual_seed(seed * 1_000_003 + t)
                    x = torch.randn(inputs, d_in, generator=gen, dtype=torch.float64).to(torch_dtype) * input_scale
                    if not bool(torch.isfinite(x).all()):
                        raise NlptoolError(
                            f"--input-scale {input_scale:g} makes random inputs that overflow {dtype.value}; "
                            "pass a smaller --input-scale" + (" or --dtype float64" if dtype != DType.float64 else "")
                        )
                else:
                    x = x_all
                rows = check_inequality(model, x, f=f_name, spectral=spectral.value, seed=seed)
                for i, row in enumerate(rows):
                    out = {"trial": t, "input": i}
                    if lines is not None:
                        out["line"] = lines[i]
                    out.update(row)
                    writer.write(out)
                    all_rows.append(row)
                advance(1)

    summary = summarize(all_rows)
    _print_summary(summary)
    params = {
        "layers": sizes if checkpoint is None else None,
        "activation": activation.value,
        "output_activation": output_activation.value,
        "trials": len(models),
        "f": f_name,
        "spectral": spectral.value,
        "dtype": dtype.value,
        "checkpoint": checkpoint,
    }
    inputs_used = [p for p in (input_file, checkpoint) if p]
    write_metrics(metrics_out, summary, force=force, seed=seed, inputs=inputs_used, params=params)
    _raise_for_verdict(summary, dtype.value)


def _raise_for_verdict(summary: dict[str, Any], dtype: str) -> None:
    """Exit status 1 (an NlptoolError) unless every case was checked and holds."""
    total = summary.get("total", 0)
    violations = summary.get("violations", 0)
    overflow = summary.get("overflow", 0)
    also = f'; {overflow} more overflowed (status "overflow")' if overflow else ""
    if violations:
        raise NlptoolError(
            f"the inequality fails in {violations} of {total} cases (largest ratio "
            f'{float(summary["max_ratio"])!r}){also}; see the rows with "status": "fails" in the output'
        )
    if overflow:
        fix = "use --dtype float64 or smaller inputs (--input-scale, or rescale --input)"
        if dtype == "float64":
            fix = "use smaller inputs (--input-scale, or rescale --input)"
        which = f"{overflow} of {total} cases"
        if overflow == total:
            which = "the one case" if total == 1 else f"all {total} cases"
        held = "" if overflow == total else f" (the other {summary.get('holding', 0)} hold)"
        raise NlptoolError(
            f"no verdict for {which}{held}: a term overflowed {dtype} (infinite or NaN), see the rows with "
            f'"status": "overflow"; {fix}'
        )


def _parse_layers(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"'{text}' is not a comma-separated list of integers", param_hint="--layers") from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise typer.BadParameter("need at least two positive sizes, e.g. 4,16,1", param_hint="--layers")
    return sizes


def _print_summary(summary: dict[str, Any]) -> None:
    keys = ["total", "holding", "violations", "overflow", "max_ratio", "median_ratio", "min_ratio", "tightest_layer"]
    rows = [[k, summary[k]] for k in keys if k in summary]
    print_table("gradcheck summary", ["", "value"], rows)


def _load_checkpoint(path: str, activation: str, unsafe: bool) -> Any:
    """A Sequential from a saved module (``--unsafe-load``) or a state_dict of Linear layers ('N.weight', 'N.bias')."""
    import pickle
    from pathlib import Path

    import torch
    from torch import nn

    from nlptool.core.gradients import ACTIVATIONS

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


def _read_inputs(path: str, field: str, columns: str | None, fmt: str | None, header: bool | None, d_in: int):
    import math

    import torch

    from nlptool.commands._distributions import DistributionLayout, choose_layout, read_row
    from nlptool.core.io import read_records

    vectors, lines = [], []
    with read_records(path, fmt, header=header) as reader:
        if columns or reader.fieldnames is None or field in reader.fieldnames:
            layout = choose_layout(reader.fieldnames, field, columns, path=path)
        else:  # CSV without a list column and no --columns: every column is an input
            layout = DistributionLayout(None, list(reader.fieldnames))
        for record in reader:
            vec = read_row(record, layout, path)
            for j, value in enumerate(vec):
                if not math.isfinite(value):
                    raise InputError(
                        f"{'value ' + str(j) + ' is ' if layout.columns is None else ''}{value!r}, not a finite "
                        "number; fix or drop the row (gradcheck needs finite inputs)",
                        path=path,
                        line=record.line,
                        field=layout.field if layout.columns is None else layout.columns[j],
                    )
            if len(vec) != d_in:
                raise InputError(
                    f"input has {len(vec)} values but the network takes {d_in}",
                    path=path,
                    line=record.line,
                    field=layout.field,
                )
            vectors.append(vec)
            lines.append(record.line)
    if not vectors:
        raise NlptoolError(f"no rows in {'<stdin>' if path == '-' else path}; give --input at least one input vector")
    return torch.tensor(vectors, dtype=torch.float64), lines
