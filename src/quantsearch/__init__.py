"""quantsearch: compressed embedding retrieval.

Binary codes in RAM find candidates by Hamming distance; int8 (or float16) codes memory-mapped
from disk rescore them against the float query; ids and payload live in SQLite.
"""

from __future__ import annotations

from .embed import Embedder
from .exceptions import (
    CorruptIndexError,
    DimensionMismatchError,
    DuplicateIdError,
    IndexLockedError,
    IndexNotFoundError,
    InvalidArgumentError,
    NotFittedError,
    QuantsearchError,
    StorageError,
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
    "Embedder",
    "FloatQuantizer",
    "Index",
    "IndexLockedError",
    "IndexNotFoundError",
    "InvalidArgumentError",
    "MatryoshkaQuantizer",
    "NotFittedError",
    "Precision",
    "Quantizer",
    "QuantsearchError",
    "ScalarQuantizer",
    "SearchResults",
    "StorageError",
    "UnknownIdError",
    "__version__",
    "make_quantizer",
    "parse_precision",
]
