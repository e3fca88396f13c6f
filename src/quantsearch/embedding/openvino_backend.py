"""OpenVINO backends: the ONNX export converted to OpenVINO IR, float32 or with int8 weights.

``openvino`` converts the cached float32 ONNX export (``openvino.convert_model``) and keeps float32 weights.
``openvino-int8`` compresses the weights of every MatMul to int8 with NNCF (``nncf.compress_weights``,
asymmetric per channel), which needs no calibration data. Static (activation) int8 quantization as in
sentence-transformers' ``export_static_quantized_openvino_model`` needs a calibration dataset that
is downloaded there; it is not used here so that everything stays offline.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from quantsearch.embedding.backends import Backend, exported_model, require
from quantsearch.embedding.onnx_backend import onnx_model_file
from quantsearch.embedding.transformer import TransformerRunner, check_mean_pooling

IR_FILE = "model.xml"


def _build(onnx_file: Path, out: Path, *, int8: bool) -> None:
    import openvino as ov

    model = ov.convert_model(str(onnx_file))
    if int8:
        import nncf

        model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
    ov.save_model(model, str(out / IR_FILE), compress_to_fp16=False)


def load_openvino_runner(
    model_dir: Path, backend: Backend, *, max_seq_length: int | None = None, threads: int | None = None
) -> TransformerRunner:
    """A :class:`TransformerRunner` over an OpenVINO CPU compiled model of the cached export."""
    require("openvino")
    int8 = backend is Backend.OPENVINO_INT8
    if int8:
        require("nncf")
    check_mean_pooling(model_dir)
    onnx_file = onnx_model_file(model_dir, Backend.ONNX)
    packages = ("torch", "transformers", "onnx", "onnxruntime", "openvino", *(("nncf",) if int8 else ()))
    folder = exported_model(
        model_dir, backend, lambda out: _build(onnx_file, out, int8=int8), packages=packages, isa=int8
    )
    import openvino as ov

    core = ov.Core()
    config = {
        "INFERENCE_NUM_THREADS": str(threads or (os.cpu_count() or 1)),
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",  # no bf16 on CPUs that have it: agreement with torch float32
    }
    compiled = core.compile_model(str(folder / IR_FILE), "CPU", config)
    names = {p.get_any_name() for p in compiled.inputs}
    request = compiled.create_infer_request()

    def forward(ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        feeds = {
            k: v
            for k, v in (("input_ids", ids), ("attention_mask", mask), ("token_type_ids", types))
            if k in names
        }
        result = request.infer(feeds)
        return np.asarray(next(iter(result.values())))

    return TransformerRunner(model_dir, forward, max_seq_length=max_seq_length)
