"""The FastAPI application: routes, API-key check, error mapping, the static web page."""

from __future__ import annotations

import hashlib
import hmac
import importlib.resources
import ipaddress
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from .. import __version__
from .._validation import check_number, check_positive_int
from ..exceptions import InvalidArgumentError, QuantsearchError
from ..index import Index
from .errors import AuthError, error_body, status_of
from .middleware import LOOPBACK_NAMES, BodyLimitMiddleware, HostCheckMiddleware, default_allowed_hosts
from .models import (
    AddRequest,
    AddResponse,
    DeleteResponse,
    Document,
    ErrorResponse,
    Health,
    SearchRequest,
    SearchResponse,
    Stats,
)
from .multivector import MultiVectorService
from .service import Limits, SearchService

__all__ = ["create_app", "serve"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# the page loads only its own files; nothing from elsewhere, no inline script
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_STATIC = {"app.js": "text/javascript", "style.css": "text/css", "favicon.svg": "image/svg+xml"}
_DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon.png": "image/png",
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (400, "bad input (malformed JSON, wrong dimension, NaN, unknown stage, ...)"),
        (401, "missing or wrong API key"),
        (404, "no document with this id"),
        (409, "duplicate id, index not calibrated, locked by another writer, or opened read-only"),
        (413, "body or batch over the server's limit"),
        (422, "body does not match the schema, or a value is over a limit (k, oversampling)"),
        (507, "the index could not be written (disk full, I/O error); nothing was stored"),
    )
}


