"""Named-entity recognition with GlobalPointer heads (the package; being split, see :mod:`nlptool.core.ner.data`)."""

from nlptool.core.ner.data import *  # noqa: F403
from nlptool.core.ner.data import (  # noqa: F401
    _FORMAT,
    _FORMAT_VERSION,
    _STAT_COUNTS,
    _align,
    _check_fast,
    _collect,
    _freeze_pooler,
    _int_field,
    _transformer,
    length_batches,
    pad_ids,
)
from nlptool.core.ner.data import __all__ as __all__
