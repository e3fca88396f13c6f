"""What the HTTP endpoints do, without HTTP: validate against the limits, call the index, shape JSON.

Searches run concurrently on the index's immutable views (the endpoints are called from a thread
pool); writes are serialised by the index's writer lock. Embedding is serialised by a lock of its
own (tokenizers are not safe to share between threads, and torch already uses every core).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..exceptions import DimensionMismatchError, InvalidArgumentError, QuantsearchError
from ..index import Index
from ..ingest import embed_texts
from ..results import SearchResults
from .errors import LimitError, PayloadTooLargeError
from .writer import GroupCommitter

logger = logging.getLogger(__name__)

#: Oversampling that makes every live document a candidate (the pipeline caps it at the count).
_ALL_CANDIDATES = 1e15
_INT_ID = re.compile(r"-?[0-9]{1,20}")


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask for."""

    max_k: int = 1000
    max_oversampling: float = 100.0
    max_batch: int = 1000
    max_body_bytes: int = 16 << 20
    #: an exact comparison scores every document with the float tier in one pass; this bounds
    #: the float codes it may read (and so the memory it takes)
    max_exact_bytes: int = 256 << 20


class SearchService:
    """The operations behind the API, on one open :class:`~quantsearch.Index`.

    Parameters
    ----------
    index : Index
        The open index; the service owns it from now on (``close`` closes it).
    limits : Limits
        Bounds on k, oversampling, batch size, body size and exact scans.
    """

    def __init__(self, index: Index, limits: Limits) -> None:
        self.index = index
        self.limits = limits
        self._embed_lock = threading.Lock()
        self._exact_lock = threading.Lock()  # one exact scan at a time: each reads the whole float tier
        self.writer = GroupCommitter(index, max_rows=8 * limits.max_batch)
        floats = [name for name, q in index.tiers.items() if q.precision.value in ("float32", "float16")]
        # float32 is the exact reference when present; float16 is the next best
        self.exact_tier = next((n for n in floats if n.startswith("float32")), floats[0] if floats else None)

    def close(self) -> None:
        self.index.close()

    # ---- embedding ----------------------------------------------------------------------------
    def load_model(self) -> None:
        """Load the index's embedding model now, and run it once (else the first text query pays).

        A model that cannot be loaded (extra ``embed`` missing, unknown name offline) is logged,
        not raised: vector queries still work, and text queries get the error.
        """
        if self.index.model is None:
            return
        try:
            with self._embed_lock:
                self.index.embedder.embed(["warm-up"])
        except QuantsearchError as exc:
            logger.warning("text queries are unavailable: %s", exc)

    def embed(self, texts: Sequence[str], what: str) -> np.ndarray:
        """Embed texts with the index's model; ``what`` names them in the error of a model-less index."""
        if self.index.model is None:
            raise InvalidArgumentError(
                f"{what}: this index records no embedding model, so texts cannot be embedded; "
                "send vectors instead"
            )
        with self._embed_lock:  # the library's ingestion embedding, as `quantsearch index` uses it
            return embed_texts(self.index.embedder, list(texts))

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
        """Run one query; returns the body of a :class:`~quantsearch.server.models.SearchResponse`."""
        t_start = time.perf_counter()
        limits = self.limits
        if k > limits.max_k:
            raise LimitError(f"k must be <= {limits.max_k} (this server's limit), got {k}")
        if oversampling is not None and oversampling > limits.max_oversampling:
            raise LimitError(
                f"oversampling must be <= {limits.max_oversampling:g} (this server's limit), "
                f"got {oversampling:g}"
            )
        exact_tier = self._check_exact(compare)
        timings: dict[str, float] = {}
        q: np.ndarray | None = None
        if query is not None and (mode != "lexical" or exact_tier is not None):
            t0 = time.perf_counter()
            q = self.embed([query], "query")
            timings["embed"] = _ms(t0)
        elif vector is not None:
            q = self._vector(vector, "vector")
        k = min(k, len(self.index))  # a small index answers with every document
        if k == 0:
            return {"k": 0, "hits": [], "timings_ms": {**timings, "total": _ms(t_start)}, "candidates": {}}
        texts = None if query is None else [query]
        queries: Any = texts if q is None or (texts is not None and mode == "lexical") else q
        res = self.index.search(
            queries, k,
            oversampling=oversampling, stages=stages, mode=mode, fusion=fusion,
            query_texts=None if mode == "dense" else texts, filter=filter, nprobe=nprobe, ef=ef,
            target_recall=target_recall,
        )  # fmt: skip
        timings.update(res.timings)
        hits = _hits(res)
        exact = None
        if exact_tier is not None:
            assert q is not None
            exact = self._exact(q, k, exact_tier, hits, filter)
        timings["total"] = _ms(t_start)
        return {"k": k, "hits": hits, "timings_ms": timings, "candidates": res.candidates, "exact": exact}

    def search_image(self, data: bytes, *, k: int, oversampling: float | None) -> dict[str, Any]:
        """Search with an encoded image (JPEG, PNG, ...), embedded with the index's CLIP model."""
        from quantsearch.images import decode_image, embed_images

        if self.index.model is None:
            raise InvalidArgumentError("image: this index records no embedding model to embed images with")
        t0 = time.perf_counter()
        image = decode_image(data, "image")
        with self._embed_lock:
            q = embed_images(self.index.embedder, [image])
        embed_ms = _ms(t0)
        out = self.search(
            query=None, vector=q[0].tolist(), k=k, oversampling=oversampling, stages=None, compare=False
        )
        out["timings_ms"] = {"embed": embed_ms, **out["timings_ms"]}
        return out

    def _check_exact(self, compare: bool) -> str | None:
        if not compare:
            return None
        if self.exact_tier is None:
            raise InvalidArgumentError(
                f"compare needs a float tier (float32 or float16) to search exactly; this index has "
                f"{list(self.index.tiers)} (create it with rescore=[..., 'float32'])"
            )
        per_vector = self.index.tiers[self.exact_tier].code_bytes
        need = len(self.index) * per_vector
        if need > self.limits.max_exact_bytes:
            raise LimitError(
                f"compare scans the whole {self.exact_tier} tier ({need:,} bytes), over this server's limit "
                f"of {self.limits.max_exact_bytes:,} bytes"
            )
        return self.exact_tier

    def _exact(
        self, q: np.ndarray, k: int, tier: str, hits: list[dict[str, Any]], filter: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Exact top k by the float tier: every live document (matching the filter) is a candidate,
        scored by its float codes."""
        with self._exact_lock:
            res = self.index.search(q, k, oversampling=_ALL_CANDIDATES, stages=(tier,), filter=filter)
        exact_hits = _hits(res)
        both = {h["id"] for h in hits} & {h["id"] for h in exact_hits}
        # every stage but the payload lookup: the candidate stage's key depends on its quantizer
        timings = {"scan": sum(ms for name, ms in res.timings.items() if name not in ("payload", "ids"))}
        timings["payload"] = res.timings.get("payload", 0.0)
        return {
            "tier": tier,
            "hits": exact_hits,
            "timings_ms": timings,
            "overlap": len(both) / k,
            "overlap_k": k,
        }

    def _vector(self, values: Sequence[float], name: str) -> np.ndarray:
        if len(values) != self.index.dim:
            raise DimensionMismatchError(
                f"{name} has {len(values)} dimensions, expected {self.index.dim} (the index's dim)"
            )
        return np.asarray(values, np.float64)[None, :]  # the index checks finiteness after float32

    # ---- documents ------------------------------------------------------------------------------
    def add(self, documents: Sequence[Any]) -> dict[str, Any]:
        """Add one batch atomically; ``documents`` are :class:`DocumentIn` models.

        Batches that arrive together are committed together (:class:`GroupCommitter`).
        """
        n = len(documents)
        if n > self.limits.max_batch:
            raise PayloadTooLargeError(
                f"a batch holds at most {self.limits.max_batch} documents (this server's limit), got {n}"
            )
        given = [d.id is not None for d in documents]
        if any(given) and not all(given):
            i = given.index(False)
            raise InvalidArgumentError(
                f"documents[{i}].id is missing: give an id to every document of a batch, or to none"
            )
        dim = self.index.dim
        vectors = np.empty((n, dim), np.float64)
        to_embed: list[int] = []
        for i, doc in enumerate(documents):
            if doc.vector is not None:
                if len(doc.vector) != dim:
                    raise DimensionMismatchError(
                        f"documents[{i}].vector has {len(doc.vector)} dimensions, "
                        f"expected {dim} (the index's dim)"
                    )
                vectors[i] = doc.vector
            elif doc.text is not None:
                to_embed.append(i)
            else:
                raise InvalidArgumentError(f"documents[{i}] has neither a vector nor a text to embed")
        if to_embed:
            vectors[to_embed] = self.embed([documents[i].text for i in to_embed], f"documents[{to_embed[0]}]")
        ids = self.writer.add(
            vectors,
            ids=[d.id for d in documents] if all(given) else None,
            texts=[d.text for d in documents],
            metadata=[d.metadata for d in documents],
        )
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
        doc_id = self.parse_id(raw_id)
        self.index.delete([doc_id])
        return {"deleted": doc_id, "count": len(self.index)}

    # ---- introspection --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        info = self.index.info()
        tiers = [
            {
                "name": t["name"],
                "role": t["role"],
                "storage": "ram" if t["storage"] == "RAM" else "disk",
                "precision": t["precision"],
                "bytes_per_vector": t["bytes_per_vector"],
                "ram_bytes": t["ram_bytes"],
                "disk_bytes": t["disk_bytes"],
                "quantizer": t["quantizer"],
            }
            for t in info["tiers"]
        ]
        limits = self.limits
        return {
            "name": self.index.path.name,  # never the server's filesystem path
            **{
                key: info[key]
                for key in (
                    "count",
                    "rows",
                    "deleted",
                    "segments",
                    "dim",
                    "id_type",
                    "model",
                    "catalog_bytes",
                )
            },
            "default_oversampling": info["default_oversampling"],
            "tiers": tiers,
            "ram_bytes": sum(t["ram_bytes"] for t in tiers)
            + info["valid_mask_ram_bytes"]
            + (info.get("candidate_stage_ram_bytes") or 0),
            "disk_bytes": sum(t["disk_bytes"] for t in tiers) + info["catalog_bytes"],
            "float32_bytes": info["float32_bytes"],
            "exact_tier": self.exact_tier,
            "text_queries": self.index.model is not None,
            "lexical": bool(getattr(self.index, "has_lexical", False)),  # a sharded index has none yet
            "limits": {
                "max_k": limits.max_k,
                "max_oversampling": limits.max_oversampling,
                "max_batch": limits.max_batch,
                "max_body_bytes": limits.max_body_bytes,
                "max_exact_bytes": limits.max_exact_bytes,
            },
        }


def _hits(res: SearchResults) -> list[dict[str, Any]]:
    return res.to_list()[0]


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3
