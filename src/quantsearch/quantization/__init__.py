"""Quantizers: one module per family, all following the :class:`Quantizer` interface."""

from __future__ import annotations

from typing import Any

from ..exceptions import InvalidArgumentError
from .base import (
    _NAMED,
    Precision,
    Quantizer,
    parse_precision,
    quantizer_from_config,
    quantizer_names,
    register_quantizer_name,
)
from .binary import BinaryQuantizer
from .blocks import BlockQuantizer
from .learned import LearnedBinaryQuantizer, load_quantizer, save_quantizer
from .lowbit import Int2Quantizer, TernaryQuantizer
from .matryoshka import MatryoshkaQuantizer
from .rabitq import BitPlaneForm, RaBitQQuantizer
from .reduction import PCAQuantizer
from .scalar import FloatQuantizer, ScalarQuantizer

__all__ = [
    "BinaryQuantizer",
    "BitPlaneForm",
    "BlockQuantizer",
    "FloatQuantizer",
    "Int2Quantizer",
    "LearnedBinaryQuantizer",
    "MatryoshkaQuantizer",
    "PCAQuantizer",
    "Precision",
    "Quantizer",
    "RaBitQQuantizer",
    "ScalarQuantizer",
    "TernaryQuantizer",
    "load_quantizer",
    "make_quantizer",
    "parse_precision",
    "quantizer_from_config",
    "quantizer_names",
    "register_quantizer_name",
    "save_quantizer",
]


#: Percentile clipping used when an int8/uint8/int4 tier is named by a string. Measured with
#: all-MiniLM-L6-v2, binary x10 -> int8 rescoring (docs/benchmarks.md): 99.9 kept 99.6-100.1% of
#: float32 NDCG@10 on nfcorpus, scifact, cranfield and cisi; plain min/max 99.2-99.9%.
DEFAULT_PERCENTILE = 99.9


def make_quantizer(spec: Any, *, truncate_dim: int | None = None) -> Quantizer:
    """Build an unfitted quantizer from a precision spelling or pass a :class:`Quantizer` through.

    Strings give the measured defaults: scalar codes use :data:`DEFAULT_PERCENTILE` clipping; names
    registered with :func:`register_quantizer_name` give their family's defaults.
    ``truncate_dim`` wraps the result in :class:`MatryoshkaQuantizer`.
    """
    if isinstance(spec, Quantizer):
        quantizer = spec
    elif isinstance(spec, str) and spec.strip().lower() in _NAMED:
        quantizer = _NAMED[spec.strip().lower()]()
    else:
        try:
            precision = parse_precision(spec)
        except InvalidArgumentError:
            precisions = ", ".join(p.value for p in Precision)
            raise InvalidArgumentError(
                f"unknown precision {spec!r} (and no quantizer of that name); expected a precision "
                f"({precisions}) or a named code ({', '.join(quantizer_names())})"
            ) from None
        if precision is Precision.BINARY:
            quantizer = BinaryQuantizer()
        elif precision is Precision.INT2:
            quantizer = Int2Quantizer()
        elif precision is Precision.TERNARY:
            quantizer = TernaryQuantizer()
        elif precision in (Precision.FLOAT32, Precision.FLOAT16):
            quantizer = FloatQuantizer(precision)
        else:
            quantizer = ScalarQuantizer(precision, percentile=DEFAULT_PERCENTILE)
    if truncate_dim is not None and not isinstance(quantizer, MatryoshkaQuantizer):
        quantizer = MatryoshkaQuantizer(truncate_dim, quantizer)
    return quantizer
