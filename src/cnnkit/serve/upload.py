"""Reading one upload for `cnnkit serve`: the body within a size and a time limit, the image
out of a multipart form or the raw body, and what its first bytes say before any pixel is
decoded. Each refusal is a ``Refused`` that the app answers with one line of JSON."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator

from fastapi import Request
from starlette.formparsers import MultiPartParser

from cnnkit.data.decode import WEB_FORMATS, NotAnImage, read_size, sniff_format


class Refused(Exception):
    """A request answered with a 4xx (or 503) and one line of JSON."""

    def __init__(self, status: int, reason: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.reason, self.message, self.headers = status, reason, message, headers


def _stalled(timeout: float) -> Refused:
    # the connection cannot be reused with its body half read: uvicorn closes it after this
    return Refused(
        408,
        "timeout",
        f"the upload did not arrive within {timeout:g} s",
        {"Connection": "close"},
    )


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The request body, refused with 413 from its Content-Length or once it passes ``limit``,
    and with 408 when all of it has not arrived ``timeout`` seconds after the headers (a
    client that stalls or drips bytes holds a connection only that long)."""
    declared = request.headers.get("content-length")
    if declared is not None and "transfer-encoding" in request.headers:
        # two framings: a proxy in front may read another request boundary (smuggling)
        raise Refused(400, "bad_request", "Content-Length together with Transfer-Encoding")
    if declared is not None:
        if not declared.isdigit():
            raise Refused(400, "bad_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise Refused(413, "too_large", f"upload over the limit of {limit:,} bytes")
    deadline = time.monotonic() + timeout
    chunks, size = [], 0
    stream = request.stream().__aiter__()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _stalled(timeout)
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), left)
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise _stalled(timeout) from None
        size += len(chunk)
        if size > limit:
            raise Refused(413, "too_large", f"upload over the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def image_bytes(request: Request, limit: int, timeout: float) -> bytes:
    """The uploaded image: the multipart field ``file`` (or the form's only file), else the
    raw body."""
    body = await read_body(request, limit, timeout)
    if not body:
        raise Refused(400, "bad_request", "empty body: send an image")
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "application/x-www-form-urlencoded":  # curl -d: line breaks dropped, bytes lost
        raise Refused(
            415,
            "unsupported_media",
            "a form-encoded body (curl -d) mangles an image's bytes: send it with curl "
            "--data-binary @image.png or -F file=@image.png",
        )
    if media != "multipart/form-data":
        return body

    async def replay() -> AsyncGenerator[bytes, None]:
        yield body

    parser = MultiPartParser(request.headers, replay(), max_files=1, max_fields=8)
    # the body is in memory already: its file part stays there too (Starlette spools a part
    # over 1 MiB to a temporary file, and uploads are never written to disk)
    parser.spool_max_size = len(body) + 1
    try:
        form = await parser.parse()
    except Exception as exc:  # python-multipart's errors on malformed bodies
        raise Refused(400, "bad_request", f"unreadable multipart body ({exc})") from None
    upload = form.get("file")
    if isinstance(upload, str):  # curl -F 'file=<x.png': the bytes sent as text, not a file
        raise Refused(
            400, "bad_request", "field 'file' holds text, not a file: send curl -F file=@image.png"
        )
    if upload is None:
        files = [v for v in form.values() if not isinstance(v, str)]
        if not files:
            raise Refused(400, "bad_request", "no file in the multipart body (field 'file')")
        upload = files[0]
    data = await upload.read()
    await form.close()
    return data


def check_header(data: bytes, max_pixels: int) -> int:
    """What the first bytes and the header tell, at once on the event loop: the format, and
    the pixel count, returned (a decompression bomb is refused before any pixel is decoded)."""
    if not data:
        raise NotAnImage("an empty file (zero bytes)")
    if sniff_format(data[:32]) not in WEB_FORMATS:
        raise NotAnImage("not an image, or a format this server does not take")
    height, width = read_size(data, max_pixels)
    return height * width


# what /openapi.json says /predict takes: the same image as a form's file or as the raw body
PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "description": "one image (PNG, JPEG, GIF, BMP, TIFF or WebP), as the multipart field "
        "'file' or as the raw body",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "responses": {
        code: {
            "description": text,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "error": {"type": "string"},
                            "detail": {"type": "string"},
                        },
                    }
                }
            },
        }
        for code, text in {
            "401": "missing or wrong API key",
            "408": "the upload did not arrive in time",
            "413": "upload over the size limit",
            "415": "not an image this server takes",
            "422": "unreadable image, or more pixels than the limit",
            "503": "the queue is full (Retry-After)",
        }.items()
    },
}
