"""Load test of the apply endpoint: N concurrent requests on loopback, throughput and latency, no errors allowed.

Starts `rotoscope serve` on 127.0.0.1 (never any other address) with a throw-away ROTOSCOPE_HOME holding one filter
of the default architecture, then measures, in the same run:
  - sequential: one request at a time (the baseline),
  - concurrent: --concurrency requests in flight at once,
and, during the concurrent phase, how fast /api/health answers (the event loop must stay free while images are
painted in the apply pool). Every phase is bounded by --requests and --time-limit.

    python benchmarks/load_apply.py --requests 48 --concurrency 8 --size 256
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))
HOST = "127.0.0.1"  # loopback only


def make_filter(home: Path, name: str, channels: tuple, res_blocks: int) -> None:
    import torch

    from rotoscope.config import NetConfig
    from rotoscope.filter import save_filter
    from rotoscope.network import FilterNet

    torch.manual_seed(0)
    net = FilterNet(NetConfig(channels=channels, res_blocks=res_blocks))
    card = {"name": name, "architecture": {"type": "FilterNet", "channels": list(channels),
                                           "res_blocks": res_blocks, "kernel_outer": 9}}
    save_filter(net, card, home / "filters" / f"{name}.safetensors")


def photo(size: int) -> bytes:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (size * 3 // 4, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, "PNG")
    return buf.getvalue()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


async def phase(url: str, body: bytes, requests: int, concurrency: int, time_limit: float, probe: bool) -> dict:
    sem = asyncio.Semaphore(concurrency)
    lat, errors, health = [], [], []
    deadline = time.perf_counter() + time_limit
    done = asyncio.Event()
    async with httpx.AsyncClient(timeout=time_limit, limits=httpx.Limits(max_connections=concurrency + 2)) as client:
        async def one(i: int):
            async with sem:
                if time.perf_counter() > deadline:
                    return
                t0 = time.perf_counter()
                try:
                    r = await client.post(f"{url}/api/filters/bench/apply", files={"image": ("p.png", body, "image/png")},
                                          data={"strength": "0.9"})
                    if r.status_code != 200 or not r.content:
                        errors.append(f"{r.status_code} {r.text[:80]}")
                        return
                except httpx.HTTPError as e:
                    errors.append(type(e).__name__)
                    return
                lat.append(time.perf_counter() - t0)

        async def prober():
            while not done.is_set():
                t0 = time.perf_counter()
                r = await client.get(f"{url}/api/health")
                if r.status_code == 200:
                    health.append(time.perf_counter() - t0)
                await asyncio.sleep(0.1)

        probe_task = asyncio.create_task(prober()) if probe else None
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(requests)))
        wall = time.perf_counter() - t0
        done.set()
        if probe_task:
            await probe_task
    return {"ok": len(lat), "errors": errors, "wall": wall, "rps": len(lat) / wall if wall else 0.0,
            "p50": pct(lat, 50), "p95": pct(lat, 95), "health_p95": pct(health, 95), "health_n": len(health)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=48, help="requests in the concurrent phase (max 1000)")
    ap.add_argument("--baseline-requests", type=int, default=12, help="requests in the sequential phase")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--apply-threads", type=int, default=2, help="the server's apply pool")
    ap.add_argument("--size", type=int, default=256, help="photo width in pixels (height is 3/4 of it)")
    ap.add_argument("--channels", default="32,64,128", help="filter network widths (default: the default filter)")
    ap.add_argument("--res-blocks", type=int, default=5)
    ap.add_argument("--time-limit", type=float, default=300, help="seconds per phase at most")
    args = ap.parse_args()
    requests = max(1, min(args.requests, 1000))
    channels = tuple(int(c) for c in args.channels.split(","))

    with tempfile.TemporaryDirectory(prefix="rotoscope-bench-") as tmp:
        home = Path(tmp)
        make_filter(home, "bench", channels, args.res_blocks)
        port = free_port()
        env = {**os.environ, "ROTOSCOPE_HOME": str(home), "PYTHONPATH": str(SRC)}
        server = subprocess.Popen([sys.executable, "-m", "rotoscope", "serve", "--host", HOST, "--port", str(port),
                                   "--apply-threads", str(args.apply_threads)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        url = f"http://{HOST}:{port}"
        try:
            deadline = time.time() + 120
            while time.time() < deadline:
                try:
                    if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            else:
                print("server did not start:", server.stderr.read().decode()[-2000:])
                return 1
            body = photo(args.size)
            asyncio.run(phase(url, body, 2, 1, args.time_limit, False))  # warm-up: load the filter, first kernels
            seq = asyncio.run(phase(url, body, args.baseline_requests, 1, args.time_limit, True))
            conc = asyncio.run(phase(url, body, requests, args.concurrency, args.time_limit, True))
        finally:
            server.terminate()
            server.wait(30)

    print(f"apply load test: {args.size}x{args.size * 3 // 4} px photos, filter {channels} x{args.res_blocks} res "
          f"blocks, server apply pool {args.apply_threads}, {os.cpu_count()} CPUs, loopback {HOST}")
    print(f"{'phase':<22}{'requests':>9}{'errors':>8}{'req/s':>8}{'p50 s':>8}{'p95 s':>8}{'health p95 ms':>15}"
          f"{'req/s vs seq':>14}")
    for name, r in (("sequential (baseline)", seq), (f"concurrent x{args.concurrency}", conc)):
        print(f"{name:<22}{r['ok']:>9}{len(r['errors']):>8}{r['rps']:>8.2f}{r['p50']:>8.3f}{r['p95']:>8.3f}"
              f"{r['health_p95'] * 1000:>15.1f}{r['rps'] / seq['rps'] if seq['rps'] else float('nan'):>14.2f}")
    errors = seq["errors"] + conc["errors"]
    if errors:
        print("errors:", errors[:5])
    if conc["ok"] < requests:
        print(f"note: only {conc['ok']} of {requests} requests finished within {args.time_limit:.0f} s")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
