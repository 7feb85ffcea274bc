"""Job records: training and video jobs, their per-step history and their files, kept in SQLite.

The server process and the worker processes share one SQLite file (WAL mode), so a job's state survives any of
them: a worker writes its progress, the server reads it, and a restarted server finds every job where it was left.
Several servers on one machine may share the file: a job is claimed by one UPDATE that only a queued job passes
(claim), and records which server claimed it, so that another server's start-up leaves it alone.
Each job also has a folder (inputs, preview, log, result) under ROTOSCOPE_HOME/server/jobs/ID.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import Invalid
from ..paths import home

KINDS = ("train", "video")
ACTIVE = ("queued", "running")
FINISHED = ("done", "failed", "cancelled")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    name TEXT NOT NULL,
    params TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    updated REAL NOT NULL,
    step INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    eta_s REAL,
    terms TEXT,
    result TEXT,
    error TEXT,
    note TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    pid INTEGER,
    heartbeat REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    preview_step INTEGER,
    server TEXT
);
CREATE TABLE IF NOT EXISTS job_steps (
    job_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (job_id, step)
);
"""


def _add_missing_columns(c: sqlite3.Connection) -> None:
    """A database made by an earlier version gets the columns added since (another server may add them first)."""
    have = {row[1] for row in c.execute("PRAGMA table_info(jobs)")}
    for name, kind in (("server", "TEXT"),):
        if name not in have:
            try:
                c.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
            except sqlite3.OperationalError as e:
                if "duplicate column" not in str(e):
                    raise


def server_dir() -> Path:
    return home() / "server"


def database_path(setting: str | None) -> Path:
    """The SQLite file a database setting names: a path, a sqlite:/// URL, or None for the default."""
    if not setting:
        return server_dir() / "jobs.sqlite"
    if "://" in setting:
        scheme, _, rest = setting.partition("://")
        if scheme != "sqlite":
            raise Invalid(f"database '{setting}': only SQLite is supported (a path or sqlite:///path)")
        # sqlite:///relative.db and sqlite:////absolute.db, as in SQLAlchemy
        return Path(rest[1:] if rest.startswith("/") else rest)
    return Path(setting).expanduser()


@dataclass
class Job:
    """One job as the API shows it."""

    id: str
    kind: str
    status: str
    name: str
    params: dict
    created: float
    updated: float
    started: float | None = None
    finished: float | None = None
    step: int = 0
    total: int = 0
    eta_s: float | None = None
    terms: dict | None = None
    result: str | None = None
    error: str | None = None
    note: str | None = None
    attempts: int = 0
    pid: int | None = None
    heartbeat: float | None = None
    cancel_requested: bool = False
    preview_step: int | None = None
    server: str | None = None  # the scheduler that claimed it (runner.Scheduler.id)
    folder: str = ""
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _row_to_job(row: sqlite3.Row, folder: Path) -> Job:
    d = dict(row)
    d["params"] = json.loads(d["params"])
    d["terms"] = json.loads(d["terms"]) if d["terms"] else None
    d["cancel_requested"] = bool(d["cancel_requested"])
    return Job(**d, folder=str(folder / d["id"]))


# in a training job's folder: the sha256 of the filter file it made, so that its result is that filter or nothing
MADE_FILTER = "made-filter.sha256"


