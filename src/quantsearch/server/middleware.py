"""ASGI middleware: a hard bound on request bodies (checked before the application reads them) and
the ``Host`` header check."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from .errors import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimitMiddleware:
    """Answer 413 to a request whose body is over ``max_bytes``, without buffering more than that.

    A declared ``Content-Length`` over the limit is refused before a byte of the body is read;
    a chunked body is read up to the limit and refused as soon as it passes it. An accepted
    body is handed to the application as one message.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send, f"request body is {declared:,} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        pending: list[Message] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                pending.append(message)
                break
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._refuse(send, f"request body is over {size:,} bytes")
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        pending.insert(0, {"type": "http.request", "body": b"".join(chunks), "more_body": False})

        async def replay() -> Message:
            return pending.pop(0) if pending else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, what: str) -> None:
        message = f"{what}, over this server's limit of {self.max_bytes:,} bytes"
        # the rest of the body is not read: the connection closes
        await send_error(send, 413, "PayloadTooLargeError", message, close=True)


async def send_error(send: Send, status: int, error_type: str, message: str, *, close: bool = False) -> None:
    """Answer with our JSON error body from middleware (before the application runs)."""
    body = json.dumps(error_body(error_type, message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server (h11) rejects a malformed length itself
    return None


#: the names a loopback server answers to by default (``Host`` header, port removed)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def default_allowed_hosts(host: str, api_key: str | None) -> list[str]:
    """``Host`` names a server bound to ``host`` answers by default: the loopback names and ``host``;
    on a wildcard address, any name when a key is required (a rebinding page cannot send the key),
    else the loopback names only."""
    wildcard = host in ("0.0.0.0", "::", "")
    if wildcard:
        return ["*"] if api_key is not None else [*LOOPBACK_NAMES]
    return [*LOOPBACK_NAMES, *([] if host in LOOPBACK_NAMES else [host])]


class HostCheckMiddleware:
    """Answer 400 to a request whose ``Host`` header names a host not in ``allowed``.

    A web page can reach a server on loopback by pointing its own name at 127.0.0.1 (DNS
    rebinding); its requests still carry that name in ``Host``, so they are refused here. ``"*"``
    in ``allowed`` turns the check off; a request without a ``Host`` header (HTTP/1.0) passes,
    as browsers always send one.
    """

    def __init__(self, app: ASGIApp, allowed: Sequence[str]) -> None:
        self.app = app
        self.any = "*" in allowed
        self.allowed = {h.lower().strip("[]") for h in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.any:
            await self.app(scope, receive, send)
            return
        host = next((value for name, value in scope.get("headers", []) if name == b"host"), None)
        if host is None or _host_name(host) in self.allowed:
            await self.app(scope, receive, send)
            return
        shown = host.decode("latin-1")[:100]
        await send_error(send, 400, "InvalidHost", f"Host {shown!r} is not allowed (see --allowed-hosts)")


def _host_name(value: bytes) -> str:
    """The name of a ``Host`` header, lower case, without the port or IPv6 brackets."""
    text = value.decode("latin-1").strip().lower()
    if text.startswith("["):  # [::1]:8000
        return text[1 : text.find("]")] if "]" in text else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text
