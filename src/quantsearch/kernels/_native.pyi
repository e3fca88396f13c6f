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
def nearest_blocks(
    y: np.ndarray, first: int, centroids_t: np.ndarray, half: np.ndarray, out: np.ndarray, /
) -> None: ...
def scatter_add_rows(
    src: np.ndarray, src_offsets: np.ndarray, dst_rows: np.ndarray, dst: np.ndarray, /
) -> None: ...
def planes_topk(
    codes: np.ndarray,
    valid: np.ndarray | None,
    k: int,
    planes: int,
    dim: int,
    weights: np.ndarray,
    query_bits: int,
    query_planes: np.ndarray | None,
    lo: np.ndarray,
    delta: np.ndarray,
    plane_coef: np.ndarray,
    row_scale: np.ndarray | None,
    row_bias: np.ndarray | None,
    query_offset: np.ndarray,
    isa: int,
    strategy: int,
    nthreads: int,
    block_bytes: int,
    and_term: bool,
    out_scores: np.ndarray,
    out_rows: np.ndarray,
    /,
) -> None: ...
def nibble_topk(
    codes: np.ndarray,
    valid: np.ndarray | None,
    k: int,
    layout: int,
    luts: np.ndarray,
    lo: np.ndarray,
    delta: np.ndarray,
    row_scale: np.ndarray | None,
    scale_at: int,
    row_bias: np.ndarray | None,
    query_offset: np.ndarray,
    isa: int,
    nthreads: int,
    block_bytes: int,
    out_scores: np.ndarray,
    out_rows: np.ndarray,
    /,
) -> None: ...
def blocks_topk(
    codes: np.ndarray,
    valid: np.ndarray | None,
    k: int,
    weights: np.ndarray,
    kind: int,
    isa: int,
    nthreads: int,
    out_scores: np.ndarray,
    out_rows: np.ndarray,
    /,
) -> None: ...
def nibble_scan(
    codes: np.ndarray,
    valid: np.ndarray | None,
    k: int,
    layout: int,
    queries: np.ndarray,
    levels: np.ndarray,
    row_scale: np.ndarray | None,
    scale_at: int,
    row_bias: np.ndarray | None,
    query_offset: np.ndarray | None,
    score_bias: np.ndarray | None,
    isa: int,
    nthreads: int,
    block_bytes: int,
    out_scores: np.ndarray,
    out_rows: np.ndarray,
    /,
) -> None: ...
def table_topk(
    codes: np.ndarray,
    valid: np.ndarray | None,
    k: int,
    tables: np.ndarray,
    row_scale: np.ndarray | None,
    row_bias: np.ndarray | None,
    query_offset: np.ndarray,
    nthreads: int,
    block_bytes: int,
    out_scores: np.ndarray,
    out_rows: np.ndarray,
    /,
) -> None: ...
def willneed_rows(
    bases: np.ndarray,
    nrows: np.ndarray,
    starts: np.ndarray,
    row_bytes: int,
    rows: np.ndarray,
    bitmaps: list[np.ndarray | None] | None,
    sample: int = 0,
    /,
) -> tuple[int, int]: ...
def thread_work_bytes(value: int = -1, /) -> int: ...
def ivf_probe(
    queries: np.ndarray,
    query_bits: np.ndarray | None,
    centroids: np.ndarray,
    scale: np.ndarray,
    centroid_bits: np.ndarray | None,
    counts: np.ndarray | None,
    nprobe: int,
    want: int,
    shortlist: int,
    isa: int,
    nthreads: int,
    out: np.ndarray,
    /,
) -> None: ...
def ivf_scan(
    queries: np.ndarray,
    codes: np.ndarray,
    n_rows: int,
    order: np.ndarray,
    offsets: np.ndarray,
    probes: np.ndarray,
    valid: np.ndarray | None,
    k: int,
    isa: int,
    nthreads: int,
    out_dist: np.ndarray,
    out_rows: np.ndarray,
    /,
) -> None: ...
