"""What `cnnkit serve` adds below the app, at the HTTP level: a deadline on each request's
headers, malformed requests answered in the app's JSON, and HEAD on every GET route.

uvicorn's h11 protocol times out idle keep-alive connections only: a client that opens
connections and sends its headers a byte at a time, or never finishes them ("slowloris"),
holds each one for ever, and with enough of them no one else gets in. ``header_deadline``
gives uvicorn a subclass that closes a connection whose request headers are not complete
``seconds`` after it opened (or after the previous response), and answers a request h11
cannot parse with ``{"error": "bad_request", "detail": ...}`` instead of plain text.
Written here because uvicorn has no such setting (its options: keep-alive and graceful
shutdown timeouts only).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class _HeaderDeadline(H11Protocol):
    header_seconds = 30.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # this request's headers are all in
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection gets its own deadline

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_seconds, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        body = json.dumps({"error": "bad_request", "detail": msg}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()


def header_deadline(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a ``seconds`` deadline on each request's headers."""
    return type("HeaderDeadline", (_HeaderDeadline,), {"header_seconds": float(seconds)})


class HeadAsGet:
    """ASGI middleware: HEAD on any GET route answers as GET does, without the body (uvicorn
    drops a HEAD response's body; FastAPI's routes take only the methods they name)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: dict) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)
