"""Request and response bodies of the HTTP API (pydantic models, shown in the OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

# The body limit bounds everything else; these keep single fields sane and documented.
MAX_QUERY_CHARS = 10_000
MAX_STAGES = 8

DocId = StrictInt | StrictStr


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently ignored


class SearchRequest(_Strict):
    """One query, as text (embedded with the index's model) or as a float vector."""

    query: str | None = Field(
        None, min_length=1, max_length=MAX_QUERY_CHARS, description="text query (needs a model)"
    )
    vector: list[float] | None = Field(None, min_length=1, description="query vector of the index's dim")
    k: int = Field(10, ge=1, description="number of results (capped at the number of documents)")
    oversampling: float | None = Field(
        None, ge=1, description="candidates kept by the Hamming scan = k x oversampling (default: index's)"
    )
    stages: list[str] | None = Field(
        None, max_length=MAX_STAGES, description="rescoring tiers to run, in order; [] = Hamming only"
    )
    compare: bool = Field(False, description="also return the exact results of the float tier, and overlap")
    filter: dict[str, Any] | None = Field(
        None,
        description='metadata conditions, all must hold: {"lang": "en", "tag": {"in": ["a", "b"]}, '
        '"year": {"gte": 2000, "lt": 2010}}',
    )
    nprobe: int | None = Field(None, ge=1, description="lists scanned by an IVF candidate stage")
    ef: int | None = Field(None, ge=1, description="candidate list size of an HNSW candidate stage")
    target_recall: float | None = Field(
        None, gt=0, le=1, description="instead of nprobe/ef: the cheapest setting calibrated to reach it"
    )
    mode: Literal["dense", "lexical", "hybrid", "svm"] = Field(
        "dense", description="retriever: dense, lexical (BM25, text queries), hybrid (both, fused), svm"
    )
    fusion: Literal["rrf", "convex"] | None = Field(
        None, description="hybrid: reciprocal rank fusion or convex combination (default: index's)"
    )

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        if (self.query is None) == (self.vector is None):
            raise ValueError("give exactly one of 'query' (text) and 'vector'")
        return self


class Hit(BaseModel):
    id: DocId
    score: float
    text: str | None = None
    metadata: dict[str, Any] | None = None
    sources: list[str] | None = Field(None, description="lexical/hybrid: the retrievers that found it")


class ExactResults(BaseModel):
    tier: str = Field(description="the float tier scanned in full")
    hits: list[Hit]
    timings_ms: dict[str, float]
    overlap: float = Field(description="share of the top k found by both searches")
    overlap_k: int


class SearchResponse(BaseModel):
    k: int = Field(description="results asked for, after capping at the number of documents")
    hits: list[Hit]
    timings_ms: dict[str, float] = Field(
        description="per stage: embed, hamming, rescore:<tier>, payload, total"
    )
    candidates: dict[str, int] = Field(description="candidates per query that entered each stage")
    exact: ExactResults | None = None


class DocumentIn(_Strict):
    id: DocId | None = Field(None, description="new id (int or str, per the index); omit for auto int ids")
    vector: list[float] | None = Field(None, min_length=1, description="embedding; else the text is embedded")
    text: str | None = None
    metadata: dict[str, Any] | None = None


class AddRequest(_Strict):
    documents: list[DocumentIn] = Field(min_length=1)


class AddResponse(BaseModel):
    ids: list[DocId] = Field(description="ids of the added documents, in order")
    count: int = Field(description="documents in the index after the add")


class Document(BaseModel):
    id: DocId
    text: str | None
    metadata: dict[str, Any] | None


class DeleteResponse(BaseModel):
    deleted: DocId
    count: int


class TierStats(BaseModel):
    name: str
    role: str
    storage: str = Field(description="'ram' (read at open) or 'disk' (memory-mapped)")
    precision: str
    bytes_per_vector: int | None
    ram_bytes: int
    disk_bytes: int
    quantizer: dict[str, Any]


class Limits(BaseModel):
    max_k: int
    max_oversampling: float
    max_batch: int
    max_body_bytes: int
    max_exact_bytes: int


class Stats(BaseModel):
    name: str
    count: int
    rows: int
    deleted: int
    segments: int
    dim: int
    id_type: str
    model: str | None
    default_oversampling: float
    tiers: list[TierStats]
    catalog_bytes: int
    ram_bytes: int = Field(description="codes in RAM + deleted-row mask")
    disk_bytes: int = Field(description="segment files + catalog")
    float32_bytes: int = Field(description="what the vectors would take as float32")
    exact_tier: str | None = Field(description="float tier used for exact comparisons, if any")
    text_queries: bool
    lexical: bool = Field(False, description="the index keeps a lexical (BM25) tier")
    multivector: bool = Field(
        False, description="a multi-vector (MUVERA) index: FDE codes in RAM, Chamfer over int8 tokens on disk"
    )
    fde_dim: int | None = Field(None, description="multi-vector: coordinates of the FDE")
    tokens: int | None = Field(None, description="multi-vector: token vectors stored")
    limits: Limits


class Health(BaseModel):
    status: str
    auth: bool = Field(description="whether the API needs a key")


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail
