"""HTTP service and web page over a persistent index (extra ``server``: FastAPI + uvicorn).

``create_app(index_dir, api_key=None, ...)`` builds the ASGI application; ``serve(...)`` runs it
with uvicorn (``quantsearch serve DIR``). Endpoints: ``POST /search``, ``POST /documents``,
``GET|DELETE /documents/{id}``, ``GET /stats``, ``GET /healthz``; the web page is at ``/`` and
the OpenAPI docs at ``/docs``.
"""

from __future__ import annotations

from ..exceptions import MissingDependencyError

try:
    import fastapi  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is installed in development
    raise MissingDependencyError(
        f"the HTTP service needs FastAPI and uvicorn ({exc.name} is missing): "
        'pip install "quantsearch[server]"'
    ) from exc

from .app import create_app, serve

__all__ = ["create_app", "serve"]
