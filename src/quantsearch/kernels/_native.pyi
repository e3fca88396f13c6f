# Type stub of the compiled extension (src/quantsearch/kernels/csrc/module.c).
from collections.abc import Sequence

import numpy as np

def isa_supported(isa: int, /) -> bool: ...
def hamming_topk(
    queries: np.ndarray,
    codes: np.ndarray,
    valid: np.ndarray | None,
    k: int,
    isa: int,
    strategy: int,
    nthreads: int,
    block_bytes: int,
    out_dist: np.ndarray,
    out_rows: np.ndarray,
    /,
) -> None: ...
def rescore(
    arrays: Sequence[np.ndarray],
    starts: np.ndarray,
    rows: np.ndarray,
    weights: np.ndarray,
    kind: int,
    offset: int,
    isa: int,
    nthreads: int,
    out: np.ndarray,
    /,
) -> None: ...
def stream_xor(buffer: np.ndarray, isa: int, /) -> int: ...
