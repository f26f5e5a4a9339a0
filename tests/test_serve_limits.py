"""The server's bound on decoded pixels in flight, uploads a client abandons or sends in odd
ways, and options that would break it."""

from __future__ import annotations

import asyncio
import json
import math
import select
import socket
import tempfile
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cnnkit.errors import CnnkitError
from cnnkit.serve.app import ServeOptions, create_app
from cnnkit.serve.budget import PixelBudget
from test_serve import photo, png_bytes, start_server


def test_the_pixel_budget_makes_a_request_that_does_not_fit_wait():
    async def scenario() -> list[str]:
        budget, order = PixelBudget(100), []

        async def request(name: str, pixels: int, seconds: float) -> None:
            async with budget.hold(pixels):
                order.append(f"{name} in ({budget.in_flight})")
                await asyncio.sleep(seconds)
            order.append(f"{name} out")

        first = asyncio.create_task(request("a", 60, 0.05))
        await asyncio.sleep(0.01)
        await asyncio.gather(first, request("b", 60, 0), request("c", 30, 0))
        await request("huge", 500, 0)  # over the whole budget: runs, alone
        assert budget.in_flight == 0
        return order

    order = asyncio.run(scenario())
    assert order[:2] == ["a in (60)", "c in (90)"]  # c fits beside a; b waits for a
    assert order.index("b in (60)") > order.index("a out")
    assert order[-2:] == ["huge in (500)", "huge out"]


def test_an_upload_the_client_abandons_is_no_internal_error(cls_run):
    proc, url = start_server(cls_run.run_dir)
    try:
        port = int(url.rsplit(":", 1)[1])
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(
                    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                    b"Content-Length: 5000\r\n\r\n\x89PNG"
                )
        time.sleep(1.0)
        reply = httpx.post(f"{url}/predict", content=png_bytes(photo()), timeout=30)
        assert reply.status_code == 200
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert 'reason="internal"' not in metrics
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert "Traceback" not in out and "internal error" not in out


def test_stalled_uploads_and_headers_are_closed_after_the_upload_timeout(cls_run):
    proc, url = start_server(cls_run.run_dir, "--upload-timeout", "1.5")
    try:
        port = int(url.rsplit(":", 1)[1])
        headers = (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 5000\r\n\r\n"
        )
        for drip in (False, True):  # silent after 4 bytes; a byte every 0.4 s
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                started = time.monotonic()
                s.sendall(headers + b"\x89PNG")
                reply = b""
                while time.monotonic() - started < 8:
                    answered = select.select([s], [], [], 0.4)[0]
                    if not answered:
                        if drip:
                            s.sendall(b"\0")
                        continue
                    chunk = s.recv(4096)
                    if not chunk:  # closed by the server
                        break
                    reply += chunk
                waited = time.monotonic() - started
            assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
            assert b'"error":"timeout"' in reply
            assert 1.4 < waited < 6, waited
        # headers that never end (slowloris): the connection is closed after the same time
        for drip in (False, True):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                started = time.monotonic()
                s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
                closed = False
                while time.monotonic() - started < 8 and not closed:
                    if select.select([s], [], [], 0.4)[0]:
                        closed = s.recv(4096) == b""
                    elif drip:
                        s.sendall(b"X")
                waited = time.monotonic() - started
            assert closed and 1.4 < waited < 6, (drip, waited)
        # what h11 cannot parse, and two framings at once: the app's one line of JSON
        for request in (
            b"FOO\r\n\r\n",
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(request)
                reply = b""
                while chunk := s.recv(65536):  # the server closes after its answer
                    reply += chunk
            head, _, body = reply.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400"), reply
            assert json.loads(body)["error"] == "bad_request", reply
        good = httpx.post(f"{url}/predict", content=png_bytes(photo()), timeout=30)
        assert good.status_code == 200
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert 'cnnkit_errors_total{reason="timeout"} 2.0' in metrics
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert "Traceback" not in out


def test_bad_server_options_are_one_line():
    """An empty key (an unset variable) would open /predict while /info says a key is needed;
    an infinite wait or limit would hang or break every request."""
    for options, flag in (
        ({"api_key": ""}, "--api-key is empty"),
        ({"api_key": "  "}, "--api-key is empty"),
        ({"max_upload_mb": math.inf}, "--max-upload-mb"),
        ({"max_wait_ms": math.inf}, "--max-wait-ms"),
        ({"upload_timeout_s": math.nan}, "--upload-timeout"),
    ):
        with pytest.raises(CnnkitError, match=flag):
            ServeOptions(**options)


def test_uploads_in_the_ways_clients_send_them(cls_run, tmp_path, monkeypatch):
    app = create_app(cls_run.run_dir, ServeOptions(max_upload_mb=4, api_key="k"))
    key = {"x-api-key": "k"}
    rng = np.random.default_rng(1)
    big = png_bytes(Image.fromarray(rng.integers(0, 255, (700, 700, 3), dtype=np.uint8)))
    assert len(big) > 1024 * 1024  # Starlette spools a larger part to a temporary file
    # no temporary folder to write in: the upload stays in memory and is answered
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-folder"))
    with TestClient(app) as c:
        reply = c.post("/predict", files={"file": ("big.png", big)}, headers=key)
        assert reply.status_code == 200, reply.text
        unauthorised = c.post("/predict", content=big)
        assert unauthorised.status_code == 401
        assert unauthorised.headers["www-authenticate"].startswith("Bearer")
        # media types are case-insensitive
        boundary = "XyZ"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
                f"Content-Type: image/png\r\n\r\n"
            ).encode()
            + png_bytes(photo())
            + f"\r\n--{boundary}--\r\n".encode()
        )
        mixed = {**key, "content-type": f"Multipart/Form-Data; boundary={boundary}"}
        assert c.post("/predict", content=body, headers=mixed).status_code == 200
        # curl -d @image.png: form-encoded, its line breaks dropped; the answer says how to send
        form = {**key, "content-type": "application/x-www-form-urlencoded"}
        reply = c.post("/predict", content=png_bytes(photo()).replace(b"\n", b""), headers=form)
        assert reply.status_code == 415 and "--data-binary" in reply.json()["detail"]
        # text that starts like a bitmap is no bitmap
        reply = c.post("/predict", content=b"BMW makes cars, not bitmaps", headers=key)
        assert reply.status_code == 415, reply.text
        bmp = png_bytes(photo(), "BMP")
        assert c.post("/predict", content=bmp, headers=key).status_code == 200
