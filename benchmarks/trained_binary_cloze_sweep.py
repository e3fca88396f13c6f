"""Corpus-only (inverse cloze) recipes compared on ONE fixed set of held-out training pairs (issue 17).

The validation set is the same for every recipe of a collection, whatever its training pairs: 15% of
the corpus's usable sentences (at least 4 words, no repeat of a title or of another sentence), each
with its passage as the relevant document. Every recipe's training pairs leave those sentences out.
A recipe is a JSON object with ``pairs`` (keyword arguments of :func:`inverse_cloze_pairs`) and
``head`` (fields of :class:`HeadConfig`); one JSON line per recipe and collection gives the
validation NDCG@10 (Hamming, query coded too) of the ITQ start and of the kept epoch. The test
queries are never read: choose the recipe here, then measure it once with trained_binary.py::

    nice -n 19 .venv/bin/python benchmarks/trained_binary_cloze_sweep.py cranfield,cisi \\
        '[{"pairs": {"per_doc": null, "drop_duplicates": true}, "head": {"epochs": 15, "lr": 3e-4}}]'
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from quantsearch.embed import Embedder, EmbeddingCache
from quantsearch.finetune import HeadConfig, head_positives, inverse_cloze_pairs, train_code_head
from quantsearch.finetune.pairs import _corpus_only, _normal

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VAL_SHARE = 0.15


def validation_set(texts: list[str], titles: list[str]) -> tuple[list[str], list[np.ndarray]]:
    """15% of the usable, non-repeated sentences (seeded), each with its passage's row."""
    every = inverse_cloze_pairs(texts, titles=titles, per_doc=None, drop_duplicates=True, seed=0)
    rng = np.random.default_rng(12345)
    pick = np.sort(rng.permutation(len(every))[: int(round(VAL_SHARE * len(every)))])
    return [every.query_texts[i] for i in pick], [np.array([every.doc_groups[i]], np.int64) for i in pick]


def one(name: str, recipe: dict[str, Any], cache: EmbeddingCache, embedder: Embedder) -> dict[str, Any]:
    root = SHARED / "datasets" / name
    texts, titles = _corpus_only(root)
    docs, _ = cache.embed(embedder, texts)
    val_texts, val_pos = validation_set(texts, titles)
    held = {_normal(t) for t in val_texts}
    pairs = inverse_cloze_pairs(texts, titles=titles, **recipe.get("pairs", {}))
    keep = [i for i, q in enumerate(pairs.query_texts) if _normal(q) not in held]
    positives = head_positives(pairs)
    train_texts = [pairs.query_texts[i] for i in keep]
    queries, _ = cache.embed(embedder, train_texts)
    val_q, _ = cache.embed(embedder, val_texts)
    config = HeadConfig(**recipe.get("head", {}))
    t0 = time.perf_counter()
    head = train_code_head(docs, queries, [positives[i] for i in keep], config, validation=(val_q, val_pos))
    r = head.report
    return {
        "ds": name,
        "recipe": recipe,
        "train_queries": len(keep),
        "val_queries": len(val_texts),
        "kept": r["kept_epoch"],
        "val0": r["val_ndcg@10_itq_start"],
        "val": r["val_ndcg@10_kept"],
        "vals": [e["val_ndcg@10"] for e in r["epochs"]],
        "s": round(time.perf_counter() - t0, 1),
    }


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    names, recipes = sys.argv[1].split(","), json.loads(sys.argv[2])
    cache = EmbeddingCache("/work/scratch/trained-binary/cache")
    embedder = Embedder()
    for recipe in recipes:
        for name in names:
            print(json.dumps(one(name, recipe, cache, embedder)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
