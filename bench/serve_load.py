"""`cnnkit serve` under load, and a plain FastAPI app on the same model in the same run.

    python bench/serve_load.py --requests 2000 --clients 1,8,32

efficientnet_lite0 (ImageNet weights) is saved as a checkpoint and exported to ONNX; then,
one server at a time on a free port of 127.0.0.1:

- cnnkit: `cnnkit serve best.onnx` (onnxruntime, requests batched up to 8 images or 5 ms);
- plain: a FastAPI app that loads the same checkpoint with cnnkit.load and calls the PyTorch
  model once per request in a sync endpoint (what a user writes without cnnkit serve).

The clients (async httpx, bounded: each level sends a fixed number of requests and stops) post
JPEG photos from scikit-image; 10% of cnnkit's requests at the highest level are bad files (not
an image, truncated, a decompression bomb, over the upload limit), which must each get a 4xx.
Reported per level: p50/p99 latency of good requests, requests/s, failed good requests, the
bad files' status codes and p99 latency, and the server's RSS growth over the level.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import httpx
import psutil
from fastapi import FastAPI, UploadFile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_machine  # noqa: E402


def photos() -> list[bytes]:
    from PIL import Image
    from skimage import data

    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina"):
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        image.thumbnail((512, 512))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


BAD_KINDS = ("not an image", "truncated JPEG", "decompression bomb", "over the upload limit")


def bad_files(good: bytes) -> list[bytes]:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 99))
    return [b"this is not an image", good[: len(good) // 3], bomb, b"\0" * (11 * 1024 * 1024)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plain_app(checkpoint: str):
    """The baseline: FastAPI calling the PyTorch model once per request."""
    import cnnkit
    from cnnkit.data import decode_image

    model = cnnkit.load(checkpoint)
    app = FastAPI()

    @app.get("/readyz")
    def ready() -> dict:
        return {"status": "ready"}

    @app.post("/predict")
    def predict(file: UploadFile) -> dict:
        return model.predict(decode_image(file.file.read()), top_k=5).to_dict()

    return app


def start(argv: list[str], url: str) -> subprocess.Popen:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"server did not start: {' '.join(argv)}")


async def load(url: str, bodies: list[tuple[bytes, str | None]], clients: int) -> dict:
    """Send every body (good?) with `clients` concurrent connections; latency per request."""
    queue: asyncio.Queue = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)
    good_ms, bad_ms, failed, bad_codes = [], {}, 0, {}

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal failed
        while not queue.empty():
            body, kind = queue.get_nowait()
            start = time.perf_counter()
            try:
                reply = await http.post(f"{url}/predict", files={"file": ("x.jpg", body)})
                status = reply.status_code
            except httpx.HTTPError:
                status = 0
            ms = (time.perf_counter() - start) * 1000
            if kind is None:
                good_ms.append(ms)
                failed += status != 200
            else:
                bad_ms.setdefault(kind, []).append(ms)
                codes = bad_codes.setdefault(kind, {})
                codes[str(status)] = codes.get(str(status), 0) + 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    started = time.perf_counter()
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    wall = time.perf_counter() - started
    result = {
        "clients": clients,
        "requests": len(bodies),
        "requests_per_s": round(len(bodies) / wall, 1),
        "good_p50_ms": round(statistics.median(good_ms), 1),
        "good_p99_ms": round(_p99(good_ms), 1),
        "failed_good": failed,
    }
    if bad_ms:
        result["bad_files"] = {
            kind: {
                "codes": bad_codes[kind],
                "p99_ms": round(_p99(times), 1),
                "max_ms": round(max(times), 1),
            }
            for kind, times in bad_ms.items()
        }
    return result


def _p99(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def probe(url: str, stop_file: str) -> None:
    """Another client, not the loaded one: bad files one at a time until stop_file exists;
    prints each kind's status codes and latencies as JSON."""
    bad = bad_files(photos()[0])
    seen: dict[str, dict] = {kind: {"codes": {}, "ms": []} for kind in BAD_KINDS}
    with httpx.Client(timeout=30) as http:
        while not Path(stop_file).exists():
            for kind, body in zip(BAD_KINDS, bad, strict=True):
                start = time.perf_counter()
                status = http.post(f"{url}/predict", files={"file": ("x.jpg", body)}).status_code
                seen[kind]["ms"].append((time.perf_counter() - start) * 1000)
                seen[kind]["codes"][str(status)] = seen[kind]["codes"].get(str(status), 0) + 1
                time.sleep(0.05)
    out = {
        kind: {
            "codes": v["codes"],
            "p50_ms": round(statistics.median(v["ms"]), 1),
            "p99_ms": round(_p99(v["ms"]), 1),
            "max_ms": round(max(v["ms"]), 1),
        }
        for kind, v in seen.items()
        if v["ms"]
    }
    print(json.dumps(out))