class JobStore:
    """All reads and writes of job records. Safe to use from several threads and processes (one connection per call)."""

    def __init__(self, db: str | Path, jobs_root: Path | None = None):
        self.db = Path(db)
        self.jobs_root = jobs_root or self.db.parent / "jobs"
        # a database that is not SQLite, or a folder that cannot be written, is one line naming it, not a traceback
        try:
            self.db.parent.mkdir(parents=True, exist_ok=True)
            self.jobs_root.mkdir(parents=True, exist_ok=True)
            with self._conn() as c:
                c.execute("PRAGMA journal_mode=WAL")
                c.executescript(SCHEMA)
                _add_missing_columns(c)
        except (sqlite3.Error, OSError) as e:
            from ..errors import RotoscopeError

            what = "not an SQLite database" if isinstance(e, sqlite3.DatabaseError) and "not a database" in str(e) \
                else (getattr(e, "strerror", None) or str(e))
            raise RotoscopeError(f"cannot use the jobs database {self.db}: {what} (--database takes another)") \
                from None

    @contextlib.contextmanager
    def _conn(self):
        conn = sqlite3.connect(self.db, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            with conn:  # one transaction: committed on success, rolled back on error
                yield conn
        finally:
            conn.close()

    def folder(self, job_id: str) -> Path:
        return self.jobs_root / job_id

    # ------------------------------------------------------------ create and read

    def new_id(self) -> str:
        return uuid.uuid4().hex[:12]

    def create(self, job_id: str, kind: str, name: str, params: dict, total: int = 0,
               alone: bool = False) -> Job | None:
        """A queued job. `alone`: only if no job of this kind and name is queued or running, checked and inserted
        in one statement (SQLite writes one at a time), else None: two requests at once cannot both pass a check
        made before."""
        if kind not in KINDS:
            raise ValueError(f"unknown job kind {kind}")
        now = time.time()
        with self._conn() as c:
            cur = c.execute("INSERT INTO jobs (id, kind, status, name, params, created, updated, total) "
                            "SELECT ?, ?, 'queued', ?, ?, ?, ?, ? WHERE NOT ? OR NOT EXISTS (SELECT 1 FROM jobs WHERE "
                            "kind = ? AND name = ? AND status IN ('queued', 'running'))",
                            (job_id, kind, name, json.dumps(params), now, now, total, alone, kind, name))
            if cur.rowcount == 0:
                return None
        return self.get(job_id)

    def get(self, job_id: str, history: bool = False) -> Job | None:
        with self._conn() as c:
            row = c.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            job = _row_to_job(row, self.jobs_root)
            if history:
                job.history = [json.loads(r[0]) for r in
                               c.execute("SELECT record FROM job_steps WHERE job_id = ? ORDER BY step", (job_id,))]
        return job

    def list(self, status: tuple[str, ...] | None = None, limit: int = 200) -> list[Job]:
        q, args = "SELECT * FROM jobs", []
        if status:
            q += f" WHERE status IN ({','.join('?' * len(status))})"
            args = list(status)
        q += " ORDER BY created DESC LIMIT ?"
        with self._conn() as c:
            return [_row_to_job(r, self.jobs_root) for r in c.execute(q, [*args, limit])]

    def active_with_name(self, kind: str, name: str) -> Job | None:
        with self._conn() as c:
            row = c.execute("SELECT * FROM jobs WHERE kind = ? AND name = ? AND status IN ('queued', 'running')",
                            (kind, name)).fetchone()
        return _row_to_job(row, self.jobs_root) if row else None

    def version(self, job_id: str) -> float | None:
        """The job's last-update time: cheap to poll for changes."""
        with self._conn() as c:
            row = c.execute("SELECT updated FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row[0] if row else None

    # ------------------------------------------------------------ state changes

    def update(self, job_id: str, **fields) -> None:
        fields["updated"] = time.time()
        if "terms" in fields and fields["terms"] is not None:
            fields["terms"] = json.dumps(fields["terms"])
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._conn() as c:
            c.execute(f"UPDATE jobs SET {cols} WHERE id = ?", [*fields.values(), job_id])

    def claim(self, job_id: str, server: str | None = None) -> bool:
        """queued -> running for `server`, only if still queued: one UPDATE, which SQLite runs under its write lock,
        so of two servers claiming the same job exactly one gets it (a job is never started twice)."""
        now = time.time()
        with self._conn() as c:
            # an interrupted job's note ("interrupted at step 7 (...); it resumes when a server runs") becomes what
            # is true once it runs again
            cur = c.execute("UPDATE jobs SET status = 'running', pid = NULL, attempts = attempts + 1, heartbeat = ?, "
                            "started = COALESCE(started, ?), updated = ?, server = ?, note = CASE WHEN note LIKE "
                            "'interrupted%;%' THEN 'running again after it was ' || "
                            "substr(note, 1, instr(note, ';') - 1) ELSE note END "
                            "WHERE id = ? AND status = 'queued'", (now, now, now, server, job_id))
        return cur.rowcount == 1

    def progress(self, job_id: str, records: list[dict], **fields) -> None:
        """Append step records and update the job's progress in one transaction."""
        fields["updated"] = fields["heartbeat"] = time.time()
        if "terms" in fields and fields["terms"] is not None:
            fields["terms"] = json.dumps(fields["terms"])
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._conn() as c:
            c.executemany("INSERT OR REPLACE INTO job_steps (job_id, step, record) VALUES (?, ?, ?)",
                          [(job_id, r["step"], json.dumps(r)) for r in records])
            c.execute(f"UPDATE jobs SET {cols} WHERE id = ?", [*fields.values(), job_id])

    def reset_history(self, job_id: str, records: list[dict]) -> None:
        """Make the job's step history exactly `records` (a resumed job restarts from its checkpoint's history)."""
        with self._conn() as c:
            c.execute("DELETE FROM job_steps WHERE job_id = ?", (job_id,))
            c.executemany("INSERT INTO job_steps (job_id, step, record) VALUES (?, ?, ?)",
                          [(job_id, r["step"], json.dumps(r)) for r in records])

    def finish(self, job_id: str, status: str, *, only_if_running: bool = True, attempt: int | None = None,
               **fields) -> bool:
        """Mark a job done / failed / cancelled (or back to queued for a resume); False if it had already moved on.
        `attempt`: only if it is still in that claim (attempts counts claims), not one another server made since."""
        assert status in FINISHED or status == "queued"
        fields.update(status=status, updated=time.time(), pid=None)
        if status in FINISHED:
            fields["finished"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        q = f"UPDATE jobs SET {cols} WHERE id = ?" + (" AND status = 'running'" if only_if_running else "")
        args = [*fields.values(), job_id]
        if attempt is not None:
            q, args = q + " AND attempts = ?", [*args, attempt]
        with self._conn() as c:
            cur = c.execute(q, args)
        return cur.rowcount == 1

    def request_cancel(self, job_id: str) -> str:
        """Cancel a queued job at once; flag a running one (its worker stops at its next step). Returns the status."""
        now = time.time()
        with self._conn() as c:
            c.execute("UPDATE jobs SET status = 'cancelled', finished = ?, updated = ?, note = 'cancelled before it "
                      "started' WHERE id = ? AND status = 'queued'", (now, now, job_id))
            c.execute("UPDATE jobs SET cancel_requested = 1, updated = ? WHERE id = ? AND status = 'running'",
                      (now, job_id))
            row = c.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row[0] if row else "missing"

    def cancel_requested(self, job_id: str) -> bool:
        with self._conn() as c:
            row = c.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0])
