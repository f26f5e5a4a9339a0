"""The HTTP server as clients use it: the app through FastAPI's test client (every endpoint,
each task's JSON, hostile uploads), a real `cnnkit serve` process on a free port of 127.0.0.1
(batching, a full queue, an exported ONNX model underneath), and the page in a real browser."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import re
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import cnnkit
from browser import browser, needs_browser
from cnnkit.export import export_model
from cnnkit.serve.app import ServeOptions, create_app

SAMPLE = Path(cnnkit.__file__).parent / "data" / "samples" / "cifar10-sample" / "test"


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def client(cls_run):
    app = create_app(cls_run.run_dir, ServeOptions(max_upload_mb=1, max_pixels=4_000_000))
    with TestClient(app) as c:
        yield c


def test_health_ready_metrics_docs_and_page(client):
    assert client.get("/healthz").json() == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["task"] == "classify"
    assert client.get("/docs").status_code == 200
    assert "/predict" in client.get("/openapi.json").json()["paths"]
    page = client.get("/")
    assert page.status_code == 200 and 'id="file"' in page.text and "http" not in page.text.split(
        "<script>"
    )[0].replace('name="viewport"', "")  # fmt: skip
    client.post("/predict", content=png_bytes(photo()))
    metrics = client.get("/metrics").text
    assert 'cnnkit_requests_total{endpoint="/predict",status="200"}' in metrics
    assert "cnnkit_batch_size_bucket" in metrics and "process_resident_memory_bytes" in metrics


def test_the_docs_page_needs_no_internet_and_describes_the_upload(client):
    docs = client.get("/docs")
    assert docs.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', docs.text) + re.findall(
        r"url: *'([^']+)'", docs.text
    )
    assert sources and not [s for s in sources if "//" in s]  # every asset from this server
    for asset in (s for s in sources if s.endswith((".js", ".css"))):
        fetched = client.get(asset)
        assert fetched.status_code == 200 and len(fetched.content) > 10_000, asset
    body = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]
    content = body["content"]
    assert content["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"
    assert "application/octet-stream" in content and body["required"] is True


def test_head_requests_and_unknown_routes_answer_like_the_rest(client):
    for path in ("/", "/healthz", "/readyz", "/metrics", "/info", "/docs", "/openapi.json"):
        reply = client.head(path)
        assert reply.status_code == 200 and reply.content == b"", path
    slash = client.post("/predict/", content=png_bytes(photo()), follow_redirects=False)
    assert slash.status_code == 404 and slash.json()["error"] == "not_found"
    missing = client.get("/nothing/here")
    assert missing.status_code == 404
    assert missing.json() == {"error": "not_found", "detail": "Not Found"}
    wrong = client.get("/predict")
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"
    assert wrong.headers["allow"] == "POST"
    assert 'cnnkit_errors_total{reason="not_found"}' in client.get("/metrics").text


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_an_app_inside_another_program_leaves_its_threads_priorities_alone(cls_run):
    import threading

    def nices() -> list[int]:
        return [os.getpriority(os.PRIO_PROCESS, t.native_id) for t in threading.enumerate()]

    before = nices()
    with TestClient(create_app(cls_run.run_dir)) as c:  # ServeOptions(): worker_nice 0
        assert c.get("/readyz").status_code == 200
        assert c.post("/predict", content=png_bytes(photo())).status_code == 200
    assert nices()[: len(before)] == before


def test_startup_objects_are_frozen_out_of_garbage_collection_while_serving(cls_run):
    """A full collection over torch's and FastAPI's objects stalled every request for 165 ms
    under load; the app freezes them once it is warm and lets go when it stops."""
    import gc

    before = gc.get_freeze_count()  # the module's client may be serving already
    with TestClient(create_app(cls_run.run_dir)) as c:
        assert c.get("/readyz").status_code == 200
        assert gc.get_freeze_count() > max(before, 10_000)
        with TestClient(create_app(cls_run.run_dir)) as inner:  # a second app stops first
            assert inner.get("/readyz").status_code == 200
        assert gc.get_freeze_count() > 10_000  # still frozen for the outer one
    if before == 0:
        assert gc.get_freeze_count() == 0


def test_multipart_and_raw_bodies_give_the_predictors_answer(client, cls_run):
    image = sorted(SAMPLE.rglob("*.png"))[0]
    expected = cnnkit.load(cls_run.run_dir).predict(str(image), top_k=5).to_dict()
    raw = client.post("/predict", content=image.read_bytes(), headers={"content-type": "image/png"})
    form = client.post("/predict", files={"file": ("../../etc/passwd", image.read_bytes())})
    for reply in (raw, form):
        assert reply.status_code == 200
        body = reply.json()
        assert body["task"] == "classify" and body["label"] == expected["label"]
        assert [t["label"] for t in body["top_k"]] == [t["label"] for t in expected["top_k"]]
        assert abs(body["probability"] - expected["probability"]) < 1e-3
        assert "passwd" not in reply.text and "source" not in body
    for fmt in ("JPEG", "BMP", "GIF", "WEBP", "TIFF"):
        reply = client.post("/predict", content=png_bytes(photo(), fmt))
        assert reply.status_code == 200, (fmt, reply.text)


def forged_jpeg(width: int, height: int) -> bytes:
    """A 16x16 JPEG whose frame header claims another size."""
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    frame = data.find(b"\xff\xc0")
    data[frame + 5 : frame + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_hostile_uploads_get_a_4xx_and_one_line(client):
    good = png_bytes(photo())

    def chunks():  # no Content-Length: the stream itself passes the limit
        for _ in range(40):
            yield b"\0" * 65536

    cases = {
        "too large": (413, dict(content=b"\0" * (1024 * 1024 + 1))),
        "too large, streamed": (413, dict(content=chunks())),
        "decompression bomb": (422, dict(content=bomb_png())),
        "not an image": (415, dict(content=b"hello, world")),
        "empty": (400, dict(content=b"")),
        "text in the file field": (400, dict(data={"file": "not bytes"}, files={"x": ("", b"")})),
        "truncated": (422, dict(content=good[: len(good) // 2])),
        "JPEG claiming 6000x6000": (422, dict(content=forged_jpeg(6000, 6000))),
        "PostScript": (415, dict(content=b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 1 1\n")),
        "text as png": (415, dict(files={"file": ("cat.png", b"<html>not a png</html>")})),
        "form without a file": (400, dict(files={"note": (None, b"value")})),
        "urlencoded form": (415, dict(data={"name": "value"})),
    }
    for name, (status, kwargs) in cases.items():
        started = time.perf_counter()
        reply = client.post("/predict", **kwargs)
        assert reply.status_code == status, (name, reply.status_code, reply.text)
        body = reply.json()
        assert set(body) == {"error", "detail"} and "\n" not in body["detail"], name
        assert "Traceback" not in reply.text
        assert time.perf_counter() - started < 2.0, name
    empty_file = client.post("/predict", files={"file": ("cat.png", b"")})
    assert (
        empty_file.status_code == 415 and "empty file (zero bytes)" in empty_file.json()["detail"]
    )
    assert client.post("/predict", content=good).status_code == 200  # still serving


def test_an_api_key_guards_predict(cls_run):
    app = create_app(cls_run.run_dir, ServeOptions(api_key="s3cret"))
    image = png_bytes(photo())
    with TestClient(app) as c:
        assert c.post("/predict", content=image).status_code == 401
        assert c.post("/predict", content=image, headers={"x-api-key": "wrong"}).status_code == 401
        assert c.post("/predict", content=image, headers={"x-api-key": "s3cret"}).status_code == 200
        bearer = {"authorization": "Bearer s3cret"}
        assert c.post("/predict", content=image, headers=bearer).status_code == 200
        assert c.get("/healthz").status_code == 200  # only /predict is guarded
        assert c.get("/info").json()["api_key_required"] is True
        schema = c.get("/openapi.json").json()  # /docs can send the key
        schemes = schema["components"]["securitySchemes"]
        assert {"type": "apiKey", "in": "header", "name": "X-API-Key"}.items() <= next(
            iter(schemes.values())
        ).items()
        assert schema["paths"]["/predict"]["post"]["security"]


@pytest.fixture(scope="module")
def box_runs(tiny_detector_run, tiny_segmenter_run):
    return {"detect": tiny_detector_run, "segment": tiny_segmenter_run}


def test_detector_and_segmenter_json(box_runs):
    det, image = box_runs["detect"]
    with TestClient(create_app(det.run_dir)) as c:
        body = c.post("/predict", content=image.read_bytes()).json()
    assert body["task"] == "detect" and (body["width"], body["height"]) == (120, 96)
    expected = cnnkit.load(det.run_dir).predict(str(image))
    assert len(body["detections"]) == len(expected.detections)
    if body["detections"]:
        assert set(body["detections"][0]) == {"label", "score", "box"}

    seg, path = box_runs["segment"]
    with TestClient(create_app(seg.run_dir)) as c:
        body = c.post("/predict", content=path.read_bytes()).json()
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask_png"]))))
    assert body["task"] == "segment" and mask.shape == (56, 72)
    assert np.array_equal(mask, cnnkit.load(seg.run_dir).predict(str(path)).mask)
    assert abs(sum(body["shares"].values()) - 1) < 1e-6


# ---- a real server -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, *flags: str, env: dict[str, str] | None = None):
    port = free_port()
    cnnkit_cli = [sys.executable, "-m", "cnnkit", "serve", str(model), "--port", str(port)]
    proc = subprocess.Popen(
        [*cnnkit_cli, "--log-level", "warning", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("server not ready within 60 s")


async def burst(url: str, bodies: list[bytes], clients: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        return await asyncio.gather(*(http.post(f"{url}/predict", content=b) for b in bodies))


@pytest.fixture(scope="module")
def onnx_model(cls_run):
    return export_model(cls_run.run_dir, "onnx", dynamic_batch=True).path


def test_a_real_server_batches_an_onnx_model_and_refuses_bad_files_under_load(onnx_model):
    proc, url = start_server(onnx_model, "--max-batch", "8", "--max-wait-ms", "20")
    try:
        good, bad = png_bytes(photo()), b"not an image"
        bodies = [bad if i % 5 == 4 else good for i in range(60)]
        replies = asyncio.run(burst(url, bodies, 16))
        for body, reply in zip(bodies, replies, strict=True):
            assert reply.status_code == (415 if body is bad else 200), reply.text
        metrics = httpx.get(f"{url}/metrics").text
        sizes = [
            line for line in metrics.splitlines() if line.startswith("cnnkit_batch_size_count")
        ]
        calls = float(sizes[0].split()[-1])
        assert calls < 48, "48 good requests from 16 clients should share model calls"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def thread_nice(pid: int) -> dict[str, int]:
    """name -> nice of each thread of process ``pid`` (Linux /proc: stat field 19)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[f"{name}:{task.name}"] = int(fields[16])  # fields from the third: nice is 19th
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
@pytest.mark.parametrize("nice", [None, "0", "5"])
def test_the_event_loop_outranks_the_compute_threads(onnx_model, nice):
    flags = () if nice is None else ("--worker-nice", nice)
    # two compute threads, whatever the test worker runs on: onnxruntime then keeps a pool
    proc, url = start_server(onnx_model, *flags, env={**os.environ, "OMP_NUM_THREADS": "2"})
    try:
        good = png_bytes(photo())
        assert all(r.status_code == 200 for r in asyncio.run(burst(url, [good] * 8, 4)))
        threads = thread_nice(proc.pid)
        main_thread = next(v for k, v in threads.items() if k.endswith(f":{proc.pid}"))
        others = [v for k, v in threads.items() if not k.endswith(f":{proc.pid}")]
        expected = 10 if nice is None else int(nice)
        assert main_thread == os.nice(0)  # the event loop keeps the priority it started with
        # the model's thread, onnxruntime's pool, the decoding workers (Python does not name
        # threads for the OS, so they are told apart by id only)
        assert len(others) >= 2 and all(v == main_thread + expected for v in others), threads
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_a_full_queue_answers_503_with_retry_after(box_runs):
    """A detector (tens of ms a call) behind a queue of one: small uploads decode far faster
    than the model answers, so most of a burst of 40 finds the queue full."""
    run, image = box_runs["detect"]
    proc, url = start_server(run.run_dir, "--max-batch", "1", "--queue", "1", "--max-wait-ms", "0")
    try:
        replies = asyncio.run(burst(url, [image.read_bytes()] * 40, 40))
        codes = [r.status_code for r in replies]
        assert set(codes) <= {200, 503} and 503 in codes and 200 in codes
        assert all(r.headers.get("retry-after") == "1" for r in replies if r.status_code == 503)
        assert all(r.json()["error"] == "busy" for r in replies if r.status_code == 503)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_serve_refuses_a_missing_model_in_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "cnnkit", "serve", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("cnnkit: error:")


