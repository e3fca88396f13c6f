"""The public kernel entry points: validate once, then run the selected backend.

Every backend returns identical Hamming results (exact integers, ties to the smaller row);
``dot_rows`` results agree to float32 rounding (the summation order differs between backends).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._topk import topk_blocks
from .._validation import check_positive_int
from ..exceptions import DimensionMismatchError, InvalidArgumentError, InvalidDtypeError
from . import native_backend, numpy_backend
from .backend import get_backend, get_num_threads
from .prefetch import prefetch_rows

_ROW_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.float16), np.dtype(np.float32))


def _packed_codes(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype != np.uint8:
        raise InvalidDtypeError(f"{name} must be packed bits with dtype uint8, got {arr.dtype}")
    if arr.ndim != 2:
        raise DimensionMismatchError(f"{name} must be 2-D (n, n_bytes), got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise DimensionMismatchError(f"{name} must have at least one byte per row, got shape {arr.shape}")
    return arr


def hamming_topk(
    queries: np.ndarray,
    codes: np.ndarray,
    k: int,
    *,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact Hamming top-k of packed codes, ties broken by the smaller row index.

    Runs on the backend :func:`get_backend` names, over :func:`get_num_threads` threads, with the
    GIL released. Memory stays bounded: no (nq x n) matrix is built.

    Parameters
    ----------
    queries : ndarray of shape (nq, nb), uint8
        Packed query codes (copied if not C-contiguous).
    codes : ndarray of shape (n, nb), uint8, C-contiguous
        Packed database codes (not copied: a non-contiguous array is rejected).
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
    queries = np.ascontiguousarray(_packed_codes(queries, "queries"))
    codes = _packed_codes(codes, "codes")
    if not codes.flags.c_contiguous:
        raise InvalidArgumentError(
            f"codes must be C-contiguous (n, {codes.shape[1]}) uint8, got strides {codes.strides}; "
            "use np.ascontiguousarray(codes) once, not per search"
        )
    if queries.shape[1] != codes.shape[1]:
        raise DimensionMismatchError(
            f"queries have {queries.shape[1]} bytes per code, codes have {codes.shape[1]}"
        )
    k = check_positive_int(k, "k")
    if valid is not None:
        valid = np.asarray(valid)
        if valid.dtype != np.bool_:
            raise InvalidDtypeError(f"valid must be a bool mask, got dtype {valid.dtype}")
        if valid.shape != (codes.shape[0],):
            raise DimensionMismatchError(f"valid must have shape ({codes.shape[0]},), got {valid.shape}")
        valid = np.ascontiguousarray(valid)
    backend = get_backend()
    if backend == "numpy":
        return numpy_backend.hamming_topk(queries, codes, k, valid=valid)
    return native_backend.hamming_topk(queries, codes, k, valid=valid, isa=backend, threads=get_num_threads())


def dot_rows(
    arrays: Sequence[np.ndarray],
    starts: np.ndarray,
    rows: np.ndarray,
    weights: np.ndarray,
    *,
    offset: int = 0,
    nibbles: bool = False,
    prefetch: bool = False,
) -> np.ndarray:
    """Fused gather + dot for rescoring: read each candidate's code row where it lies (a memory
    map included) and dot it with its query's weights, without building a (nq, c, dim) array.

    ``scores[q, j] = sum_d (value[rows[q, j], d] + offset) * weights[q, d]``, where ``value`` is
    the stored number (an int8/uint8 code, a 4-bit level, a float16/float32 value).

    Parameters
    ----------
    arrays : sequence of ndarray of shape (n_i, width), int8 / uint8 / float16 / float32
        Segments in row order, one dtype, each C-contiguous; global row ``starts[i] + r`` is row
        ``r`` of ``arrays[i]``.
    starts : ndarray of shape (n_segments,), int64
        First global row of each segment (``0`` first, no gaps).
    rows : ndarray of shape (nq, c), int64
        Candidate rows per query; ``-1`` marks padding (its score is nan).
    weights : ndarray of shape (nq, dim), float32
        Per-query weights (the query with the code calibration folded in).
    offset : int
        Added to integer codes before the product (e.g. 128 turns int8 codes into levels 0..255).
    nibbles : bool
        The uint8 arrays hold two 4-bit levels per byte (even dimension in the low nibble), so
        ``width == ceil(dim / 2)``.
    prefetch : bool
        First ask the OS for every candidate row of the memory-mapped segments at once
        (:func:`~quantsearch.kernels.prefetch.prefetch_rows`): for a tier that may not be in the
        page cache (~5-15x faster cold, ~0.15 ms more per 100 rows warm; benchmarks/cold_tier.py).

    Returns
    -------
    scores : ndarray of shape (nq, c), float32
    """
    arrays = list(arrays)
    if not arrays:
        raise InvalidArgumentError("arrays must hold at least one segment array")
    dtype = arrays[0].dtype
    if dtype not in _ROW_DTYPES or (nibbles and dtype != np.uint8):
        want = "uint8 (nibbles)" if nibbles else "int8, uint8, float16 or float32"
        raise InvalidDtypeError(f"segment arrays must have dtype {want}, got {dtype}")
    weights = np.asarray(weights)
    if weights.ndim != 2 or not np.issubdtype(weights.dtype, np.floating):
        raise InvalidDtypeError(
            f"weights must be a 2-D float array (nq, dim), got {weights.dtype}{weights.shape}"
        )
    weights = np.ascontiguousarray(weights, dtype=np.float32)
    nq, dim = weights.shape
    width = (dim + 1) // 2 if nibbles else dim
    starts, rows = _check_segments(arrays, starts, rows, dtype, width, nq)
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or abs(int(offset)) > 1 << 16:
        raise InvalidArgumentError(f"offset must be an integer in [-65536, 65536], got {offset!r}")
    if prefetch:
        prefetch_rows(arrays, starts, rows)
    backend = get_backend()
    if backend == "numpy":
        return numpy_backend.dot_rows(arrays, starts, rows, weights, offset=int(offset), nibbles=nibbles)
    return native_backend.dot_rows(
        arrays,
        starts,
        rows,
        weights,
        offset=int(offset),
        nibbles=nibbles,
        isa=backend,
        threads=get_num_threads(),
    )


def _check_segments(
    arrays: list[np.ndarray], starts: Any, rows: Any, dtype: np.dtype, width: int, nq: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validate segment arrays (dtype, width, C order), their starts and the candidate rows."""
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    total = _checked_segments(arrays, starts, dtype, width)
    rows = np.asarray(rows)
    if rows.dtype.kind not in "iu":
        raise InvalidDtypeError(f"rows must be integers, got dtype {rows.dtype}")
    if rows.ndim != 2 or rows.shape[0] != nq:
        raise DimensionMismatchError(f"rows must have shape ({nq}, c), got {rows.shape}")
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    if rows.size and (rows.min() < -1 or rows.max() >= total):
        raise InvalidArgumentError(
            f"rows must be in [0, {total}) or -1 for padding, got [{rows.min()}, {rows.max()}]"
        )
    return starts, rows


