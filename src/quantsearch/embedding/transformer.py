"""Run an exported sentence-transformers encoder: tokenize, length-sorted batches, mean pooling.

The ONNX Runtime and OpenVINO backends share everything but the forward pass: the Hugging Face fast
tokenizer (``tokenizer.json``, truncated to the model's ``max_seq_length``), batches of texts of similar
token length (little padding), mean pooling over the attention mask and the optional L2 normalisation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from quantsearch.exceptions import InvalidArgumentError

logger = logging.getLogger(__name__)

#: (input_ids, attention_mask, token_type_ids) int64 (b, s) -> token embeddings float32 (b, s, d)
Forward = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def check_mean_pooling(model_dir: Path) -> bool:
    """Raise unless the model pools by the mean of its tokens (the pooling the exports reproduce).

    Returns
    -------
    bool
        Whether the model ends with a Normalize module (its output is unit-norm whatever the caller asks).
    """
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        raise InvalidArgumentError(f"{model_dir} is not a sentence-transformers folder (no modules.json)")
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k not in ("Normalize",) for k in kinds[2:]):
        raise InvalidArgumentError(
            f"the onnx/openvino backends support Transformer + mean Pooling (+ Normalize) models; "
            f"{model_dir} has {kinds}"
        )
    pooling = json.loads((model_dir / modules[1]["path"] / "config.json").read_text(encoding="utf-8"))
    modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
    if modes != ["pooling_mode_mean_tokens"]:
        raise InvalidArgumentError(
            f"the onnx/openvino backends support mean pooling only; {model_dir} uses {modes}"
        )
    return "Normalize" in kinds[2:]


def model_max_seq_length(model_dir: Path, override: int | None) -> int:
    """The token limit: ``override``, else the model's ``sentence_bert_config.json``, else 512."""
    if override is not None:
        return override
    config = model_dir / "sentence_bert_config.json"
    if config.is_file():
        value = json.loads(config.read_text(encoding="utf-8")).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    return 512


class TransformerRunner:
    """Embed texts with ``forward`` over an exported encoder.

    Parameters
    ----------
    model_dir : Path
        The sentence-transformers folder (its tokenizer is used).
    forward : callable
        ``forward(input_ids, attention_mask, token_type_ids) -> last_hidden_state``, all int64 (b, s) in,
        float32 (b, s, dim) out.
    max_seq_length : int, optional
        Token limit; the model's own by default.
    """

    def __init__(self, model_dir: Path, forward: Forward, *, max_seq_length: int | None = None) -> None:
        from tokenizers import Tokenizer

        self.max_seq_length = model_max_seq_length(model_dir, max_seq_length)
        self.tokenizer: Any = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_seq_length)
        self.tokenizer.no_padding()
        self.forward = forward
        self.model_normalizes = check_mean_pooling(model_dir)

    def encode(self, texts: Sequence[str], *, batch_size: int, normalize: bool) -> np.ndarray:
        """Embed ``texts``.

        Texts are tokenized once, then run in batches of similar length (sorted by token count, so a batch
        pads to its own longest text rather than the model's limit) and put back in input order.

        Returns
        -------
        ndarray of shape (len(texts), dim), float32
        """
        if len(texts) == 1:  # a query: no sorting, no padding, no mask to weigh by
            return self._encode_one(texts[0], normalize=normalize)
        encodings = self.tokenizer.encode_batch(list(texts))
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(-lengths, kind="stable")  # longest first: a memory problem shows at once
        out: np.ndarray | None = None
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = int(lengths[rows].max())
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for i, r in enumerate(rows):
                n = int(lengths[r])
                ids[i, :n] = encodings[r].ids
                mask[i, :n] = 1
            hidden = np.asarray(self.forward(ids, mask, np.zeros_like(ids)), dtype=np.float32)
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            if out is None:
                out = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
            out[rows] = pooled
        assert out is not None
        if normalize or self.model_normalizes:  # as sentence-transformers: the model's Normalize module
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def _encode_one(self, text: str, *, normalize: bool) -> np.ndarray:
        """One text: its tokens as a (1, n) batch with a mask of ones, pooled by a plain mean."""
        ids = np.asarray(self.tokenizer.encode(text).ids, dtype=np.int64)[None, :]
        ones = np.ones_like(ids)
        hidden = np.asarray(self.forward(ids, ones, np.zeros_like(ids)), dtype=np.float32)
        out = hidden[0].mean(axis=0, keepdims=True)
        if normalize or self.model_normalizes:
            out /= max(float(np.linalg.norm(out)), 1e-12)
        return out
