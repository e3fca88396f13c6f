"""Fixed Dimensional Encodings (MUVERA): one vector per token set whose inner products approximate Chamfer.

For a query token set ``Q`` and a document token set ``D`` (unit vectors), Chamfer similarity is
``sum_{q in Q} max_{d in D} <q, d>``. MUVERA (Dhulipala et al., 2024) maps each set to one vector:

* ``r_reps`` independent repetitions; in each, ``k_sim`` random Gaussian hyperplanes (SimHash) cut
  the space into ``B = 2^k_sim`` partitions, a token's partition being its sign pattern (the first
  hyperplane is the most significant bit);
* each token is projected to ``d_proj`` dimensions by a dense random sign matrix scaled by
  ``1/sqrt(d_proj)`` (the paper's AMS projection; ``d_proj=None`` keeps the tokens as they are);
* a query's block for partition ``b`` is the **sum** of its projected tokens in ``b``; a document's is
  their **average**, and an empty partition of a document is filled with the projected token whose
  sign pattern is nearest (Hamming) to ``b`` (``fill_empty``), first token on ties;
* optionally the whole ``r_reps * B * d_proj`` vector is compressed by a Count-Sketch to
  ``final_dim`` (each coordinate added, with a random sign, into one random output coordinate).

``partition="kmeans"`` replaces the SimHash cut by ``2^k_sim`` k-means centroids per repetition,
fitted on a sample of document tokens *in that repetition's projected space* (:meth:`FDEEncoder.fit`):
a token's partition is its nearest centroid, an empty partition is filled from the nearest non-empty
centroid. Random hyperplanes through the origin cut anisotropic token sets (a sentence-transformers
model's token vectors share a large common direction) into few crowded partitions, whose averages
then stand far from the max that Chamfer takes; centroids follow the data. The assignment reads the
projected coordinates the encoding computes anyway (``r_reps`` products of ``d_proj x 2^k_sim``
per token, small next to the ``dim x r_reps * d_proj`` projection).

Then ``<FDE(Q), FDE(D)>`` sums, over query tokens, the inner product with the average of the document
tokens sharing its partition, which approximates the max when partitions are fine enough.

Everything here is vectorised over all tokens of a batch (no Python loop over tokens or texts): one
matrix product gives every token's SimHash bits and projections for all repetitions, the partition
sums are one call of the native row scatter-add (``np.bincount`` per coordinate without the native
kernels), the empty-partition fill is a table of Hamming distances between partitions.
The random matrices are drawn from ``numpy.random.default_rng(seed)`` and kept as fitted state, so an
encoder saved with an index encodes queries exactly as it encoded the documents.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .._validation import check_positive_int
from ..exceptions import InvalidArgumentError, NotFittedError
from ..kernels.backend import get_backend, native_module
from .tokens import TokenBatch, as_token_batch

__all__ = ["FDEConfig", "FDEEncoder"]

# values per encoding chunk (tokens x r_reps x block): bounds the work arrays
_CHUNK_VALUES = 1 << 21
PARTITIONS = ("simhash", "kmeans")
# k-means partitions: document tokens sampled for the fit, Lloyd iterations
_FIT_SAMPLE = 20_000
_FIT_ITERATIONS = 10


@dataclass(frozen=True)
class FDEConfig:
    """Parameters of a Fixed Dimensional Encoding (the paper's names).

    Parameters
    ----------
    dim : int
        Dimension of the token vectors.
    k_sim : int, default 5
        SimHash hyperplanes per repetition (``2^k_sim`` partitions), 0..12.
    r_reps : int, default 20
        Independent repetitions, concatenated.
    d_proj : int or None, default 16
        Per-token projection dimension; None keeps the ``dim`` coordinates (identity).
    fill_empty : bool, default True
        Fill a document's empty partitions with its nearest token (queries are never filled).
    final_dim : int or None, default None
        Count-Sketch the encoding down to this many coordinates.
    seed : int, default 0
        Seed of every random matrix.
    partition : {"simhash", "kmeans"}, default "simhash"
        How each repetition cuts the space: the paper's random hyperplanes, or k-means centroids in
        the repetition's projected space (fitted on document tokens, :meth:`FDEEncoder.fit`).
    """

    dim: int
    k_sim: int = 5
    r_reps: int = 20
    d_proj: int | None = 16
    fill_empty: bool = True
    final_dim: int | None = None
    seed: int = 0
    partition: str = "simhash"

    def __post_init__(self) -> None:
        check_positive_int(self.dim, "dim")
        if (
            isinstance(self.k_sim, bool)
            or not isinstance(self.k_sim, (int, np.integer))
            or not 0 <= self.k_sim <= 12
        ):
            raise InvalidArgumentError(f"k_sim must be an integer in 0..12, got {self.k_sim!r}")
        check_positive_int(self.r_reps, "r_reps")
        if self.d_proj is not None:
            check_positive_int(self.d_proj, "d_proj")
        if self.final_dim is not None:
            check_positive_int(self.final_dim, "final_dim")
        if not isinstance(self.fill_empty, (bool, np.bool_)):
            raise InvalidArgumentError(f"fill_empty must be a bool, got {self.fill_empty!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise InvalidArgumentError(f"seed must be an integer, got {self.seed!r}")
        if self.partition not in PARTITIONS:
            raise InvalidArgumentError(f"partition must be one of {PARTITIONS}, got {self.partition!r}")

    @property
    def partitions(self) -> int:
        """``2^k_sim``."""
        return 1 << self.k_sim

    @property
    def block_dim(self) -> int:
        """Coordinates per partition: ``d_proj`` (or ``dim`` with the identity)."""
        return self.dim if self.d_proj is None else self.d_proj

    @property
    def raw_dim(self) -> int:
        """``r_reps * 2^k_sim * block_dim``, before the final projection."""
        return self.r_reps * self.partitions * self.block_dim

    @property
    def output_dim(self) -> int:
        """Length of an encoding."""
        return self.raw_dim if self.final_dim is None else self.final_dim

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FDEConfig:
        data = {"partition": "simhash", **data}  # configs saved before k-means partitions existed
        try:
            return cls(**data)
        except TypeError as exc:
            raise InvalidArgumentError(f"bad FDE config {data!r}: {exc}") from None


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each value of an unsigned array (numpy >= 2.0, a requirement)."""
    return np.bitwise_count(x)


class FDEEncoder:
    """Encode token sets as MUVERA Fixed Dimensional Encodings.

    Parameters
    ----------
    config : FDEConfig

    Attributes
    ----------
    simhash_ : ndarray of shape (dim, r_reps * k_sim), float32
        Gaussian hyperplanes, repetition-major.
    projection_ : ndarray of shape (dim, r_reps * d_proj), float32, or None
        ±1/sqrt(d_proj) projection per repetition (None with the identity).
    sketch_index_, sketch_sign_ : ndarrays of shape (raw_dim,), int64 / float32, or None
        Count-Sketch of the final projection.
    centroids_ : ndarray of shape (r_reps, 2^k_sim, block_dim), float32, or None
        k-means partitions (``partition="kmeans"``), set by :meth:`fit`.

    Examples
    --------
    >>> enc = FDEEncoder(FDEConfig(dim=384))
    >>> docs = enc.encode_documents(doc_tokens)      # (n_docs, 10240) float32
    >>> queries = enc.encode_queries(query_tokens)   # (n_queries, 10240) float32
    >>> approx_chamfer = queries @ docs.T
    """

    def __init__(self, config: FDEConfig) -> None:
        if not isinstance(config, FDEConfig):
            raise InvalidArgumentError(f"config must be an FDEConfig, got {type(config).__name__}")
        self.config = config
        rng = np.random.default_rng(config.seed)
        c = config
        self.simhash_ = rng.standard_normal((c.dim, c.r_reps * c.k_sim), dtype=np.float32)
        self.projection_: np.ndarray | None = None
        if c.d_proj is not None:
            signs = rng.integers(0, 2, size=(c.dim, c.r_reps * c.d_proj)).astype(np.float32) * 2 - 1
            self.projection_ = (signs / np.sqrt(c.d_proj)).astype(np.float32)
        self.sketch_index_: np.ndarray | None = None
        self.sketch_sign_: np.ndarray | None = None
        if c.final_dim is not None:
            self.sketch_index_ = rng.integers(0, c.final_dim, size=c.raw_dim).astype(np.int64)
            self.sketch_sign_ = (rng.integers(0, 2, size=c.raw_dim) * 2 - 1).astype(np.float32)
        self.centroids_: np.ndarray | None = None
        self._tables: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # see _nearest_tables

    def __repr__(self) -> str:
        return f"FDEEncoder({self.config!r})"

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    @property
    def is_fitted(self) -> bool:
        """False only for k-means partitions before :meth:`fit`."""
        return self.config.partition != "kmeans" or self.centroids_ is not None

    # ---- public -------------------------------------------------------------------------------
    def fit(self, tokens: Any) -> FDEEncoder:
        """Fit the k-means partitions on document tokens (nothing to fit for SimHash).

        Up to 20,000 tokens are sampled (seeded), projected per repetition, and clustered by 10 Lloyd
        iterations from distinct sampled tokens; a centroid that loses every token keeps its place.

        Parameters
        ----------
        tokens : TokenBatch, (vectors, offsets) or list of ndarrays of shape (len_i, dim)

        Returns
        -------
        FDEEncoder
            ``self``.
        """
        batch = as_token_batch(tokens, dim=self.config.dim, name="tokens")
        c = self.config
        if c.partition != "kmeans":
            return self
        rng = np.random.default_rng([c.seed, 1])
        total = batch.vectors.shape[0]
        sample = batch.vectors[np.sort(rng.choice(total, min(total, _FIT_SAMPLE), replace=False))]
        x = self._project(sample).transpose(1, 0, 2).copy()  # (r_reps, s, block)
        reps, s, block, parts_n = c.r_reps, x.shape[1], c.block_dim, c.partitions
        start = rng.choice(s, parts_n, replace=s < parts_n)
        centroids = x[:, start].copy()  # (r_reps, B, block)
        rows = (np.arange(reps)[:, None] * parts_n).astype(np.int64)
        for _ in range(_FIT_ITERATIONS):
            nearest = self._nearest(x, centroids)  # (r_reps, s)
            flat = (rows + nearest).reshape(-1)
            counts = np.bincount(flat, minlength=reps * parts_n)
            values = x.reshape(-1, block)
            sums = np.stack(
                [np.bincount(flat, weights=values[:, j], minlength=reps * parts_n) for j in range(block)], 1
            )
            moved = counts > 0
            centroids = centroids.reshape(-1, block)
            centroids[moved] = (sums[moved] / counts[moved, None]).astype(np.float32)
            centroids = centroids.reshape(reps, parts_n, block)
        self.centroids_ = np.ascontiguousarray(centroids, np.float32)
        return self

    def encode_documents(self, tokens: Any) -> np.ndarray:
        """Document encodings: partition averages, empty partitions filled when ``fill_empty``.

        Parameters
        ----------
        tokens : TokenBatch, (vectors, offsets) or list of ndarrays of shape (len_i, dim)

        Returns
        -------
        ndarray of shape (n_docs, output_dim), float32
        """
        return self._encode(as_token_batch(tokens, dim=self.config.dim, name="tokens"), document=True)

    def encode_queries(self, tokens: Any) -> np.ndarray:
        """Query encodings: partition sums, nothing filled.

        Parameters
        ----------
        tokens : TokenBatch, (vectors, offsets) or list of ndarrays of shape (len_i, dim)

        Returns
        -------
        ndarray of shape (n_queries, output_dim), float32
        """
        return self._encode(as_token_batch(tokens, dim=self.config.dim, name="tokens"), document=False)

    # ---- internals ----------------------------------------------------------------------------
    def _project(self, x: np.ndarray) -> np.ndarray:
        """Projected tokens (t, r_reps, block_dim)."""
        c = self.config
        if self.projection_ is None:
            return np.broadcast_to(x[:, None, :], (x.shape[0], c.r_reps, c.block_dim))
        return (x @ self.projection_).reshape(x.shape[0], c.r_reps, c.block_dim)

    @staticmethod
    def _nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
        """Index of the nearest centroid, (r_reps, t), for ``x`` (r_reps, t, block)."""
        half = 0.5 * np.einsum("rbd,rbd->rb", centroids, centroids)
        return np.argmax(np.matmul(x, centroids.transpose(0, 2, 1)) - half[:, None, :], axis=2)

    def _nearest_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """The k-means centroids as the native assignment reads them: transposed per repetition,
        (r_reps, block, 2^k_sim), and half their squared norms (r_reps, 2^k_sim); float32. Cached
        for the centroid array they were made from (``fit`` or a load replaces that array)."""
        centroids = self.centroids_
        assert centroids is not None
        cached = self._tables
        if cached is None or cached[0] is not centroids:
            half = (0.5 * np.einsum("rbd,rbd->rb", centroids, centroids)).astype(np.float32)
            cached = (centroids, np.ascontiguousarray(centroids.transpose(0, 2, 1), np.float32), half)
            self._tables = cached
        return cached[1], cached[2]

    def _encode(self, batch: TokenBatch, *, document: bool) -> np.ndarray:
        if not self.is_fitted:
            raise NotFittedError("k-means FDE partitions: call fit() on document tokens first")
        out = np.empty((batch.n, self.output_dim), np.float32)
        offsets = batch.offsets
        c = self.config
        # SimHash hyperplanes and projections side by side: one matrix product per chunk
        hashes = self.simhash_ if c.partition == "simhash" else self.simhash_[:, :0]
        matrix = hashes if self.projection_ is None else np.hstack([hashes, self.projection_])
        matrix = np.ascontiguousarray(matrix, np.float32)
        chunk_tokens = max(1, _CHUNK_VALUES // (c.r_reps * max(c.block_dim, c.partitions)))
        chunk_texts = max(1, 4 * _CHUNK_VALUES // (c.r_reps * c.partitions * c.partitions))  # the fill table
        start = 0
        while start < batch.n:
            # texts whose tokens fit the chunk (at least one text)
            stop = int(np.searchsorted(offsets, offsets[start] + chunk_tokens, side="right")) - 1
            stop = min(max(stop, start + 1), batch.n, start + chunk_texts)
            lo, hi = offsets[start], offsets[stop]
            chunk = TokenBatch(
                np.ascontiguousarray(batch.vectors[lo:hi], dtype=np.float32), offsets[start : stop + 1] - lo
            )
            out[start:stop] = self._final(self._raw(chunk, matrix, document=document))
            start = stop
        return out

    def _raw(self, batch: TokenBatch, matrix: np.ndarray, *, document: bool) -> np.ndarray:
        """Encodings (n, raw_dim) of one chunk; ``matrix`` is ``[simhash_ | projection_]``."""
        c = self.config
        n, t = batch.n, batch.vectors.shape[0]
        x = batch.vectors
        parts_n, block, reps = c.partitions, c.block_dim, c.r_reps
        y = x @ matrix  # (t, r_reps * k_sim [+ r_reps * d_proj]); no hyperplanes with k-means
        hashed = reps * c.k_sim if c.partition == "simhash" else 0
        if self.projection_ is not None:
            proj = y[:, hashed:].reshape(t, reps, block)
        else:
            proj = np.broadcast_to(x[:, None, :], (t, reps, block))
        native = native_module() if get_backend() != "numpy" else None
        if self.centroids_ is not None and c.partition == "kmeans":
            if native is not None and self.projection_ is not None:
                # one pass in C over the product's projected blocks, no (t, r_reps, 2^k_sim) temporary
                centroids_t, half = self._nearest_tables()
                part = np.empty((t, reps), np.int64)
                native.nearest_blocks(y, hashed, centroids_t, half, part)
            else:
                part = self._nearest(proj.transpose(1, 0, 2), self.centroids_).T.astype(np.int64)
        elif c.k_sim > 0:
            bits = y[:, :hashed].reshape(t, reps, c.k_sim) > 0
            weights = (1 << np.arange(c.k_sim - 1, -1, -1)).astype(np.int64)
            part = bits.astype(np.int64) @ weights  # (t, r_reps)
        else:
            part = np.zeros((t, reps), np.int64)
        if self.projection_ is not None:
            # the block of (token, repetition) is y[token, hashed + rep * block : ... + block]
            source, row_len, first, rep_step = y, y.shape[1], hashed, block
        else:
            source, row_len, first, rep_step = x, c.dim, 0, 0
        text = np.repeat(np.arange(n, dtype=np.int64), batch.lengths)
        bucket = (text[:, None] * reps + np.arange(reps)[None, :]) * parts_n + part  # (t, r_reps)
        n_buckets = n * reps * parts_n
        sums = np.zeros((n_buckets, block), np.float32)
        if native is not None:
            # partition sums in C, token by token: the source is read in order and the writes of
            # one text stay within its r_reps * 2^k_sim destination rows (a few KB, in cache)
            src_offsets = (
                np.arange(t, dtype=np.int64)[:, None] * row_len
                + (first + rep_step * np.arange(reps, dtype=np.int64))[None, :]
            ).reshape(-1)
            native.scatter_add_rows(source.reshape(-1), src_offsets, bucket.reshape(-1), sums)
        else:  # one weighted bincount per coordinate (a loop over block_dim, not tokens)
            flat_proj = proj.reshape(-1, block)
            flat_bucket = bucket.reshape(-1)
            for j in range(block):
                sums[:, j] = np.bincount(flat_bucket, weights=flat_proj[:, j], minlength=n_buckets)
        bucket = bucket.reshape(-1)
        if document:
            counts = np.bincount(bucket, minlength=n_buckets)
            sums /= np.maximum(counts, 1).astype(np.float32)[:, None]
            if c.fill_empty and c.k_sim > 0:
                empty = np.flatnonzero(counts == 0)
                if empty.size:
                    sums[empty] = self._fill(batch, bucket, proj, empty)
        return sums.reshape(n, c.raw_dim)

    def _fill(self, batch: TokenBatch, bucket: np.ndarray, proj: np.ndarray, empty: np.ndarray) -> np.ndarray:
        """Projected token (per empty bucket) whose partition is nearest (Hamming, or centroid distance).

        Works per partition, not per token: the first token of each non-empty partition, then for
        every partition the non-empty one at the smallest distance (ties: the earliest token), from a
        (texts, r_reps, 2^k_sim, 2^k_sim) table whatever the text lengths.
        """
        c = self.config
        parts_n = c.partitions
        starts = batch.offsets[:-1]
        span = int(batch.lengths.max())
        local = np.repeat(np.arange(batch.vectors.shape[0]) - np.repeat(starts, batch.lengths), c.r_reps)
        dist = self._partition_distance()
        absent = (int(dist.max()) + 2) * span  # above every key of a present partition
        first = np.full(batch.n * c.r_reps * parts_n, absent, np.int64)
        np.minimum.at(first, bucket, local)
        key = dist[None] * span + first.reshape(batch.n, c.r_reps, 1, parts_n)
        best = key.min(axis=3).reshape(-1)[empty] % span
        text, rep, _ = np.unravel_index(empty, (batch.n, c.r_reps, parts_n))
        return proj[starts[text] + best, rep]

    def _partition_distance(self) -> np.ndarray:
        """Integer distance between partitions, (1 or r_reps, B, B): Hamming between SimHash codes,
        the rank of the squared distance between k-means centroids (0 for the partition itself)."""
        if self.centroids_ is not None and self.config.partition == "kmeans":
            c = self.centroids_
            sq = np.einsum("rbd,rbd->rb", c, c)
            d2 = sq[:, :, None] + sq[:, None, :] - 2 * np.matmul(c, c.transpose(0, 2, 1))
            diagonal = np.arange(c.shape[1])
            d2[:, diagonal, diagonal] = -np.inf  # a partition is nearest to itself, ties or not
            return np.argsort(np.argsort(d2, axis=2, kind="stable"), axis=2, kind="stable")
        codes = np.arange(self.config.partitions, dtype=np.uint16)
        return _popcount(codes[:, None] ^ codes[None, :]).astype(np.int64)[None]

    def _final(self, raw: np.ndarray) -> np.ndarray:
        if self.sketch_index_ is None or self.sketch_sign_ is None:
            return raw
        final_dim = self.output_dim
        out = np.zeros((raw.shape[0], final_dim), np.float32)
        order = np.argsort(self.sketch_index_, kind="stable")
        target = self.sketch_index_[order]
        signed = raw[:, order] * self.sketch_sign_[order]
        cuts = np.flatnonzero(np.r_[True, target[1:] != target[:-1]])
        out[:, target[cuts]] = np.add.reduceat(signed, cuts, axis=1)
        return out
