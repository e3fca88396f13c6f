"""Learned 1-bit codes: a small projection head trained on the corpus so that sign bits lose less.

A document ``x`` is coded as the bits ``b = sign(f(x - c))`` of a learned head ``f`` (a linear map
``W``, optionally plus a tiny ReLU MLP) and one per-vector factor ``alpha``. It stands for the
reconstruction ``x_hat = c + alpha * D b`` (``D``: a learned decoder, the *query map*), so a float
query is scored asymmetrically as

    <q, x_hat> = alpha * <D^T q, b> + <q, c>    (b in {-1, +1}^bits)

i.e. ``score = row_scale * <w, b> + query_bias`` with ``w = D^T q`` per query and ``row_scale =
alpha`` per code. ``alpha = ||x - c||^2 / <x - c, D b>`` makes the estimate unbiased along the
direction of ``x - c`` (RaBitQ's corrective factor, Gao & Long 2024).

Training (:mod:`quantsearch.training`, torch on CPU) starts from our best untrained code (ITQ
rotation of the centred corpus, per-bit magnitudes in ``D``) and distils the float32 neighbour
rankings of the corpus itself: documents serve as pseudo-queries, never test queries or qrels.
Sign is replaced by ``tanh`` with an annealed scale while training.

Code layout: ``ceil(bits / 8)`` bytes of packed bits (``np.packbits`` order, first bit in the high
bit), then ``alpha`` as little-endian float16 (2 bytes).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import check_number, check_positive_int
from ..exceptions import CorruptIndexError, InvalidArgumentError
from ..kernels import planes_topk
from . import base
from .base import Precision, Quantizer, quantizer_from_config, register_quantizer_name
from .binary import pack_bits
from .bitplanes import factor_bytes, factor_from_bytes
from .head import head_factor, head_project

__all__ = ["LearnedBinaryQuantizer", "load_quantizer", "save_quantizer"]

#: bytes of the per-vector factor stored after the bit plane
FACTOR_BYTES = 2
_FACTOR_DTYPE = "<f2"
# format tag of the files written by save_quantizer
_FILE_FORMAT = "quantsearch-quantizer"
_FILE_VERSION = 1


class LearnedBinaryQuantizer(Quantizer):
    """Quantization-aware 1-bit codes: a projection head trained on the corpus (see the module doc).

    Parameters
    ----------
    bits : int, optional
        Output bits per vector; default the input dimension. More bits than dimensions are allowed.
    hidden : int, default 0
        0 for a linear head; else the width of a ReLU MLP added to the linear map (its output
        layer starts at zero, so training starts from the linear ITQ code).
    epochs : int, default 3
        Passes over the training documents as pseudo-queries (0: the untrained ITQ start).
    lr : float, default 3e-5
        Adam learning rate.
    temperature : float, default 0.05
        Softmax temperature of the listwise distillation (inner products are divided by it).
    seed : int, default 0
        Seeds ITQ, the sampling and the held-out split.
    max_samples : int, default 20000
        Training documents drawn from the calibration sample (the rest only shifts the mean).
    weights : str, optional
        Path of a file written by :func:`save_quantizer` (``quantsearch train``): ``fit`` loads
        that trained head instead of training (the calibration sample only checks the dim).
    """

    kind = "learned"

    # fitted state (saved with an index)
    n_bits_: int
    center_: np.ndarray
    encoder_: np.ndarray
    decoder_: np.ndarray
    hidden_in_: np.ndarray
    hidden_bias_: np.ndarray
    hidden_out_: np.ndarray

    def __init__(
        self,
        bits: int | None = None,
        *,
        hidden: int = 0,
        epochs: int = 3,
        lr: float = 3e-5,
        temperature: float = 0.05,
        seed: int = 0,
        max_samples: int = 20000,
        weights: str | None = None,
    ) -> None:
        self.bits = None if bits is None else check_positive_int(bits, "bits")
        self.hidden = check_positive_int(hidden, "hidden", minimum=0)
        self.epochs = check_positive_int(epochs, "epochs", minimum=0)
        self.lr = check_number(lr, "lr", positive=True)
        self.temperature = check_number(temperature, "temperature", positive=True)
        self.seed = check_positive_int(seed, "seed", minimum=0)
        self.max_samples = check_positive_int(max_samples, "max_samples", minimum=2)
        if weights is not None and not isinstance(weights, (str, os.PathLike)):
            raise InvalidArgumentError(f"weights must be a file path, got {weights!r}")
        self.weights = None if weights is None else os.fspath(weights)
        self._sample: list[np.ndarray] = []
        #: training figures of the last fit (loss per epoch, agreement before/after, seconds)
        self.training_report: dict[str, Any] | None = None

    @property
    def precision(self) -> Precision:
        return Precision.BINARY

    @property
    def name(self) -> str:
        return "qat" if self.bits is None else f"qat{self.bits}"

    @property
    def scan_stage(self) -> str:
        return "scan:qat"

    # ---- fitting ----------------------------------------------------------------------------
    def _reset(self) -> None:
        super()._reset()
        self._sample = []
        self.training_report = None

    def _fit_rows(self, x: np.ndarray) -> None:
        self._sample.append(x)

    def _finish_fit(self) -> None:
        sample = np.concatenate(self._sample) if len(self._sample) > 1 else self._sample[0]
        self._sample = [sample]  # a later partial_fit retrains on everything seen
        if self.weights is not None:
            trained = load_quantizer(self.weights)
            if not isinstance(trained, LearnedBinaryQuantizer):
                raise InvalidArgumentError(
                    f"{self.weights} holds a {trained.kind!r} quantizer, not a learned head"
                )
            if trained.dim_ != sample.shape[1]:
                raise InvalidArgumentError(
                    f"the head in {self.weights} takes {trained.dim_}-d vectors, the sample is "
                    f"{sample.shape[1]}-d"
                )
            if self.bits is not None and trained.n_bits_ != self.bits:
                raise InvalidArgumentError(
                    f"the head in {self.weights} has {trained.n_bits_} bits, not {self.bits}"
                )
            self.set_state({k: v for k, v in trained.get_state().items() if k != "n_samples_seen_"})
            return
        from ..training import train_head

        result = train_head(
            sample,
            bits=self.bits or sample.shape[1],
            hidden=self.hidden,
            epochs=self.epochs,
            lr=self.lr,
            temperature=self.temperature,
            seed=self.seed,
            max_samples=self.max_samples,
        )
        self.training_report = result.report
        state = result.state
        self.n_bits_ = int(state["encoder"].shape[0])
        self.center_ = state["center"]
        self.encoder_ = state["encoder"]
        self.decoder_ = state["decoder"]
        self.hidden_in_ = state["hidden_in"]
        self.hidden_bias_ = state["hidden_bias"]
        self.hidden_out_ = state["hidden_out"]

    def _head(self) -> dict[str, np.ndarray]:
        return {
            "encoder": self.encoder_,
            "hidden_in": self.hidden_in_,
            "hidden_bias": self.hidden_bias_,
            "hidden_out": self.hidden_out_,
        }

    # ---- codes ------------------------------------------------------------------------------
    @property
    def plane_bytes(self) -> int:
        """Bytes of the packed bit plane at the start of each code."""
        self.check_fitted()
        return (int(self.n_bits_) + 7) // 8

    @property
    def code_bytes(self) -> int:
        return self.plane_bytes + FACTOR_BYTES

    def _encode(self, x: np.ndarray) -> np.ndarray:
        centred = x - self.center_
        z = head_project(self._head(), centred)
        signs = np.where(z > 0, np.float32(1.0), np.float32(-1.0))
        alpha = head_factor(centred, signs, self.decoder_)
        return np.concatenate([pack_bits(z > 0), factor_bytes(alpha, _FACTOR_DTYPE)], axis=1)

    def split_codes(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(packed bit plane (n, plane_bytes) uint8, row scale alpha (n,) float32) of codes."""
        return codes[:, : self.plane_bytes], factor_from_bytes(codes, self.plane_bytes, _FACTOR_DTYPE)

    def signs(self, plane: np.ndarray) -> np.ndarray:
        """Packed bits (n, plane_bytes) as +-1 float32 (n, bits)."""
        bits = np.unpackbits(plane, axis=1, count=int(self.n_bits_))
        return bits.astype(np.float32) * np.float32(2.0) - np.float32(1.0)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        """The reconstruction ``c + alpha * D b`` (n, dim) float32 the scores are inner products with."""
        plane, alpha = self.split_codes(codes)
        return (self.signs(plane) @ self.decoder_.T * alpha[:, None] + self.center_).astype(np.float32)

    # ---- scoring: score = row_scale * <w, b> + query_bias ----------------------------------------
    def query_form(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(w (nq, bits), query_bias (nq,))`` of float queries: ``w = D^T q``, bias ``<q, c>``."""
        q = np.asarray(queries, np.float32)
        w = np.ascontiguousarray(q @ self.decoder_, dtype=np.float32)
        return w, (q @ self.center_).astype(np.float32)

    def score_all(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        w, bias = self.query_form(queries)
        plane, alpha = self.split_codes(codes)
        dots = w @ self.signs(plane).T  # the float-query x bit-plane product a popcount kernel can do
        return np.ascontiguousarray(dots * alpha[None, :] + bias[:, None], dtype=np.float32)

    def scan_topk(
        self, queries: np.ndarray, codes: np.ndarray, k: int, *, valid: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidate scan on the popcount kernel: <w, s> = 2 <w, b> - sum(w) for s = 2b - 1 in {-1, +1},
        with the query weights quantized to ``base.SCAN_QUERY_BITS`` levels (see ``planes_topk``)."""
        w, bias = self.query_form(queries)
        _, alpha = self.split_codes(codes)
        scores, rows = planes_topk(
            w, codes, k, planes=1, plane_coef=np.array([2.0], np.float32), row_scale=alpha,
            query_offset=-w.sum(axis=1), valid=valid, query_bits=base.SCAN_QUERY_BITS,
        )  # fmt: skip
        return (scores + bias[:, None]).astype(np.float32), rows

    def score(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        nq, c, width = codes.shape
        w, bias = self.query_form(queries)
        plane, alpha = self.split_codes(codes.reshape(-1, width))
        signs = self.signs(plane).reshape(nq, c, -1)
        dots = np.einsum("qcb,qb->qc", signs, w, dtype=np.float32)
        return (dots * alpha.reshape(nq, c) + bias[:, None]).astype(np.float32)


def _default_qat() -> LearnedBinaryQuantizer:
    return LearnedBinaryQuantizer()


register_quantizer_name("qat", _default_qat)
# the untrained start (ITQ + per-bit magnitudes + unbiased factor): the baseline training must beat
register_quantizer_name("qat0", lambda: LearnedBinaryQuantizer(epochs=0))


# ---- the trained-head file ---------------------------------------------------------------------------
def save_quantizer(quantizer: Quantizer, path: str | os.PathLike[str]) -> Path:
    """Write a fitted quantizer (config + fitted arrays) to one ``.npz`` file.

    The file holds ``__config__`` (JSON: format, version, kind + params) and every fitted array;
    :func:`load_quantizer` reads it back. Returns the path written.
    """
    quantizer.check_fitted()
    target = Path(path)
    header = {"format": _FILE_FORMAT, "version": _FILE_VERSION, "quantizer": quantizer.to_config()}
    arrays = {f"state.{k}": v for k, v in quantizer.get_state().items()}
    with open(target, "wb") as fh:  # a file object: np.savez would append ".npz" to a bare name
        np.savez(fh, __config__=np.array(json.dumps(header)), **arrays)  # type: ignore[arg-type]
    return target


def load_quantizer(path: str | os.PathLike[str]) -> Quantizer:
    """Read a quantizer written by :func:`save_quantizer` (e.g. ``quantsearch train --out``), fitted.

    A learned quantizer comes back with ``weights`` set to ``path``: an index created with it
    (``Index.create(..., binary=load_quantizer(path))``) reuses the trained head at calibration
    instead of training again, and saves the head's arrays with its own calibration.
    """
    source = Path(path)
    if not source.is_file():
        raise InvalidArgumentError(f"no quantizer file at {source}")
    try:
        with np.load(source, allow_pickle=False) as data:
            header = json.loads(str(data["__config__"]))
            state = {k[len("state.") :]: data[k] for k in data.files if k.startswith("state.")}
    except (OSError, ValueError, KeyError) as exc:
        raise CorruptIndexError(f"{source} is not a quantizer file: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != _FILE_FORMAT:
        raise CorruptIndexError(f"{source} is not a quantizer file (no {_FILE_FORMAT} header)")
    if header.get("version") != _FILE_VERSION:
        raise CorruptIndexError(f"{source} has quantizer file version {header.get('version')!r}")
    config = header["quantizer"]
    if config.get("kind") == LearnedBinaryQuantizer.kind:
        config = {"kind": config["kind"], "params": {**config.get("params", {}), "weights": str(source)}}
    quantizer = quantizer_from_config(config)
    quantizer.set_state(state)
    if not quantizer.is_fitted:
        raise CorruptIndexError(f"{source} holds no fitted state")
    return quantizer
