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


# The command's options (help texts are the --help reference).
LayersOpt = Annotated[
    str | None,
    typer.Option(
        "--layers",
        help="MLP sizes, input first. With --checkpoint the saved shapes are used; a --layers that disagrees "
        "with them is an error.",
        show_default=_DEFAULT_LAYERS,
    ),
]
ActivationOpt = Annotated[Activation, typer.Option("--activation", help="Hidden-layer activation g.")]
OutputActivationOpt = Annotated[
    Activation, typer.Option("--output-activation", help="Activation after the last layer.")
]
TrialsOpt = Annotated[int, typer.Option("--trials", help="Random networks to build (seeds seed..seed+N-1).", min=1)]
InputsOpt = Annotated[
    int, typer.Option("--inputs", help="Random Gaussian inputs per network (without --input).", min=1)
]
InputScaleOpt = Annotated[float, typer.Option("--input-scale", help="Std of the random inputs.", min=0.0)]
InputFileOpt = Annotated[
    str | None,
    typer.Option("--input", "-i", help="Inputs from a CSV/TSV/JSONL file ('-' for stdin) instead of random ones."),
]
FieldOpt = Annotated[str, typer.Option("--field", help="Field holding each input vector (list).")]
ColumnsOpt = Annotated[
    str | None, typer.Option("--columns", help="Input columns instead of a list field: 'x0,x1' or 'x*'.")
]
CheckpointOpt = Annotated[
    str | None,
    typer.Option(
        "--checkpoint",
        help="A torch.save'd nn.Sequential of Linear/activation layers, or its state_dict (uses --activation).",
    ),
]
UnsafeLoadOpt = Annotated[
    bool,
    typer.Option("--unsafe-load", help="Allow unpickling a whole module from --checkpoint (runs its code)."),
]
ObjectiveOpt = Annotated[
    Objective,
    typer.Option(
        "--f",
        help="Scalar f: the output (scalar nets), its squared norm, or its sum. auto: output "
        "for one output, else sqnorm.",
    ),
]
SpectralOpt = Annotated[
    Spectral,
    typer.Option("--spectral", help="‖∂h/∂x‖₂: exact Jacobian, power iteration (JVP/VJP), or auto by input size."),
]
DTypeOpt = Annotated[DType, typer.Option("--dtype", help="Floating-point precision.")]


def gradcheck(
    layers: LayersOpt = None,
    activation: ActivationOpt = Activation.tanh,
    output_activation: OutputActivationOpt = Activation.linear,
    trials: TrialsOpt = 10,
    inputs: InputsOpt = 8,
    input_scale: InputScaleOpt = 1.0,
    input_file: InputFileOpt = None,
    field: FieldOpt = "x",
    columns: ColumnsOpt = None,
    checkpoint: CheckpointOpt = None,
    unsafe_load: UnsafeLoadOpt = False,
    objective: ObjectiveOpt = Objective.auto,
    spectral: SpectralOpt = Spectral.auto,
    dtype: DTypeOpt = DType.float64,
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
    from nlptool.core.gradients import check_inequality, mlp_layers, summarize
    from nlptool.core.io import check_output_path, open_writer

    check_output_path(output, force)
    check_output_path(metrics_out, force)
    seed_everything(seed)
    torch_dtype = _torch_dtype(dtype)
    sizes = _parse_layers(layers or _DEFAULT_LAYERS)
    models = _networks(layers, sizes, checkpoint, unsafe_load, activation, output_activation, trials, seed, torch_dtype)
    pairs = mlp_layers(models[0])
    d_in, d_out = pairs[0][0].in_features, pairs[-1][0].out_features
    x_all, lines = None, None
    if input_file is not None:
        x_all, lines = _read_inputs(input_file, field, columns, fmt_value(format), header, d_in)
        x_all = x_all.to(torch_dtype)
    f_name = objective.value
    if f_name == "auto":
        f_name = "output" if d_out == 1 else "sqnorm"

    all_rows: list[dict[str, Any]] = []
    with open_writer(output, fmt_value(output_format), force=force) as writer:
        with progress("gradcheck", total=len(models), unit="nets") as advance:
            for t, model in enumerate(models):
                x = x_all if x_all is not None else _random_inputs(inputs, d_in, seed, t, input_scale, dtype)
                rows = check_inequality(model, x, f=f_name, spectral=spectral.value, seed=seed)
                for i, row in enumerate(rows):
                    writer.write({"trial": t, "input": i, **({"line": lines[i]} if lines else {}), **row})
                all_rows += rows
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


def _networks(
    layers: str | None,
    sizes: list[int],
    checkpoint: str | None,
    unsafe_load: bool,
    activation: Activation,
    output_activation: Activation,
    trials: int,
    seed: int,
    dtype: Any,
) -> list[Any]:
    """The networks to check: the --checkpoint's (whose shapes --layers, if given, must match), else ``trials``
    random MLPs of ``sizes`` seeded seed, seed+1, ..."""
    from nlptool.core.gradients import build_mlp, load_checkpoint, mlp_layers

    if checkpoint is None:
        return [
            build_mlp(sizes, activation.value, output_activation=output_activation.value, seed=seed + t, dtype=dtype)
            for t in range(trials)
        ]
    model = load_checkpoint(checkpoint, activation.value, unsafe=unsafe_load).to(dtype)
    pairs = mlp_layers(model)
    saved = [pairs[0][0].in_features] + [lin.out_features for lin, _ in pairs]
    if layers is not None and sizes != saved:
        raise typer.BadParameter(
            f"'{layers}' disagrees with the layer sizes of --checkpoint {checkpoint}, "
            f"'{','.join(map(str, saved))}'; leave --layers out (the checkpoint gives the shapes) or match them",
            param_hint="--layers",
        )
    return [model]


def _random_inputs(n: int, d_in: int, seed: int, trial: int, scale: float, dtype: DType) -> Any:
    """The random inputs of network ``trial`` (core.gradients.random_inputs); an overflow of ``dtype`` is an error."""
    import torch

    from nlptool.core.gradients import random_inputs

    x = random_inputs(n, d_in, seed=seed, trial=trial, scale=scale, dtype=_torch_dtype(dtype))
    if not bool(torch.isfinite(x).all()):
        raise NlptoolError(
            f"--input-scale {scale:g} makes random inputs that overflow {dtype.value}; "
            "pass a smaller --input-scale" + (" or --dtype float64" if dtype != DType.float64 else "")
        )
    return x


def _torch_dtype(dtype: DType) -> Any:
    import torch

    return torch.float64 if dtype == DType.float64 else torch.float32


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
