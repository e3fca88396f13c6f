"""quantsearch: compressed embedding retrieval.

Binary codes in RAM find candidates by Hamming distance; int8 (or float16) codes memory-mapped
from disk rescore them against the float query; ids and payload live in SQLite.
"""

from __future__ import annotations

from .exceptions import (
    CorruptIndexError,
    DimensionMismatchError,
    DuplicateIdError,
    IndexNotFoundError,
    InvalidArgumentError,
    NotFittedError,
    QuantsearchError,
    UnknownIdError,
)
from .index import DEFAULT_OVERSAMPLING, Index
from .quantization import (
    BinaryQuantizer,
    FloatQuantizer,
    MatryoshkaQuantizer,
    Precision,
    Quantizer,
    ScalarQuantizer,
    make_quantizer,
    parse_precision,
)
from .results import SearchResults

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_OVERSAMPLING",
    "BinaryQuantizer",
    "CorruptIndexError",
    "DimensionMismatchError",
    "DuplicateIdError",
    "FloatQuantizer",
    "Index",
    "IndexNotFoundError",
    "InvalidArgumentError",
    "MatryoshkaQuantizer",
    "NotFittedError",
    "Precision",
    "Quantizer",
    "QuantsearchError",
    "ScalarQuantizer",
    "SearchResults",
    "UnknownIdError",
    "__version__",
    "make_quantizer",
    "parse_precision",
]