def create_app(
    index_dir: str | os.PathLike[str],
    *,
    api_key: str | None = None,
    max_k: int = 1000,
    max_oversampling: float = 100.0,
    max_batch: int = 1000,
    max_body_bytes: int = 16 << 20,
    max_exact_bytes: int = 256 << 20,
    preload_model: bool = False,
    search_threads: int | None = None,
    backend: str | None = None,
    ray_address: str | None = None,
    compiled: bool = False,
    allowed_hosts: Sequence[str] | None = None,
) -> FastAPI:
    """Build the HTTP application over the index in ``index_dir`` (opened now, closed at shutdown).

    Parameters
    ----------
    index_dir : path-like
        An existing index directory. The API never takes a path from a request: every file it
        touches is inside this directory (the index's own) or packaged with quantsearch.
    api_key : str, optional
        When set, every endpoint but ``/healthz``, the web page and the API docs requires it, as
        ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (compared in constant time).
    max_k, max_oversampling, max_batch, max_body_bytes, max_exact_bytes
        Limits of one request: results, candidate multiplier, documents per add, body bytes, and
        the float-tier bytes an exact comparison may scan.
    preload_model : bool
        Load the index's embedding model at startup instead of on the first text query.
    search_threads : int, optional
        Searches (and other reads) run at once in worker threads; default 4 per CPU core, at
        most 32. More wait for a free thread.
    backend : str, optional
        Embedding backend of text queries (see :class:`~quantsearch.embed.Embedder`); None: the index's.
    ray_address : str, optional
        For a sharded index directory (``quantsearch.distributed``): the Ray cluster its shard
        actors run on; default the running Ray session, else a local Ray started now.
    compiled : bool
        For a sharded index directory: searches reach the shard actors through a Ray compiled graph
        (see :class:`~quantsearch.distributed.serving.RayShardedIndex`; other calls go the ordinary
        way). :class:`InvalidArgumentError` for an ordinary index directory.
    allowed_hosts : sequence of str, optional
        Names the ``Host`` header may carry (without the port); ``"*"`` allows any. Default: the
        loopback names (``localhost``, ``127.0.0.1``, ``::1``), so that a web page on another
        site cannot reach a local server through DNS rebinding. A request naming another host
        gets 400.

    Returns
    -------
    FastAPI
        Run it with any ASGI server, in one process (the index has one writer per directory).
    """
    if api_key is not None and not api_key:
        raise InvalidArgumentError("api_key must be a non-empty string or None")
    limits = Limits(max_k, max_oversampling, max_batch, max_body_bytes, max_exact_bytes)
    for name, value in (
        ("max_k", max_k),
        ("max_batch", max_batch),
        ("max_body_bytes", max_body_bytes),
        ("max_exact_bytes", max_exact_bytes),
        ("search_threads", 1 if search_threads is None else search_threads),
    ):
        check_positive_int(value, name)
    check_number(max_oversampling, "max_oversampling", minimum=1)
    if backend is not None:
        from quantsearch.embedding import parse_backend

        parse_backend(backend)  # an unknown name fails here, not on the first text query
    service: Any = _open_service(index_dir, ray_address, limits, backend, compiled=compiled)
    if backend is not None and service.index.model is not None:
        from quantsearch.embed import Embedder

        model = service.index.model
        service.index.embedder = Embedder(model, backend=backend)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            if preload_model:
                await anyio.to_thread.run_sync(service.load_model)
            yield
        finally:
            service.close()

    app = FastAPI(
        title="quantsearch",
        version=__version__,
        summary="Compressed embedding retrieval: binary Hamming scan, then rescoring from disk.",
        lifespan=lifespan,
        docs_url=None,  # served below from packaged assets: the default page loads them from a CDN
        redoc_url=None,
    )
    app.state.service = service
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    hosts = LOOPBACK_NAMES if allowed_hosts is None else allowed_hosts
    if isinstance(hosts, str) or not all(isinstance(h, str) and h for h in hosts):
        raise InvalidArgumentError(f"allowed_hosts must be a list of host names, got {allowed_hosts!r}")
    app.add_middleware(HostCheckMiddleware, allowed=hosts)  # added last: runs first
    _install_error_handlers(app)
    guard = [Security(_key_checker(api_key))] if api_key is not None else []
    pools = _Pools(search_threads or min(32, 4 * (os.cpu_count() or 1)))

    # ---- API: the work runs in worker threads (searches in parallel, writes serialised)
    @app.post(
        "/search", response_model=SearchResponse, dependencies=guard, responses=_ERRORS, tags=["search"]
    )
    async def search(body: SearchRequest) -> dict[str, Any]:
        """Search with a text (embedded with the index's model) or a vector."""
        call = partial(
            service.search,
            query=body.query,
            vector=body.vector,
            k=body.k,
            oversampling=body.oversampling,
            stages=body.stages,
            compare=body.compare,
            filter=body.filter,
            nprobe=body.nprobe,
            ef=body.ef,
            target_recall=body.target_recall,
            mode=body.mode,
            fusion=body.fusion,
        )
        return await pools.read(call)

    @app.post(
        "/search/image",
        response_model=SearchResponse,
        dependencies=guard,
        responses=_ERRORS,
        tags=["search"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    async def search_image(
        request: Request, k: int = 10, oversampling: float | None = None
    ) -> dict[str, Any]:
        """Search with an image (the request body: JPEG, PNG, ... bytes), embedded with the index's
        CLIP model: image -> image search over an image index."""
        if k < 1:
            raise InvalidArgumentError(f"k must be >= 1, got {k}")
        data = await request.body()
        return await pools.read(partial(service.search_image, data, k=k, oversampling=oversampling))

    @app.post(
        "/documents", response_model=AddResponse, dependencies=guard, responses=_ERRORS, tags=["documents"]
    )
    async def add_documents(body: AddRequest) -> dict[str, Any]:
        """Add a batch atomically (all or nothing); durable when the response is sent."""
        return await pools.add(partial(service.add, body.documents))

    @app.get(
        "/documents/{doc_id:path}",
        response_model=Document,
        dependencies=guard,
        responses=_ERRORS,
        tags=["documents"],
    )
    async def get_document(doc_id: str) -> dict[str, Any]:
        """The stored text and metadata of one document."""
        return await pools.read(partial(service.get, doc_id))

    @app.delete(
        "/documents/{doc_id:path}",
        response_model=DeleteResponse,
        dependencies=guard,
        responses=_ERRORS,
        tags=["documents"],
    )
    async def delete_document(doc_id: str) -> dict[str, Any]:
        """Delete one document (masked at once; its codes stay until a compaction)."""
        return await pools.write(partial(service.delete, doc_id))

    @app.get("/stats", response_model=Stats, dependencies=guard, responses=_ERRORS, tags=["index"])
    async def stats() -> dict[str, Any]:
        """Counts, bytes per tier in RAM and on disk, quantizer settings, limits."""
        return await pools.read(service.stats)

    @app.get("/healthz", response_model=Health, tags=["index"])
    async def healthz() -> dict[str, Any]:
        """Liveness; open without a key."""
        return {"status": "ok", "auth": api_key is not None}

    # ---- web page and API docs, from files packaged with quantsearch only
    page = _resource("index.html")

    @app.get("/", include_in_schema=False)
    async def index_page() -> Response:
        return HTMLResponse(page, headers=_PAGE_HEADERS)

    for name, media_type in _STATIC.items():
        app.add_api_route(
            f"/static/{name}", _file_route(_resource(name), media_type), include_in_schema=False
        )

    docs_assets = _docs_assets()
    if docs_assets is not None:
        for name, media_type in _DOCS_ASSETS.items():
            app.add_api_route(
                f"/docs/assets/{name}", _file_route(docs_assets[name], media_type), include_in_schema=False
            )

        @app.get("/docs", include_in_schema=False)
        async def docs() -> Response:
            return get_swagger_ui_html(
                openapi_url="/openapi.json",
                title="quantsearch API",
                swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                swagger_css_url="/docs/assets/swagger-ui.css",
                swagger_favicon_url="/docs/assets/favicon.png",
            )

    return app


def _open_service(
    index_dir: str | os.PathLike[str],
    ray_address: str | None,
    limits: Limits,
    backend: str | None,
    *,
    compiled: bool = False,
) -> SearchService | MultiVectorService:
    """The service over the index in ``index_dir``: a multi-vector index gets its own."""
    from ..multivector.index import MultiVectorIndex, is_multivector_index

    if is_multivector_index(index_dir):
        if backend is not None:
            raise InvalidArgumentError("backend: a multi-vector index runs its token model with PyTorch")
        if compiled:
            raise InvalidArgumentError(f"{index_dir} is not a sharded index: compiled graphs do not apply")
        return MultiVectorService(MultiVectorIndex.open(index_dir), limits)
    return SearchService(_open_index(index_dir, ray_address, compiled=compiled), limits)


def _open_index(index_dir: str | os.PathLike[str], ray_address: str | None, *, compiled: bool = False) -> Any:
    """``Index.open``, or for a sharded directory its Ray-served front end (same methods)."""
    from ..distributed.layout import is_sharded

    if is_sharded(index_dir):
        from ..distributed.serving import open_sharded

        return open_sharded(index_dir, ray_address=ray_address, compiled=bool(compiled))
    if compiled:
        raise InvalidArgumentError(f"{index_dir} is not a sharded index: compiled graphs do not apply")
    return Index.open(index_dir)


def serve(
    index_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    log_level: str = "info",
    allowed_hosts: Sequence[str] | None = None,
    idle_timeout: float = 10.0,
    max_connections: int | None = None,
    **limits: Any,
) -> None:
    """Serve the index over HTTP with uvicorn until interrupted (one process, a thread pool).

    Binds to the loopback interface unless ``host`` says otherwise; a non-loopback address
    without an API key is logged as a warning. The address is bound before anything else: a busy
    port is an :class:`InvalidArgumentError`.

    ``allowed_hosts`` defaults to the loopback names plus ``host`` itself; on a wildcard address
    (``0.0.0.0``, ``::``) it allows any name when an API key is set (a rebinding page cannot send
    the key) and only loopback names otherwise. A connection with no request in progress is closed
    after ``idle_timeout`` seconds; at most ``max_connections`` are open at once (default: the
    descriptor limit minus a reserve), the longest idle giving way to a new one
    (:mod:`.connections`).
    """
    from .connections import bind_socket, default_max_connections, raise_fd_limit, run_guarded

    check_positive_int(port, "port", minimum=0, maximum=65535)
    idle_timeout = check_number(idle_timeout, "idle_timeout", positive=True)
    cap = default_max_connections(raise_fd_limit()) if max_connections is None else max_connections
    cap = check_positive_int(cap, "max_connections")
    if not _is_loopback(host) and api_key is None:
        logger.warning(
            "serving %s on %s without an API key: anyone who can reach it can write", index_dir, host
        )
    hosts = default_allowed_hosts(host, api_key) if allowed_hosts is None else allowed_hosts
    sock = bind_socket(host, port)  # before the index and the model load: a busy port fails at once
    try:
        app = create_app(index_dir, api_key=api_key, preload_model=True, allowed_hosts=hosts, **limits)
        run_guarded(app, sock, log_level=log_level, idle_timeout=idle_timeout, max_connections=cap)
    finally:
        sock.close()


class _Pools:
    """Worker threads: reads (searches, gets, stats) ``size`` at a time, adds, and deletes one at a time.

    Requests beyond a bound wait in the event loop, not in a thread: on a small machine a few
    search threads use the cores as well as many would, and fewer threads contend for the GIL.
    Adds get threads of their own, which mostly wait for the group commit that takes them
    (:class:`~quantsearch.server.writer.GroupCommitter`), so that they never hold up searches.
    """

    def __init__(self, size: int) -> None:
        self.sizes = {"read": size, "add": 64, "delete": 1}
        self._limiters: dict[str, anyio.CapacityLimiter] = {}

    async def _run(self, kind: str, call: Callable[[], T]) -> T:
        limiter = self._limiters.get(kind)
        if limiter is None:  # limiters belong to the running event loop: made on first use
            limiter = self._limiters[kind] = anyio.CapacityLimiter(self.sizes[kind])
        return await anyio.to_thread.run_sync(call, limiter=limiter)

    async def read(self, call: Callable[[], T]) -> T:
        return await self._run("read", call)

    async def add(self, call: Callable[[], T]) -> T:
        return await self._run("add", call)

    async def write(self, call: Callable[[], T]) -> T:
        return await self._run("delete", call)


# ---- helpers --------------------------------------------------------------------------------------------
def _key_checker(api_key: str) -> Callable[..., Awaitable[None]]:
    expected = hashlib.sha256(api_key.encode()).digest()
    bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <api key>")
    header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the API key")

    async def check(  # async: runs in the event loop, no thread hop for a comparison
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
        key: str | None = Depends(header),  # noqa: B008
    ) -> None:
        given = key if key is not None else (credentials.credentials if credentials is not None else None)
        if given is None:
            raise AuthError("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        # compare digests: constant time, and the key's length does not leak either
        if not hmac.compare_digest(hashlib.sha256(given.encode()).digest(), expected):
            raise AuthError("invalid API key")

    return check


def _install_error_handlers(app: FastAPI) -> None:
    """Every error, ours or the framework's, as ``{"error": {"type", "message"}}`` with its status."""

    @app.exception_handler(QuantsearchError)
    async def ours(_request: Request, exc: QuantsearchError) -> JSONResponse:
        status = status_of(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if status >= 500:
            logger.error("%s: %s", type(exc).__name__, exc)
        return JSONResponse(error_body(type(exc).__name__, str(exc)), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
        if bad_json is not None:
            where = bad_json["loc"][-1] if bad_json.get("loc") else "?"
            reason = (bad_json.get("ctx") or {}).get("error", "cannot be parsed")
            return JSONResponse(
                error_body(
                    "MalformedJSON", f"request body is not valid JSON: {reason} (at character {where})"
                ),
                status_code=400,
            )
        return JSONResponse(
            error_body("ValidationError", "; ".join(_describe(e) for e in errors[:5])), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        names = {404: "NotFound", 405: "MethodNotAllowed", 400: "BadRequest", 413: "PayloadTooLargeError"}
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # every method of every route on this path, not the first route's
            headers["Allow"] = ", ".join(_allowed_methods(app, request))
        return JSONResponse(
            error_body(names.get(exc.status_code, "HTTPError"), str(exc.detail)),
            status_code=exc.status_code,
            headers=headers or None,
        )

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("internal error in %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("InternalError", f"internal error: {type(exc).__name__} (see the server log)"),
            status_code=500,
        )


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _describe(error: Any) -> str:
    """One validation error as ``field.path: message (got value)``."""
    loc = [str(p) for p in error.get("loc", ()) if p != "body"]
    where = ".".join(loc) if loc else "request body"
    msg = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    value = error.get("input")
    got = ""
    if error.get("type") != "missing" and (isinstance(value, (int, float, str, bool)) or value is None):
        text = repr(value)
        got = f" (got {text[:60]}{'...' if len(text) > 60 else ''})"
    return f"{where}: {msg}{got}"


def _resource(name: str) -> bytes:
    return (importlib.resources.files(__package__) / "static" / name).read_bytes()


def _file_route(content: bytes, media_type: str) -> Callable[[], Awaitable[Response]]:
    async def route() -> Response:
        return Response(content, media_type=media_type, headers={"X-Content-Type-Options": "nosniff"})

    return route


def _docs_assets() -> dict[str, bytes] | None:
    """Swagger UI's files from the ``fastapi-offline`` package (extra ``server``), so /docs works offline."""
    try:
        root = importlib.resources.files("fastapi_offline") / "static"
        return {name: (root / name).read_bytes() for name in _DOCS_ASSETS}
    except (ImportError, OSError):
        logger.warning(
            "fastapi-offline is not installed: /docs is disabled (the API works; see /openapi.json)"
        )
        return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
