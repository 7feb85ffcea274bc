"""Load and fault test of the server: 50 clients on loopback with mixed requests, a worker killed, a server restarted.

Starts `rotoscope serve` on 127.0.0.1 (never any other address) with a throw-away ROTOSCOPE_HOME holding one
filter, then runs three phases, each holding --clients concurrent clients for --duration seconds. Every client
loops over mixed requests (apply a photo, list the filters, health); the phase also submits jobs:
  1. mixed:           one tiny training job and one tiny video job, while the clients run;
  2. worker-killed:   a training job whose worker process is killed with SIGKILL mid-job, then a video job;
  3. server-restart:  a training job and a video job, then the server is killed with SIGKILL mid-load and started
                      again on the same port and home: its jobs must finish after the restart.
Measured per request kind: requests, errors, throughput, p50/p95/p99/max latency; and the latency of a health
prober in a process of its own (5 probes a second: the clients' event loop does not delay it). Asserted (exit
code 1 otherwise): no request lost (every request answered with its expected status, except those cut by the
deliberate server kill, counted apart), /api/health (the prober's) under --health-limit seconds
throughout (whenever the server is up), every job reaches its promised end (done; the job whose worker was killed:
failed with the exit code, as README "Jobs are durable" says), and the filter listing stays complete.

    python benchmarks/load_apply.py --clients 50 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))
HOST = "127.0.0.1"  # loopback only
TINY_TRAIN = {"size": "32", "channels": "8,16,16", "res_blocks": "1", "backbone": "random", "precision": "fp32",
              "checkpoint_every": "5", "set": ["holdout=0", "eval_every=1000", "preview_every=1000"]}
EXPECTED = {"apply": 200, "filters": 200, "health": 200, "train": 202, "video": 202}
WEIGHTS = {"apply": 0.45, "filters": 0.3, "health": 0.25}


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


def photo(size: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size * 3 // 4, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, "PNG")
    return buf.getvalue()


def clip(frames: int = 24, size: tuple[int, int] = (64, 48)) -> bytes:
    """A tiny H.264 clip: a square moving over noise."""
    import av

    rng = np.random.default_rng(1)
    w, h = size
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.mp4"
        with av.open(str(path), "w") as c:
            vs = c.add_stream("libx264", rate=24, options={"bf": "0"})
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            vs.codec_context.time_base = Fraction(1, 24)
            base = rng.integers(0, 200, (h, w, 3), dtype=np.uint8)
            for i in range(frames):
                img = base.copy()
                img[i % (h - 8):i % (h - 8) + 8, (2 * i) % (w - 8):(2 * i) % (w - 8) + 8] = (250, 60, 40)
                f = av.VideoFrame.from_ndarray(img, format="rgb24")
                f.pts = i
                for p in vs.encode(f):
                    c.mux(p)
            for p in vs.encode():
                c.mux(p)
        return path.read_bytes()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """`rotoscope serve` in its own session (its workers are its children), restartable on the same port."""

    def __init__(self, home: Path, port: int, apply_threads: int, max_jobs: int):
        self.home, self.port, self.apply_threads, self.max_jobs = home, port, apply_threads, max_jobs
        self.proc: subprocess.Popen | None = None
        self.url = f"http://{HOST}:{port}"
        self.log = home / "server.log"

    def start(self, timeout: float = 120) -> None:
        env = {**os.environ, "ROTOSCOPE_HOME": str(self.home), "PYTHONPATH": str(SRC)}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "rotoscope", "serve", "--host", HOST, "--port",
                                          str(self.port), "--apply-threads", str(self.apply_threads),
                                          "--max-jobs", str(self.max_jobs)], env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise SystemExit(f"server did not start in {timeout:.0f} s: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL to the server process alone: its workers are orphaned (they notice, checkpoint and requeue)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        if self.proc:  # the session: workers left behind by the killed servers
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def worker_pid(job_id: str) -> int | None:
    """The worker process of a job (its command line names the job)."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if b"rotoscope.server.worker" in cmd and job_id.encode() in cmd:
                return int(d.name)
    return None


PROBER = """
import sys, time, httpx
url, stop = sys.argv[1], time.time() + float(sys.argv[2])
with httpx.Client(timeout=30) as c:
    while time.time() < stop:
        t0 = time.time()
        try:
            r = c.get(url)
            print(t0, time.time() - t0, r.status_code, flush=True)
        except httpx.HTTPError as e:
            print(t0, time.time() - t0, type(e).__name__, flush=True)
        time.sleep(max(0.0, 0.2 - (time.time() - t0)))
"""


