"""``quantsearch train``: pairs, cached base embeddings, the code head, optionally end to end, saved."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import FinetuneConfig, HeadConfig
from .encoder import finetune
from .head import train_code_head
from .pairs import _corpus_only, head_positives, training_pairs
from .saving import TRAINING_REPORT, _check_out, save_with_head


def train_model(
    dataset_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    model: str | None = None,
    pairs: str = "auto",
    head: HeadConfig | Mapping[str, Any] | None = None,
    e2e: FinetuneConfig | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """``quantsearch train``: train a model for 1-bit codes on a BEIR folder and save it to ``out``.

    1. Pairs from the collection (:func:`training_pairs`: train qrels, else inverse cloze).
    2. The code head on the base model's frozen (cached) embeddings (:func:`train_code_head`).
    3. With ``e2e`` (``steps > 0``): the encoder (or its top ``e2e.unfreeze_layers`` layers) and the
       head fine-tuned end to end (:func:`finetune`), starting from step 2's model.

    ``head``: a full :class:`HeadConfig`, or a mapping of fields to change in the recipe for the kind
    of pairs found (:meth:`HeadConfig.for_pairs`: train qrels or inverse cloze), or None for that
    recipe unchanged.

    Returns
    -------
    dict
        The training report (also written to ``out/quantsearch_training.json``).
    """
    from ..embed import Embedder, EmbeddingCache

    out_path = Path(out)
    _check_out(out_path)
    given = head if isinstance(head, HeadConfig) else None
    overrides = dict(head) if isinstance(head, Mapping) else {}
    (given or HeadConfig(**overrides)).validate()  # fail before any embedding
    if e2e is not None:
        e2e.validate()
    t0 = time.perf_counter()
    seed = given.seed if given is not None else overrides.get("seed", 0)
    train_pairs = training_pairs(dataset_dir, pairs=pairs, seed=seed)
    config = given or HeadConfig.for_pairs(train_pairs.source, **overrides)
    embedder = Embedder(model)
    cache = EmbeddingCache(cache_dir)
    corpus = _corpus_only(Path(dataset_dir))[0]
    docs, _ = cache.embed(embedder, corpus, progress=progress)
    queries, _ = cache.embed(embedder, train_pairs.query_texts, progress=progress)
    code_head = train_code_head(docs, queries, head_positives(train_pairs), config)
    info = {
        "pairs": {"source": train_pairs.source, "queries": len(train_pairs)},
        "embed_seconds": round(time.perf_counter() - t0 - code_head.report["seconds"], 1),
    }
    if e2e is None or e2e.steps == 0:
        save_with_head(code_head, out_path, model=model, report=info)
    else:
        staging = Path(tempfile.mkdtemp(dir=out_path.parent, prefix=f".{out_path.name}-head-"))
        try:
            save_with_head(code_head, staging / "model", model=model, report=info)
            finetune(train_pairs, out_path, model=str(staging / "model"), config=e2e, progress=progress)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    report = json.loads((out_path / TRAINING_REPORT).read_text(encoding="utf-8"))
    report.update({"base_model": embedder.name, "head": code_head.report, **info})
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    (out_path / TRAINING_REPORT).write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report