# the segments last checked: (the arrays, starts' bytes, dtype, width, rows in all). A search checks
# the same segments every time (those of the index's published view): their checks are skipped when
# the very same array objects (held here, so their ids are not reused) come again with equal starts
_last_segments: tuple[list[np.ndarray], bytes, np.dtype, int, int] | None = None


def _checked_segments(arrays: list[np.ndarray], starts: np.ndarray, dtype: np.dtype, width: int) -> int:
    """Check the segment arrays (dtype, width, C order) and their ``starts``; returns the rows in all."""
    global _last_segments
    last = _last_segments
    key = starts.tobytes()
    if (
        last is not None
        and last[1] == key
        and last[2] == dtype
        and last[3] == width
        and len(last[0]) == len(arrays)
        and all(a is b for a, b in zip(arrays, last[0], strict=True))
    ):
        return last[4]
    for i, array in enumerate(arrays):
        if array.dtype != dtype or array.ndim != 2 or array.shape[1] != width:
            raise DimensionMismatchError(
                f"segment {i} must be {dtype}(n, {width}), got {array.dtype}{array.shape}"
            )
        if not array.flags.c_contiguous:
            raise InvalidArgumentError(f"segment {i} must be C-contiguous, got strides {array.strides}")
    expected, total = [], 0
    for array in arrays:
        expected.append(total)
        total += array.shape[0]
    if starts.shape != (len(arrays),) or starts.tolist() != expected:
        raise InvalidArgumentError(f"starts must be {expected} for these segments, got {starts.tolist()}")
    _last_segments = (list(arrays), key, dtype, width, total)
    return total


#: most bit planes per code row, and most bits per quantized query weight
MAX_PLANES = 8
MAX_QUERY_BITS = 8


def _valid_mask(valid: Any, n: int) -> np.ndarray | None:
    if valid is None:
        return None
    valid = np.asarray(valid)
    if valid.dtype != np.bool_:
        raise InvalidDtypeError(f"valid must be a bool mask, got dtype {valid.dtype}")
    if valid.shape != (n,):
        raise DimensionMismatchError(f"valid must have shape ({n},), got {valid.shape}")
    return np.ascontiguousarray(valid)


