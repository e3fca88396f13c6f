"""The HTTP endpoints over a multi-vector (MUVERA) index: the same routes and bodies as a single-vector one.

:class:`MultiVectorService` has the methods of :class:`~quantsearch.server.service.SearchService`
that the routes call, on an open :class:`~quantsearch.multivector.MultiVectorIndex`:

* ``POST /search`` with a text query: the query's token vectors -> its FDE -> the scan of the 1-bit
  FDE codes in RAM -> ``k x oversampling`` candidates (default :data:`DEFAULT_CANDIDATES`) ->
  Chamfer over their int8 token vectors read from disk. ``stages`` names what runs after the FDE
  scan: ``["chamfer"]`` (the default) or ``[]`` (the FDE codes alone). ``compare`` adds the exact
  brute-force Chamfer over every document's tokens, and the overlap of the two top k.
* ``POST /documents`` with texts (token-embedded by the index's model), ``GET /documents/{id}``,
  ``GET /stats`` (the tiers are the FDE codes in RAM and the token tier on disk).

A multi-vector index has no single query vector, metadata, filters, lexical tier or deletes: asking
for them is an :class:`~quantsearch.exceptions.InvalidArgumentError` (400) that says so.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..exceptions import InvalidArgumentError, QuantsearchError
from ..multivector import MultiVectorIndex
from ..multivector.tokens import TokenBatch
from ..results import SearchResults
from .errors import LimitError, PayloadTooLargeError
from .service import _INT_ID, Limits, logger

__all__ = ["DEFAULT_CANDIDATES", "MultiVectorService"]

#: FDE candidates reranked by Chamfer when the request gives no oversampling
DEFAULT_CANDIDATES = 100
#: the stage after the FDE scan, as ``stages`` names it
RERANK_STAGE = "chamfer"


class MultiVectorService:
    """The operations behind the API, on one open :class:`MultiVectorIndex` (text queries only).

    Parameters
    ----------
    index : MultiVectorIndex
    limits : Limits
        ``max_exact_bytes`` bounds the int8 token bytes an exact comparison reads.
    """

    multivector = True

    def __init__(self, index: MultiVectorIndex, limits: Limits) -> None:
        self.index = index
        self.limits = limits
        self._embed_lock = threading.Lock()  # tokenizers are not safe to share between threads
        self._write_lock = threading.Lock()  # one add at a time (the index's writer lock spans processes)
        self._exact_lock = threading.Lock()  # one exact scan at a time: each reads every token
        self.exact_tier = "chamfer:int8"

    def close(self) -> None:
        self.index.close()

    # ---- embedding ----------------------------------------------------------------------------
    def load_model(self) -> None:
        """Load the token model now (else the first text query pays); a failure is logged."""
        if self.index.model is None:
            return
        try:
            self._embed(["warm-up"], is_query=True)
        except QuantsearchError as exc:
            logger.warning("text queries are unavailable: %s", exc)

    def _embed(self, texts: Sequence[str], *, is_query: bool) -> TokenBatch:
        if self.index.model is None:
            raise InvalidArgumentError(
                "this multi-vector index records no token model (it was built from token arrays), "
                "so texts cannot be embedded"
            )
        with self._embed_lock:
            return self.index.embedder.embed(list(texts), is_query=is_query)

    # ---- search ---------------------------------------------------------------------------------
    def search(
        self,
        *,
        query: str | None,
        vector: Sequence[float] | None,
        k: int,
        oversampling: float | None,
        stages: Sequence[str] | None,
        compare: bool,
        filter: dict[str, Any] | None = None,  # noqa: A002 - the API's field name
        nprobe: int | None = None,
        ef: int | None = None,
        target_recall: float | None = None,
        mode: str = "dense",
        fusion: str | None = None,
    ) -> dict[str, Any]:
        """Run one text query; returns the body of a :class:`~quantsearch.server.models.SearchResponse`."""
        t_start = time.perf_counter()
        limits = self.limits
        if vector is not None or query is None:
            raise InvalidArgumentError(
                "vector: a multi-vector index is searched by text (its documents are token sets, "
                "not one vector); send 'query'"
            )
        if mode != "dense" or fusion is not None:
            raise InvalidArgumentError(
                f"mode {mode!r}: a multi-vector index has no lexical tier (only the default mode)"
            )
        unsupported = {"filter": filter, "nprobe": nprobe, "ef": ef, "target_recall": target_recall}
        given = [name for name, value in unsupported.items() if value is not None]
        if given:
            raise InvalidArgumentError(f"{given[0]} is not supported by a multi-vector index")
        if k > limits.max_k:
            raise LimitError(f"k must be <= {limits.max_k} (this server's limit), got {k}")
        if oversampling is not None and oversampling > limits.max_oversampling:
            raise LimitError(
                f"oversampling must be <= {limits.max_oversampling:g} (this server's limit), "
                f"got {oversampling:g}"
            )
        rerank = self._rerank(stages)
        if compare:
            self._check_exact()
        n = len(self.index)
        k = min(k, n)
        if k == 0:
            return {"k": 0, "hits": [], "timings_ms": {"total": _ms(t_start)}, "candidates": {}}
        t0 = time.perf_counter()
        tokens = self._embed([query], is_query=True)
        embed_ms = _ms(t0)
        candidates = max(k, DEFAULT_CANDIDATES if oversampling is None else math.ceil(k * oversampling))
        res = self.index.search(tokens, k, candidates=candidates, rerank=rerank, with_text=True)
        timings = {"embed": embed_ms, **{name: ms for name, ms in res.timings.items() if name != "embed"}}
        hits = _hits(res)
        exact = self._exact(tokens, k, hits) if compare else None
        timings["total"] = _ms(t_start)
        return {"k": k, "hits": hits, "timings_ms": timings, "candidates": res.candidates, "exact": exact}

    def search_image(self, data: bytes, *, k: int, oversampling: float | None) -> dict[str, Any]:
        raise InvalidArgumentError("image: a multi-vector index is searched by text")

    def _rerank(self, stages: Sequence[str] | None) -> bool:
        if stages is None:
            return True
        stages = list(stages)
        if stages == []:
            return False
        if stages == [RERANK_STAGE]:
            return True
        raise InvalidArgumentError(
            f"stages: a multi-vector index runs [] (FDE codes alone) or [{RERANK_STAGE!r}] "
            f"(FDE candidates reranked by Chamfer), got {stages!r}"
        )

    def _check_exact(self) -> None:
        need = self.index.info()["disk_bytes"]
        if need > self.limits.max_exact_bytes:
            raise LimitError(
                f"compare scores every document's tokens ({need:,} bytes), over this server's limit "
                f"of {self.limits.max_exact_bytes:,} bytes"
            )

    def _exact(self, tokens: TokenBatch, k: int, hits: list[dict[str, Any]]) -> dict[str, Any]:
        """Brute-force Chamfer over every document's int8 tokens."""
        with self._exact_lock:
            res = self.index.search_exact(tokens, k, with_text=True)
        exact_hits = _hits(res)
        both = {h["id"] for h in hits} & {h["id"] for h in exact_hits}
        return {
            "tier": self.exact_tier,
            "hits": exact_hits,
            "timings_ms": {"scan": res.timings["chamfer"]},
            "overlap": len(both) / k,
            "overlap_k": k,
        }

    # ---- documents ------------------------------------------------------------------------------
    def add(self, documents: Sequence[Any]) -> dict[str, Any]:
        """Add one batch of texts atomically; ``documents`` are :class:`DocumentIn` models."""
        n = len(documents)
        if n > self.limits.max_batch:
            raise PayloadTooLargeError(
                f"a batch holds at most {self.limits.max_batch} documents (this server's limit), got {n}"
            )
        for i, doc in enumerate(documents):
            if doc.vector is not None:
                raise InvalidArgumentError(
                    f"documents[{i}].vector: a multi-vector index embeds texts into token vectors; "
                    "send 'text'"
                )
            if doc.text is None:
                raise InvalidArgumentError(f"documents[{i}] has no text to embed")
            if doc.metadata is not None:
                raise InvalidArgumentError(f"documents[{i}].metadata: a multi-vector index keeps no metadata")
        given = [d.id is not None for d in documents]
        if any(given) and not all(given):
            i = given.index(False)
            raise InvalidArgumentError(
                f"documents[{i}].id is missing: give an id to every document of a batch, or to none"
            )
        texts = [d.text for d in documents]
        tokens = self._embed(texts, is_query=False)
        with self._write_lock:
            if all(given):
                ids = [d.id for d in documents]
            else:
                if self.index.id_type == "str" and len(self.index):
                    raise InvalidArgumentError("this index has str ids: give an id to every document")
                start = 1 + max((i for i in self.index.ids if isinstance(i, int)), default=-1)
                ids = list(range(start, start + n))
            self.index.add(ids, texts=texts, tokens=tokens)
        return {"ids": ids, "count": len(self.index)}

    def parse_id(self, raw: str) -> int | str:
        """A document id from a URL path segment, typed as the index's ids."""
        if self.index.id_type == "str":
            return raw
        if not _INT_ID.fullmatch(raw):
            raise InvalidArgumentError(f"id must be an integer for this index (id_type='int'), got {raw!r}")
        return int(raw)

    def get(self, raw_id: str) -> dict[str, Any]:
        return self.index.get(self.parse_id(raw_id))

    def delete(self, raw_id: str) -> dict[str, Any]:
        raise InvalidArgumentError("a multi-vector index does not support deletes")

    # ---- introspection --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        index = self.index
        info = index.info()
        n = info["documents"]
        fde = info["fde"]
        candidate_tier = {
            "name": "fde",  # the quantizer (1-bit RaBitQ by default) is in "quantizer"
            "role": "candidates",
            "storage": "ram",
            "precision": "binary",
            "bytes_per_vector": info["candidate_code_bytes"],
            "ram_bytes": info["ram_bytes"],
            "disk_bytes": info["ram_bytes"],  # the codes are also saved with their segment
            "quantizer": {"name": info["candidates"], **fde},
        }
        token_tier = {
            "name": RERANK_STAGE,
            "role": "rescore",
            "storage": "disk",
            "precision": "int8",
            "bytes_per_vector": None,  # per token: dim + a float32 scale
            "ram_bytes": 0,
            "disk_bytes": info["disk_bytes"] - info["fde8_disk_bytes"],
            "quantizer": {
                "name": "int8-tokens",
                "bytes_per_token": info["dim"] + 4,
                "tokens": info["tokens"],
            },
        }
        tiers = [candidate_tier, token_tier]
        if info["rescore"]:
            # the int8 FDE codes on disk that rescore the scan's shortlist: part of the candidate stage
            # (the page offers each tier after the first as a stage; this one always runs with Chamfer)
            candidate_tier["quantizer"]["shortlist_rescore"] = {
                "precision": info["rescore"],
                "storage": "disk",
                "bytes_per_vector": fde["output_dim"],
                "disk_bytes": info["fde8_disk_bytes"],
            }
        limits = self.limits
        return {
            "name": index.root.name,  # never the server's filesystem path
            "count": n,
            "rows": n,
            "deleted": 0,
            "segments": index.segments,
            "dim": info["dim"],
            "id_type": index.id_type,
            "model": index.model,
            "catalog_bytes": info["docs_bytes"],
            "default_oversampling": DEFAULT_CANDIDATES / 10,  # for k=10
            "tiers": tiers,
            "ram_bytes": info["ram_bytes"],
            "disk_bytes": info["ram_bytes"] + info["disk_bytes"] + info["docs_bytes"],  # FDE codes saved too
            # what the token vectors would take as float32 in RAM (a multi-vector index without MUVERA)
            "float32_bytes": info["tokens"] * info["dim"] * 4,
            "exact_tier": self.exact_tier,
            "text_queries": index.model is not None,
            "lexical": False,
            "multivector": True,
            "fde_dim": fde["output_dim"],
            "tokens": info["tokens"],
            "limits": {
                "max_k": limits.max_k,
                "max_oversampling": limits.max_oversampling,
                "max_batch": limits.max_batch,
                "max_body_bytes": limits.max_body_bytes,
                "max_exact_bytes": limits.max_exact_bytes,
            },
        }


def _hits(res: SearchResults) -> list[dict[str, Any]]:
    return [{**hit, "metadata": None} for hit in res.to_list()[0]]


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3
