"""Corpus-only (inverse cloze) recipes compared on ONE fixed set of held-out training pairs (issue 17).

The validation set is the same for every recipe of a collection, whatever its training pairs: 15% of
the corpus's usable sentences (at least 4 words, no repeat of a title or of another sentence), each
with its passage as the relevant document. Every recipe's training pairs leave those sentences out.
A recipe is a JSON object with ``pairs`` (keyword arguments of :func:`inverse_cloze_pairs`) and
``head`` (fields of :class:`HeadConfig`); one JSON line per recipe and collection gives the
validation NDCG@10 (Hamming, query coded too) of the ITQ start and of the kept epoch. The recipe is
chosen on these validation figures only. With ``--test`` each line also gives the kept head's test
NDCG@10 (1-bit Hamming, float query x 1-bit, float32; exact brute force as trained_binary.py's
curve), recorded for every candidate on every collection so that nothing is picked on one test
split; the final figures come from trained_binary.py (``run_eval``)::

    nice -n 19 .venv/bin/python benchmarks/trained_binary_cloze_sweep.py cranfield,cisi \\
        '[{"pairs": {"per_doc": null, "drop_duplicates": true}, "head": {"epochs": 15, "lr": 3e-4}}]' --test

The corpus embeddings are the shared ones (../shared/embeddings, as trained_binary.py trains on);
every sentence and title of a corpus is embedded once (cached) and looked up, whatever the recipe.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from trained_binary import quick_ndcg, shared_embeddings

from quantsearch.datasets import load_beir
from quantsearch.embed import Embedder, EmbeddingCache
from quantsearch.finetune import CodeHead, HeadConfig, head_positives, inverse_cloze_pairs, train_code_head
from quantsearch.finetune.pairs import _corpus_only, _normal

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VAL_SHARE = 0.15


def validation_set(texts: list[str], titles: list[str]) -> tuple[list[str], list[np.ndarray]]:
    """15% of the usable, non-repeated sentences (seeded), each with its passage's row."""
    every = inverse_cloze_pairs(texts, titles=titles, per_doc=None, drop_duplicates=True, seed=0)
    rng = np.random.default_rng(12345)
    pick = np.sort(rng.permutation(len(every))[: int(round(VAL_SHARE * len(every)))])
    return [every.query_texts[i] for i in pick], [np.array([every.doc_groups[i]], np.int64) for i in pick]


def _pool(texts: list[str], titles: list[str], cache: EmbeddingCache, embedder: Embedder) -> Any:
    """Every sentence and title of the corpus, embedded once: a lookup text -> embedding row."""
    every = inverse_cloze_pairs(texts, titles=titles, per_doc=None, title_queries=True, seed=0)
    pool = sorted(set(every.query_texts))
    vectors, _ = cache.embed(embedder, pool)
    row = {t: i for i, t in enumerate(pool)}
    return lambda batch: np.ascontiguousarray(vectors[[row[t] for t in batch]])


def one(
    name: str, recipe: dict[str, Any], cache: EmbeddingCache, embedder: Embedder, test: bool
) -> dict[str, Any]:
    root = SHARED / "datasets" / name
    texts, titles = _corpus_only(root)
    dataset = load_beir(root, "test")
    if dataset.corpus_texts != texts:
        raise RuntimeError(f"{name}: corpus order differs between the loader and corpus.jsonl")
    docs, test_queries = shared_embeddings(dataset, SHARED / "embeddings" / name)
    lookup = _pool(texts, titles, cache, embedder)
    val_texts, val_pos = validation_set(texts, titles)
    held = {_normal(t) for t in val_texts}
    pairs = inverse_cloze_pairs(texts, titles=titles, **recipe.get("pairs", {}))
    keep = [i for i, q in enumerate(pairs.query_texts) if _normal(q) not in held]
    positives = head_positives(pairs)
    queries = lookup([pairs.query_texts[i] for i in keep])
    config = HeadConfig(**recipe.get("head", {}))
    t0 = time.perf_counter()
    head = train_code_head(
        docs, queries, [positives[i] for i in keep], config, validation=(lookup(val_texts), val_pos)
    )
    r = head.report
    out = {
        "ds": name,
        "recipe": recipe,
        "train_queries": len(keep),
        "val_queries": len(val_texts),
        "kept": r["kept_epoch"],
        "drift": r["drift"],
        "val0": r["val_ndcg@10_itq_start"],
        "val": r["val_ndcg@10_kept"],
        "vals": [e["val_ndcg@10"] for e in r["epochs"]],
        "s": round(time.perf_counter() - t0, 1),
    }
    if test:
        kept = CodeHead(head.weight, head.bias)
        figures = quick_ndcg(dataset, kept.apply(docs), kept.apply(test_queries))
        out["test"] = {k: round(v, 4) for k, v in figures.items()}
    return out


def main() -> int:
    args = [a for a in sys.argv[1:] if a != "--test"]
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    names, recipes = args[0].split(","), json.loads(args[1])
    cache = EmbeddingCache("/work/scratch/trained-binary/cache")
    embedder = Embedder()
    for recipe in recipes:
        for name in names:
            print(json.dumps(one(name, recipe, cache, embedder, "--test" in sys.argv)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
