"""Reference kernels in plain numpy: blocked Hamming top-k, row gathering, gather + dot.

Scans stream over the codes in blocks and merge a running top-k, so memory stays bounded by the
block size whatever N is; no (n_queries x N) matrix is ever built.
"""

from __future__ import annotations

import functools

import numpy as np

#: distance reported for padding slots (k larger than the number of live codes)
PAD_DISTANCE = np.iinfo(np.int32).max

# work-array budget per block (queries x rows x words x 8 bytes)
_BLOCK_BYTES = 8 << 20


def _word_view(codes: np.ndarray) -> np.ndarray:
    """View packed uint8 codes (n, nb) as the widest unsigned words that divide nb."""
    nb = codes.shape[1]
    for dtype in (np.uint64, np.uint32, np.uint16):
        size = np.dtype(dtype).itemsize
        if nb % size == 0 and codes.flags.c_contiguous:
            return codes.view(dtype)
    return codes


def hamming_distances(queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """All pairwise Hamming distances (nq, n) int32 of packed uint8 codes. For small inputs and tests."""
    q, c = _word_view(np.ascontiguousarray(queries)), _word_view(np.ascontiguousarray(codes))
    out = np.empty((q.shape[0], c.shape[0]), np.int32)
    for i in range(q.shape[0]):
        out[i] = np.bitwise_count(c ^ q[i]).sum(axis=1, dtype=np.int32)
    return out


def hamming_topk(
    queries: np.ndarray,
    codes: np.ndarray,
    k: int,
    *,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact Hamming top-k of packed codes, ties broken by the smaller row index.

    Parameters
    ----------
    queries : ndarray of shape (nq, nb), uint8
        Packed query codes.
    codes : ndarray of shape (n, nb), uint8
        Packed database codes.
    k : int
        Neighbours per query (>= 1). When fewer than ``k`` valid codes exist the tail is padded with
        row ``-1`` and distance :data:`PAD_DISTANCE`.
    valid : ndarray of shape (n,), bool, optional
        Rows to consider (``False`` = deleted).

    Returns
    -------
    distances : ndarray of shape (nq, k), int32, ascending
    rows : ndarray of shape (nq, k), int64
    """
    nq, nb = queries.shape
    n = codes.shape[0]
    qw, cw = _word_view(np.ascontiguousarray(queries)), _word_view(codes)
    words = cw.shape[1] if n else 1
    invalid_distance = nb * 8 + 1  # larger than any real distance
    # a unique int64 key per (distance, row) makes argpartition exact and tie-aware
    base = np.int64(max(n, 1))
    best = np.full((nq, k), np.iinfo(np.int64).max, np.int64)
    q_chunk = max(1, min(nq, 64))
    rows_per_block = max(256, _BLOCK_BYTES // (q_chunk * words * 8))
    for q0 in range(0, nq, q_chunk):
        qs = qw[q0 : q0 + q_chunk]
        running = best[q0 : q0 + q_chunk]
        for r0 in range(0, n, rows_per_block):
            block = cw[r0 : r0 + rows_per_block]
            dist = np.bitwise_count(block[None, :, :] ^ qs[:, None, :]).sum(axis=2, dtype=np.int64)
            if valid is not None:
                dist[:, ~valid[r0 : r0 + block.shape[0]]] = invalid_distance
            keys = dist * base + np.arange(r0, r0 + block.shape[0], dtype=np.int64)
            merged = np.concatenate([running, keys], axis=1)
            if merged.shape[1] > k:
                part = np.argpartition(merged, k - 1, axis=1)[:, :k]
                merged = np.take_along_axis(merged, part, axis=1)
            running = merged
        best[q0 : q0 + q_chunk] = running
    best.sort(axis=1)
    distances = best // base
    rows = best % base
    pad = (best == np.iinfo(np.int64).max) | (distances >= invalid_distance)
    rows[pad] = -1
    distances = np.where(pad, PAD_DISTANCE, distances).astype(np.int32)
    return distances, rows


def gather_rows(arrays: list[np.ndarray], starts: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Read the given global rows from a list of per-segment arrays (memory maps included).

    Parameters
    ----------
    arrays : list of ndarray of shape (n_i, width)
        Segment arrays in row order; ``starts[i]`` is the first global row of ``arrays[i]``.
    starts : ndarray of shape (n_segments,), int64
    rows : ndarray of shape (m,), int64
        Global rows, all valid (no padding).

    Returns
    -------
    ndarray of shape (m, width): only these rows are read from disk, in ascending order per
    segment so that the page cache sees sequential access.
    """
    width = arrays[0].shape[1]
    out = np.empty((rows.shape[0], width), arrays[0].dtype)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    seg = np.searchsorted(starts, sorted_rows, side="right") - 1
    bounds = np.searchsorted(seg, np.arange(len(arrays) + 1))
    for i, array in enumerate(arrays):
        lo, hi = bounds[i], bounds[i + 1]
        if lo < hi:
            out[order[lo:hi]] = array[sorted_rows[lo:hi] - starts[i]]
    return out


# bound on the float32 work arrays of one dot_rows chunk (rows x dim, twice)
_DOT_CHUNK_BYTES = 32 << 20


def _code_values(codes: np.ndarray, dim: int, offset: int, nibbles: bool) -> np.ndarray:
    """Stored values of gathered code rows as float32 (m, dim), plus ``offset`` for integer codes."""
    if nibbles:
        levels = np.empty((codes.shape[0], codes.shape[1] * 2), np.int32)
        levels[:, 0::2] = codes & 0x0F  # even dimension in the low nibble
        levels[:, 1::2] = codes >> 4
        return (levels[:, :dim] + offset).astype(np.float32)
    if codes.dtype.kind in "iu":
        return (codes.astype(np.int32) + offset).astype(np.float32)
    return codes.astype(np.float32)


def dot_rows(
    arrays: list[np.ndarray],
    starts: np.ndarray,
    rows: np.ndarray,
    weights: np.ndarray,
    *,
    offset: int = 0,
    nibbles: bool = False,
) -> np.ndarray:
    """Reference of the fused gather + dot: see :func:`quantsearch.kernels.dot_rows`.

    Gathers only the referenced rows (query chunk by query chunk, so memory stays bounded) and
    returns scores (nq, c) float32, nan where ``rows`` is -1.
    """
    nq, c = rows.shape
    dim = weights.shape[1]
    out = np.full((nq, c), np.nan, np.float32)
    chunk = max(1, _DOT_CHUNK_BYTES // max(1, c * dim * 8))
    for q0 in range(0, nq, chunk):
        block = rows[q0 : q0 + chunk]
        present = block >= 0
        if not present.any():
            continue
        values = _code_values(gather_rows(arrays, starts, block[present]), dim, offset, nibbles)
        owner = np.nonzero(present)[0]  # query of each gathered row, within the chunk
        sums = np.einsum("md,md->m", values, weights[q0 : q0 + chunk][owner], dtype=np.float32)
        out[q0 : q0 + chunk][present] = sums
    return out


# ---------------------------------------------------------------- float query x bit-plane codes


def quantize_weights(weights: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-query uniform quantization behind the popcount estimate of :func:`planes_topk`.

    The rule (every backend uses these exact levels): in float64, ``lo = min_j w_j``,
    ``delta = (max_j w_j - lo) / (2**bits - 1)`` and ``u_j = floor((w_j - lo) / delta + 0.5)``
    (round half up) clipped to ``[0, 2**bits - 1]``; a constant query has ``delta = 0`` and
    ``u = 0``. Then ``|w_j - (lo + delta * u_j)| <= delta / 2``.

    Parameters
    ----------
    weights : ndarray of shape (nq, d), float32
    bits : int
        Bits per level, 1 to 8.

    Returns
    -------
    lo : ndarray of shape (nq,), float64
    delta : ndarray of shape (nq,), float64
    levels : ndarray of shape (nq, d), uint8
    """
    w = weights.astype(np.float64)
    nq = w.shape[0]
    if w.shape[1] == 0 or nq == 0:
        return np.zeros(nq), np.zeros(nq), np.zeros(w.shape, np.uint8)
    lo = w.min(axis=1)
    top = (1 << bits) - 1
    delta = (w.max(axis=1) - lo) / top
    safe = np.where(delta > 0, delta, 1.0)
    levels = np.floor((w - lo[:, None]) / safe[:, None] + 0.5)
    levels = np.where(delta[:, None] > 0, np.clip(levels, 0, top), 0).astype(np.uint8)
    return lo, delta, levels


def level_planes(levels: np.ndarray, bits: int, dim: int) -> np.ndarray:
    """Bit planes of quantized levels, packed like the codes: (nq, bits, ceil(dim / 8)) uint8,
    plane ``j`` holding bit ``j`` of every level."""
    shifts = np.arange(bits, dtype=np.uint8)[None, :, None]
    return np.packbits((levels[:, None, :dim] >> shifts) & 1, axis=2)


def score_keys(scores: np.ndarray) -> np.ndarray:
    """uint32 keys of float32 scores that sort ascending as the scores sort descending (-0 == +0):
    the order of the native heaps."""
    bits = (scores.astype(np.float32) + np.float32(0.0)).view(np.uint32)
    return np.where(bits & np.uint32(0x80000000), bits, bits ^ np.uint32(0x7FFFFFFF)).astype(np.uint32)


# float64 work arrays of one block (unpacked bits and scores); large blocks keep BLAS calls few
_PLANES_BLOCK_BYTES = 32 << 20


def planes_topk(
    weights: np.ndarray,
    codes: np.ndarray,
    k: int,
    *,
    planes: int,
    dim: int,
    plane_coef: np.ndarray,
    row_scale: np.ndarray | None,
    row_bias: np.ndarray | None,
    query_offset: np.ndarray,
    valid: np.ndarray | None,
    query_bits: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference of :func:`quantsearch.kernels.planes_topk` on unpacked bits (arguments validated).

    Per plane ``p`` the estimate is ``lo * popcount(b_p) + delta * <u, b_p>`` with the levels of
    :func:`quantize_weights` (``<u, b> = sum_j 2^j popcount(U_j & b)``, exact in float64), or the
    exact ``<w, b_p>`` when ``query_bits`` is None; then, in float64 and rounded to float32 once,
    ``score = row_scale * (sum_p plane_coef[p] * ip_p + query_offset) + row_bias``.
    """
    nq, n = weights.shape[0], codes.shape[0]
    nb = (dim + 7) // 8
    if query_bits is None:
        w64 = weights.astype(np.float64)
        lo = delta = np.zeros(nq)
    else:
        lo, delta, levels = quantize_weights(weights, query_bits)
        w64 = levels.astype(np.float64)
    coef = plane_coef.astype(np.float64)
    qoff = query_offset.astype(np.float64)
    best = np.full((nq, k), np.iinfo(np.uint64).max, np.uint64)
    rows_per_block = max(256, _PLANES_BLOCK_BYTES // (8 * (dim + nq)))
    for r0 in range(0, n, rows_per_block):
        block = codes[r0 : r0 + rows_per_block]
        m = block.shape[0]
        ip = np.zeros((nq, m))
        for p in range(planes):
            bits = np.unpackbits(block[:, p * nb : (p + 1) * nb], axis=1, count=dim).astype(np.float64)
            dots = w64 @ bits.T
            if query_bits is not None:
                dots = lo[:, None] * bits.sum(axis=1)[None, :] + delta[:, None] * dots
            ip += coef[p] * dots
        scale = 1.0 if row_scale is None else row_scale[r0 : r0 + m].astype(np.float64)
        bias = 0.0 if row_bias is None else row_bias[r0 : r0 + m].astype(np.float64)
        best = _merge_scores(best, (scale * (ip + qoff[:, None]) + bias).astype(np.float32), r0, valid, k)
    return _scores_rows(best)


def _merge_scores(
    best: np.ndarray, scores: np.ndarray, r0: int, valid: np.ndarray | None, k: int
) -> np.ndarray:
    """Running top-k of float32 scores (nq, m) of rows [r0, r0 + m) into ``best`` (nq, k) uint64
    keys ``(score key << 32) | row``: unique per (score, row), so a plain sort is exact and tie-aware."""
    m = scores.shape[1]
    keys = score_keys(scores).astype(np.uint64)
    if valid is not None:
        keys[:, ~valid[r0 : r0 + m]] = np.uint64(0xFFFFFFFF)
    keys = (keys << np.uint64(32)) | np.arange(r0, r0 + m, dtype=np.uint64)
    merged = np.concatenate([best, keys], axis=1)
    if merged.shape[1] > k:
        merged = np.take_along_axis(merged, np.argpartition(merged, k - 1, axis=1)[:, :k], axis=1)
    return merged


def _scores_rows(best: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted scores (nq, k) float32 (nan padding) and rows (nq, k) int64 (-1 padding) of merged keys."""
    best = np.sort(best, axis=1)
    key = (best >> np.uint64(32)).astype(np.uint32)
    pad = key == np.uint32(0xFFFFFFFF)
    rows = np.where(pad, -1, (best & np.uint64(0xFFFFFFFF)).astype(np.int64))
    flipped = np.where(key & np.uint32(0x80000000), key, key ^ np.uint32(0x7FFFFFFF)).astype(np.uint32)
    scores = np.where(pad, np.float32(np.nan), flipped.view(np.float32))
    return scores.astype(np.float32), rows.astype(np.int64)


def and_term_layout(
    weights: np.ndarray, codes: np.ndarray, planes: int, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """The AND-term scan as a one-plane scan: what the native kernels build block by block.

    Parameters
    ----------
    weights : ndarray of shape (nq, planes + 1, dim), float32
        Weights of each plane, then of the AND of planes 0 and 1.
    codes : ndarray of shape (n, width), uint8
        ``planes`` bit planes of ``ceil(dim / 8)`` bytes per row.

    Returns
    -------
    weights : ndarray of shape (nq, (planes + 1) * 64 * W), float32
        The ``planes + 1`` weight vectors side by side, each zero padded to ``W = ceil(dim / 64)``
        words.
    codes : ndarray of shape (n, (planes + 1) * 8 * W), uint8
        Each row's planes and their AND, laid out the same way (padding bits zero).
    """
    nq, n = weights.shape[0], codes.shape[0]
    nb = (dim + 7) // 8
    span = 64 * ((nb + 7) // 8)
    wide = np.zeros((nq, planes + 1, span), np.float32)
    wide[:, :, :dim] = weights
    bits = np.zeros((n, planes + 1, span), np.uint8)
    for p in range(planes):
        bits[:, p, :dim] = np.unpackbits(codes[:, p * nb : (p + 1) * nb], axis=1, count=dim)
    bits[:, planes] = bits[:, 0] & bits[:, 1]
    return wide.reshape(nq, -1), np.packbits(bits.reshape(n, -1), axis=1)


# ---------------------------------------------------------------- 2-bit / ternary codes x nibble tables
# layout "planes": byte j of the planes holds dimensions 8j .. 8j + 7 (bit 7 - t is dimension 8j + t);
# its four groups (see group_indices) each hold the two bits of two dimensions: the first of them
# is 8j + _NIBBLE_DIM[g], the second the one before it
_NIBBLE_DIM = np.array([7, 3, 5, 1])
_NIBBLE_VALUES = np.arange(16)
_LEVEL_FIRST = (_NIBBLE_VALUES & 1) + 2 * ((_NIBBLE_VALUES >> 2) & 1)
_LEVEL_SECOND = ((_NIBBLE_VALUES >> 1) & 1) + 2 * ((_NIBBLE_VALUES >> 3) & 1)
#: levels per dimension of each layout (the last axis of ``values``)
NIBBLE_LEVELS = {"planes": 4, "base3": 3, "bits": 2}


def nibble_bytes(dim: int, layout: str) -> int:
    """Bytes per code row the layout's groups come from: ``ceil(dim / 8)`` per plane, or
    ``ceil(dim / 5)`` (five trits per byte)."""
    return (dim + 4) // 5 if layout == "base3" else (dim + 7) // 8


def group_indices(codes: np.ndarray, nb: int, layout: str) -> np.ndarray:
    """The table index (n, G) uint8 of every group of each code row.

    ``"planes"`` (G = 4 nb): with ``p0``, ``p1`` byte ``j`` of plane 0 and 1,
    ``X = (p0 & 0x33) | ((p1 << 2) & 0xcc)``, ``Y = ((p0 >> 2) & 0x33) | (p1 & 0xcc)``, groups
    ``4j .. 4j + 3`` are ``X & 15, X >> 4, Y & 15, Y >> 4``: bit 0 and bit 2 are planes 0 and 1 of
    the group's first dimension, bits 1 and 3 those of its second.
    ``"base3"`` (G = 3 nb): byte ``b = d0 + 3 d1 + 9 d2 + 27 d3 + 81 d4`` (digits ``t + 1`` of
    dimensions ``5j .. 5j + 4``) gives ``d0 + 3 d1``, ``d2 + 3 d3`` and ``d4``.
    ``"bits"`` (G = 2 nb, one plane of 1-bit codes): ``b & 15`` and ``b >> 4``, four dimensions each
    (bit ``i`` of the nibble is dimension ``8j + 7 - i``, resp. ``8j + 3 - i``; level = the bit).
    """
    n = codes.shape[0]
    if layout == "bits":
        b = codes[:, :nb]
        return np.stack([b & 15, b >> 4], axis=2).reshape(n, -1).astype(np.uint8)
    if layout == "base3":
        b = codes[:, :nb].astype(np.int16)
        q = b // 9
        t4 = (q > 8).astype(np.int16) + (q > 17)
        return np.stack([b - 9 * q, q - 9 * t4, t4], axis=2).reshape(n, -1).astype(np.uint8)
    p0 = codes[:, :nb].astype(np.uint16)
    p1 = codes[:, nb : 2 * nb].astype(np.uint16)
    x = (p0 & 0x33) | ((p1 << 2) & 0xCC)
    y = ((p0 >> 2) & 0x33) | (p1 & 0xCC)
    return np.stack([x & 15, x >> 4, y & 15, y >> 4], axis=2).reshape(n, -1).astype(np.uint8)


def nibble_luts(values: np.ndarray, layout: str = "planes") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-query tables of 16 uint8 per group (:func:`group_indices`): the rule of every backend.

    ``values[q, d, l]`` is query ``q``'s contribution from dimension ``d`` at level ``l`` (planes:
    ``l = b0 + 2 b1``; base3: the digit ``t + 1``). The float64 table of a group holds, for each
    index, the sum of its dimensions' contributions (dimensions past ``d`` contribute 0; indices no
    code produces hold the group's minimum). With ``m_g`` the minimum and
    ``delta = max_g (max - m_g) / 255``, ``lut = floor((table - m_g) / delta + 0.5)`` (at most 255; 0
    where ``delta == 0``) and ``lo = sum_g m_g`` (summed in group order), so
    ``lo + delta * sum_g lut[g][index_g]`` is within ``delta / 2`` per group of the exact sum.

    Parameters
    ----------
    values : ndarray of shape (nq, dim, NIBBLE_LEVELS[layout]), float
    layout : {"planes", "base3"}

    Returns
    -------
    luts : ndarray of shape (nq, G, 16), uint8 (G = 4, 3 or 2 groups per byte, see :func:`group_indices`)
    lo, delta : ndarrays of shape (nq,), float64
    """
    nq, dim, levels = values.shape
    terms, unused = _nibble_index(dim, layout)
    flat = np.zeros((nq, max(t.max() for t in terms) + 1))  # past levels * dim: padding (0)
    flat[:, : levels * dim] = values.reshape(nq, -1)
    # tables as (nq, 16, G): the reductions over the 16 entries run along the leading axis
    table = np.take(flat, terms[0], axis=1)
    for term in terms[1:]:
        table += np.take(flat, term, axis=1)
    if unused is not None:
        table[:, unused] = np.inf
        low = table.min(axis=1)
        table[:, unused] = np.broadcast_to(low[:, None, :], table.shape)[:, unused]
    else:
        low = table.min(axis=1)
    delta = (table.max(axis=1) - low).max(axis=1, initial=0.0) / 255.0
    safe = np.where(delta > 0, delta, 1.0)
    luts = np.floor((table - low[:, None, :]) / safe[:, None, None] + 0.5)
    np.minimum(luts, 255, out=luts)  # >= 0 already
    luts[delta <= 0] = 0
    # lo summed in group order (cumsum: sequential, where sum is pairwise), as the native table builder
    lo = np.ascontiguousarray(np.cumsum(low, axis=1)[:, -1]) if low.shape[1] else np.zeros(nq)
    return np.ascontiguousarray(luts.astype(np.uint8).transpose(0, 2, 1)), lo, delta


def nibble_scan(
    queries: np.ndarray,
    levels: np.ndarray,
    codes: np.ndarray,
    k: int,
    *,
    layout: str,
    scale_offset: int | None,
    score_bias: np.ndarray | None,
    valid: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference of :func:`quantsearch.kernels.nibble_scan` (arguments validated): ``values = queries
    (float64) x levels``, :func:`nibble_luts`, :func:`nibble_topk`, then ``+ score_bias`` in float32."""
    values = queries.astype(np.float64)[:, :, None] * levels[None, :, :]
    luts, lo, delta = nibble_luts(values, layout)
    row_scale = None
    if scale_offset is not None:
        raw = np.ascontiguousarray(codes[:, scale_offset : scale_offset + 4])
        row_scale = raw.view("<f4")[:, 0].astype(np.float32)
    scores, rows = nibble_topk(
        luts, codes, k, lo=lo, delta=delta, row_scale=row_scale, row_bias=None,
        query_offset=np.zeros(queries.shape[0]), valid=valid, layout=layout,
    )  # fmt: skip
    if score_bias is not None:
        scores = (scores + score_bias[:, None]).astype(np.float32)
    return scores, rows


@functools.lru_cache(maxsize=16)
def _nibble_index(dim: int, layout: str) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Flat indices (16, G) into ``values.reshape(nq, -1)`` of the contributions of every table entry
    (two, or four for ``"bits"``; past the end: a padding zero), summed in this order, and the mask
    (16, G) of entries no code produces (or None)."""
    v = _NIBBLE_VALUES[:, None]
    if layout == "bits":
        # group 2j: the low nibble of byte j, bit i = dimension 8j + 7 - i; group 2j + 1: the high
        # nibble, bit i = dimension 8j + 3 - i
        nb = (dim + 7) // 8
        zero = 2 * 8 * nb
        top = (8 * np.arange(nb)[:, None] + np.array([7, 3])[None, :]).reshape(-1)
        terms = []
        for i in range(4):
            dims = top - i
            index = 2 * dims[None, :] + (v >> i & 1)
            terms.append(np.where(dims[None, :] < dim, index, zero).astype(np.intp))
        return terms, None
    if layout == "planes":
        nb = (dim + 7) // 8
        zero = 4 * 8 * nb
        first = (8 * np.arange(nb)[:, None] + _NIBBLE_DIM[None, :]).reshape(-1)
        out = []
        for dims, level in ((first, _LEVEL_FIRST), (first - 1, _LEVEL_SECOND)):
            index = 4 * dims[None, :] + level[:, None]
            out.append(np.where(dims[None, :] < dim, index, zero).astype(np.intp))
        return out, None
    nb = (dim + 4) // 5
    zero = 3 * 5 * nb
    a, b, c = [], [], []
    for j in range(nb):
        d = 5 * j
        a += [3 * d + v % 3, 3 * (d + 2) + v % 3, 3 * (d + 4) + np.minimum(v, 2)]
        b += [3 * (d + 1) + v // 3 % 3, 3 * (d + 3) + v // 3 % 3, np.full_like(v, zero)]
        c += [v >= 9, v >= 9, v >= 3]
    first, second = np.concatenate(a, axis=1), np.concatenate(b, axis=1)
    first = np.where(first < 3 * dim, first, zero).astype(np.intp)
    second = np.where(second < 3 * dim, second, zero).astype(np.intp)
    return [first, second], np.concatenate(c, axis=1)


def nibble_topk(
    luts: np.ndarray,
    codes: np.ndarray,
    k: int,
    *,
    lo: np.ndarray,
    delta: np.ndarray,
    row_scale: np.ndarray | None,
    row_bias: np.ndarray | None,
    query_offset: np.ndarray,
    valid: np.ndarray | None,
    layout: str = "planes",
) -> tuple[np.ndarray, np.ndarray]:
    """Reference of :func:`quantsearch.kernels.nibble_topk` (arguments validated): the exact integer
    table sums ``S``, then in float64 ``row_scale * ((lo + delta * S) + query_offset) + row_bias``,
    rounded to float32 once."""
    nq, groups, _ = luts.shape
    n = codes.shape[0]
    best = np.full((nq, k), np.iinfo(np.uint64).max, np.uint64)
    rows_per_block = max(64, _PLANES_BLOCK_BYTES // (8 * max(nq, 1) * groups))
    flat = luts.reshape(nq, -1).astype(np.int64)
    base = (16 * np.arange(groups))[None, :]
    for r0 in range(0, n, rows_per_block):
        nb = groups // {"planes": 4, "base3": 3, "bits": 2}[layout]
        nib = group_indices(codes[r0 : r0 + rows_per_block], nb, layout).astype(np.int64) + base
        m = nib.shape[0]
        sums = flat[:, nib].sum(axis=2)  # (nq, m) exact integers
        ip = lo[:, None] + delta[:, None] * sums.astype(np.float64)
        scale = 1.0 if row_scale is None else row_scale[r0 : r0 + m].astype(np.float64)
        bias = 0.0 if row_bias is None else row_bias[r0 : r0 + m].astype(np.float64)
        scores = (scale * (ip + query_offset.astype(np.float64)[:, None]) + bias).astype(np.float32)
        best = _merge_scores(best, scores, r0, valid, k)
    return _scores_rows(best)


def table_topk(
    tables: np.ndarray,
    codes: np.ndarray,
    k: int,
    *,
    row_scale: np.ndarray | None,
    row_bias: np.ndarray | None,
    query_offset: np.ndarray,
    valid: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference of :func:`quantsearch.kernels.table_topk` (arguments validated): the lookups summed
    in float64, then ``row_scale * (sum + query_offset) + row_bias`` rounded to float32 once."""
    nq, nb, _ = tables.shape
    n = codes.shape[0]
    t64 = tables.astype(np.float64)
    best = np.full((nq, k), np.iinfo(np.uint64).max, np.uint64)
    rows_per_block = max(256, _PLANES_BLOCK_BYTES // (8 * nq * nb))
    positions = np.arange(nb)
    for r0 in range(0, n, rows_per_block):
        block = codes[r0 : r0 + rows_per_block, :nb].astype(np.intp)
        sums = t64[:, positions[None, :], block].sum(axis=2)  # (nq, m)
        m = block.shape[0]
        scale = 1.0 if row_scale is None else row_scale[r0 : r0 + m].astype(np.float64)
        bias = 0.0 if row_bias is None else row_bias[r0 : r0 + m].astype(np.float64)
        scores = (scale * (sums + query_offset.astype(np.float64)[:, None]) + bias).astype(np.float32)
        best = _merge_scores(best, scores, r0, valid, k)
    return _scores_rows(best)


# ggml block formats: bytes per block and float16 header fields (32 dimensions per block)
BLOCK_FORMATS = {"q8_0": (34, 1), "q4_0": (18, 1), "q4_1": (20, 2)}


def dot_rows_blocks(
    arrays: list[np.ndarray], starts: np.ndarray, rows: np.ndarray, weights: np.ndarray, fmt: str
) -> np.ndarray:
    """Reference of :func:`quantsearch.kernels.dot_rows_blocks` (arguments validated; ``weights``
    (nq, 32 * blocks) zero padded): decode the gathered rows in float64 and take the dot products."""
    nq, c = rows.shape
    width, heads = BLOCK_FORMATS[fmt]
    blocks = weights.shape[1] // 32
    out = np.full((nq, c), np.nan, np.float32)
    present = rows >= 0
    if not present.any():
        return out
    raw = gather_rows(arrays, starts, rows[present]).reshape(-1, blocks, width)
    header = np.ascontiguousarray(raw[:, :, : 2 * heads]).view("<f2").astype(np.float64)
    body = raw[:, :, 2 * heads :]
    if fmt == "q8_0":
        values = body.view(np.int8).astype(np.float64)
    else:
        values = np.concatenate([body & 0x0F, body >> 4], axis=2).astype(np.float64) - (
            8.0 if fmt == "q4_0" else 0.0
        )
    decoded = values * header[:, :, :1]
    if heads == 2:
        decoded += header[:, :, 1:2]
    owner = np.nonzero(present)[0]
    w = weights.astype(np.float64).reshape(nq, blocks, 32)[owner]
    out[present] = np.einsum("mbi,mbi->m", decoded, w)
    return out


def ivf_probe(
    queries: np.ndarray,
    centroids: np.ndarray,
    scale: np.ndarray,
    nprobe: int,
    *,
    counts: np.ndarray | None,
    want: int,
    cap: int,
    query_bits: np.ndarray | None = None,
    centroid_bits: np.ndarray | None = None,
    shortlist: int = 0,
) -> np.ndarray:
    """Reference of :func:`quantsearch.kernels.ivf_probe` (scores in float64)."""
    scores = (queries.astype(np.float64) @ centroids.astype(np.float64).T) * scale.astype(np.float64)
    nq, nlist = scores.shape
    out = np.full((nq, cap), -1, np.int32)
    short = query_bits is not None and centroid_bits is not None and 0 < shortlist < nlist
    for q in range(nq):
        lists = np.arange(nlist)
        if short:
            assert query_bits is not None and centroid_bits is not None
            d = hamming_distances(query_bits[q : q + 1], centroid_bits)[0]
            lists = np.sort(np.lexsort((lists, d))[:shortlist])
        order = lists[np.argsort(-np.nan_to_num(scores[q, lists], nan=-np.inf), kind="stable")]
        take = nprobe
        if counts is not None:
            take = max(nprobe, int(np.searchsorted(np.cumsum(counts[order]), want)) + 1)
        take = min(take, cap, order.size)
        out[q, :take] = order[:take]
    return out


def ivf_scan(
    queries: np.ndarray,
    codes: np.ndarray,
    n_rows: int,
    order: np.ndarray,
    offsets: np.ndarray,
    probes: np.ndarray,
    k: int,
    *,
    valid: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference of :func:`quantsearch.kernels.ivf_scan`: per query, the rows of its lists."""
    nq = queries.shape[0]
    distances = np.full((nq, k), PAD_DISTANCE, np.int32)
    rows_out = np.full((nq, k), -1, np.int64)
    nlist = offsets.shape[0] - 1
    for q in range(nq):
        lists = np.unique(probes[q][(probes[q] >= 0) & (probes[q] < nlist)])
        parts = [order[offsets[c] : offsets[c + 1]] for c in lists]
        rows = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
        rows = rows[(rows >= 0) & (rows < n_rows)]
        if valid is not None:
            rows = rows[valid[rows]]
        if rows.size == 0:
            continue
        d = hamming_distances(queries[q : q + 1], codes[rows])[0]
        top = np.lexsort((rows, d))[:k]
        distances[q, : top.size], rows_out[q, : top.size] = d[top], rows[top]
    return distances, rows_out
