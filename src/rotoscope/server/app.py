"""The HTTP API and the studio page: a thin skin over the library (filters, stylize, train, video).

create_app assembles the app: its state, the body limit, the token check, one handler that answers every
RotoscopeError with the status of its kind, the routers (routes/filters.py, routes/jobs.py), the studio page and
health. Image applies run in a bounded thread pool (PyTorch releases the GIL), so the event loop keeps answering
while pictures are painted. Training and video run as jobs in worker processes (runner.py), recorded in SQLite
(jobs.py); with the `cluster` setting those workers paint and train on Ray. OpenAPI docs are at /docs.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..config import ServerConfig
from ..errors import CannotWrite, Conflict, Invalid, NotFound, Refused, RotoscopeError, TooLarge, Unsupported
from ..filter import list_filters
from .deps import authorize
from .jobs import JobStore, database_path, server_dir
from .routes import filters as filter_routes
from .routes import jobs as job_routes
from .runner import Scheduler
from .uploads import BodyLimit

STATIC = Path(__file__).parent / "static"


def studio_page() -> str:
    """The studio's page, its training form showing the recipe's defaults (config.TrainConfig, the one place they
    live): a field left empty is not sent, so the server's defaults apply, as on the command line."""
    from ..config import TrainConfig

    d = TrainConfig()
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    for key, value in {"steps": d.steps, "size": d.size, "style_weight": f"{d.style_weight:g}",
                       "channels": ",".join(map(str, d.net.channels))}.items():
        html = html.replace("{{" + key + "}}", str(value))
    return html
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}

# The one place an error's kind becomes an HTTP status; any other RotoscopeError is a 422
STATUS_OF_KIND = {NotFound.kind: 404, Refused.kind: 403, Conflict.kind: 409, TooLarge.kind: 413,
                  Unsupported.kind: 415, Invalid.kind: 422, CannotWrite.kind: 507}


def needs_token(host: str) -> bool:
    """Binding anywhere but loopback exposes the server: then a token is required."""
    return host not in LOCAL_HOSTS and not host.startswith("127.")


async def rotoscope_error(_request, e: RotoscopeError) -> JSONResponse:
    """Every RotoscopeError a request raises: its message as the detail (without server paths), its kind's status."""
    return JSONResponse({"detail": scrub(str(e))}, status_code=STATUS_OF_KIND.get(e.kind, 422))


def scrub(message: str) -> str:
    """An error body names things the way the client knows them (a filter's file name, an upload's field), never by
    the server's folders: the registry, ROTOSCOPE_HOME, the package's and the temporary folder are cut out."""
    import os
    import tempfile

    from ..filter import SHIPPED_DIR
    from ..paths import filters_dir, home

    roots = {str(p) for p in (filters_dir(), SHIPPED_DIR, home(), Path(tempfile.gettempdir()))}
    for root in sorted(roots, key=len, reverse=True):
        message = message.replace(root + os.sep, "")
    return message


def create_app(settings: ServerConfig | None = None, *, run_jobs: bool = True) -> FastAPI:
    """The FastAPI app. `run_jobs=False` records jobs without starting workers (for tests of the API alone).
    With `cfg.cluster` it joins the Ray cluster now, so that a bad address is one line before the server starts."""
    cfg = settings or ServerConfig()
    store = JobStore(database_path(cfg.database), server_dir() / "jobs")
    cluster = None
    if run_jobs and cfg.cluster:
        from ..cluster import job_address

        cluster = job_address(cfg.cluster)
    scheduler = Scheduler(store, cfg.max_jobs, cfg.job_attempts, cluster)
    pool = ThreadPoolExecutor(max_workers=max(1, cfg.apply_threads), thread_name_prefix="rotoscope-apply")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if run_jobs:
            scheduler.start()
        yield
        if run_jobs:
            await asyncio.get_running_loop().run_in_executor(None, scheduler.shutdown)
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="rotoscope", version=__version__, lifespan=lifespan,
                  description="Train style filters from one artwork and paint images and video with them. "
                              "When the server has a token, send it as `Authorization: Bearer TOKEN` "
                              "(or `?token=TOKEN` for links and event streams).")
    app.state.settings, app.state.store, app.state.scheduler, app.state.pool = cfg, store, scheduler, pool
    _document_error_details(app)

    def limit_for(path: str) -> int:
        return cfg.max_video_bytes if path.rstrip("/").endswith("/jobs/video") else cfg.max_upload_bytes

    app.add_middleware(BodyLimit, limit_for=limit_for)
    app.add_exception_handler(RotoscopeError, rotoscope_error)

    @app.get("/api/health", tags=["server"])  # outside the routers: no token, monitors need it
    def health():
        """Liveness and a summary: version, filters, jobs by state, workers running."""
        counts = {s: len(store.list((s,), limit=10_000)) for s in ("queued", "running")}
        return {"status": "ok", "version": __version__, "filters": len(list_filters()), "jobs": counts,
                "workers": scheduler.running(), "scheduler": scheduler.alive() if run_jobs else "disabled",
                "cluster": bool(scheduler.cluster),
                "max_jobs": cfg.max_jobs, "url_apply": cfg.allow_url, "token_required": bool(cfg.token)}

    for routes in (filter_routes, job_routes):
        app.include_router(routes.router, prefix="/api", dependencies=[Depends(authorize)])

    @app.get("/", include_in_schema=False)
    def studio():
        return HTMLResponse(studio_page())

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _document_error_details(app: FastAPI) -> None:
    """A 422 is FastAPI's list of validation errors or, from rotoscope_error, one line: the document says both (it
    said the list only, so every answer to a bad setting or filter name broke it; found by schemathesis)."""
    default = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = default()
            error = schema.get("components", {}).get("schemas", {}).get("HTTPValidationError")
            if error and "detail" in error.get("properties", {}):
                listed = {k: v for k, v in error["properties"]["detail"].items() if k != "title"}
                error["properties"]["detail"] = {"title": "Detail", "anyOf": [listed, {"type": "string"}]}
        return app.openapi_schema

    app.openapi = openapi


def serve(settings: ServerConfig, log=print) -> None:
    """Run the server (blocking) after checking that a non-loopback bind has a token."""
    import uvicorn

    if needs_token(settings.host) and not settings.token:
        raise Refused(f"binding to {settings.host} exposes the server beyond this machine: give an API token "
                      "(--token or ROTOSCOPE_TOKEN)")
    from ..devices import configure_threads, paint_precision, pick_device

    configure_threads()
    _check_listen(settings.host, settings.port)
    app = create_app(settings)
    log(paint_precision("auto", pick_device("auto")).line() + "; applies choose their engine per picture size")
    if app.state.scheduler.cluster:
        from ..cluster import connect

        log(f"jobs paint and train on the Ray cluster at {app.state.scheduler.cluster} ({connect()['cpus']} CPUs); "
            "each job's worker process here follows it")
    log(f"rotoscope studio on http://{settings.host}:{settings.port}/  (API docs: /docs; jobs database: "
        f"{app.state.store.db})")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")


def _check_listen(host: str, port: int) -> None:
    """A port in use (or an address not of this machine) is one line before anything starts, not uvicorn's log."""
    import socket

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.create_server((host, port), family=family):
            pass
    except OSError as e:
        raise RotoscopeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


__all__ = ["create_app", "serve", "needs_token"]