class Phase:
    """The clients, the prober and the record of one phase."""

    def __init__(self, name: str, server: Server, args, bodies: dict):
        self.name, self.server, self.args, self.bodies = name, server, args, bodies
        self.lat: dict[str, list[float]] = {k: [] for k in EXPECTED}
        self.errors: dict[str, list[str]] = {k: [] for k in EXPECTED}
        self.cut: dict[str, int] = {k: 0 for k in EXPECTED}  # cut by the deliberate server kill
        self.health: list[float] = []  # the prober's health answers (a process of its own, 5 a second)
        self.probe_errors: list[str] = []
        self.down = asyncio.Event()  # set while the server is deliberately down
        self.down_windows: list[tuple[float, float]] = []  # wall-clock times the server was deliberately down
        self.jobs: dict[str, dict] = {}  # job id -> {"kind", "expect", "final"}
        self.wall = 0.0
        self.t0 = time.time()
        self.events: list[str] = []

    async def request(self, client: httpx.AsyncClient, kind: str, **kw) -> httpx.Response | None:
        url = self.server.url
        t0 = time.perf_counter()
        was_down = self.down.is_set()
        try:
            if kind == "apply":
                r = await client.post(f"{url}/api/filters/bench/apply", files={"image": ("p.png", self.bodies["photo"],
                                                                                       "image/png")},
                                      data={"strength": "0.9"})
            elif kind == "filters":
                r = await client.get(f"{url}/api/filters")
            elif kind == "health":
                r = await client.get(f"{url}/api/health")
            elif kind == "train":
                r = await client.post(f"{url}/api/jobs/train", files=[("artwork", ("art.png", self.bodies["art"],
                                                                                   "image/png"))],
                                      data={**TINY_TRAIN, "name": kw["name"], "steps": str(kw["steps"])})
            else:
                r = await client.post(f"{url}/api/jobs/video", files={"video": ("c.mp4", self.bodies["clip"],
                                                                                "video/mp4")},
                                      data={"filter": "bench", "stabilize": "false"})
        except httpx.HTTPError as e:
            if was_down or self.down.is_set():
                self.cut[kind] += 1
                await asyncio.sleep(0.2)
            else:
                self.errors[kind].append(f"{type(e).__name__} {str(e)[:60]} at {time.time() - self.t0:.1f} s "
                                         f"after {time.perf_counter() - t0:.2f} s")
            return None
        dt = time.perf_counter() - t0
        if r.status_code != EXPECTED[kind]:
            self.errors[kind].append(f"{r.status_code} {r.text[:100]}")
            return None
        if kind == "filters" and not any(f.get("name") == "bench" for f in r.json()):
            self.errors[kind].append("the filter listing lost the filter")
        if kind == "apply" and not r.content.startswith(b"\x89PNG"):
            self.errors[kind].append("the apply answer is not a PNG")
        self.lat[kind].append(dt)
        return r

    async def client(self, client: httpx.AsyncClient, stop: float, seed: int) -> None:
        rng = random.Random(seed)
        kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
        while time.perf_counter() < stop:
            await self.request(client, rng.choices(kinds, weights)[0])

    def read_prober(self, out: str) -> None:
        """The prober's lines: a probe sent while the server was deliberately down (or within 1 s of its return)
        is not held against it; any other failure or non-200 is."""
        for line in out.splitlines():
            t0, dt, status = line.split()
            t0, dt = float(t0), float(dt)
            if any(a - 1 <= t0 <= b + 1 for a, b in self.down_windows):
                continue
            if status == "200":
                self.health.append(dt)
            else:
                self.probe_errors.append(f"{status} after {dt:.2f} s")

    async def submit(self, client: httpx.AsyncClient, kind: str, expect: str, **kw) -> str | None:
        r = await self.request(client, kind, **kw)
        if r is None:
            return None
        job_id = r.json()["id"]
        self.jobs[job_id] = {"kind": kind, "expect": expect, "final": None}
        return job_id

    async def job_status(self, client: httpx.AsyncClient, job_id: str) -> dict | None:
        try:
            r = await client.get(f"{self.server.url}/api/jobs/{job_id}")
            return r.json() if r.status_code == 200 else None
        except httpx.HTTPError:
            return None

    async def wait_jobs(self, client: httpx.AsyncClient, timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            pending = [j for j, v in self.jobs.items() if v["final"] is None]
            if not pending:
                return
            for j in pending:
                s = await self.job_status(client, j)
                if s and s["status"] in ("done", "failed", "cancelled"):
                    self.jobs[j]["final"] = s
            await asyncio.sleep(0.5)

    async def run(self, scenario) -> None:
        # an idle connection is dropped by the client before uvicorn's keep-alive timeout (5 s) can close it under a
        # request just sent: httpx's default expiry is the same 5 s, and that race read as lost requests (ReadError)
        limits = httpx.Limits(max_connections=self.args.clients + 20, max_keepalive_connections=self.args.clients + 20,
                              keepalive_expiry=2.0)
        async with httpx.AsyncClient(timeout=self.args.request_timeout, limits=limits) as client:
            t0 = time.perf_counter()
            stop = t0 + self.args.duration
            prober = await asyncio.create_subprocess_exec(
                sys.executable, "-c", PROBER, f"{self.server.url}/api/health", str(self.args.duration),
                stdout=asyncio.subprocess.PIPE)
            tasks = [asyncio.create_task(self.client(client, stop, i)) for i in range(self.args.clients)]
            await scenario(self, client)
            await asyncio.gather(*tasks)
            self.wall = time.perf_counter() - t0
            self.read_prober((await prober.communicate())[0].decode())
            await self.wait_jobs(client, self.args.job_timeout)


async def mixed(phase: Phase, client) -> None:
    await phase.submit(client, "train", "done", name="load-mixed", steps=phase.args.train_steps)
    await phase.submit(client, "video", "done")


async def worker_killed(phase: Phase, client) -> None:
    job = await phase.submit(client, "train", "failed", name="load-killed", steps=phase.args.train_steps * 20)
    if job is None:
        return
    deadline = time.perf_counter() + phase.args.duration
    while time.perf_counter() < deadline:  # running, with a step done: mid-job
        s = await phase.job_status(client, job)
        if s and s["status"] == "running" and s["step"] >= 1:
            pid = worker_pid(job)
            if pid:
                os.kill(pid, signal.SIGKILL)
                phase.events.append(f"killed the worker of the training job at step {s['step']}, "
                                    f"{time.time() - phase.t0:.1f} s into the phase")
                break
        await asyncio.sleep(0.1)
    else:
        phase.events.append("the training job never reached a step within the phase: no worker killed")
        phase.jobs[job]["expect"] = "killed mid-job"
    await phase.submit(client, "video", "done")  # the queue goes on after the kill


async def server_restart(phase: Phase, client) -> None:
    train = await phase.submit(client, "train", "done", name="load-restart", steps=phase.args.train_steps * 3)
    await phase.submit(client, "video", "done")
    deadline = time.perf_counter() + phase.args.duration * 0.7
    s = None
    while time.perf_counter() < deadline:  # kill once the training job is running with a checkpoint to resume
        s = await phase.job_status(client, train) if train else None
        if s and s["status"] == "running" and s["step"] >= 6:
            break
        await asyncio.sleep(0.1)
    phase.down.set()
    down_from = time.time()
    step = s["step"] if s else None
    await asyncio.get_running_loop().run_in_executor(None, phase.server.kill)
    t0 = time.perf_counter()
    await asyncio.get_running_loop().run_in_executor(None, phase.server.start)
    phase.down_windows.append((down_from, time.time()))
    phase.events.append(f"killed the server (training job at step {step}); up again after "
                        f"{time.perf_counter() - t0:.1f} s")
    await asyncio.sleep(0.5)  # requests sent before the new server answered are still cut
    phase.down.clear()


def report(phases: list[Phase], args, limit: float) -> list[str]:
    failures: list[str] = []
    load = os.getloadavg()
    print(f"\nserver load test: {args.clients} clients per phase, {args.duration:.0f} s per phase, {args.size}x"
          f"{args.size * 3 // 4} px photos, filter {args.channels} x{args.res_blocks} res blocks, apply pool "
          f"{args.apply_threads}, max jobs {args.max_jobs}, {os.cpu_count()} CPUs (load average at the end "
          f"{load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}), loopback {HOST}\n")
    print("| phase | kind | requests | errors | cut by kill | req/s | p50 ms | p95 ms | p99 ms | max ms |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for ph in phases:
        for kind in EXPECTED:
            lat = ph.lat[kind]
            if not lat and not ph.errors[kind] and not ph.cut[kind]:
                continue
            ms = [pct(lat, q) * 1000 for q in (50, 95, 99)] + [max(lat) * 1000 if lat else float("nan")]
            print(f"| {ph.name} | {kind} | {len(lat)} | {len(ph.errors[kind])} | {ph.cut[kind]} | "
                  f"{len(lat) / ph.wall:.1f} | " + " | ".join(f"{v:.0f}" for v in ms) + " |")
            if ph.errors[kind]:
                failures.append(f"{ph.name}: {len(ph.errors[kind])} {kind} requests lost or wrong, e.g. "
                                f"{ph.errors[kind][:3]}")
        total = sum(len(v) for v in ph.lat.values())
        print(f"| {ph.name} | **all** | {total} | {sum(map(len, ph.errors.values()))} | {sum(ph.cut.values())} | "
              f"{total / ph.wall:.1f} | | | | |")
        h = ph.health
        hms = [pct(h, q) * 1000 for q in (50, 95, 99)] + [max(h) * 1000 if h else float("nan")]
        print(f"| {ph.name} | health prober (own process) | {len(h)} | {len(ph.probe_errors)} | | "
              f"{len(h) / ph.wall:.1f} | " + " | ".join(f"{v:.0f}" for v in hms) + " |")
        if not h or max(h) >= limit:
            failures.append(f"{ph.name}: /api/health took {max(h) if h else float('nan'):.2f} s at worst "
                            f"(limit {limit} s; {sum(x >= limit for x in h)} of {len(h)} probes over it)")
        if ph.probe_errors:
            failures.append(f"{ph.name}: health probes failed while the server was up: {ph.probe_errors[:3]}")
    print("\n| phase | job | expected | ended | seconds | note |")
    print("| --- | --- | --- | --- | ---: | --- |")
    for ph in phases:
        for job_id, j in ph.jobs.items():
            f = j["final"] or {}
            ended = f.get("status", "not finished")
            secs = (f.get("finished") or 0) - (f.get("created") or 0) if f else float("nan")
            note = (f.get("error") or f.get("note") or "")[:70].replace("|", "/")
            print(f"| {ph.name} | {j['kind']} | {j['expect']} | {ended} | {secs:.0f} | {note} |")
            if ended != j["expect"]:
                failures.append(f"{ph.name}: the {j['kind']} job ended {ended}, expected {j['expect']}")
            if j["expect"] == "failed" and "exit code -9" not in (f.get("error") or ""):
                failures.append(f"{ph.name}: the killed job does not say how its worker ended: {f.get('error')}")
    print()
    for ph in phases:
        for e in ph.events:
            print(f"{ph.name}: {e}")
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50, help="concurrent clients in every phase")
    ap.add_argument("--duration", type=float, default=30, help="seconds each phase holds the clients")
    ap.add_argument("--phases", default="mixed,worker-killed,server-restart")
    ap.add_argument("--apply-threads", type=int, default=2, help="the server's apply pool")
    ap.add_argument("--max-jobs", type=int, default=2, help="the server's jobs at once")
    ap.add_argument("--size", type=int, default=128, help="photo width in pixels (height is 3/4 of it)")
    ap.add_argument("--channels", default="8,16,16", help="filter network widths (32,64,128: the default filter)")
    ap.add_argument("--res-blocks", type=int, default=1)
    ap.add_argument("--train-steps", type=int, default=20, help="the tiny training job's steps")
    ap.add_argument("--health-limit", type=float, default=1.0, help="seconds /api/health may take at most")
    ap.add_argument("--request-timeout", type=float, default=120)
    ap.add_argument("--log-lines", type=int, default=30, help="lines of the server's log shown when a check fails")
    ap.add_argument("--job-timeout", type=float, default=300, help="seconds to wait for the jobs after a phase")
    args = ap.parse_args()
    channels = tuple(int(c) for c in args.channels.split(","))
    scenarios = {"mixed": mixed, "worker-killed": worker_killed, "server-restart": server_restart}
    bodies = {"photo": photo(args.size), "art": photo(64, seed=2), "clip": clip()}
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="rotoscope-load-") as tmp:
        home = Path(tmp)
        make_filter(home, "bench", channels, args.res_blocks)
        server = Server(home, free_port(), args.apply_threads, args.max_jobs)
        server.start()
        try:
            httpx.post(f"{server.url}/api/filters/bench/apply", timeout=120,
                       files={"image": ("p.png", bodies["photo"], "image/png")})  # warm-up: load the filter
            for name in args.phases.split(","):
                phase = Phase(name, server, args, bodies)
                t0 = time.perf_counter()
                asyncio.run(phase.run(scenarios[name]))
                print(f"phase {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
                phases.append(phase)
        finally:
            server.stop()
        failures = report(phases, args, args.health_limit)
        if failures and server.log.exists():
            print("\nthe server's log, last lines:\n" + "\n".join(server.log.read_text(errors="replace")
                                                                  .splitlines()[-args.log_lines:]))
    for f in failures:
        print("FAILED:", f)
    print("\nresult:", "FAILED" if failures else "all requests answered, health within the limit, every job ended "
          "as promised")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