def _small_int(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise InvalidArgumentError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return int(value)


def _finite_vector(x: Any, name: str, length: int, dtype: type) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "iuf":
        raise InvalidDtypeError(f"{name} must be a float array, got dtype {arr.dtype}")
    if arr.shape != (length,):
        raise DimensionMismatchError(f"{name} must have shape ({length},), got {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(arr).all():
        raise InvalidArgumentError(f"{name} must be finite")
    return arr


def planes_topk(
    weights: np.ndarray,
    codes: np.ndarray,
    k: int,
    *,
    planes: int = 1,
    dim: int | None = None,
    plane_coef: np.ndarray | None = None,
    row_scale: np.ndarray | None = None,
    row_bias: np.ndarray | None = None,
    query_offset: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    query_bits: int | None = 8,
    and_term: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of float query weights against bit-plane codes (asymmetric scoring), with popcounts.

    Each code row begins with ``planes`` bit planes of ``nb = ceil(dim / 8)`` bytes (np.packbits
    order: dimension 0 is the high bit of byte 0); bytes after them (per-row factors, say) are
    ignored, and so are the padding bits of a plane's last byte. With ``ip_p = <w, bits of plane p>``:

        score = row_scale[row] * (sum_p plane_coef[p] * ip_p + query_offset[q]) + row_bias[row]

    Larger is better; ties go to the smaller row. Runs on the backend :func:`get_backend` names,
    over :func:`get_num_threads` threads, with the GIL released; no (nq x n) matrix is built.

    With ``query_bits = B`` the weights of each query are quantized to ``B``-bit levels,
    ``w ~ lo + delta * u`` (rule: :func:`~.numpy_backend.quantize_weights`), so that
    ``ip_p ~ lo * popcount(b) + delta * sum_j 2^j popcount(U_j & b)`` over the query's level bit
    planes ``U_j``: ``B + 1`` popcounts per code word. The estimate is within
    ``delta / 2 * popcount(b)`` of the exact ``<w, b>``, and every backend computes the same one
    (to float rounding). ``query_bits=None`` scores with the exact float weights instead (byte
    lookup tables, scalar code: slower).

    AND-term scan (``and_term=True``, for codes whose value is not linear in the bits, such as
    2-bit levels ``offset + w0 b0 + w1 b1 + w01 b0 b1``): every plane has its own weights and the
    AND of planes 0 and 1 is one more term,

        ip = sum_p <w_p, bits_p> + <w_and, bits_0 & bits_1>
        score = row_scale[row] * (ip + query_offset[q]) + row_bias[row]

    The ``planes + 1`` weight vectors are quantized as one (side by side, each zero padded to a
    whole number of 64-bit words), so the estimate is within ``delta / 2`` per set bit of the exact
    sum. Needs ``planes >= 2``, ``query_bits`` and no ``plane_coef`` (fold it into the weights).

    Parameters
    ----------
    weights : ndarray of shape (nq, dim), or (nq, planes + 1, dim) with ``and_term``, float
        Query weights (the query mapped into the codes' space); converted to float32.
    codes : ndarray of shape (n, width), uint8, C-contiguous
        ``width >= planes * nb``; not copied.
    k : int
        Results per query (>= 1); fewer valid rows than ``k`` pad with row -1 and score nan.
    planes : int
        Bit planes per row, 1 to 8.
    dim : int, optional
        Dimensions per plane; defaults to (and must equal) ``weights.shape[1]``.
    plane_coef : ndarray of shape (planes,), optional
        Weight of each plane; default ``2**p`` (plane ``p`` is bit ``p`` of an unsigned level).
    row_scale, row_bias : ndarray of shape (n,), optional
        Per-row factors (used as float32); defaults 1 and 0.
    query_offset : ndarray of shape (nq,), optional
        Added to each query's ``ip``; default 0.
    valid : ndarray of shape (n,), bool, optional
        Rows to consider (``False`` = deleted).
    query_bits : int or None
        Bits per quantized query weight, 1 to 8 (default 8), or None for exact float weights.
    and_term : bool
        Per-plane weights and the AND term of planes 0 and 1 (see above).

    Returns
    -------
    scores : ndarray of shape (nq, k), float32, descending; nan in padding slots
    rows : ndarray of shape (nq, k), int64; -1 in padding slots
    """
    weights = np.asarray(weights)
    want_ndim = 3 if and_term else 2
    if weights.ndim != want_ndim or weights.dtype.kind not in "iuf":
        shape = "(nq, planes + 1, dim) with and_term" if and_term else "(nq, dim)"
        raise InvalidDtypeError(
            f"weights must be a {want_ndim}-D float array {shape}, got {weights.dtype}{weights.shape}"
        )
    weights = np.ascontiguousarray(weights, dtype=np.float32)
    if not np.isfinite(weights).all():
        raise InvalidArgumentError("weights must be finite")
    nq = weights.shape[0]
    codes = _packed_codes(codes, "codes")
    if not codes.flags.c_contiguous:
        raise InvalidArgumentError(
            f"codes must be C-contiguous (n, {codes.shape[1]}) uint8, got strides {codes.strides}"
        )
    n = codes.shape[0]
    planes = _small_int(planes, "planes", 1, MAX_PLANES)
    if dim is None:
        dim = weights.shape[-1]
    dim = check_positive_int(dim, "dim")
    if weights.shape[-1] != dim:
        raise DimensionMismatchError(f"weights have {weights.shape[-1]} dimensions, dim is {dim}")
    if and_term:
        if planes < 2:
            raise InvalidArgumentError(f"and_term needs planes >= 2, got planes={planes}")
        if weights.shape[1] != planes + 1:
            raise DimensionMismatchError(
                f"with and_term, weights must have shape (nq, {planes + 1}, {dim}), got {weights.shape}"
            )
        if query_bits is None or plane_coef is not None:
            raise InvalidArgumentError("and_term needs query_bits (1 to 8) and no plane_coef")
    nb = (dim + 7) // 8
    if codes.shape[1] < planes * nb:
        raise DimensionMismatchError(
            f"codes have {codes.shape[1]} bytes per row; {planes} plane(s) of dim {dim} need {planes * nb}"
        )
    k = check_positive_int(k, "k")
    if query_bits is not None:
        query_bits = _small_int(query_bits, "query_bits", 1, MAX_QUERY_BITS)
    if plane_coef is None:
        coef = 2.0 ** np.arange(planes, dtype=np.float64)
    else:
        coef = _finite_vector(plane_coef, "plane_coef", planes, np.float64)
    scale = None if row_scale is None else _finite_vector(row_scale, "row_scale", n, np.float32)
    bias = None if row_bias is None else _finite_vector(row_bias, "row_bias", n, np.float32)
    if query_offset is None:
        offset = np.zeros(nq)
    else:
        offset = _finite_vector(query_offset, "query_offset", nq, np.float64)
    valid = _valid_mask(valid, n)
    args: dict[str, Any] = dict(
        planes=planes,
        dim=dim,
        plane_coef=coef,
        row_scale=scale,
        row_bias=bias,
        query_offset=offset,
        valid=valid,
        query_bits=query_bits,
    )
    backend = get_backend()
    if backend == "numpy":
        if and_term:
            wide, expanded = numpy_backend.and_term_layout(weights, codes, planes, dim)
            args.update(planes=1, dim=wide.shape[1], plane_coef=np.ones(1))
            return numpy_backend.planes_topk(wide, expanded, k, **args)
        return numpy_backend.planes_topk(weights, codes, k, **args)
    return native_backend.planes_topk(weights, codes, k, **args, isa=backend, threads=get_num_threads())


def _nibble_codes(codes: Any, dim: int, layout: str) -> np.ndarray:
    """Codes of a nibble scan: C-contiguous uint8 rows holding at least the layout's bytes."""
    codes = _packed_codes(codes, "codes")
    if not codes.flags.c_contiguous:
        raise InvalidArgumentError(
            f"codes must be C-contiguous (n, {codes.shape[1]}) uint8, got strides {codes.strides}"
        )
    need = numpy_backend.nibble_bytes(dim, layout) * (2 if layout == "planes" else 1)
    if codes.shape[1] < need:
        raise DimensionMismatchError(
            f"codes have {codes.shape[1]} bytes per row; {layout} codes of dim {dim} need {need}"
        )
    return codes


def nibble_topk(
    values: np.ndarray,
    codes: np.ndarray,
    k: int,
    *,
    layout: str = "planes",
    row_scale: np.ndarray | None = None,
    scale_offset: int | None = None,
    row_bias: np.ndarray | None = None,
    query_offset: np.ndarray | None = None,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of float queries against 2-bit, ternary or 1-bit codes, from 4-bit lookup tables (fast scan).

    ``layout="planes"``: each code row begins with two bit planes of ``ceil(dim / 8)`` bytes
    (np.packbits order), dimension ``d`` at level ``l = b0 + 2 b1``; ``"base3"``: ``ceil(dim / 5)``
    bytes of five trits each (``byte = sum_i (t_i + 1) 3^i`` over dimensions ``5j + i``), level
    ``l = t + 1``; ``"bits"``: one plane of ``ceil(dim / 8)`` bytes, level = the bit (four
    dimensions a table). Bytes after them (a per-row factor, say) are ignored. ``values[q, d, l]`` is
    query ``q``'s contribution of dimension ``d`` at level ``l`` (any function of the level: the
    AND of the planes included), and

        score = row_scale[row] * (sum_d values[q, d, l(row, d)] + query_offset[q]) + row_bias[row]

    estimated fast-scan style: the contributions of two dimensions (four bits, or two trits) form
    a 16-entry table, quantized to uint8 per query (:func:`~.numpy_backend.nibble_luts`: within
    ``delta / 2`` per table), looked up 32 rows at a time (AVX2 vpshufb) and summed exactly in
    integers. Every backend computes the same scores; larger is better, ties go to the smaller row.
    Runs over :func:`get_num_threads` threads on the shared scan driver, with the GIL released.

    Parameters
    ----------
    values : ndarray of shape (nq, dim, 4) ("planes"), (nq, dim, 3) ("base3") or (nq, dim, 2) ("bits"), float
        Finite.
    codes : ndarray of shape (n, width), uint8, C-contiguous
        At least the layout's bytes per row; not copied.
    k : int
        Results per query (>= 1); fewer valid rows than ``k`` pad with row -1 and score nan.
    layout : {"planes", "base3", "bits"}
    row_scale, row_bias : ndarray of shape (n,), optional
        Per-row factors (float32); defaults 1 and 0.
    scale_offset : int, optional
        Instead of ``row_scale``: each row's scale is the little-endian float32 stored at this byte
        of the row (a per-vector factor after the codes), read by the kernel as it scans.
    query_offset : ndarray of shape (nq,), optional
        Added to each query's sum; default 0.
    valid : ndarray of shape (n,), bool, optional
        Rows to consider (``False`` = deleted).

    Returns
    -------
    scores : ndarray of shape (nq, k), float32, descending; nan in padding slots
    rows : ndarray of shape (nq, k), int64; -1 in padding slots
    """
    if layout not in numpy_backend.NIBBLE_LEVELS:
        raise InvalidArgumentError(f"layout must be 'planes', 'base3' or 'bits', got {layout!r}")
    levels = numpy_backend.NIBBLE_LEVELS[layout]
    values = np.asarray(values)
    if values.ndim != 3 or values.shape[2] != levels or values.dtype.kind not in "iuf":
        raise InvalidDtypeError(
            f"values must be a float array (nq, dim, {levels}), got {values.dtype}{values.shape}"
        )
    if values.shape[1] < 1:
        raise DimensionMismatchError("values must cover at least one dimension")
    if not np.isfinite(values).all():
        raise InvalidArgumentError("values must be finite")
    nq, dim = values.shape[:2]
    codes = _nibble_codes(codes, dim, layout)
    n = codes.shape[0]
    k = check_positive_int(k, "k")
    scale = None if row_scale is None else _finite_vector(row_scale, "row_scale", n, np.float32)
    if scale_offset is not None:
        scale_offset = check_positive_int(scale_offset, "scale_offset", minimum=0)
        if row_scale is not None or scale_offset + 4 > codes.shape[1]:
            raise InvalidArgumentError(
                f"scale_offset needs no row_scale and 4 bytes inside the {codes.shape[1]}-byte rows, "
                f"got {scale_offset}"
            )
    bias = None if row_bias is None else _finite_vector(row_bias, "row_bias", n, np.float32)
    offset = (
        np.zeros(nq) if query_offset is None else _finite_vector(query_offset, "query_offset", nq, np.float64)
    )
    luts, lo, delta = numpy_backend.nibble_luts(values, layout)
    args: dict[str, Any] = dict(
        lo=lo, delta=delta, row_scale=scale, row_bias=bias, query_offset=offset, valid=_valid_mask(valid, n),
        layout=layout,
    )  # fmt: skip
    backend = get_backend()
    if backend == "numpy":
        if scale_offset is not None:
            raw = np.ascontiguousarray(codes[:, scale_offset : scale_offset + 4])
            args["row_scale"] = raw.view("<f4")[:, 0].astype(np.float32)
        return numpy_backend.nibble_topk(luts, codes, k, **args)
    return native_backend.nibble_topk(
        luts, codes, k, **args, scale_offset=scale_offset, isa=backend, threads=get_num_threads()
    )


def nibble_scan(
    queries: np.ndarray,
    levels: np.ndarray,
    codes: np.ndarray,
    k: int,
    *,
    layout: str = "planes",
    scale_offset: int | None = None,
    score_bias: np.ndarray | None = None,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`nibble_topk` with ``values[q, d, l] = queries[q, d] * levels[d, l]`` (in float64), the
    tables built and the scan run in one native call: the candidate scan of a single query without
    per-query numpy work. ``score_bias[q]`` (float32) is added to every score of query ``q``.

    Parameters
    ----------
    queries : ndarray of shape (nq, dim), float32
        Finite (copied if not C-contiguous float32).
    levels : ndarray of shape (dim, 4) ("planes"), (dim, 3) ("base3") or (dim, 2) ("bits"), float64
        Each dimension's value at each level; finite. Callers keep it per quantizer.
    codes, k, layout, scale_offset, valid
        As in :func:`nibble_topk`.
    score_bias : ndarray of shape (nq,), float32, optional

    Returns
    -------
    scores : ndarray of shape (nq, k), float32, descending; nan in padding slots
    rows : ndarray of shape (nq, k), int64; -1 in padding slots
    """
    if layout not in numpy_backend.NIBBLE_LEVELS:
        raise InvalidArgumentError(f"layout must be 'planes', 'base3' or 'bits', got {layout!r}")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] < 1:
        raise DimensionMismatchError(f"queries must be 2-D (nq, dim), got shape {queries.shape}")
    nq, dim = queries.shape
    levels = np.ascontiguousarray(levels, dtype=np.float64)
    if levels.shape != (dim, numpy_backend.NIBBLE_LEVELS[layout]):
        raise DimensionMismatchError(
            f"levels must have shape ({dim}, {numpy_backend.NIBBLE_LEVELS[layout]}), got {levels.shape}"
        )
    codes = _nibble_codes(codes, dim, layout)
    k = check_positive_int(k, "k")
    if scale_offset is not None:
        scale_offset = check_positive_int(scale_offset, "scale_offset", minimum=0)
        if scale_offset + 4 > codes.shape[1]:
            raise InvalidArgumentError(
                f"scale_offset needs 4 bytes inside the {codes.shape[1]}-byte rows, got {scale_offset}"
            )
    bias = None if score_bias is None else _finite_vector(score_bias, "score_bias", nq, np.float32)
    args: dict[str, Any] = dict(
        layout=layout, scale_offset=scale_offset, score_bias=bias, valid=_valid_mask(valid, codes.shape[0])
    )
    backend = get_backend()
    if backend == "numpy":
        if not (np.isfinite(queries).all() and np.isfinite(levels).all()):
            raise InvalidArgumentError("queries and levels must be finite")
        return numpy_backend.nibble_scan(queries, levels, codes, k, **args)
    try:  # the native call checks that queries and levels are finite as it builds the tables
        return native_backend.nibble_scan(
            queries, levels, codes, k, **args, isa=backend, threads=get_num_threads()
        )
    except ValueError as exc:
        raise InvalidArgumentError(str(exc)) from exc


def table_topk(
    tables: np.ndarray,
    codes: np.ndarray,
    k: int,
    *,
    row_scale: np.ndarray | None = None,
    row_bias: np.ndarray | None = None,
    query_offset: np.ndarray | None = None,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of codes whose score is a sum over their bytes, from per-query lookup tables.

    ``score = row_scale[row] * (sum_j tables[q, j, codes[row, j]] + query_offset[q]) + row_bias[row]``
    over the first ``nb`` bytes of each row (summed in float64, rounded to float32 once); larger is
    better, ties go to the smaller row. For codes that are not bit planes (5 trits per byte, say):
    the table of byte position ``j`` holds the query's dot product with every value the byte can
    decode to. Runs on the native scan driver (scalar lookups, every ISA) or the numpy reference.

    Parameters
    ----------
    tables : ndarray of shape (nq, nb, 256), float
        Converted to float32.
    codes : ndarray of shape (n, width), uint8, C-contiguous
        ``width >= nb``; bytes after the first ``nb`` (per-row factors, say) are ignored.
    k : int
        Results per query (>= 1); fewer valid rows than ``k`` pad with row -1 and score nan.
    row_scale, row_bias : ndarray of shape (n,), optional
        Per-row factors (float32); defaults 1 and 0.
    query_offset : ndarray of shape (nq,), optional
        Added to each query's sum; default 0.
    valid : ndarray of shape (n,), bool, optional
        Rows to consider (``False`` = deleted).

    Returns
    -------
    scores : ndarray of shape (nq, k), float32, descending; nan in padding slots
    rows : ndarray of shape (nq, k), int64; -1 in padding slots
    """
    tables = np.asarray(tables)
    if tables.ndim != 3 or tables.shape[2] != 256 or tables.dtype.kind not in "iuf":
        raise InvalidDtypeError(
            f"tables must be a float array (nq, nb, 256), got {tables.dtype}{tables.shape}"
        )
    tables = np.ascontiguousarray(tables, dtype=np.float32)
    if not np.isfinite(tables).all():
        raise InvalidArgumentError("tables must be finite")
    nq, nb = tables.shape[:2]
    codes = _packed_codes(codes, "codes")
    if not codes.flags.c_contiguous:
        raise InvalidArgumentError(
            f"codes must be C-contiguous (n, {codes.shape[1]}) uint8, got strides {codes.strides}"
        )
    if nb < 1 or codes.shape[1] < nb:
        raise DimensionMismatchError(f"tables cover {nb} bytes per row, codes have {codes.shape[1]}")
    n = codes.shape[0]
    k = check_positive_int(k, "k")
    scale = None if row_scale is None else _finite_vector(row_scale, "row_scale", n, np.float32)
    bias = None if row_bias is None else _finite_vector(row_bias, "row_bias", n, np.float32)
    offset = (
        np.zeros(nq) if query_offset is None else _finite_vector(query_offset, "query_offset", nq, np.float64)
    )
    valid = _valid_mask(valid, n)
    args: dict[str, Any] = dict(row_scale=scale, row_bias=bias, query_offset=offset, valid=valid)
    if get_backend() == "numpy":
        return numpy_backend.table_topk(tables, codes, k, **args)
    return native_backend.table_topk(tables, codes, k, **args, threads=get_num_threads())


def dot_rows_blocks(
    arrays: Sequence[np.ndarray],
    starts: np.ndarray,
    rows: np.ndarray,
    weights: np.ndarray,
    *,
    format: str,  # noqa: A002 - ggml's word for it
    prefetch: bool = False,
) -> np.ndarray:
    """Fused gather + dot for ggml block codes (``q8_0``, ``q4_0``, ``q4_1``): each candidate row
    is decoded block by block where it lies and dotted with its query's weights.

    ``scores[q, j] = sum_b d_b <values_b, w_b> (+ m_b sum(w_b) for q4_1)`` over the 32-dimension
    blocks of row ``rows[q, j]`` (the decoded vector's dot product with the weights).

    Parameters
    ----------
    arrays : sequence of ndarray of shape (n_i, blocks * block_bytes), uint8
        Segments in row order, each C-contiguous (block_bytes: 34, 18, 20).
    starts : ndarray of shape (n_segments,), int64
        First global row of each segment (``0`` first, no gaps).
    rows : ndarray of shape (nq, c), int64
        Candidate rows per query; ``-1`` marks padding (its score is nan).
    weights : ndarray of shape (nq, dim), float32
        ``dim <= 32 * blocks``; zero padded to whole blocks.
    format : {"q8_0", "q4_0", "q4_1"}
    prefetch : bool
        As in :func:`dot_rows`.

    Returns
    -------
    scores : ndarray of shape (nq, c), float32
    """
    if format not in numpy_backend.BLOCK_FORMATS:
        raise InvalidArgumentError(
            f"format must be one of {sorted(numpy_backend.BLOCK_FORMATS)}, got {format!r}"
        )
    block_bytes = numpy_backend.BLOCK_FORMATS[format][0]
    arrays = list(arrays)
    if not arrays:
        raise InvalidArgumentError("arrays must hold at least one segment array")
    width = arrays[0].shape[1] if arrays[0].ndim == 2 else -1
    if width <= 0 or width % block_bytes:
        raise DimensionMismatchError(
            f"{format} rows must be whole blocks of {block_bytes} bytes, got width {width}"
        )
    blocks = width // block_bytes
    weights = np.asarray(weights)
    if weights.ndim != 2 or weights.dtype.kind != "f" or not 1 <= weights.shape[1] <= 32 * blocks:
        raise DimensionMismatchError(
            f"weights must be float (nq, dim <= {32 * blocks}) for {blocks} blocks, "
            f"got {weights.dtype}{weights.shape}"
        )
    padded = np.zeros((weights.shape[0], 32 * blocks), np.float32)
    padded[:, : weights.shape[1]] = weights
    starts, rows = _check_segments(arrays, starts, rows, np.dtype(np.uint8), width, weights.shape[0])
    if prefetch:
        prefetch_rows(arrays, starts, rows)
    backend = get_backend()
    if backend == "numpy":
        return numpy_backend.dot_rows_blocks(arrays, starts, rows, padded, format)
    return native_backend.dot_rows_blocks(
        arrays, starts, rows, padded, format, isa=backend, threads=get_num_threads()
    )


def blocks_topk(
    weights: np.ndarray,
    codes: np.ndarray,
    k: int,
    *,
    format: str,  # noqa: A002 - ggml's word for it
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of ggml block codes (``q8_0``, ``q4_0``, ``q4_1``) by the scores of
    :func:`dot_rows_blocks` (the decoded vector's dot product with the query's weights), scanned in
    one native call over every row: larger is better, ties go to the smaller row.

    Parameters
    ----------
    weights : ndarray of shape (nq, dim), float
        ``dim <= 32 * blocks``; zero padded to whole blocks; finite.
    codes : ndarray of shape (n, blocks * block_bytes), uint8, C-contiguous
    k : int
        Results per query (>= 1); fewer valid rows than ``k`` pad with row -1 and score nan.
    format : {"q8_0", "q4_0", "q4_1"}
    valid : ndarray of shape (n,), bool, optional
        Rows to consider (``False`` = deleted).

    Returns
    -------
    scores : ndarray of shape (nq, k), float32, descending; nan in padding slots
    rows : ndarray of shape (nq, k), int64; -1 in padding slots

    The native paths score each row with the function of :func:`dot_rows_blocks`, so their results
    are exactly its scores ranked; the numpy reference agrees to float32 rounding.
    """
    if format not in numpy_backend.BLOCK_FORMATS:
        raise InvalidArgumentError(
            f"format must be one of {sorted(numpy_backend.BLOCK_FORMATS)}, got {format!r}"
        )
    block_bytes = numpy_backend.BLOCK_FORMATS[format][0]
    codes = _packed_codes(codes, "codes")
    if not codes.flags.c_contiguous or codes.shape[1] % block_bytes:
        raise DimensionMismatchError(
            f"{format} codes must be C-contiguous rows of whole {block_bytes}-byte blocks, got {codes.shape}"
        )
    blocks = codes.shape[1] // block_bytes
    weights = np.asarray(weights)
    if weights.ndim != 2 or weights.dtype.kind != "f" or not 1 <= weights.shape[1] <= 32 * blocks:
        raise DimensionMismatchError(
            f"weights must be float (nq, dim <= {32 * blocks}) for {blocks} blocks, "
            f"got {weights.dtype}{weights.shape}"
        )
    if not np.isfinite(weights).all():
        raise InvalidArgumentError("weights must be finite")
    padded = np.zeros((weights.shape[0], 32 * blocks), np.float32)
    padded[:, : weights.shape[1]] = weights
    k = check_positive_int(k, "k")
    mask = _valid_mask(valid, codes.shape[0])
    backend = get_backend()
    if backend == "numpy":
        nq = padded.shape[0]
        first = np.zeros(1, np.int64)

        def score(a: int, b: int) -> np.ndarray:
            rows = np.ascontiguousarray(np.broadcast_to(np.arange(b - a, dtype=np.int64), (nq, b - a)))
            return numpy_backend.dot_rows_blocks([codes[a:b]], first, rows, padded, format)

        return topk_blocks(score, nq, codes.shape[0], k, valid=mask)
    return native_backend.blocks_topk(
        padded, codes, k, format, valid=mask, isa=backend, threads=get_num_threads()
    )


def ivf_probe(
    queries: np.ndarray,
    centroids: np.ndarray,
    scale: np.ndarray,
    nprobe: int,
    *,
    counts: np.ndarray | None = None,
    want: int = 0,
    cap: int | None = None,
    query_bits: np.ndarray | None = None,
    centroid_bits: np.ndarray | None = None,
    shortlist: int = 0,
    trusted: bool = False,
) -> np.ndarray:
    """The inverted lists each query scans, best first: lists by ``scale[l] * <query, centroids[l]>``
    (float accumulation over int8 centroids), ties to the smaller list.

    With ``query_bits`` (nq, nbits) and ``centroid_bits`` (nlist, nbits) packed sign bits and
    ``0 < shortlist < nlist``, only the ``shortlist`` lists nearest in Hamming distance (ties: the
    smaller list) are scored: a single query then reads 1/32 of the int8 centroids' bytes.

    Without ``counts``: the ``nprobe`` best lists. With ``counts`` (valid rows per list, under a
    filter): lists in score order until their valid rows reach ``want``, and at least ``nprobe``.
    At most ``cap`` lists (default ``nprobe``, or every list with ``counts``).

    Parameters
    ----------
    queries : ndarray of shape (nq, dim), float32
    centroids : ndarray of shape (nlist, dim), int8
    scale : ndarray of shape (nlist,), float32
    nprobe : int
    counts : ndarray of shape (nlist,), int64, optional
    want : int
    cap : int, optional

    trusted : bool
        The caller guarantees C-contiguous arrays of the documented dtypes and shapes (the IVF
        stage, whose arrays are built once per commit): the per-call checks are skipped on the
        native backends (which still check shapes and dtypes before reading). ``cap`` is ``nprobe``
        or the number of lists.

    Returns
    -------
    lists : ndarray of shape (nq, cap), int32; ``-1`` after the lists taken
    """
    if trusted:
        backend = get_backend()
        if backend != "numpy":
            cap = (centroids.shape[0] if counts is not None else nprobe) if cap is None else cap
            try:
                return native_backend.ivf_probe(
                    queries, centroids, scale, nprobe, counts=counts, want=want,
                    cap=min(cap, centroids.shape[0]), query_bits=query_bits, centroid_bits=centroid_bits,
                    shortlist=shortlist, isa=backend, threads=get_num_threads(),
                )  # fmt: skip
            except ValueError as exc:
                raise InvalidArgumentError(str(exc)) from None
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    centroids = np.asarray(centroids)
    if centroids.dtype != np.int8 or centroids.ndim != 2 or not centroids.flags.c_contiguous:
        raise InvalidDtypeError(f"centroids must be a C-contiguous 2-D int8 array, got {centroids.dtype}")
    if queries.ndim != 2 or queries.shape[1] != centroids.shape[1]:
        raise DimensionMismatchError(f"queries must be (nq, {centroids.shape[1]}), got {queries.shape}")
    nlist = centroids.shape[0]
    scale = np.ascontiguousarray(scale, dtype=np.float32)
    if scale.shape != (nlist,):
        raise DimensionMismatchError(f"scale must have shape ({nlist},), got {scale.shape}")
    nprobe = check_positive_int(nprobe, "nprobe")
    if counts is not None:
        counts = np.ascontiguousarray(counts, dtype=np.int64)
        if counts.shape != (nlist,):
            raise DimensionMismatchError(f"counts must have shape ({nlist},), got {counts.shape}")
    cap = (nlist if counts is not None else nprobe) if cap is None else check_positive_int(cap, "cap")
    cap = min(cap, max(nlist, 1))
    if (query_bits is None) != (centroid_bits is None):
        raise InvalidArgumentError("give both query_bits and centroid_bits, or neither")
    if query_bits is not None:
        query_bits = np.ascontiguousarray(_packed_codes(query_bits, "query_bits"))
        centroid_bits = np.ascontiguousarray(_packed_codes(centroid_bits, "centroid_bits"))
        if query_bits.shape[0] != queries.shape[0] or centroid_bits.shape != (nlist, query_bits.shape[1]):
            raise DimensionMismatchError(
                f"query_bits {query_bits.shape} and centroid_bits {centroid_bits.shape} do not match "
                f"{queries.shape[0]} queries and {nlist} lists"
            )
    options: dict[str, Any] = {"counts": counts, "want": int(want), "cap": cap, "query_bits": query_bits,
               "centroid_bits": centroid_bits, "shortlist": int(shortlist)}  # fmt: skip
    backend = get_backend()
    if backend == "numpy":
        return numpy_backend.ivf_probe(queries, centroids, scale, nprobe, **options)
    return native_backend.ivf_probe(
        queries, centroids, scale, nprobe, isa=backend, threads=get_num_threads(), **options
    )


def ivf_scan(
    queries: np.ndarray,
    codes: np.ndarray,
    order: np.ndarray,
    offsets: np.ndarray,
    probes: np.ndarray,
    k: int,
    *,
    valid: np.ndarray | None = None,
    n_rows: int | None = None,
    trusted: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact Hamming top-k of each query over the rows of its inverted lists, in one call.

    List ``l`` is ``order[offsets[l]:offsets[l + 1]]``: row numbers into ``codes``, which stays in
    row order (nothing is copied). Rows ``>= n_rows`` (lists of a newer commit than ``codes``) and
    rows ``valid`` rules out are skipped. Ties go to the smaller row, as :func:`hamming_topk`.

    Parameters
    ----------
    queries : ndarray of shape (nq, nb), uint8
        Packed query codes.
    codes : ndarray of shape (n, nb), uint8, C-contiguous
    order : ndarray of shape (m,), int32
    offsets : ndarray of shape (nlist + 1,), int64, ascending within ``[0, m]``
    probes : ndarray of shape (nq, p), int32
        Lists of each query; ``-1`` (and lists out of range) are skipped.
    k : int
    valid : ndarray of shape (n,), bool, optional
    n_rows : int, optional
        Rows of ``codes`` that count (default: all).
    trusted : bool
        As for :func:`ivf_probe`: arrays of the documented dtypes, C-contiguous, ``valid`` a bool
        mask of every row; the native backends skip the per-call checks (they still check shapes,
        the list ranges and ``k``).

    Returns
    -------
    distances : ndarray of shape (nq, k), int32, ascending; ``PAD_DISTANCE`` in padding slots
    rows : ndarray of shape (nq, k), int64; -1 in padding slots
    """
    if trusted:
        backend = get_backend()
        if backend != "numpy":
            n_rows = codes.shape[0] if n_rows is None else n_rows
            try:
                return native_backend.ivf_scan(queries, codes, n_rows, order, offsets, probes, k, valid=valid,
                                               isa=backend, threads=get_num_threads())  # fmt: skip
            except ValueError as exc:
                raise InvalidArgumentError(str(exc)) from None
    queries = np.ascontiguousarray(_packed_codes(queries, "queries"))
    codes = _packed_codes(codes, "codes")
    if not codes.flags.c_contiguous:
        raise InvalidArgumentError("codes must be C-contiguous")
    if queries.shape[1] != codes.shape[1]:
        raise DimensionMismatchError(
            f"queries have {queries.shape[1]} bytes per code, codes have {codes.shape[1]}"
        )
    k = check_positive_int(k, "k")
    n_rows = codes.shape[0] if n_rows is None else int(n_rows)
    if not 0 <= n_rows <= codes.shape[0]:
        raise InvalidArgumentError(f"n_rows must be in [0, {codes.shape[0]}], got {n_rows}")
    order = np.ascontiguousarray(order, dtype=np.int32)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    probes = np.ascontiguousarray(probes, dtype=np.int32)
    if order.ndim != 1 or offsets.ndim != 1 or offsets.shape[0] < 1:
        raise DimensionMismatchError("order must be 1-D and offsets 1-D with at least one entry")
    if probes.ndim != 2 or probes.shape[0] != queries.shape[0]:
        raise DimensionMismatchError(f"probes must have shape ({queries.shape[0]}, p), got {probes.shape}")
    valid = _valid_mask(valid, codes.shape[0])
    backend = get_backend()
    if backend == "numpy":
        if offsets[0] < 0 or offsets[-1] > order.shape[0] or np.any(np.diff(offsets) < 0):
            raise InvalidArgumentError("offsets must ascend within [0, len(order)]")
        return numpy_backend.ivf_scan(queries, codes, n_rows, order, offsets, probes, k, valid=valid)
    try:
        return native_backend.ivf_scan(
            queries, codes, n_rows, order, offsets, probes, k, valid=valid, isa=backend,
            threads=get_num_threads(),
        )  # fmt: skip
    except ValueError as exc:
        raise InvalidArgumentError(str(exc)) from None
