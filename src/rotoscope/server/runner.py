"""The job scheduler: starts queued jobs in worker processes, at most N at once, and notices how each one ends.

It runs as a thread of the server process. At start-up it settles the jobs an earlier server left running: a
worker that is still alive is adopted (waited for), a dead one's job goes back to the queue to be resumed.
A worker that dies on its own (killed, out of memory) fails its job with the exit code, never silently.
Several servers on one machine may share a job database: each claims its jobs atomically (JobStore.claim) under
its own id, and leaves alone the jobs of the others that are still running.
With `cluster` (a Ray address) the workers hand their painting and training to Ray (worker.py) and stay each
job's supervisor.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
import weakref
from pathlib import Path

from .jobs import JobStore

POLL_S = 0.2


def worker_alive(pid: int, job_id: str) -> bool:
    """Is `pid` still the worker of `job_id`? (Checks the command line, so a reused pid is not mistaken for it.)"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            text = cmdline.read_bytes()
            return job_id.encode() in text and not _zombie(pid)
        except OSError:
            return False
    return True


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _started(pid: int) -> str:
    """When process `pid` started (clock ticks since boot; '' where /proc is not there): with the pid, a process's
    identity, which a reused pid does not share."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


_SCHEDULERS: weakref.WeakValueDictionary[str, Scheduler] = weakref.WeakValueDictionary()  # this process's


def server_alive(server_id: str) -> bool:
    """Is the scheduler `server_id` (Scheduler.id: pid, process start, a token) still running? Another process's by
    its pid and start time; this process's by its registry (tests and embedded servers run several in one)."""
    pid, _, rest = server_id.partition(":")
    started = rest.partition(":")[0]
    if not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        s = _SCHEDULERS.get(server_id)
        return s is not None and not s._stop.is_set()
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    return _started(int(pid)) == started


def log_tail(folder: Path, lines: int = 5) -> str:
    try:
        return "\n".join((folder / "log.txt").read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Scheduler:
    """Starts, watches and stops worker processes for the jobs in a JobStore. `cluster`: the Ray address its workers
    paint and train on (cluster.job_address), or None for in the worker itself."""

    def __init__(self, store: JobStore, max_jobs: int = 1, attempts: int = 3, cluster: str | None = None):
        self.store = store
        self.max_jobs = max(1, max_jobs)
        self.attempts = attempts
        self.cluster = cluster
        self.id = f"{os.getpid()}:{_started(os.getpid())}:{uuid.uuid4().hex[:8]}"  # recorded with each claim
        _SCHEDULERS[self.id] = self
        self.procs: dict[str, subprocess.Popen] = {}
        self.adopted: dict[str, int] = {}  # job id -> pid of a worker started by an earlier server
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="rotoscope-jobs", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    def running(self) -> int:
        return len(self.procs) + len(self.adopted)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as e:  # noqa: BLE001 - a bad tick must not stop the scheduler; it is logged and retried
                print(f"rotoscope jobs: {type(e).__name__}: {e}", file=sys.stderr)
            self._stop.wait(POLL_S)

    def recover(self) -> None:
        """Settle the jobs a previous server left 'running' (those of another server still running are its own)."""
        for job in self.store.list(("running",), limit=100_000):
            if job.server and job.server != self.id and server_alive(job.server):
                continue
            if job.pid and worker_alive(job.pid, job.id):
                self.adopted[job.id] = job.pid
            else:
                self._requeue(job, "the server stopped")

    def shutdown(self, timeout: float = 20.0) -> None:
        """Stop the loop; ask every worker to checkpoint and stop (their jobs go back to the queue)."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        with self._lock:
            procs = dict(self.procs)
            for p in procs.values():
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            deadline = time.time() + timeout
            for job_id, p in procs.items():
                try:
                    p.wait(timeout=max(0.1, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                self.store.finish(job_id, "queued", note="interrupted (the server stopped); resuming")
            self.procs.clear()

    # ------------------------------------------------------------ one round

    def tick(self) -> None:
        with self._lock:
            self._reap()
            self._start_queued()

    def _reap(self) -> None:
        for job_id, p in list(self.procs.items()):
            code = p.poll()
            if code is None:
                continue
            del self.procs[job_id]
            job = self.store.get(job_id)
            if job and job.status == "running":  # the worker ended without recording why
                if job.cancel_requested:
                    self.store.finish(job_id, "cancelled", note="cancelled")
                else:
                    from .worker import public_error

                    tail = public_error(log_tail(Path(job.folder), 3), job)
                    self.store.finish(job_id, "failed", error=f"the worker process died (exit code {code})"
                                      + (f"; last log lines: {tail}" if tail else ""))
        for job_id, pid in list(self.adopted.items()):
            if worker_alive(pid, job_id):
                continue
            del self.adopted[job_id]
            job = self.store.get(job_id)
            if job and job.status == "running" and job.pid == pid:  # not since requeued and claimed elsewhere
                self._requeue(job, "its worker stopped")

    def _requeue(self, job, why: str) -> None:
        """A job whose worker vanished with its server: back to the queue to resume (unless it was being cancelled).
        Only the claim it was read under: if another server has claimed it since, that claim is left alone."""
        if job.cancel_requested:
            self.store.finish(job.id, "cancelled", attempt=job.attempts, note=f"cancelled at step {job.step}")
        else:
            self.store.finish(job.id, "queued", attempt=job.attempts,
                              note=f"interrupted at step {job.step} ({why}); resuming")

    def _start_queued(self) -> None:
        free = self.max_jobs - self.running()
        if free <= 0:
            return
        for job in reversed(self.store.list(("queued",))):  # oldest first
            if free <= 0:
                break
            if job.attempts >= self.attempts:
                self.store.finish(job.id, "failed", only_if_running=False,
                                  error=f"interrupted {job.attempts} times; giving up ({job.note or ''})")
                continue
            if not self.store.claim(job.id, self.id):  # another server took it first
                continue
            self.procs[job.id] = self._spawn(job.id)
            self.store.update(job.id, pid=self.procs[job.id].pid)
            free -= 1

    def _spawn(self, job_id: str) -> subprocess.Popen:
        folder = self.store.folder(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[2])  # the worker runs the same rotoscope as this server
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        args = [sys.executable, "-m", "rotoscope.server.worker", str(self.store.db), str(self.store.jobs_root), job_id]
        with open(folder / "log.txt", "ab") as logf:
            return subprocess.Popen(args + ([self.cluster] if self.cluster else []), stdout=logf,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

    # ------------------------------------------------------------ requests from the API

    def interrupt(self, job_id: str) -> None:
        """Wake a running worker so it sees its cancel flag now, not at its next step."""
        with self._lock:
            p = self.procs.get(job_id)
            pid = p.pid if p and p.poll() is None else self.adopted.get(job_id)
        if pid:
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                pass
