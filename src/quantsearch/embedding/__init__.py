"""Embedding backends beyond torch: ONNX Runtime, OpenVINO, model2vec static, and the ``auto`` choice.

The heavy modules (onnx_backend, openvino_backend, static_backend, auto) import their libraries lazily; this
package imports only the backend names.
"""

from __future__ import annotations

from quantsearch.embedding.backends import BACKENDS, Backend, parse_backend

__all__ = ["BACKENDS", "Backend", "parse_backend"]
