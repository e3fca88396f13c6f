"""llama.cpp (ggml) block formats Q8_0, Q4_0 and Q4_1: 32 dimensions per block, a float16 scale per block.

No calibration: each block carries its own scale (and min), computed from the vector itself with ggml's
reference rounding rules, so a code here is byte-for-byte a ggml row of the same type:

* ``q8_0`` (34 bytes / 32 dims): ``d = max|x| / 127``; ``q = round(x / d)`` (half away from zero), int8;
  decodes to ``q * d``. Block = float16 ``d`` then 32 int8.
* ``q4_0`` (18 bytes / 32 dims): ``d = max / -8`` where ``max`` is the signed value of largest magnitude
  (the first one on ties); ``q = min(15, trunc(x / d + 8.5))``; decodes to ``(q - 8) * d``. Block = float16
  ``d`` then 16 bytes, byte ``j`` holding element ``j`` in its low nibble and element ``j + 16`` in its
  high nibble.
* ``q4_1`` (20 bytes / 32 dims): ``d = (max - min) / 15``, ``m = min``; ``q = min(15, trunc((x - min) / d +
  0.5))``; decodes to ``q * d + m``. Block = float16 ``d``, float16 ``m``, then the nibbles as in q4_0.

As in ggml, the values are quantized with the float32 ``1 / d`` and decoded with the float16 ``d`` (and
``m``); a zero block has ``d = 0`` and decodes to zeros. A dimension that is not a multiple of 32 pads its
last block with copies of that block's first value (which changes no block statistic); the padding is
dropped on decode. float16 scales are little-endian.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np

from ..exceptions import InvalidArgumentError
from ..kernels import blocks_topk, dot_rows_blocks
from .base import Precision, Quantizer, register_quantizer_name

__all__ = ["BLOCK_SIZE", "BlockQuantizer"]

#: Dimensions per block (ggml's QK8_0 = QK4_0 = QK4_1).
BLOCK_SIZE = 32

# format -> (bytes per block, float16 header fields, precision of the values)
_FORMATS: dict[str, tuple[int, int, Precision]] = {
    "q8_0": (2 + BLOCK_SIZE, 1, Precision.INT8),
    "q4_0": (2 + BLOCK_SIZE // 2, 1, Precision.INT4),
    "q4_1": (4 + BLOCK_SIZE // 2, 2, Precision.INT4),
}


class BlockQuantizer(Quantizer):
    """ggml block quantization of each vector (``format`` in ``"q8_0"``, ``"q4_0"``, ``"q4_1"``).

    ``fit`` records the dimension only. Scores are the float query's dot product with the decoded
    vector, computed block by block.
    """

    kind = "block"

    def __init__(self, format: str = "q8_0") -> None:  # noqa: A002 - ggml's word for it
        key = str(format).strip().lower() if isinstance(format, str) else format
        if key not in _FORMATS:
            raise InvalidArgumentError(f"block format must be one of {sorted(_FORMATS)}, got {format!r}")
        self.format = key

    @property
    def precision(self) -> Precision:
        return _FORMATS[self.format][2]

    @property
    def name(self) -> str:
        return self.format

    @property
    def n_blocks(self) -> int:
        return -(-self.code_dim // BLOCK_SIZE)

    @property
    def block_bytes(self) -> int:
        return _FORMATS[self.format][0]

    @property
    def code_bytes(self) -> int:
        return self.n_blocks * self.block_bytes

    # ---- encoding ---------------------------------------------------------------------------------
    def _blocks(self, x: np.ndarray) -> np.ndarray:
        """(n, n_blocks, 32) float32, the last block padded with its own first value."""
        n, d = x.shape
        padded = np.empty((n, self.n_blocks * BLOCK_SIZE), np.float32)
        padded[:, :d] = x
        if padded.shape[1] > d:
            padded[:, d:] = x[:, (self.n_blocks - 1) * BLOCK_SIZE][:, None]
        return padded.reshape(n, self.n_blocks, BLOCK_SIZE)

    def _encode(self, x: np.ndarray) -> np.ndarray:
        blocks = self._blocks(np.asarray(x, np.float32))
        n = blocks.shape[0]
        if self.format == "q8_0":
            d = np.abs(blocks).max(axis=2) / np.float32(127.0)
            v = blocks * _inverse(d)[:, :, None]
            q = (np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))).astype(np.int8)  # roundf
            header = [d]
            body = q.view(np.uint8)
        elif self.format == "q4_0":
            pick = np.argmax(np.abs(blocks), axis=2)  # first of the largest magnitudes
            signed_max = np.take_along_axis(blocks, pick[:, :, None], axis=2)[:, :, 0]
            d = signed_max / np.float32(-8.0)
            v = blocks * _inverse(d)[:, :, None] + np.float32(8.5)
            header = [d]
            body = _nibbles(np.minimum(np.trunc(v), 15).astype(np.uint8))
        else:
            lo, hi = blocks.min(axis=2), blocks.max(axis=2)
            d = (hi - lo) / np.float32(15.0)
            v = (blocks - lo[:, :, None]) * _inverse(d)[:, :, None] + np.float32(0.5)
            header = [d, lo]
            body = _nibbles(np.minimum(np.trunc(v), 15).astype(np.uint8))
        head = (
            np.stack([h.astype("<f2") for h in header], axis=2).view(np.uint8).reshape(n, self.n_blocks, -1)
        )
        return np.concatenate([head, body], axis=2).reshape(n, self.code_bytes)

    # ---- decoding ---------------------------------------------------------------------------------
    def block_fields(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Fields of stored codes: ``d`` (n, n_blocks), ``m`` (n, n_blocks) or None, values (n, n_blocks, 32).

        The values are the signed ints that multiply ``d``: ``q`` for q8_0 and q4_1, ``q - 8`` for q4_0.
        """
        codes = self._check_codes(codes)
        return self._fields(codes)

    def _fields(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        n = codes.shape[0]
        blocks = codes.reshape(n, self.n_blocks, self.block_bytes)
        n_header = _FORMATS[self.format][1]
        header = np.ascontiguousarray(blocks[:, :, : 2 * n_header]).view("<f2").astype(np.float32)
        body = blocks[:, :, 2 * n_header :]
        if self.format == "q8_0":
            values = np.ascontiguousarray(body).view(np.int8)
        else:
            values = np.concatenate([body & 0x0F, body >> 4], axis=2).astype(np.int8)
            if self.format == "q4_0":
                values -= 8
        m = header[:, :, 1] if n_header == 2 else None
        return header[:, :, 0], m, values

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        d, m, values = self._fields(codes)
        x = values.astype(np.float32) * d[:, :, None]
        if m is not None:
            x += m[:, :, None]
        return np.ascontiguousarray(x.reshape(codes.shape[0], -1)[:, : self.code_dim])

    def score(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        # sum over blocks of d_b <q_b, values_b> (+ m_b sum(q_b)): the scales multiply block partial sums
        nq, c, width = codes.shape
        d, m, values = self._fields(codes.reshape(-1, width))
        q = self._query_blocks(queries)  # (nq, nb, 32)
        partial = np.einsum("qcbi,qbi->qcb", values.reshape(nq, c, self.n_blocks, BLOCK_SIZE), q,
                            dtype=np.float32)  # fmt: skip
        scores = np.einsum("qcb,qcb->qc", partial, d.reshape(nq, c, -1))
        if m is not None:
            scores += np.einsum("qcb,qb->qc", m.reshape(nq, c, -1), q.sum(axis=2))
        return scores.astype(np.float32)

    def score_all(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Scores (nq, n) of prepared queries against every code of a block (the candidate scan's
        :meth:`scan_topk` calls it block by block), on the fused kernel of :meth:`rescore`: each row
        is decoded block by block where it lies, no (n, dim) float array is built."""
        self.check_fitted()
        nq, n = queries.shape[0], codes.shape[0]
        codes = np.ascontiguousarray(codes)
        rows = np.ascontiguousarray(np.broadcast_to(np.arange(n, dtype=np.int64), (nq, n)))
        weights = np.ascontiguousarray(queries, dtype=np.float32)
        return dot_rows_blocks([codes], np.zeros(1, np.int64), rows, weights, format=self.format)

    def scan_topk(
        self, queries: np.ndarray, codes: np.ndarray, k: int, *, valid: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidate scan in one native call (:func:`~quantsearch.kernels.blocks_topk`): the scores of
        :meth:`score_all` ranked on the scan driver's heaps, no (nq, n) score array, no top-k in numpy."""
        self.check_fitted()
        prepared = np.ascontiguousarray(self.prepare_queries(queries), dtype=np.float32)
        return blocks_topk(prepared, np.ascontiguousarray(codes), k, format=self.format, valid=valid)

    def rescore(
        self, prepared: np.ndarray, arrays: Sequence[np.ndarray], starts: np.ndarray, rows: np.ndarray
    ) -> np.ndarray:
        """Scores of candidate rows read where they lie, on the fused gather + dot kernel of the block
        formats (:func:`~quantsearch.kernels.dot_rows_blocks`): no (nq, c, dim) array is built.

        Parameters
        ----------
        prepared : ndarray of shape (nq, dim), float32
            ``self.prepare_queries(queries)``.
        arrays : sequence of ndarray of shape (n_i, code_bytes), uint8
            The tier's segments in row order.
        starts : ndarray of shape (n_segments,), int64
            First global row of each segment.
        rows : ndarray of shape (nq, c), int64
            Candidate rows; ``-1`` = padding.

        Returns
        -------
        scores : ndarray of shape (nq, c), float32; nan at padding
        """
        self.check_fitted()
        return dot_rows_blocks(arrays, starts, rows, prepared, format=self.format)

    def _query_blocks(self, queries: np.ndarray) -> np.ndarray:
        """Queries (nq, dim) zero-padded to whole blocks: (nq, n_blocks, 32) (padding scores nothing)."""
        nq = queries.shape[0]
        padded = np.zeros((nq, self.n_blocks * BLOCK_SIZE), np.float32)
        padded[:, : self.code_dim] = queries
        return padded.reshape(nq, self.n_blocks, BLOCK_SIZE)


def _inverse(d: np.ndarray) -> np.ndarray:
    """ggml's ``id = d ? 1/d : 0`` in float32."""
    safe = np.where(d != 0, d, np.float32(1.0))
    return np.where(d != 0, np.float32(1.0) / safe, np.float32(0.0)).astype(np.float32)


def _nibbles(q: np.ndarray) -> np.ndarray:
    """(n, nb, 32) values in [0, 15] -> (n, nb, 16) bytes: element j low nibble, element j + 16 high."""
    half = BLOCK_SIZE // 2
    return (q[:, :, :half] | (q[:, :, half:] << 4)).astype(np.uint8)


for _format in _FORMATS:
    register_quantizer_name(_format, partial(BlockQuantizer, _format))