def test_a_port_in_use_is_one_line_before_the_model_loads(cls_run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "cnnkit", "serve", str(cls_run.run_dir), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == f"cnnkit: error: cannot listen on 127.0.0.1:{port}: " + (
        "Address already in use"
    )
    assert "serving" not in out.stdout


# ---- the page in a browser ---------------------------------------------------------------------


def upload_on_the_page(driver, url: str, image: Path, shot: Path) -> str:
    """Open the page, pick `image` in its file input, wait for the answer, save a screenshot;
    the result panel's text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/")
    driver.find_element(By.ID, "file").send_keys(str(image))
    WebDriverWait(driver, 30).until(
        lambda d: d.find_element(By.ID, "result").get_attribute("data-done")
    )
    assert driver.find_element(By.ID, "result").get_attribute("data-done") == "ok"
    driver.save_screenshot(str(shot))
    assert Image.open(shot).size[0] > 0
    return driver.find_element(By.ID, "result").text


def canvas_pixels(driver) -> np.ndarray:
    """The page's canvas as an (H, W, 4) array, read back through the browser."""
    data = driver.execute_script(
        "const c = document.getElementById('canvas');"
        "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);"
    )
    height = driver.execute_script("return document.getElementById('canvas').height")
    return np.array(data, np.uint8).reshape(height, -1, 4)


@needs_browser
def test_the_page_uploads_an_image_and_shows_the_classes(onnx_model, tmp_path):
    from selenium.webdriver.common.by import By

    proc, url = start_server(onnx_model)
    driver = browser()
    try:
        image = tmp_path / "upload.png"
        Image.open(sorted(SAMPLE.rglob("*.png"))[0]).resize((128, 128)).save(image)
        upload_on_the_page(driver, url, image, tmp_path / "page.png")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#result .bar")) == 5
        assert canvas_pixels(driver).shape[:2] == (128, 128)
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(timeout=20)


@needs_browser
@pytest.mark.parametrize("task", ["detect", "segment"])
def test_the_page_draws_boxes_and_masks(box_runs, task, tmp_path):
    run, image = box_runs[task]
    proc, url = start_server(run.run_dir)
    driver = browser()
    try:
        text = upload_on_the_page(driver, url, image, tmp_path / f"{task}.png")
        drawn = canvas_pixels(driver)[..., :3].astype(int)
        original = np.asarray(Image.open(image).convert("RGB")).astype(int)
        assert drawn.shape == original.shape
        if task == "detect":
            assert "objects" in text
            found = cnnkit.load(run.run_dir).predict(str(image)).detections
            assert (np.abs(drawn - original).max() > 0) == bool(found)  # boxes were drawn
        else:
            assert "pixels per class" in text
            mask = cnnkit.load(run.run_dir).predict(str(image)).mask
            changed = np.abs(drawn - original).sum(-1) > 30
            # the overlay tints the predicted objects' pixels and leaves the background alone
            assert changed[mask == 0].mean() < 0.05
            if (mask > 0).any():
                assert changed[mask > 0].mean() > 0.5
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(timeout=20)


@needs_browser
@pytest.mark.parametrize("task", ["detect", "segment"])
def test_the_page_answers_for_an_image_the_browser_cannot_show(box_runs, task, tmp_path):
    """The server reads TIFF; Chromium cannot draw it: the answer is shown without the picture
    (a segmenter's mask on its own) instead of the page waiting forever."""
    from selenium.webdriver.common.by import By

    run, image = box_runs[task]
    tiff = tmp_path / "upload.tiff"
    Image.open(image).convert("RGB").save(tiff)
    proc, url = start_server(run.run_dir)
    driver = browser()
    try:
        text = upload_on_the_page(driver, url, tiff, tmp_path / f"{task}-tiff.png")
        assert "cannot show the image" in driver.find_element(By.ID, "status").text
        width, height = Image.open(image).size
        if task == "detect":
            assert "objects" in text
            assert driver.execute_script("return document.getElementById('canvas').width") == 0
        else:
            drawn = canvas_pixels(driver)
            assert "pixels per class" in text
            scale = min(1, 560 / max(width, height))
            assert drawn.shape[:2] == (round(height * scale), round(width * scale))
            mask = cnnkit.load(run.run_dir).predict(str(image)).mask
            if scale == 1:  # the mask alone: tinted where the model found objects, else clear
                assert ((drawn[..., 3] > 0) == (mask > 0)).mean() > 0.99
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(timeout=20)
