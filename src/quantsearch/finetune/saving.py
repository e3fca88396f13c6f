"""Writing a trained model folder (sentence-transformers layout plus the training report), atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..exceptions import InvalidArgumentError
from .head import CodeHead
from .surrogate import _imports

#: File written into a fine-tuned model folder with the recipe and the training figures.
TRAINING_REPORT = "quantsearch_training.json"


def save_with_head(
    head: CodeHead,
    out: str | os.PathLike[str],
    *,
    model: str | None = None,
    report: dict[str, Any] | None = None,
) -> Path:
    """Write the base model with ``head`` appended as a sentence-transformers folder.

    The folder is the base model's modules followed by a ``Dense`` layer (identity activation)
    holding the head: its output's sign bits are the trained codes, and any sentence-transformers
    user (``quantsearch --model FOLDER``) gets them.
    """
    out_path = Path(out)
    _check_out(out_path)
    _imports()
    import importlib

    import torch

    try:
        dense_cls = importlib.import_module("sentence_transformers.base.modules").Dense
    except (ImportError, AttributeError):  # sentence-transformers < 5.4
        dense_cls = importlib.import_module("sentence_transformers.models").Dense

    from ..embed import Embedder

    base = Embedder(model).model
    bits, dim = head.weight.shape
    base.append(
        dense_cls(
            dim,
            bits,
            bias=True,
            activation_function=None,
            init_weight=torch.from_numpy(head.weight.copy()),
            init_bias=torch.from_numpy(head.bias.copy()),
        )
    )
    _save(base, out_path, {"base_model": Embedder(model).name, "head": head.report, **(report or {})})
    return out_path


def _check_out(out_path: Path) -> None:
    if out_path.exists() and (not out_path.is_dir() or any(out_path.iterdir())):
        raise InvalidArgumentError(f"--out {out_path} exists and is not an empty folder")
    if not out_path.parent.is_dir():
        raise InvalidArgumentError(f"--out: folder {out_path.parent} does not exist")


def _save(model: Any, out_path: Path, report: dict[str, Any]) -> None:
    """Write the model folder next to ``out_path`` and rename it into place (no half-written model)."""
    tmp = Path(tempfile.mkdtemp(dir=out_path.parent, prefix=f".{out_path.name}-"))
    try:
        model.save(str(tmp))
        (tmp / TRAINING_REPORT).write_text(json.dumps(report, indent=1), encoding="utf-8")
        if out_path.exists():
            out_path.rmdir()  # empty (checked at the start)
        os.replace(tmp, out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
