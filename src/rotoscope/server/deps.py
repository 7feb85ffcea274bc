"""What the routes share: the app's state (settings, job store, scheduler, apply pool) as dependencies, the token
check, registry filters by name (loaded once per version of their file), checked apply settings, and running
blocking work off the event loop.
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from ..config import ServerConfig
from ..errors import Invalid, NotFound
from ..filter import check_name, load_filter_file, registry_paths
from ..stylize import ApplySettings
from .jobs import JobStore
from .runner import Scheduler

# ---------------------------------------------------------------- the app's state (set by create_app)


def get_settings(request: Request) -> ServerConfig:
    return request.app.state.settings


def get_store(request: Request) -> JobStore:
    return request.app.state.store


def get_scheduler(request: Request) -> Scheduler:
    return request.app.state.scheduler


def get_pool(request: Request) -> ThreadPoolExecutor:
    return request.app.state.pool


SettingsDep = Annotated[ServerConfig, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
SchedulerDep = Annotated[Scheduler, Depends(get_scheduler)]
PoolDep = Annotated[ThreadPoolExecutor, Depends(get_pool)]


def authorize(request: Request) -> None:
    """The token check for /api routes (when the server has a token): a bearer header or ?token=."""
    token = request.app.state.settings.token
    if not token:
        return
    auth = request.headers.get("authorization", "")
    given = auth[7:] if auth.lower().startswith("bearer ") else request.query_params.get("token", "")
    if not given:
        raise HTTPException(401, "this server needs an API token: send 'Authorization: Bearer TOKEN'",
                            headers={"WWW-Authenticate": "Bearer"})
    if not secrets.compare_digest(given.encode(), token.encode()):
        raise HTTPException(401, "wrong API token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


async def off_loop(pool: ThreadPoolExecutor, fn, *args):
    """Run blocking work in the apply pool so the event loop stays free."""
    return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)


# ---------------------------------------------------------------- registry filters by name, cached


@functools.lru_cache(maxsize=16)
def _load(path: str, mtime_ns: int):
    return load_filter_file(path)


def registry_file(name: str) -> Path:
    """A registry filter's file by name. Unlike the CLI, never a path: a request names filters, not files."""
    known = registry_paths()
    if check_name(name) in known:
        return known[name]
    near = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    raise NotFound(f"unknown filter '{name}'" + (f"; did you mean {', '.join(near)}?" if near else ""))


def load_cached(name: str):
    """A registry filter by name, loaded once per version of its file."""
    path = registry_file(name)
    return _load(str(path), path.stat().st_mtime_ns)


# ---------------------------------------------------------------- apply settings (image applies and video jobs)


def apply_settings(cfg: ServerConfig, strength: float, preserve_colors: bool, size: int | None,
                   paint_scale: float = 1.0) -> ApplySettings:
    if not 0.0 <= strength <= 1.0:
        raise Invalid(f"strength must be between 0 and 1 (got {strength})")
    if size is not None and not 16 <= size <= cfg.max_output_side:
        raise Invalid(f"size must be between 16 and {cfg.max_output_side} pixels (got {size})")
    # the settings table's ranges for the rest (paint_scale 0.1-1), in its words
    return ApplySettings(size=size, strength=strength, preserve_colors=preserve_colors,
                         paint_scale=paint_scale).validate()