def run_levels(name: str, argv: list[str], port: int, levels: list[tuple[int, int, float]]):
    url = f"http://127.0.0.1:{port}"
    proc = start(argv, url)
    out = []
    try:
        server = psutil.Process(proc.pid)
        good = photos()
        # warm-up at the highest level: the runtime's buffers reach their full-batch size
        top = max(c for c, _, _ in levels)
        asyncio.run(load(url, [(g, None) for g in good * 40], top))
        bad = bad_files(good[0])
        for clients, requests, bad_share in levels:
            every = round(1 / bad_share) if bad_share else 0
            bodies = []
            for i in range(requests):
                if every and i % every == every - 1:
                    k = (i // every) % len(bad)
                    bodies.append((bad[k], BAD_KINDS[k]))
                else:
                    bodies.append((good[i % len(good)], None))
            rss_before = server.memory_info().rss
            prober = None
            if bad_share:  # the refusals' latency as another client sees it, during the load
                stop = Path(tempfile.mkdtemp()) / "stop"
                prober = subprocess.Popen(
                    [sys.executable, __file__, "--probe", url, "--stop-file", str(stop)],
                    stdout=subprocess.PIPE,
                    text=True,
                )
            result = asyncio.run(load(url, bodies, clients))
            if prober is not None:
                stop.touch()
                result["bad_files_from_another_client"] = json.loads(prober.communicate()[0])
            result["rss_growth_mb"] = round((server.memory_info().rss - rss_before) / 2**20, 1)
            result["server"] = name
            print(json.dumps(result), flush=True)
            out.append(result)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="at the highest level")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--plain-app", metavar="CHECKPOINT", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--probe", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--stop-file", help=argparse.SUPPRESS)
    parser.add_argument(
        "--worker-nice", type=int, help="passed to cnnkit serve (default: cnnkit's own)"
    )
    parser.add_argument("--skip-plain", action="store_true", help="cnnkit serve only")
    parser.add_argument("--out", default="bench/results/serve_load.json")
    args = parser.parse_args()
    if args.probe:
        probe(args.probe, args.stop_file)
        return
    if args.plain_app:  # the baseline server's own process
        import uvicorn

        uvicorn.run(plain_app(args.plain_app), host="127.0.0.1", port=args.port, log_level="error")
        return
    machine = print_machine()
    from cnnkit.export import export_model
    from cnnkit.tasks.classify.predictor import Classifier

    clients = [int(c) for c in args.clients.split(",")]
    top = max(clients)
    levels = [
        (c, args.requests if c == top else max(200, args.requests // 4), 0.1 if c == top else 0.0)
        for c in clients
    ]
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Classifier.from_pretrained("efficientnet_lite0").save(Path(tmp) / "best.pt")
        model = export_model(checkpoint, "onnx", dynamic_batch=True).path
        port = free_port()
        cnnkit_argv = [sys.executable, "-m", "cnnkit", "serve", str(model), "--port", str(port)]
        if args.worker_nice is not None:
            cnnkit_argv += ["--worker-nice", str(args.worker_nice)]
        rows = run_levels(
            "cnnkit serve (onnx, batched)", [*cnnkit_argv, "--log-level", "error"], port, levels
        )
        port = free_port()
        plain_argv = [sys.executable, __file__, "--plain-app", str(checkpoint), "--port", str(port)]
        plain_levels = [(c, n, 0.0) for c, n, _ in levels if c == 8] or [(8, 500, 0.0)]
        if not args.skip_plain:
            rows += run_levels("plain FastAPI + PyTorch", plain_argv, port, plain_levels)
    ours = next((r for r in rows if r["server"].startswith("cnnkit") and r["clients"] == 8), None)
    plain = next((r for r in rows if r["server"].startswith("plain")), None)
    ratio = None
    if ours and plain:
        ratio = round(ours["requests_per_s"] / plain["requests_per_s"], 2)
        print(
            f"at 8 clients: cnnkit serve {ours['requests_per_s']} req/s,"
            f" plain {plain['requests_per_s']} req/s: {ratio}x"
        )
    result = {
        "machine": machine,
        "command": " ".join(sys.argv),
        "worker_nice": args.worker_nice,
        "rows": rows,
        "ratio_at_8_clients": ratio,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
