"""ONNX Runtime backends: the encoder exported from the torch model, float32 or dynamically quantized int8.

Export (once per model, cached by :func:`~quantsearch.embedding.backends.exported_model`):

1. ``torch.onnx.export`` of the Hugging Face encoder loaded with eager attention (the attention pattern
   that ONNX Runtime's transformer optimizer fuses), dynamic batch and sequence axes, opset 17;
2. ``onnxruntime.transformers.optimizer`` (model type "bert"): fused attention, skip-layer-norm, bias-GELU;
3. for ``onnx-int8``: ``onnxruntime.quantization.quantize_dynamic`` with signed int8 weights per output
   channel and activations quantized per batch at run time (the recipe of sentence-transformers'
   ``export_dynamic_quantized_onnx_model``, written here without optimum, which does not install beside
   transformers 5).

sentence-transformers' own ``backend="onnx"`` needs optimum; here ``pip install optimum[onnxruntime]`` would
downgrade transformers to 4.x, so the export is done directly with torch and onnxruntime.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from quantsearch.embedding.backends import Backend, exported_model, require
from quantsearch.embedding.transformer import TransformerRunner, check_mean_pooling

logger = logging.getLogger(__name__)

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
FP32_FILE = "model.onnx"
INT8_FILE = "model_qint8.onnx"


def export_onnx(model_dir: Path, out_dir: Path) -> Path:
    """Export the encoder of ``model_dir`` to ``out_dir/model.onnx`` (optimised, float32).

    Returns
    -------
    Path
        The .onnx file.
    """
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    config = model.config

    class _Encoder(torch.nn.Module):  # keyword call: positional order differs between transformers releases
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    raw = out_dir / "raw.onnx"
    sample = torch.ones((2, 16), dtype=torch.long)
    axes = {name: {0: "batch", 1: "sequence"} for name in (*_INPUTS, "last_hidden_state")}
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about python bools in the attention mask code
        torch.onnx.export(
            _Encoder(model),
            (sample, sample, torch.zeros_like(sample)),
            str(raw),
            input_names=list(_INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    target = out_dir / FP32_FILE
    try:
        from onnxruntime.transformers import optimizer

        optimized = optimizer.optimize_model(
            str(raw),
            model_type="bert",
            num_heads=int(getattr(config, "num_attention_heads", 0)),
            hidden_size=int(getattr(config, "hidden_size", 0)),
            opt_level=1,
        )
        optimized.save_model_to_file(str(target))
        raw.unlink()
    except Exception as exc:  # the optimizer is an optimisation: the plain export is still correct
        logger.warning("onnxruntime transformer optimizer failed (%s); keeping the plain export", exc)
        os.replace(raw, target)
    return target


def quantize_onnx(source: Path, target: Path) -> None:
    """Dynamic int8 quantization: int8 weights per output channel, activations quantized per batch."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=False,
        # fused ops (Attention, BiasGelu) come from another domain: shape inference cannot type them
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def onnx_model_file(model_dir: Path, backend: Backend) -> Path:
    """The cached .onnx file of ``model_dir`` for ``onnx`` or ``onnx-int8``, exported if needed."""
    require("onnxruntime")
    require("onnx")
    check_mean_pooling(model_dir)
    packages = ("torch", "transformers", "onnx", "onnxruntime")
    if backend is Backend.ONNX:
        return exported_model(
            model_dir, backend, lambda out: _export_fp32(model_dir, out), packages=packages
        ) / (FP32_FILE)
    fp32 = onnx_model_file(model_dir, Backend.ONNX)
    folder = exported_model(
        model_dir, backend, lambda out: quantize_onnx(fp32, out / INT8_FILE), packages=packages, isa=True
    )
    return folder / INT8_FILE


def _export_fp32(model_dir: Path, out: Path) -> None:
    export_onnx(model_dir, out)


def session_options(threads: int | None) -> Any:
    """ONNX Runtime session options: ``threads`` intra-op threads (all cores by default), sequential graph.

    The intra-op threads do not spin while they wait for work (``session.intra_op.allow_spinning=0``).
    ONNX Runtime's default busy-waits between ops, which costs a core per thread whenever the process
    shares the CPU: with spinning, a single 20-token query took 29 ms p50 instead of 8 ms on the shared
    2-core machine, and long-document batches were 9% slower (docs/benchmarks.md, issue 14). The
    vectors do not change: spinning only decides how idle threads wait.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or (os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def load_onnx_runner(
    model_dir: Path, backend: Backend, *, max_seq_length: int | None = None, threads: int | None = None
) -> TransformerRunner:
    """A :class:`TransformerRunner` over the ONNX Runtime session of the cached export."""
    import onnxruntime as ort

    path = onnx_model_file(model_dir, backend)
    session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}

    def forward(ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        feeds = {k: v for k, v in zip(_INPUTS, (ids, mask, types), strict=True) if k in wanted}
        return session.run(None, feeds)[0]

    return TransformerRunner(model_dir, forward, max_seq_length=max_seq_length)
