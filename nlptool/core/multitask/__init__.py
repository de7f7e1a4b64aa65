"""Multi-task learning on one shared encoder: gradient combination (:mod:`.combine`) and the trainer (:mod:`.trainer`).

``from nlptool.core.multitask import combine, weights_from_gram, diagnostics, fit_multitask`` and the other public
names of both modules work from here.
"""

from nlptool.core.multitask.combine import (
    LOSS_WEIGHTS,
    MAX_EXACT_TASKS,
    METHODS,
    NORMALIZE,
    Diagnostics,
    _min_norm_enumerate,
    _min_norm_wolfe,
    _nnls_active_set,
    _nnls_enumerate,
    _nnls_kkt_ok,
    _simplex_kkt_ok,
    combine,
    diagnostics,
    gram_matrix,
    loss_norm_weights,
    min_norm_simplex,
    nonneg_least_squares_gram,
    pcgrad_weights,
    weights_from_gram,
)
from nlptool.core.multitask.trainer import (
    COMBINE_METHODS,
    GradientCombiner,
    MultiTaskFit,
    MultiTaskModel,
    VirtualExamples,
    check_combine,
    delta_m,
    fit_multitask,
)

__all__ = [
    "METHODS",
    "LOSS_WEIGHTS",
    "NORMALIZE",
    "MAX_EXACT_TASKS",
    "combine",
    "weights_from_gram",
    "gram_matrix",
    "loss_norm_weights",
    "min_norm_simplex",
    "nonneg_least_squares_gram",
    "pcgrad_weights",
    "diagnostics",
    "Diagnostics",
    "COMBINE_METHODS",
    "GradientCombiner",
    "MultiTaskFit",
    "MultiTaskModel",
    "VirtualExamples",
    "check_combine",
    "delta_m",
    "fit_multitask",
]
_PRIVATE = (  # re-exported for tests that check the solvers' internals
    _min_norm_enumerate,
    _min_norm_wolfe,
    _nnls_active_set,
    _nnls_enumerate,
    _nnls_kkt_ok,
    _simplex_kkt_ok,
)
